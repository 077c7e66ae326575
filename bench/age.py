"""Start time of each part against the log's age: does a restart cost the same at any age?

For each log size a fresh history is written by `stratos log generate`'s generator (the node's own
`handle`, appended and signed as the node appends: `infra.log.generate`), then each part is
started twice in this process on that log, until it is ready:

- node: `Node` until its partitions are claimed and rebuilt (`node.ready`: snapshots of its own
  checkpoints, then the commits after them);
- api: the API's read model (`ReadModel.start`: what the API waits for before it serves);
- cloud: the cloud controller's rebuild of its book (what it does before it joins its group);
- health: the health worker's cluster views (`ClusterViews` and its projection, read with
  kafka-python here as the worker's task reads them with aiokafka, checkpointing when due and
  once caught up);
- lb: the topology projector until its entries are written (`TopologyProjector.ready`).

The first start folds what no checkpoint of its own covers yet and writes one; the second is the
restart the issue's aim is about: its time at each size is quoted against the 100k log's, measured
in the same run (aim: at most 1.5). Sizes are commits of the events topic (claims and markers come
on top). Usage: python bench/age.py [--sizes 100000,1000000,2000000] [--clusters 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from common import finish

from infra.api.read_model import ReadModel
from infra.broker import EmbeddedBroker
from infra.cloud.controller import CloudController
from infra.health.views import ClusterViews
from infra.lb.topology import TopologyProjector
from infra.log.generate import generate_log
from infra.log.kafka import Appender, assigned_consumer, ensure_topics
from infra.node.node import Node
from infra.settings import Settings

PARTS = ("node", "api", "cloud", "health", "lb")


def _in_thread(target, ready: threading.Event, timeout: float = 3600.0) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise TimeoutError(f"{target} not ready in {timeout}s")
    return thread


def start_node(settings: Settings) -> float:
    node = Node(settings)
    began = time.perf_counter()
    thread = _in_thread(node.run, node.ready)
    took = time.perf_counter() - began
    node.stop()
    thread.join(60)
    return took


def start_api(settings: Settings) -> float:
    began = time.perf_counter()
    model = ReadModel(settings).start(timeout=3600)
    took = time.perf_counter() - began
    model.stop()
    return took


def start_cloud(settings: Settings) -> float:
    controller = CloudController(settings)
    began = time.perf_counter()
    controller.rebuild()
    took = time.perf_counter() - began
    controller.appender.close()
    for lane in controller.lanes:
        lane.shutdown()
    return took


def start_health(settings: Settings) -> float:
    """The worker's `follow_cluster_views` up to `views_ready`, with a kafka-python reader."""
    began = time.perf_counter()
    views = ClusterViews(settings)
    projection = views.projection
    consumer = assigned_consumer(settings, "events")
    appender = Appender(settings, source="health")
    try:
        if projection.restore() is not None:
            projection.seek(consumer)
        ends = consumer.end_offsets(list(consumer.assignment()))
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for raws in consumer.poll(timeout_ms=500, max_records=5000).values():
                for raw in raws:
                    views.feed(raw)
            if projection.due():
                projection.checkpoint(appender)
        if projection.read:
            projection.checkpoint(appender)
        return time.perf_counter() - began
    finally:
        consumer.close()
        appender.close()


def start_lb(settings: Settings) -> float:
    projector = TopologyProjector(settings)
    began = time.perf_counter()
    thread = _in_thread(projector.run, projector.ready)
    took = time.perf_counter() - began
    projector.stop()
    thread.join(60)
    return took


STARTS = {"node": start_node, "api": start_api, "cloud": start_cloud, "health": start_health, "lb": start_lb}


def measure(broker: EmbeddedBroker, size: int, clusters: int, state: Path) -> dict:
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"age{size}x{time.monotonic_ns() % 10**6}.",
        partitions=4,
        state_dir=state,
    )
    ensure_topics(settings)
    began = time.perf_counter()
    made = generate_log(settings, size, clusters=clusters)
    print(f"\n{size:,} commits: generated in {time.perf_counter() - began:.0f} s ({made.commits:,} commits)")
    found = {}
    for part in PARTS:
        first = STARTS[part](settings)
        again = STARTS[part](settings)
        found[part] = {"first_s": round(first, 2), "restart_s": round(again, 2)}
        print(f"  {part:7} first start {first:7.2f} s   restart {again:7.2f} s")
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,2000000")
    parser.add_argument("--clusters", type=int, default=1000)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict] = {}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as state:
        for size in sizes:
            results[size] = measure(broker, size, args.clusters, Path(state))
    base = results[sizes[0]]
    print(f"\nrestart time, ratio to the {sizes[0]:,}-commit log (aim <= 1.5):")
    ratios = {}
    for part in PARTS:
        ratios[part] = {
            size: round(results[size][part]["restart_s"] / max(base[part]["restart_s"], 1e-3), 2) for size in sizes
        }
        print(f"  {part:7} " + "  ".join(f"{size:>9,}: {ratio:5.2f}" for size, ratio in ratios[part].items()))
    finish(
        {
            "bench": "age",
            "sizes": sizes,
            "clusters": args.clusters,
            "seconds": {str(size): results[size] for size in sizes},
            "restart_ratio_to_first_size": {p: {str(s): r for s, r in v.items()} for p, v in ratios.items()},
        }
    )


if __name__ == "__main__":
    main()
