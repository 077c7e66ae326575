"""The events topic read as history, by every reader: commits verified, decoded, fenced per partition.

Only the platform writes history: a record counts (a Claim moves the fence, a Commit is folded)
only when its platform signature verifies (`infra.auth.signing.Verifier.platform`), checked on
the raw bytes before anything else. Any other record (unsigned, signed by a member's key, or
altered) is dead-lettered once per process with the reason (`Rejections`) and never moves the
fence. Every reader goes through `History`, so node recovery, read models, the cloud controller,
health views, reactor, agents, LB, usage and the replay tools apply the same rule.

A reader that starts a partition at offset 0 knows every claim; one that resumes mid-way (a
consumer group member) learns the claim in force there from `fence_at` (the last checkpoint
before that offset, then the claims after it: see `infra.log.recovery.fence_before`).
Two decodes, one rule: `decode_log` validates a record in full (pydantic); `decode_head` reads
its envelope as strictly, with msgspec, and leaves the payload to `LogHead.record()`.
"""

from __future__ import annotations

import logging
import threading
import typing
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Literal

import annotated_types
import msgspec
from kafka import ConsumerRebalanceListener
from pydantic import TypeAdapter

from actors.history import Fence, events_of
from infra.auth.signing import Unauthenticated, Verifier
from infra.log.bulk import iter_records
from infra.log.kafka import Appender, DeadLetters, decode_key, read_to_end, rejection_reason
from schemas.records import Commit, EventRecord, LogEntry, LogRecord

log = logging.getLogger(__name__)
FenceAt = Callable[[int, int], Fence]
EVENTS = "events"
WRONG_KEYRING = 100
"""Refused records, with none verified before them, after which a reader stops dead-lettering:
its own keyring is wrong (a tool run without the platform's secret), not the whole log."""


def decode_log(value: bytes | None) -> LogRecord:
    """Validate one record of the events topic; raises ValueError (ValidationError is one)."""
    if value is None:
        raise ValueError("record: null value (a tombstone has no meaning on the events topic)")
    return _validate_log(value)


_validate_log = LogRecord.__pydantic_validator__.validate_json
"""`LogRecord.model_validate_json` without its Python wrapper (which only passes its defaults on):
0.6 µs of 5.7 a commit."""


# The envelope alone, for readers that filter on it before they need the payload. It is checked
# exactly as `LogRecord` checks it: the struct below is derived from `LogRecord.model_fields`
# (types, defaults, min_length/ge, extra keys forbidden) and refuses to build for anything it
# cannot mirror; whatever it does not accept is decoded by `decode_log`, so an unusual but valid
# record is read as pydantic reads it and a bad one gets pydantic's error naming the field.
# Of the payload it reads the entry's type and a commit's claim, and checks the JSON syntax and
# UTF-8 of the rest; everything else about the payload (its fields, and the limits of pydantic's
# parser inside it: nesting deeper than 200, integers longer than 4,300 digits) is checked when
# `record()` decodes it.
_CONSTRAINTS = {annotated_types.MinLen: "min_length", annotated_types.Ge: "ge"}
_PLAIN = (str, int, str | None)


def _entry_head() -> type[msgspec.Struct]:
    """A payload's `type` (one of the log's entry types) and a commit's `claim`: what the fence reads."""
    entry_types = tuple(model.model_fields["type"].default for model in typing.get_args(typing.get_args(LogEntry)[0]))
    claim = Commit.model_fields["claim"]
    if claim.annotation not in _PLAIN or claim.metadata:
        raise TypeError(f"Commit.claim: {claim.annotation} cannot be read by the fast path")
    return msgspec.defstruct(
        "EntryHead",
        [
            ("type", Literal[entry_types]),
            ("claim", claim.annotation, claim.default),
        ],
        kw_only=True,
        frozen=True,
    )


EntryHead = _entry_head()
_COMMIT = Commit.model_fields["type"].default


def _envelope_head(model: type[LogRecord]) -> type[msgspec.Struct]:
    if model.model_config.get("extra") != "forbid":
        raise TypeError(f"{model.__name__}: the fast path mirrors extra='forbid' only")
    decorators = model.__pydantic_decorators__
    if (
        set(decorators.model_validators) != {"_type_matches_payload"}
        or decorators.field_validators
        or decorators.validators
        or decorators.root_validators
    ):
        raise TypeError(f"{model.__name__}: a validator the fast path does not mirror")
    fields = []
    for name, info in model.model_fields.items():
        if name == "payload":
            annotation: object = EntryHead
        elif info.annotation is datetime:  # a string, parsed by pydantic's own datetime rule (`_time`)
            annotation = str
        elif info.annotation in _PLAIN:
            annotation = info.annotation
        else:
            raise TypeError(f"{model.__name__}.{name}: {info.annotation} cannot be read by the fast path")
        constraints = {}
        for item in info.metadata:
            if type(item) not in _CONSTRAINTS:
                raise TypeError(f"{model.__name__}.{name}: constraint {item!r} cannot be read by the fast path")
            constraints[_CONSTRAINTS[type(item)]] = getattr(item, _CONSTRAINTS[type(item)])
        if info.annotation is int:  # longer integers: pydantic decides (it refuses > 4,300 digits)
            constraints = {"ge": -(2**63), "le": 2**63 - 1} | constraints
        if constraints:
            annotation = Annotated[annotation, msgspec.Meta(**constraints)]
        fields.append((name, annotation, msgspec.NODEFAULT if info.is_required() else info.default))
    return msgspec.defstruct(f"{model.__name__}Head", fields, kw_only=True, frozen=True, forbid_unknown_fields=True)


EnvelopeHead = _envelope_head(LogRecord)
_time = TypeAdapter(LogRecord.model_fields["occurred_at"].annotation).validator.validate_python  # type: ignore[arg-type, maybe-unrecognized-str-typeform]
"""pydantic-core's datetime parser, as the envelope's field uses it (msgspec's rounds digits past
the microsecond where pydantic truncates them)."""
_decode_head = msgspec.json.Decoder(EnvelopeHead).decode


class LogHead:
    """One record of the events topic read as far as its envelope: `envelope` holds the
    envelope's fields (`payload` there only the entry's `type` and a commit's `claim`),
    `occurred_at` the time; `record()` validates the whole record with pydantic on first use."""

    __slots__ = ("envelope", "occurred_at", "_value", "_record")

    def __init__(self, envelope, occurred_at: datetime, value: bytes | None, record: LogRecord | None = None) -> None:
        self.envelope, self.occurred_at, self._value, self._record = envelope, occurred_at, value, record

    def record(self) -> LogRecord:
        """The record in full, exactly as `decode_log` reads it; raises ValueError as it does."""
        if self._record is None:
            self._record = decode_log(self._value)
        return self._record


def decode_head(value: bytes | None) -> LogHead:
    """The envelope of one record of the events topic, as strictly as `decode_log` checks it;
    raises ValueError (pydantic's, naming the field) where `decode_log` would for the envelope."""
    if value is not None:
        try:
            if not value.isascii():
                value.decode()  # UnicodeDecodeError: msgspec skips the payload's strings unchecked
            head = _decode_head(value)
            if head.type == head.payload.type:  # type: ignore[attr-defined]  # else: pydantic's error for the mismatch
                return LogHead(head, _time(head.occurred_at), value)  # type: ignore[attr-defined]
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError):
            pass
    return head_of(decode_log(value))


def head_of(record: LogRecord) -> LogHead:
    """The head of a record decoded in full (what the fast path gives for the same bytes)."""
    entry = record.payload
    envelope = EnvelopeHead(
        **{
            name: getattr(record, name)
            for name in EnvelopeHead.__struct_fields__
            if name not in ("occurred_at", "payload")
        },
        occurred_at=record.occurred_at.isoformat(),
        payload=EntryHead(type=entry.type, claim=getattr(entry, "claim", None)),
    )
    return LogHead(envelope, record.occurred_at, None, record)


def _from_start(partition: int, offset: int) -> Fence:
    if offset != 0:
        raise ValueError(f"events partition {partition}: a reader without fence_at must start at 0, not {offset}")
    return Fence()


class Rejections:
    """Records of the platform's own topics that fail their signature: each dead-lettered once
    per process (every reader of a topic meets the same record; `stratos status` counts them
    by position), and logged."""

    REMEMBERED = 100_000
    _shared: typing.ClassVar[dict[tuple[str | None, str], Rejections]] = {}
    _lock = threading.Lock()

    def __init__(self, settings) -> None:
        self.settings = settings
        self.sent: dict[tuple[str, int, int], None] = {}
        self.dead_letters: DeadLetters | None = None

    @classmethod
    def of(cls, settings) -> Rejections:
        """The process's rejections for this platform (one dead-letter producer, made on first use)."""
        with cls._lock:
            found = cls._shared.get((settings.kafka_bootstrap, settings.topic_prefix))
            if found is None:
                found = cls._shared[(settings.kafka_bootstrap, settings.topic_prefix)] = cls(settings)
            return found

    @classmethod
    def close(cls, settings) -> None:
        """Close this platform's dead-letter producer if one was made: a process done with a
        platform (a test whose topics are gone) would otherwise keep a producer asking the
        broker for a topic that no longer exists."""
        with cls._lock:
            found = cls._shared.pop((settings.kafka_bootstrap, settings.topic_prefix), None)
        if found is not None and found.dead_letters is not None:
            found.dead_letters.appender.close()

    def __call__(self, raw, exc: Exception) -> None:
        """Dead-letter `raw` (a consumer record) with why, unless this process already did."""
        position = (raw.topic, raw.partition, raw.offset)
        with self._lock:
            if position in self.sent:
                return
            self.sent[position] = None
            if len(self.sent) > self.REMEMBERED:
                del self.sent[next(iter(self.sent))]
            if self.dead_letters is None:
                self.dead_letters = DeadLetters(Appender(self.settings, source="verifier"))
        self.dead_letters.send(raw.topic, raw.partition, raw.offset, raw.key, raw.value, str(exc), exc)


def _logged(raw, exc: Exception) -> None:
    log.warning("rejected %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, exc)


class History:
    """Per-partition fences over the events topic; feed it records in offset order.

    Records are consumer records (kafka-python's or aiokafka's: topic, partition, offset, key,
    value, headers). Each must carry the platform's signature; one that does not raises
    Unauthenticated (a ValueError, as an undecodable record raises) after `rejected` saw it."""

    def __init__(
        self,
        verifier: Verifier,
        fence_at: FenceAt = _from_start,
        rejected: Callable[[object, Exception], None] = _logged,
    ) -> None:
        self.verifier = verifier
        self.fence_at = fence_at
        self.rejected = rejected
        self.fences: dict[int, Fence] = {}
        self.verified = self.refused = 0

    @classmethod
    def of(cls, settings, fence_at: FenceAt = _from_start) -> History:
        """A reader's history: the platform's keyring, forged records dead-lettered."""
        return cls(Verifier.of(settings), fence_at, Rejections.of(settings))

    def commit(self, raw) -> LogRecord | None:
        """The commit at this position if it is history; None for a claim or a fenced commit.
        Raises ValueError for a record that is not the platform's or not a log record (the
        fence is unchanged)."""
        fence = self._fence(raw.partition, raw.offset)
        self._authentic(raw)
        record = decode_log(raw.value)
        return record if fence.admit(record) else None

    def head(self, raw) -> LogHead | None:
        """`commit` for readers that filter on the envelope first: the commit's head if it is
        history, None for a claim or a fenced commit. Claims are decoded in full (they move the
        fence); a commit's payload is validated when `record()` is called, so an invalid
        payload raises there, and not at all for a commit the reader passes over."""
        fence = self._fence(raw.partition, raw.offset)
        self._authentic(raw)
        head = decode_head(raw.value)
        if head.envelope.type != _COMMIT:
            fence.admit(head.record())
            return None
        return head if fence.admits(head.envelope.payload.claim) else None

    def _authentic(self, raw) -> None:
        try:
            self.verifier.platform(EVENTS, raw.key, raw.value, raw.headers)
        except Unauthenticated as exc:
            self.refused += 1
            if self.verified or self.refused <= WRONG_KEYRING:
                self.rejected(raw, exc)
            elif self.refused == WRONG_KEYRING + 1:
                log.error(
                    "none of the first %d records of events verifies with this process's platform keyring "
                    "(key ids %s): wrong STRATOS_PLATFORM_SECRET or state directory? Refusing further "
                    "ones without dead letters",
                    WRONG_KEYRING,
                    ", ".join(self.verifier.keyring),
                )
            raise
        self.verified += 1

    def _fence(self, partition: int, offset: int) -> Fence:
        fence = self.fences.get(partition)
        if fence is None:  # before decoding: an invalid first record must not lose the start
            fence = self.fences[partition] = self.fence_at(partition, offset)
        return fence

    def events(self, raw) -> list[EventRecord]:
        commit = self.commit(raw)
        return events_of(commit) if commit is not None else []

    def forget(self, partitions) -> None:
        """Partitions no longer read (revoked): a later resume asks `fence_at` again."""
        for partition in partitions:
            self.fences.pop(partition, None)


class ForgetFences(ConsumerRebalanceListener):
    """A group reader's events partitions taken away: a later resume asks its `fence_at` again."""

    def __init__(self, history: History, events_topic: str) -> None:
        self.history, self.events_topic = history, events_topic

    def on_partitions_revoked(self, revoked):
        self.history.forget([tp.partition for tp in revoked if tp.topic == self.events_topic])

    def on_partitions_assigned(self, assigned):
        """Fences are learnt lazily, at the first record read of each partition."""


def signed_rows(
    settings, topic_kind: str, partition: int, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes | None, bytes]]:
    """`iter_partition` of a topic only the platform writes (snapshots, markers), without the
    records it did not sign: those are dead-lettered with the reason (`Rejections`)."""
    verifier, rejected = Verifier.of(settings), Rejections.of(settings)
    for raw in iter_records(settings, topic_kind, partition, start, end):
        try:
            verifier.platform(topic_kind, raw.key, raw.value, raw.headers)
        except Unauthenticated as exc:
            rejected(raw, exc)
            continue
        yield raw.offset, raw.key, raw.value


def read_history(
    settings, partitions=None, where: Callable[[LogHead], bool] | None = None
) -> Iterator[tuple[int, int, LogRecord]]:
    """Every commit that is history, (partition, offset, commit), from the beginning of the
    events topic to its current end; invalid records are logged and skipped (the reactor
    dead-letters them; forged ones are dead-lettered here). With `where`, only the commits
    whose head it accepts, and only those have their payload decoded (the others' envelopes
    are still checked)."""
    history = History.of(settings)
    for raw in read_to_end(settings, "events", partitions=partitions, decode_records=False):
        try:
            if where is None:
                commit = history.commit(raw)
            else:
                head = history.head(raw)
                commit = head.record() if head is not None and where(head) else None
        except ValueError as exc:
            log.warning("skipping invalid event record %d@%d: %s", raw.partition, raw.offset, rejection_reason(exc))
            continue
        if commit is not None:
            yield raw.partition, raw.offset, commit


def read_events(settings, partitions=None) -> Iterator[EventRecord]:
    """The events of every commit that is history, in log order per partition."""
    for _partition, _offset, commit in read_history(settings, partitions):
        yield from events_of(commit)


def history_events(history: History, raws, dead_letters: DeadLetters) -> Iterator[tuple[EventRecord, object]]:
    """The events of the raw records that are history, each with its source record; a record
    that is not a valid log record (key included) is dead-lettered with the reason (a forged
    one by the history's `rejected`)."""
    for raw in raws:
        try:
            decode_key(raw.key)
            events = history.events(raw)
        except Unauthenticated:
            continue
        except ValueError as exc:
            dead_letters.send(raw.topic, raw.partition, raw.offset, raw.key, raw.value, rejection_reason(exc), exc)
            continue
        for event in events:
            yield event, raw
