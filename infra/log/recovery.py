"""Rebuilding aggregates from the log: snapshots a checkpoint vouches for, then the commits after it.

Used by the node on partition assignment, by replay tools and by the benchmark alike.

The snapshots topic is fenced like the events topic: a node that claims a partition writes a
claim marker here first, then its Claim to the events partition; checkpoints written under an
older claim after that marker are ignored (a cut-off node may still write them, and they may
cover commits that are not history). The topic is compacted, so nothing here relies on a record
surviving unless its key is unique (claim markers) or it is the newest of its key: a checkpoint
names the snapshot of every aggregate it covers (its manifest), and a rebuild whose manifest
lost a snapshot to the cleaner starts from an older checkpoint, or from offset 0 (docs/log.md).
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

from actors.history import Fence
from actors.runtime import Tracked
from infra.log.bulk import BulkAppender, iter_records
from infra.log.eventlog import History, signed_rows
from infra.log.kafka import Appender, decode, envelope, kafka_client_options, new_id, rejection_reason
from infra.settings import Settings
from schemas.records import Claim, LogRecord, Snapshot, SnapshotRecord

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
"""aggregate_type of the marker that says: up to this events offset, every aggregate of the
partition is in the snapshot its manifest names (`state["covers"]`: aggregate id -> that
snapshot's events offset)."""
CLAIM = "claim"
"""aggregate_type of the marker a new owner writes before it claims the events partition."""
COVERS = "covers"


def claim_key(partition: int, claim: str) -> str:
    """A claim marker's key: unique, so the cleaner keeps every claim and their order."""
    return f"{CLAIM}/{partition}/{claim}"


def checkpoint_key(partition: int, claim: str | None) -> str:
    """A checkpoint marker's key: the cleaner keeps the newest checkpoint of each claim."""
    return f"{CHECKPOINT}/{partition}/{claim}"


# --- writing: claims and checkpoints, as the node writes them ---------------------------------
def claim_partitions(
    appender: Appender | BulkAppender, writer: str, partitions: list[int], generation: int, at: datetime | None = None
) -> dict[int, tuple[str, int]]:
    """Take events partitions: the snapshots markers first, then the Claims (see the module's
    docstring). Returns each partition's claim id and its Claim's offset. `at`: the records'
    time (a generated history's; now by default)."""
    claims = {p: new_id() for p in partitions}
    timestamp = _millis(at)
    markers = [
        appender.send(
            "snapshots",
            claim_key(p, claims[p]),
            envelope(
                SnapshotRecord,
                Snapshot(
                    aggregate_type=CLAIM,
                    events_partition=p,
                    events_offset=-1,
                    state={"writer": writer},
                    claim=claims[p],
                ),
                claim_key(p, claims[p]),
                occurred_at=at,
            ),
            partition=p,
            timestamp_ms=timestamp,
        )
        for p in partitions
    ]
    for future in markers:
        future.get(timeout=30)
    sent = {
        p: appender.send(
            "events",
            f"{CLAIM}/{p}",
            envelope(
                LogRecord,
                Claim(partition=p, writer=writer, generation=generation),
                f"{CLAIM}/{p}",
                record_id=claims[p],
                occurred_at=at,
            ),
            partition=p,
            timestamp_ms=timestamp,
        )
        for p in partitions
    }
    return {p: (claims[p], future.get(timeout=30).offset) for p, future in sent.items()}


FULL_CHECKPOINT_EVERY = 10
"""Every aggregate is snapshotted again about every 10 checkpoints of a partition (`full_every`
is this many times STRATOS_SNAPSHOT_EVERY events)."""


class SnapshotTooLarge(ValueError):
    """An aggregate's snapshot would not fit in one record (`STRATOS_MAX_RECORD_BYTES`)."""


@dataclass
class CheckpointStats:
    """What checkpoints wrote, for logs and benchmarks (bytes are the snapshots' encoded sizes)."""

    snapshots: int = 0
    snapshot_bytes: list[int] = field(default_factory=list)
    oversized: int = 0
    """Snapshots refused as too large: each one kept its partition's checkpoint from being written."""


def write_checkpoint(
    appender: Appender | BulkAppender,
    partition: int,
    claim: str | None,
    dirty: dict[str, int],
    covers: dict[str, int],
    events_offset: int,
    snapshot_of: Callable[[str], dict],
    max_bytes: int,
    at: datetime | None = None,
    stats: CheckpointStats | None = None,
    before_marker: Callable[[], None] | None = None,
    full_every: int = 0,
) -> bool:
    """Snapshot every aggregate of `dirty` (aggregate -> the events offset of its state), then,
    once the broker has every one of them, the marker with the manifest: `covers` (updated
    here) plus the dirty ones, each with the events offset of its snapshot, up to
    `events_offset`. A snapshot not written (refused by the broker, or larger than `max_bytes`:
    an error naming it, counted in `stats.oversized`) means no marker, and False (the caller
    keeps them dirty): a marker must never name a snapshot that is not there. A marker that
    fails is only logged (rebuilds start from an earlier checkpoint); True either way then.

    Full checkpoints: when `events_offset` crossed a multiple of `full_every` since the newest
    snapshot the manifest names, every aggregate of the partition is snapshotted again (an
    unchanged one at its same events offset), so that a checkpoint's snapshots always lie
    within the last `full_every` or so events' worth of the snapshots partition (time travel
    reads that range, not the partition from its start: `infra.replay.checkpoint_index`).

    `snapshot_of(aggregate)`: its snapshot state (`Tracked.snapshot`); `at`: the records' time
    (a generated history's; now by default); `before_marker`: the node's crash point."""
    timestamp = _millis(at)
    if full_every and covers and events_offset // full_every > max(covers.values()) // full_every:
        dirty = {**covers, **dirty}
    sent = []
    try:
        for aggregate_id, offset in dirty.items():
            state = snapshot_of(aggregate_id)
            record = envelope(
                SnapshotRecord,
                Snapshot(
                    aggregate_type=state["state"].get("kind") or "aggregate",
                    events_partition=partition,
                    events_offset=offset,
                    state=state,
                    claim=claim,
                ),
                aggregate_id,
                occurred_at=at,
            )
            value = record.model_dump_json().encode()
            if len(value) > max_bytes:
                if stats is not None:
                    stats.oversized += 1
                raise SnapshotTooLarge(
                    f"the snapshot of {aggregate_id} takes {len(value):,} bytes, more than the "
                    f"{max_bytes:,} a record may hold (STRATOS_MAX_RECORD_BYTES)"
                )
            if stats is not None:
                stats.snapshots += 1
                stats.snapshot_bytes.append(len(value))
            sent.append(
                appender.send_raw(
                    appender.settings.topic("snapshots"),
                    aggregate_id.encode(),
                    value,
                    partition=partition,
                    record=record,
                    timestamp_ms=timestamp,
                )
            )
        for future in sent:
            future.get(timeout=30)
    except Exception as exc:  # noqa: BLE001 - too large, or the broker: no marker either way
        log.error(
            "partition %d: a snapshot was not written (%s): no checkpoint marker; the next checkpoint tries again",
            partition,
            exc,
        )
        return False
    if before_marker is not None:
        before_marker()
    covers.update(dirty)
    key = checkpoint_key(partition, claim)
    marker = Snapshot(
        aggregate_type=CHECKPOINT,
        events_partition=partition,
        events_offset=events_offset,
        state={COVERS: dict(covers)},
        claim=claim,
    )
    try:
        appender.send(
            "snapshots",
            key,
            envelope(SnapshotRecord, marker, key, occurred_at=at),
            partition=partition,
            timestamp_ms=timestamp,
        ).get(timeout=30)
    except Exception as exc:  # noqa: BLE001 - too large a manifest, or the broker: the same either way
        log.error(
            "partition %d: checkpoint marker not written (%s): rebuilds start from an earlier checkpoint",
            partition,
            exc,
        )
    return True


def _millis(at: datetime | None) -> int | None:
    """A record's Kafka timestamp for a given time (None: the producer's now)."""
    return None if at is None else int(at.timestamp() * 1000)


class HistoryGap(RuntimeError):
    """A rebuild needs commits the events partition no longer holds (deleted by retention)."""


@dataclass
class Snapshots:
    latest: dict[str, SnapshotRecord] = field(default_factory=dict)
    replay_from: int = 0
    """The events offset after the checkpoint chosen (0: none, a rebuild from events alone)."""
    claim: str | None = None
    """The claim in force at `replay_from` (the checkpoint writer's)."""
    exposed: dict[str, int] = field(default_factory=dict)
    """Chosen snapshots (aggregate -> events offset) that a newer record of the same key may
    make the cleaner remove: the next checkpoint must write them again."""
    records_read: int = 0
    """Records of the snapshots partition read to choose them."""


@dataclass
class Recovered:
    partition: int
    aggregates: dict[str, Tracked] = field(default_factory=dict)
    next_offset: int = 0
    events_replayed: int = 0
    commits_replayed: int = 0
    commits_fenced: int = 0
    snapshots_loaded: int = 0
    fence: Fence = field(default_factory=Fence)
    covers: dict[str, int] = field(default_factory=dict)
    """Aggregates whose loaded snapshot the next checkpoint may name as it is, with its offset."""
    dirty: dict[str, int] = field(default_factory=dict)
    """Aggregates the next checkpoint must snapshot, with the offset their state is at: folded
    past the checkpoint (their last commit's offset), or loaded from an exposed snapshot."""
    problems: list[str] = field(default_factory=list)
    snapshot_records_read: int = 0
    """Records of the snapshots partition read to find the snapshots (time travel: few)."""


SnapshotFinder = Callable[[int, int | None, datetime | None], Snapshots | None]
"""(partition, before, not_after) -> the snapshots to start from, or None for `load_snapshots`."""


_CLAIM_AT_END = re.compile(rb'"claim":(?:null|"([^"\\]*)")\}\}\s*$')
"""The tail of a snapshot record as this platform writes it (`claim` is the payload's last
field, the payload the envelope's last): its claim can be read without decoding the state."""
_EVENTS_OFFSET = re.compile(
    rb',"payload":\{"type":"Snapshot","aggregate_type":"(?:[^"\\]|\\.)*",'
    rb'"events_partition":-?\d+,"events_offset":(-?\d+),"state":'
)
"""The head of a snapshot's payload as this platform writes it (quotes inside strings are
escaped, so only the payload itself matches): its events offset, read without decoding."""
_MARKER_KEYS = (f"{CHECKPOINT}/".encode(), f"{CLAIM}/".encode())


def snapshot_head(key: bytes | None, value: bytes | None) -> tuple[str, int, str | None] | None:
    """(aggregate id, events offset, claim) of an aggregate's snapshot read cheaply, or None (a
    marker, or a record of another shape: decode it). Also the checkpoint index's."""
    if not key or not value or key.startswith(_MARKER_KEYS):
        return None
    head = _EVENTS_OFFSET.search(value)
    tail = _CLAIM_AT_END.search(value, max(0, len(value) - 200))
    if head is None or tail is None:
        return None
    claim = tail.group(1)
    return key.decode("utf-8", "replace"), int(head.group(1)), claim.decode() if claim is not None else None


@dataclass
class _Checkpoint:
    events_offset: int
    claim: str | None
    covers: dict[str, int]


def load_snapshots(
    settings: Settings, partition: int, before: int | None = None, not_after: datetime | None = None, lazy: bool = True
) -> Snapshots:
    """`choose_snapshots` over the snapshots partition as the broker has it now (what the
    platform signed: a forged snapshot or marker is dead-lettered, never chosen)."""
    return choose_snapshots(signed_rows(settings, "snapshots", partition), partition, before, not_after, lazy)


def choose_snapshots(
    records: Iterable[tuple[int, bytes | None, bytes | None]],
    partition: int,
    before: int | None = None,
    not_after: datetime | None = None,
    lazy: bool = True,
) -> Snapshots:
    """The snapshots of the newest valid checkpoint whose manifest is whole (each snapshot it
    names is still there: any record of that aggregate at that events offset, whoever wrote
    it), among the checkpoints whose events offset is below `before` and that were written at
    or before `not_after`, when given (every commit one covers happened before it was written).
    None whole: no snapshots, a rebuild from the events alone.

    A checkpoint is valid when written under the claim in force (the last claim marker before
    it). One without a manifest (written before manifests) covers, as it did then, the snapshots
    under its claim since the previous valid checkpoint on top of that one's: trusted only if no
    record before it was removed, since compaction loses the markers that rule needs.

    `records`: (offset, key, value) in log order. `lazy`: snapshots are decoded only once chosen
    (a snapshot carries a whole state and its dedup window; most are superseded before they are
    used); otherwise each is decoded as it is read, an invalid one skipped at once."""
    claim = None
    candidates: dict[str, dict[int, tuple[int, bytes | SnapshotRecord]]] = {}
    """aggregate -> events offset -> (position, snapshot): what a manifest may name; pruned to
    the chosen manifest's at each whole checkpoint (later manifests name their own writes)."""
    newest: dict[str, int] = {}
    since_checkpoint: dict[str, int] = {}
    previous_covers: dict[str, int] = {}
    chosen: _Checkpoint | None = None
    broken: tuple[_Checkpoint, str] | None = None
    removed, expected, read = False, 0, 0
    for position, key, value in records:
        read += 1
        removed, expected = removed or position != expected, position + 1
        head = snapshot_head(key, value) if lazy else None
        if head is None:
            try:
                record = decode("snapshots", value)
            except ValueError as exc:
                log.warning(
                    "partition %d: ignoring invalid snapshot at %d: %s", partition, position, rejection_reason(exc)
                )
                continue
            snapshot = record.payload
            if snapshot.aggregate_type == CLAIM:
                claim = snapshot.claim
                since_checkpoint.clear()
                continue
            if snapshot.aggregate_type == CHECKPOINT:
                if snapshot.claim != claim:
                    continue  # written by a node that had lost the partition
                if (before is not None and snapshot.events_offset >= before) or (
                    not_after is not None and record.occurred_at > not_after
                ):
                    break
                manifest = snapshot.state.get(COVERS)
                checkpoint = _Checkpoint(
                    snapshot.events_offset,
                    snapshot.claim,
                    manifest if isinstance(manifest, dict) else {**previous_covers, **since_checkpoint},
                )
                previous_covers = checkpoint.covers
                since_checkpoint = {}
                lost = (
                    "(a marker before manifests, after compaction)"
                    if manifest is None and removed
                    else next((a for a, at in checkpoint.covers.items() if at not in candidates.get(a, ())), None)
                )
                if lost is None:
                    chosen, broken = checkpoint, None
                    candidates = {a: {at: candidates[a][at]} for a, at in checkpoint.covers.items()}
                else:
                    broken = (checkpoint, lost)
                continue
            if key is None or record.aggregate_id != key.decode("utf-8", "replace"):
                log.warning(
                    "partition %d: ignoring the snapshot at %d: aggregate %r under key %r",
                    partition,
                    position,
                    record.aggregate_id,
                    key,
                )
                continue
            head = (record.aggregate_id, snapshot.events_offset, snapshot.claim)
            value = record  # type: ignore[assignment]
        aggregate_id, events_offset, writer_claim = head
        candidates.setdefault(aggregate_id, {})[events_offset] = (position, value)  # type: ignore[assignment]
        newest[aggregate_id] = position
        if writer_claim == claim:
            since_checkpoint[aggregate_id] = events_offset
    if broken is not None:
        checkpoint, lost = broken
        log.warning(
            "partition %d: the checkpoint at events offset %d lacks the snapshot of %s "
            "(compacted away?): rebuilding from %s",
            partition,
            checkpoint.events_offset,
            lost,
            f"the checkpoint at {chosen.events_offset}" if chosen else "events offset 0",
        )
    found = _loaded(chosen, candidates, newest, partition) if chosen is not None else Snapshots()
    found.records_read = read
    return found


def _loaded(chosen: _Checkpoint, candidates: dict, newest: dict[str, int], partition: int) -> Snapshots:
    """The chosen checkpoint's snapshots, decoded; none if one of them does not validate."""
    found = Snapshots(replay_from=chosen.events_offset + 1, claim=chosen.claim)
    for aggregate_id, events_offset in chosen.covers.items():
        position, value = candidates[aggregate_id][events_offset]
        try:
            record = value if isinstance(value, SnapshotRecord) else decode("snapshots", value)
            if record.aggregate_id != aggregate_id:
                raise ValueError(f"aggregate_id: {record.aggregate_id!r} under key {aggregate_id!r}")
        except ValueError as exc:
            log.warning(
                "partition %d: the snapshot of %s at %d is invalid (%s): rebuilding from events offset 0",
                partition,
                aggregate_id,
                position,
                rejection_reason(exc),
            )
            return Snapshots()
        found.latest[aggregate_id] = record
        if newest[aggregate_id] > position:
            found.exposed[aggregate_id] = events_offset
    return found


def fence_before(settings: Settings, partition: int, offset: int) -> Fence:
    """The fence in force at `offset` of an events partition, for a reader resuming there:
    the last checkpoint's claim, moved by the claims between it and `offset`."""
    if offset <= 0:
        return Fence()
    snapshots = load_snapshots(settings, partition, before=offset)
    history = History.of(settings, lambda _p, _o: Fence(snapshots.claim))
    for raw in iter_records(settings, "events", partition, snapshots.replay_from):
        if raw.offset >= offset:
            break
        if raw.value and b'"Claim"' in raw.value:  # cheap filter: only claims move a fence
            try:
                history.commit(raw)
            except ValueError:
                continue
    return history.fences.get(partition) or Fence(snapshots.claim)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def gc_paused(freeze: bool = False):
    """The cyclic collector off while a partition is folded, as it was before afterwards.

    A rebuild allocates millions of long-lived objects (states, members, the dedup window) and
    almost no cycles: the collector's passes over the growing heap cost about a quarter of a
    cold rebuild here and free nothing. Reference counting frees garbage as usual meanwhile.
    Counted, so that rebuilds on several threads re-enable it only when the last one ends.
    `freeze`: the heap is moved out of the collector's sight before it runs again (time travel,
    whose caller prints the states and exits: the first full collection over them was a tenth
    of a `replay --at`)."""
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
                if freeze:
                    gc.freeze()
                gc.enable()


def history_start(settings: Settings, partition: int) -> int:
    """The first offset an events partition still holds (above 0 once retention deleted some)."""
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(settings.topic("events"), partition)
        return consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


def fold_history(
    result: Recovered,
    history: History,
    records: Iterable,
    covered: dict[str, int],
    until: int | None = None,
    until_time: datetime | None = None,
    keep: Callable[[str], bool] | None = None,
) -> None:
    """Fold the commits among `records` (consumer records of `result`'s events partition, in
    offset order, from the chosen checkpoint on) into `result.aggregates`, past the offsets of
    the snapshots they were loaded from (`covered`); up to offset `until` and to the last
    commit that occurred at or before `until_time`. The rebuild owns every state it folds, so
    each is folded in place (`Tracked.fold_commit(in_place=True)`; docs/adr/0016-*.md).
    `keep`: only the commits of the aggregates it accepts are decoded past their envelope and
    folded (time travel to one aggregate, or one tenant's)."""
    aggregates, dirty, problems = result.aggregates, result.dirty, result.problems
    for raw in records:
        offset, value = raw.offset, raw.value
        if until is not None and offset > until:
            break
        result.next_offset = offset + 1
        try:
            if keep is None:
                commit = history.commit(raw)
            else:
                head = history.head(raw)
                if head is not None and until_time is not None and head.occurred_at > until_time:
                    result.next_offset = offset
                    break
                if head is not None and not keep(head.envelope.aggregate_id):
                    continue
                commit = head.record() if head is not None else None
        except ValueError as exc:
            problems.append(f"offset {offset}: invalid record: {rejection_reason(exc)}")
            continue
        if commit is None:
            result.commits_fenced += bool(value) and b'"Commit"' in value
            continue
        if until_time is not None and commit.occurred_at > until_time:
            result.next_offset = offset
            break
        aggregate_id = commit.aggregate_id
        if offset <= covered.get(aggregate_id, -1):
            continue
        tracked = aggregates.get(aggregate_id)
        if tracked is None:
            tracked = aggregates[aggregate_id] = Tracked.new(aggregate_id)
        problem = tracked.fold_commit(commit, in_place=True)
        dirty[aggregate_id] = offset
        if problem:
            problems.append(f"offset {offset}: {problem}")
        result.events_replayed += len(commit.payload.events)  # type: ignore[union-attr]
        result.commits_replayed += 1


def _commits_from(settings: Settings, partition: int, start: int, until: int | None, likely_end: int | None):
    """The events partition from `start`: to offset `until` (included) when given, else to
    `likely_end` in bulk and, should the reader go on past it, on a little at a time (it stops
    at the first commit after the instant, which is usually soon)."""
    if until is not None:
        yield from iter_records(settings, "events", partition, start, until + 1)
        return
    if likely_end is not None and likely_end > start:
        yield from iter_records(settings, "events", partition, start, likely_end)
        start = likely_end
    yield from iter_records(settings, "events", partition, start, ahead=likely_end is not None)


def recover_partition(
    settings: Settings,
    partition: int,
    use_snapshots: bool = True,
    until: int | None = None,
    until_time: datetime | None = None,
    pause_gc: bool = True,
    find_snapshots: SnapshotFinder | None = None,
    history_begins: int | None = None,
    likely_end: int | None = None,
    keep: Callable[[str], bool] | None = None,
) -> Recovered:
    """Every aggregate of one partition as the log says it is (up to offset `until`, inclusive,
    and up to the last commit that occurred at or before `until_time`). Raises HistoryGap when
    that needs commits the partition no longer holds: a rebuild never skips history.
    `pause_gc=False` leaves the collector alone (a server answering requests meanwhile);
    `find_snapshots` finds the checkpoint to start from without reading the snapshots
    partition from its start (time travel's index), `load_snapshots` when it finds none.
    A caller that has asked the broker already gives the partition's first offset
    (`history_begins`) and the offset where the commits after `until_time` likely start
    (`likely_end`: the first record stamped at or after it): the commits are read up to it in
    bulk, and past it a little at a time until the fold stops (a commit's Kafka time is when
    its node sent it, a little after its `occurred_at`). `keep`: only the aggregates it accepts
    are rebuilt; the others' snapshots and commits are not decoded."""
    result = Recovered(partition)
    covered: dict[str, int] = {}
    snapshots = Snapshots()
    if use_snapshots:
        before = None if until is None else until + 1
        found = find_snapshots(partition, before, until_time) if find_snapshots is not None else None
        snapshots = found or load_snapshots(settings, partition, before, until_time)
        result.snapshot_records_read = snapshots.records_read
        for aggregate_id, record in snapshots.latest.items():
            if keep is not None and not keep(aggregate_id):
                continue
            result.aggregates[aggregate_id] = Tracked.from_snapshot(aggregate_id, record.payload.state)
            covered[aggregate_id] = record.payload.events_offset
        result.snapshots_loaded = len(result.aggregates)
        result.dirty = dict(snapshots.exposed)
    start = history_start(settings, partition) if history_begins is None else history_begins
    if start > snapshots.replay_from:
        raise HistoryGap(
            f"{settings.topic('events')} partition {partition} starts at offset {start}: "
            f"rebuilding it needs the commits from offset {snapshots.replay_from}, which "
            "were deleted (retention?)"
        )
    result.next_offset = snapshots.replay_from
    history = History.of(settings, lambda _p, _o: Fence(snapshots.claim))
    with gc_paused() if pause_gc else nullcontext():
        records = _commits_from(settings, partition, snapshots.replay_from, until, likely_end)
        fold_history(result, history, records, covered, until, until_time, keep)
    result.covers = {a: at for a, at in covered.items() if a not in result.dirty}
    result.fence = history.fences.get(partition) or Fence(snapshots.claim)
    for problem in result.problems[:20]:
        log.warning("partition %d replay: %s", partition, problem)
    return result
