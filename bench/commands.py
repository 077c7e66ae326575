"""Command latency through one node holding 10,000 members (1,000 clusters of 10).

A `stratos node` process owns every partition. After the clusters are created, commands
(the member lifecycle facts the cloud controller and agents report) are sent at a steady
rate. Each command is timed from its record's timestamp (set when the sender appended it) to
the timestamp of its commit (the one record of the events topic whose causation_id is the
command id, set when the node appended it): both clocks are this machine's, and no reader's
lag enters the figure. Prints p50/p99, the node's CPU per command (psutil) and peak RSS; one
JSON line. With --baseline DIR (a `git worktree add DIR <commit>`), the node of that code is
measured first (its own bench/commands.py, whose client speaks that code's schemas) on the same
broker, and the ratios after/before are printed.
Usage: python bench/commands.py [--clusters 1000] [--rate 1000] [--seconds 30] [--baseline DIR]
  [--node-profile FILE]   (runs the node under cProfile and prints where its time went)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from common import ROOT, bench_settings, finish, percentile

from actors.history import events_of
from infra.log.commands_client import CommandClient
from infra.log.eventlog import History
from infra.log.kafka import assigned_consumer, envelope, read_to_end
from schemas import commands as C
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import CommandRecord


def spec(n: int) -> ClusterSpec:
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


class EventWatcher:
    """Which commands have been committed yet, and the member ids spawned (history only)."""

    def __init__(self, settings) -> None:
        self.consumer = assigned_consumer(settings, "events", from_beginning=True)
        self.history = History.of(settings)
        self.first_event_at: dict[str, float] = {}
        self.members: dict[str, list[str]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            for raws in self.consumer.poll(timeout_ms=50).values():
                now = time.perf_counter()
                for raw in raws:
                    commit = self.history.commit(raw)
                    if commit is None:
                        continue
                    self.first_event_at.setdefault(commit.causation_id, now)
                    for event in events_of(commit):
                        if event.type == "MemberSpawnRequested":
                            self.members.setdefault(event.aggregate_id, []).append(event.payload.member_id)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.consumer.close()


def append_to_commit_ms(settings, command_ids: set[str]) -> list[tuple[int, float]]:
    """For each command, its record's timestamp and the ms from there to its commit's."""
    appended = {}
    for raw in read_to_end(settings, "commands", decode_records=False):
        record = CommandRecord.model_validate_json(raw.value)
        if record.id in command_ids:
            appended[record.id] = raw.timestamp
    committed = {}
    history = History.of(settings)
    for raw in read_to_end(settings, "events", decode_records=False):
        commit = history.commit(raw)
        if commit is not None and commit.causation_id in appended:
            committed.setdefault(commit.causation_id, raw.timestamp)
    return [(t, float(committed[c] - t)) for c, t in appended.items() if c in committed]


def worst_seconds(timed: list[tuple[int, float]], count: int = 3) -> list[tuple[float, float]]:
    """(second of the run, worst latency ms) of the seconds with the worst latencies."""
    if not timed:
        return []
    start = min(t for t, _ in timed)
    worst: dict[int, float] = {}
    for t, latency in timed:
        second = (t - start) // 1000
        worst[second] = max(worst.get(second, 0.0), latency)
    return sorted(worst.items(), key=lambda item: -item[1])[:count]


def measure(settings, args, code: Path) -> dict:
    """One run: a node from the code tree `code` (its own topics), the clusters created, then
    the facts sent at the rate; the node's figures."""
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(Path(settings.state_dir).resolve()),
        "STRATOS_LOG_LEVEL": "WARNING",
    }
    profile = ["-m", "cProfile", "-o", args.node_profile] if args.node_profile else []
    node = subprocess.Popen([sys.executable, *profile, "-m", "infra.cli", "node"], env=env, cwd=code)
    client = CommandClient(settings)
    watcher = EventWatcher(settings)
    try:
        created = [
            client.send(f"carbon.super/cluster/{spec(n).cluster_id}", C.CreateCluster(spec=spec(n)))
            for n in range(args.clusters)
        ]
        deadline = time.monotonic() + 300
        while sum(len(m) for m in watcher.members.values()) < args.clusters * 10:
            if time.monotonic() > deadline or node.poll() is not None:
                raise SystemExit("the clusters were not created in time")
            time.sleep(0.1)
        print(f"{args.clusters} clusters with {args.clusters * 10} members created ({len(created)} commands)")
        facts = [
            (cluster, C.ReportNodeCreated(member_id=m, node_id=m))
            for cluster, ms in watcher.members.items()
            for m in ms
        ]
        facts += [
            (cluster, C.ReportInstanceStatus(member_id=m, status="Started"))
            for cluster, ms in watcher.members.items()
            for m in ms
        ]
        facts += [
            (cluster, C.ReportInstanceStatus(member_id=m, status="Activated"))
            for cluster, ms in watcher.members.items()
            for m in ms
        ]
        total = min(len(facts), args.rate * args.seconds)
        acked_at: dict[str, float] = {}  # command id -> when the broker acknowledged it
        started = time.perf_counter()
        node_process = psutil.Process(node.pid)
        rss_mb = 0.0
        cpu_before = sum(node_process.cpu_times()[:2])
        for n, (cluster, command) in enumerate(facts[:total]):
            due = started + n / args.rate
            while (pause := due - time.perf_counter()) > 0:
                time.sleep(pause)
            record = envelope(CommandRecord, command, cluster)
            future = client.appender.send("commands", cluster, record)
            future.add_callback(lambda _meta, cid=record.id: acked_at.__setitem__(cid, time.perf_counter()))
            if n % args.rate == 0:
                rss_mb = max(rss_mb, node_process.memory_info().rss / 2**20)
        client.appender.flush()
        sent_s = time.perf_counter() - started
        deadline = time.monotonic() + 300
        while len([c for c in acked_at if c in watcher.first_event_at]) < total and time.monotonic() < deadline:
            time.sleep(0.2)
            rss_mb = max(rss_mb, node_process.memory_info().rss / 2**20)
        node_cpu_s = sum(node_process.cpu_times()[:2]) - cpu_before
        busy_s = time.perf_counter() - started
        load = os.getloadavg()[0]
        timed = append_to_commit_ms(settings, set(acked_at))
        latencies = [latency for _, latency in timed]
    finally:
        watcher.stop()
        client.close()
        node.terminate()
        node.wait(15)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    print(f"{total} commands in {sent_s:.1f}s ({total / sent_s:,.0f}/s), {len(latencies)} committed")
    print(f"command appended -> its commit appended: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(
        "worst seconds (second of the run: worst ms): "
        + ", ".join(f"{second}: {ms:.0f}" for second, ms in worst_seconds(timed))
    )
    print(f"node RSS: {rss_mb:.0f} MB (peak sampled)")
    print(
        f"node CPU: {node_cpu_s / total * 1000:.3f} ms per command, {node_cpu_s / busy_s:.0%} of a core over "
        f"{busy_s:.0f}s; host load average {load:.1f} on {os.cpu_count()} cores"
    )
    if args.node_profile:
        import pstats

        pstats.Stats(args.node_profile).sort_stats("tottime").print_stats(20)
    return {
        "commands": total,
        "committed": len(latencies),
        "rate_per_s": round(total / sent_s),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "rss_mb": round(rss_mb),
        "node_cpu_ms_per_command": round(node_cpu_s / total * 1000, 3),
        "load_average": round(load, 2),
    }


def measure_baseline(settings, args) -> dict:
    """The earlier checkout's own benchmark (its client speaks that code's schemas), on this
    broker with topics of its own; its closing JSON line."""
    code = args.baseline.resolve()
    env = {**os.environ, "PYTHONPATH": str(code), "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    run = [sys.executable, str(code / "bench" / "commands.py"), "--clusters", str(args.clusters)]
    run += ["--rate", str(args.rate), "--seconds", str(args.seconds)]
    out = subprocess.run(run, env=env, cwd=code, capture_output=True, text=True, check=True)
    print("\n".join(line for line in out.stdout.splitlines()[:-1]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of earlier code (git worktree add DIR COMMIT): its node is measured first, same broker",
    )
    parser.add_argument("--node-profile", help="run the node under cProfile, writing this file")
    args = parser.parse_args()
    figures = {}
    with bench_settings() as settings:
        if args.baseline:
            print(f"== before: {args.baseline}'s own bench/commands.py and node, same broker")
            figures["before"] = measure_baseline(settings, args)
        print(f"== after: the node of {ROOT}")
        figures["after"] = measure(settings, args, ROOT)
    result = {"bench": "commands", **figures["after"]}
    if "before" in figures:
        before, after = figures["before"], figures["after"]
        for key in ("p50_ms", "p99_ms", "node_cpu_ms_per_command"):
            result[f"{key}_before"] = before[key]
            result[f"{key}_ratio"] = round(after[key] / before[key], 3) if before[key] else None
        print(
            "after / before: "
            + ", ".join(f"{k} {result[f'{k}_ratio']}" for k in ("p50_ms", "p99_ms", "node_cpu_ms_per_command"))
        )
    finish(result)


if __name__ == "__main__":
    main()
