"""What every aggregate shares: the decision context, rejections, and the state base.

Each aggregate module exposes `initial(aggregate_id)`, `decide(state, command, ctx)` returning
events (or raising `Rejection`) and `apply(state, event)` returning the next state. They are
pure: the clock and the id generator come in through `Context`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

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
    claim: str | None = None
    """The writer's claim on the partition, stamped on every commit (fencing)."""
    writer: str | None = None
    max_record_bytes: int = 900_000
    """Below the broker's default message size (1 MB) with room for the record's framing."""


M = TypeVar("M", bound=BaseModel)
_set_dict = object.__setattr__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
"""BaseModel's slots written directly (models are made once per event on replay): a third
cheaper than `object.__setattr__` by name."""


def evolve(model: M, changes: dict[str, Any], owned: bool = False) -> M:
    """A copy of a frozen model with some fields changed, without re-validation.

    `apply` runs once per event on replay; pydantic's `model_copy` deep-copies its private
    bookkeeping and costs three times as much. `changes` hold values of the right types.
    `owned`: nobody but the caller holds `model` (a state a rebuild is making), so it is
    changed where it is and returned: frozen to every other reader, not to its maker."""
    if owned:
        model.__dict__.update(changes)
        model.__pydantic_fields_set__.update(changes.keys())
        return model
    new = model.__class__.__new__(model.__class__)
    _set_dict(new, "__dict__", {**model.__dict__, **changes})
    _set_fields_set(new, model.__pydantic_fields_set__ | changes.keys())
    _set_extra(new, None)
    _set_private(new, None)
    return new


def built(cls: type[M], fields: dict[str, Any]) -> M:
    """A model from already validated parts, every field given: pydantic's `model_construct`
    without its per-field default handling, which costs ~20 µs a record (the commit, event and
    health records of every decision are built this way on the node and in the simulator)."""
    new = cls.__new__(cls)
    _set_dict(new, "__dict__", fields)
    _set_fields_set(new, set(fields))
    _set_extra(new, None)
    _set_private(new, None)
    return new


@cache
def _defaults(cls: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Callable[[], Any]], frozenset[str]]:
    """(plain defaults, default factories, required names) of a model's fields."""
    plain: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            factories[name] = info.default_factory  # type: ignore[assignment]
        elif not info.is_required():
            plain[name] = info.default
    return plain, factories, frozenset(cls.model_fields) - plain.keys() - factories.keys()


def made(cls: type[M], **fields: Any) -> M:
    """A message a rule builds from values it already holds with the right types (its state, a
    validated command): defaults filled in, no validation. Validation happens where data enters
    (REST, Kafka clients, the log on read); re-validating what a rule made cost ~60 % of a
    decision here. A missing required field is a bug in the rule: TypeError, at once."""
    plain, factories, required = _defaults(cls)
    if not required <= fields.keys():
        raise TypeError(f"{cls.__name__}: missing {sorted(required - fields.keys())}")
    values = {**plain, **fields}
    for name, factory in factories.items():
        if name not in fields:
            values[name] = factory()
    return built(cls, values)


S_ = TypeVar("S_", bound="State")


def folded(
    apply: Callable[[S_, Any, datetime | None], S_], state: S_, events: Sequence[Any], at: datetime | None
) -> S_:
    """`state` after `events`, one `apply` each: the fold of aggregates without one of their own."""
    for event in events:
        state = apply(state, event, at)
    return state


class State(BaseModel):
    """Aggregate state: JSON-serialisable so that a snapshot is just `model_dump`."""

    model_config = ConfigDict(frozen=True)

    aggregate_id: str
    seq: int = 0
    exists: bool = False
