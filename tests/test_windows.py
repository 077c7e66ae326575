"""Window maths (streams/windows.py): worked examples by hand, then properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.windows import SlidingWindow, WindowFigures, compute_window, predicted

approx = lambda x: pytest.approx(x, rel=1e-9, abs=1e-9)  # noqa: E731


# (samples, average, gradient, second_derivative)
CASES = [
    pytest.param(
        [(0, 10), (15, 20), (30, 30), (45, 40), (60, 50)],
        30.0,
        40 / 60,
        0.0,
        id="linear every 15 s: avg 150/5=30, grad (50-10)/60=0.667, sd 0",
    ),
    pytest.param(
        [(0, 0), (10, 1), (20, 4)],
        5 / 3,
        0.2,
        0.02,
        id="v=0.01t^2: grad (4-0)/20=0.2, halves 0.1 and 0.3 placed 10 s apart -> "
        "sd 0.02=2a (dividing by the whole span would halve it)",
    ),
    pytest.param(
        [(100.0, 5), (100.2, 7)],
        6.0,
        2.0,
        0.0,
        id="dt 0.2 s floored to 1 s: grad (7-5)/1=2, not 10 (no spike from twin stamps)",
    ),
    pytest.param([(5, 42)], 42.0, 0.0, 0.0, id="one sample: no slope, no curvature"),
    pytest.param([(0, 10), (15, 70)], 40.0, 4.0, 0.0, id="two samples: grad 60/15=4, sd needs 3 samples so 0"),
    pytest.param(
        [(30, 30), (0, 10), (60, 50), (15, 20), (45, 40)],
        30.0,
        40 / 60,
        0.0,
        id="late records: ordered by their own timestamps, not arrival",
    ),
    pytest.param(
        [(0, 50), (15, 60), (30, 60), (45, 50)],
        55.0,
        0.0,
        -1 / 22.5,
        id="rise then fall: first/last grad 0 hides it, halves share (30,60): "
        "(60-50)/30=1/3 and (50-60)/15=-2/3, sd (-2/3-1/3)/22.5=-0.0444",
    ),
]


@pytest.mark.parametrize("samples, average, gradient, sd", CASES)
def test_compute_window_worked_examples(samples, average, gradient, sd):
    figures = compute_window(samples)
    assert figures is not None
    assert figures.average == approx(average)
    assert figures.gradient == approx(gradient)
    assert figures.second_derivative == approx(sd)
    assert figures.count == len(samples)
    assert figures.first_ts == min(t for t, _ in samples)
    assert figures.last_ts == max(t for t, _ in samples)


def test_empty_window_is_none_not_zero_load():
    assert compute_window([]) is None


@pytest.mark.parametrize(
    "avg, grad, sd, t, expected",
    [
        pytest.param(50, 2, 4, 1.0, 54.0, id="t=1: 50+2+0.5*4=54 (Stratos's one-step look-ahead)"),
        pytest.param(50, 2, 4, 2.0, 62.0, id="t=2: 50+4+0.5*4*4=62 (curvature grows with t^2)"),
        pytest.param(50, -3, 0, 1.0, 47.0, id="falling trend lowers the prediction: 50-3=47"),
    ],
)
def test_predicted(avg, grad, sd, t, expected):
    assert predicted(avg, grad, sd, t) == approx(expected)
    assert WindowFigures(avg, grad, sd, 3, 0, 1).predicted(t) == approx(expected)


# --- SlidingWindow ---------------------------------------------------------------------------


def test_sliding_window_add_evict_figures():
    w = SlidingWindow()
    assert w.figures() is None
    for ts, v in [(0, 10), (15, 20), (30, 30)]:
        w.add(ts, v)
    assert w.figures().average == approx(20)
    assert w.evict(15) == 1, "evict drops samples strictly before the cut"
    assert w.samples() == [(15, 20), (30, 30)]
    assert w.figures().gradient == approx(10 / 15), "cached figures must be invalidated"


def test_sliding_window_span_evicts_by_event_time():
    w = SlidingWindow(span=60)
    for ts in range(0, 91, 15):
        w.add(ts, ts)
    # newest 90, keep ts >= 30: 30, 45, 60, 75, 90
    assert [t for t, _ in w.samples()] == [30, 45, 60, 75, 90]


def test_sliding_window_late_record_kept_in_order_so_eviction_stays_correct():
    w = SlidingWindow()
    for ts in (0, 30, 45):
        w.add(ts, 1)
    w.add(15, 1)  # arrives late
    assert [t for t, _ in w.samples()] == [0, 15, 30, 45]
    w.evict(20)
    assert [t for t, _ in w.samples()] == [30, 45]


def test_sliding_window_holds_only_its_span_over_a_long_stream():
    """50k adds with a 60 s span at 100 records per second of event time: the running window
    keeps only the last 60 s and reads the same figures as a window built from those samples
    alone (its speed is bench/health.py's to measure, not a test's)."""
    w = SlidingWindow(span=60)
    for i in range(50_000):
        w.add(i * 0.01, float(i % 100))
        w.figures()
    held = w.samples()
    assert held[0][0] >= 499.99 - 60 and len(held) <= 6_001
    fresh = SlidingWindow(span=60)
    for t, v in held:
        fresh.add(t, v)
    running, rebuilt = w.figures(), fresh.figures()
    assert running is not None and rebuilt is not None
    assert running.count == rebuilt.count == len(held)
    assert running.average == pytest.approx(rebuilt.average)


# --- properties ------------------------------------------------------------------------------

gaps = st.lists(st.floats(1.0, 60.0), min_size=2, max_size=40)
coef = st.floats(-100.0, 100.0)


def _times(start: float, gap_list: list[float]) -> list[float]:
    times = [start]
    for g in gap_list:
        times.append(times[-1] + g)
    return times


@given(start=st.floats(0, 1e6), gap_list=gaps, slope=coef, intercept=coef)
def test_gradient_of_linear_series_is_its_slope_and_curvature_zero(start, gap_list, slope, intercept):
    times = _times(start, gap_list)
    f = compute_window([(t, intercept + slope * (t - start)) for t in times])
    assert f.gradient == pytest.approx(slope, rel=1e-6, abs=1e-6)
    assert f.second_derivative == pytest.approx(0.0, abs=1e-6)


@given(start=st.floats(0, 1e4), gap_list=gaps, a=st.floats(-5, 5), b=coef)
def test_second_derivative_of_quadratic_is_2a(start, gap_list, a, b):
    times = _times(start, gap_list)
    f = compute_window([(t, a * (t - start) ** 2 + b * (t - start)) for t in times])
    if f.count >= 3:
        assert f.second_derivative == pytest.approx(2 * a, rel=1e-6, abs=1e-6)


@given(
    st.lists(st.tuples(st.floats(0, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=50, unique_by=lambda s: s[0]),
    st.randoms(use_true_random=False),
)
def test_order_of_arrival_does_not_change_figures_and_average_is_bounded(samples, rnd):
    """Distinct stamps: with equal ones, arrival order is the only order there is."""
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    a, b = compute_window(samples), compute_window(shuffled)
    assert a == b
    values = [v for _, v in samples]
    assert min(values) - 1e-6 <= a.average <= max(values) + 1e-6


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.floats(0, 1000), st.floats(-100, 100)),
            st.tuples(st.just("evict"), st.floats(0, 1000), st.just(0.0)),
        ),
        max_size=60,
    )
)
def test_sliding_window_matches_recomputing_from_scratch(ops):
    """Model test: the incremental window equals compute_window over the samples it should
    hold, whatever the order of adds (late ones included) and evictions."""
    w, kept = SlidingWindow(), []
    for op, ts, v in ops:
        if op == "add":
            w.add(ts, v)
            kept.append((ts, v))
        else:
            w.evict(ts)
            kept = [s for s in kept if s[0] >= ts]
        assert sorted(t for t, _ in w.samples()) == [t for t, _ in w.samples()]
        assert sorted(w.samples()) == sorted(kept)
        expected = compute_window(kept)
        got = w.figures()
        if expected is None:
            assert got is None
        else:
            assert got.count == expected.count
            assert got.average == pytest.approx(expected.average, rel=1e-9, abs=1e-9)
            assert got.gradient == pytest.approx(expected.gradient, rel=1e-9, abs=1e-9)


def test_random_walk_smoke():
    rnd = random.Random(7)
    w = SlidingWindow(span=60)
    for i in range(1000):
        w.add(i * 15.0, rnd.uniform(0, 100))
    assert len(w) == 5  # 60 s span at 15 s period: the window ends inclusive
