"""Fault injection for the crash-point tests: `STRATOS_FAULT=point:N` kills the process with
SIGKILL the Nth time it passes `point` (no cleanup, no flush: what a power cut leaves)."""
from __future__ import annotations

import os
import signal


class CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self.point, self.remaining = None, 0
        if spec:
            point, _, count = spec.partition(":")
            self.point, self.remaining = point, int(count or 1)

    def passing(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
