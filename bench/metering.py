"""Metering fold speed: a log of cluster commits (members spawned, activated, terminated, scaling
decisions) folded by actors/metering.py's Meter, against the same commits folded by the cluster
aggregate's own fold alone (`Tracked.fold_commit`, which the Meter runs inside): the ratio is
what metering costs on top of replaying the clusters. Then one usage query over everything.
No broker: the fold is pure. Usage: python bench/metering.py [--clusters C] [--members M]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from common import finish

from actors.metering import Meter, usage
from actors.runtime import Tracked
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import Commit, LogRecord

IAAS = {"mock": {"type": "mock", "property": [{"name": "instanceType", "value": "m1.small"}]}}


def history(clusters: int, members: int) -> list[LogRecord]:
    out = []
    for c in range(clusters):
        spec = ClusterSpec(
            cluster_id=f"app{c}.php1.php.domain",
            application_id=f"app{c}",
            alias="php1",
            cartridge_type="php",
            min=1,
            max=members,
            autoscaling_policy_id="as",
            deployment_policy_id="dp",
            partitions=[PartitionSpec(id="p1", network_partition_id="np", provider="mock", max=members)],
            iaas=IAAS,
        )
        key, seq, at = f"t{c % 10}.org/cluster/{spec.cluster_id}", 1, 1_000_000.0

        def add(events, key=key):
            nonlocal seq, at
            at += 1.0
            out.append(
                LogRecord(
                    id=f"{key}:{seq}",
                    type="Commit",
                    aggregate_id=key,
                    aggregate_seq=seq,
                    occurred_at=datetime.fromtimestamp(at, UTC),
                    tenant=key.split("/")[0],
                    causation_id=f"{key}:cmd:{seq}",
                    payload=Commit(command_type="X", outcome="accepted", events=events),
                )
            )
            seq += len(events)

        add([E.ClusterCreated(spec=spec)])
        for m in range(members):
            ids = dict(member_id=f"php1.m{m}", cluster_id=spec.cluster_id)
            add(
                [
                    E.ScalingDecided(
                        required=m + 1,
                        active=m,
                        pending=0,
                        spawn=1,
                        terminate=0,
                        scale_down_requests=0,
                        reason="ScaleUp",
                        metric="load",
                    ),
                    E.MemberSpawnRequested(
                        **ids,
                        application_id=spec.application_id,
                        cartridge_type="php",
                        network_partition_id="np",
                        partition_id="p1",
                        provider="mock",
                    ),
                ]
            )
            add([E.MemberInitialized(**ids, node_id=ids["member_id"])])
            add([E.MemberStarting(**ids)])
            add([E.MemberActivated(**ids)])
        for m in range(members):
            add([E.MemberTerminated(member_id=f"php1.m{m}", cluster_id=spec.cluster_id)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    commits = history(args.clusters, args.members)
    events = sum(len(c.payload.events) for c in commits)

    def cluster_fold() -> None:
        tracked: dict[str, Tracked] = {}
        for commit in commits:
            found = tracked.get(commit.aggregate_id) or tracked.setdefault(
                commit.aggregate_id, Tracked.new(commit.aggregate_id)
            )
            found.fold_commit(commit)

    def metering_fold() -> Meter:
        made = Meter()
        for commit in commits:
            made.fold(commit)
        return made

    baselines, metered_runs = [], []
    for _ in range(args.rounds):  # alternated, best of each: the machine is shared
        started = time.perf_counter()
        cluster_fold()
        baselines.append(time.perf_counter() - started)
        started = time.perf_counter()
        meter = metering_fold()
        metered_runs.append(time.perf_counter() - started)
    baseline, metered = min(baselines), min(metered_runs)

    started = time.perf_counter()
    rows = sum(len(usage(meter, f"t{t}.org", 0, 2_000_000)) for t in range(10))
    query = time.perf_counter() - started

    print(f"log: {len(commits):,} commits, {events:,} events, {args.clusters * args.members:,} members")
    print(f"cluster fold alone (baseline): {len(commits) / baseline:>10,.0f} commits/s (best of {args.rounds})")
    print(f"metering fold:                 {len(commits) / metered:>10,.0f} commits/s")
    print(f"ratio metering / baseline:     {baseline / metered:.3f}")
    print(f"usage of 10 tenants ({rows} rows, {len(meter.intervals):,} intervals): {query * 1000:.1f} ms")
    finish(
        {
            "bench": "metering",
            "commits": len(commits),
            "events": events,
            "baseline_commits_per_s": round(len(commits) / baseline),
            "metering_commits_per_s": round(len(commits) / metered),
            "ratio": round(baseline / metered, 3),
            "usage_query_ms": round(query * 1000, 1),
        }
    )


if __name__ == "__main__":
    main()
