"""Stratos 4.1's scaling formulas (docs/operators/autoscaler.md), as pure functions: how many members a cluster needs.

Each metric turns its predicted value (``streams.windows.predicted``) into a member count; the
cluster needs the largest. The answer carries the metric that drove it, every figure behind it
and a reason word, so a decision can be explained in replay.

Not decided here: min/max, pending members, partitions, the scale-down counter. Those belong to
the cluster (``actors.autoscale``), which alone knows its members. ``required`` is therefore
kept raw (it may be below min or above max); the reason word says which, so the cluster can
tell its parent when the need goes past max.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from pydantic import BaseModel, ConfigDict

from streams.windows import WindowFigures

REQUESTS_IN_FLIGHT = "requests_in_flight"
MEMORY_CONSUMPTION = "memory_consumption"
LOAD_AVERAGE = "load_average"
METRICS = (REQUESTS_IN_FLIGHT, MEMORY_CONSUMPTION, LOAD_AVERAGE)
"""Stratos's order, which also breaks ties for the driving metric."""

_EPSILON = 1e-9
MAX_REQUIRED = 1_000_000
"""The largest count a rule answers: past any cluster's max, it says only "far past max". A
trend extrapolated far enough, or a tiny threshold, would otherwise ask for an infinite count."""


def _ceil(x: float) -> int:
    """ceil that forgives float noise: 3.0000000000000004 members is 3, not 4. Never negative
    (a prediction extrapolated below zero needs no member: the min rule lifts it) and never
    above MAX_REQUIRED, so any number, infinities included, gives a count."""
    return math.ceil(min(max(x, 0.0), MAX_REQUIRED) - _EPSILON)


def _check_threshold(threshold: float) -> None:
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold!r}")


def required_by_requests_in_flight(predicted: float, threshold: float) -> int:
    """One member per ``threshold`` requests in flight: ``ceil(predicted / threshold)``."""
    _check_threshold(threshold)
    return _ceil(predicted / threshold)


def required_by_memory(predicted: float, threshold: float, min_count: int, max_count: int) -> int:
    """Memory percent, Stratos's rule: at threshold keep min, below it ask for ``min - 1``
    (a scale-down request, which the min rule then bounds), above it spread the range
    ``threshold..100 %`` evenly over ``min..max`` members:
    ``ceil(min + (pred - thr) / ((100 - thr) / (max - min)))``. With max == min there is
    nothing to spread over: min. A prediction at or past 100 % (a trend extrapolated beyond
    full memory) is full memory: max, which is also the answer above a threshold of 100 %,
    where no range is left to spread over. So the count always lies in ``min - 1..max``.
    """
    _check_threshold(threshold)
    if predicted < threshold:
        return max(0, min_count - 1)
    if predicted == threshold or max_count <= min_count:
        return max(0, min_count)
    if predicted >= 100 or threshold >= 100:
        return max_count
    # (pred - thr) / ((100 - thr) / (max - min)), multiplied out to lose less precision
    return min(max_count, _ceil(min_count + (predicted - threshold) * (max_count - min_count) / (100 - threshold)))


def required_by_load(predicted: float, threshold: float, min_count: int) -> int:
    """Load average scales the minimum in proportion: ``ceil(min * predicted / threshold)``;
    a min of 0 scales to 0 (also when the ratio overflows: 0 * inf is no number)."""
    _check_threshold(threshold)
    return _ceil(min_count * (predicted / threshold)) if min_count else 0


@dataclass(frozen=True)
class ScalingInputs:
    """Everything one decision reads. ``figures`` per metric: one window for the cluster, or
    one per member (memory and load: the mean of the members' predictions counts).

    Freshness, the reset rule: a window counts only when it holds news. Stratos kept counting
    a metric after a decision until new data came (as Stratos 4.1 does); here a window is stale
    when its last sample is not after ``fresh_after`` (e.g. the previous decision's time) or is
    older than ``max_age`` seconds before ``now``. A metric without a threshold in the policy,
    or without a fresh window, does not vote at all.

    ``tolerance`` is HPA's band: a metric whose ``|predicted / threshold - 1| <= tolerance``
    votes for ``current`` (keep the count), so noise around the threshold never scales. 0 (the
    default) turns it off and keeps Stratos's rules exactly, "equal to threshold -> min"
    included. ``t`` is the look-ahead of ``predicted`` in seconds (Stratos: 1).
    """

    min_count: int
    max_count: int
    thresholds: Mapping[str, float]
    figures: Mapping[str, WindowFigures | Sequence[WindowFigures] | None]
    current: int | None = None
    now: float | None = None
    max_age: float | None = None
    fresh_after: float | None = None
    tolerance: float = 0.0
    t: float = 1.0


class ScalingRequirement(BaseModel):
    """The verdict: goes into ``ScaleCluster`` as it is."""

    model_config = ConfigDict(frozen=True)

    required: int
    metric: str | None
    by_metric: dict[str, int]
    predicted: dict[str, float]
    reason: str
    """NoFreshMetrics | WithinTolerance | AboveMax | BelowMin | WithinRange"""
    ignored: dict[str, str] = {}
    """metric -> NoThreshold | NoData | Stale | NotFinite: why it did not vote."""


def _fresh(f: WindowFigures, inputs: ScalingInputs) -> bool:
    if inputs.fresh_after is not None and f.last_ts <= inputs.fresh_after:
        return False
    if inputs.now is not None and inputs.max_age is not None:
        return inputs.now - f.last_ts <= inputs.max_age
    return True


def _as_list(value: WindowFigures | Sequence[WindowFigures] | None) -> list[WindowFigures]:
    if value is None:
        return []
    return [value] if isinstance(value, WindowFigures) else list(value)


def _required(metric: str, pred: float, threshold: float, inputs: ScalingInputs) -> int:
    if metric == REQUESTS_IN_FLIGHT:
        return required_by_requests_in_flight(pred, threshold)
    if metric == MEMORY_CONSUMPTION:
        return required_by_memory(pred, threshold, inputs.min_count, inputs.max_count)
    return required_by_load(pred, threshold, inputs.min_count)


def decide_required(inputs: ScalingInputs) -> ScalingRequirement:
    """The member count the cluster needs now: the largest of the metrics that vote."""
    by_metric: dict[str, int] = {}
    predicted: dict[str, float] = {}
    ignored: dict[str, str] = {}
    tolerated: set[str] = set()
    for metric in METRICS:
        threshold = inputs.thresholds.get(metric)
        windows = _as_list(inputs.figures.get(metric))
        fresh = [f for f in windows if _fresh(f, inputs)]
        if threshold is None:
            ignored[metric] = "NoThreshold"
            continue
        if not fresh:
            ignored[metric] = "Stale" if windows else "NoData"
            continue
        pred = sum(f.predicted(inputs.t) for f in fresh) / len(fresh)
        if not math.isfinite(pred):  # windows of values near the float limit overflowed
            ignored[metric] = "NotFinite"
            continue
        predicted[metric] = pred
        if (inputs.tolerance > 0 and inputs.current is not None
                and abs(pred / threshold - 1) <= inputs.tolerance):
            by_metric[metric] = inputs.current
            tolerated.add(metric)
        else:
            by_metric[metric] = _required(metric, pred, threshold, inputs)

    if not by_metric:
        keep = inputs.current if inputs.current is not None else inputs.min_count
        return ScalingRequirement(required=keep, metric=None, by_metric={}, predicted={},
                                  reason="NoFreshMetrics", ignored=ignored)
    metric = max(by_metric, key=lambda m: by_metric[m])  # first of the largest, METRICS order
    required = by_metric[metric]
    if metric in tolerated:
        reason = "WithinTolerance"
    elif required > inputs.max_count:
        reason = "AboveMax"
    elif required < inputs.min_count:
        reason = "BelowMin"
    else:
        reason = "WithinRange"
    return ScalingRequirement(required=required, metric=metric, by_metric=by_metric,
                              predicted=predicted, reason=reason, ignored=ignored)
