"""The node's actors in its own process (thespian simpleSystemBase) or each in a process of its
own (multiprocTCPBase): what a poll batch costs either way, no broker involved.

Each base runs in a fresh interpreter: the node's ActorHost creates one actor per aggregate
(network partitions), then hands them `--rounds` poll batches of one command per aggregate
(the node's `ActorHost.handle`: every batch told, then every answer awaited). Prints, per
base, the time to create the actors, wall and CPU (all processes of the run) per command, the
number of processes and their memory (USS, so memory shared after fork counts once), and the
ratios multiproc / simple measured in the same run; one JSON line.
Usage: python bench/actor_bases.py [--aggregates 20] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import psutil
from common import ROOT, finish

BASES = ("simpleSystemBase", "multiprocTCPBase")


def run_one(base: str, aggregates: int, rounds: int) -> dict:
    """In this process: the figures of one base."""
    from datetime import UTC, datetime

    from actors.base import Context
    from infra.log.kafka import envelope, new_id
    from infra.node.node import ActorHost, timeouts_from
    from infra.settings import Settings
    from schemas import commands as C
    from schemas.definitions import NetworkPartition
    from schemas.ids import aggregate_id
    from schemas.records import CommandRecord

    def np_command(n: int, description: str) -> tuple[str, CommandRecord]:
        target = aggregate_id("carbon.super", "networkPartition", f"np{n}")
        body = {"id": f"np{n}", "provider": "mock", "partitions": [{"id": "p1", "description": description}]}
        kind = C.AddNetworkPartition if description == "" else C.UpdateNetworkPartition
        return target, envelope(CommandRecord, kind(definition=NetworkPartition.model_validate(body)), target)

    timeouts = timeouts_from(Settings())
    ctx = Context(now=datetime.now(UTC), new_id=new_id, timeouts=timeouts)
    me = psutil.Process()

    def processes() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == me.cmdline()]

    started = time.perf_counter()
    host = ActorHost(base, timer_seconds=60)
    host.handle({t: ([c], ctx) for t, c in (np_command(n, "") for n in range(aggregates))}, timeouts)
    created_s = time.perf_counter() - started
    batches = [{t: ([c], ctx) for t, c in (np_command(n, f"r{r}") for n in range(aggregates))} for r in range(rounds)]
    running = processes()
    cpu_before = sum(sum(p.cpu_times()[:2]) for p in running)
    started = time.perf_counter()
    for batch in batches:
        host.handle(batch, timeouts)
    wall_s = time.perf_counter() - started
    cpu_s = sum(sum(p.cpu_times()[:2]) for p in running) - cpu_before
    uss_mb = sum(p.memory_full_info().uss for p in running) / 2**20
    host.shutdown()
    commands = aggregates * rounds
    return {
        "base": base,
        "actors_created_s": round(created_s, 3),
        "wall_ms_per_command": round(wall_s / commands * 1000, 3),
        "cpu_ms_per_command": round(cpu_s / commands * 1000, 3),
        "processes": len(running),
        "memory_mb": round(uss_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aggregates", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--one", choices=BASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.aggregates, args.rounds)))
        return
    figures = {}
    for base in BASES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                base,
                "--aggregates",
                str(args.aggregates),
                "--rounds",
                str(args.rounds),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        figures[base] = json.loads(out.stdout.strip().splitlines()[-1])
        f = figures[base]
        print(
            f"{base}: {args.aggregates} actors created in {f['actors_created_s']:.2f}s; per command "
            f"{f['wall_ms_per_command']:.3f} ms wall, {f['cpu_ms_per_command']:.3f} ms CPU; "
            f"{f['processes']} processes, {f['memory_mb']} MB"
        )
    simple, multi = figures["simpleSystemBase"], figures["multiprocTCPBase"]
    ratios = {
        key: round(multi[key] / simple[key], 2) if simple[key] else None
        for key in ("actors_created_s", "wall_ms_per_command", "cpu_ms_per_command", "memory_mb")
    }
    print("multiproc / simple: " + ", ".join(f"{k} {v}" for k, v in ratios.items()))
    print(f"host load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores (shared machine)")
    finish(
        {
            "bench": "actor_bases",
            "aggregates": args.aggregates,
            "rounds": args.rounds,
            "simple": simple,
            "multiproc": multi,
            "ratio": ratios,
            "load_average": round(psutil.getloadavg()[0], 2),
        }
    )


if __name__ == "__main__":
    main()
