"""Health throughput: 10,000 simulated members (100 clusters of 100) publishing load and memory.

Measured in one run, each against a baseline of the same run:
- per-record CPU of the health path, split into decode, verify, window and decide, in this
  process on the records the worker reads (no Kafka), for the old format (one ``HealthStat``
  per metric: two records a publish) and the new one (one ``MemberHealth`` per publish);
- drain: one health worker (on a thread of this process, after its views folded the clusters'
  events) reading a backlog written before it started, in records/s and samples/s from its
  first committed progress to its catching up, for each format on topics of its own;
- sustained: the new format published at a steady rate for a while, consumer lag sampled every
  second: flat lag means the worker keeps up;
- faust: an agent taking the same topic in batches (``stream.take``) and doing nothing else,
  the ceiling of a faust agent on this path, and a bare aiokafka read (the ceiling of any reader);
- records per steady cluster-hour on commands, events and replies: a cluster with one Active
  member and load 5 against a threshold of 25 through the health book for an hour of hops,
  every verdict sent (before) against only those that change the cluster (after). The node
  writes one commit and one reply per command it handles.
Aim (issue 25): >= 50,000 samples/s per worker with flat lag; (issue 24) 0 records a steady hour.
Usage: python bench/health.py [--rounds R] [--seconds S] [--rate R | --rate 0 --share F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import faust
from common import bench_settings, finish
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from actors import cluster
from infra.auth.signing import Signer, Verifier
from infra.health import HEALTH_GROUP
from infra.health.app import HealthWorker, HealthWorkerThread
from infra.health.topics import raw_topic
from infra.log.kafka import Appender, decode, decode_key, ensure_topics, envelope, new_id, read_to_end
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import Commit, HealthRecord, LogRecord
from schemas.status import HealthStat, MemberHealth
from streams.health_state import HealthBook, cluster_key, view_of

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


def seed_clusters(settings) -> tuple[int, dict[str, list]]:
    """The history the worker folds into its cluster views: clusters with Active members, as
    commits (one creating each cluster and spawning its members, one per activation). Returns
    the count and each cluster's events (for views built in this process)."""
    appender = Appender(settings, linger_ms=20)
    records, seeded = [], 0
    history: dict[str, list] = {}

    def commit(key: str, command_type: str, events: list, seq: int) -> None:
        nonlocal seeded
        decision = Commit(command_type=command_type, outcome="accepted", events=events, writer="bench")
        records.append((key, envelope(LogRecord, decision, key, tenant=T, aggregate_seq=seq, causation_id=new_id())))
        history.setdefault(key, []).extend(events)
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
    return seeded, history


class HealthTraffic:
    """Encodes health records fast: one template envelope per format, fields replaced per record."""

    def __init__(self, batched: bool) -> None:
        self.batched = batched
        stat = HealthStat(
            cluster_id="c", network_partition_id="np1", member_id="m", metric="load_average", value=1.0, timestamp=1.0
        )
        batch = MemberHealth(
            cluster_id="c", network_partition_id="np1", member_id="m", metrics={"load_average": 1.0}, timestamp=1.0
        )
        self.templates = {
            type(p).__name__: json.loads(envelope(HealthRecord, p, "k", tenant=T).model_dump_json())
            for p in (stat, batch)
        }
        self.count = 0

    def encode(self, key: str, cluster_id: str, member_id: str, metrics: dict[str, float], ts: float) -> list[bytes]:
        """One MemberHealth record for the publish when ``BATCHED``, else one HealthStat per metric."""
        if self.batched:
            template = self.templates["MemberHealth"]
            payloads = [dict(template["payload"], cluster_id=cluster_id, member_id=member_id, metrics=metrics)]
        else:
            template = self.templates["HealthStat"]
            payloads = [
                dict(template["payload"], cluster_id=cluster_id, member_id=member_id, metric=metric, value=value)
                for metric, value in metrics.items()
            ]
        out = []
        for payload in payloads:
            self.count += 1
            record = dict(template, id=f"h{self.count}", aggregate_id=key, payload=dict(payload, timestamp=ts))
            out.append(json.dumps(record).encode())
        return out


def publish(member_index: int, round_index: int) -> dict[str, float]:
    return {"load_average": 30.0 + member_index % 40, "memory_consumption": 40.0 + round_index % 30}


def produce_rounds(settings, rounds: int, start_ts: float, batched: bool) -> tuple[int, int, float]:
    """Every member publishes load and memory `rounds` times, 15 s apart in event time. Run in
    a process of its own: a producer sharing the worker's interpreter starves its event loop
    (heartbeats missed, the worker thrown out of its group). Returns (records, samples, records/s)."""
    traffic = HealthTraffic(batched)
    appender = Appender(settings, linger_ms=20, batch_size=512 * 1024)
    topic, all_members, sent = settings.topic("health"), members(), 0
    started = time.perf_counter()
    for r in range(rounds):
        for n, (key, cid, mid) in enumerate(all_members):
            ts = start_ts + r * PUBLISH_SECONDS + n * PUBLISH_SECONDS / len(all_members)
            for value in traffic.encode(key, cid, mid, publish(n, r), ts):
                appender.send_raw(topic, key.encode(), value)
                sent += 1
    appender.flush(300)
    appender.close()
    return sent, rounds * len(all_members) * 2, sent / (time.perf_counter() - started)


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


def sustained(settings, lag: Lag, rate: float, seconds: float) -> tuple[list[int], int, float]:
    """Publish MemberHealth records at up to `rate` samples/s (two a record) for `seconds`; lag
    sampled every second, also while this process is behind its schedule (one producer thread
    may not reach `rate`). Returns the lag samples, the records sent and the samples/s offered."""
    traffic = HealthTraffic(batched=True)
    appender = Appender(settings, linger_ms=5)
    topic, all_members, samples = settings.topic("health"), members(), []
    started, n, next_sample = time.perf_counter(), 0, 1.0
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate / 2)
        while n < due and (elapsed := time.perf_counter() - started) < next_sample:
            key, cid, mid = all_members[n % len(all_members)]
            for value in traffic.encode(key, cid, mid, publish(n, 0), time.time()):
                appender.send_raw(topic, key.encode(), value)
            n += 1
        if elapsed >= next_sample:
            appender.flush()
            done, end = lag.of("health")
            samples.append(end - done)
            next_sample += 1.0
        elif n >= due:
            time.sleep(0.01)
    appender.flush()
    offered = 2 * n / (time.perf_counter() - started)
    appender.close()
    return samples, traffic.count, offered


def split_costs(settings, history: dict[str, list], batched: bool, rounds: int = 3) -> dict[str, float]:
    """CPU µs per record of each step of the worker's health path (the order it runs them in),
    on signed records of one format, without Kafka; decide: µs per cluster and hop. The first
    round is not timed: it makes every member's windows (once per member and worker)."""
    signer, verifier = Signer.platform(settings), Verifier.of(settings)
    traffic, now = HealthTraffic(batched), time.time()
    views = {key: view_of(cluster.fold(cluster.initial(key), events, None)) for key, events in history.items()}
    book = HealthBook(settings.health_window_seconds, settings.member_fault_seconds)
    clock = time.process_time
    costs = {"decode": 0.0, "verify": 0.0, "window": 0.0}
    n = 0
    for r in range(rounds):
        raws = []
        for m, (key, cid, mid) in enumerate(members()):
            ts = now - (rounds - r) * PUBLISH_SECONDS + m * PUBLISH_SECONDS / CLUSTERS / MEMBERS_PER_CLUSTER
            for value in traffic.encode(key, cid, mid, publish(m, r), ts):
                raws.append((key.encode(), value, signer.headers("health", key.encode(), value)))
        started = clock()
        senders = [verifier.sender("health", k, v, h) for k, v, h in raws]
        verify = clock() - started
        started = clock()
        records = [(decode_key(k), decode("health", v, h))[1] for k, v, h in raws]
        decoding = clock() - started
        started = clock()
        for sender, record in zip(senders, records, strict=True):
            verifier.require_signed("health", sender, record)
        verify += clock() - started
        started = clock()
        for record in records:
            book.ingest(record, views, 0, 0.0, now)
        window = clock() - started
        if r:
            costs["decode"] += decoding
            costs["verify"] += verify
            costs["window"] += window
            n += len(raws)
    started = clock()
    verdicts = book.assess(views, now)
    decide = clock() - started
    samples = (rounds - 1) * len(members()) * 2
    total = sum(costs.values())
    return {
        "records": n,
        "samples": samples,
        **{f"{step}_us": round(cost / n * 1e6, 2) for step, cost in costs.items()},
        "per_record_us": round(total / n * 1e6, 2),
        "per_sample_us": round(total / samples * 1e6, 2),
        "decide_us_per_cluster_hop": round(decide / max(len(verdicts), 1) * 1e6, 1),
    }


def steady_cluster_hour(hop_seconds: float, publish_seconds: float) -> dict[str, dict[str, int]]:
    """Records a steady cluster's verdicts cost in an hour of hops: one Active member (min 1),
    load 5 against 25 and memory 30 against 80, published every `publish_seconds`. Before:
    every verdict sent (a command, the node's commit and its reply); after: those that change
    the cluster."""
    key, cid = cluster_key(T, "steady.php1.php.domain"), "steady.php1.php.domain"
    spec = ClusterSpec(
        cluster_id=cid,
        application_id="steady",
        alias="php1",
        cartridge_type="php",
        min=1,
        max=4,
        autoscaling_policy_id="as",
        deployment_policy_id="dp",
        partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=4)],
        thresholds={"load_average": 25.0, "memory_consumption": 80.0},
    )
    spawned = E.MemberSpawnRequested(
        member_id="m1",
        cluster_id=cid,
        application_id="steady",
        cartridge_type="php",
        network_partition_id="np1",
        partition_id="p1",
        provider="mock",
    )
    events = [E.ClusterCreated(spec=spec), spawned, E.MemberActivated(member_id="m1", cluster_id=cid)]
    views = {key: view_of(cluster.fold(cluster.initial(key), events, None))}
    book = HealthBook(60.0, 60.0, math.inf, math.inf)
    start, published, sent, assessed = 1_000_000.0, 0.0, 0, 0
    for hop in range(int(3600 / hop_seconds)):
        now = start + hop * hop_seconds
        while start + published <= now:
            sample = MemberHealth(
                cluster_id=cid,
                network_partition_id="np1",
                member_id="m1",
                metrics={"load_average": 5.0, "memory_consumption": 30.0},
                timestamp=start + published,
            )
            book.ingest(envelope(HealthRecord, sample, key, tenant=T), views, 0, now, now)
            published += publish_seconds
        verdicts = book.assess(views, now)
        assessed += len(verdicts)
        sent += sum(d.send for d in verdicts)
    return {
        "before": {"commands": assessed, "events": assessed, "replies": assessed},
        "after": {"commands": sent, "events": sent, "replies": sent},
    }


class FaustDrain:
    """A faust agent taking the health topic in batches (``stream.take``) and doing nothing else:
    what faust costs a record on this path. Runs on a thread with its own loop, like the worker."""

    def __init__(self, settings, expected: int) -> None:
        self.settings, self.expected = settings, expected
        self.seen, self.first_at, self.done_at = 0, 0.0, 0.0
        self.cpu = [0.0, 0.0]
        self.finished = threading.Event()

    def run(self, timeout: float) -> tuple[float, float]:
        """(records/s, CPU µs per record) from the first batch to the last."""
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        if not self.finished.wait(timeout):
            raise SystemExit(f"faust agent saw {self.seen}/{self.expected} records in {timeout:.0f} s")
        thread.join(10)
        span = max(self.done_at - self.first_at, 1e-9)
        return self.seen / span, (self.cpu[1] - self.cpu[0]) / max(self.seen, 1) * 1e6

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = faust.App(
            self.settings.topic(f"faust-drain-{uuid.uuid4().hex[:6]}"),
            broker=f"kafka://{self.settings.kafka_bootstrap}",
            store="memory://",
            autodiscover=False,
            web_enabled=False,
            topic_partitions=self.settings.partitions,
            consumer_auto_offset_reset="earliest",
            broker_max_poll_records=2000,
            stream_buffer_maxsize=20_000,
        )
        topic = raw_topic(app, self.settings, "health")

        @app.agent(topic)
        async def take(stream):
            async for batch in stream.take(2000, within=0.2):
                if not self.seen:
                    self.first_at, self.cpu[0] = time.perf_counter(), time.process_time()
                self.seen += len(batch)
                if self.seen >= self.expected and not self.finished.is_set():
                    self.done_at, self.cpu[1] = time.perf_counter(), time.process_time()
                    self.finished.set()
                    await app.stop()

        worker = HealthWorker(app, loop=loop, loglevel="WARNING", override_logging=False, quiet=True)
        with contextlib.suppress(SystemExit, asyncio.CancelledError):
            worker.execute_from_commandline()


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


def drain(settings, rounds: int, batched: bool, history_seeded: int, sustain: tuple[float, float, float] | None):
    """Produce a backlog of one format, start a worker, measure its drain (and, with `sustain` =
    (rate, share, seconds), a sustained phase after it). Returns the figures."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        backlog, samples, produce_rate = pool.apply(
            produce_rounds, (settings, rounds, time.time() - rounds * PUBLISH_SECONDS, batched)
        )
    started = time.monotonic()
    worker, lag = HealthWorkerThread(settings).start(), Lag(settings)
    lags: list[int] = []
    sent = 0
    try:
        views_seconds = wait_views_folded(worker, started)
        if known_members(worker) < CLUSTERS * MEMBERS_PER_CLUSTER:
            raise SystemExit(f"cluster views incomplete: {known_members(worker)} members")
        first_at, first_done, caught_up_at = wait_caught_up(lag, "health", 600)
        drained = backlog - first_done
        per_s = drained / max(caught_up_at - first_at, 1e-9)
        rate = 0.0
        if sustain is not None:
            wanted, share, seconds = sustain
            lags, sent, rate = sustained(
                settings, lag, wanted or max(1000.0, share * per_s * samples / backlog), seconds
            )
    finally:
        worker.stop()
        lag.close()
    return {
        "backlog_records": backlog,
        "samples_per_record": samples / backlog,
        "produced_per_s": round(produce_rate),
        "views_folded_s": round(views_seconds, 2),
        "records_per_s": round(per_s),
        "samples_per_s": round(per_s * samples / backlog),
        "sustained_samples_per_s": round(rate),
        "lag_samples": lags,
        "records_total": backlog + sent,
        "seeded": history_seeded,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10, help="backlog: rounds of every member (2 samples each)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the sustained phase")
    parser.add_argument("--share", type=float, default=0.8, help="sustained rate as a share of the drain rate")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="sustained rate (samples/s; 0: --share of the drain rate)"
    )
    args = parser.parse_args()
    with bench_settings() as base, tempfile.TemporaryDirectory() as state_dir:
        new = base.model_copy(update={"state_dir": Path(state_dir)})
        old = new.model_copy(update={"topic_prefix": f"{new.topic_prefix}old."})
        ensure_topics(old)
        seeded, history = seed_clusters(new)
        seed_clusters(old)
        split = {"HealthStat": split_costs(new, history, False), "MemberHealth": split_costs(new, history, True)}
        before = drain(old, args.rounds, False, seeded, None)
        after = drain(new, args.rounds, True, seeded, (args.rate, args.share, args.seconds))
        faust_per_s, faust_cpu_us = FaustDrain(new, after["records_total"]).run(600)
        raw_rate = asyncio.run(bare_read(new, after["records_total"]))
        dead = sum(1 for _ in read_to_end(new, "deadletter")) + sum(1 for _ in read_to_end(old, "deadletter"))
    steady = steady_cluster_hour(new.health_hop_seconds, new.health_publish_seconds)
    tail = after["lag_samples"][len(after["lag_samples"]) // 2 :]
    rate = after["sustained_samples_per_s"]
    flat = bool(tail) and max(tail) <= rate * 2 and tail[-1] <= max(tail[0], rate * 2)
    print(f"members: {CLUSTERS * MEMBERS_PER_CLUSTER} in {CLUSTERS} clusters; seeded {seeded} events")
    print("per-record CPU of the health path (µs; this process, no Kafka):")
    print(f"  {'format':<14}{'decode':>8}{'verify':>8}{'window':>8}{'record':>8}{'sample':>8}  decide/cluster-hop")
    for name, c in split.items():
        print(
            f"  {name:<14}{c['decode_us']:>8}{c['verify_us']:>8}{c['window_us']:>8}{c['per_record_us']:>8}"
            f"{c['per_sample_us']:>8}  {c['decide_us_per_cluster_hop']} µs"
        )
    ratio = split["HealthStat"]["per_sample_us"] / split["MemberHealth"]["per_sample_us"]
    print(f"  CPU per sample, HealthStat / MemberHealth: {ratio:.2f}")
    for name, d in (("before: HealthStat (one record per metric)", before), ("after: MemberHealth", after)):
        print(
            f"drain, {name}: {d['records_per_s']:,} records/s = {d['samples_per_s']:,} samples/s"
            f" ({d['backlog_records']} records; views folded in {d['views_folded_s']} s)"
        )
    print(f"samples/s after / before: {after['samples_per_s'] / max(before['samples_per_s'], 1):.2f}")
    print(
        f"sustained at {rate:,} samples/s for {args.seconds:g}s: lag per second {after['lag_samples']}"
        f" -> {'flat' if flat else 'growing'}"
    )
    print(
        f"faust agent, stream.take(2000), no work: {faust_per_s:,.0f} records/s, {faust_cpu_us:.0f} µs CPU a record"
        f" (= {faust_per_s * 2:,.0f} samples/s at best with MemberHealth)"
    )
    print(f"bare aiokafka read, same topic: {raw_rate:,.0f} records/s")
    print(f"worker / bare read (records/s, MemberHealth): {after['records_per_s'] / raw_rate:.3f}")
    print(
        f"records per steady cluster-hour (hop {new.health_hop_seconds:g} s): "
        f"before {steady['before']}, after {steady['after']}"
    )
    print(f"dead letters: {dead} (expected 0: every record valid)")
    finish(
        {
            "bench": "health",
            "members": CLUSTERS * MEMBERS_PER_CLUSTER,
            "cpu_split_us": split,
            "drain_before": {k: v for k, v in before.items() if k != "lag_samples"},
            "drain_after": {k: v for k, v in after.items() if k != "lag_samples"},
            "samples_per_s": after["samples_per_s"],
            "samples_ratio_after_before": round(after["samples_per_s"] / max(before["samples_per_s"], 1), 2),
            "sustained_samples_per_s": rate,
            "lag_flat": flat,
            "lag_samples": after["lag_samples"],
            "faust_take_records_per_s": round(faust_per_s),
            "faust_take_cpu_us_per_record": round(faust_cpu_us, 1),
            "bare_aiokafka_records_per_s": round(raw_rate),
            "steady_cluster_hour": steady,
            "dead_letters": dead,
            "aim_samples_per_s": 50_000,
        }
    )


if __name__ == "__main__":
    main()
    # the faust agent's app, stopped, leaves executor threads that the interpreter's exit waits
    # for while they retry the broker this bench has already stopped: the figures are printed
    sys.stdout.flush()
    os._exit(0)
