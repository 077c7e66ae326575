"""`stratos simulate SCENARIO.yaml --out DIR [--seed N] [--policy FILE …] [--live …] [--json]`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.simulation.report import PolicyRun, series_of, write_report
from infra.simulation.scenario import Scenario, ScenarioFileError, load_policy, load_scenario
from streams.simulation import ScenarioError, Simulation

SUMMARY = {
    "cost_member_hours": "cost h",
    "slo_violation_share": "SLO viol.",
    "scaling_actions": "actions",
    "accuracy_U": "acc. U",
    "accuracy_O": "acc. O",
    "instability": "instab.",
    "jitter": "jitter/h",
    "reaction_time_mean_s": "react. s",
}


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def policy_setups(scenario: Scenario, policies: list[Path]) -> list[tuple[str, object]]:
    """(name, setup) per policy file (its file name; the scenario's own policies when none)."""
    if not policies:
        return [("scenario", scenario.setup)]
    named, seen = [], set()
    for path in policies:
        name = path.stem
        while name in seen:
            name += "'"
        seen.add(name)
        named.append((name, scenario.with_policy(load_policy(path))))
    return named  # type: ignore[return-value]


def scenario_info(scenario: Scenario, mode: str) -> dict:
    s = scenario.setup
    return {
        "name": scenario.name,
        "description": scenario.model.description,
        "seed": s.seed,
        "duration_s": s.duration,
        "step_s": s.step,
        "mode": mode,
    }


def run_simulated(
    scenario: Scenario, policies: list[Path], out: Path, quiet: bool, console: Console, stepped: bool = False
) -> tuple[dict, float]:
    """Every policy on the scenario's load and seed; writes the report, returns (metrics, sim wall s)."""
    setups = policy_setups(scenario, policies)
    runs, wall = [], 0.0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    ) as progress:
        for name, setup in setups:
            task = progress.add_task(name, total=setup.steps)  # type: ignore[attr-defined]
            started = time.perf_counter()
            try:
                result = Simulation(setup, policy=name, event_driven=not stepped).run(  # type: ignore[arg-type]
                    lambda done, total, task=task: progress.update(task, completed=done)  # type: ignore[misc]
                )
            except ScenarioError as exc:
                raise scenario.error(exc) from None
            wall += time.perf_counter() - started
            runs.append(
                PolicyRun(
                    name,
                    series_of(result),
                    {"commands": result.commands, "rejected": result.rejected, "dead_letters": result.dead_letters},
                )
            )
    doc = write_report(out, scenario_info(scenario, "simulated"), runs, scenario.setup.step)
    return doc, wall


def summary_table(doc: dict) -> Table:
    table = Table(title=f"{doc['scenario']['name']}: policies, best first")
    table.add_column("policy")
    for header in SUMMARY.values():
        table.add_column(header, justify="right")
    for name in doc["ranking"]:
        total = doc["policies"][name]["total"]
        cells = [("–" if total.get(f) is None else f"{total[f]:.4g}") for f in SUMMARY]
        mark = " *" if name in doc["pareto_front"] and len(doc["policies"]) > 1 else ""
        table.add_row(name + mark, *cells)
    return table


def simulate(
    scenario_file: Path = typer.Argument(..., metavar="SCENARIO.yaml", help="the scenario"),
    out: Path = typer.Option(..., "--out", help="directory for metrics.json, timeline.csv, plots, report.html"),
    seed: int | None = typer.Option(None, "--seed", help="overrides the scenario's seed"),
    policy: list[Path] = typer.Option([], "--policy", help="autoscaling policy file; repeat to compare"),
    live: bool = typer.Option(False, "--live", help="drive a running platform instead of simulating"),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="live: Kafka bootstrap (default STRATOS_KAFKA_BOOTSTRAP)"
    ),
    speed: float = typer.Option(1.0, "--speed", min=0.01, help="live: scenario seconds per wall second"),
    mock_api: str | None = typer.Option(
        None,
        "--mock-api",
        help="live: the platform API's URL with an admin's credentials, "
        "where the mock IaaS answers (e.g. http://admin:admin@127.0.0.1:9443): "
        "silence its patterns for the scenario's cartridges, play crashes",
    ),
    stepped: bool = typer.Option(
        False,
        "--stepped",
        help="decide every cluster at every step (steady clusters are otherwise skipped until an "
        "input changes; the results are the same, byte for byte)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
) -> None:
    """Run a load scenario through the platform's own scaling code, on simulated time (or
    live), and write the SPEC RG elasticity report."""
    console = Console(stderr=True)
    try:
        scenario = load_scenario(scenario_file, seed)
        if live:
            if len(policy) > 1:
                raise ScenarioFileError("--live runs one policy at a time (a platform has one log)")
            from infra.simulation.live import run_live

            started = time.perf_counter()
            doc = run_live(
                scenario,
                policy[0] if policy else None,
                out,
                bootstrap,
                speed,
                console,
                quiet=as_json,
                mock_api=mock_api,
            )
            wall = time.perf_counter() - started
        else:
            doc, wall = run_simulated(scenario, policy, out, as_json, console, stepped)
    except ScenarioFileError as exc:
        console.print(f"error: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    simulated = scenario.setup.duration * len(doc["policies"])
    answer = {
        "out": str(out),
        "report": str(out / "report.html"),
        "metrics": str(out / "metrics.json"),
        "ranking": doc["ranking"],
        "pareto_front": doc["pareto_front"],
        "totals": {n: p["total"] for n, p in doc["policies"].items()},
        "wall_seconds": round(wall, 3),
        "sim_seconds_per_wall_second": round(simulated / wall, 1) if wall > 0 else None,
    }
    if as_json:
        print(json.dumps(answer, sort_keys=True))
        return
    Console().print(summary_table(doc))
    Console().print(
        f"report: {out / 'report.html'}  ({simulated:g} simulated seconds in {wall:.2f} s"
        + (f", {simulated / wall:,.0f}x real time)" if wall > 0 else ")")
    )
