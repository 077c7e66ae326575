"""The runtime: fold an aggregate's log into its state, run a command, and the thespian actor.

`handle` is the whole effectively-once step, pure: a command id already handled (accepted or
rejected) is answered with its original outcome and writes nothing; otherwise decide, and put
the decision, whatever it is, into one Commit record (atomic: its events become visible
together or not at all), fold it, and hand it to the node in `infra`, which appends it.
"""

from __future__ import annotations

import base64
import logging
import zlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeAlias, cast

import msgspec
from pydantic import BaseModel
from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from actors import application, cluster, definitions
from actors.base import Context, Rejection, State, built, evolve
from schemas import commands as C
from schemas.app_scaling import SetClusterInstances
from schemas.base import redacted
from schemas.envelope import Envelope
from schemas.ids import parse_aggregate_id
from schemas.records import Commit, LogRecord
from schemas.status import CommandAccepted, CommandRejected

log = logging.getLogger(__name__)

DEDUP_MIN_IDS = 1000
DEDUP_MIN_SECONDS = 900.0
DEDUP_MAX_IDS = 10_000
"""The deduplication window per aggregate: a command id is remembered while it is among the
aggregate's last 1,000 handled ids, or handled less than 15 minutes ago (up to 10,000 ids)."""


CLUSTER_COMMANDS = (
    C.CreateCluster,
    C.ScaleCluster,
    C.ScaleAsDependent,
    C.UpdateClusterLimits,
    C.TerminateCluster,
    C.CheckTimeouts,
    C.ReportNodeCreated,
    C.ReportNodeStartFailed,
    C.ReportNodeDestroyed,
    C.ReportInstanceStatus,
    C.ReportMemberFault,
    C.TerminateMember,
    SetClusterInstances,
)
"""Commands only a cluster takes, and the only ones it takes."""


def check_addressee(aggregate_id: str, command: BaseModel) -> None:
    """A command sent to the wrong kind of aggregate is rejected before it reaches a rule."""
    kind = parse_aggregate_id(aggregate_id).kind
    if (kind == "cluster") != isinstance(command, CLUSTER_COMMANDS):
        raise Rejection(
            f"{command.type} is not a command for a {kind} (aggregate id {aggregate_id!r})",  # type: ignore[attr-defined]
            field="aggregate_id",
        )


def module_for(aggregate_id: str) -> ModuleType:
    kind = parse_aggregate_id(aggregate_id).kind
    if kind == "application":
        return application
    if kind == "cluster":
        return cluster
    return definitions


Handled: TypeAlias = tuple[float, str, str, list[Any]]
"""(epoch seconds, command type, outcome, detail): detail is the event types of an accepted
command or [reason, field, code] of a rejected one. Plain JSON in snapshots."""


def pack_handled(handled: OrderedDict[str, Handled]) -> str:
    """The dedup window in a snapshot, compactly: columns (ids, times as float64, an index into
    the distinct outcomes) in msgpack, deflated, base64. 10,000 ids of 32 characters take about
    250 KB this way, against about 1.2 MB as JSON rows, so a snapshot stays within a record."""
    outcomes: dict[tuple[Any, ...], int] = {}
    which = array("I")
    for _at, command_type, outcome, detail in handled.values():
        which.append(outcomes.setdefault((command_type, outcome, *detail), len(outcomes)))
    times = array("d", (h[0] for h in handled.values()))
    packed = msgspec.msgpack.encode(
        [list(handled), times.tobytes(), [[k[0], k[1], list(k[2:])] for k in outcomes], which.tobytes()]
    )
    return base64.b64encode(zlib.compress(packed, 1)).decode("ascii")


def unpack_handled(text: str) -> OrderedDict[str, Handled]:
    """`pack_handled` undone: the same window, in the same order."""
    ids, times_raw, outcomes, which_raw = msgspec.msgpack.decode(zlib.decompress(base64.b64decode(text)))
    times, which = array("d"), array("I")
    times.frombytes(times_raw)
    which.frombytes(which_raw)
    if not len(ids) == len(times) == len(which):
        raise ValueError(f"dedup window: {len(ids)} ids, {len(times)} times, {len(which)} outcomes")
    kinds = [(command_type, outcome, detail) for command_type, outcome, detail in outcomes]
    return OrderedDict(zip(ids, [(at, *kinds[k]) for at, k in zip(times, which, strict=True)], strict=True))


def reply_for(command_id: str, handled: Handled, duplicate: bool) -> BaseModel:
    """The answer to a command from its durable trace (the original outcome on a repeat)."""
    _at, command_type, outcome, detail = handled
    if outcome == "accepted":
        return CommandAccepted(
            command_id=command_id, command_type=command_type, event_types=list(detail), duplicate=duplicate
        )
    reason, field_, code = detail
    return CommandRejected(
        command_id=command_id, command_type=command_type, reason=reason, field=field_, code=code, duplicate=duplicate
    )


@dataclass
class Tracked:
    """An aggregate's state plus the commands it has handled, with their outcomes.

    Plain data (picklable), so that it can be handed to actors in other processes."""

    state: State
    handled: OrderedDict[str, Handled] = field(default_factory=OrderedDict)

    @property
    def module(self) -> ModuleType:
        return module_for(self.state.aggregate_id)

    @classmethod
    def new(cls, aggregate_id: str) -> Tracked:
        return cls(module_for(aggregate_id).initial(aggregate_id))

    def remember(self, command_id: str | None, handled: Handled) -> None:
        if not command_id:
            return
        self.handled[command_id] = handled
        horizon = handled[0] - DEDUP_MIN_SECONDS
        while len(self.handled) > DEDUP_MIN_IDS:
            oldest = next(iter(self.handled.values()))
            if oldest[0] >= horizon and len(self.handled) <= DEDUP_MAX_IDS:
                break
            self.handled.popitem(last=False)

    def fold_commit(self, record: LogRecord, after: State | None = None, in_place: bool = False) -> str | None:
        """Apply one commit of the log. Returns a problem report when it repeats a handled
        command (skipped) or its events do not continue the aggregate's sequence.

        `after`: the state the decision already folded its events into (`handle`: a decision is
        applied once). `in_place`: this Tracked's state is seen by no one else (a rebuild), so
        the fold may write into its containers (`actors.cluster.fold`)."""
        commit: Commit = record.payload  # type: ignore[assignment]
        if record.causation_id and record.causation_id in self.handled:
            return f"{record.aggregate_id}: command {record.causation_id} handled twice: repeat skipped"
        problem = None
        if commit.events:
            expected = self.state.seq + 1
            if record.aggregate_seq != expected:
                problem = f"{record.aggregate_id}: expected seq {expected}, found {record.aggregate_seq} ({record.id})"
                if record.aggregate_seq < expected:
                    return problem + ": repeat skipped"
            if after is None:
                after = self.module.fold(self.state, commit.events, record.occurred_at, in_place)
            self.state = evolve(after, {"seq": record.aggregate_seq + len(commit.events) - 1})
        detail = (
            [e.type for e in commit.events]
            if commit.outcome == "accepted"
            else [commit.reason, commit.field, commit.code]
        )
        self.remember(
            record.causation_id, (record.occurred_at.timestamp(), commit.command_type, commit.outcome, detail)
        )
        return problem

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state.model_dump(mode="json"), "dedup": pack_handled(self.handled)}

    @classmethod
    def from_snapshot(cls, aggregate_id: str, data: dict[str, Any]) -> Tracked:
        """From a snapshot's state: the window packed (`dedup`) or, as written before, as rows."""
        module = module_for(aggregate_id)
        state_cls = type(module.initial(aggregate_id))
        if "dedup" in data:
            handled = unpack_handled(data["dedup"])
        else:
            handled = OrderedDict((row[0], cast(Handled, tuple(row[1:]))) for row in data.get("handled", []))
        return cls(state_cls.model_validate(data["state"]), handled)


@dataclass(frozen=True)
class Outcome:
    commit: LogRecord | None
    """The decision to append (None for a duplicate: nothing to write)."""
    encoded: bytes | None
    reply: BaseModel
    needs_timer: bool = False
    """The aggregate has members in transition: its timeouts must be checked periodically."""
    failure: str | None = None
    """Deciding or applying raised: the command is poison (rejected with code 500)."""


def _commit(tracked: Tracked, command: Envelope, ctx: Context, events: list[Any], **outcome: Any) -> LogRecord:
    return built(
        LogRecord,
        dict(  # built from validated parts: no re-validation
            schema_version=1,
            id=ctx.new_id(),
            type="Commit",
            aggregate_id=command.aggregate_id,
            aggregate_seq=tracked.state.seq + (1 if events else 0),
            occurred_at=ctx.now,
            tenant=command.tenant,
            correlation_id=command.correlation_id or command.id,
            causation_id=command.id,
            payload=built(
                Commit,
                {
                    "type": "Commit",
                    "command_type": command.payload.type,  # type: ignore[attr-defined]
                    "events": events,
                    "claim": ctx.claim,
                    "writer": ctx.writer,
                    "reason": None,
                    "field": None,
                    "code": None,
                    **outcome,
                },
            ),
        ),
    )


def handle(tracked: Tracked, command: Envelope, ctx: Context) -> Outcome:
    """Run one command against an aggregate: the commit to append and the reply to send.

    Whatever happens, a new command id leaves one commit: accepted (with its events, maybe
    none), rejected by a rule, rejected as too large to append, or rejected because deciding
    or applying it raised (a bug: `failure` says so, the node dead-letters the command)."""
    payload = command.payload
    if command.id in tracked.handled:
        return Outcome(None, None, reply_for(command.id, tracked.handled[command.id], duplicate=True))
    echo = failure = None
    try:
        check_addressee(command.aggregate_id, payload)
        events, after = tracked.module.decide_and_fold(tracked.state, payload, ctx)
        commit = _commit(tracked, command, ctx, events, outcome="accepted")
        encoded = commit.model_dump_json().encode()
        if len(encoded) > ctx.max_record_bytes:
            raise Rejection(
                f"{payload.type} would write {len(encoded)} bytes in one decision, more "  # type: ignore[attr-defined]
                f"than the {ctx.max_record_bytes} a record may hold",
                code=413,
            )
        tracked.fold_commit(commit, after)  # the state changes here, once the decision stands
    except Rejection as rejection:
        echo = redacted(payload)
        commit = _commit(
            tracked,
            command,
            ctx,
            [],
            outcome="rejected",
            reason=rejection.reason,
            field=rejection.field,
            code=rejection.code,
        )
    except Exception as exc:  # noqa: BLE001 - a poison command must not stop its aggregate
        failure = f"{type(exc).__name__}: {exc}"
        log.exception("%s on %s failed", payload.type, command.aggregate_id)  # type: ignore[attr-defined]
        commit = _commit(
            tracked,
            command,
            ctx,
            [],
            outcome="rejected",
            code=500,
            reason=f"internal error while handling {payload.type}: {failure}",  # type: ignore[attr-defined]
        )
    if cast(Commit, commit.payload).outcome == "rejected":
        encoded = commit.model_dump_json().encode()
        tracked.fold_commit(commit)
    reply = reply_for(command.id, tracked.handled[command.id], duplicate=False)
    if echo is not None:
        reply = reply.model_copy(update={"command": echo})
    return Outcome(commit, encoded, reply, needs_timer(tracked.state), failure)


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
    """Whether the aggregate has members in transition (`actors.cluster.timed`): O(1), the
    cluster's fold keeps the count."""
    return getattr(state, "in_transition", 0) > 0


def timeouts_command_id(aggregate_id: str, period: int) -> str:
    """CheckTimeouts names the aggregate and the timer period: a resend within the period (a
    node restarted) is a duplicate."""
    return f"{aggregate_id}:timeouts:{period}"


class AggregateActor(Actor):  # type: ignore[misc]  # thespian ships no type hints
    """A thin shell: holds one aggregate, runs `handle`, answers with the outcome."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracked: Tracked | None = None

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802 - thespian's API
        if isinstance(message, Rebuild):
            self.tracked = message.tracked
        elif isinstance(message, Handle) and self.tracked is not None:
            self.send(sender, handle(self.tracked, message.command, message.ctx))
        elif isinstance(message, TakeSnapshot) and self.tracked is not None:
            self.send(sender, self.tracked.snapshot())
        elif isinstance(message, ActorExitRequest):
            self.tracked = None


class TickerActor(Actor):  # type: ignore[misc]  # thespian ships no type hints
    """One per node: a thespian wakeupAfter loop that tells the node when timeouts are due.

    One timer for the node rather than one per aggregate: simpleSystemBase scans every pending
    wakeup on each message, which made a node with 1,000 timed clusters 10x slower."""

    def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802 - thespian's API
        if isinstance(message, StartTicking):
            self.node, self.seconds = sender, message.seconds
            self.wakeupAfter(self.seconds)
        elif isinstance(message, WakeupMessage):
            self.send(self.node, Tick())
            self.wakeupAfter(self.seconds)
