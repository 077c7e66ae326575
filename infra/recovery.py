"""Rebuilding aggregates from the log: latest snapshots, then the events after them.

Used by the node on partition assignment, by replay tools and by the benchmark alike.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pydantic import ValidationError

from actors.runtime import Tracked
from infra.bulk import iter_partition
from infra.kafka import decode, rejection_reason
from infra.settings import Settings
from schemas.records import EventRecord, SnapshotRecord

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
"""aggregate_type of the marker that says: every aggregate changed up to this offset has a
snapshot before this marker."""


@dataclass
class Recovered:
    partition: int
    aggregates: dict[str, Tracked] = field(default_factory=dict)
    next_offset: int = 0
    events_replayed: int = 0
    snapshots_loaded: int = 0
    problems: list[str] = field(default_factory=list)


def load_snapshots(settings: Settings, partition: int) -> tuple[dict[str, SnapshotRecord], int]:
    """Latest snapshot per aggregate up to the last checkpoint, and the checkpoint's offset + 1."""
    latest: dict[str, SnapshotRecord] = {}
    pending: dict[str, SnapshotRecord] = {}
    replay_from = 0
    for offset, _key, value in iter_partition(settings, "snapshots", partition):
        try:
            record = decode("snapshots", value)
        except (ValidationError, ValueError) as exc:
            log.warning("ignoring invalid snapshot at %d: %s", offset, rejection_reason(exc))
            continue
        if record.payload.aggregate_type == CHECKPOINT:
            latest.update(pending)
            pending.clear()
            replay_from = record.payload.events_offset + 1
        else:
            pending[record.aggregate_id] = record
    return latest, replay_from


def recover_partition(settings: Settings, partition: int, use_snapshots: bool = True) -> Recovered:
    result = Recovered(partition)
    covered: dict[str, int] = {}
    if use_snapshots:
        snapshots, result.next_offset = load_snapshots(settings, partition)
        for aggregate_id, record in snapshots.items():
            result.aggregates[aggregate_id] = Tracked.from_snapshot(aggregate_id, record.payload.state)
            covered[aggregate_id] = record.payload.events_offset
        result.snapshots_loaded = len(snapshots)
    start = result.next_offset
    for offset, _key, value in iter_partition(settings, "events", partition, start):
        result.next_offset = offset + 1
        try:
            record = EventRecord.model_validate_json(value)
        except (ValidationError, ValueError) as exc:
            result.problems.append(f"offset {offset}: invalid event: {rejection_reason(exc)}")
            continue
        if offset <= covered.get(record.aggregate_id, -1):
            continue
        tracked = result.aggregates.get(record.aggregate_id)
        if tracked is None:
            tracked = result.aggregates[record.aggregate_id] = Tracked.new(record.aggregate_id)
        problem = tracked.fold(record)
        if problem:
            result.problems.append(f"offset {offset}: {problem}")
        result.events_replayed += 1
    for problem in result.problems[:20]:
        log.warning("partition %d replay: %s", partition, problem)
    return result
