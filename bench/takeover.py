"""Takeover: how long until another node answers for the aggregates of a node that stopped.

Three `stratos node` processes share the command partitions (one consumer group) on one
embedded broker; clusters are spread over the partitions. In each trial one node is stopped,
with SIGTERM (it leaves the group) or kill -9 (the group notices after its session timeout,
6 s), and a command to one of its aggregates is sent at once: the figure is the time from the
signal to that command's reply (on `<prefix>replies`, causation = the command id) written by
another node (the commit's writer says which). A fresh node then takes the stopped one's place
before the next trial. At the end the history is read: every command sent must appear in
exactly one commit (none lost, none applied twice). Medians of 5 trials each.
Usage: python bench/takeover.py [--trials 5] [--clusters 30] [--partitions 6]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from common import bench_settings, finish, median, start_node

from infra.log.commands_client import CommandClient
from infra.log.eventlog import History, decode_log, read_history
from infra.log.kafka import read_to_end
from infra.node.node import partition_for
from schemas import commands as C
from schemas.domain import ClusterSpec, PartitionSpec

SESSION_TIMEOUT_S = 6.0


def spec(n: int) -> ClusterSpec:
    return ClusterSpec(
        cluster_id=f"app{n}.php.php.domain",
        application_id=f"app{n}",
        alias="php",
        cartridge_type="php",
        min=1,
        max=4,
        autoscaling_policy_id="as",
        deployment_policy_id="dp",
        partitions=[PartitionSpec(id="p1", network_partition_id="np", provider="mock", max=4)],
    )


def writer_pid(writer: str | None) -> int | None:
    """A node's writer id is `<host>:<pid>:<suffix>`."""
    try:
        return int((writer or "").split(":")[1])
    except (IndexError, ValueError):
        return None


class Log:
    """The events topic followed from the start: the claim in force per partition (whose pid)
    and the writer of each command's commit."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.owner: dict[int, int | None] = {}
        self.claims: dict[int, list[tuple[float, int | None]]] = {}
        """partition -> (record timestamp in epoch seconds, claimant pid) of every Claim"""
        self.writers: dict[str, list[int | None]] = {}
        self.history = History.of(settings)
        self.read_upto: dict[int, int] = {}

    def refresh(self) -> None:
        for raw in read_to_end(self.settings, "events", decode_records=False):
            if raw.offset < self.read_upto.get(raw.partition, 0):
                continue
            self.read_upto[raw.partition] = raw.offset + 1
            record = decode_log(raw.value)
            if record.payload.type == "Claim":
                self.owner[raw.partition] = writer_pid(record.payload.writer)
                self.claims.setdefault(raw.partition, []).append(
                    (raw.timestamp / 1000, writer_pid(record.payload.writer))
                )
            commit = self.history.commit(raw)
            if commit is not None and commit.causation_id:
                self.writers.setdefault(commit.causation_id, []).append(writer_pid(commit.payload.writer))


class Cluster:
    """The node processes and what the log says about them."""

    def __init__(self, settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.nodes: dict[int, subprocess.Popen] = {}
        self.started = 0

    def start(self) -> int:
        self.started += 1
        node = start_node(self.settings, self.logs / f"node{self.started}.log")
        self.nodes[node.pid] = node
        return node.pid

    def live(self) -> set[int]:
        return {pid for pid, node in self.nodes.items() if node.poll() is None}

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.poll() is None:
                node.terminate()
        for node in self.nodes.values():
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()


def wait_settled(
    cluster: Cluster, log: Log, client: CommandClient, probes: dict[int, str], sent: list[str], timeout: float = 120.0
) -> None:
    """Every partition claimed by a live node, every live node holding one, and a command to
    one aggregate per partition answered."""
    deadline = time.monotonic() + timeout
    while True:
        log.refresh()
        live = cluster.live()
        owners = {log.owner.get(p) for p in range(cluster.settings.partitions)}
        if owners == live and len(live) == 3:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"not settled: owners {log.owner}, live nodes {sorted(live)}")
        time.sleep(0.3)
    for partition, aggregate in probes.items():
        command_id = client.send(aggregate, C.CheckTimeouts())
        sent.append(command_id)
        if client.wait(command_id, timeout=60) is None:
            raise SystemExit(f"probe to partition {partition} not answered")


def trial(
    cluster: Cluster, log: Log, client: CommandClient, probes: dict[int, str], sent: list[str], how: signal.Signals
) -> tuple[float, float, float, bool]:
    """Stop the node owning the first probe's partition: seconds from the signal to a reply
    written by another node, seconds until the stopped process was gone, and whether it
    answered the first command itself (a node drains its last poll before it leaves)."""
    log.refresh()
    partition = next(p for p in probes if log.owner.get(p) in cluster.live())
    victim = log.owner[partition]
    aggregate = probes[partition]
    gone: list[float] = []
    watcher = threading.Thread(target=lambda: (cluster.nodes[victim].wait(), gone.append(time.monotonic())))
    signalled, signalled_at = time.monotonic(), time.time()
    os.kill(victim, how)
    watcher.start()
    command_id = _probe(client, aggregate, sent, f"within 60 s after {how.name}")
    answered = time.monotonic() - signalled
    log.refresh()
    by_victim = victim in log.writers.get(command_id, [])
    if by_victim:  # it handled the command before it stopped: ask again once it is gone
        cluster.nodes[victim].wait(30)
        command_id = _probe(client, aggregate, sent, "after the node stopped")
        answered = time.monotonic() - signalled
        log.refresh()
        if victim in log.writers.get(command_id, []):
            raise SystemExit("a stopped node answered")
    watcher.join(30)
    log.refresh()
    claimed = min(
        (at - signalled_at for at, pid in log.claims.get(partition, []) if at >= signalled_at and pid != victim),
        default=float("nan"),
    )
    return answered, (gone[0] - signalled) if gone else float("nan"), claimed, by_victim


def _probe(client, aggregate: str, sent: list[str], when: str) -> str:
    """Send one command to the aggregate and wait for its reply; returns its id."""
    command_id = client.send(aggregate, C.CheckTimeouts())
    sent.append(command_id)
    if client.wait(command_id, timeout=60) is None:
        raise SystemExit(f"no reply to {command_id} {when}")
    return command_id


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--clusters", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"SIGTERM": [], "SIGKILL": []}
    exits: dict[str, list[float]] = {"SIGTERM": [], "SIGKILL": []}
    claims: dict[str, list[float]] = {"SIGTERM": [], "SIGKILL": []}
    self_answered = Counter()
    sent: list[str] = []
    with bench_settings(partitions=args.partitions) as settings, tempfile.TemporaryDirectory(prefix="takeover") as logs:
        cluster, log, client = Cluster(settings, Path(logs)), Log(settings), CommandClient(settings)
        try:
            for _ in range(3):
                cluster.start()
            aggregates = [f"carbon.super/cluster/{spec(n).cluster_id}" for n in range(args.clusters)]
            probes = {}
            for aggregate in aggregates:
                probes.setdefault(partition_for(aggregate, settings.partitions), aggregate)
            if len(probes) < settings.partitions:
                raise SystemExit(f"{args.clusters} clusters do not cover {settings.partitions} partitions")
            wait_settled(cluster, log, client, {}, sent)
            for n, aggregate in enumerate(aggregates):
                command_id = client.send(aggregate, C.CreateCluster(spec=spec(n)))
                sent.append(command_id)
                if client.wait(command_id, timeout=60) is None:
                    raise SystemExit(f"CreateCluster for {aggregate} not answered")
            print(f"3 nodes, {settings.partitions} partitions, {args.clusters} clusters created")
            for how in [signal.SIGTERM] * args.trials + [signal.SIGKILL] * args.trials:
                wait_settled(cluster, log, client, probes, sent)
                answered, exited, claimed, by_victim = trial(cluster, log, client, probes, sent, how)
                results[how.name].append(answered)
                exits[how.name].append(exited)
                claims[how.name].append(claimed)
                self_answered[how.name] += by_victim
                print(
                    f"  {how.name}: answered by another node after {answered:.2f}s (process gone after "
                    f"{exited:.2f}s, partition claimed by another node after {claimed:.2f}s)"
                    + ("; the stopped node answered the first command before leaving" if by_victim else "")
                )
                cluster.start()
            wait_settled(cluster, log, client, probes, sent)
        except BaseException:
            for path in sorted(Path(logs).glob("node*.log")):
                print(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            raise
        finally:
            client.close()
            cluster.stop_all()
        commits = Counter(commit.causation_id for _p, _o, commit in read_history(settings))
    lost = [c for c in sent if commits[c] == 0]
    twice = [c for c in sent if commits[c] > 1]
    term, kill = median(results["SIGTERM"]), median(results["SIGKILL"])
    print(
        f"SIGTERM: median {term:.2f}s over {len(results['SIGTERM'])} trials "
        f"(max {max(results['SIGTERM']):.2f}s; the node exited after a median {median(exits['SIGTERM']):.2f}s, "
        f"its partition was claimed after {median(claims['SIGTERM']):.2f}s)"
    )
    print(
        f"kill -9: median {kill:.2f}s over {len(results['SIGKILL'])} trials "
        f"(max {max(results['SIGKILL']):.2f}s; claimed after {median(claims['SIGKILL']):.2f}s; "
        f"expected within session timeout {SESSION_TIMEOUT_S:g}s + 5s; "
        f"ratio to that {kill / (SESSION_TIMEOUT_S + 5):.2f})"
    )
    print(f"commands sent {len(sent)}: {len(lost)} lost, {len(twice)} in more than one commit")
    finish(
        {
            "bench": "takeover",
            "trials": args.trials,
            "partitions": settings.partitions,
            "sigterm_median_s": round(term, 3),
            "sigterm_max_s": round(max(results["SIGTERM"]), 3),
            "sigterm_exit_median_s": round(median(exits["SIGTERM"]), 3),
            "sigterm_claim_median_s": round(median(claims["SIGTERM"]), 3),
            "sigkill_claim_median_s": round(median(claims["SIGKILL"]), 3),
            "sigkill_median_s": round(kill, 3),
            "sigkill_max_s": round(max(results["SIGKILL"]), 3),
            "answered_by_stopping_node": dict(self_answered),
            "commands": len(sent),
            "lost": len(lost),
            "applied_twice": len(twice),
        }
    )
    if lost or twice:
        raise SystemExit(f"lost {lost[:5]}, in several commits {twice[:5]}")


if __name__ == "__main__":
    main()
