"""`stratos up`: the whole platform on one machine."""

from __future__ import annotations

from pathlib import Path

import typer

from infra.cli.common import console, setup_logging


def register(app: typer.Typer) -> None:
    app.command()(up)


def up(
    bootstrap: str = typer.Option(None, help="use this Kafka instead of the embedded broker"),
    api_port: int = typer.Option(9443, help="port of the REST API and console"),
    no_sample: bool = typer.Option(False, "--no-sample", help="start empty"),
    state_dir: Path = typer.Option(Path("state"), help="where Kafka's log, the mock cloud and the logs go"),
    brokers: int = typer.Option(1, "--brokers", min=1, help="embedded Kafka nodes (3: replicated)"),
    process: bool = typer.Option(
        False, "--process", help="mock IaaS in process mode: every member a real `stratos agent` with an HTTP server"
    ),
    tls: bool = typer.Option(
        False,
        "--tls",
        help="HTTPS (as STRATOS_API_TLS=1): a self-signed certificate "
        "made into the state dir, or STRATOS_API_TLS_CERT/_KEY",
    ),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="the embedded Kafka authenticates every client (SASL_SSL, SCRAM-SHA-512, ACLs) and "
        "the parts connect as the platform's principal (docs/security.md)",
    ),
) -> None:
    """Start the whole platform (embedded broker by default) until Ctrl-C."""
    from infra.platform.up import run_platform

    setup_logging()
    raise typer.Exit(
        run_platform(
            bootstrap=bootstrap,
            api_port=api_port,
            sample=not no_sample,
            state_dir=state_dir,
            console=console,
            process=process,
            tls=tls,
            brokers=brokers,
            secure=secure,
        )
    )
