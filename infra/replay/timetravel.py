"""Time travel over the log: the whole platform (or one aggregate) at a past instant or offset
vector, an aggregate's timeline, and what changed between two instants.

Read-only and group-less: nothing here joins a consumer group or writes a record, so a running
platform never notices. States are rebuilt with the node's own recovery (latest checkpoint at
or before the instant, then the fenced commits after it), so what is printed is exactly what an
owner of the partition would have had in memory then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from actors.history import events_of
from actors.runtime import Tracked
from actors.timeline import figures
from actors.topology_plan import scaling_settings
from infra.log.bulk import iter_partition, iter_records
from infra.log.eventlog import History
from infra.log.kafka import decode, kafka_client_options, partitions_of, rejection_reason, topic_partitions
from infra.log.recovery import gc_paused, recover_partition
from infra.node.node import partition_for
from infra.replay.checkpoint_index import CheckpointIndex
from infra.settings import Settings
from schemas.definitions import AutoscalingPolicy
from schemas.ids import parse_aggregate_id
from schemas.records import Commit
from streams.what_if import WhatIf, what_if


class PositionError(ValueError):
    """A `--at` / `--since` that is neither an ISO 8601 time nor PARTITION:OFFSET pairs."""


@dataclass(frozen=True)
class Position:
    """An instant of the platform: a time, or the last offset folded per events partition
    (partitions not named are read to their end)."""

    time: datetime | None = None
    offsets: dict[int, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.time.isoformat() if self.time else ",".join(f"{p}:{o}" for p, o in sorted(self.offsets.items()))


def parse_time(text: str) -> datetime:
    """ISO 8601, `Z` or an offset allowed; a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise PositionError(f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T09:30:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_position(text: str) -> Position:
    """`2026-12-01T09:30:00Z` or `0:120,1:55` (partition:offset, offsets inclusive)."""
    text = text.strip()
    if not text:
        raise PositionError("empty position: give an ISO 8601 time or PARTITION:OFFSET,…")
    if "T" in text or "-" in text[:5]:
        return Position(time=parse_time(text))
    offsets: dict[int, int] = {}
    for pair in text.split(","):
        partition, sep, offset = pair.strip().partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise PositionError(f"{pair!r} is not PARTITION:OFFSET (e.g. 0:120,1:55), nor a time")
        offsets[int(partition)] = int(offset)
    return Position(offsets=offsets)


def _partitions(settings: Settings, aggregate_id: str | None, count: int | None = None) -> list[int]:
    count = count or partitions_of(settings, "events")
    return [partition_for(aggregate_id, count)] if aggregate_id else list(range(count))


def _of_tenants(tenants: tuple[str, ...], aggregate_id: str) -> bool:
    return aggregate_id.startswith(tenants)


def platform_at(
    settings: Settings,
    at: Position,
    aggregate_id: str | None = None,
    *,
    only: Iterable[str] | None = None,
    pause_gc: bool = True,
) -> dict[str, Tracked]:
    """Every aggregate (or the one named) as it was at `at`, from the checkpoint before it (found
    with the checkpoint index: `infra.replay.checkpoint_index`) plus the commits after it.
    `only`: just the partitions holding these aggregates are rebuilt, and in them only the
    aggregates of their tenants (a tenant's, for the API, which also keeps the collector
    running: `pause_gc=False`). The aggregate named, or the tenants, are all that is decoded:
    the other aggregates' snapshots are not read and their commits not decoded past the
    envelope."""
    keep: Callable[[str], bool] | None = None
    if aggregate_id:
        parse_aggregate_id(aggregate_id)
        keep = aggregate_id.__eq__
    elif only is not None:
        only = list(only)
        tenants = tuple({f"{parse_aggregate_id(a).tenant}/" for a in only})
        keep = partial(_of_tenants, tenants)
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None, enable_auto_commit=False)
    try:  # one client for every question to the broker before the rebuilds
        known = len(topic_partitions(consumer, settings.topic("events")))
        partitions = (
            _partitions(settings, aggregate_id, known)
            if only is None
            else sorted({partition_for(a, known) for a in only})
        )
        if not partitions:
            return {}
        for partition in at.offsets:
            if partition >= known:
                raise PositionError(f"partition {partition}: the events topic has partitions 0-{known - 1}")
        tps = [TopicPartition(settings.topic("events"), p) for p in partitions]
        begins = {tp.partition: offset for tp, offset in consumer.beginning_offsets(tps).items()}
        snapshot_tps = [TopicPartition(settings.topic("snapshots"), p) for p in partitions]
        snapshot_ends = {tp.partition: end for tp, end in consumer.end_offsets(snapshot_tps).items()}
        likely_ends: dict[int, int | None] = dict.fromkeys(partitions)
        if at.time is not None:
            # every record stamped before the instant was sent, so decided, before it
            after = int(at.time.timestamp() * 1000)
            for tp, stamped in consumer.offsets_for_times(dict.fromkeys(tps, after)).items():
                likely_ends[tp.partition] = stamped.offset if stamped is not None else None
    finally:
        consumer.close()

    index = CheckpointIndex(settings)
    index.refresh_all(partitions, snapshot_ends)

    def rebuild(partition: int) -> dict[str, Tracked]:
        return recover_partition(
            settings,
            partition,
            until=at.offsets.get(partition),
            until_time=at.time,
            pause_gc=pause_gc,
            find_snapshots=partial(index.snapshots, refresh=False, keep=keep),
            history_begins=begins[partition],
            likely_end=likely_ends[partition],
            keep=keep,
        ).aggregates

    found: dict[str, Tracked] = {}
    with gc_paused(freeze=True) if pause_gc else nullcontext(), ThreadPoolExecutor(min(4, len(partitions))) as pool:
        for aggregates in pool.map(rebuild, partitions):
            found.update(aggregates)
    if aggregate_id:
        return {aggregate_id: found[aggregate_id]} if aggregate_id in found else {}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Entry:
    """One line of an aggregate's timeline: an event, or a command rejected (no event)."""

    at: datetime
    partition: int
    offset: int
    id: str
    type: str
    seq: int
    figures: dict[str, Any]
    command_type: str
    command_id: str | None
    outcome: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "time": self.at.isoformat(),
            "seq": self.seq,
            "partition": self.partition,
            "offset": self.offset,
            "figures": self.figures,
            "command": {"type": self.command_type, "id": self.command_id, "outcome": self.outcome},
        }


def timeline(
    settings: Settings,
    aggregate_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    problems: list[str] | None = None,
) -> list[Entry]:
    """The aggregate's events (and rejected commands) in log order, from its own partition."""
    entries: list[Entry] = []
    for partition, offset, record in commits_of(settings, aggregate_id, problems):
        if until is not None and record.occurred_at > until:
            break
        if since is not None and record.occurred_at < since:
            continue
        commit: Commit = record.payload
        if commit.outcome == "rejected":
            entries.append(
                Entry(
                    record.occurred_at,
                    partition,
                    offset,
                    record.id,
                    f"rejected {commit.command_type}",
                    record.aggregate_seq,
                    {"reason": commit.reason, "field": commit.field, "code": commit.code},
                    commit.command_type,
                    record.causation_id,
                    commit.outcome,
                )
            )
        for event in events_of(record):
            entries.append(
                Entry(
                    event.occurred_at,
                    partition,
                    offset,
                    event.id,
                    event.type,
                    event.aggregate_seq,
                    figures(event.payload),
                    commit.command_type,
                    record.causation_id,
                    commit.outcome,
                )
            )
    return entries


def state_json(tracked: Tracked | None) -> dict[str, Any] | None:
    return None if tracked is None else tracked.state.model_dump(mode="json")


def _records_of(settings: Settings, kind: str, key: str, types: tuple[str, ...]) -> list:
    """The valid records of one aggregate on a keyed topic, of the given payload types (read
    from the aggregate's own partition; a cheap byte test skips the rest unparsed)."""
    partition = partition_for(key, partitions_of(settings, kind))
    found = []
    needles = [f'"{t}"'.encode() for t in types]
    for _offset, raw_key, value in iter_partition(settings, kind, partition):
        if raw_key != key.encode() or not value or not any(n in value for n in needles):
            continue
        try:
            record = decode(kind, value)
        except ValueError:
            continue  # dead-lettered by its readers: it had no effect
        if record.aggregate_id == key and record.type in types:
            found.append(record)
    return found


def commits_of(settings: Settings, aggregate_id: str, problems: list[str] | None = None):
    """(partition, offset, commit) of one aggregate's history, from its own partition."""
    parse_aggregate_id(aggregate_id)
    partition = _partitions(settings, aggregate_id)[0]
    history = History.of(settings)
    for raw in iter_records(settings, "events", partition):
        offset = raw.offset
        try:  # the payloads of the other aggregates' commits are not decoded (infra/log/eventlog.py)
            head = history.head(raw)
            if head is None or head.envelope.aggregate_id != aggregate_id:
                continue
            record = head.record()
        except ValueError as exc:
            if problems is not None:
                problems.append(f"offset {partition}:{offset}: invalid record: {rejection_reason(exc)}")
            continue
        yield partition, offset, record


def what_if_from_log(
    settings: Settings, cluster_key: str, policy: dict, since: datetime | None = None, until: datetime | None = None
) -> WhatIf:
    """The recorded period of one cluster through the scaling rules with `policy` (an
    autoscaling policy in Stratos's JSON, validated as the API validates it)."""
    if parse_aggregate_id(cluster_key).kind != "cluster":
        raise ValueError(f"--aggregate: {cluster_key!r} is not a cluster aggregate id (<tenant>/cluster/<cluster id>)")
    AutoscalingPolicy.model_validate(policy)
    commits = [c for _p, _o, c in commits_of(settings, cluster_key)]
    if not commits:
        raise ValueError(f"--aggregate: no events for cluster {cluster_key!r}")
    samples = _records_of(settings, "health", cluster_key, ("HealthStat", "MemberHealth"))
    hops = _records_of(settings, "commands", cluster_key, ("ScaleCluster",))
    return what_if(
        cluster_key, commits, samples, hops, scaling_settings(policy), settings.health_window_seconds, since, until
    )
