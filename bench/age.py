"""Start time of each part against the log's age: does a restart cost the same at any age?

For each log size a fresh history is written by `stratos log generate`'s generator (the node's own
`handle`, appended and signed as the node appends: `infra.log.generate`), then each part is
started twice in this process on that log, until it is ready:

- node: `Node` until its partitions are claimed and rebuilt (`node.ready`: snapshots of its own
  checkpoints, then the commits after them);
- api: the API's read model (`ReadModel.start`: what the API waits for before it serves);
- cloud: the cloud controller's rebuild of its book (what it does before it joins its group);
- health: the health worker itself (`HealthWorkerThread`: faust, its aiokafka reader of the
  events topic) until its cluster views hold the log (`views_ready`);
- lb: the topology projector until its entries are written (`TopologyProjector.ready`).

The first start folds what no checkpoint of its own covers yet and writes one; then each part is
restarted `--restarts` times, alternating between the logs (a load that comes and goes on a shared
machine touches every size alike), and its median restart at each size is quoted against the
smallest log's, measured in the same run (aim: at most 1.5). Sizes are commits of the events
topic (claims and markers come on top).

Logs are generated here, one per size, or already there (`--bootstrap`, `--prefixes` and
`--state-dir` of logs written by `stratos log generate`: generating 2,000,000 commits takes as
long as the rest of the run). Usage:
  python bench/age.py [--sizes 100000,1000000,2000000] [--clusters 1000] [--restarts 3]
  python bench/age.py --bootstrap HOST:PORT --prefixes age100k.,age2m. --state-dir DIR
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from common import finish
from kafka import KafkaConsumer, TopicPartition

from infra.api.read_model import ReadModel
from infra.broker import EmbeddedBroker
from infra.cloud.controller import CloudController
from infra.health.app import HealthWorkerThread
from infra.lb.topology import TopologyProjector
from infra.log.generate import generate_log
from infra.log.kafka import ensure_topics, kafka_client_options
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
    """The health worker from its start until its cluster views hold the events topic."""
    began = time.perf_counter()
    worker = HealthWorkerThread(settings).start()
    try:
        deadline = time.monotonic() + 3600
        while worker.service is None or not worker.service.views_ready.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the health worker's views not ready in 3600 s")
            time.sleep(0.01)
        return time.perf_counter() - began
    finally:
        worker.stop()


def start_lb(settings: Settings) -> float:
    projector = TopologyProjector(settings)
    began = time.perf_counter()
    thread = _in_thread(projector.run, projector.ready)
    took = time.perf_counter() - began
    projector.stop()
    thread.join(60)
    return took


STARTS = {"node": start_node, "api": start_api, "cloud": start_cloud, "health": start_health, "lb": start_lb}


def generated(broker: EmbeddedBroker, size: int, clusters: int, state: Path) -> Settings:
    """A fresh log of `size` commits on the broker."""
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"age{size}x{time.monotonic_ns() % 10**6}.",
        partitions=4,
        state_dir=state,
    )
    ensure_topics(settings)
    began = time.perf_counter()
    made = generate_log(settings, size, clusters=clusters)
    print(f"{size:,} commits: generated in {time.perf_counter() - began:.0f} s ({made.commits:,} commits)")
    return settings


def commits_in(settings: Settings) -> int:
    """Records of the events topic (an existing log's size: its commits, claims and markers)."""
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None)
    try:
        topic = settings.topic("events")
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def measure(logs: dict[int, Settings], restarts: int, parts: list[str]) -> dict[int, dict]:
    """Each part's first start on each log, then its restarts alternating between the logs."""
    found: dict[int, dict] = {size: {} for size in logs}
    for part in parts:
        for size, settings in logs.items():
            first = STARTS[part](settings)
            found[size][part] = {"first_s": round(first, 2), "restarts_s": []}
            print(f"  {size:>10,}  {part:7} first start {first:7.2f} s", flush=True)
        for _ in range(restarts):
            for size, settings in logs.items():
                found[size][part]["restarts_s"].append(round(STARTS[part](settings), 2))
        for size in logs:
            times = found[size][part]["restarts_s"]
            median = found[size][part]["restart_s"] = statistics.median(times) if times else None
            if times:
                print(f"  {size:>10,}  {part:7} restarts {times} s, median {median:.2f} s", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000,2000000")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--restarts", type=int, default=3, help="restarts of each part on each log")
    parser.add_argument("--parts", default=",".join(PARTS), help="of " + ",".join(PARTS))
    parser.add_argument("--bootstrap", help="the broker of logs already generated")
    parser.add_argument("--prefixes", help="their STRATOS_TOPIC_PREFIXes, smallest log first")
    parser.add_argument("--state-dir", type=Path, help="their generator's state dir (its platform secret)")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.bootstrap:
            logs = {}
            for prefix in args.prefixes.split(","):
                settings = Settings(
                    kafka_bootstrap=args.bootstrap, topic_prefix=prefix, partitions=4, state_dir=args.state_dir
                )
                logs[commits_in(settings)] = settings
        else:
            broker = stack.enter_context(EmbeddedBroker())
            state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            logs = {int(s): generated(broker, int(s), args.clusters, state) for s in args.sizes.split(",")}
        parts = args.parts.split(",")
        results = measure(logs, args.restarts, parts)
    sizes = list(logs)
    base = results[sizes[0]]
    if args.restarts == 0:
        finish({"bench": "age", "sizes": sizes, "seconds": {str(size): results[size] for size in sizes}})
        return
    print(f"\nmedian restart time, ratio to the {sizes[0]:,}-record log (aim <= 1.5):")
    ratios = {}
    for part in parts:
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
