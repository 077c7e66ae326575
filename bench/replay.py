"""Cold rebuild of every aggregate from a log of ~1,000,000 events, with and without snapshots.

The log is made by the real decide path (`actors.runtime.handle`): 1,000 clusters of 10
members whose members are replaced round after round (each a full lifecycle), plus the
definitions. It is then appended to the broker, and three reads are timed in the same run:
a plain decode (no actors), a cold rebuild of all actors from the log, and a rebuild from
snapshots (written as a node does at a checkpoint) plus the tail.
Usage: python bench/replay.py [--clusters 1000] [--rounds 12]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from datetime import datetime, timedelta, timezone

from common import bench_settings, finish

from actors.base import Context
from actors.runtime import Tracked, handle
from infra.bulk import iter_partition
from infra.kafka import envelope
from infra.node import ActorHost
from infra.recovery import CHECKPOINT, recover_partition
from kafka.partitioner.default import murmur2
from schemas import commands as C
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import CommandRecord, EventRecord, Snapshot, SnapshotRecord

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def partition_of(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def build_log(clusters: int, rounds: int):
    """Yield (aggregate id, EventRecord) for the whole history, cluster by cluster."""
    ids = itertools.count()
    new_id = lambda: f"{next(ids):032x}"  # noqa: E731
    clock = [START]

    def run(tracked, command):
        clock[0] += timedelta(milliseconds=5)
        ctx = Context(now=clock[0], new_id=new_id)
        return handle(tracked, envelope(CommandRecord, command, tracked.state.aggregate_id,
                                        record_id=new_id(), occurred_at=clock[0]), ctx).events

    for n in range(clusters):
        spec = ClusterSpec(
            cluster_id=f"app{n}.php.php.domain", application_id=f"app{n}", alias="php", cartridge_type="php",
            min=10, max=20, autoscaling_policy_id="as", deployment_policy_id="dp",
            partition_algorithm="round-robin",
            partitions=[PartitionSpec(id=f"p{i}", network_partition_id="np", provider="mock", max=10)
                        for i in (1, 2)])
        tracked = Tracked.new(f"carbon.super/cluster/{spec.cluster_id}")
        events = run(tracked, C.CreateCluster(spec=spec))
        for _ in range(rounds):
            for member in [m for m in tracked.state.members.values() if m.status.value == "Created"]:
                mid = member.member_id
                events += run(tracked, C.ReportNodeCreated(member_id=mid, node_id=mid))
                for status in ("Started", "Activated"):
                    events += run(tracked, C.ReportInstanceStatus(member_id=mid, status=status))
            events += run(tracked, C.ScaleCluster(required=10, metric="load_average"))
            for mid in [m.member_id for m in tracked.state.members.values() if m.status.value == "Active"]:
                events += run(tracked, C.TerminateMember(member_id=mid))
                for status in ("MaintenanceMode", "ReadyToShutdown"):
                    events += run(tracked, C.ReportInstanceStatus(member_id=mid, status=status))
                events += run(tracked, C.ReportNodeDestroyed(member_id=mid))
        yield tracked.state.aggregate_id, events


async def append_all(settings, batches) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024, acks="all")
    await producer.start()
    count = 0
    topic = settings.topic("events")
    try:
        for key, records in batches:
            partition = partition_of(key, settings.partitions)
            for record in records:
                await producer.send(topic, record.model_dump_json().encode(), key=key.encode(),
                                    partition=partition)
                count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def plain_decode(settings) -> int:
    count = 0
    for partition in range(settings.partitions):
        for _offset, _key, value in iter_partition(settings, "events", partition):
            EventRecord.model_validate_json(value)
            count += 1
    return count


def rebuild(settings, use_snapshots: bool) -> tuple[int, int]:
    host = ActorHost()
    aggregates = events = 0
    try:
        for partition in range(settings.partitions):
            recovered = recover_partition(settings, partition, use_snapshots=use_snapshots)
            for tracked in recovered.aggregates.values():
                host.install(tracked)
            aggregates += len(recovered.aggregates)
            events += recovered.events_replayed
    finally:
        host.shutdown()
    return aggregates, events


async def write_snapshots(settings) -> None:
    """What a node does at a checkpoint: every aggregate's snapshot, then the marker."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20,
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        for partition in range(settings.partitions):
            recovered = recover_partition(settings, partition, use_snapshots=False)
            for aggregate_id, tracked in recovered.aggregates.items():
                snap = Snapshot(aggregate_type="cluster", events_partition=partition,
                                events_offset=recovered.next_offset - 1, state=tracked.snapshot())
                await producer.send(settings.topic("snapshots"),
                                    envelope(SnapshotRecord, snap, aggregate_id).model_dump_json().encode(),
                                    key=aggregate_id.encode(), partition=partition)
            marker = Snapshot(aggregate_type=CHECKPOINT, events_partition=partition,
                              events_offset=recovered.next_offset - 1, state={})
            await producer.send(settings.topic("snapshots"),
                                envelope(SnapshotRecord, marker, f"{CHECKPOINT}/{partition}").model_dump_json().encode(),
                                partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    with bench_settings() as settings:
        started = time.perf_counter()
        total = asyncio.run(append_all(settings, build_log(args.clusters, args.rounds)))
        print(f"log built and appended: {total:,} events in {time.perf_counter() - started:.1f}s")
        decoded, decode_s = timed(lambda: plain_decode(settings))
        (aggregates, replayed), rebuild_s = timed(lambda: rebuild(settings, use_snapshots=False))
        asyncio.run(write_snapshots(settings))
        (snap_aggregates, tail), snapshot_s = timed(lambda: rebuild(settings, use_snapshots=True))
    decode_rate, rebuild_rate = decoded / decode_s, replayed / rebuild_s
    ratio = rebuild_rate / decode_rate
    print(f"plain decode:           {decoded:,} events in {decode_s:.1f}s = {decode_rate:,.0f}/s")
    print(f"cold rebuild of actors: {aggregates:,} aggregates, {replayed:,} events in {rebuild_s:.1f}s "
          f"= {rebuild_rate:,.0f}/s (ratio to decode {ratio:.2f})")
    print(f"rebuild from snapshots: {snap_aggregates:,} aggregates, {tail} tail events in {snapshot_s:.2f}s")
    finish({"bench": "replay", "events": total, "aggregates": aggregates,
            "rebuild_events_per_s": round(rebuild_rate), "decode_events_per_s": round(decode_rate),
            "ratio": round(ratio, 3), "rebuild_with_snapshots_s": round(snapshot_s, 3)})


if __name__ == "__main__":
    main()
