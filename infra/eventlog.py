"""The events topic read as history, by every reader: commits decoded, fenced per partition.

A reader that starts a partition at offset 0 knows every claim; one that resumes mid-way (a
consumer group member) learns the claim in force there from `fence_at` (the last checkpoint
before that offset, then the claims after it: see `infra.recovery.fence_before`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from actors.history import Fence, events_of
from infra.kafka import DeadLetters, decode_key, read_to_end, rejection_reason
from schemas.records import EventRecord, LogRecord

log = logging.getLogger(__name__)
FenceAt = Callable[[int, int], Fence]


def decode_log(value: bytes | None) -> LogRecord:
    """Validate one record of the events topic; raises ValueError (ValidationError is one)."""
    if value is None:
        raise ValueError("record: null value (a tombstone has no meaning on the events topic)")
    return LogRecord.model_validate_json(value)


def _from_start(partition: int, offset: int) -> Fence:
    if offset != 0:
        raise ValueError(f"events partition {partition}: a reader without fence_at must start at 0, "
                         f"not {offset}")
    return Fence()


class History:
    """Per-partition fences over the events topic; feed it records in offset order."""

    def __init__(self, fence_at: FenceAt = _from_start) -> None:
        self.fence_at = fence_at
        self.fences: dict[int, Fence] = {}

    def commit(self, partition: int, offset: int, value: bytes | None) -> LogRecord | None:
        """The commit at this position if it is history; None for a claim or a fenced commit.
        Raises ValueError for bytes that are not a log record (the fence is unchanged)."""
        fence = self.fences.get(partition)
        if fence is None:  # before decoding: an invalid first record must not lose the start
            fence = self.fences[partition] = self.fence_at(partition, offset)
        record = decode_log(value)
        return record if fence.admit(record) else None

    def events(self, partition: int, offset: int, value: bytes | None) -> list[EventRecord]:
        commit = self.commit(partition, offset, value)
        return events_of(commit) if commit is not None else []

    def forget(self, partitions) -> None:
        """Partitions no longer read (revoked): a later resume asks `fence_at` again."""
        for partition in partitions:
            self.fences.pop(partition, None)


def read_history(settings, partitions=None) -> Iterator[tuple[int, int, LogRecord]]:
    """Every commit that is history, (partition, offset, commit), from the beginning of the
    events topic to its current end; invalid records are logged and skipped (the reactor
    dead-letters them)."""
    history = History()
    for raw in read_to_end(settings, "events", partitions=partitions, decode_records=False):
        try:
            commit = history.commit(raw.partition, raw.offset, raw.value)
        except ValueError as exc:
            log.warning("skipping invalid event record %d@%d: %s", raw.partition, raw.offset,
                        rejection_reason(exc))
            continue
        if commit is not None:
            yield raw.partition, raw.offset, commit


def read_events(settings, partitions=None) -> Iterator[EventRecord]:
    """The events of every commit that is history, in log order per partition."""
    for _partition, _offset, commit in read_history(settings, partitions):
        yield from events_of(commit)


def history_events(history: History, raws, dead_letters: DeadLetters) -> Iterator[tuple[EventRecord, object]]:
    """The events of the raw records that are history, each with its source record; a record
    that is not a valid log record (key included) is dead-lettered with the reason."""
    for raw in raws:
        try:
            decode_key(raw.key)
            events = history.events(raw.partition, raw.offset, raw.value)
        except ValueError as exc:
            dead_letters.send(raw.topic, raw.partition, raw.offset, raw.key, raw.value,
                              rejection_reason(exc), exc)
            continue
        for event in events:
            yield event, raw
