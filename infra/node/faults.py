"""Fault injection for the crash-point tests: `STRATOS_FAULT=point:N` kills the process with
SIGKILL the Nth time it passes `point` (no cleanup, no flush: what a power cut leaves);
`point:N:stop` stops it with SIGSTOP instead (a process paused past its session timeout)."""

from __future__ import annotations

import os
import signal

POINTS = ("before-append", "after-send", "after-append", "after-reply", "after-offset-commit", "mid-checkpoint")
"""Where the node's write path can be cut: deciding → sending the commit → acknowledged →
replies sent → command offsets committed; and between a checkpoint's snapshots and marker."""


class CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self.point, self.remaining, self.signal = None, 0, signal.SIGKILL
        if spec:
            point, _, rest = spec.partition(":")
            count, _, action = rest.partition(":")
            if point not in POINTS:
                raise ValueError(f"STRATOS_FAULT: unknown point {point!r} (one of {', '.join(POINTS)})")
            self.point, self.remaining = point, int(count or 1)
            self.signal = signal.SIGSTOP if action == "stop" else signal.SIGKILL

    def passing(self, point: str) -> None:
        if point != self.point:
            return
        self.remaining -= 1
        if self.remaining == 0:
            os.kill(os.getpid(), self.signal)
