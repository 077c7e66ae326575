"""`stratos up`: the whole platform on one machine, as supervised processes.

The embedded broker runs in this process's care; every other part (node, cloud controller,
health worker, API) is a `stratos <part>` child process that is restarted when it exits, with
its output in `<state-dir>/logs/<part>.log`. Ctrl-C stops them all.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.platform.child_env import PART_SECRETS, minimal_env, part_env, platform_settings

log = logging.getLogger(__name__)


STOP_SECONDS = 15.0
"""How long the parts together get to stop after SIGTERM before the rest are killed. One deadline
for all: waiting 10 s for each in turn took up to 100 s, and a caller that gave up first (a
test's Ctrl-C, then SIGKILL after 60 s) left the parts running, each in its own session."""


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    log_path: Path | None = None


@dataclass
class Supervisor:
    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    restarting: threading.Lock = field(default_factory=threading.Lock)
    """Held while a child is restarted, and by `stop`: a child that exits because `stop` ended
    it is never started again behind `stop`'s back (that one would outlive the platform)."""

    def add(self, name: str, *args: str) -> None:
        self.children.append(
            Child(name, [sys.executable, "-m", "infra.cli", *args], log_path=self.log_dir / f"{name}.log")
        )

    def start(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as out:  # type: ignore[arg-type]  # the child holds its own copy
            child.process = subprocess.Popen(
                child.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=part_env(child.name, self.env),
                start_new_session=True,
            )
        child.started_at = time.monotonic()

    def run(self, poll_seconds: float = 0.5) -> None:
        for child in self.children:
            self.start(child)
        while not self.stopping.wait(poll_seconds):
            for child in self.children:
                code = child.process.poll() if child.process else None
                if code is None:
                    continue
                backoff = min(30.0, 2.0 ** min(child.restarts, 5))
                if time.monotonic() - child.started_at < backoff:
                    continue
                with self.restarting:
                    if self.stopping.is_set():
                        return
                    child.restarts += 1
                    log.warning(
                        "%s exited with code %s; restart #%d (log: %s)",
                        child.name,
                        code,
                        child.restarts,
                        child.log_path,
                    )
                    self.start(child)

    def stop(self) -> None:
        with self.restarting:
            self.stopping.set()
        for child in self.children:
            if child.process and child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for child in self.children:
            if child.process:
                try:
                    child.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0f s of SIGTERM: killed", child.name, STOP_SECONDS)
                    child.process.kill()
                    child.process.wait()


def child_env(bootstrap: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parts' environment: the basics and the STRATOS_* settings (secrets included; each
    part gets only the secrets it uses, `part_env`), not the rest of the caller's environment."""
    return minimal_env(
        {
            **platform_settings(),
            **{k: os.environ[k] for k in PART_SECRETS if k in os.environ},
            "STRATOS_KAFKA_BOOTSTRAP": bootstrap,
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }
    )
