"""Broker loss: how long commands stall when one Kafka broker of three dies (kill -9).

Each run starts three brokers (replication factor 3, min.insync.replicas 2) and one `stratos
node` process, warms up for 5 s, then sends commands at a steady rate, each send waiting for
the broker's ack. A third of the way in, one broker is killed: a plain broker in the second
run, the active controller in the third (a new KRaft leader must be elected before the dead
broker is fenced). The first run kills nothing: the baseline. A command's latency runs from its
send to its reply; the figures are the longest latency (the stall), the time from the kill to
the first reply to a command sent after it, p50/p99 of the commands sent before and after the
kill point, and the ratio of the stall to the baseline's longest. Every command must be
answered and appear in exactly one commit.
Usage: python bench/broker_loss.py [--commands 300] [--rate 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import finish, percentile, start_node

from infra.broker import EmbeddedBroker, stop_process
from infra.log.commands_client import CommandClient
from infra.log.eventlog import read_history
from infra.log.kafka import ensure_topics
from infra.settings import Settings
from tests.test_broker_faults import network_partition

REPLY_WAIT_S = 120.0
WARM_UP_S = 5.0


class TimedClient(CommandClient):
    """A command client that notes when each reply arrives (its reader thread's clock)."""

    def __init__(self, settings: Settings) -> None:
        self.arrived_at: dict[str, float] = {}
        super().__init__(settings)

    def _arrived(self, command_id, reply) -> None:
        self.arrived_at.setdefault(command_id, time.monotonic())
        super()._arrived(command_id, reply)


def paced(count: int, rate: float):
    """0, 1, ... count-1, one every 1 / rate seconds. A send that blocks longer is followed at
    once by the next and the pace resumes: no burst to catch up with the schedule."""
    interval, next_at = 1 / rate, time.monotonic()
    for n in range(count):
        time.sleep(max(0.0, next_at - time.monotonic()))
        yield n
        next_at = max(next_at + interval, time.monotonic())


def await_replies(client: TimedClient, command_ids: list[str]) -> None:
    """Until every command is answered, or REPLY_WAIT_S have passed (the caller counts)."""
    deadline = time.monotonic() + REPLY_WAIT_S
    while any(c not in client.arrived_at for c in command_ids) and time.monotonic() < deadline:
        time.sleep(0.1)


def run(victim: str | None, commands: int, rate: float, work: Path) -> dict:
    """One run on a fresh three-broker cluster; `victim` is None, "broker" or "controller".
    The warm-up, at the same rate, is not measured (the JVMs are still compiling then)."""
    with EmbeddedBroker(brokers=3, data_dir=work / "kafka") as cluster:
        settings = Settings(
            kafka_bootstrap=cluster.bootstrap,
            topic_prefix="bench.",
            partitions=4,
            replication_factor=3,
            state_dir=work / "state",
        )
        ensure_topics(settings)
        node = start_node(settings, work / "node.log")
        client = TimedClient(settings)
        try:
            warm_up = [client.send(*network_partition(commands + n)) for n in paced(int(WARM_UP_S * rate), rate)]
            await_replies(client, warm_up)
            if any(c not in client.arrived_at for c in warm_up):
                raise SystemExit("the node did not answer the warm-up")
            kill_at = commands // 3
            sent: list[tuple[str, float]] = []
            killed, killed_at = None, None
            for n in paced(commands, rate):
                if n == kill_at:
                    killed_at = time.monotonic()
                    if victim is not None:
                        controller = cluster.active_controller()
                        killed = (
                            controller
                            if victim == "controller"
                            else next(b.node_id for b in cluster.nodes if b.node_id != controller)
                        )
                        cluster.kill(killed)
                sent_at = time.monotonic()
                sent.append((client.send(*network_partition(n)), sent_at))
            await_replies(client, [c for c, _ in sent])
            controller_after = cluster.active_controller()
        finally:
            client.close()
            stop_process(node, 30)
        commits = Counter(commit.causation_id for _p, _o, commit in read_history(settings))
    latency = {c: client.arrived_at[c] - at for c, at in sent if c in client.arrived_at}
    before = [latency[c] for c, _ in sent[:kill_at] if c in latency]
    after = [latency[c] for c, _ in sent[kill_at:] if c in latency]
    replies_after_kill = [client.arrived_at[c] for c, _ in sent[kill_at:] if c in latency]
    return {
        "killed_node": killed,
        "controller_after": controller_after if victim else None,
        "max_latency_s": round(max(latency.values()), 3),
        "first_reply_after_kill_s": round(min(replies_after_kill) - killed_at, 3),
        "p50_before_ms": round(percentile(before, 0.5) * 1000, 1),
        "p99_before_ms": round(percentile(before, 0.99) * 1000, 1),
        "p50_after_ms": round(percentile(after, 0.5) * 1000, 1),
        "p99_after_ms": round(percentile(after, 0.99) * 1000, 1),
        "unanswered": len(sent) - len(latency),
        "lost": sum(commits[c] == 0 for c, _ in sent),
        "applied_twice": sum(commits[c] > 1 for c, _ in sent),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="commands per second")
    args = parser.parse_args()
    results = {}
    for name, victim in (("baseline", None), ("plain_broker", "broker"), ("controller", "controller")):
        with tempfile.TemporaryDirectory(prefix=f"broker-loss-{name}-") as work:
            try:
                result = results[name] = run(victim, args.commands, args.rate, Path(work))
            except BaseException:
                print((Path(work) / "node.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
        what = (
            "no broker killed"
            if victim is None
            else f"node {result['killed_node']} ({victim}) killed, controller then node {result['controller_after']}"
        )
        print(
            f"{name}: {what}: longest send-to-reply {result['max_latency_s']:.2f}s, first reply to a command "
            f"sent from the kill point on after {result['first_reply_after_kill_s']}s; p50/p99 before "
            f"{result['p50_before_ms']}/{result['p99_before_ms']} ms, after {result['p50_after_ms']}/"
            f"{result['p99_after_ms']} ms; unanswered {result['unanswered']}, lost {result['lost']}, "
            f"in more than one commit {result['applied_twice']}"
        )
    baseline_max = results["baseline"]["max_latency_s"]
    for name in ("plain_broker", "controller"):
        results[name]["stall_ratio_to_baseline_max"] = round(results[name]["max_latency_s"] / baseline_max, 1)
    finish({"bench": "broker_loss", "commands": args.commands, "rate_per_s": args.rate, **results})
    if any(r["unanswered"] or r["lost"] or r["applied_twice"] for r in results.values()):
        raise SystemExit("commands unanswered, lost or applied twice")


if __name__ == "__main__":
    main()
