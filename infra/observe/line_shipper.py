"""The log shipper: lines of instances (and of the platform's own parts) to `<prefix>logs`.

Lines are gathered per member and sent as one LogBatch record every `log_batch_seconds` (key =
member id, so one member's lines keep their order on one partition). Each member has its own
token bucket (`log_lines_per_second`, `log_burst_lines`): a flooding instance loses its excess
lines, counted, and the next batch says how many (`dropped`, plus a WARNING line), while the
others' lines go out as before. `KafkaLogHandler` is a `logging.Handler` over a shipper; with
`STRATOS_LOG_TO_KAFKA=1` every part of `stratos up` logs through one (`install_platform_logging`).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from infra.log.kafka import Appender, envelope
from infra.settings import Settings
from schemas.envelope import SUPER_TENANT
from schemas.observability import LogBatch, LogBatchRecord, LogLine
from streams.logrules import TokenBucket

log = logging.getLogger(__name__)
MAX_BATCH_LINES = 500
MAX_LINE_CHARS = 16_000
PLATFORM_CLUSTER = "platform"
"""The `cluster` of the platform's own parts' lines: `stratos logs platform` shows them all."""


@dataclass(frozen=True)
class LogSource:
    """Whose lines: a member (instance) with its cluster, application and tenant."""

    member_id: str
    cluster_id: str = ""
    application_id: str = ""
    tenant: str = SUPER_TENANT


@dataclass
class _Lane:
    source: LogSource
    bucket: TokenBucket
    lines: deque = field(default_factory=deque)
    reported: int = 0
    """refused lines already announced in a batch"""


class LogShipper:
    """Thread-safe: `emit` from anywhere; one thread sends the batches."""

    def __init__(self, settings: Settings, appender: Appender | None = None) -> None:
        self.settings = settings
        self.appender = appender or Appender(settings, linger_ms=20)
        self.own_appender = appender is None
        self.lock = threading.Lock()
        self.lanes: dict[LogSource, _Lane] = {}
        self.sent_lines = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self.thread.start()

    def emit(
        self, source: LogSource, level: str, message: str, origin: str = "agent", at: datetime | None = None
    ) -> bool:
        """Queue one line (long lines are cut); False when the member's rate limit refused it."""
        now = time.monotonic()
        with self.lock:
            lane = self.lanes.get(source)
            if lane is None:
                lane = self.lanes[source] = _Lane(
                    source, TokenBucket(self.settings.log_lines_per_second, self.settings.log_burst_lines)
                )
            if not lane.bucket.take(now):
                return False
            lane.lines.append(
                LogLine(at=at or datetime.now(UTC), level=level, source=origin[:200], message=message[:MAX_LINE_CHARS])
            )
            return True

    def refused(self, member_id: str) -> int:
        with self.lock:
            return sum(lane.bucket.refused for source, lane in self.lanes.items() if source.member_id == member_id)

    def _batches(self) -> list[tuple[LogSource, list[LogLine], int]]:
        out = []
        with self.lock:
            for lane in self.lanes.values():
                dropped = lane.bucket.refused - lane.reported
                if not lane.lines and not dropped:
                    continue
                lines = [lane.lines.popleft() for _ in range(min(MAX_BATCH_LINES, len(lane.lines)))]
                if dropped:
                    lines.append(
                        LogLine(
                            at=datetime.now(UTC),
                            level="WARNING",
                            source="log-shipper",
                            message=f"{dropped} lines dropped by the rate limit ({lane.bucket.refused} in all)",
                        )
                    )
                    lane.reported = lane.bucket.refused
                out.append((lane.source, lines, dropped))
        return out

    def flush(self) -> int:
        """Send what is queued now; returns the number of lines sent."""
        sent = 0
        while batches := self._batches():
            for source, lines, dropped in batches:
                batch = LogBatch(
                    member_id=source.member_id,
                    cluster_id=source.cluster_id,
                    application_id=source.application_id,
                    lines=lines,
                    dropped=dropped,
                )
                try:
                    self.appender.send(
                        "logs",
                        source.member_id,
                        envelope(LogBatchRecord, batch, source.member_id, tenant=source.tenant),
                    )
                except Exception:  # noqa: BLE001 - a broker outage must not stop the instance
                    log.warning("log shipper: %d lines of %s not sent", len(lines), source.member_id)
                    continue
                sent += len(lines)
        self.appender.flush()
        self.sent_lines += sent
        return sent

    def _run(self) -> None:
        while not self.stopping.wait(self.settings.log_batch_seconds):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the shipper outlives a broker outage
                log.warning("log shipper: flush failed", exc_info=True)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        try:
            self.flush()
        finally:
            if self.own_appender:
                self.appender.close()


class KafkaLogHandler(logging.Handler):
    """A logging.Handler that ships records through a LogShipper (kafka's own loggers and the
    shipper's thread excluded: a line about sending lines must not send more lines)."""

    def __init__(
        self, shipper: LogShipper, source: LogSource, level: int = logging.INFO, exclude: tuple[str, ...] = ()
    ) -> None:
        super().__init__(level)
        self.exclude = ("kafka", "aiokafka", "infra.observe.line_shipper", *exclude)
        self.shipper = shipper
        self.source = source
        self.setFormatter(logging.Formatter("%(message)s"))  # the logger name is the line's source

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self.exclude) or threading.current_thread() is self.shipper.thread:
            return
        try:
            self.shipper.emit(
                self.source,
                record.levelname if record.levelname in _LEVELS else "INFO",
                self.format(record),
                origin=record.name,
                at=datetime.fromtimestamp(record.created, UTC),
            )
        except Exception:  # noqa: BLE001 - logging never raises into the caller
            self.handleError(record)


_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def platform_source(part: str) -> LogSource:
    return LogSource(
        member_id=f"{part}@{socket.gethostname()}:{os.getpid()}",
        cluster_id=PLATFORM_CLUSTER,
        application_id="stratos",
        tenant=SUPER_TENANT,
    )


def install_platform_logging(settings: Settings, part: str) -> KafkaLogHandler | None:
    """With STRATOS_LOG_TO_KAFKA=1: the root logger also ships to `<prefix>logs`, as member
    `<part>@host:pid` of cluster `platform`."""
    if not settings.log_to_kafka or not settings.kafka_bootstrap:
        return None
    shipper = LogShipper(settings)
    handler = KafkaLogHandler(shipper, platform_source(part))
    logging.getLogger().addHandler(handler)
    atexit.register(shipper.close)  # the last lines before a clean exit are sent too
    return handler
