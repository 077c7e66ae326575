"""Load shapes of a simulation scenario: pure functions of time (and of a seeded generator).

Each shape gives its value at every step time of a run (``series``); a load is the sum of its
shapes, clipped at 0 (no metric is negative) and, for memory, at 100 %. Random shapes draw from
the generator they are given, in step order, so a seed gives the same series bit for bit.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Steps:
    """Hold each value from its time on: ``[[0, 60], [600, 10]]``; before the first, the first."""

    points: tuple[tuple[float, float], ...]

    def series(self, times: Sequence[float], rng: random.Random) -> list[float]:
        starts = [p[0] for p in self.points]
        values = [self.points[0][1], *(p[1] for p in self.points)]  # before the first: the first
        return [values[bisect.bisect_right(starts, t)] for t in times]


@dataclass(frozen=True, slots=True)
class Ramp:
    """Linear from ``start`` (value ``low``) to ``end`` (value ``high``), flat outside."""

    low: float
    high: float
    start: float
    end: float

    def series(self, times: Sequence[float], rng: random.Random) -> list[float]:
        span = max(self.end - self.start, 1e-9)
        return [self.low + (self.high - self.low) * min(max((t - self.start) / span, 0.0), 1.0) for t in times]


@dataclass(frozen=True, slots=True)
class Sine:
    """``mean + amplitude * sin(2 pi (t + phase) / period)``: a diurnal day with period 24h."""

    mean: float
    amplitude: float
    period: float
    phase: float = 0.0

    def series(self, times: Sequence[float], rng: random.Random) -> list[float]:
        return [self.mean + self.amplitude * math.sin(2 * math.pi * (t + self.phase) / self.period) for t in times]


@dataclass(frozen=True, slots=True)
class Spike:
    """``base``, then ``peak`` from ``at`` for ``duration`` seconds (a flash crowd), reached
    linearly over ``rise`` seconds and left over ``fall`` seconds."""

    base: float
    peak: float
    at: float
    duration: float
    rise: float = 0.0
    fall: float = 0.0

    def value(self, t: float) -> float:
        top_end = self.at + self.duration
        if t < self.at - self.rise or t >= top_end + self.fall:
            return self.base
        if t < self.at:
            return self.base + (self.peak - self.base) * (t - (self.at - self.rise)) / self.rise
        if t < top_end:
            return self.peak
        return self.peak - (self.peak - self.base) * (t - top_end) / self.fall

    def series(self, times: Sequence[float], rng: random.Random) -> list[float]:
        return [self.value(t) for t in times]


@dataclass(frozen=True, slots=True)
class Walk:
    """A seeded random walk: ``start``, then a normal step of ``sigma`` per step, kept within
    ``low..high`` by reflection."""

    start: float
    sigma: float
    low: float = 0.0
    high: float = math.inf

    def series(self, times: Sequence[float], rng: random.Random) -> list[float]:
        value, out = self.start, []
        for _ in times:
            out.append(value)
            value += rng.gauss(0.0, self.sigma)
            if value < self.low:
                value = 2 * self.low - value
            if value > self.high:
                value = 2 * self.high - value
            value = min(max(value, self.low), self.high)
        return out


@dataclass(frozen=True, slots=True)
class Noise:
    """Independent normal noise ``mean + N(0, sigma)`` at every step (added to the other shapes)."""

    sigma: float
    mean: float = 0.0

    def series(self, times: Sequence[float], rng: random.Random) -> list[float]:
        return [self.mean + rng.gauss(0.0, self.sigma) for _ in times]


@dataclass(frozen=True, slots=True)
class Trace:
    """A recorded series ``(time_s, value)``, interpolated linearly, held past its ends."""

    points: tuple[tuple[float, float], ...]

    def series(self, times: Sequence[float], rng: random.Random) -> list[float]:
        xs = [p[0] for p in self.points]
        out = []
        for t in times:
            i = bisect.bisect_right(xs, t)
            if i == 0:
                out.append(self.points[0][1])
            elif i == len(xs):
                out.append(self.points[-1][1])
            else:
                (t0, v0), (t1, v1) = self.points[i - 1], self.points[i]
                out.append(v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1)
        return out


Shape = Steps | Ramp | Sine | Spike | Walk | Noise | Trace


def load_series(
    shapes: Sequence[Shape], times: Sequence[float], rng: random.Random, ceiling: float = math.inf
) -> list[float]:
    """The sum of the shapes at every time, clipped to ``0..ceiling``."""
    total = [0.0] * len(times)
    for shape in shapes:
        total = [t + v for t, v in zip(total, shape.series(times, rng), strict=True)]
    floored = [0.0 if v < 0.0 else v for v in total]  # max(v, 0.0) without a call per value
    return floored if ceiling == math.inf else [ceiling if ceiling < v else v for v in floored]
