"""Rebuilding aggregates from the log: latest snapshots, then the commits after them.

Used by the node on partition assignment, by replay tools and by the benchmark alike.

The snapshots topic is fenced like the events topic: a node that claims a partition writes a
claim marker here first, then its Claim to the events partition; snapshots and checkpoints
written under an older claim after that marker are ignored (a cut-off node may still write
them, and they may cover commits that are not history).
"""
from __future__ import annotations

import gc
import logging
import re
import threading
from datetime import datetime
from contextlib import contextmanager
from dataclasses import dataclass, field

from actors.history import Fence
from actors.runtime import Tracked
from infra.bulk import iter_partition
from infra.eventlog import History
from infra.kafka import decode, rejection_reason
from infra.settings import Settings
from schemas.records import SnapshotRecord

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
"""aggregate_type of the marker that says: every aggregate changed up to this offset has a
snapshot before this marker."""
CLAIM = "claim"
"""aggregate_type of the marker a new owner writes before it claims the events partition."""


@dataclass
class Snapshots:
    latest: dict[str, SnapshotRecord] = field(default_factory=dict)
    replay_from: int = 0
    """The events offset after the last valid checkpoint."""
    claim: str | None = None
    """The claim in force at `replay_from` (the checkpoint writer's)."""


@dataclass
class Recovered:
    partition: int
    aggregates: dict[str, Tracked] = field(default_factory=dict)
    next_offset: int = 0
    events_replayed: int = 0
    commits_fenced: int = 0
    snapshots_loaded: int = 0
    fence: Fence = field(default_factory=Fence)
    replayed: dict[str, int] = field(default_factory=dict)
    """Aggregates folded past the last checkpoint, with their last commit's offset: the next
    checkpoint must snapshot them, or it would claim to cover commits no snapshot holds."""
    problems: list[str] = field(default_factory=list)


_CLAIM_AT_END = re.compile(rb'"claim":(?:null|"([^"\\]*)")\}\}\s*$')
"""The tail of a snapshot record as this platform writes it (`claim` is the payload's last
field, the payload the envelope's last): its claim can be read without decoding the state."""
_MARKER_KEYS = (f"{CHECKPOINT}/".encode(), f"{CLAIM}/".encode())


def _claim_of_aggregate_snapshot(key: bytes | None, value: bytes | None) -> tuple[str, str | None] | None:
    """(aggregate id, claim) of an aggregate's snapshot read cheaply, or None (a marker, or a
    record of another shape: decode it)."""
    if not key or not value or key.startswith(_MARKER_KEYS):
        return None
    match = _CLAIM_AT_END.search(value, max(0, len(value) - 200))
    if match is None:
        return None
    claim = match.group(1)
    return key.decode("utf-8", "replace"), claim.decode() if claim is not None else None


def load_snapshots(settings: Settings, partition: int, before: int | None = None,
                   not_after: datetime | None = None, lazy: bool = True) -> Snapshots:
    """Latest valid snapshot per aggregate up to the last checkpoint (the last one whose events
    offset is below `before`, and that was written at or before `not_after`, when given: every
    commit it covers happened before it was written).

    `lazy`: aggregates' snapshots are decoded only once chosen (a snapshot carries a whole
    state and its dedup window; most are superseded before they are used). Should a chosen one
    not validate, the partition is read again decoding every record, so that an invalid
    snapshot costs only itself, as it always did."""
    found = Snapshots()
    pending: dict[str, bytes] = {}
    chosen: dict[str, bytes] = {}
    claim = None
    for offset, key, value in iter_partition(settings, "snapshots", partition):
        cheap = _claim_of_aggregate_snapshot(key, value) if lazy else None
        if cheap is not None:
            if cheap[1] == claim:
                pending[cheap[0]] = value
            continue
        try:
            record = decode("snapshots", value)
        except ValueError as exc:
            log.warning("ignoring invalid snapshot at %d: %s", offset, rejection_reason(exc))
            continue
        snapshot = record.payload
        if snapshot.aggregate_type == CLAIM:
            claim = snapshot.claim
            pending.clear()
        elif snapshot.claim != claim:
            continue  # written by a node that had lost the partition
        elif snapshot.aggregate_type == CHECKPOINT:
            if (before is not None and snapshot.events_offset >= before) or \
                    (not_after is not None and record.occurred_at > not_after):
                break
            chosen.update(pending)
            pending.clear()
            found.replay_from, found.claim = snapshot.events_offset + 1, snapshot.claim
        else:
            pending[record.aggregate_id] = value
    for aggregate_id, value in chosen.items():
        try:
            record = decode("snapshots", value)
            if record.aggregate_id != aggregate_id:
                raise ValueError(f"aggregate_id: {record.aggregate_id!r} under key {aggregate_id!r}")
        except ValueError as exc:
            if not lazy:
                raise
            log.warning("partition %d: a chosen snapshot of %s is invalid (%s): reading every "
                        "snapshot decoded", partition, aggregate_id, rejection_reason(exc))
            return load_snapshots(settings, partition, before, not_after, lazy=False)
        found.latest[aggregate_id] = record
    return found


def fence_before(settings: Settings, partition: int, offset: int) -> Fence:
    """The fence in force at `offset` of an events partition, for a reader resuming there:
    the last checkpoint's claim, moved by the claims between it and `offset`."""
    if offset <= 0:
        return Fence()
    snapshots = load_snapshots(settings, partition, before=offset)
    history = History(lambda _p, _o: Fence(snapshots.claim))
    for at, _key, value in iter_partition(settings, "events", partition, snapshots.replay_from):
        if at >= offset:
            break
        if value and b'"Claim"' in value:  # cheap filter: only claims move a fence
            try:
                history.commit(partition, at, value)
            except ValueError:
                continue
    return history.fences.get(partition) or Fence(snapshots.claim)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def _gc_paused():
    """The cyclic collector off while a partition is folded, as it was before afterwards.

    A rebuild allocates millions of long-lived objects (states, members, the dedup window) and
    almost no cycles: the collector's passes over the growing heap cost about a quarter of a
    cold rebuild here and free nothing. Reference counting frees garbage as usual meanwhile.
    Counted, so that rebuilds on several threads re-enable it only when the last one ends."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def recover_partition(settings: Settings, partition: int, use_snapshots: bool = True,
                      until: int | None = None, until_time: datetime | None = None) -> Recovered:
    """Every aggregate of one partition as the log says it is (up to offset `until`, inclusive,
    and up to the last commit that occurred at or before `until_time`)."""
    result = Recovered(partition)
    covered: dict[str, int] = {}
    snapshots = Snapshots()
    if use_snapshots:
        snapshots = load_snapshots(settings, partition, None if until is None else until + 1,
                                   until_time)
        for aggregate_id, record in snapshots.latest.items():
            result.aggregates[aggregate_id] = Tracked.from_snapshot(aggregate_id, record.payload.state)
            covered[aggregate_id] = record.payload.events_offset
        result.snapshots_loaded = len(snapshots.latest)
    result.next_offset = snapshots.replay_from
    history = History(lambda _p, _o: Fence(snapshots.claim))
    with _gc_paused():
        for offset, _key, value in iter_partition(settings, "events", partition, snapshots.replay_from):
            if until is not None and offset > until:
                break
            result.next_offset = offset + 1
            try:
                commit = history.commit(partition, offset, value)
            except ValueError as exc:
                result.problems.append(f"offset {offset}: invalid record: {rejection_reason(exc)}")
                continue
            if commit is not None and until_time is not None and commit.occurred_at > until_time:
                result.next_offset = offset
                break
            if commit is None:
                result.commits_fenced += bool(value) and b'"Commit"' in value
                continue
            if offset <= covered.get(commit.aggregate_id, -1):
                continue
            tracked = result.aggregates.get(commit.aggregate_id)
            if tracked is None:
                tracked = result.aggregates[commit.aggregate_id] = Tracked.new(commit.aggregate_id)
            problem = tracked.fold_commit(commit)
            result.replayed[commit.aggregate_id] = offset
            if problem:
                result.problems.append(f"offset {offset}: {problem}")
            result.events_replayed += len(commit.payload.events)
    result.fence = history.fences.get(partition) or Fence(snapshots.claim)
    for problem in result.problems[:20]:
        log.warning("partition %d replay: %s", partition, problem)
    return result
