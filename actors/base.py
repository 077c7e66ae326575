"""What every aggregate shares: the decision context, rejections, and the state base.

Each aggregate module exposes `initial(aggregate_id)`, `decide(state, command, ctx)` returning
events (or raising `Rejection`) and `apply(state, event)` returning the next state. They are
pure: the clock and the id generator come in through `Context`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class Rejection(Exception):
    """A command that breaks a rule: answered with CommandRejected, state unchanged."""

    def __init__(self, reason: str, field: str | None = None, code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.code = code


def not_found(kind: str, id: str) -> Rejection:
    return Rejection(f"{kind} {id!r} not found", field=id, code=404)


@dataclass(frozen=True)
class Timeouts:
    pending_seconds: float = 900.0
    termination_seconds: float = 1800.0
    obsolete_seconds: float = 86400.0
    start_attempts: int = 3


@dataclass(frozen=True)
class Context:
    now: datetime
    new_id: Callable[[], str]
    timeouts: Timeouts = field(default_factory=Timeouts)


class State(BaseModel):
    """Aggregate state: JSON-serialisable so that a snapshot is just `model_dump`."""

    model_config = ConfigDict(frozen=True)

    aggregate_id: str
    seq: int = 0
    exists: bool = False
