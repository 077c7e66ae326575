"""Records of the platform's own services: instance log lines, usage per hour, part heartbeats.

`stratos.logs` carries LogBatch records keyed by member id (one batch, many lines: the shipper
batches), `stratos.usage` one UsageHour per cluster and hour (compacted, keyed by its id, so a
consumer that sums by id counts each hour once), `stratos.heartbeats` one Heartbeat per part
process (compacted, keyed by part and process)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.base import Message
from schemas.envelope import Envelope

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""Log levels in order of severity (Python's names; WARN is read as WARNING)."""
Level = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class LogLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    level: Level = "INFO"
    source: str = Field(
        "agent", max_length=200, description="what wrote it: agent, clean-hook, git, a log file's path, a logger"
    )
    message: str = Field(max_length=16_000)


class LogBatch(Message):
    """Lines of one member (instance) or platform part, in the order they were written."""

    type: Literal["LogBatch"] = "LogBatch"
    member_id: str = Field(min_length=1, max_length=300)
    cluster_id: str = Field("", max_length=300)
    application_id: str = Field("", max_length=300)
    lines: list[LogLine] = Field(min_length=1, max_length=5000)
    dropped: int = Field(0, ge=0, description="lines the shipper's rate limit dropped before this batch")


class LogBatchRecord(Envelope):
    payload: LogBatch


class UsageHour(Message):
    """What one cluster used in one period (an hour unless STRATOS_USAGE_PERIOD_SECONDS says
    otherwise): the same figures as `GET /api/usage` for that cluster and period."""

    type: Literal["UsageHour"] = "UsageHour"
    cluster_id: str
    application_id: str
    cartridge_type: str
    period_start: datetime
    period_end: datetime
    member_seconds: float = Field(ge=0)
    pending_seconds: float = Field(ge=0)
    by_instance_type: dict[str, float] = {}
    by_partition: dict[str, float] = {}
    scaling_actions: int = Field(0, ge=0)
    requests_served: int | None = Field(None, description="null until the load balancer reports it")


class UsageRecord(Envelope):
    payload: UsageHour


class Heartbeat(Message):
    """A platform part is alive: what it reads and the last error it logged."""

    type: Literal["Heartbeat"] = "Heartbeat"
    part: str
    process: str = Field(description="host:pid")
    started_at: datetime
    interval_seconds: float = Field(gt=0)
    groups: list[str] = Field(default_factory=list, description="consumer group ids it reads with")
    topics: list[str] = Field(default_factory=list, description="topics (without prefix) its groups read")
    errors: int = Field(0, ge=0, description="ERROR lines logged since it started")
    last_error: str | None = None
    last_error_at: datetime | None = None
    stopping: bool = False


class HeartbeatRecord(Envelope):
    payload: Heartbeat
