"""What every part's verbs share: the console, logging, the Kafka bootstrap check, the heartbeats
of a supervised part, waiting for Ctrl-C. Imports nothing of the parts (each part's `cli` module
imports this one, `infra.cli.main` imports those)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

import typer
from rich.console import Console

from infra.settings import get_settings

console = Console()


def setup_logging() -> None:
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def wait_for_interrupt(every_second: Callable[[], None] | None = None) -> None:
    """Block until Ctrl-C or SIGTERM, calling `every_second` meanwhile (the embedded broker's
    `revive`)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if every_second is not None:
            every_second()


def revive_printing(broker) -> Callable[[], None]:
    """`wait_for_interrupt`'s check of an embedded broker: each node whose JVM exited is started
    again, said on the console."""

    def revive() -> None:
        for line in broker.revive():
            console.print(f"[yellow]warning:[/] {line}")

    return revive


def as_part(settings, name: str):
    """A supervised part: heartbeats (and its lines on <prefix>logs with STRATOS_LOG_TO_KAFKA=1)."""
    from infra.observe.heartbeat import start_part

    beats = start_part(settings, name)
    if beats is not None:
        import atexit

        atexit.register(beats.stop)
    return settings


def require_bootstrap():
    settings = get_settings()
    if not settings.kafka_bootstrap:
        console.print("[red]error:[/] STRATOS_KAFKA_BOOTSTRAP is not set (start `stratos broker` or `stratos up`)")
        raise typer.Exit(2)
    return settings
