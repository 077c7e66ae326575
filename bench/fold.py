"""CPU per command of the cluster aggregate's decide + apply (`actors.runtime.handle`: decide,
the commit, its JSON for the size check, the fold, the timer flag), by cluster size.

Also a cold fold of one cluster's history (decode alone, decode + fold), without the broker.

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
import gc
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


def replay_rates(rounds: int, repeat: int) -> dict[str, float]:
    """A cold rebuild's fold without the broker: one cluster's commits (bench/replay.py's
    template: 10 members replaced round after round) read as the log is read (`decode_log`),
    decoded alone and decoded then folded as a rebuild folds them; events/s of each (medians)."""
    import inspect

    from replay import template_history

    from actors.runtime import Tracked
    from infra.log.eventlog import decode_log

    commits, events = template_history(rounds)
    key = decode_log(commits[0]).aggregate_id
    owned = {"in_place": True} if "in_place" in inspect.signature(Tracked.fold_commit).parameters else {}

    def decode() -> None:
        for value in commits:
            decode_log(value)

    def rebuild() -> None:
        tracked = Tracked.new(key)
        for value in commits:
            tracked.fold_commit(decode_log(value), **owned)

    rates = {}
    gc.disable()  # as infra.log.recovery pauses the collector during a rebuild
    try:
        for name, run in (("decode", decode), ("rebuild", rebuild)):
            times = []
            for _ in range(repeat):
                cpu = time.process_time()
                run()
                times.append(time.process_time() - cpu)
            rates[name] = events / statistics.median(times)
    finally:
        gc.enable()
    return rates


def in_tree(tree: Path, members: list[int], commands: int, repeat: int, rounds: int) -> dict:
    """The medians of `repeat` runs of `measure` for each size and of `replay_rates`, in a
    subprocess importing the code of `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--inner", "--members", *map(str, members), "--commands", str(commands)]
        + ["--repeat", str(repeat), "--rounds", str(rounds)],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = json.loads(out.strip().splitlines()[-1])
    return {"per_command": {int(k): v for k, v in found["per_command"].items()}, "replay": found["replay"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--commands", type=int, default=900, help="commands timed per size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and code (the median is quoted)")
    parser.add_argument("--baseline-ref", default="1aa7694", help="git ref of the baseline code")
    parser.add_argument("--rounds", type=int, default=12, help="rounds of the replayed history (bench/replay.py)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        sys.path.insert(0, str(Path.cwd() / "bench"))
        per_command = {
            n: statistics.median(measure(n, args.commands) for _ in range(args.repeat)) for n in args.members
        }
        print(json.dumps({"per_command": per_command, "replay": replay_rates(args.rounds, args.repeat)}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", str(base), args.baseline_ref], check=True, capture_output=True)
        try:
            old = in_tree(base, args.members, args.commands, args.repeat, args.rounds)
            new = in_tree(ROOT, args.members, args.commands, args.repeat, args.rounds)
        finally:
            subprocess.run([*git, "remove", "--force", str(base)], check=True)
    before, after = old["per_command"], new["per_command"]
    print(f"CPU per command (decide + apply, handle), baseline {args.baseline_ref} vs this code:")
    for n in args.members:
        print(f"  {n:>6,} members: {before[n]:8.1f} µs -> {after[n]:8.1f} µs  (ratio {after[n] / before[n]:.3f})")
    print("cold fold of one cluster's commits, no broker (events/s of CPU; rebuild = decode + fold):")
    for name, rates in (("baseline", old["replay"]), ("this code", new["replay"])):
        print(
            f"  {name:>9}: decode {rates['decode']:,.0f}/s, rebuild {rates['rebuild']:,.0f}/s "
            f"(ratio to decode {rates['rebuild'] / rates['decode']:.2f})"
        )
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
                "replay_before": {k: round(v) for k, v in old["replay"].items()},
                "replay_after": {k: round(v) for k, v in new["replay"].items()},
                "replay_rebuild_ratio_to_decode_before": round(old["replay"]["rebuild"] / old["replay"]["decode"], 3),
                "replay_rebuild_ratio_to_decode_after": round(new["replay"]["rebuild"] / new["replay"]["decode"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
