"""Window maths for health statistics (docs/operators/autoscaler.md): average, gradient, second derivative.

Pure: every figure comes from the samples' own timestamps (never the wall clock), so a replay
of the health topic gives the same numbers as the live run. A sample is
``(timestamp_seconds, value)``.

- gradient: Stratos's first/last rule, ``(last - first) / max(dt, 1 s)`` per second. The 1 s
  floor keeps two samples stamped (almost) together from producing a huge slope.
- second derivative: the gradient of the gradients of the two halves of the window (they share
  the middle sample). Each half's gradient is placed at the middle of that half's time span,
  where the first/last slope of a quadratic equals its true derivative; so for
  ``v = a t^2`` the figure is exactly ``2a`` (the curvature ``predicted`` expects).
  Stratos divided by the whole span, which halves it. Fewer than 3 samples give 0: two points
  say nothing about curvature.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

Sample = tuple[float, float]

MIN_SPAN = 1.0
"""Seconds: the floor on any time difference used as a divisor (Stratos's rule)."""


def predicted(average: float, gradient: float, second_derivative: float, t: float = 1.0) -> float:
    """Stratos's prediction ``avg + grad*t + sd*t^2/2``: where the metric heads ``t`` from now.

    t is in the gradient's unit (seconds here). Stratos used t = 1 and so, in practice, the
    average plus a nudge in the direction of the trend.
    """
    return average + gradient * t + 0.5 * second_derivative * t * t


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """What a window says about one metric of one key (cluster, partition or member)."""

    average: float
    gradient: float
    second_derivative: float
    count: int
    first_ts: float
    last_ts: float

    def predicted(self, t: float = 1.0) -> float:
        return predicted(self.average, self.gradient, self.second_derivative, t)


def _slope(first: Sample, last: Sample) -> float:
    return (last[1] - first[1]) / max(last[0] - first[0], MIN_SPAN)


def _second_derivative(ordered: Sequence[Sample]) -> float:
    if len(ordered) < 3:
        return 0.0
    first, middle, last = ordered[0], ordered[len(ordered) // 2], ordered[-1]
    early, late = _slope(first, middle), _slope(middle, last)
    # each half's slope belongs to the middle of its span: (t0+tm)/2 and (tm+tn)/2
    between = (last[0] - first[0]) / 2.0
    return (late - early) / max(between, MIN_SPAN)


def _from_ordered(ordered: Sequence[Sample], total: float) -> WindowFigures:
    first, last = ordered[0], ordered[-1]
    return WindowFigures(
        average=total / len(ordered),
        gradient=_slope(first, last),
        second_derivative=_second_derivative(ordered),
        count=len(ordered),
        first_ts=first[0],
        last_ts=last[0],
    )


def compute_window(samples: Iterable[Sample]) -> WindowFigures | None:
    """Figures of one window, or None when it holds no sample (no data is not zero load).

    Samples may come in any order (records arrive late): they are ordered by timestamp first.
    """
    ordered = sorted(samples, key=lambda s: s[0])  # Timsort: linear when already in order
    if not ordered:
        return None
    return _from_ordered(ordered, math.fsum(v for _, v in ordered))


class SlidingWindow:
    """The samples of one key, kept in timestamp order; a faust agent keeps one per key.

    ``add`` is O(1) for records in order (the usual case) and a bisect insert for late ones,
    so eviction by timestamp stays a pop from the left. With ``span`` set, every ``add``
    drops samples older than ``newest - span`` (event time, so replay evicts the same way).
    A running total makes ``figures`` O(1) apart from reaching the middle sample (a deque
    walks its 64-sample blocks), so it can be read on every record; it is also cached until
    the window changes.
    """

    __slots__ = ("span", "_samples", "_total", "_figures")

    def __init__(self, span: float | None = None) -> None:
        self.span = span
        self._samples: deque[Sample] = deque()
        self._total = 0.0
        self._figures: WindowFigures | None = None

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, ts: float, value: float) -> None:
        samples = self._samples
        if not samples or ts >= samples[-1][0]:
            samples.append((ts, value))
        else:  # a late record: keep the order eviction relies on
            samples.insert(bisect.bisect_right(samples, ts, key=lambda s: s[0]), (ts, value))
        self._total += value
        self._figures = None
        if self.span is not None:
            self.evict(samples[-1][0] - self.span)

    def evict(self, before_ts: float) -> int:
        """Drop samples stamped strictly before ``before_ts``; returns how many went."""
        samples, dropped = self._samples, 0
        while samples and samples[0][0] < before_ts:
            self._total -= samples.popleft()[1]
            dropped += 1
        if dropped:
            self._figures = None
            if not samples:
                self._total = 0.0  # drop accumulated rounding with the last sample
        return dropped

    def samples(self) -> list[Sample]:
        return list(self._samples)

    def figures(self) -> WindowFigures | None:
        if self._figures is None and self._samples:
            self._figures = _from_ordered(self._samples, self._total)
        return self._figures
