"""`stratos tune` and predictive scaling, measured.

1. Tuning: a seeded study on diurnal-day + flash-crowd (the shipped scenarios of the tune test):
   wall time, simulations per second, and the ratio to one process simulating the same policies
   one after another (baseline measured in this run: one evaluation of the default policy).
2. The recommended policy against Stratos's default on every shipped scenario (cost in
   member-hours and SLO violation share, demand measured against the default's thresholds).
3. Forecast error: Holt-Winters (streams/forecast.py) on the diurnal-week load, two days of
   history, the third day forecast an hour ahead and refitted hourly: MAPE of the five-minute
   bucket means, against the seasonal naive forecast (the same bucket one day earlier).
4. Predictive scaling on diurnal-week: SLO and cost with and without the forecast.

    python bench/tune.py [--trials 16] [--seed 3]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import finish  # noqa: E402

from actors.topology_plan import forecast_spec, scaling_settings  # noqa: E402
from infra.simulation.scenario import load_scenario  # noqa: E402
from infra.tune.search import COST, SLO, evaluate, parameters_of, parse_bounds, tune  # noqa: E402
from streams.forecast import LoadHistory, fit  # noqa: E402
from streams.load_shapes import load_series  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCENARIOS = EXAMPLES / "scenarios"
DEFAULT = json.loads((EXAMPLES / "policies" / "stratos-default.json").read_text())
FORECAST = json.loads((EXAMPLES / "policies" / "forecast.json").read_text())
BOUNDS = ["requestsInFlight=19.5:21", "tolerance=0:0", "scaleDownAfter=3:8", "scaleDownStabilisationSeconds=0:600"]


def tuning(trials: int, seed: int) -> tuple[dict, dict]:
    paths = [str(SCENARIOS / "diurnal-day.yaml"), str(SCENARIOS / "flash-crowd.yaml")]
    reference = scaling_settings(DEFAULT)["thresholds"]
    started = time.perf_counter()
    evaluate(DEFAULT, paths, reference)
    serial = time.perf_counter() - started  # one process, one policy on both scenarios
    params = parse_bounds(BOUNDS, parameters_of(DEFAULT, {"requests_in_flight"}, False))
    started = time.perf_counter()
    outcome = tune(DEFAULT, paths, params, trials, seed, workers=2)
    wall = time.perf_counter() - started
    rate = outcome.evaluations / wall
    baseline = len(paths) / serial
    figures = {
        "trials": trials,
        "wall_s": round(wall, 2),
        "evaluations": outcome.evaluations,
        "evaluations_per_s": round(rate, 3),
        "serial_evaluations_per_s": round(baseline, 3),
        "speedup_vs_serial": round(rate / baseline, 2),
        "in_force": {COST: outcome.in_force.figures[COST], SLO: outcome.in_force.figures[SLO]},
        "recommended": None,
        "why": outcome.why,
    }
    if outcome.recommended is not None:
        r = outcome.recommended
        figures["recommended"] = {COST: r.figures[COST], SLO: r.figures[SLO], "values": r.values}
    return figures, (outcome.recommended.policy if outcome.recommended else DEFAULT)


def per_scenario(recommended: dict) -> dict:
    reference = scaling_settings(DEFAULT)["thresholds"]
    out = {}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        if path.stem == "diurnal-week":
            continue  # three days: part 4
        row = {}
        for name, policy in (("default", DEFAULT), ("recommended", recommended)):
            f = evaluate(policy, [str(path)], reference)
            row[name] = {COST: round(f[COST], 3), SLO: round(f[SLO], 4)}
        out[path.stem] = row
    return out


def forecast_error() -> dict:
    scenario = load_scenario(SCENARIOS / "diurnal-week.yaml")
    setup = scenario.setup
    (load,) = setup.loads
    times = [k * setup.step for k in range(setup.steps)]
    series = load_series(load.shapes, times, random.Random(f"{setup.seed}:load:0"))
    spec = forecast_spec(FORECAST["predictive"])
    assert spec is not None
    history = LoadHistory(spec.bucket, 10_000)
    truth: dict[int, list[float]] = {}
    for t, v in zip(times, series, strict=True):
        truth.setdefault(int(t // spec.bucket), []).append(v)
    means = {b: sum(v) / len(v) for b, v in truth.items()}
    day, errors, naive = 86400.0, [], []
    k = 0
    for hour in range(48, 72):
        now = hour * 3600.0
        while k < len(times) and times[k] < now:
            history.add(times[k], series[k])
            k += 1
        forecast = fit(history, spec, now)
        assert forecast is not None
        for i, predicted in enumerate(forecast.values[: int(3600 // spec.bucket)]):
            bucket = forecast.first + i
            if bucket in means:
                actual = means[bucket]
                errors.append(abs(predicted - actual) / actual)
                naive.append(abs(means[bucket - int(day // spec.bucket)] - actual) / actual)
    mape, naive_mape = 100 * sum(errors) / len(errors), 100 * sum(naive) / len(naive)
    return {
        "buckets": len(errors),
        "mape_pct": round(mape, 2),
        "seasonal_naive_mape_pct": round(naive_mape, 2),
        "ratio_to_naive": round(mape / naive_mape, 3),
    }


def with_and_without_forecast() -> dict:
    reference = scaling_settings(DEFAULT)["thresholds"]
    path = [str(SCENARIOS / "diurnal-week.yaml")]
    without, with_ = evaluate(DEFAULT, path, reference), evaluate(FORECAST, path, reference)
    return {
        "without": {COST: round(without[COST], 2), SLO: round(without[SLO], 4)},
        "with": {COST: round(with_[COST], 2), SLO: round(with_[SLO], 4)},
        "cost_ratio": round(with_[COST] / without[COST], 4),
        "slo_ratio": round(with_[SLO] / without[SLO], 4) if without[SLO] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    tuned, recommended = tuning(args.trials, args.seed)
    print(
        f"tuning: {tuned['trials']} trials, {tuned['evaluations']} simulations in {tuned['wall_s']} s = "
        f"{tuned['evaluations_per_s']}/s; one process {tuned['serial_evaluations_per_s']}/s "
        f"(x{tuned['speedup_vs_serial']}); {tuned['why']}"
    )
    print(f"  in force {tuned['in_force']}  recommended {tuned['recommended']}")
    scenarios = per_scenario(recommended)
    for name, row in scenarios.items():
        print(f"  {name}: default {row['default']}  recommended {row['recommended']}")
    error = forecast_error()
    print(
        f"forecast MAPE (diurnal-week, day 3, 1 h ahead): {error['mape_pct']} % against seasonal naive "
        f"{error['seasonal_naive_mape_pct']} % (ratio {error['ratio_to_naive']})"
    )
    predictive = with_and_without_forecast()
    print(
        f"diurnal-week: without forecast {predictive['without']}, with {predictive['with']} "
        f"(cost x{predictive['cost_ratio']}, SLO violations x{predictive['slo_ratio']})"
    )
    finish(
        {
            "bench": "tune",
            "tuning": tuned,
            "scenarios": scenarios,
            "forecast_error": error,
            "predictive_diurnal_week": predictive,
        }
    )


if __name__ == "__main__":
    main()
