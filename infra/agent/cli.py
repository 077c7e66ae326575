"""`stratos agent`: the cartridge agent of one instance."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

from infra.cli.common import console, require_bootstrap, setup_logging


def register(app: typer.Typer) -> None:
    app.command()(agent)


def agent(
    member_id: str = typer.Option(..., envvar="STRATOS_AGENT_MEMBER_ID"),
    cluster_id: str = typer.Option(..., envvar="STRATOS_AGENT_CLUSTER_ID"),
    network_partition_id: str = typer.Option("default", envvar="STRATOS_AGENT_NETWORK_PARTITION_ID"),
    tenant: str = typer.Option("carbon.super", envvar="STRATOS_AGENT_TENANT"),
    port: list[int] = typer.Option([], help="a port that must answer before Activated (repeat)"),
    repo_url: str = typer.Option(None, envvar="STRATOS_AGENT_REPO_URL"),
    repo_username: str = typer.Option(None, envvar="STRATOS_AGENT_REPO_USERNAME"),
    workdir: Path = typer.Option(Path("app"), help="where the artifacts are checked out"),
    serve_http: int = typer.Option(None, help="serve the artifacts over HTTP on this loopback port"),
    clean_hook: str = typer.Option(None, help="shell command run on cleanup, before shutdown"),
    wait_initialized: bool = typer.Option(True, help="say Started only once the member is Initialized"),
    load_balancer: str = typer.Option(
        None, help="a load-balancer cartridge: run `stratos lb` for this application's clusters"
    ),
    application_id: str = typer.Option("", envvar="STRATOS_AGENT_APPLICATION_ID"),
    log_file: list[Path] = typer.Option([], help="a file whose lines are shipped to <prefix>logs (repeat)"),
) -> None:
    """Run the cartridge agent of one instance (payload from options or STRATOS_AGENT_* variables;
    its secrets only from STRATOS_AGENT_CARTRIDGE_KEY, STRATOS_AGENT_REPO_PASSWORD and
    STRATOS_AGENT_SIGNING_KEY (the key its status and health are signed with), taken out
    of the environment at once so that no child process inherits them)."""
    import os

    from pydantic import ValidationError

    from infra.agent.agent import AgentPayload, CartridgeAgent, serve_directory
    from infra.log.kafka import rejection_reason

    setup_logging()
    settings = require_bootstrap()
    try:
        payload = AgentPayload(
            member_id=member_id,
            cluster_id=cluster_id,
            tenant=tenant,
            network_partition_id=network_partition_id,
            repo_url=repo_url,
            repo_username=repo_username,
            repo_password=os.environ.pop("STRATOS_AGENT_REPO_PASSWORD", None) or None,
            cartridge_key=os.environ.pop("STRATOS_AGENT_CARTRIDGE_KEY", None) or None,
            signing_key=os.environ.pop("STRATOS_AGENT_SIGNING_KEY", None) or None,
            application_id=application_id,
            log_file_paths=log_file,
            ports=[*port, *([serve_http] if serve_http else [])],
        )
    except ValidationError as exc:
        console.print(f"[red]error:[/] {rejection_reason(exc)}")
        raise typer.Exit(2) from exc
    if serve_http:
        serve_directory(workdir, serve_http, member_id)
    balancer = ready = None
    if load_balancer:
        from infra.lb.cli import start_balancer_process

        balancer, ready = start_balancer_process(load_balancer, workdir / "lb")
    cartridge_agent = CartridgeAgent(settings, payload, workdir, clean_hook, wait_initialized, ready)
    signal.signal(signal.SIGTERM, lambda *_: cartridge_agent.stop())
    try:
        cartridge_agent.run()
    except KeyboardInterrupt:
        cartridge_agent.stop()
    finally:
        if balancer is not None:
            balancer.terminate()
            balancer.wait(20)
