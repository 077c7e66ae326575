"""CPU per command of the cluster aggregate's decide + apply (`actors.runtime.handle`: decide,
the commit, its JSON for the size check, the fold, the timer flag), by cluster size.

A cluster holds N members (folded from N MemberSpawnRequested); then members are started one
command at a time as the IaaS and the agents report them (ReportNodeCreated, Started,
Activated: each folds one member event, Activated also checks status and the min rule). The
same measurement runs, in the same invocation, on the code of a git ref (`--baseline-ref`,
default the commit before the fast fold) checked out in a temporary worktree: the ratio is
this code's CPU per command to that code's.

    python bench/fold.py [--members 10 1000 10000] [--baseline-ref 1aa7694]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(members: int, commands: int) -> float:
    """µs of CPU per command on a cluster of `members` members (run inside one code tree)."""
    import itertools
    from datetime import UTC, datetime, timedelta

    from actors import cluster
    from actors.base import Context
    from actors.runtime import Tracked, handle
    from infra.log.kafka import envelope
    from schemas import commands as C
    from schemas import events as E
    from schemas.domain import ClusterSpec, PartitionSpec
    from schemas.records import CommandRecord

    spec = ClusterSpec(
        cluster_id="app.php.php.domain",
        application_id="app",
        alias="php",
        cartridge_type="php",
        min=1,
        max=members + 10,
        autoscaling_policy_id="as",
        deployment_policy_id="dp",
        partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=members + 10)],
    )
    key = "carbon.super/cluster/" + spec.cluster_id
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spawned = [
        E.MemberSpawnRequested(
            member_id=f"php.{n:08d}",
            cluster_id=spec.cluster_id,
            application_id="app",
            cartridge_type="php",
            network_partition_id="np1",
            partition_id="p1",
            provider="mock",
        )
        for n in range(members)
    ]
    state = cluster.fold(cluster.apply(cluster.initial(key), E.ClusterCreated(spec=spec), start), spawned, start)
    tracked = Tracked(state)
    ids = itertools.count()
    started = [m.member_id for m in spawned[: max(1, commands // 3)]]
    work = [
        c
        for mid in started
        for c in (
            C.ReportNodeCreated(member_id=mid, node_id=mid),
            C.ReportInstanceStatus(member_id=mid, status="Started"),
            C.ReportInstanceStatus(member_id=mid, status="Activated"),
        )
    ]
    records = [envelope(CommandRecord, c, key, record_id=f"cmd{n}") for n, c in enumerate(work)]
    cpu = time.process_time()
    for n, record in enumerate(records):
        now = start + timedelta(seconds=n)
        outcome = handle(tracked, record, Context(now=now, new_id=lambda: f"{next(ids):032x}"))
        assert outcome.reply.type == "CommandAccepted", outcome.reply
    return 1e6 * (time.process_time() - cpu) / len(records)


def in_tree(tree: Path, members: list[int], commands: int, repeat: int) -> dict[int, float]:
    """The median of `repeat` runs of `measure` for each size, in a subprocess importing the
    code of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--inner", "--members", *map(str, members), "--commands", str(commands)]
        + ["--repeat", str(repeat)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--commands", type=int, default=900, help="commands timed per size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and code (the median is quoted)")
    parser.add_argument("--baseline-ref", default="1aa7694", help="git ref of the baseline code")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(
            json.dumps(
                {n: statistics.median(measure(n, args.commands) for _ in range(args.repeat)) for n in args.members}
            )
        )
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", str(base), args.baseline_ref], check=True, capture_output=True)
        try:
            before = in_tree(base, args.members, args.commands, args.repeat)
            after = in_tree(ROOT, args.members, args.commands, args.repeat)
        finally:
            subprocess.run([*git, "remove", "--force", str(base)], check=True)
    print(f"CPU per command (decide + apply, handle), baseline {args.baseline_ref} vs this code:")
    for n in args.members:
        print(f"  {n:>6,} members: {before[n]:8.1f} µs -> {after[n]:8.1f} µs  (ratio {after[n] / before[n]:.3f})")
    print(
        json.dumps(
            {
                "bench": "fold",
                "baseline_ref": args.baseline_ref,
                "commands_per_size": args.commands,
                "repeat": args.repeat,
                "us_per_command_before": {str(n): round(before[n], 1) for n in args.members},
                "us_per_command_after": {str(n): round(after[n], 1) for n in args.members},
                "ratio": {str(n): round(after[n] / before[n], 3) for n in args.members},
            }
        )
    )


if __name__ == "__main__":
    main()
