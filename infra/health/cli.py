"""`stratos health`: the health worker."""

from __future__ import annotations

import logging

import typer

from infra.cli.common import as_part, console, require_bootstrap


def register(app: typer.Typer) -> None:
    app.command()(health)


def health() -> None:
    """Run the health worker (faust): windows of health statistics, ScaleCluster commands on
    every hop (STRATOS_HEALTH_WINDOW_SECONDS, STRATOS_HEALTH_HOP_SECONDS), member faults
    (STRATOS_MEMBER_FAULT_SECONDS). Run more of them to share the health partitions."""
    from infra.health.app import HealthWorker, create_app

    settings = as_part(require_bootstrap(), "health")
    service = create_app(settings)
    console.print(
        f"[green]health worker[/] on {settings.topic('health')}: window "
        f"{settings.health_window_seconds:g}s, hop {settings.health_hop_seconds:g}s, "
        f"fault after {settings.member_fault_seconds:g}s"
    )
    # faust's logging setup clears the root handlers: give it ours (the heartbeat's last error, the logs topic)
    service.app.conf.loghandlers = list(logging.getLogger().handlers)
    HealthWorker(service.app, loglevel=settings.log_level).execute_from_commandline()
