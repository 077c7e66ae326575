"""Health throughput: 10,000 simulated members (100 clusters of 100) publishing load and memory.

One health worker runs on a thread of this process (its own event loop), after it has folded
the 100 clusters' events into its views. Measured in one run:
- drain: a backlog of health records (written before the worker starts) read, validated and
  windowed, in events/s from the worker's first committed progress to its catching up, so
  start-up is not counted;
- sustained: records published at a steady rate (the 10,000/s aim) for a while,
  consumer lag sampled every second: flat lag means the worker keeps up;
- the same topic read by a bare aiokafka consumer (no decoding): the ceiling, and the ratio.
Lag is read from the worker group's committed offsets (committed after every batch). Aim: >= 10,000 events/s.
Usage: python bench/health.py [--rounds R] [--seconds S] [--rate R | --rate 0 --share F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from common import bench_settings, finish
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from infra.health import HEALTH_GROUP
from infra.health.app import HealthWorkerThread
from infra.log.kafka import Appender, envelope, new_id, read_to_end
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import Commit, HealthRecord, LogRecord
from schemas.status import HealthStat
from streams.health_state import cluster_key

T = "carbon.super"
CLUSTERS, MEMBERS_PER_CLUSTER = 100, 100
PUBLISH_SECONDS = 15.0
"""A member's publish period (Stratos's agents: every 15 s): spaces the records' own timestamps."""


def members() -> list[tuple[str, str, str]]:
    """(cluster key, cluster id, member id) of every simulated member."""
    return [
        (cluster_key(T, f"c{c}.php1.php.domain"), f"c{c}.php1.php.domain", f"c{c}.m{m}")
        for c in range(CLUSTERS)
        for m in range(MEMBERS_PER_CLUSTER)
    ]


def seed_clusters(settings) -> int:
    """The history the worker folds into its cluster views: clusters with Active members, as
    commits (one creating each cluster and spawning its members, one per activation)."""
    appender = Appender(settings, linger_ms=20)
    records, seeded = [], 0

    def commit(key: str, command_type: str, events: list, seq: int) -> None:
        nonlocal seeded
        decision = Commit(command_type=command_type, outcome="accepted", events=events, writer="bench")
        records.append((key, envelope(LogRecord, decision, key, tenant=T, aggregate_seq=seq, causation_id=new_id())))
        seeded += len(events)

    for c in range(CLUSTERS):
        cid = f"c{c}.php1.php.domain"
        key = cluster_key(T, cid)
        spec = ClusterSpec(
            cluster_id=cid,
            application_id=f"c{c}",
            alias="php1",
            cartridge_type="php",
            min=1,
            max=200,
            autoscaling_policy_id="as",
            deployment_policy_id="dp",
            partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=200)],
            thresholds={"load_average": 70.0, "memory_consumption": 80.0},
        )
        mids = [f"c{c}.m{m}" for m in range(MEMBERS_PER_CLUSTER)]
        commit(
            key,
            "CreateCluster",
            [E.ClusterCreated(spec=spec)]
            + [
                E.MemberSpawnRequested(
                    member_id=mid,
                    cluster_id=cid,
                    application_id=f"c{c}",
                    cartridge_type="php",
                    network_partition_id="np1",
                    partition_id="p1",
                    provider="mock",
                )
                for mid in mids
            ],
            1,
        )
        for n, mid in enumerate(mids):
            commit(
                key,
                "ReportInstanceStatus",
                [E.MemberActivated(member_id=mid, cluster_id=cid)],
                MEMBERS_PER_CLUSTER + 2 + n,
            )
    appender.append_many("events", records, timeout=120)
    appender.close()
    return seeded


class HealthTraffic:
    """Encodes health records fast: one template envelope, fields replaced per record."""

    def __init__(self) -> None:
        template = envelope(
            HealthRecord,
            HealthStat(
                cluster_id="c",
                network_partition_id="np1",
                member_id="m",
                metric="load_average",
                value=1.0,
                timestamp=1.0,
            ),
            "k",
            tenant=T,
        )
        self.template = json.loads(template.model_dump_json())
        self.count = 0

    def encode(self, key: str, cluster_id: str, member_id: str, metric: str, value: float, ts: float) -> bytes:
        self.count += 1
        record = dict(self.template, id=f"h{self.count}", aggregate_id=key)
        record["payload"] = dict(
            self.template["payload"],
            cluster_id=cluster_id,
            member_id=member_id,
            metric=metric,
            value=value,
            timestamp=ts,
        )
        return json.dumps(record).encode()


def produce_rounds(settings, rounds: int, start_ts: float) -> tuple[int, float]:
    """Every member publishes load and memory `rounds` times, 15 s apart in event time. Run in
    a process of its own: a producer sharing the worker's interpreter starves its event loop
    (heartbeats missed, the worker thrown out of its group)."""
    traffic = HealthTraffic()
    appender = Appender(settings, linger_ms=20, batch_size=512 * 1024)
    topic, all_members, sent = settings.topic("health"), members(), 0
    started = time.perf_counter()
    for r in range(rounds):
        for n, (key, cid, mid) in enumerate(all_members):
            ts = start_ts + r * PUBLISH_SECONDS + n * PUBLISH_SECONDS / len(all_members)
            for metric, value in (("load_average", 30 + n % 40), ("memory_consumption", 40 + r % 30)):
                appender.send_raw(topic, key.encode(), traffic.encode(key, cid, mid, metric, value, ts))
                sent += 1
    appender.flush(300)
    appender.close()
    return sent, sent / (time.perf_counter() - started)


def known_members(worker: HealthWorkerThread) -> int:
    return sum(len(view.members) for view in list(worker.service.clusters.values()))


def wait_views_folded(worker: HealthWorkerThread, started: float) -> float:
    """Seconds from the worker's start until its views have folded the events topic to its end."""
    deadline = started + 300
    while worker.service is None or not worker.service.views_ready.is_set():
        if time.monotonic() > deadline:
            raise SystemExit("cluster views not folded in 300 s")
        time.sleep(0.01)
    return time.monotonic() - started


class Lag:
    """Committed offsets of the worker's group against the end of a topic."""

    def __init__(self, settings) -> None:
        self.group = settings.topic(HEALTH_GROUP)
        self.admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
        self.settings = settings

    def of(self, kind: str) -> tuple[int, int]:
        """(committed total, end total) over the topic's partitions."""
        topic = self.settings.topic(kind)
        tps = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
        ends = self.consumer.end_offsets(tps)
        committed = self.admin.list_group_offsets({self.group: tps})[self.group]
        done = sum(max(0, committed[tp].offset) for tp in tps if tp in committed and committed[tp])
        return done, sum(ends.values())

    def close(self) -> None:
        self.admin.close()
        self.consumer.close()


def wait_caught_up(lag: Lag, kind: str, timeout: float) -> tuple[float, int, float]:
    """Poll until the group has committed the topic's end. Returns (time of the first
    committed progress, the offset total then, time caught up)."""
    first_at, first_done = None, 0
    deadline = time.monotonic() + timeout
    while True:
        done, end = lag.of(kind)
        now = time.perf_counter()
        if first_at is None and done > 0:
            first_at, first_done = now, done
        if end and done >= end:
            return (first_at or now), first_done, now
        if time.monotonic() > deadline:
            raise SystemExit(f"worker did not catch up on {kind} in {timeout}s ({done}/{end})")
        time.sleep(0.5)


def sustained(settings, traffic: HealthTraffic, lag: Lag, rate: float, seconds: float) -> list[int]:
    """Publish at `rate` events/s for `seconds`; lag sampled every second."""
    appender = Appender(settings, linger_ms=5)
    topic, all_members, samples = settings.topic("health"), members(), []
    started, n, next_sample = time.perf_counter(), 0, 1.0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate)
        while n < due:
            key, cid, mid = all_members[(n // 2) % len(all_members)]
            metric = "load_average" if n % 2 == 0 else "memory_consumption"
            appender.send_raw(topic, key.encode(), traffic.encode(key, cid, mid, metric, 50.0, time.time()))
            n += 1
        if elapsed >= next_sample:
            appender.flush()
            done, end = lag.of("health")
            samples.append(end - done)
            next_sample += 1.0
        time.sleep(0.01)
    appender.flush()
    appender.close()
    return samples


async def bare_read(settings, count: int) -> float:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as TP

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    tps = [TP(settings.topic("health"), p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen, started = 0, time.perf_counter()
    while seen < count:
        for records in (await consumer.getmany(timeout_ms=500, max_records=20_000)).values():
            seen += len(records)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10, help="backlog: rounds of every member (2 records each)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the sustained phase")
    parser.add_argument("--share", type=float, default=0.8, help="sustained rate as a share of the drain rate")
    parser.add_argument(
        "--rate", type=float, default=10_000.0, help="sustained rate (events/s; 0: --share of the drain rate)"
    )
    args = parser.parse_args()
    with bench_settings() as base, tempfile.TemporaryDirectory() as state_dir:
        settings = base.model_copy(update={"state_dir": Path(state_dir)})
        seeded = seed_clusters(settings)
        # the whole backlog first: a worker draining faster than one producer can write would
        # otherwise be measured at the producer's rate
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            backlog, produce_rate = pool.apply(
                produce_rounds, (settings, args.rounds, time.time() - args.rounds * PUBLISH_SECONDS)
            )
        started = time.monotonic()
        worker, lag = HealthWorkerThread(settings).start(), Lag(settings)
        try:
            views_seconds = wait_views_folded(worker, started)
            if known_members(worker) < CLUSTERS * MEMBERS_PER_CLUSTER:
                raise SystemExit(f"cluster views incomplete: {known_members(worker)} members")
            first_at, first_done, caught_up_at = wait_caught_up(lag, "health", 600)
            drained = backlog - first_done
            drain_rate = drained / max(caught_up_at - first_at, 1e-9)
            rate = args.rate or max(1000.0, args.share * drain_rate)
            traffic = HealthTraffic()
            samples = sustained(settings, traffic, lag, rate, args.seconds)
        finally:
            worker.stop()
            lag.close()
        total = backlog + traffic.count
        raw_rate = asyncio.run(bare_read(settings, total))
        dead = sum(1 for _ in read_to_end(settings, "deadletter"))
    tail = samples[len(samples) // 2 :]
    flat = bool(tail) and max(tail) <= rate * 4 and tail[-1] <= max(tail[0], rate * 4)
    print(f"members: {CLUSTERS * MEMBERS_PER_CLUSTER} in {CLUSTERS} clusters; seeded {seeded} events")
    print(f"worker start: views of the {seeded} events folded in {views_seconds:.2f} s")
    print(f"backlog: {backlog} health records produced at {produce_rate:,.0f}/s")
    print(f"drain (one worker):            {drain_rate:>10,.0f} events/s ({drained} records measured)")
    print(f"bare aiokafka read, same topic: {raw_rate:>10,.0f} events/s")
    print(f"ratio worker / bare read:       {drain_rate / raw_rate:.3f}")
    print(
        f"sustained at {rate:,.0f} events/s for {args.seconds:g}s: lag per second {samples}"
        f" -> {'flat' if flat else 'growing'}"
    )
    print(f"dead letters: {dead} (expected 0: every record valid)")
    finish(
        {
            "bench": "health",
            "members": CLUSTERS * MEMBERS_PER_CLUSTER,
            "backlog": backlog,
            "views_folded_s": round(views_seconds, 2),
            "drain_per_s": round(drain_rate),
            "bare_aiokafka_per_s": round(raw_rate),
            "ratio": round(drain_rate / raw_rate, 3),
            "sustained_per_s": round(rate),
            "lag_flat": flat,
            "lag_samples": samples,
            "dead_letters": dead,
            "aim_per_s": 10_000,
        }
    )


if __name__ == "__main__":
    main()
