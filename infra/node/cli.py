"""`stratos node`."""

from __future__ import annotations

import gc
import signal

import typer

from infra.cli.common import as_part, console, require_bootstrap, setup_logging


def register(app: typer.Typer) -> None:
    app.command()(node)


def node(
    base: str = typer.Option("simpleSystemBase", help="thespian system base"),
    timer_seconds: float = typer.Option(30.0, help="how often timeouts are checked"),
) -> None:
    """Run a node: claims command partitions, rebuilds their aggregates, handles commands."""
    from infra.log.kafka import TopicsError, require_sound_topics
    from infra.node.node import Node

    setup_logging()
    settings = require_bootstrap()
    try:
        require_sound_topics(settings)  # the node rebuilds from history: it must all be there
    except TopicsError as exc:
        console.print(f"[red]error:[/] the node refuses to start: {exc}")
        raise typer.Exit(3) from exc
    as_part(settings, "node")
    node_ = Node(settings, base=base, timer_seconds=timer_seconds)
    # what start-up made (modules, schemas, clients: some 150,000 objects) lives as long as the
    # process: out of the cycle collector's sight, each full collection walks only what the node
    # made since (bench/commands.py: GC took about a third of the node's CPU before)
    gc.freeze()
    signal.signal(signal.SIGTERM, lambda *_: node_.stop())
    try:
        node_.run()
    except KeyboardInterrupt:
        node_.stop()
