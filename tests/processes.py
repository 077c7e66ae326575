"""Real node processes for fault-injection tests, started from a forkserver that has imported
the node once (a fresh interpreter per crash would cost a second of imports each)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal

import psutil

CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["infra.node.node"])


def _node_main(settings_data: dict, fault: str | None) -> None:
    import logging

    from infra.node.node import Node
    from infra.settings import Settings

    logging.basicConfig(level=logging.WARNING, format=f"node {os.getpid()} %(levelname)s %(name)s: %(message)s")
    node = Node(Settings(**settings_data, fault=fault))
    signal.signal(signal.SIGTERM, lambda *_: node.stop())
    node.run()


def start_node(settings, fault: str | None = None):
    """A `stratos node` in its own process (same code path as the CLI's)."""
    data = settings.model_dump(exclude={"fault", "admin_password"})
    process = CONTEXT.Process(target=_node_main, args=(data, fault), daemon=True)
    process.start()
    return process


def is_stopped(process) -> bool:
    try:
        return psutil.Process(process.pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def end(process, timeout: float = 15.0) -> None:
    """SIGTERM (resuming it first if stopped), then SIGKILL if it does not leave."""
    if process.is_alive():
        with contextlib.suppress(ProcessLookupError):  # it may end on its own (a fault) meanwhile
            os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join(5)
