"""The search behind `stratos tune`: an autoscaling policy's parameters against scenarios, by
optuna, with the simulator's SPEC RG figures as the two objectives (cost in member-hours,
SLO violation share; both lower is better). ADR 0011 says why optuna and TPE.

Every trial is a full simulation of every scenario with the trial's policy (the platform's own
rules: ``streams.simulation``), so a trial costs seconds; trials are asked for in batches of a
fixed size and run on a process pool, and their results told back in the order asked. The
sampler is seeded, the simulations are deterministic and the batch size does not depend on the
number of workers, so a seed gives the same trials, the same front and the same recommendation
on one core or two.
"""

from __future__ import annotations

import copy
import math
import os
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.topology_plan import scaling_settings
from infra.simulation.scenario import Scenario, load_scenario
from streams import elasticity
from streams.simulation import ClusterTrack, Simulation

COST, SLO = "cost_member_hours", "slo_violation_share"
OBJECTIVES = (COST, SLO)
BATCH = 4
"""Trials asked for at a time: fixed, so the seed alone decides the trials."""
THRESHOLD_OF = {
    "requests_in_flight": "requestsInFlight",
    "memory_consumption": "memoryConsumption",
    "load_average": "loadAverage",
}


class TuneError(ValueError):
    """Bad input to a tuning run, in one line naming the option."""


@dataclass(frozen=True)
class Parameter:
    """One tuned field of the policy: its name on the command line, its range (what the
    policy accepts), the search's default bounds, and how it is drawn."""

    name: str
    valid_low: float
    valid_high: float
    low: float
    high: float
    integer: bool = False
    low_open: bool = False
    """The valid range excludes ``valid_low`` (a threshold must be above 0)."""
    high_open: bool = False

    def bounded(self, low: float, high: float) -> Parameter:
        """This parameter within the user's bounds; TuneError when they admit no value."""
        spec = f"--bound {self.name}={low:g}:{high:g}"
        if low > high:
            raise TuneError(f"{spec} admits nothing: its low end is above its high end")
        lo, hi = max(low, self.valid_low), min(high, self.valid_high)
        empty = lo > hi or (
            lo == hi and ((lo == self.valid_low and self.low_open) or (hi == self.valid_high and self.high_open))
        )
        if self.integer and not empty:
            lo, hi = math.ceil(lo), math.floor(hi)
            empty = lo > hi
        if empty:
            upper = "below" if self.high_open else "at most"
            lower = "above" if self.low_open else "at least"
            whole = "a whole number " if self.integer else ""
            raise TuneError(
                f"{spec} admits nothing: {self.name} must be {whole}{lower} {self.valid_low:g} "
                f"and {upper} {self.valid_high:g}"
            )
        if self.high_open and hi == self.valid_high:
            hi = math.nextafter(hi, -math.inf)
        if self.low_open and lo == self.valid_low:
            lo = math.nextafter(lo, math.inf)
        return Parameter(
            self.name, self.valid_low, self.valid_high, lo, hi, self.integer, self.low_open, self.high_open
        )


def parameters_of(policy: dict[str, Any], metrics: set[str], predictive: bool) -> dict[str, Parameter]:
    """The tunable parameters of ``policy`` for scenarios whose load is on ``metrics``: the
    thresholds the policy has for those metrics (default bounds half to twice the value),
    tolerance, scale-down stabilisation and count, and with ``predictive`` the scheduling
    buffer of a forecast (whose mode is then tuned too: off or forecast-and-scale)."""
    found: dict[str, Parameter] = {}
    thresholds = policy.get("loadThresholds") or {}
    for metric in sorted(metrics):
        name = THRESHOLD_OF[metric]
        value = (thresholds.get(name) or {}).get("threshold")
        if value is None:
            continue
        ceiling = 100.0 if name == "memoryConsumption" else math.inf
        found[name] = Parameter(name, 0.0, ceiling, value / 2, min(value * 2, ceiling), low_open=True)
    found["tolerance"] = Parameter("tolerance", 0.0, 1.0, 0.0, 0.3, high_open=True)
    found["scaleDownStabilisationSeconds"] = Parameter("scaleDownStabilisationSeconds", 0.0, math.inf, 0.0, 900.0)
    found["scaleDownAfter"] = Parameter("scaleDownAfter", 1, math.inf, 1, 8, integer=True)
    if predictive:
        found["schedulingBufferSeconds"] = Parameter("schedulingBufferSeconds", 0.0, 3600.0, 0.0, 900.0)
    return found


def parse_bounds(texts: Sequence[str], params: dict[str, Parameter]) -> dict[str, Parameter]:
    """``NAME=LOW:HIGH`` options applied to ``params``; one TuneError line per bad option."""
    out = dict(params)
    for text in texts:
        name, sep, rest = text.partition("=")
        low, colon, high = rest.partition(":")
        if name not in params:
            raise TuneError(f"--bound {text}: no parameter {name!r} to tune (one of: {', '.join(params)})")
        try:
            if not sep or not colon:
                raise ValueError
            bounds = float(low), float(high)
        except ValueError:
            raise TuneError(f"--bound {text}: expected NAME=LOW:HIGH with two numbers") from None
        out[name] = params[name].bounded(*bounds)
    return out


def policy_with(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` (Stratos JSON) with the tuned values set; ``predictive`` is "off" to drop the
    forecast, "forecast-and-scale" to keep one (with the policy's other predictive settings)."""
    body = copy.deepcopy(base)
    for name, value in values.items():
        if name in THRESHOLD_OF.values():
            body["loadThresholds"][name] = {"threshold": round(float(value), 4)}
        elif name == "scaleDownAfter":
            body[name] = int(value)
        elif name in ("tolerance", "scaleDownStabilisationSeconds"):
            body[name] = round(float(value), 4)
        elif name == "predictive":
            if value == "off":
                body.pop("predictive", None)
            else:
                body["predictive"] = {**(body.get("predictive") or {}), "mode": value}
        elif name == "schedulingBufferSeconds" and "predictive" in body:
            horizon = float(body["predictive"].get("horizonSeconds", 3600.0))
            body["predictive"] = {**body["predictive"], name: round(min(float(value), horizon), 1)}
    return body


# --- evaluation (in the pool's processes) -----------------------------------------------------

_SCENARIOS: dict[str, Scenario] = {}


def _scenario(path: str) -> Scenario:
    if path not in _SCENARIOS:
        _SCENARIOS[path] = load_scenario(Path(path))
    return _SCENARIOS[path]


def against(track: ClusterTrack, thresholds: dict[str, float]) -> ClusterTrack:
    """The track's demand measured against the reference thresholds (what one member serves,
    by the policy in force) instead of the trial's own: else a trial would lower its SLO
    violations by raising its thresholds, which changes only the yardstick."""
    track.thresholds = dict(thresholds)
    track.need = array("i", (track.need_at(k) for k in range(len(track.need))))
    track.demand = array("i", (max(track.min, n) for n in track.need))
    return track


def evaluate(policy: dict[str, Any], paths: Sequence[str], reference: dict[str, float]) -> dict[str, Any]:
    """Every scenario simulated with ``policy``, its demand measured against ``reference``
    thresholds: per scenario its totals over clusters, and the two objectives over all
    scenarios (member-hours add up, SLO shares are averaged)."""
    per: dict[str, dict[str, Any]] = {}
    for path in paths:
        scenario = _scenario(path)
        result = Simulation(scenario.with_policy(policy)).run()
        step = scenario.setup.step
        per[path] = elasticity.combine([against(t, reference).figures(step) for t in result.clusters.values()])
    return {
        COST: sum(p[COST] for p in per.values()),
        SLO: sum(p[SLO] for p in per.values()) / len(per),
        "scenarios": per,
    }


# --- the study -----------------------------------------------------------------------------------


@dataclass
class Trial:
    number: int
    values: dict[str, Any]
    policy: dict[str, Any]
    figures: dict[str, Any]

    def point(self) -> dict[str, float]:
        return {COST: self.figures[COST], SLO: self.figures[SLO]}


@dataclass
class Outcome:
    in_force: Trial
    trials: list[Trial]
    front: list[Trial]
    recommended: Trial | None
    why: str
    evaluations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _suggest(trial: Any, params: dict[str, Parameter], predictive: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for p in params.values():
        if p.integer:
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high)
    if predictive:
        values["predictive"] = trial.suggest_categorical("predictive", ["off", "forecast-and-scale"])
    return values


def front_of(trials: Sequence[Trial]) -> list[Trial]:
    """The trials no other trial dominates on (cost, SLO share), cheapest first."""
    front = [t for t in trials if not any(elasticity.dominates(o.point(), t.point(), OBJECTIVES) for o in trials)]
    return sorted(front, key=lambda t: (t.figures[COST], t.figures[SLO], t.number))


def recommend(in_force: Trial, front: Sequence[Trial]) -> tuple[Trial | None, str]:
    """The front's policy that dominates the one in force with the fewest SLO violations; else
    the cheapest that violates no more often; else none."""
    dominating = [t for t in front if elasticity.dominates(t.point(), in_force.point(), OBJECTIVES)]
    if dominating:
        best = min(dominating, key=lambda t: (t.figures[SLO], t.figures[COST], t.number))
        return best, "dominates the policy in force (cheaper or equal, fewer or equal SLO violations)"
    no_worse = [t for t in front if t.figures[SLO] <= in_force.figures[SLO]]
    if no_worse:
        best = min(no_worse, key=lambda t: (t.figures[COST], t.number))
        return best, "no trial dominates the policy in force: the cheapest with no more SLO violations"
    return None, "no trial is as good as the policy in force on SLO violations: keep it"


def tune(
    base: dict[str, Any],
    paths: Sequence[str],
    params: dict[str, Parameter],
    trials: int,
    seed: int,
    workers: int,
    predictive: bool = False,
    progress: Callable[[int, int], None] | None = None,
    pool: Executor | None = None,
) -> Outcome:
    """Run the study: the policy in force first, then ``trials`` trials in batches of BATCH."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=max(4, min(10, trials // 3))
    )
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    own = pool is None
    pool = pool or ProcessPoolExecutor(max_workers=max(1, min(workers, BATCH)))
    try:
        reference = scaling_settings(base)["thresholds"]
        in_force = Trial(-1, {}, base, pool.submit(evaluate, base, list(paths), reference).result())
        done: list[Trial] = []
        if progress:
            progress(0, trials)
        while len(done) < trials:
            asked = [study.ask() for _ in range(min(BATCH, trials - len(done)))]
            values = [_suggest(t, params, predictive) for t in asked]
            bodies = [policy_with(base, v) for v in values]
            futures = [pool.submit(evaluate, body, list(paths), reference) for body in bodies]
            for t, v, body, future in zip(asked, values, bodies, futures, strict=True):
                figures = future.result()
                study.tell(t, [figures[COST], figures[SLO]])
                done.append(Trial(t.number, v, body, figures))
            if progress:
                progress(len(done), trials)
    finally:
        if own:
            pool.shutdown()
    front = front_of(done)
    recommended, why = recommend(in_force, front)
    return Outcome(in_force, done, front, recommended, why, evaluations=(len(done) + 1) * len(paths))


def default_workers() -> int:
    return max(1, min(BATCH, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
