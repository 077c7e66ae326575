"""The runtime: fold an aggregate's log into its state, run a command, and the thespian actor.

`handle` is the whole effectively-once step, pure: a command id already handled is answered
as a duplicate and writes nothing; otherwise decide, stamp the events with the aggregate's
next sequence numbers, and apply them. The node in `infra` appends what comes out.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from types import ModuleType

from pydantic import BaseModel
from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from actors import application, cluster, definitions
from actors.base import Context, Rejection, State, evolve
from schemas.base import redacted
from schemas.envelope import Envelope
from schemas.ids import parse_aggregate_id
from schemas.records import EventRecord
from schemas.status import CommandAccepted, CommandRejected

log = logging.getLogger(__name__)

HANDLED_MEMORY = 512
"""Command ids remembered per aggregate: more than any redelivery window can replay."""


def module_for(aggregate_id: str) -> ModuleType:
    kind = parse_aggregate_id(aggregate_id).kind
    if kind == "application":
        return application
    if kind == "cluster":
        return cluster
    return definitions


@dataclass
class Tracked:
    """An aggregate's state plus the command ids it has handled (its tracking records).

    Plain data (picklable), so that it can be handed to actors in other processes."""

    state: State
    handled: OrderedDict = field(default_factory=OrderedDict)

    @property
    def module(self) -> ModuleType:
        return module_for(self.state.aggregate_id)

    @classmethod
    def new(cls, aggregate_id: str) -> "Tracked":
        return cls(module_for(aggregate_id).initial(aggregate_id))

    def remember(self, command_id: str | None) -> None:
        if command_id and command_id not in self.handled:
            self.handled[command_id] = None
            if len(self.handled) > HANDLED_MEMORY:
                self.handled.popitem(last=False)

    def fold(self, record: Envelope) -> str | None:
        """Apply one logged event. Returns a problem report when its aggregate_seq is not the
        next one: a repeat is skipped, a gap is reported and the event applied."""
        expected = self.state.seq + 1
        problem = None
        if record.aggregate_seq != expected:
            problem = (f"{record.aggregate_id}: expected seq {expected}, found "
                       f"{record.aggregate_seq} ({record.type} {record.id})")
            if record.aggregate_seq < expected:
                return problem + ": repeat skipped"
        state = self.module.apply(self.state, record.payload, record.occurred_at)  # type: ignore[union-attr]
        self.state = evolve(state, {"seq": record.aggregate_seq})
        self.remember(record.causation_id)
        return problem

    def snapshot(self) -> dict:
        return {"state": self.state.model_dump(mode="json"), "handled": list(self.handled)}

    @classmethod
    def from_snapshot(cls, aggregate_id: str, data: dict) -> "Tracked":
        module = module_for(aggregate_id)
        state_cls = type(module.initial(aggregate_id))
        return cls(state_cls.model_validate(data["state"]), OrderedDict.fromkeys(data.get("handled", [])))


@dataclass(frozen=True)
class Outcome:
    events: list[EventRecord]
    reply: BaseModel
    needs_timer: bool = False
    """The aggregate has members in transition: its timeouts must be checked periodically."""


def handle(tracked: Tracked, command: Envelope, ctx: Context) -> Outcome:
    """Run one command against an aggregate: events to append and the reply to send."""
    payload = command.payload
    if command.id in tracked.handled:
        return Outcome([], CommandAccepted(command_id=command.id, command_type=payload.type,
                                           duplicate=True))
    try:
        decided = tracked.module.decide(tracked.state, payload, ctx)  # type: ignore[union-attr]
    except Rejection as rejection:
        return Outcome([], CommandRejected(
            command_id=command.id, command_type=payload.type, reason=rejection.reason,
            field=rejection.field, code=rejection.code,
            command=redacted(payload)))
    records = []
    for n, event in enumerate(decided, start=1):
        record = EventRecord.model_construct(  # built from validated parts: no re-validation
            schema_version=1, id=ctx.new_id(), type=event.type, aggregate_id=command.aggregate_id,  # type: ignore[attr-defined]
            aggregate_seq=tracked.state.seq + 1, occurred_at=ctx.now, tenant=command.tenant,
            correlation_id=command.correlation_id or command.id, causation_id=command.id,
            payload=event)
        tracked.fold(record)
        records.append(record)
    tracked.remember(command.id)
    return Outcome(records, CommandAccepted(command_id=command.id, command_type=payload.type,
                                            event_types=[r.type for r in records]),
                   needs_timer(tracked.state))


# --- the actor --------------------------------------------------------------------------

@dataclass(frozen=True)
class Rebuild:
    tracked: Tracked


@dataclass(frozen=True)
class Handle:
    command: Envelope
    ctx: Context


@dataclass(frozen=True)
class TakeSnapshot:
    """Ask an actor for its aggregate's snapshot (answered with a dict)."""


@dataclass(frozen=True)
class StartTicking:
    seconds: float


@dataclass(frozen=True)
class Tick:
    """Sent to the node: time to check the timeouts of aggregates with members in transition."""


def needs_timer(state: State) -> bool:
    members = getattr(state, "members", None)
    return bool(members) and any(
        m.is_pending or m.termination_requested_at or m.obsolete_since for m in members.values())


class AggregateActor(Actor):
    """A thin shell: holds one aggregate, runs `handle`, answers with the outcome."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tracked: Tracked | None = None

    def receiveMessage(self, message, sender):  # noqa: N802 - thespian's API
        if isinstance(message, Rebuild):
            self.tracked = message.tracked
        elif isinstance(message, Handle) and self.tracked is not None:
            self.send(sender, handle(self.tracked, message.command, message.ctx))
        elif isinstance(message, TakeSnapshot) and self.tracked is not None:
            self.send(sender, self.tracked.snapshot())
        elif isinstance(message, ActorExitRequest):
            self.tracked = None


class TickerActor(Actor):
    """One per node: a thespian wakeupAfter loop that tells the node when timeouts are due.

    One timer for the node rather than one per aggregate: simpleSystemBase scans every pending
    wakeup on each message, which made a node with 1,000 timed clusters 10x slower."""

    def receiveMessage(self, message, sender):  # noqa: N802 - thespian's API
        if isinstance(message, StartTicking):
            self.node, self.seconds = sender, message.seconds
            self.wakeupAfter(self.seconds)
        elif isinstance(message, WakeupMessage):
            self.send(self.node, Tick())
            self.wakeupAfter(self.seconds)
