"""`stratos reactor`."""

from __future__ import annotations

import signal

import typer

from infra.cli.common import as_part, require_bootstrap, setup_logging


def register(app: typer.Typer) -> None:
    app.command()(reactor)


def reactor() -> None:
    """Run the reactor: turns events, replies and instance status into follow-up commands."""
    from infra.reactor.reactor import Reactor

    setup_logging()
    reactor_ = Reactor(as_part(require_bootstrap(), "reactor"))
    signal.signal(signal.SIGTERM, lambda *_: reactor_.stop())
    try:
        reactor_.run()
    except KeyboardInterrupt:
        reactor_.stop()
