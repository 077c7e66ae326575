"""A load step on one cluster: how long from the first over-threshold health record to the
``ScaleCluster`` command, and to the cluster's ``ScalingDecided`` (scale-up).

A node, its reactor and one health worker run in this process on an embedded broker; the
cluster (min 1, max 4, load threshold 25) has one Active member that reports load 10 twice a
second, then 80. Times are wall-clock differences on this host (every timestamp is taken here
or stamped by a part running here). Stratos needs up to ~165 s to its first scale-up decision,
Kubernetes' HPA 15-70 s; the aim is the window hop + 1 s.
Usage: python bench/reaction.py [--steps N] [--hop S] [--window S]
"""

from __future__ import annotations

import argparse
import threading
import time

from common import bench_settings, finish, median

from infra.health.app import HealthWorkerThread
from infra.log.commands_client import CommandClient
from infra.log.eventlog import History
from infra.log.kafka import Appender, assigned_consumer, decode, envelope
from infra.log.recovery import fence_before
from infra.node.node import Node
from infra.reactor.reactor import Reactor
from schemas import commands as C
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import HealthRecord
from schemas.status import HealthStat
from streams.health_state import active_members, cluster_key

T = "carbon.super"
PUBLISH_EVERY = 0.5


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


class Watch:
    """Follows the commands and events topics from their current end: first ScaleCluster
    requiring more than one member, and first scale-up ScalingDecided, per cluster key."""

    def __init__(self, settings) -> None:
        self.history = History.of(settings, lambda partition, offset: fence_before(settings, partition, offset))
        self.first_scale: dict[str, float] = {}
        self.first_decided: dict[str, float] = {}
        self.stopping = threading.Event()
        self.readers = [assigned_consumer(settings, kind, from_beginning=False) for kind in ("commands", "events")]
        for reader in self.readers:
            for tp in reader.assignment():
                reader.position(tp)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            for kind, reader in zip(("commands", "events"), self.readers, strict=True):
                for raws in reader.poll(timeout_ms=20).values():
                    for raw in raws:
                        if kind == "commands":
                            self._see(decode(kind, raw.value))
                        else:  # the events of each commit that is history
                            for event in self.history.events(raw):
                                self._see(event)

    def _see(self, record) -> None:
        payload = record.payload
        if payload.type == "ScaleCluster" and payload.required > 1:
            self.first_scale.setdefault(record.aggregate_id, record.occurred_at.timestamp())
        if payload.type == "ScalingDecided" and payload.spawn > 0:
            self.first_decided.setdefault(record.aggregate_id, record.occurred_at.timestamp())

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for reader in self.readers:
            reader.close()


def step(settings, client, appender, worker, watch, n: int) -> tuple[float, float]:
    cluster = f"bench{n}.php1.php.domain"
    key = cluster_key(T, cluster)
    spec = ClusterSpec(
        cluster_id=cluster,
        application_id=f"bench{n}",
        alias="php1",
        cartridge_type="php",
        min=1,
        max=4,
        autoscaling_policy_id="as",
        deployment_policy_id="dp",
        partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=4)],
        thresholds={"load_average": 25.0},
    )
    client.call(key, C.CreateCluster(spec=spec))
    member = wait_for(
        lambda: list(getattr(worker.service.clusters.get(key), "members", None) or ()),
        30,
        "the spawned member in the worker's view",
    )[0]
    for command in (
        C.ReportNodeCreated(member_id=member, node_id=member),
        C.ReportInstanceStatus(member_id=member, status="Started"),
        C.ReportInstanceStatus(member_id=member, status="Activated"),
    ):
        client.call(key, command)
    wait_for(lambda: active_members(worker.service.clusters.get(key)), 30, "the member active in the view")

    def publish(value: float) -> float:
        at = time.time()
        appender.append(
            "health",
            key,
            envelope(
                HealthRecord,
                HealthStat(
                    cluster_id=cluster,
                    network_partition_id="np1",
                    member_id=member,
                    metric="load_average",
                    value=value,
                    timestamp=at,
                ),
                key,
                tenant=T,
            ),
        )
        return at

    for _ in range(int(3 / PUBLISH_EVERY)):  # steady state below the threshold
        publish(10.0)
        time.sleep(PUBLISH_EVERY)
    started = publish(80.0)
    while key not in watch.first_decided:
        time.sleep(PUBLISH_EVERY)
        publish(80.0)
        if time.time() - started > 60:
            raise SystemExit("no scale-up within 60 s")
    return watch.first_scale[key] - started, watch.first_decided[key] - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--hop", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    with bench_settings() as base:
        settings = base.model_copy(update={"health_hop_seconds": args.hop, "health_window_seconds": args.window})
        node, reactor = Node(settings), Reactor(settings)
        threads = [threading.Thread(target=node.run, daemon=True), threading.Thread(target=reactor.run, daemon=True)]
        for thread in threads:
            thread.start()
        wait_for(node.ready.is_set, 30, "the node's assignment")
        worker = HealthWorkerThread(settings).start()
        client, appender, watch = CommandClient(settings), Appender(settings), Watch(settings)
        try:
            results = [step(settings, client, appender, worker, watch, n) for n in range(args.steps)]
        finally:
            watch.close()
            client.close()
            appender.close()
            worker.stop()
            node.stop()
            reactor.stop()
    to_command = [r[0] for r in results]
    to_decided = [r[1] for r in results]
    print(
        f"load step 10 -> 80 on a cluster (threshold 25), window {args.window:g}s, hop {args.hop:g}s, "
        f"{args.steps} steps"
    )
    for n, (command, decided) in enumerate(results):
        print(f"  step {n}: ScaleCluster after {command:.2f}s, ScalingDecided after {decided:.2f}s")
    print(
        f"median: to ScaleCluster {median(to_command):.2f}s, to ScalingDecided {median(to_decided):.2f}s "
        f"(aim: hop + 1 s = {args.hop + 1:.1f}s; Stratos up to ~165 s, HPA 15-70 s)"
    )
    print(f"ratio to the aim (hop + 1 s): {median(to_decided) / (args.hop + 1):.2f}")
    finish(
        {
            "bench": "reaction",
            "steps": args.steps,
            "hop_s": args.hop,
            "window_s": args.window,
            "to_scale_command_s": round(median(to_command), 3),
            "to_scaling_decided_s": round(median(to_decided), 3),
            "max_to_scaling_decided_s": round(max(to_decided), 3),
            "ratio_to_aim": round(median(to_decided) / (args.hop + 1), 3),
        }
    )


if __name__ == "__main__":
    main()
