"""`stratos topology`, `stratos lb` and `stratos lb-status`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def register(app: typer.Typer) -> None:
    app.command("topology")(topology)
    app.command("lb")(lb)
    app.command("lb-status")(lb_status)


def start_balancer_process(application: str, workdir: Path):
    """A load-balancer cartridge's `stratos lb --application APP` (started by its agent);
    returns the process and a check that it serves (its status file is written once HAProxy runs)."""
    import subprocess

    from infra.cloud.mock.processes import stratos_command

    workdir.mkdir(parents=True, exist_ok=True)
    status = workdir / "status.json"
    status.unlink(missing_ok=True)
    with open(workdir / "lb.log", "ab") as output:
        process = subprocess.Popen(
            [*stratos_command(), "lb", "--application", application, "--workdir", str(workdir)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return process, lambda: process.poll() is None and status.exists()


def topology() -> None:
    """Project the log onto the compacted topology topic (one entry per cluster, key = the
    cluster's aggregate id): rebuilt from the log on start, then only changed clusters."""
    from infra.cli.common import as_part, require_bootstrap, setup_logging
    from infra.lb.topology import TopologyProjector

    setup_logging()
    projector = TopologyProjector(as_part(require_bootstrap(), "topology"))
    signal.signal(signal.SIGTERM, lambda *_: projector.stop())
    console.print(f"[green]topology projector[/] on {projector.settings.topic('topology')}")
    try:
        projector.run()
    except KeyboardInterrupt:
        projector.stop()


def lb(
    application: str = typer.Option(
        None, help="serve only this application's clusters (a load-balancer cartridge's instance)"
    ),
    workdir: Path = typer.Option(None, help="config, log and status (default <state>/lb/<application>)"),
) -> None:
    """Run HAProxy (master-worker) following the topology: frontends per proxy port on
    STRATOS_LB_BIND, a backend per cluster with its Active members, host routing for domain
    mappings, member changes through the Runtime API, requests in flight onto the health topic."""
    from infra.cli.common import as_part, require_bootstrap, setup_logging
    from infra.lb.balancer import LoadBalancer
    from infra.lb.runtime import HaproxyError

    setup_logging()
    settings = as_part(require_bootstrap(), "lb")
    try:
        balancer = LoadBalancer(settings, application, workdir)
        signal.signal(signal.SIGTERM, lambda *_: balancer.stop())
        balancer.start()
    except HaproxyError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    ports = ", ".join(f"{settings.lb_bind}:{f.port} ({f.mode})" for f in balancer.plan.frontends) or "none yet"
    console.print(
        f"[green]load balancer[/] haproxy master {balancer.haproxy.master_pid}: {ports}; "
        f"status in {balancer.workdir / 'status.json'}"
    )
    try:
        balancer.run()
    except KeyboardInterrupt:
        balancer.stop()


def lb_status(
    application: str = typer.Option(None, help="the load balancer of this application"),
    workdir: Path = typer.Option(None, help="its work directory"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Show what a running `stratos lb` serves: frontends, backends with their servers, draining
    servers, reloads, runtime changes and errors (entries refused, invalid records)."""
    from infra.settings import get_settings

    path = (workdir or get_settings().state_dir / "lb" / (application or "platform")) / "status.json"
    if not path.exists():
        console.print(f"[red]error:[/] no load balancer status at {path} (is `stratos lb` running?)")
        raise typer.Exit(1)
    status = json.loads(path.read_text())
    if as_json:
        console.print_json(json.dumps(status))
        return
    table = Table("backend", "servers")
    for name, servers in status["backends"].items():
        table.add_row(name, ", ".join(servers) or "-")
    console.print(f"haproxy master {status['master_pid']}, config {status['config']}")
    for f in status["frontends"]:
        console.print(f"  :{f['port']} {f['mode']} routes {f['routes'] or '-'} default {f['default_backend'] or '-'}")
    console.print(table)
    console.print(
        f"reloads {status['reloads']}, runtime changes {status['runtime_changes']}, errors "
        f"{status['errors']}, invalid records {status['invalid_records']}"
        + (f"; last error: {status['last_error']}" if status["last_error"] else "")
    )
