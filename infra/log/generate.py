"""`stratos log generate`: a long, realistic history written the way the node writes it.

For measuring what the platform does with an old log (restarts, takeovers, `replay --at`): the
commands of a simulated platform (tenants with their definitions, many clusters whose members
are created, start, activate, fault, drain and go, clusters scaled, re-limited, terminated and
created again, some commands rejected, some sent twice) are decided one by one by the node's
own `handle` (`actors.runtime`), each decision appended as the node appends it (signed by the
platform's Appender), with the node's claims, takeovers and checkpoints
(`infra.log.recovery.claim_partitions` / `write_checkpoint`). Nothing is hand-made JSON.

The history is stamped over a past period (`span`, ending now): each record's time and its Kafka
timestamp are the simulated time, so that time travel has a past to travel to. Commands and
replies are not written (they are transient topics, and a node started on this log must not
decide them again): the events and snapshots topics are what a platform of that age holds.
"""

from __future__ import annotations

import functools
import gc
import json
import multiprocessing
import random
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from pydantic import BaseModel

from actors.base import Context
from actors.runtime import Tracked, handle
from infra.log.bulk import BulkAppender
from infra.log.kafka import envelope, kafka_client_options, new_id
from infra.log.recovery import FULL_CHECKPOINT_EVERY, CheckpointStats, claim_partitions, write_checkpoint
from infra.node.node import partition_for, timeouts_from
from infra.settings import Settings
from schemas import commands as C
from schemas.definitions import DEFINITION_KINDS
from schemas.domain import ClusterSpec, MemberStatus, PartitionSpec
from schemas.envelope import Envelope
from schemas.records import CommandRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "definitions"
DEFINITIONS = {
    "networkPartition": ("network-partition.json", "network-partition-1"),
    "autoscalingPolicy": ("autoscaling-policy-1.json", "autoscaling-policy-1"),
    "deploymentPolicy": ("deployment-policy.json", "deployment-policy-1"),
    "cartridge": ("php.json", "php"),
}
"""The definitions each simulated tenant registers (and updates now and then), from examples/:
kind -> (file, id); the clusters use them."""
NEXT_STEP = {
    MemberStatus.CREATED: "created",
    MemberStatus.INITIALIZED: "Started",
    MemberStatus.STARTING: "Activated",
    MemberStatus.IN_MAINTENANCE: "ReadyToShutdown",
    MemberStatus.READY_TO_SHUTDOWN: "destroyed",
}
"""What the outside world reports next about a member in each status (an agent, the cloud)."""


@dataclass
class Generated:
    """What a run wrote."""

    commits: int = 0
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    """Commands sent again with the same id: answered from the dedup window, nothing written."""
    claims: int = 0
    checkpoints: int = 0
    aggregates: int = 0
    first: datetime | None = None
    last: datetime | None = None
    snapshots: CheckpointStats = field(default_factory=CheckpointStats)


@functools.cache
def _example(kind: str) -> str:
    return (EXAMPLES / DEFINITIONS[kind][0]).read_text()


def _definition(kind: str, revision: int) -> BaseModel:
    definition_id = DEFINITIONS[kind][1]
    data = json.loads(_example(kind))
    data["type" if kind == "cartridge" else "id"] = definition_id
    if kind != "cartridge":
        data["description"] = f"revision {revision}"
    else:
        data["version"] = str(7 + revision)
    return DEFINITION_KINDS[kind].model_validate(data)


def _spec(tenant_index: int, n: int, rng: random.Random) -> ClusterSpec:
    low = rng.randint(1, 3)
    return ClusterSpec(
        cluster_id=f"app{n}.php.php.domain",
        application_id=f"app{n}",
        alias="php",
        cartridge_type="php",
        min=low,
        max=low + rng.randint(3, 9),
        autoscaling_policy_id="autoscaling-policy-1",
        deployment_policy_id="deployment-policy-1",
        partition_algorithm=rng.choice(["round-robin", "one-after-another"]),
        partitions=[
            PartitionSpec(id=f"partition-{i}", network_partition_id="network-partition-1", provider="mock", max=8)
            for i in (1, 2)
        ],
    )


class World:
    """The simulated platform: which command comes next for which aggregate."""

    def __init__(
        self, clusters: int, tenants: int, rng: random.Random, partitions: int = 1, owned: set[int] | None = None
    ) -> None:
        """`owned`: only the aggregates of these partitions (of `partitions`), all by default."""
        self.rng = rng
        self.tenants = ["carbon.super", *(f"tenant{t}.example.com" for t in range(1, tenants))]
        self.specs: dict[str, ClusterSpec] = {}
        for n in range(clusters):
            tenant = self.tenants[n % len(self.tenants)]
            self.specs[f"{tenant}/cluster/app{n}.php.php.domain"] = _spec(n % len(self.tenants), n, rng)
        self.definitions = {
            f"{tenant}/{kind}/{definition_id}": kind
            for tenant in self.tenants
            for kind, (_file, definition_id) in DEFINITIONS.items()
        }
        if owned is not None:
            mine = lambda a: partition_for(a, partitions) in owned  # noqa: E731
            self.specs = {a: spec for a, spec in self.specs.items() if mine(a)}
            self.definitions = {a: kind for a, kind in self.definitions.items() if mine(a)}
        self.clusters = list(self.specs)
        self.revisions: dict[str, int] = {}
        self.last_sent: dict[str, Envelope] = {}

    def aggregate_ids(self) -> list[str]:
        return [*self.definitions, *self.clusters]

    def next_aggregate(self) -> str:
        if self.definitions and self.rng.random() < 0.01:
            return self.rng.choice(list(self.definitions))
        return self.rng.choice(self.clusters)

    def next_command(self, tracked: Tracked) -> BaseModel:
        aggregate_id = tracked.state.aggregate_id
        if aggregate_id in self.definitions:
            return self._definition_command(tracked)
        return self._cluster_command(aggregate_id, tracked.state)

    def _definition_command(self, tracked: Tracked) -> BaseModel:
        aggregate_id = tracked.state.aggregate_id
        kind = self.definitions[aggregate_id]
        revision = self.revisions[aggregate_id] = self.revisions.get(aggregate_id, -1) + 1
        verb = "Update" if tracked.state.exists else "Add"
        command = getattr(C, f"{verb}{C._pascal(kind)}")
        return command(definition=_definition(kind, revision))

    def _cluster_command(self, aggregate_id: str, state) -> BaseModel:
        rng = self.rng
        if not state.exists or state.status.value == "Terminated":
            return C.CreateCluster(spec=self.specs[aggregate_id])
        if state.status.value == "Terminating" and not state.members:
            return C.CheckTimeouts()
        moving = [m for m in state.members.values() if m.status in NEXT_STEP]
        active = [m for m in state.members.values() if m.status == MemberStatus.ACTIVE]
        draining = [m for m in active if m.termination_requested_at is not None]
        if (moving or draining) and rng.random() < 0.85:
            member = rng.choice(moving + draining)
            step = NEXT_STEP.get(member.status, "MaintenanceMode")
            mid = member.member_id
            if step == "created":
                return C.ReportNodeCreated(
                    member_id=mid, node_id=f"node-{mid}", private_ip=f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
                )
            if step == "destroyed":
                return C.ReportNodeDestroyed(member_id=mid, reason="terminated")
            return C.ReportInstanceStatus(member_id=mid, status=step)
        roll = rng.random()
        spec = state.spec
        if roll < 0.50:
            required = rng.randint(state.min, state.max)
            load = rng.uniform(5, 95)
            return C.ScaleCluster(
                required=required, metric="load_average", reason="generated load", figures={"load_average": load}
            )
        if roll < 0.65 and active:
            return C.TerminateMember(member_id=rng.choice(active).member_id)
        if roll < 0.72 and active:
            return C.ReportMemberFault(member_id=rng.choice(active).member_id, reason="silent")
        if roll < 0.78:
            low = rng.randint(1, 3)
            return C.UpdateClusterLimits(min=low, max=low + rng.randint(2, 9))
        if roll < 0.83:  # an agent reporting about a member long gone: rejected
            return C.ReportInstanceStatus(member_id=f"gone-{rng.randint(0, 999)}", status="Activated")
        if roll < 0.84:
            return C.TerminateCluster(force=rng.random() < 0.3)
        if roll < 0.86 and spec is not None:
            return C.UpdateClusterLimits(min=spec.max + 5, max=spec.max)  # min above max: rejected
        return C.CheckTimeouts()


def generate_log(
    settings: Settings,
    commits: int,
    clusters: int = 1000,
    tenants: int = 20,
    span: timedelta = timedelta(days=7),
    takeovers: int = 8,
    seed: int = 7,
    snapshot_every: int | None = None,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> Generated:
    """Append about `commits` commits (and the claims and checkpoints a node writes along them)
    to the events and snapshots topics; `progress(commits so far)` is called twice a second.

    The partitions are shared among `workers` processes (as among nodes: each writes its own
    partitions), each with a share of the commits as large as its share of the clusters.
    `takeovers`: times a partition changes hands along the history (a new writer claims it;
    its first checkpoint snapshots every aggregate of the partition)."""
    if written := _records_in(settings, "events"):
        raise HistoryNotEmpty(
            f"{settings.topic('events')} already holds {written:,} records: a generated history "
            "goes into empty topics (a fresh STRATOS_TOPIC_PREFIX)"
        )
    end = datetime.now(UTC)
    partitions = list(range(settings.partitions))
    workers = max(1, min(workers, len(partitions)))
    owned = [partitions[w::workers] for w in range(workers)]
    homes = [partition_for(a, len(partitions)) for a in World(clusters, tenants, random.Random(seed)).clusters]
    shares = [sum(h in mine for h in homes) / len(homes) for mine in owned]
    context = multiprocessing.get_context("spawn")  # no Kafka client's threads are forked
    counters = [context.Value("q", 0) for _ in owned]
    jobs = [
        (
            settings,
            mine,
            round(commits * share),
            clusters,
            tenants,
            end - span,
            span,
            takeovers // workers + (w < takeovers % workers),
            seed,
            w,
            snapshot_every or settings.snapshot_every,
        )
        for w, (mine, share) in enumerate(zip(owned, shares, strict=True))
    ]
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_share, initargs=(counters,)) as pool:
        running = [pool.submit(_generate, *job) for job in jobs]
        while not all(f.done() for f in running):
            futures_wait(running, timeout=0.5, return_when=FIRST_EXCEPTION)
            if progress is not None:
                progress(sum(c.value for c in counters))
            if any(f.done() and f.exception() for f in running):
                break
        results = [f.result() for f in running]
    total = Generated()
    for part in results:
        for name in ("commits", "events", "rejected", "duplicates", "claims", "checkpoints", "aggregates"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.first = min(filter(None, (total.first, part.first)), default=None)
        total.last = max(filter(None, (total.last, part.last)), default=None)
        total.snapshots.snapshots += part.snapshots.snapshots
        total.snapshots.oversized += part.snapshots.oversized
        total.snapshots.snapshot_bytes += part.snapshots.snapshot_bytes
    return total


class HistoryNotEmpty(ValueError):
    """The events topic already holds a history: a generated one would go back in time."""


def _records_in(settings: Settings, topic_kind: str) -> int:
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None)
    try:
        topic = settings.topic(topic_kind)
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values()) - sum(consumer.beginning_offsets(tps).values())
    finally:
        consumer.close()


GC_YOUNG_OBJECTS = 100_000
"""Allocations between two collections of the youngest generation in a worker (Python: 700)."""

_COUNTERS: list = []
"""Each worker's commits so far (shared memory, handed to the processes as they start)."""


def _share(counters: list) -> None:
    _COUNTERS[:] = counters


def _generate(
    settings: Settings,
    partitions: list[int],
    commits: int,
    clusters: int,
    tenants: int,
    start: datetime,
    span: timedelta,
    takeovers: int,
    seed: int,
    worker: int,
    every: int,
) -> Generated:
    """One worker: the aggregates of `partitions`, `commits` commits over the span."""
    # Each decision makes many short-lived objects beside the millions the aggregates hold: at
    # Python's default thresholds the collector cost a worker about 15% of its CPU.
    gc.set_threshold(GC_YOUNG_OBJECTS, 50, 100)
    world = World(clusters, tenants, random.Random(seed), settings.partitions, set(partitions))
    rng = world.rng = random.Random(seed * 1000 + worker)
    appender = BulkAppender(settings, source="node")
    done = Generated()
    step = span / max(1, commits)
    timeouts = timeouts_from(settings)
    events_topic = settings.topic("events")
    tracked: dict[str, Tracked] = {}
    home = {a: partition_for(a, settings.partitions) for a in world.aggregate_ids()}
    dirty: dict[int, dict[str, int]] = {p: {} for p in partitions}
    covers: dict[int, dict[str, int]] = {p: {} for p in partitions}
    last_offset: dict[int, int] = {}
    since: dict[int, int] = dict.fromkeys(partitions, 0)
    writers = dict.fromkeys(partitions, f"generator-{worker}")
    claims = {
        p: claim
        for p, (claim, _offset) in claim_partitions(appender, writers[partitions[0]], partitions, 1, start).items()
    }
    done.claims = len(partitions)
    takeover_at = {commits * (i + 1) // (takeovers + 1): i + 1 for i in range(takeovers)}

    def checkpoint(partition: int, at: datetime) -> None:
        appender.flush()  # the commits a checkpoint covers are on the broker before its marker
        if write_checkpoint(
            appender,
            partition,
            claims[partition],
            dirty[partition],
            covers[partition],
            last_offset.get(partition, -1),
            lambda a: tracked[a].snapshot(),
            settings.max_record_bytes,
            at=at,
            stats=done.snapshots,
            full_every=FULL_CHECKPOINT_EVERY * every,
        ):
            dirty[partition] = {}
            done.checkpoints += 1
        since[partition] = 0

    try:
        while done.commits < commits:
            now = start + step * done.commits
            if (generation := takeover_at.pop(done.commits, None)) is not None:
                partition = rng.choice(partitions)
                appender.flush()
                writers[partition] = f"generator-{worker}.{generation}"
                claims[partition] = claim_partitions(appender, writers[partition], [partition], generation + 1, now)[
                    partition
                ][0]
                # the new owner rebuilt the partition: its first checkpoint snapshots everything
                dirty[partition] = {**covers[partition], **dirty[partition]}
                covers[partition] = {}
                done.claims += 1
            aggregate_id = world.next_aggregate()
            partition = home[aggregate_id]
            aggregate = tracked.get(aggregate_id) or tracked.setdefault(aggregate_id, Tracked.new(aggregate_id))
            previous = world.last_sent.get(aggregate_id)
            if previous is not None and rng.random() < 0.02:
                command = previous  # sent again (a client's retry): a duplicate, nothing written
            else:
                command = envelope(CommandRecord, world.next_command(aggregate), aggregate_id, occurred_at=now)
                world.last_sent[aggregate_id] = command
            ctx = Context(
                now=now,
                new_id=new_id,
                timeouts=timeouts,
                claim=claims[partition],
                writer=writers[partition],
                max_record_bytes=settings.max_record_bytes,
            )
            outcome = handle(aggregate, command, ctx)
            if outcome.commit is None:
                done.duplicates += 1
                continue
            offset = appender.send_raw(
                events_topic,
                aggregate_id.encode(),
                outcome.encoded,  # type: ignore[arg-type]
                partition=partition,
                record=outcome.commit,
                timestamp_ms=int(now.timestamp() * 1000),
            ).offset
            dirty[partition][aggregate_id] = last_offset[partition] = offset
            commit = outcome.commit.payload
            done.commits += 1
            done.events += len(commit.events)  # type: ignore[union-attr]
            done.rejected += commit.outcome == "rejected"  # type: ignore[union-attr]
            done.first = done.first or now
            done.last = now
            since[partition] += 1
            if since[partition] >= every:
                checkpoint(partition, now)
            if done.commits % 500 == 0:
                _COUNTERS[worker].value = done.commits
        appender.flush()
    finally:
        appender.close()
    done.aggregates = len(tracked)
    return done
