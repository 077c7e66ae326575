"""The logging service's pure rules: the per-member token bucket, levels, durations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.logrules import TokenBucket, at_least, level_name, parse_duration


@given(
    st.floats(1, 1000), st.integers(1, 5000), st.lists(st.tuples(st.floats(0, 5), st.integers(0, 3000)), max_size=40)
)
def test_a_bucket_passes_at_most_its_burst_plus_its_rate_and_counts_every_refusal(rate, burst, calls):
    bucket, now, asked, passed = TokenBucket(rate, burst), 0.0, 0, 0
    for gap, count in calls:
        now += gap
        allowed = bucket.take(now, count)
        assert 0 <= allowed <= count
        asked, passed = asked + count, passed + allowed
        assert passed <= burst + rate * now + 1e-6
    assert bucket.refused == asked - passed


@given(st.floats(1, 1000), st.integers(1, 500), st.floats(0, 100))
def test_a_quiet_member_always_gets_its_burst_after_waiting_long_enough(rate, burst, flood):
    bucket = TokenBucket(rate, burst)
    bucket.take(0.0, int(flood * rate) + burst)  # a flood empties it
    assert bucket.take(burst / rate + 0.001, burst) == burst


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1.5d", 129600)],
    ids=["bare", "s", "m", "h", "fraction"],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "-5m"], ids=["empty", "word", "long unit", "negative"])
def test_durations_that_are_not_say_what_is_accepted(text):
    with pytest.raises(ValueError, match="a number with s, m, h or d"):
        parse_duration(text)


def test_levels_read_warn_as_warning_and_compare_by_severity():
    assert level_name("warn") == "WARNING" and level_name(" error ") == "ERROR"
    assert at_least("ERROR", "WARNING") and not at_least("INFO", "WARNING") and at_least("DEBUG", None)
    with pytest.raises(ValueError, match="one of DEBUG, INFO"):
        level_name("loud")
