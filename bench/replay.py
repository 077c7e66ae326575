"""Cold rebuild of every aggregate from a log of ~1,000,000 events, with and without snapshots.

The log is what nodes write: per events partition a Claim, then one Commit per handled
command. One cluster's history is made by the real decide path (`actors.runtime.handle`): a
cluster of 10 members whose members are replaced round after round (each a full lifecycle:
created, started, active, terminated, destroyed). Every other cluster's commits are that
history's records with the cluster id, the record ids and the partition's claim substituted
(driving handle() for 1,000 clusters takes minutes here); commits of different clusters are
interleaved as live traffic would be. Four reads are timed in the same run:
- a raw read of the same partitions (the reader's own cost, for the breakdown);
- a plain decode: the same partitions read and each record validated (`decode_log`), no fold;
- a cold rebuild: `recover_partition` over every partition with snapshots off (a node
  without snapshots), the actors installed as a node does;
- a rebuild from snapshots (written as a node does at a checkpoint) plus the tail.
With --gc-baseline the cold rebuild is also timed with the cyclic collector left on during the
fold (as before `recover_partition` paused it), in the same run. With --baseline-ref REF the
cold rebuild is also timed, on the same log and broker, with the code of git REF (a temporary
worktree) and with this code, alternately, each in a fresh process (`rebuild` below importing
that code), --pairs times each: medians of events per wall second and per CPU second.
Usage: python bench/replay.py [--events 1000000] [--rounds 12] [--gc-baseline] [--baseline-ref main [--pairs 2]]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from common import ROOT, baseline_checkout, bench_settings, finish

from actors.base import Context
from actors.runtime import Tracked, handle
from infra.auth.signing import Signer
from infra.log.bulk import iter_partition
from infra.log.eventlog import decode_log
from infra.log.kafka import envelope
from infra.log.recovery import CHECKPOINT, CLAIM, recover_partition
from infra.node.node import ActorHost, partition_for, timeouts_from
from infra.settings import Settings
from schemas import commands as C
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import Claim, CommandRecord, LogRecord, Snapshot, SnapshotRecord

START = datetime(2026, 1, 1, tzinfo=UTC)
TEMPLATE_N = "999999"
"""The template cluster's number: `app999999.php.php.domain`."""
ID_TAG = "9" * 8
"""The first 8 hex digits of every id the template's decisions draw, replaced per cluster."""
CLAIM_TAG = "c1a1m" + "0" * 27


def cluster_spec(n) -> ClusterSpec:
    return ClusterSpec(
        cluster_id=f"app{n}.php.php.domain",
        application_id=f"app{n}",
        alias="php",
        cartridge_type="php",
        min=10,
        max=20,
        autoscaling_policy_id="as",
        deployment_policy_id="dp",
        partition_algorithm="round-robin",
        partitions=[PartitionSpec(id=f"p{i}", network_partition_id="np", provider="mock", max=10) for i in (1, 2)],
    )


def template_history(rounds: int) -> tuple[list[bytes], int]:
    """The encoded commits of one cluster's life, by the real decide path, and its event count."""
    ids = itertools.count()
    new_id = lambda: f"{ID_TAG}{next(ids):024x}"  # noqa: E731
    clock = [START]
    commits: list[bytes] = []
    events = 0
    tracked = Tracked.new(f"carbon.super/cluster/app{TEMPLATE_N}.php.php.domain")

    def run(command) -> None:
        nonlocal events
        clock[0] += timedelta(milliseconds=5)
        ctx = Context(now=clock[0], new_id=new_id, claim=CLAIM_TAG, writer="bench-node")
        outcome = handle(
            tracked,
            envelope(CommandRecord, command, tracked.state.aggregate_id, record_id=new_id(), occurred_at=clock[0]),
            ctx,
        )
        commits.append(outcome.encoded)
        events += len(outcome.commit.payload.events)

    run(C.CreateCluster(spec=cluster_spec(TEMPLATE_N)))
    for _ in range(rounds):
        for member in [m for m in tracked.state.members.values() if m.status.value == "Created"]:
            mid = member.member_id
            run(C.ReportNodeCreated(member_id=mid, node_id=mid))
            for status in ("Started", "Activated"):
                run(C.ReportInstanceStatus(member_id=mid, status=status))
        run(C.ScaleCluster(required=10, metric="load_average"))
        for mid in [m.member_id for m in tracked.state.members.values() if m.status.value == "Active"]:
            run(C.TerminateMember(member_id=mid))
            for status in ("MaintenanceMode", "ReadyToShutdown"):
                run(C.ReportInstanceStatus(member_id=mid, status=status))
            run(C.ReportNodeDestroyed(member_id=mid))
    return commits, events


def claim_id(partition: int) -> str:
    return f"c1a1m{partition:027x}"


async def append_all(settings, clusters: int, rounds: int) -> tuple[int, int]:
    """Claims, then every cluster's commits interleaved; returns (commits, events) appended."""
    from aiokafka import AIOKafkaProducer

    template, events_each = template_history(rounds)
    signer = Signer.platform(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks="all"
    )
    await producer.start()
    topic = settings.topic("events")
    count = 0
    try:
        for partition in range(settings.partitions):
            claim = envelope(
                LogRecord,
                Claim(partition=partition, writer="bench-node", generation=1),
                f"{CLAIM}/{partition}",
                record_id=claim_id(partition),
            )
            value, key = claim.model_dump_json().encode(), f"{CLAIM}/{partition}".encode()
            await producer.send(
                topic, value, key=key, partition=partition, headers=signer.headers("events", key, value)
            )
        targets = []
        for n in range(clusters):
            key = f"carbon.super/cluster/app{n}.php.php.domain"
            partition = partition_for(key, settings.partitions)
            targets.append(
                (key.encode(), partition, f"{n:08x}".encode(), f"app{n}.".encode(), claim_id(partition).encode())
            )
        tag, name, claim_tag = ID_TAG.encode(), f"app{TEMPLATE_N}.".encode(), CLAIM_TAG.encode()
        for value in template:
            for key, partition, ids, cluster, claim in targets:
                commit = value.replace(tag, ids).replace(name, cluster).replace(claim_tag, claim)
                await producer.send(
                    topic, commit, key=key, partition=partition, headers=signer.headers("events", key, commit)
                )
                count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count, events_each * clusters


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def cpu_timed(fn):
    """`timed`, and the CPU seconds of this process meanwhile (the reader's thread included):
    what a shared machine's load does not stretch."""
    cpu = time.process_time()
    value, seconds = timed(fn)
    return value, seconds, time.process_time() - cpu


def raw_read(settings) -> int:
    """The same partitions read, nothing decoded: the reader's own cost."""
    return sum(1 for partition in range(settings.partitions) for _ in iter_partition(settings, "events", partition))


def plain_decode(settings) -> int:
    """The same partitions read and every record validated, no fold: events counted."""
    events = 0
    for partition in range(settings.partitions):
        for _offset, _key, value in iter_partition(settings, "events", partition):
            entry = decode_log(value).payload
            if entry.type == "Commit":
                events += len(entry.events)
    return events


def rebuild(settings, use_snapshots: bool) -> tuple[int, int, list]:
    host = ActorHost()
    aggregates = events = 0
    recovered_all = []
    try:
        for partition in range(settings.partitions):
            recovered = recover_partition(settings, partition, use_snapshots=use_snapshots)
            if recovered.problems:
                raise SystemExit(f"partition {partition}: {recovered.problems[:3]}")
            for tracked in recovered.aggregates.values():
                host.install(tracked, timeouts_from(settings))
            aggregates += len(recovered.aggregates)
            events += recovered.events_replayed
            recovered_all.append(recovered)
    finally:
        host.shutdown()
    return aggregates, events, recovered_all


async def write_snapshots(settings, recovered_all) -> None:
    """What a node does: its claim marker, then at a checkpoint every aggregate's snapshot and
    the checkpoint marker, all under its claim."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    topic, signer = settings.topic("snapshots"), Signer.platform(settings)

    async def send(key: str, snapshot: Snapshot, partition: int) -> None:
        value = envelope(SnapshotRecord, snapshot, key).model_dump_json().encode()
        await producer.send(
            topic,
            value,
            key=key.encode(),
            partition=partition,
            headers=signer.headers("snapshots", key.encode(), value),
        )

    try:
        for recovered in recovered_all:
            partition, claim = recovered.partition, recovered.fence.claim
            await send(
                f"{CLAIM}/{partition}",
                Snapshot(
                    aggregate_type=CLAIM,
                    events_partition=partition,
                    events_offset=-1,
                    state={"writer": "bench-node"},
                    claim=claim,
                ),
                partition,
            )
            for aggregate_id, tracked in recovered.aggregates.items():
                await send(
                    aggregate_id,
                    Snapshot(
                        aggregate_type="cluster",
                        events_partition=partition,
                        events_offset=recovered.next_offset - 1,
                        state=tracked.snapshot(),
                        claim=claim,
                    ),
                    partition,
                )
            await send(
                f"{CHECKPOINT}/{partition}",
                Snapshot(
                    aggregate_type=CHECKPOINT,
                    events_partition=partition,
                    events_offset=recovered.next_offset - 1,
                    state={},
                    claim=claim,
                ),
                partition,
            )
        await producer.flush()
    finally:
        await producer.stop()


def rebuild_in(settings, code) -> dict:
    """A cold rebuild of this log in a fresh process importing the code at `code`: its events,
    wall seconds and CPU seconds (the reader's thread included)."""
    env = {
        **os.environ,
        "STRATOS_BENCH_CODE": str(code),
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_PARTITIONS": str(settings.partitions),
    }
    out = subprocess.run(
        [sys.executable, __file__, "--inner-rebuild"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def compare_rebuilds(settings, ref: str, pairs: int, total: int) -> dict:
    """Cold rebuilds by the code of git `ref` and by this code, alternately, each in a fresh
    process (same log, same broker): the medians of each and of the pairs' ratios."""
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with baseline_checkout(ref) as tree:
        for _ in range(pairs):
            for name, code in (("baseline", tree), ("this", ROOT)):
                found = rebuild_in(settings, code)
                if found["events"] != total:
                    raise SystemExit(f"{name} code replayed {found['events']} events, not {total}")
                runs[name].append(found)
    rate = {name: [total / r["seconds"] for r in found] for name, found in runs.items()}
    cpu = {name: [total / r["cpu"] for r in found] for name, found in runs.items()}
    return {
        "wall": {name: statistics.median(rates) for name, rates in rate.items()},
        "cpu": {name: statistics.median(rates) for name, rates in cpu.items()},
        "ratio_wall": statistics.median(t / b for t, b in zip(rate["this"], rate["baseline"], strict=True)),
        "ratio_cpu": statistics.median(t / b for t, b in zip(cpu["this"], cpu["baseline"], strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument(
        "--gc-baseline", action="store_true", help="also time the cold rebuild with the collector on during the fold"
    )
    parser.add_argument("--baseline-ref", help="also time the cold rebuild with the code of this git ref")
    parser.add_argument("--pairs", type=int, default=2, help="alternate rebuilds of each code with --baseline-ref")
    parser.add_argument("--inner-rebuild", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner_rebuild:  # `rebuild_in`: the log named by the environment, STRATOS_BENCH_CODE's code
        (_, replayed, _), seconds, cpu = cpu_timed(lambda: rebuild(Settings(), use_snapshots=False))
        print(json.dumps({"events": replayed, "seconds": seconds, "cpu": cpu}))
        return
    _, events_each = template_history(args.rounds)
    clusters = max(1, math.ceil(args.events / events_each))
    with bench_settings() as settings:
        started = time.perf_counter()
        commits, total = asyncio.run(append_all(settings, clusters, args.rounds))
        print(
            f"log built and appended: {clusters:,} clusters, {commits:,} commits, {total:,} events "
            f"in {time.perf_counter() - started:.1f}s"
        )
        records, raw_s, raw_cpu = cpu_timed(lambda: raw_read(settings))
        decoded, decode_s, decode_cpu = cpu_timed(lambda: plain_decode(settings))
        (aggregates, replayed, recovered_all), rebuild_s, rebuild_cpu = cpu_timed(
            lambda: rebuild(settings, use_snapshots=False)
        )
        compared = compare_rebuilds(settings, args.baseline_ref, args.pairs, total) if args.baseline_ref else None
        baseline_s = None
        if args.gc_baseline:
            import contextlib

            from infra.log import recovery

            paused, recovery._gc_paused = recovery._gc_paused, contextlib.nullcontext
            try:
                recovered_all = None  # the first rebuild's memory freed before the second
                (_, _, recovered_all), baseline_s = timed(lambda: rebuild(settings, use_snapshots=False))
            finally:
                recovery._gc_paused = paused
        asyncio.run(write_snapshots(settings, recovered_all))
        del recovered_all
        (snap_aggregates, tail, _), snapshot_s = timed(lambda: rebuild(settings, use_snapshots=True))
    if decoded != total or replayed != total:
        raise SystemExit(f"expected {total} events, decoded {decoded}, replayed {replayed}")
    decode_rate, rebuild_rate = decoded / decode_s, replayed / rebuild_s
    ratio = rebuild_rate / decode_rate
    cpu_ratio = decode_cpu / rebuild_cpu
    print(
        f"raw read (no decode):   {records:,} records in {raw_s:.1f}s = {total / raw_s:,.0f} events/s "
        f"({total / raw_cpu:,.0f} per CPU second)"
    )
    print(
        f"plain decode:           {decoded:,} events in {decode_s:.1f}s = {decode_rate:,.0f}/s "
        f"({decoded / decode_cpu:,.0f} per CPU second)"
    )
    print(
        f"cold rebuild of actors: {aggregates:,} aggregates, {replayed:,} events in {rebuild_s:.1f}s "
        f"= {rebuild_rate:,.0f}/s (ratio to decode {ratio:.2f}); {replayed / rebuild_cpu:,.0f} per CPU second "
        f"(ratio to decode {cpu_ratio:.2f})"
    )
    if baseline_s is not None:
        print(
            f"cold rebuild, collector on during the fold: {replayed / baseline_s:,.0f}/s "
            f"(ratio to decode {replayed / baseline_s / decode_rate:.2f}; paused / on {baseline_s / rebuild_s:.2f})"
        )
    if compared is not None:
        wall, cpu = compared["wall"], compared["cpu"]
        print(
            f"cold rebuilds in fresh processes, {args.pairs} pairs, medians: {args.baseline_ref}'s code "
            f"{wall['baseline']:,.0f}/s ({cpu['baseline']:,.0f} per CPU second), this code {wall['this']:,.0f}/s "
            f"({cpu['this']:,.0f} per CPU second); this / {args.baseline_ref} {compared['ratio_wall']:.2f} "
            f"(CPU {compared['ratio_cpu']:.2f})"
        )
    print(f"rebuild from snapshots: {snap_aggregates:,} aggregates, {tail} tail events in {snapshot_s:.2f}s")
    finish(
        {
            "bench": "replay",
            "events": total,
            "commits": commits,
            "aggregates": aggregates,
            "rebuild_events_per_s": round(rebuild_rate),
            "decode_events_per_s": round(decode_rate),
            "raw_read_events_per_s": round(total / raw_s),
            "ratio": round(ratio, 3),
            "rebuild_events_per_cpu_s": round(replayed / rebuild_cpu),
            "decode_events_per_cpu_s": round(decoded / decode_cpu),
            "raw_read_events_per_cpu_s": round(total / raw_cpu),
            "ratio_cpu": round(cpu_ratio, 3),
            **({"rebuild_gc_on_events_per_s": round(replayed / baseline_s)} if baseline_s else {}),
            **(
                {
                    "baseline_ref": args.baseline_ref,
                    "pairs_rebuild_events_per_s": {k: round(v) for k, v in compared["wall"].items()},
                    "pairs_rebuild_events_per_cpu_s": {k: round(v) for k, v in compared["cpu"].items()},
                    "pairs_ratio_to_baseline": round(compared["ratio_wall"], 3),
                    "pairs_ratio_to_baseline_cpu": round(compared["ratio_cpu"], 3),
                }
                if compared
                else {}
            ),
            "load_average": round(os.getloadavg()[0], 2),
            "rebuild_with_snapshots_s": round(snapshot_s, 3),
        }
    )


if __name__ == "__main__":
    main()
