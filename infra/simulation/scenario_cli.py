"""`stratos scenario export --cluster ID --from T1 --to T2 -o FILE.yaml [--check] [--json]`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from infra.cli.common import require_bootstrap
from infra.replay.timetravel import PositionError, parse_time
from infra.simulation.export import ExportError, compare, read_period, simulated_moves, write_scenario
from infra.simulation.scenario import ScenarioFileError, load_scenario
from schemas.envelope import SUPER_TENANT
from streams.simulation import ScenarioError, Simulation

app = typer.Typer(help="Scenarios from the log: a recorded period as a load scenario.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="scenario")


@app.command("export")
def export(
    cluster: str = typer.Option(..., "--cluster", help="cluster id"),
    since: str = typer.Option(..., "--from", help="ISO 8601 time: the period's start"),
    until: str = typer.Option(..., "--to", help="ISO 8601 time: the period's end"),
    out: Path = typer.Option(..., "-o", "--out", help="scenario file to write (traces go beside it)"),
    tenant: str = typer.Option(SUPER_TENANT, "--tenant"),
    check: bool = typer.Option(
        False, "--check", help="simulate the scenario and compare its decisions with production's"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Write a scenario of what the log holds of one cluster over a period: its definitions,
    its load per metric as traces, its instances' start-up delay and failure rate. With
    --check, simulate it and list production's decisions the simulation does not make within
    one hop (and the reverse), each with its cause."""
    err = Console(stderr=True)
    try:
        settings = require_bootstrap()
        recorded = read_period(settings, tenant, cluster, parse_time(since), parse_time(until))
        written = write_scenario(recorded, out)
        answer: dict = {
            "scenario": str(out),
            "files": [str(p) for p in written],
            "measured": {k: round(v, 4) for k, v in recorded.measured.items()},
            "production_decisions": len(recorded.moves),
        }
        if check:
            scenario = load_scenario(out)
            try:
                result = Simulation(scenario.setup, keep_log=True).run()
            except ScenarioError as exc:
                raise scenario.error(exc) from None
            warm_up = scenario.setup.instances.startup_delay if recorded.active_at_start else 0.0
            matched, differences = compare(
                recorded.moves, simulated_moves(result, cluster), scenario.setup.step, warm_up
            )
            answer |= {"matched": matched, "differences": [d.as_json() for d in differences]}
    except (ExportError, PositionError, ScenarioFileError) as exc:
        err.print(f"error: {exc}", style="red", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(answer, sort_keys=True))
        return
    console = Console()
    console.print(f"wrote {', '.join(answer['files'])}", highlight=False)
    console.print(
        "measured: start-up {startup_delay_s:.1f} s ± {startup_jitter_s:.1f} s, "
        "start failure rate {start_failure_rate:.1%}".format(**recorded.measured)
    )
    if check:
        console.print(
            f"production's decisions: {len(recorded.moves)}, "
            f"the simulation made {answer['matched']} of them within one hop"
        )
        for d in answer["differences"]:
            side = d["production"] or d["simulation"]
            who = "production only" if d["production"] else "simulation only"
            console.print(f"  t={d['t']:.1f}s {side['change']} ({who}): {d['cause']}", highlight=False)
