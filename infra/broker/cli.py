"""`stratos broker` (the embedded Apache Kafka) and `stratos topics`."""

from __future__ import annotations

from pathlib import Path

import typer

from infra.cli.common import console, require_bootstrap, setup_logging, wait_for_interrupt
from infra.settings import get_settings


def register(app: typer.Typer) -> None:
    app.command()(broker)
    app.command()(topics)


def broker(
    port: int = typer.Option(0, help="loopback port of the (first) broker; 0 picks a free one"),
    data: Path = typer.Option(
        None, "--data", help="where Kafka keeps its log; unset = a temporary directory removed at exit"
    ),
    brokers: int = typer.Option(
        1, "--brokers", min=1, help="KRaft nodes (each broker and controller); 3 gives replication factor 3, min ISR 2"
    ),
) -> None:
    """Start the embedded Apache Kafka (KRaft), create the topics, run until Ctrl-C."""
    from infra.broker import BrokerError, EmbeddedBroker
    from infra.log.kafka import TopicsError, ensure_topics, require_sound_topics

    setup_logging()
    settings = get_settings()
    settings.replication_factor = min(brokers, 3)
    try:
        with console.status(f"starting Apache Kafka ({brokers} node{'s' if brokers > 1 else ''}) ..."):
            embedded = EmbeddedBroker(port or None, data_dir=data, brokers=brokers).start()
        with embedded:
            settings.kafka_bootstrap = embedded.bootstrap
            created = ensure_topics(settings)
            require_sound_topics(settings)
            console.print(
                f"[green]broker[/] listening on [bold]{embedded.bootstrap}[/]"
                f" ({len(created)} topics created, prefix {settings.topic_prefix!r},"
                f" data in {embedded.data_dir})"
            )
            console.print(
                f"use it with: export STRATOS_KAFKA_BOOTSTRAP={embedded.bootstrap}"
                + (f" STRATOS_REPLICATION_FACTOR={settings.replication_factor}" if brokers > 1 else "")
            )
            wait_for_interrupt()
    except (BrokerError, TopicsError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def topics() -> None:
    """Create the platform's topics on STRATOS_KAFKA_BOOTSTRAP (idempotent)."""
    from infra.log.kafka import ensure_topics

    settings = require_bootstrap()
    created = ensure_topics(settings)
    console.print(f"created: {', '.join(created) or 'nothing (all present)'}")
