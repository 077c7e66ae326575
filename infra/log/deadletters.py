"""Reading and replaying dead letters (`stratos deadletter list / replay`).

A dead letter's ID is `PARTITION:OFFSET` of its record on `<prefix>deadletter`: unique, stable,
and printed by `deadletter list`. Replaying re-sends the original record (or a corrected one)
to the topic it came from, validated first as that topic's record type, with the headers its
sender gave it (a client's token, a member's signature) and unsigned: the platform checks it as
its sender's again, so replaying a refused forgery is refused again. `sign=True` (the
operator's `--sign`) signs it as the platform instead: it is then taken as the platform's own.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kafka import TopicPartition
from pydantic import ValidationError

from infra.auth.signing import SIGNATURE, SIGNER, TOKEN, Signer
from infra.log.kafka import (
    CE_PREFIX,
    CONNECT_ERRORS,
    ORIGINAL_HEADERS,
    Appender,
    assigned_consumer,
    decode,
    poll_through_broker_loss,
    read_to_end,
    rejection_reason,
    topic_kind_of,
)
from infra.settings import Settings
from schemas.records import TOPIC_RECORDS, DeadLetterRecord

REPLAYABLE = ("commands", "health", "instance-status", "instance-notifier", "replies")
"""Topics a corrected record may be sent to: the log, snapshots and projections are written by
the platform alone (a commit without its writer's claim would not even be history)."""
REPLAYED_FROM = "stratos.replayed-from"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DeadLetterError(Exception):
    """A user-facing problem: unknown id, bad option, invalid corrected record."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Letter:
    id: str
    record: DeadLetterRecord
    headers: dict[str, str]

    @property
    def original_headers(self) -> list[tuple[str, str]]:
        """The refused record's own headers, as the dead letter kept them."""
        return [
            (name.removeprefix(ORIGINAL_HEADERS), value)
            for name, value in self.headers.items()
            if name.startswith(ORIGINAL_HEADERS)
        ]

    def as_dict(self) -> dict:
        letter = self.record.payload
        return {
            "id": self.id,
            "occurred_at": self.record.occurred_at.isoformat(),
            "source_topic": letter.source_topic,
            "source_partition": letter.source_partition,
            "source_offset": letter.source_offset,
            "reason": letter.reason,
            "exception_class": self.headers.get(CONNECT_ERRORS + "exception.class.name"),
            "headers": {name: _shown(name, value) for name, value in self.headers.items()},
            "original_key": letter.original_key,
            "original": letter.original,
        }


def _shown(name: str, value: str) -> str:
    """A header as listings print it: a bearer token masked (it is its user's credential)."""
    return "********" if name.removeprefix(ORIGINAL_HEADERS) == TOKEN else value


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `30s`, `1d`, or an ISO 8601 time (`2026-12-01T09:30:00Z`)."""
    now = now or datetime.now(UTC)
    if match := _DURATION.match(text.strip()):
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DeadLetterError(
            f"--since {text!r}: neither a duration (10m, 2h, 30s, 1d) nor an ISO 8601 time (2026-12-01T09:30:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _letter(raw) -> Letter | None:
    try:
        record = decode("deadletter", raw.value)
    except ValueError:
        return None
    headers = {name: (value or b"").decode("utf-8", "replace") for name, value in raw.headers or ()}
    return Letter(f"{raw.partition}:{raw.offset}", record, headers)


def list_letters(settings: Settings, since: datetime | None = None, topic: str | None = None) -> list[Letter]:
    """Every dead letter (oldest first per partition, then by time), filtered by time and by
    the source topic (`commands` or the full `stratos.commands`)."""
    wanted = settings.topic(topic) if topic and not topic.startswith(settings.topic_prefix) else topic
    letters = []
    for raw in read_to_end(settings, "deadletter", decode_records=False):
        letter = _letter(raw)
        if letter is None:
            continue
        if since and letter.record.occurred_at < since:
            continue
        if wanted and letter.record.payload.source_topic != wanted:
            continue
        letters.append(letter)
    return sorted(letters, key=lambda item: item.record.occurred_at)


def find_letter(settings: Settings, letter_id: str, timeout: float = 10.0) -> Letter:
    match = re.fullmatch(r"(\d+):(\d+)", letter_id.strip())
    if not match:
        raise DeadLetterError(
            f"dead letter id {letter_id!r}: expected PARTITION:OFFSET as printed by "
            f"`stratos deadletter list` (e.g. 2:17)"
        )
    partition, offset = int(match[1]), int(match[2])
    consumer = assigned_consumer(settings, "deadletter", from_beginning=True)
    try:
        tp = TopicPartition(settings.topic("deadletter"), partition)
        if tp not in consumer.assignment():
            raise DeadLetterError(f"dead letter {letter_id}: {tp.topic} has no partition {partition}", 1)
        end = consumer.end_offsets([tp])[tp]
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while offset < end and time.monotonic() < deadline:
            for raw in poll_through_broker_loss(consumer, 200).get(tp, []):
                if raw.offset == offset:
                    if (letter := _letter(raw)) is None:
                        raise DeadLetterError(f"{tp.topic} {letter_id} is not a dead letter record", 1)
                    return letter
                if raw.offset > offset:
                    break
        raise DeadLetterError(
            f"dead letter {letter_id}: no record at offset {offset} of {tp.topic} partition {partition}", 1
        )
    finally:
        consumer.close()


@dataclass(frozen=True)
class Replayed:
    topic: str
    partition: int
    offset: int
    record_id: str
    signed: bool
    """Signed as the platform (`--sign`): taken as the platform's own record."""
    headers: tuple[str, ...]
    """The sender's headers sent again (its token, its signature)."""


def resent_headers(letter: Letter, corrected: bool, sign: bool) -> list[tuple[str, bytes]]:
    """The original's headers to send again: not the CloudEvents ones (made afresh from the
    record); not its signature when the value was corrected (it would not verify) or when the
    platform signs; not its token when the platform signs (the signature decides then)."""
    dropped = {SIGNER, SIGNATURE} if corrected or sign else set()
    if sign:
        dropped.add(TOKEN)
    return [
        (name, value.encode())
        for name, value in letter.original_headers
        if name not in dropped and not name.startswith(CE_PREFIX)
    ]


def replay(settings: Settings, letter_id: str, value: bytes | None = None, sign: bool = False) -> Replayed:
    """Re-send the dead letter's original record, or `value` instead, to its source topic: with
    its sender's headers and unsigned, or signed as the platform when `sign`."""
    letter = find_letter(settings, letter_id)
    source = letter.record.payload.source_topic
    kind = topic_kind_of(settings, source)
    if kind not in TOPIC_RECORDS or not source.startswith(settings.topic_prefix):
        raise DeadLetterError(
            f"dead letter {letter_id} came from {source}, not a topic of this platform "
            f"(prefix {settings.topic_prefix!r})"
        )
    if kind not in REPLAYABLE:
        raise DeadLetterError(
            f"dead letter {letter_id} came from {source}: its records are written by the "
            f"platform only; replay goes to {', '.join(REPLAYABLE)}"
        )
    raw = value if value is not None else letter.record.payload.original.encode()
    try:
        record = decode(kind, raw)
    except ValidationError as exc:
        raise DeadLetterError(
            f"the {'corrected' if value is not None else 'original'} record is not a valid "
            f"{TOPIC_RECORDS[kind].__name__}: {rejection_reason(exc)}"
        ) from None
    except ValueError as exc:
        raise DeadLetterError(
            f"the {'corrected' if value is not None else 'original'} record is not JSON: {exc}"
        ) from None
    headers = resent_headers(letter, corrected=value is not None, sign=sign)
    key = letter.record.payload.original_key if value is None else None
    appender = Appender(settings, source="deadletter-replay", signer=Signer.platform(settings) if sign else None)
    try:
        meta = appender.send_raw(
            source,
            (key or record.aggregate_id).encode(),
            raw,
            record=record,
            headers=[*headers, (REPLAYED_FROM, f"{settings.topic('deadletter')}:{letter.id}".encode())],
        ).get(timeout=30)
    finally:
        appender.close()
    return Replayed(meta.topic, meta.partition, meta.offset, record.id, sign, tuple(name for name, _ in headers))
