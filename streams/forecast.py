"""Predictive scaling: a forecast of a cluster's requests in flight from its own history, and
the one rule that turns it into a member count (docs/predictive-scaling.md, ADR 0006).

Pure and clock-free like the rest of ``streams``: the health book feeds every hop's figure of
the cluster's total load (``Forecaster.observe``) and asks for the outlook at the hop's event
time, so the live worker, replay ``--what-if`` and the simulator forecast alike.

The model is Holt-Winters (statsmodels' ``ExponentialSmoothing``: additive trend and additive
seasonal profile) on bucket means (five minutes by default), fitted once per horizon rather than
every hop: a fit of three days of five-minute buckets takes about 15 ms, a hop comes every few
seconds. Only requests in flight is forecast: it is the cluster's total demand, the same however
many members serve it, whereas load average and memory are per-member figures that the scaling
itself changes.

The rule it obeys, after AWS's predictive scaling: a forecast may ask for members ahead of the
load (``forecast-and-scale``), never for fewer than the reactive rules (``combined_required``),
so a scale-in is always the reactive rules' own.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

from schemas.domain import ForecastSpec
from streams.scaling_rules import required_by_requests_in_flight

FORECAST_ONLY, FORECAST_AND_SCALE = "forecast-only", "forecast-and-scale"
SEASONS_NEEDED = 2
"""Holt-Winters' seasonal profile needs two full cycles to start from."""
SEASONS_KEPT = 7
"""History kept per cluster: a week of the load's cycle."""


@dataclass
class LoadHistory:
    """Bucket means of one series, the newest ``keep`` buckets, on the samples' own time."""

    bucket: float
    keep: int
    first: int | None = None
    """Index (``ts // bucket``) of the oldest bucket held."""
    sums: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def add(self, ts: float, value: float) -> None:
        """One sample; a sample older than the history held is dropped (it cannot change a fit
        already made, and event time only moves forward in practice)."""
        if not math.isfinite(value):
            return
        index = int(ts // self.bucket)
        if self.first is None:
            self.first = index
        offset = index - self.first
        if offset < 0:
            return
        if offset >= len(self.sums):
            grow = offset + 1 - len(self.sums)
            self.sums += [0.0] * grow
            self.counts += [0] * grow
        self.sums[offset] += value
        self.counts[offset] += 1
        drop = len(self.sums) - self.keep
        if drop > 0:
            del self.sums[:drop], self.counts[:drop]
            self.first += drop

    def complete(self, before: float) -> tuple[int, list[float]]:
        """(index of the first bucket, the means of the buckets that end by ``before``), gaps
        (a cluster without a serving member reports nothing) carried from the bucket before."""
        if self.first is None:
            return 0, []
        end = min(len(self.sums), int(before // self.bucket) - self.first)
        means: list[float] = []
        last: float | None = None
        for s, n in zip(self.sums[:end], self.counts[:end], strict=True):
            if n:
                last = s / n
            if last is not None:
                means.append(last)
        return self.first + end - len(means), means


@dataclass(frozen=True)
class Forecast:
    """Forecast bucket means from bucket index ``first`` on."""

    first: int
    bucket: float
    values: tuple[float, ...]

    def peak(self, start: float, end: float) -> float | None:
        """The highest forecast bucket mean over [start, end]; None when the forecast does not
        reach that far (a new one is due)."""
        lo = max(int(start // self.bucket) - self.first, 0)
        hi = min(int(end // self.bucket) - self.first, len(self.values) - 1)
        if hi < lo or hi < 0:
            return None
        return max(self.values[lo : hi + 1])


def fit(history: LoadHistory, spec: ForecastSpec, now: float) -> Forecast | None:
    """Holt-Winters on the complete buckets before ``now``, forecast over the horizon; None
    while the history holds fewer than two seasons."""
    period = max(2, round(spec.season / spec.bucket))
    first, means = history.complete(now)
    if len(means) < SEASONS_NEEDED * period:
        return None
    from statsmodels.tsa.holtwinters import ExponentialSmoothing  # heavy: only when a policy asks

    steps = math.ceil(spec.horizon / spec.bucket) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence notes on flat or short series: the fit stands
        model = ExponentialSmoothing(
            means, trend="add", seasonal="add", seasonal_periods=period, initialization_method="heuristic"
        ).fit(use_brute=False)
        values = model.forecast(steps)
    return Forecast(first + len(means), spec.bucket, tuple(max(0.0, float(v)) for v in values))


@dataclass(frozen=True)
class Outlook:
    """What the forecast asks for at one hop."""

    mode: str
    predicted: float
    """The peak forecast load over the next ``buffer`` seconds."""
    required: int
    buffer: float


@dataclass
class Forecaster:
    """One cluster's load history and its current forecast."""

    spec: ForecastSpec
    history: LoadHistory
    forecast: Forecast | None = None
    next_fit: float = -math.inf

    @classmethod
    def of(cls, spec: ForecastSpec) -> Forecaster:
        keep = SEASONS_KEPT * max(2, round(spec.season / spec.bucket))
        return cls(spec, LoadHistory(spec.bucket, keep))

    def observe(self, ts: float, total: float) -> None:
        self.history.add(ts, total)

    def outlook(self, now: float, threshold: float) -> Outlook | None:
        """The forecast's member count for the load due within the scheduling buffer; fitted
        anew once per horizon (once per bucket while the history is too short)."""
        spec = self.spec
        peak = None if self.forecast is None else self.forecast.peak(now, now + spec.buffer)
        if peak is None or now >= self.next_fit:
            self.forecast = fit(self.history, spec, now)
            self.next_fit = now + (spec.horizon if self.forecast else spec.bucket)
            peak = None if self.forecast is None else self.forecast.peak(now, now + spec.buffer)
        if peak is None:
            return None
        return Outlook(spec.mode, peak, required_by_requests_in_flight(peak, threshold), spec.buffer)


def combined_required(reactive: int, outlook: Outlook | None) -> int:
    """The count a hop asks for: the reactive rules' own, raised to the forecast's in
    ``forecast-and-scale`` mode. Never below the reactive count, so a forecast alone never
    scales in."""
    if outlook is None or outlook.mode != FORECAST_AND_SCALE:
        return reactive
    return max(reactive, outlook.required)


def outlook_figures(outlook: Outlook, applied: bool) -> dict[str, float]:
    """The ``forecast.*`` figures a ScaleCluster carries (shown by `stratos why` and the console)."""
    return {
        "forecast.predicted": outlook.predicted,
        "forecast.required": float(outlook.required),
        "forecast.buffer_s": outlook.buffer,
        "forecast.applied": 1.0 if applied else 0.0,
    }
