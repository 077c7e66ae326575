"""Scaling formulas (streams/scaling_rules.py: Stratos 4.1's three scaling rules): tables worked by hand, then
properties. Each id says the arithmetic and what would go wrong without the rule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.scaling_rules import (
    LOAD_AVERAGE,
    MAX_REQUIRED,
    MEMORY_CONSUMPTION,
    REQUESTS_IN_FLIGHT,
    ScalingInputs,
    ScalingRequirement,
    decide_required,
    required_by_load,
    required_by_memory,
    required_by_requests_in_flight,
)
from streams.windows import WindowFigures


def flat(value: float, last_ts: float = 100.0) -> WindowFigures:
    """A window whose prediction is exactly ``value`` (no trend)."""
    return WindowFigures(value, 0.0, 0.0, 4, last_ts - 45, last_ts)


# --- the three formulas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, thr, expected",
    [
        pytest.param(120, 50, 3, id="ceil(120/50)=ceil(2.4)=3: a partial member is a whole member"),
        pytest.param(100, 50, 2, id="100/50=2 exactly: no extra member at the boundary"),
        pytest.param(2.1, 0.7, 3, id="2.1/0.7=3.0000000000000004 in floats: 3, not 4 (float noise)"),
        pytest.param(0, 50, 0, id="no requests: 0 (the min rule decides the floor)"),
        pytest.param(-8, 50, 0, id="prediction extrapolated below 0: 0, never a negative count"),
    ],
)
def test_required_by_requests_in_flight(pred, thr, expected):
    assert required_by_requests_in_flight(pred, thr) == expected


@pytest.mark.parametrize(
    "pred, thr, lo, hi, expected",
    [
        pytest.param(60, 30, 2, 6, 4, id="above: ceil(2 + 30/(70/4)) = ceil(3.714) = 4"),
        pytest.param(31, 30, 2, 6, 3, id="just above: ceil(2 + 1/17.5) = ceil(2.057) = 3"),
        pytest.param(100, 30, 2, 6, 6, id="full memory: 2 + 70/17.5 = 6 = max exactly, not 7"),
        pytest.param(30, 30, 2, 6, 2, id="equal to threshold: min (not the formula's ceil(2+0)=2 by luck)"),
        pytest.param(20, 30, 2, 6, 1, id="below: min-1 = 1, a scale-down request the min rule bounds"),
        pytest.param(90, 30, 3, 3, 3, id="max == min: min, instead of dividing by zero"),
        pytest.param(20, 30, 3, 3, 2, id="max == min, below: still min-1 (the cluster refuses to go under min)"),
        pytest.param(80, 40, 1, 4, 3, id="ceil(1 + 40/(60/3)) = ceil(3.0) = 3 exactly"),
        pytest.param(
            120, 30, 2, 6, 6, id="predicted 120 % (a trend past full memory): full memory, max; not 2 + 90/17.5 -> 8"
        ),
        pytest.param(
            120, 100, 1, 3, 3, id="threshold 100 (a policy accepts it), predicted past it: max, not a division by 0"
        ),
        pytest.param(100, 100, 1, 3, 1, id="threshold 100, predicted 100: equal to threshold, min"),
        pytest.param(99, 100, 1, 3, 0, id="threshold 100, predicted 99: below, min-1"),
    ],
)
def test_required_by_memory(pred, thr, lo, hi, expected):
    assert required_by_memory(pred, thr, lo, hi) == expected


@pytest.mark.parametrize(
    "pred, thr, lo, expected",
    [
        pytest.param(60, 25, 2, 5, id="ceil(2*60/25) = ceil(4.8) = 5"),
        pytest.param(25, 25, 2, 2, id="at threshold: min, 2*25/25 = 2"),
        pytest.param(10, 25, 2, 1, id="ceil(2*10/25) = ceil(0.8) = 1: below min, cluster keeps min"),
        pytest.param(2.1, 0.7, 2, 6, id="2*2.1/0.7 = 6.000000000000001 in floats: 6, not 7"),
        pytest.param(0, 25, 2, 0, id="idle: 0"),
    ],
)
def test_required_by_load(pred, thr, lo, expected):
    assert required_by_load(pred, thr, lo) == expected


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: required_by_requests_in_flight(10, 0), id="rif threshold 0: no /0"),
        pytest.param(lambda: required_by_load(10, -1, 2), id="negative load threshold"),
        pytest.param(lambda: required_by_memory(50, float("nan"), 1, 3), id="memory threshold NaN"),
    ],
)
def test_bad_thresholds_are_refused(call):
    with pytest.raises(ValueError):
        call()


# --- decide_required -------------------------------------------------------------------------

BASE = dict(min_count=2, max_count=6)


@pytest.mark.parametrize(
    "inputs, required, metric, reason",
    [
        pytest.param(
            ScalingInputs(
                **BASE,
                thresholds={MEMORY_CONSUMPTION: 30, LOAD_AVERAGE: 25},
                figures={MEMORY_CONSUMPTION: flat(60), LOAD_AVERAGE: flat(60)},
            ),
            5,
            LOAD_AVERAGE,
            "WithinRange",
            id="max of the metrics: memory 4, load 5 -> 5 by load",
        ),
        pytest.param(
            ScalingInputs(**BASE, thresholds={REQUESTS_IN_FLIGHT: 50}, figures={REQUESTS_IN_FLIGHT: flat(400)}),
            8,
            REQUESTS_IN_FLIGHT,
            "AboveMax",
            id="400/50 = 8 > max 6: kept raw so the parent hears of the 2 past max",
        ),
        pytest.param(
            ScalingInputs(**BASE, thresholds={MEMORY_CONSUMPTION: 30}, figures={MEMORY_CONSUMPTION: flat(20)}),
            1,
            MEMORY_CONSUMPTION,
            "BelowMin",
            id="memory below threshold: min-1 = 1, reported BelowMin",
        ),
        pytest.param(
            ScalingInputs(
                **BASE, thresholds={LOAD_AVERAGE: 25}, figures={LOAD_AVERAGE: WindowFigures(20, 5, 0, 4, 55, 100)}
            ),
            2,
            LOAD_AVERAGE,
            "WithinRange",
            id="the prediction, not the average, counts: 20 + 5*1 = 25 -> ceil(2*25/25) = 2",
        ),
        pytest.param(
            ScalingInputs(
                **BASE, thresholds={MEMORY_CONSUMPTION: 30}, figures={MEMORY_CONSUMPTION: [flat(50), flat(70)]}
            ),
            4,
            MEMORY_CONSUMPTION,
            "WithinRange",
            id="per-member windows: mean of predictions (50+70)/2 = 60 -> 4",
        ),
        pytest.param(
            ScalingInputs(
                **BASE,
                thresholds={REQUESTS_IN_FLIGHT: 50, LOAD_AVERAGE: 25},
                figures={REQUESTS_IN_FLIGHT: flat(150), LOAD_AVERAGE: flat(37.5)},
            ),
            3,
            REQUESTS_IN_FLIGHT,
            "WithinRange",
            id="tie 3 = 3: Stratos's metric order names requests in flight, deterministically",
        ),
    ],
)
def test_decide_required(inputs, required, metric, reason):
    r = decide_required(inputs)
    assert (r.required, r.metric, r.reason) == (required, metric, reason)
    assert r.required == max(r.by_metric.values())


@pytest.mark.parametrize(
    "inputs, by_metric, ignored",
    [
        pytest.param(
            ScalingInputs(
                **BASE,
                thresholds={LOAD_AVERAGE: 25},
                figures={LOAD_AVERAGE: flat(10), REQUESTS_IN_FLIGHT: flat(10_000)},
            ),
            {LOAD_AVERAGE: 1},
            {REQUESTS_IN_FLIGHT: "NoThreshold", MEMORY_CONSUMPTION: "NoThreshold"},
            id="no threshold in the policy: 10,000 requests do not vote",
        ),
        pytest.param(
            ScalingInputs(
                **BASE,
                thresholds={LOAD_AVERAGE: 25, MEMORY_CONSUMPTION: 30},
                figures={LOAD_AVERAGE: flat(10, last_ts=200), MEMORY_CONSUMPTION: flat(90)},
                fresh_after=150,
            ),
            {LOAD_AVERAGE: 1},
            {REQUESTS_IN_FLIGHT: "NoThreshold", MEMORY_CONSUMPTION: "Stale"},
            id="reset rule: memory seen before the last decision (100 <= 150) does not vote again "
            "(Stratos kept scaling on it)",
        ),
        pytest.param(
            ScalingInputs(
                **BASE,
                thresholds={LOAD_AVERAGE: 25, MEMORY_CONSUMPTION: 30},
                figures={LOAD_AVERAGE: flat(10, last_ts=200), MEMORY_CONSUMPTION: flat(90)},
                now=200,
                max_age=60,
            ),
            {LOAD_AVERAGE: 1},
            {REQUESTS_IN_FLIGHT: "NoThreshold", MEMORY_CONSUMPTION: "Stale"},
            id="max age: memory 100 s old > 60 s does not vote",
        ),
        pytest.param(
            ScalingInputs(
                **BASE,
                thresholds={MEMORY_CONSUMPTION: 30},
                figures={MEMORY_CONSUMPTION: [flat(60, last_ts=200), flat(0, last_ts=90)]},
                now=200,
                max_age=60,
            ),
            {MEMORY_CONSUMPTION: 4},
            {REQUESTS_IN_FLIGHT: "NoThreshold", LOAD_AVERAGE: "NoThreshold"},
            id="a silent member's stale 0 % is left out of the mean: 60 -> 4, not 30 -> 2",
        ),
        pytest.param(
            ScalingInputs(
                **BASE,
                thresholds={LOAD_AVERAGE: 25, MEMORY_CONSUMPTION: 30},
                figures={LOAD_AVERAGE: flat(60), MEMORY_CONSUMPTION: None},
            ),
            {LOAD_AVERAGE: 5},
            {REQUESTS_IN_FLIGHT: "NoThreshold", MEMORY_CONSUMPTION: "NoData"},
            id="no window yet: NoData, not a 0 % vote for min-1",
        ),
    ],
)
def test_only_fresh_metrics_with_thresholds_vote(inputs, by_metric, ignored):
    r = decide_required(inputs)
    assert r.by_metric == by_metric
    assert r.ignored == ignored
    assert set(r.predicted) == set(by_metric)


@pytest.mark.parametrize(
    "current, expected",
    [
        pytest.param(5, 5, id="nothing fresh, current 5: keep 5 (no scale-down on silence)"),
        pytest.param(None, 2, id="nothing fresh, current unknown: min"),
    ],
)
def test_no_fresh_metrics(current, expected):
    r = decide_required(
        ScalingInputs(
            **BASE, thresholds={LOAD_AVERAGE: 25}, figures={LOAD_AVERAGE: flat(60)}, fresh_after=100, current=current
        )
    )
    assert (r.required, r.metric, r.reason) == (expected, None, "NoFreshMetrics")


@pytest.mark.parametrize(
    "pred, tolerance, current, required, reason",
    [
        pytest.param(
            31, 0.1, 4, 4, "WithinTolerance", id="|31/30-1| = 0.033 <= 0.1: keep 4 (without the band: 3, a scale-down)"
        ),
        pytest.param(28, 0.1, 4, 4, "WithinTolerance", id="|28/30-1| = 0.067 <= 0.1: keep 4 (without: min-1 = 1)"),
        pytest.param(60, 0.1, 4, 4, "WithinRange", id="|60/30-1| = 1 > 0.1: the formula, ceil(3.714) = 4"),
        pytest.param(
            30, 0.0, 4, 2, "WithinRange", id="tolerance 0: Stratos's 'equal -> min' is kept, not 'keep current'"
        ),
    ],
)
def test_tolerance_band(pred, tolerance, current, required, reason):
    r = decide_required(
        ScalingInputs(
            **BASE,
            thresholds={MEMORY_CONSUMPTION: 30},
            figures={MEMORY_CONSUMPTION: flat(pred)},
            tolerance=tolerance,
            current=current,
        )
    )
    assert (r.required, r.reason) == (required, reason)


def test_requirement_is_frozen_and_round_trips_as_json():
    r = decide_required(ScalingInputs(**BASE, thresholds={LOAD_AVERAGE: 25}, figures={LOAD_AVERAGE: flat(60)}))
    assert ScalingRequirement.model_validate_json(r.model_dump_json()) == r
    with pytest.raises(ValidationError):  # frozen
        r.required = 1


# --- properties ------------------------------------------------------------------------------

preds = st.floats(-1000, 1e5, allow_nan=False)
thresholds = st.floats(0.01, 1e4)


@given(a=preds, b=preds, thr=thresholds)
def test_requests_in_flight_monotone_and_enough(a, b, thr):
    lo, hi = sorted((a, b))
    assert required_by_requests_in_flight(lo, thr) <= required_by_requests_in_flight(hi, thr)
    n = required_by_requests_in_flight(hi, thr)
    if hi > 0:
        assert n >= min(hi / thr, MAX_REQUIRED) - 1e-9, (
            "enough members to carry the load, up to the cap (float noise forgiven)"
        )
        assert n - 1 < hi / thr, "not one more than needed"


@given(a=st.floats(0, 100), b=st.floats(0, 100), thr=st.floats(1, 99), lo=st.integers(1, 20), span=st.integers(0, 30))
def test_memory_monotone_and_within_min_minus_one_to_max(a, b, thr, lo, span):
    hi = lo + span
    x, y = sorted((a, b))
    rx, ry = required_by_memory(x, thr, lo, hi), required_by_memory(y, thr, lo, hi)
    assert rx <= ry
    assert lo - 1 <= rx <= hi and lo - 1 <= ry <= hi


@given(a=preds, b=preds, thr=thresholds, lo=st.integers(0, 50))
def test_load_monotone_and_never_negative(a, b, thr, lo):
    x, y = sorted((a, b))
    assert 0 <= required_by_load(x, thr, lo) <= required_by_load(y, thr, lo)


@given(
    rif=st.none() | st.floats(0, 1000),
    mem=st.none() | st.floats(0, 100),
    load=st.none() | st.floats(0, 500),
    tol=st.sampled_from([0.0, 0.1]),
    current=st.none() | st.integers(0, 10),
)
def test_required_is_the_largest_vote(rif, mem, load, tol, current):
    values = {REQUESTS_IN_FLIGHT: rif, MEMORY_CONSUMPTION: mem, LOAD_AVERAGE: load}
    inputs = ScalingInputs(
        min_count=2,
        max_count=6,
        thresholds={REQUESTS_IN_FLIGHT: 50, MEMORY_CONSUMPTION: 30, LOAD_AVERAGE: 25},
        figures={m: None if v is None else flat(v) for m, v in values.items()},
        tolerance=tol,
        current=current,
    )
    r = decide_required(inputs)
    if r.by_metric:
        assert r.required == max(r.by_metric.values()) == r.by_metric[r.metric]
        assert r.required >= 0
    else:
        assert r.reason == "NoFreshMetrics"
    assert set(r.by_metric) | set(r.ignored) == set(values)
    assert math.isfinite(sum(r.predicted.values()))


# --- every threshold a policy accepts gives a finite, bounded count --------------------------
# A policy accepts any threshold > 0, infinity included (schemas.definitions.Threshold), and
# memory thresholds up to 100 %. A prediction votes when it is finite (decide_required leaves
# out the others, NotFinite), so the rules take any finite float: an extrapolated trend.

any_threshold = st.floats(min_value=0, exclude_min=True)  # up to and including +inf
memory_threshold = st.floats(min_value=0, max_value=100, exclude_min=True)
any_prediction = st.floats(allow_nan=False, allow_infinity=False)
counts = st.integers(0, 10_000)


@given(pred=any_prediction, thr=any_threshold)
def test_requests_in_flight_gives_a_bounded_count_for_any_accepted_threshold(pred, thr):
    assert 0 <= required_by_requests_in_flight(pred, thr) <= MAX_REQUIRED


@given(pred=any_prediction, thr=any_threshold, lo=counts)
def test_load_gives_a_bounded_count_for_any_accepted_threshold(pred, thr, lo):
    assert 0 <= required_by_load(pred, thr, lo) <= MAX_REQUIRED


@given(a=any_prediction, b=any_prediction, thr=memory_threshold, lo=counts, span=counts)
def test_memory_stays_within_min_minus_one_to_max_for_any_accepted_threshold(a, b, thr, lo, span):
    hi = lo + span
    x, y = sorted((a, b))
    rx, ry = required_by_memory(x, thr, lo, hi), required_by_memory(y, thr, lo, hi)
    assert rx <= ry, "more memory never asks for fewer members"
    assert max(0, lo - 1) <= rx <= hi and max(0, lo - 1) <= ry <= hi


@given(pred=st.floats(0, 100), thr=st.floats(0.01, 99.99), lo=st.integers(0, 50), span=st.integers(1, 50))
def test_memory_near_full_needs_max_the_formula_and_its_bound_agree(pred, thr, lo, span):
    hi = lo + span
    n = required_by_memory(max(pred, 100.0), thr, lo, hi)
    assert n == hi, "full memory (100 %, or a prediction past it) needs max"


figures = st.builds(
    WindowFigures,
    average=st.floats(),
    gradient=st.floats(),
    second_derivative=st.floats(),
    count=st.integers(1, 100),
    first_ts=st.just(1.0),
    last_ts=st.just(2.0),
)


@given(
    fig=st.dictionaries(
        st.sampled_from([REQUESTS_IN_FLIGHT, MEMORY_CONSUMPTION, LOAD_AVERAGE]), st.lists(figures, max_size=3)
    ),
    thr=st.fixed_dictionaries(
        {REQUESTS_IN_FLIGHT: any_threshold, MEMORY_CONSUMPTION: memory_threshold, LOAD_AVERAGE: any_threshold}
    ),
    lo=st.integers(0, 100),
    span=st.integers(0, 100),
)
def test_decide_required_never_raises_whatever_the_windows_say(fig, thr, lo, span):
    r = decide_required(ScalingInputs(min_count=lo, max_count=lo + span, thresholds=thr, figures=fig))
    assert 0 <= r.required <= MAX_REQUIRED
    assert all(math.isfinite(p) for p in r.predicted.values()), "a prediction that is no number does not vote"
    assert set(r.by_metric) | set(r.ignored) == set(thr)
