"""`stratos tune` (infra/tune/): the parameters and their bounds, the policies it writes, the
yardstick it measures them by, and a seeded search on the shipped scenarios."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from actors.topology_plan import scaling_settings
from infra.cli.main import app
from infra.settings import get_settings
from infra.simulation.scenario import load_scenario
from infra.tune.search import (
    COST,
    SLO,
    Trial,
    TuneError,
    against,
    front_of,
    parameters_of,
    parse_bounds,
    policy_with,
    recommend,
    tune,
)
from schemas.definitions import AutoscalingPolicy
from streams import elasticity
from streams.simulation import Simulation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCENARIOS = EXAMPLES / "scenarios"
DEFAULT = json.loads((EXAMPLES / "policies" / "stratos-default.json").read_text())
PARAMS = parameters_of(DEFAULT, {"requests_in_flight"}, predictive=True)


def stratos(*args: str, expect: int = 0, env: dict[str, str] | None = None) -> str:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env={**os.environ, "COLUMNS": "250", **(env or {})})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == expect, (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


# --- parameters and bounds ----------------------------------------------------------------------


def test_only_the_thresholds_of_metrics_with_load_are_tuned_by_default_half_to_twice():
    params = parameters_of(DEFAULT, {"requests_in_flight"}, predictive=False)
    assert list(params) == ["requestsInFlight", "tolerance", "scaleDownStabilisationSeconds", "scaleDownAfter"]
    assert (params["requestsInFlight"].low, params["requestsInFlight"].high) == (10, 40)


@pytest.mark.parametrize(
    ("bound", "message"),
    [
        ("tolerance=0.5:0.1", "--bound tolerance=0.5:0.1 admits nothing: its low end is above its high end"),
        ("tolerance=1:2", "--bound tolerance=1:2 admits nothing: tolerance must be at least 0 and below 1"),
        ("scaleDownAfter=1.2:1.8", "admits nothing: scaleDownAfter must be a whole number at least 1"),
        ("requestsInFlight=-5:0", "admits nothing: requestsInFlight must be above 0"),
        ("nope=1:2", "--bound nope=1:2: no parameter 'nope' to tune (one of: requestsInFlight"),
        ("tolerance=0.1", "--bound tolerance=0.1: expected NAME=LOW:HIGH with two numbers"),
    ],
)
def test_bounds_that_admit_nothing_are_one_clear_error(bound, message):
    with pytest.raises(TuneError) as caught:
        parse_bounds([bound], PARAMS)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bounds_are_cut_to_what_the_policy_accepts():
    params = parse_bounds(["tolerance=0:5", "scaleDownAfter=0:3.5", "memoryConsumption=50:500"], {
        **PARAMS, **parameters_of(DEFAULT, {"memory_consumption"}, False)
    })  # fmt: skip
    assert params["tolerance"].low == 0 and params["tolerance"].high < 1
    assert (params["scaleDownAfter"].low, params["scaleDownAfter"].high) == (1, 3)
    assert params["memoryConsumption"].high == 100


def test_the_cli_says_a_bad_bound_in_one_line_and_exits_2(tmp_path):
    output = stratos(
        "tune", str(SCENARIOS / "flash-crowd.yaml"), "--out", str(tmp_path), "--bound", "tolerance=1:2", expect=2
    )
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines == ["error: --bound tolerance=1:2 admits nothing: tolerance must be at least 0 and below 1"]


# --- the policies a trial runs -------------------------------------------------------------------


@settings(max_examples=60)
@given(
    st.fixed_dictionaries(
        {
            name: (st.integers(int(p.low), int(p.high)) if p.integer else st.floats(p.low, p.high, allow_nan=False))
            for name, p in PARAMS.items()
        }
    ),
    st.sampled_from(["off", "forecast-and-scale"]),
)
def test_every_trial_policy_is_a_valid_stratos_policy_keeping_its_id(values, mode):
    body = policy_with({**DEFAULT, "predictive": {"mode": "forecast-only"}}, {**values, "predictive": mode})
    AutoscalingPolicy.model_validate(body)
    assert body["id"] == DEFAULT["id"]
    assert ("predictive" in body) == (mode != "off")
    assert math.isclose(
        body["loadThresholds"]["requestsInFlight"]["threshold"], values["requestsInFlight"], abs_tol=1e-4
    )


def test_demand_is_measured_against_the_policy_in_force_whatever_the_trials_thresholds():
    """Raising a trial's threshold changes when it scales, not what one member serves: else a
    tuner would 'cut SLO violations' by moving the yardstick."""
    scenario = load_scenario(SCENARIOS / "flash-crowd.yaml")
    reference = scaling_settings(DEFAULT)["thresholds"]
    lax = policy_with(DEFAULT, {"requestsInFlight": 40})
    (own,) = Simulation(scenario.with_policy(lax)).run().clusters.values()
    own_share = own.figures(scenario.setup.step)[SLO]
    (fair,) = Simulation(scenario.with_policy(lax)).run().clusters.values()
    fair_share = against(fair, reference).figures(scenario.setup.step)[SLO]
    (base,) = Simulation(scenario.with_policy(DEFAULT)).run().clusters.values()
    assert list(fair.demand) == list(base.demand)  # the same load, the same demand
    assert fair_share > own_share  # half the members it needs: violations its own yardstick hides


def _trial(n, cost, slo):
    return Trial(n, {}, {}, {COST: cost, SLO: slo, "scenarios": {}})


def test_the_recommendation_dominates_the_policy_in_force_when_one_does():
    in_force = _trial(-1, 10.0, 0.2)
    trials = [_trial(0, 9.0, 0.3), _trial(1, 9.5, 0.15), _trial(2, 9.8, 0.1), _trial(3, 12.0, 0.01), _trial(4, 13, 0.5)]
    front = front_of(trials)
    assert [t.number for t in front] == [0, 1, 2, 3]
    chosen, why = recommend(in_force, front)
    assert chosen is not None and chosen.number == 2 and why.startswith("dominates")
    chosen, why = recommend(in_force, [_trial(5, 11.0, 0.1)])
    assert chosen is not None and chosen.number == 5 and why.startswith("no trial dominates")
    assert recommend(in_force, [_trial(6, 1.0, 0.5)])[0] is None


# --- a seeded search on the shipped scenarios ------------------------------------------------------

BOUNDS = ["requestsInFlight=20:20.4", "tolerance=0:0", "scaleDownAfter=6:6", "scaleDownStabilisationSeconds=0:0"]
"""Around the default: on these two scenarios Stratos's default lies close to the front, and the
policies that dominate it are few (bench/tune.py, docs/tune.md)."""


def test_tuning_on_the_shipped_scenarios_finds_a_policy_dominating_the_default(tmp_path):
    paths = [str(SCENARIOS / "diurnal-day.yaml"), str(SCENARIOS / "flash-crowd.yaml")]
    out = tmp_path / "run"
    bounds = [f"--bound={b}" for b in BOUNDS]
    answer = json.loads(stratos("tune", *paths, "--out", str(out), "--trials", "6", "--seed", "3", *bounds, "--json"))
    recommended, in_force = answer["recommended"], answer["in_force"]
    assert recommended is not None, answer["why"]
    assert elasticity.dominates(recommended, in_force, (COST, SLO)), (recommended, in_force)
    written = json.loads((out / "recommended-policy.json").read_text())
    assert written == recommended["policy"] and AutoscalingPolicy.model_validate(written)
    assert (out / "report.html").exists() and (out / "pareto.png").exists()
    for name in ("diurnal-day", "flash-crowd"):  # simulate's report: in force against recommended
        report = json.loads((out / name / "metrics.json").read_text())
        assert set(report["policies"]) == {"in-force", "recommended"}


def test_a_seed_gives_the_same_trials_on_one_process_or_two_and_the_front_is_undominated():
    plain = parse_bounds(BOUNDS[:1], parameters_of(DEFAULT, {"requests_in_flight"}, predictive=False))
    runs = [tune(DEFAULT, [str(SCENARIOS / "flash-crowd.yaml")], plain, 4, 7, workers) for workers in (1, 2)]
    assert [t.values for t in runs[0].trials] == [t.values for t in runs[1].trials]
    assert [t.point() for t in runs[0].front] == [t.point() for t in runs[1].front]
    outcome = runs[1]
    assert len(outcome.trials) == 4 and outcome.evaluations == 5
    for t in outcome.front:
        assert not any(elasticity.dominates(o.point(), t.point(), (COST, SLO)) for o in outcome.trials)


# --- --apply: the normal command path, and `stratos why` names the run ------------------------------


@pytest.mark.integration
def test_apply_updates_the_policy_through_the_commands_and_why_names_the_tuning_run(settings, running_node, tmp_path):
    from infra.log.commands_client import CommandClient
    from schemas import commands as C
    from schemas.ids import aggregate_id
    from schemas.status import CommandRejected
    from tests.conftest import events_of

    policy_key = aggregate_id("carbon.super", "autoscalingPolicy", DEFAULT["id"])
    client = CommandClient(settings)
    try:
        reply = client.call(policy_key, C.AddAutoscalingPolicy(definition=AutoscalingPolicy.model_validate(DEFAULT)))
        assert reply is not None and not isinstance(reply, CommandRejected), reply
    finally:
        client.close()
    env = {
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(settings.state_dir),
    }
    answer = json.loads(
        stratos(
            "tune",
            str(SCENARIOS / "flash-crowd.yaml"),
            "--out",
            str(tmp_path / "run"),
            "--trials",
            "4",
            "--seed",
            "3",
            *[f"--bound={b}" for b in BOUNDS],
            "--apply",
            "--json",
            env=env,
        )  # fmt: skip
    )
    applied = answer["applied"]
    assert applied["note"].startswith(f"stratos tune {answer['run']} trial {answer['recommended']['trial']}")
    updated = [e for e in events_of(settings, policy_key) if e.type == "AutoscalingPolicyUpdated"]
    assert [e.payload.definition.model_dump(exclude_none=True) for e in updated] == [
        AutoscalingPolicy.model_validate(answer["recommended"]["policy"]).model_dump(exclude_none=True)
    ]
    why = stratos("why", applied["command_id"], "--json", env=env)
    (link,) = [link for link in json.loads(why)["chain"] if link["id"] == applied["command_id"]]
    assert answer["run"] in link["figures"]["note"]
