"""Elasticity figures of SPEC RG / BUNGEE (Herbst et al., "Ready for Rain? A View from SPEC
Research on the Future of Cloud Metrics", 2016), pure functions over sampled curves.

A curve is sampled every ``dt`` seconds and each sample holds for ``dt`` (a step function), so
the run lasts ``T = len(curve) * dt`` and an integral ``(1/T) ∫ f dt`` is the mean of the samples.
Demand ``d`` is the fewest members that keep the metric within its threshold, supply ``s`` the
Active members (counts, members).

- accuracy_U = (1/T) ∫ (d - s)+ dt, accuracy_O = (1/T) ∫ (s - d)+ dt (members);
- timeshare_U / timeshare_O: share of time with s < d / s > d;
- instability: share of the intervals between samples where supply and demand do not move
  the same way, ``min(|sgn Δs - sgn Δd|, 1)`` (one moves, the other stays or moves against it);
- jitter: (adaptations of s - adaptations of d) per hour, an adaptation being a sample that
  differs from the one before (positive: the supply changes more often than the demand);
- SLO violation share: share of time the metric is over its threshold, i.e. s below the
  count the load needs (``need``, demand before the policy's min);
- cost: member-seconds (and member-hours) of every member billed, from its spawn request to
  its termination;
- reaction time: from each rise of the demand to the first sample with enough Active members
  (start-up included), capped at the cluster's max.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

FIGURES_LOWER_IS_BETTER = (
    "accuracy_U",
    "accuracy_O",
    "timeshare_U",
    "timeshare_O",
    "instability",
    "jitter_abs",
    "scaling_actions",
    "slo_violation_share",
    "cost_member_hours",
    "reaction_time_mean_s",
)
"""The figures pairwise wins count (jitter by its size: both signs are a mismatch)."""


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def accuracy(demand: Sequence[int], supply: Sequence[int]) -> tuple[float, float]:
    """(accuracy_U, accuracy_O): mean members missing, mean members too many."""
    return (
        _mean([max(d - s, 0) for d, s in zip(demand, supply, strict=False)]),
        _mean([max(s - d, 0) for d, s in zip(demand, supply, strict=False)]),
    )


def timeshare(demand: Sequence[int], supply: Sequence[int]) -> tuple[float, float]:
    """(timeshare_U, timeshare_O): share of time under- / over-provisioned."""
    n = len(demand)
    if not n:
        return 0.0, 0.0
    return (
        sum(1 for d, s in zip(demand, supply, strict=False) if s < d) / n,
        sum(1 for d, s in zip(demand, supply, strict=False) if s > d) / n,
    )


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def instability(demand: Sequence[int], supply: Sequence[int]) -> float:
    """Share of the intervals where supply and demand do not move the same way."""
    moves = len(demand) - 1
    if moves < 1:
        return 0.0
    mismatched = sum(
        1 for k in range(1, len(demand)) if _sign(supply[k] - supply[k - 1]) != _sign(demand[k] - demand[k - 1])
    )
    return mismatched / moves


def adaptations(curve: Sequence[int]) -> int:
    return sum(1 for k in range(1, len(curve)) if curve[k] != curve[k - 1])


def jitter(demand: Sequence[int], supply: Sequence[int], dt: float) -> float:
    """(adaptations of supply - adaptations of demand) per hour."""
    hours = len(demand) * dt / 3600.0
    return (adaptations(supply) - adaptations(demand)) / hours if hours > 0 else 0.0


def slo_violation_share(need: Sequence[int], supply: Sequence[int]) -> float:
    n = len(need)
    return sum(1 for d, s in zip(need, supply, strict=False) if s < d) / n if n else 0.0


def member_seconds(billed: Sequence[int], dt: float) -> float:
    return math.fsum(billed) * dt


def reaction_times(
    demand: Sequence[int], supply: Sequence[int], dt: float, cap: int | None = None
) -> list[float | None]:
    """Seconds from each rise of the demand to the first sample with at least that many Active
    members (at most ``cap``); None when the run ends first."""
    found: list[float | None] = []
    n = len(demand)
    for k in range(1, n):
        if demand[k] <= demand[k - 1]:
            continue
        target = demand[k] if cap is None else min(demand[k], cap)
        found.append(next(((j - k) * dt for j in range(k, n) if supply[j] >= target), None))
    return found


def figures(
    demand: Sequence[int],
    supply: Sequence[int],
    need: Sequence[int],
    billed: Sequence[int],
    dt: float,
    scaling_actions: int,
    cap: int | None = None,
) -> dict[str, Any]:
    """Every figure of one cluster's run, as plain JSON numbers."""
    under, over = accuracy(demand, supply)
    share_u, share_o = timeshare(demand, supply)
    reactions = reaction_times(demand, supply, dt, cap)
    reached = [r for r in reactions if r is not None]
    cost = member_seconds(billed, dt)
    j = jitter(demand, supply, dt)
    return {
        "accuracy_U": under,
        "accuracy_O": over,
        "timeshare_U": share_u,
        "timeshare_O": share_o,
        "instability": instability(demand, supply),
        "jitter": j,
        "jitter_abs": abs(j),
        "scaling_actions": scaling_actions,
        "slo_violation_share": slo_violation_share(need, supply),
        "cost_member_seconds": cost,
        "cost_member_hours": cost / 3600.0,
        "reaction_time_mean_s": _mean(reached) if reached else None,
        "reaction_time_max_s": max(reached) if reached else None,
        "demand_rises": len(reactions),
        "demand_rises_unmet": len(reactions) - len(reached),
        "samples": len(demand),
        "duration_s": len(demand) * dt,
    }


def combine(per_cluster: Sequence[Mapping[str, float | None]]) -> dict[str, Any]:
    """A policy's figures over all its clusters: costs, actions and counts add up, shares and
    accuracies are means over clusters (every cluster runs the same time)."""
    if not per_cluster:
        return {}
    summed = (
        "scaling_actions",
        "cost_member_seconds",
        "cost_member_hours",
        "demand_rises",
        "demand_rises_unmet",
        "samples",
    )
    out: dict[str, Any] = {}
    for name in per_cluster[0]:
        values = [c[name] for c in per_cluster if c.get(name) is not None]
        if name in summed:
            out[name] = sum(values)
        elif name == "reaction_time_max_s":
            out[name] = max(values) if values else None  # type: ignore[type-var]
        elif name == "duration_s":
            out[name] = per_cluster[0][name]
        else:
            out[name] = _mean(values) if values else None  # type: ignore[arg-type]
    return out


def dominates(a: Mapping[str, float], b: Mapping[str, float], axes: Sequence[str]) -> bool:
    """a is no worse than b on every axis and better on one (lower is better)."""
    return all(a[x] <= b[x] for x in axes) and any(a[x] < b[x] for x in axes)


PARETO_AXES = ("cost_member_hours", "slo_violation_share")


def pareto_front(totals: Mapping[str, Mapping[str, float]], axes: Sequence[str] = PARETO_AXES) -> list[str]:
    """Policies no other policy dominates on cost against SLO violation, in name order."""
    return sorted(p for p in totals if not any(dominates(totals[q], totals[p], axes) for q in totals if q != p))


def pairwise_wins(
    totals: Mapping[str, Mapping[str, float | None]], names: Sequence[str] = FIGURES_LOWER_IS_BETTER
) -> dict[str, dict[str, int]]:
    """wins[a][b]: how many of the figures a is strictly better (lower) on than b."""

    def value(p: str, name: str) -> float:
        v = totals[p].get(name)
        return math.inf if v is None else float(v)

    return {a: {b: sum(1 for n in names if value(a, n) < value(b, n)) for b in totals if b != a} for a in totals}


def ranking(totals: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Pareto layers first (non-dominated sorting on cost against SLO violation), then more
    pairwise wins, then name: a total order, the same on every run."""
    layer: dict[str, int] = {}
    left = dict(totals)
    depth = 0
    while left:
        front = pareto_front(left)
        for p in front:
            layer[p] = depth
            del left[p]
        depth += 1
    wins = pairwise_wins(totals)
    return sorted(totals, key=lambda p: (layer[p], -sum(wins[p].values()), p))
