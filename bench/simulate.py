"""Load simulator throughput: N clusters for H simulated hours at S-second steps, through the
platform's real rules (handle/decide/apply, the reactor, the health windows and scaling rules).

Prints simulated seconds per wall second (aim: 24 h of 1,000 clusters in <= 60 s, i.e. >= 1,440x
real time), the ratio to that aim, peak RSS, and where the time goes (cProfile of a slice of the
same setup, same run). The run is event-driven (steady clusters sleep: streams/steady.py); the
baseline, in the same run, is the stepped engine (every cluster decided every step) on a slice
of the same setup (`--baseline-clusters`), compared in CPU µs per cluster-step.

Two loads: `diurnal` (a sine per cluster plus noise: every step's load differs, nothing is
steady) and `steps` (each cluster's load holds a level for `--hold` seconds, then moves to
another, seeded: the case where discrete events pay). Ends with one JSON line.

    python bench/simulate.py                       # 1,000 clusters, 24 h, 15 s, steps load
    python bench/simulate.py --load diurnal --clusters 100 --hours 2
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import random  # noqa: E402

from streams.load_shapes import Noise, Sine, Steps  # noqa: E402
from streams.simulation import InstanceModel, LoadSpec, Simulation, SimulationSetup  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "definitions"
AIM_SECONDS = 60.0


def load_of(kind: str, n: int, clusters: int, hours: float, hold: float, seed: int) -> tuple:
    """Cluster `n`'s load shapes: a diurnal sine shifted by its index plus noise, or levels held
    for `hold` seconds (10 to 70 against the threshold of 25: 1 to 3 members; seeded)."""
    if kind == "diurnal":
        return (Sine(40.0, 30.0, 86400.0, phase=n * 86400.0 / max(clusters, 1)), Noise(3.0))
    rng = random.Random(f"{seed}:bench-steps:{n}")
    starts = [i * hold for i in range(int(hours * 3600 // hold) + 1)]
    return (Steps(tuple((start, float(rng.randrange(10, 71, 15))) for start in starts)),)


def setup_for(
    clusters: int, hours: float, step: float, seed: int = 1, load: str = "diurnal", hold: float = 3600.0
) -> SimulationSetup:
    """`clusters` one-cartridge applications (min 1, max 5), each with a per-member load average
    (threshold 25, `load_of`): 1 to 3 members each."""

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
                load_of(load, n, clusters, hours, hold, seed),
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


def timed_run(setup: SimulationSetup, event_driven: bool) -> tuple[Simulation, object, float, float]:
    """(simulation, result, wall s, CPU s) of one run."""
    simulation = Simulation(setup, event_driven=event_driven)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = simulation.run()
    return simulation, result, time.perf_counter() - started, time.process_time() - cpu_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--step", type=float, default=15.0)
    parser.add_argument("--load", choices=("steps", "diurnal"), default="steps")
    parser.add_argument("--hold", type=float, default=3600.0, help="steps load: seconds a level holds")
    parser.add_argument("--baseline-clusters", type=int, default=100, help="the stepped baseline's slice")
    parser.add_argument("--profile-clusters", type=int, default=50)
    parser.add_argument("--profile-hours", type=float, default=2.0)
    args = parser.parse_args()

    def setup(clusters: int, hours: float) -> SimulationSetup:
        return setup_for(clusters, hours, args.step, load=args.load, hold=args.hold)

    load_before = os.getloadavg()[0]
    # the profile first (a slice of the same setup), so the peak RSS below is the full run's
    profiler = cProfile.Profile()
    sliced = Simulation(setup(args.profile_clusters, args.profile_hours))
    profiler.enable()
    sliced.run()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = max(row[3] for row in stats.stats.values())
    parts = {}
    for (_file, _, name), row in stats.stats.items():
        label = {
            "handle": "actors.runtime.handle (decide, commit, encode, fold)",
            "ingest": "HealthBook.ingest (windows)",
            "assess": "HealthBook.assess (window figures, scaling rules, the cluster's own answer)",
            "react": "actors.reactions.react",
            "_sample": "health samples (built + ingested)",
            "_record": "the report's series (per cluster-step)",
            "_settle": "finding steady clusters (streams.steady)",
        }.get(name)
        if label:
            parts[label] = parts.get(label, 0.0) + row[3]

    # the baseline: the stepped engine on a slice, and the event-driven one on the same slice
    base_setup = setup(args.baseline_clusters, args.hours)
    base_steps = args.baseline_clusters * base_setup.steps
    _, stepped, stepped_wall, stepped_cpu = timed_run(base_setup, event_driven=False)
    _, evented, _, evented_cpu = timed_run(base_setup, event_driven=True)
    if evented.figures() != stepped.figures() or evented.commands != stepped.commands:
        raise SystemExit("the event-driven run differs from the stepped run on the baseline slice")
    stepped_us, slice_us = 1e6 * stepped_cpu / base_steps, 1e6 * evented_cpu / base_steps

    full = setup(args.clusters, args.hours)
    simulation, result, wall, cpu = timed_run(full, event_driven=True)
    cluster_steps = args.clusters * full.steps
    us = 1e6 * cpu / cluster_steps
    simulated = full.duration * args.clusters
    rate = full.duration / wall
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_after = os.getloadavg()[0]
    members = sum(sum(t.supply) for t in result.clusters.values()) / max(full.steps, 1)
    aim_rate = full.duration / (AIM_SECONDS * args.clusters / 1000 * args.hours / 24) if args.hours else 0
    slept = simulation.slept / cluster_steps
    print(
        f"{args.clusters} clusters, {args.hours:g} simulated hours at {args.step:g} s steps, {args.load} load: "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU ({us:.1f} µs CPU per cluster-step; {slept:.1%} of cluster-steps "
        "slept; the machine is shared, CPU time is the steadier figure)"
    )
    print(
        f"  {rate:,.0f} simulated seconds per wall second ({simulated / wall:,.0f} cluster-seconds/s); "
        f"{result.commands:,} commands handled, mean {members:.0f} Active members"
    )
    print(
        f"  baseline, same run, {args.baseline_clusters} clusters x {args.hours:g} h: stepped "
        f"{stepped_us:.1f} µs per cluster-step ({stepped_wall:.1f} s wall), event-driven {slice_us:.1f} µs "
        f"(same figures); full run / stepped: {us / stepped_us:.3f} of the CPU per cluster-step"
    )
    print(
        f"  aim {AIM_SECONDS:g} s for 1,000 clusters x 24 h -> {aim_rate:,.0f}x real time here; "
        f"ratio to the aim: {rate / aim_rate:.3f}"
    )
    projected = 1000 * 86400 / (simulated / wall)
    print(f"  at this rate 1,000 clusters x 24 h take {projected:,.0f} s (aim {AIM_SECONDS:g} s)")
    print(f"  peak RSS {rss_mb:.0f} MB; load average {load_before:.1f} at the start, {load_after:.1f} at the end")
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
                "load": args.load,
                **({"hold_s": args.hold} if args.load == "steps" else {}),
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "cpu_us_per_cluster_step": round(us, 2),
                "slept_share": round(slept, 4),
                "stepped_cpu_us_per_cluster_step": round(stepped_us, 2),
                "event_driven_slice_cpu_us_per_cluster_step": round(slice_us, 2),
                "ratio_to_stepped": round(us / stepped_us, 4),
                "baseline_clusters": args.baseline_clusters,
                "sim_seconds_per_wall_second": round(rate, 1),
                "cluster_seconds_per_wall_second": round(simulated / wall),
                "ratio_to_aim": round(rate / aim_rate, 4),
                "projected_1000x24h_s": round(projected),
                "commands": result.commands,
                "peak_rss_mb": round(rss_mb),
                "load_average": [round(load_before, 1), round(load_after, 1)],
                "profile_share": {k: round(v / total, 3) for k, v in parts.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
