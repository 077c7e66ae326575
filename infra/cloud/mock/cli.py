"""`stratos mock-iaas`: run the mock IaaS (its own part of `stratos up`)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

console = Console()


def mock_iaas(
    port: int = typer.Option(None, help="loopback port (default STRATOS_MOCK_API_PORT, else STRATOS_API_PORT + 1)"),
    patterns: Path = typer.Option(
        None,
        help="health patterns file, YAML or JSON, for the cartridge "
        "types the cloud has none for (default STRATOS_MOCK_HEALTH_PATTERNS)",
    ),
) -> None:
    """Run the mock IaaS: a cloud of fake nodes kept in <state dir>/mock-iaas/, served over HTTP under
    /mock-iaas/api, whose instances play the cartridge agent (STRATOS_MOCK_IAAS_MODE=simulated) or
    run one `stratos agent` process each (process)."""
    from pydantic import ValidationError

    from infra.auth.tls import TlsConfigError
    from infra.cli.common import as_part, require_bootstrap, setup_logging
    from infra.cloud.mock.service import MockIaasService
    from infra.log.kafka import rejection_reason

    setup_logging()
    settings = as_part(require_bootstrap(), "mock-iaas")
    patterns_file = patterns or settings.mock_health_patterns
    try:
        service = MockIaasService(settings, port=port, patterns=patterns_file)
    except (OSError, ValueError) as exc:
        reason = rejection_reason(exc) if isinstance(exc, ValidationError) else str(exc)
        what = (
            f"health patterns {patterns_file}" if patterns_file and not isinstance(exc, TlsConfigError) else "mock IaaS"
        )
        console.print(f"[red]error:[/] {what}: {reason}")
        raise typer.Exit(2) from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service.start()
    except RuntimeError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]mock IaaS[/] on {service.url}/mock-iaas/api ({settings.mock_iaas_mode} mode, "
        f"{len(service.cloud.all())} node(s) kept in {service.cloud.path})"
    )
    try:
        stop.wait()
    finally:
        service.stop()


def register(app: typer.Typer) -> None:
    app.command("mock-iaas")(mock_iaas)
