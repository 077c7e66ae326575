"""Predictive scaling (streams/forecast.py): the history, the Holt-Winters forecast, the rule
that a forecast never scales in, its hook in the health book, and its effect in the simulator."""

from __future__ import annotations

import dataclasses
import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from actors.topology_plan import scaling_settings
from infra.simulation.scenario import load_scenario
from schemas.definitions import AutoscalingPolicy
from schemas.domain import ForecastSpec
from streams.forecast import (
    FORECAST_AND_SCALE,
    FORECAST_ONLY,
    Forecaster,
    LoadHistory,
    Outlook,
    combined_required,
    fit,
)
from streams.health_state import HealthBook
from streams.simulation import Simulation
from tests.test_health_state import KEY, stat, view

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPEC = ForecastSpec(mode=FORECAST_AND_SCALE, horizon=600.0, buffer=120.0, season=600.0, bucket=60.0)


def wave(ts: float, mean: float = 100.0, amplitude: float = 80.0, period: float = 600.0) -> float:
    return mean + amplitude * math.sin(2 * math.pi * ts / period)


# --- the history and the fit --------------------------------------------------------------------


def test_history_keeps_bucket_means_fills_gaps_and_only_complete_buckets():
    history = LoadHistory(bucket=60.0, keep=100)
    for ts, value in ((0, 10.0), (30, 20.0), (61, 40.0), (200, 7.0)):
        history.add(ts, value)
    # bucket 2 (120-180 s) had no sample: it carries bucket 1's mean; bucket 3 is not over at 230 s
    assert history.complete(230.0) == (0, [15.0, 40.0, 40.0])
    assert history.complete(240.0) == (0, [15.0, 40.0, 40.0, 7.0])


def test_history_drops_its_oldest_buckets_past_what_it_keeps():
    history = LoadHistory(bucket=1.0, keep=3)
    for ts in range(6):
        history.add(ts, float(ts))
    assert history.complete(6.0) == (3, [3.0, 4.0, 5.0])


def test_no_forecast_before_two_seasons_of_history():
    history = LoadHistory(bucket=60.0, keep=1000)
    for ts in range(0, 1199, 15):
        history.add(ts, wave(ts))
    assert fit(history, SPEC, 1199.0) is None
    history.add(1199.0, wave(1199.0))
    assert fit(history, SPEC, 1200.0) is not None


def test_holt_winters_follows_a_seasonal_load_with_a_trend():
    """Three cycles of a wave on a rising trend: the next cycle's bucket means within 5 %."""
    history = LoadHistory(bucket=60.0, keep=1000)

    def load(ts: float) -> float:
        return wave(ts) + ts / 60

    for ts in range(0, 1800, 15):
        history.add(ts, load(ts))
    forecast = fit(history, SPEC, 1800.0)
    assert forecast is not None and forecast.first == 30
    truth = [sum(load(b * 60 + s) for s in range(0, 60, 15)) / 4 for b in range(30, 40)]
    errors = [abs(f - t) / t for f, t in zip(forecast.values, truth, strict=False)]
    assert max(errors) < 0.05, errors
    # the peak over the next two minutes is the largest of those buckets
    assert forecast.peak(1800.0, 1920.0) == max(forecast.values[:3])
    assert forecast.peak(1800.0 + 60 * 40, 1800.0 + 60 * 41) is None


# --- the rule: a forecast never scales in ---------------------------------------------------------

outlooks = st.builds(
    Outlook,
    mode=st.sampled_from([FORECAST_ONLY, FORECAST_AND_SCALE]),
    predicted=st.floats(0, 1e6),
    required=st.integers(0, 10_000),
    buffer=st.floats(0, 3600),
)


@given(reactive=st.integers(0, 10_000), current=st.integers(0, 10_000), outlook=st.none() | outlooks)
def test_a_forecast_never_asks_for_fewer_members_than_the_reactive_rules(reactive, current, outlook):
    required = combined_required(reactive, outlook)
    assert required >= reactive
    if required < current:  # a scale-in: the reactive rules asked for it, at least as deep
        assert reactive <= required
    if outlook is None or outlook.mode == FORECAST_ONLY:
        assert required == reactive  # forecast-only changes nothing
    else:
        assert required == max(reactive, outlook.required)


# --- the hook in the health book (the live worker's decision, replay and the simulator) ------------


def _hops(forecast: ForecastSpec | None, cycles: int = 4) -> list[tuple[float, int, dict]]:
    """(ts, required, figures) of every hop on a requests-in-flight wave, 15 s apart."""
    v = dataclasses.replace(view(thresholds={"requests_in_flight": 20.0}), forecast=forecast)
    book = HealthBook(window_seconds=60.0, fault_seconds=60.0, max_skew=math.inf, max_age=math.inf)
    out = []
    for ts in range(0, int(600 * cycles), 15):
        book.ingest(stat(None, wave(ts), ts, metric="requests_in_flight"), {KEY: v}, 0, 0.0, 0.0)
        (decision,) = book.assess({KEY: v}, float(ts))
        out.append((ts, decision.command.required, decision.command.figures))
    return out


def test_forecast_and_scale_asks_ahead_of_the_load_and_never_below_the_reactive_count():
    plain = _hops(None)
    ahead = _hops(SPEC)
    assert [ts for ts, *_ in plain] == [ts for ts, *_ in ahead]
    assert all(a >= p for (_, p, _), (_, a, _) in zip(plain, ahead, strict=True))
    # no forecast before two seasons of history (its first bucket was partial); after, the
    # forecast raises the count ahead of the rise
    assert all("forecast.required" not in f for ts, _, f in ahead if ts < 1140)
    raised = [ts for (ts, p, _), (_, a, _) in zip(plain, ahead, strict=True) if a > p]
    assert raised and min(raised) >= 1140
    assert any(f.get("forecast.applied") == 1.0 for _, _, f in ahead)


def test_forecast_only_shows_the_forecast_and_changes_no_count():
    plain = _hops(None)
    shown = _hops(SPEC.model_copy(update={"mode": FORECAST_ONLY}))
    assert [r for _, r, _ in plain] == [r for _, r, _ in shown]
    late = [f for ts, _, f in shown if ts >= 1200]
    assert late and all(f["forecast.applied"] == 0.0 and f["forecast.required"] >= 0 for f in late)


def test_the_forecaster_refits_once_per_horizon():
    forecaster = Forecaster.of(SPEC)
    for ts in range(0, 1200, 15):
        forecaster.observe(ts, wave(ts))
    assert forecaster.outlook(1200.0, 20.0) is not None
    first = forecaster.forecast
    assert forecaster.outlook(1500.0, 20.0) is not None and forecaster.forecast is first
    assert forecaster.outlook(1800.0, 20.0) is not None and forecaster.forecast is not first


# --- the policy fields -----------------------------------------------------------------------------


def _policy(**predictive):
    return {"id": "p", "loadThresholds": {"requestsInFlight": {"threshold": 20}}, "predictive": predictive}


def test_a_policy_asks_for_a_forecast_and_the_cluster_spec_holds_it_with_defaults():
    body = _policy(mode="forecast-and-scale", schedulingBufferSeconds=600)
    AutoscalingPolicy.model_validate(body)
    assert scaling_settings(body)["forecast"] == ForecastSpec(
        mode="forecast-and-scale", horizon=3600.0, buffer=600.0, season=86400.0, bucket=300.0
    )
    assert scaling_settings({"id": "p", "loadThresholds": {}})["forecast"] is None


@pytest.mark.parametrize(
    ("predictive", "named"),
    [
        ({"mode": "sometimes"}, "predictive.mode"),
        ({"mode": "forecast-only", "horizonSeconds": 60, "schedulingBufferSeconds": 120}, "schedulingBufferSeconds"),
        ({"mode": "forecast-only", "horizonSeconds": 0}, "predictive.horizonSeconds"),
    ],
)
def test_bad_predictive_settings_are_refused_naming_the_field(predictive, named):
    with pytest.raises(ValidationError, match=named.replace(".", r"\.")):
        AutoscalingPolicy.model_validate(_policy(**predictive))


# --- in the simulator: a diurnal load with several cycles of history --------------------------------


def _diurnal(tmp_path: Path, predictive: str) -> Path:
    """A compressed 'day' of two hours, five of them: the forecast starts after two."""
    policy = tmp_path / f"policy{len(predictive)}.json"
    policy.write_text(
        '{"id": "scaling-policy", "loadThresholds": {"requestsInFlight": {"threshold": 20}}' + predictive + "}"
    )
    path = tmp_path / f"diurnal{len(predictive)}.yaml"
    d = EXAMPLES / "definitions"
    path.write_text(
        textwrap.dedent(
            f"""
            seed: 5
            duration: 10h
            step: 15s
            definitions:
              networkPartitions: [{d}/network-partition.json]
              cartridges: [{d}/php.json]
              autoscalingPolicies: [{policy}]
              deploymentPolicies: [{d}/deployment-policy-large.json]
              applicationPolicies: [{d}/application-policy.json]
              applications: [{d}/application-web.json]
            deploy:
              - {{application: web-app, policy: application-policy-1}}
            instances: {{startup_delay: 120s}}
            load:
              - cluster: web
                metric: requests_in_flight
                model: shared
                sine: {{mean: 160, amplitude: 130, period: 2h}}
                noise: {{sigma: 4}}
            """
        )
    )
    return path


def test_forecast_and_scale_cuts_slo_violations_on_a_diurnal_load_at_a_reported_cost(tmp_path):
    predictive = (
        ', "predictive": {"mode": "forecast-and-scale", "horizonSeconds": 1800, '
        '"schedulingBufferSeconds": 300, "seasonSeconds": 7200, "bucketSeconds": 120}'
    )
    runs = {}
    for name, extra in (("reactive", ""), ("forecast", predictive)):
        result = Simulation(load_scenario(_diurnal(tmp_path, extra)).setup).run()
        (runs[name],) = result.figures().values()
    assert runs["forecast"]["slo_violation_share"] < runs["reactive"]["slo_violation_share"]
    assert runs["forecast"]["cost_member_hours"] > 0 and runs["reactive"]["cost_member_hours"] > 0
