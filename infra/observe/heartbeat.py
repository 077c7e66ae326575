"""Every platform part says it is alive: a Heartbeat on the compacted `<prefix>heartbeats` topic
every `heartbeat_seconds`, keyed by part and process, with the consumer groups it reads with and
the last ERROR it logged (a logging.Handler counts them). `stratos status` reads them back
(infra/observe/status.py): a part whose heartbeat stopped is reported stopped, with its group's lag.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime

from infra.health import HEALTH_GROUP
from infra.log.kafka import Appender, envelope
from infra.observe.line_shipper import install_platform_logging
from infra.settings import Settings
from schemas.observability import Heartbeat, HeartbeatRecord

log = logging.getLogger(__name__)

PART_GROUPS = {"node": ["nodes"], "reactor": ["reactor"], "cloud": ["cloud"], "health": [HEALTH_GROUP]}
"""Consumer groups (without the topic prefix) each part reads with; the others read without one."""
PART_TOPICS = {
    "node": ["commands"],
    "reactor": ["events", "replies", "instance-status", "health"],
    "cloud": ["events"],
    "health": ["health"],
}
"""The topics those groups read (a partition the group never committed counts from its start)."""


class LastError(logging.Handler):
    """Remembers the last ERROR (or worse) record and counts them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.message: str | None = None
        self.at: datetime | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.name.startswith("kafka") and text.endswith("Cancelled"):
            return  # kafka-python cancels its pending metadata request on every close: not an error
        self.count += 1
        if record.exc_info and record.exc_info[1] is not None:
            text += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        self.message = f"{record.name}: {text}"[:2000]
        self.at = datetime.fromtimestamp(record.created, UTC)


STOP_WAIT_SECONDS = 2.0
"""The longest a stopping part waits for its beat thread, its last beat, and its producer."""


class Heartbeats:
    def __init__(self, settings: Settings, part: str, groups: list[str] | None = None) -> None:
        self.settings = settings
        self.part = part
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.groups = [settings.topic(g) for g in (PART_GROUPS.get(part, []) if groups is None else groups)]
        self.started_at = datetime.now(UTC)
        self.errors = LastError()
        logging.getLogger().addHandler(self.errors)
        self.appender = Appender(settings)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    @property
    def key(self) -> str:
        return f"{self.part}/{self.process}"

    def start(self) -> Heartbeats:
        self.thread.start()
        return self

    def beat(self, stopping: bool = False, flush_seconds: float = 10.0) -> None:
        beat = Heartbeat(
            part=self.part,
            process=self.process,
            started_at=self.started_at,
            interval_seconds=self.settings.heartbeat_seconds,
            groups=self.groups,
            topics=PART_TOPICS.get(self.part, []) if self.groups else [],
            errors=self.errors.count,
            last_error=self.errors.message,
            last_error_at=self.errors.at,
            stopping=stopping,
        )
        self.appender.send("heartbeats", self.key, envelope(HeartbeatRecord, beat, self.key))
        self.appender.flush(flush_seconds)

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - a broker outage: the next beat tries again
                log.warning("heartbeat of %s not sent", self.part, exc_info=True)
            if self.stopping.wait(self.settings.heartbeat_seconds):
                return

    def stop(self) -> None:
        """A clean stop says so (status shows `stopped` at once, not after missed beats). Each
        wait is short: with no broker answering, a part must still stop within seconds of its
        SIGTERM (it waited for its beats' delivery timeouts, about 30 s, before)."""
        self.stopping.set()
        self.thread.join(STOP_WAIT_SECONDS)
        try:
            self.beat(stopping=True, flush_seconds=STOP_WAIT_SECONDS)
        except Exception:  # noqa: BLE001
            log.warning("last heartbeat of %s not sent", self.part)
        logging.getLogger().removeHandler(self.errors)
        self.appender.close(STOP_WAIT_SECONDS)


def start_part(settings: Settings, part: str) -> Heartbeats | None:
    """What every supervised part runs beside its work: heartbeats and, with
    STRATOS_LOG_TO_KAFKA=1, its log lines on `<prefix>logs`. None without a broker."""
    if not settings.kafka_bootstrap:
        return None
    install_platform_logging(settings, part)
    try:
        return Heartbeats(settings, part).start()
    except Exception:  # noqa: BLE001 - the part still runs; status will show it as unseen
        log.exception("heartbeats of %s could not start", part)
        return None
