"""Load simulator throughput: N clusters for H simulated hours at S-second steps, through the
platform's real rules (handle/decide/apply, the reactor, the health windows and scaling rules).

Prints simulated seconds per wall second (aim: 24 h of 1,000 clusters in <= 60 s, i.e. >= 1,440x
real time), the ratio to that aim, peak RSS, and where the time goes (cProfile of a slice of the
same setup, same run). Ends with one JSON line.

    python bench/simulate.py                       # 1,000 clusters, 24 h, 15 s
    python bench/simulate.py --clusters 100 --hours 2
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.load_shapes import Noise, Sine  # noqa: E402
from streams.simulation import InstanceModel, LoadSpec, Simulation, SimulationSetup  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "definitions"
AIM_SECONDS = 60.0


def setup_for(clusters: int, hours: float, step: float, seed: int = 1) -> SimulationSetup:
    """`clusters` one-cartridge applications (min 1, max 5), each with a diurnal per-member load
    average (threshold 25) shifted by its index, plus noise: 1 to 3 members each."""

    def j(name: str) -> dict:
        return json.loads((EXAMPLES / name).read_text())

    definitions = [
        ("networkPartition", j("network-partition.json")),
        ("cartridge", j("php.json")),
        ("autoscalingPolicy", {"id": "bench-policy", "loadThresholds": {"loadAverage": {"threshold": 25}}}),
        ("deploymentPolicy", j("deployment-policy-large.json")),
        ("applicationPolicy", j("application-policy.json")),
    ]
    loads = []
    for n in range(clusters):
        definitions.append(
            (
                "application",
                {
                    "applicationId": f"app{n}",
                    "components": {
                        "cartridges": [
                            {
                                "type": "php",
                                "cartridgeMin": 1,
                                "cartridgeMax": 5,
                                "subscribableInfo": {
                                    "alias": f"c{n}",
                                    "autoscalingPolicy": "bench-policy",
                                    "deploymentPolicy": "deployment-policy-large",
                                },
                            }
                        ]
                    },
                },
            )
        )
        loads.append(
            LoadSpec(
                f"c{n}",
                "load_average",
                "per-member",
                (Sine(40.0, 30.0, 86400.0, phase=n * 86400.0 / max(clusters, 1)), Noise(3.0)),
            )
        )
    return SimulationSetup(
        seed=seed,
        duration=hours * 3600,
        step=step,
        definitions=tuple(definitions),
        deploy=tuple((f"app{n}", "application-policy-1") for n in range(clusters)),
        loads=tuple(loads),
        instances=InstanceModel(startup_delay=60, startup_jitter=15),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--step", type=float, default=15.0)
    parser.add_argument("--profile-clusters", type=int, default=50)
    parser.add_argument("--profile-hours", type=float, default=2.0)
    args = parser.parse_args()

    # the profile first (a slice of the same setup), so the peak RSS below is the full run's
    profiler = cProfile.Profile()
    sliced = Simulation(setup_for(args.profile_clusters, args.profile_hours, args.step))
    profiler.enable()
    sliced.run()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = max(row[3] for row in stats.stats.values())
    parts = {}
    for (file, _, name), row in stats.stats.items():
        label = {
            "handle": "actors.runtime.handle (decide, commit, encode, fold)",
            "ingest": "HealthBook.ingest (windows)",
            "decide": None,
            "react": "actors.reactions.react",
            "_sample": "health samples (built + ingested)",
            "model_dump_json": "commit JSON encoding (size check)",
            "fold_commit": "Tracked.fold_commit (apply)",
        }.get(name)
        if name == "decide" and file.endswith("health_state.py"):
            label = "HealthBook.decide (window figures, scaling rules)"
        if label:
            parts[label] = parts.get(label, 0.0) + row[3]

    setup = setup_for(args.clusters, args.hours, args.step)
    simulation = Simulation(setup)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = simulation.run()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    simulated = setup.duration * args.clusters
    rate = setup.duration / wall
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    members = sum(sum(t.supply) for t in result.clusters.values()) / max(setup.steps, 1)
    aim_rate = setup.duration / (AIM_SECONDS * args.clusters / 1000 * args.hours / 24) if args.hours else 0
    print(
        f"{args.clusters} clusters, {args.hours:g} simulated hours at {args.step:g} s steps: {wall:.1f} s wall, "
        f"{cpu:.1f} s CPU ({1e6 * cpu / (args.clusters * setup.steps):.0f} µs CPU per cluster-step; "
        f"the machine is shared, CPU time is the steadier figure)"
    )
    print(
        f"  {rate:,.0f} simulated seconds per wall second ({simulated / wall:,.0f} cluster-seconds/s); "
        f"{result.commands:,} commands handled, mean {members:.0f} Active members"
    )
    print(
        f"  aim {AIM_SECONDS:g} s for 1,000 clusters x 24 h -> {aim_rate:,.0f}x real time here; "
        f"ratio to the aim: {rate / aim_rate:.3f}"
    )
    projected = 1000 * 86400 / (simulated / wall)
    print(f"  at this rate 1,000 clusters x 24 h take {projected:,.0f} s (aim {AIM_SECONDS:g} s)")
    print(f"  peak RSS {rss_mb:.0f} MB")
    print(f"profile of {args.profile_clusters} clusters x {args.profile_hours:g} h (cumulative share of the run):")
    for label, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds / total:6.1%}  {label}")
    print(
        json.dumps(
            {
                "bench": "simulate",
                "clusters": args.clusters,
                "hours": args.hours,
                "step_s": args.step,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "cpu_us_per_cluster_step": round(1e6 * cpu / (args.clusters * setup.steps)),
                "sim_seconds_per_wall_second": round(rate, 1),
                "cluster_seconds_per_wall_second": round(simulated / wall),
                "ratio_to_aim": round(rate / aim_rate, 4),
                "projected_1000x24h_s": round(projected),
                "commands": result.commands,
                "peak_rss_mb": round(rss_mb),
                "profile_share": {k: round(v / total, 3) for k, v in parts.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
