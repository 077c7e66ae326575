"""`stratos tune SCENARIO.yaml… --out DIR [--policy FILE] [--trials N] [--seed N] [--workers N]
[--bound NAME=LOW:HIGH …] [--predictive] [--apply] [--json]`."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from infra.simulation.scenario import ScenarioFileError, load_policy, load_scenario
from infra.tune.search import (
    BATCH,
    COST,
    SLO,
    Outcome,
    TuneError,
    default_workers,
    parameters_of,
    parse_bounds,
    tune,
)
from schemas.envelope import SUPER_TENANT
from streams.simulation import ScenarioError

SAMPLER = "optuna TPE (multivariate, multi-objective, constant liar)"


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)


def run_id(paths: list[Path], policy: dict, bounds: list[str], seed: int, trials: int, predictive: bool) -> str:
    """Names the run by what decides its result: the same inputs give the same id."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    digest.update(json.dumps([policy, sorted(bounds), seed, trials, predictive], sort_keys=True).encode())
    return f"tune-{digest.hexdigest()[:10]}"


def _base_policy(paths: list[Path], policy: Path | None) -> dict:
    if policy is not None:
        return load_policy(policy)
    for path in paths:
        for kind, body in load_scenario(path).setup.definitions:
            if kind == "autoscalingPolicy":
                return body
    raise TuneError(f"{paths[0]}: the scenarios define no autoscaling policy: give --policy FILE")


def _summary(run: str, seed: int, outcome: Outcome, params: list[str], wall: float, workers: int) -> dict[str, Any]:
    from infra.tune.report import trial_json

    return {
        "run": run,
        "seed": seed,
        "sampler": SAMPLER,
        "trials": len(outcome.trials),
        "parameters": params,
        "in_force": trial_json(outcome.in_force),
        "recommended": trial_json(outcome.recommended) if outcome.recommended else None,
        "why": outcome.why,
        "front": [trial_json(t) for t in outcome.front],
        "timing": {
            "wall_seconds": round(wall, 3),
            "evaluations": outcome.evaluations,
            "evaluations_per_second": round(outcome.evaluations / wall, 3) if wall > 0 else None,
            "workers": workers,
        },
    }


def apply_policy(policy: dict, note: str, tenant: str) -> str:
    """UpdateAutoscalingPolicy through the commands topic (the API's own path), the tuning run
    in its note; returns the command's id (`stratos why ID` names the run)."""
    from infra.cli.common import require_bootstrap
    from infra.log.commands_client import CommandClient
    from schemas import commands as C
    from schemas.definitions import AutoscalingPolicy
    from schemas.ids import aggregate_id
    from schemas.status import CommandRejected

    settings = require_bootstrap()
    client = CommandClient(settings)
    try:
        definition = AutoscalingPolicy.model_validate(policy)
        command = C.UpdateAutoscalingPolicy(definition=definition, note=note)  # type: ignore[attr-defined]
        command_id = client.send(aggregate_id(tenant, "autoscalingPolicy", definition.id), command, tenant)
        reply = client.wait(command_id, timeout=settings.api_wait_seconds)
    finally:
        client.close()
    if reply is None:
        raise TuneError(f"--apply: no answer to UpdateAutoscalingPolicy {definition.id!r} (is a node running?)")
    if isinstance(reply, CommandRejected):
        raise TuneError(f"--apply: UpdateAutoscalingPolicy {definition.id!r} rejected: {reply.reason}")
    return command_id


def tune_command(
    scenarios: list[Path] = typer.Argument(..., metavar="SCENARIO.yaml…", help="scenarios to tune against"),
    out: Path = typer.Option(..., "--out", help="directory for tune.json, the policy, the plots and report.html"),
    policy: Path | None = typer.Option(None, "--policy", help="the policy in force (default: the scenarios' own)"),
    trials: int = typer.Option(40, "--trials", min=1, help="policies tried"),
    seed: int = typer.Option(0, "--seed", help="the sampler's seed: same seed, same result"),
    workers: int = typer.Option(
        default_workers(), "--workers", min=1, help=f"processes evaluating trials (at most {BATCH})"
    ),
    bound: list[str] = typer.Option([], "--bound", help="NAME=LOW:HIGH, e.g. requestsInFlight=10:30; repeat"),
    predictive: bool = typer.Option(False, "--predictive", help="also tune a forecast (on/off, scheduling buffer)"),
    apply: bool = typer.Option(False, "--apply", help="update the policy in force on the platform"),
    tenant: str = typer.Option(SUPER_TENANT, "--tenant", help="--apply: the policy's tenant"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Search an autoscaling policy's parameters on scenarios (simulated with the platform's
    own rules) for cost against SLO violation share; print and write the Pareto front, the
    recommended policy (Stratos JSON) and a report against the policy in force."""
    err = Console(stderr=True)
    try:
        base = _base_policy(scenarios, policy)
        metrics = {load.metric for path in scenarios for load in load_scenario(path).setup.loads}
        if predictive and "predictive" not in base:
            base = {**base, "predictive": {"mode": "forecast-and-scale"}}
        params = parse_bounds(bound, parameters_of(base, metrics, predictive))
        run = run_id(scenarios, base, bound, seed, trials, predictive)
        started = time.perf_counter()
        with Progress(
            TextColumn(f"[bold]{run}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("trials"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
            disable=as_json,
            transient=True,
        ) as progress:
            task = progress.add_task("tune", total=trials)
            outcome = tune(
                base,
                [str(p) for p in scenarios],
                params,
                trials,
                seed,
                workers,
                predictive,
                progress=lambda done, total: progress.update(task, completed=done),
            )
        wall = time.perf_counter() - started
        names = list(params) + (["predictive"] if predictive else [])
        summary = _summary(run, seed, outcome, names, wall, min(workers, BATCH))
        from infra.tune.report import write_tuning

        report = write_tuning(out, summary, outcome, [str(p) for p in scenarios])
        if apply:
            if outcome.recommended is None:
                raise TuneError(f"--apply: {outcome.why}; nothing applied")
            f, r = outcome.in_force.figures, outcome.recommended.figures
            note = (
                f"stratos tune {run} trial {outcome.recommended.number}: cost {f[COST]:.4g}->{r[COST]:.4g} member-h, "
                f"SLO violation {f[SLO]:.3g}->{r[SLO]:.3g}"
            )
            summary["applied"] = {"command_id": apply_policy(outcome.recommended.policy, note, tenant), "note": note}
            (out / "tune.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    except (TuneError, ScenarioFileError) as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ScenarioError as exc:
        err.print(f"error: {exc.message}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({**summary, "report": str(report)}, sort_keys=True))
        return
    _print(summary, names, report)


def _print(summary: dict, names: list[str], report: Path) -> None:
    console = Console()
    table = Table(title=f"{summary['run']}: Pareto front of {summary['trials']} trials (cheapest first)")
    for header in ("trial", "cost h", "SLO viol.", *names):
        table.add_column(header, justify="right")
    chosen = (summary["recommended"] or {}).get("trial")
    for t in summary["front"]:
        mark = " *" if t["trial"] == chosen else ""
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (t["values"].get(n) for n in names)]
        table.add_row(f"{t['trial']}{mark}", f"{t[COST]:.4g}", f"{t[SLO]:.4g}", *cells)
    console.print(table)
    f = summary["in_force"]
    console.print(f"in force: cost {f[COST]:.4g} member-h, SLO violation share {f[SLO]:.4g}", highlight=False)
    if summary["recommended"]:
        r = summary["recommended"]
        console.print(
            f"recommended (* trial {r['trial']}): cost {r[COST]:.4g} member-h, SLO violation share {r[SLO]:.4g}: "
            f"{summary['why']}",
            highlight=False,
        )
    else:
        console.print(summary["why"], highlight=False)
    timing = summary["timing"]
    console.print(
        f"{timing['evaluations']} simulations in {timing['wall_seconds']:.1f} s "
        f"({timing['evaluations_per_second']:.2f}/s on {timing['workers']} processes); report: {report}",
        highlight=False,
    )
    if "applied" in summary:
        console.print(f"applied: `stratos why {summary['applied']['command_id']}` names this run", highlight=False)
