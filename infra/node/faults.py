"""Fault injection for the crash-point tests: `STRATOS_FAULT=point:N` kills the process with
SIGKILL the Nth time it passes `point` (no cleanup, no flush: what a power cut leaves);
`point:N:stop` stops it with SIGSTOP instead (a process paused past its session timeout).

Four faults leave the process running: `append-timeout:N` makes the Nth commit's append end in
a timeout although the record still lands (later: the broker answered too slowly),
`actor-raises:N` makes the actor handling the Nth command raise on it, every time,
`poll-hangs:N` makes the node's Nth poll wait until its consumer is closed (a client that never
answers, as kafka-python 3.0's consumer has been seen to do on a loaded machine), and
`heartbeats-stop:N` stops the consumer's heartbeats at the node's Nth poll (the group drops the
node while its consumer believes it still holds its partitions)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from kafka.errors import KafkaTimeoutError

POINTS = ("before-append", "after-send", "after-append", "after-reply", "after-offset-commit", "mid-checkpoint")
"""Where the node's write path can be cut: deciding → sending the commit → acknowledged →
replies sent → command offsets committed; and between a checkpoint's snapshots and marker."""
FAULTS = ("append-timeout", "actor-raises", "poll-hangs", "heartbeats-stop")
"""What the node survives: an append whose outcome is unknown, an actor that fails, a hung poll,
a consumer dropped from its group without knowing it."""
LATE_SECONDS = 3.0
"""How much later than its timeout an `append-timeout` record lands: after the node went on."""


class Unanswered:
    """The future of an append whose answer never came in time."""

    def get(self, timeout: float | None = None):  # noqa: ARG002 - the signature of a producer future
        raise KafkaTimeoutError("injected (append-timeout): no answer from the broker in time")


class CrashPoints:
    def __init__(self, spec: str | None) -> None:
        self.point, self.remaining, self.signal = None, 0, signal.SIGKILL
        if spec:
            point, _, rest = spec.partition(":")
            count, _, action = rest.partition(":")
            if point not in POINTS + FAULTS:
                raise ValueError(f"STRATOS_FAULT: unknown point {point!r} (one of {', '.join(POINTS + FAULTS)})")
            self.point, self.remaining = point, int(count or 1)
            self.signal = signal.SIGSTOP if action == "stop" else signal.SIGKILL

    def passing(self, point: str) -> None:
        if self.fires(point) and point in POINTS:
            os.kill(os.getpid(), self.signal)

    def fires(self, point: str) -> bool:
        """Whether this pass through `point` is the one the fault names."""
        if point != self.point:
            return False
        self.remaining -= 1
        return self.remaining == 0

    @staticmethod
    def late(send: Callable[[], object]) -> Unanswered:
        """Send after LATE_SECONDS; the caller sees a timeout now (an append whose outcome is unknown)."""
        timer = threading.Timer(LATE_SECONDS, send)
        timer.daemon = True
        timer.start()
        return Unanswered()
