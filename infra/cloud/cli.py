"""`stratos cloud`: the cloud controller."""

from __future__ import annotations

import signal

import typer

from infra.cli.common import as_part, console, require_bootstrap, setup_logging


def register(app: typer.Typer) -> None:
    app.command()(cloud)


def cloud() -> None:
    """Run the cloud controller: starts and stops nodes through libcloud for member events and
    reports back. It holds no cloud state: the mock IaaS is `stratos mock-iaas`, reached by the
    libcloud `mock` driver over HTTP (STRATOS_MOCK_IAAS_URL)."""
    from infra.cloud.controller import CloudController

    setup_logging()
    settings = as_part(require_bootstrap(), "cloud")
    controller = CloudController(settings)
    signal.signal(signal.SIGTERM, lambda *_: controller.stop())
    console.print(f"[green]cloud controller[/] on {settings.topic('events')} (mock IaaS at {controller.mock.url})")
    try:
        controller.run()
    except KeyboardInterrupt:
        controller.stop()
