"""The load simulator: the platform's own code on simulated time, the SPEC RG figures, the
report, compare mode and scenario errors. Pure (no broker): the live mode's test is in
tests/test_simulation_live.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from actors.topology_plan import build_cluster_specs
from infra.cli.main import app
from infra.simulation.scenario import ScenarioFileError, load_scenario
from streams import elasticity as el
from streams.simulation import Simulation
from tests.test_scaling_acceptance import SINGLE_CLUSTER_COUNTS, check_single_cluster_log, member_counts

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCENARIOS = EXAMPLES / "scenarios"
POLICIES = EXAMPLES / "policies"
runner = CliRunner()


def simulate(*args: str) -> dict:
    result = runner.invoke(app, ["simulate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_metrics_and_timeline_another_seed_differs(tmp_path):
    scenario = str(SCENARIOS / "flash-crowd.yaml")
    simulate(scenario, "--out", str(tmp_path / "a"))
    simulate(scenario, "--out", str(tmp_path / "b"))
    simulate(scenario, "--out", str(tmp_path / "c"), "--seed", "8")
    for name in ("metrics.json", "timeline.csv"):
        first, again = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert first == again, name
        assert (tmp_path / "c" / name).read_bytes() != first, name
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["scenario"]["seed"] == 7
    report = (tmp_path / "a" / "report.html").read_text()
    assert "data:image/png;base64," in report and "<table>" in report  # self-contained
    for png in ("load-scenario.png", "members-scenario.png", "decisions-scenario.png"):
        assert (tmp_path / "a" / png).read_bytes()[:4] == b"\x89PNG"


# --- the same decisions as the live acceptance test ---------------------------------------------


def test_single_cluster_scenario_makes_the_live_acceptance_tests_decisions():
    """examples/scenarios/stratos-single-cluster.yaml is tests/test_scaling_acceptance.py's
    load pattern (min 2, max 6, load and memory 60 then 10): the simulated log passes the very
    checks the live test makes on the broker's log, member counts decision by decision
    included (2 by the min rule, 5, then 4, 3, 2 on each 4th consecutive scale-down request)."""
    scenario = load_scenario(SCENARIOS / "stratos-single-cluster.yaml")
    result = Simulation(scenario.setup, keep_log=True).run()
    events = [e for e in result.log if e.aggregate_id.endswith("/cluster/scaling-app.php1.php.domain")]
    check_single_cluster_log(events)
    assert member_counts(events) == SINGLE_CLUSTER_COUNTS == [2, 5, 4, 3, 2]
    assert result.rejected == {}
    (track,) = result.clusters.values()
    assert max(track.supply) == 5 and track.supply[-1] == 2
    # the whole graceful chain ran: cleanup, maintenance, ready to shut down, terminated
    types = [e.type for e in events]
    assert types.count("MemberInMaintenance") == types.count("MemberReadyToShutdown") == 3
    assert types.count("MemberTerminated") == 3


# --- the figures on a hand-computed trace -------------------------------------------------------


def test_figures_on_a_hand_computed_trace():
    """Six samples 60 s apart (T = 360 s, 0.1 h):

        k        0  1  2  3  4  5
        demand   2  4  4  4  2  2
        supply   2  2  3  4  4  2
        need     1  4  4  4  1  1     (demand before the policy's min of 2)
        billed   2  4  4  4  4  2     (supply + pending + terminating)

    accuracy_U = (0+2+1+0+0+0)/6 = 0.5; accuracy_O = (0+0+0+0+2+0)/6 = 1/3;
    timeshare_U = 2/6 (k=1,2); timeshare_O = 1/6 (k=4);
    instability: moves (Δd, Δs) = (+2,0) (0,+1) (0,+1) (-2,0) (0,-2): all five mismatch -> 1.0;
    jitter: supply adapts 3 times (k=2,3,5), demand 2 times (k=1,4) -> (3 - 2) / 0.1 h = 10 per hour;
    SLO violation: supply below need at k=1,2 -> 2/6; cost: 20 members x 60 s = 1200
    member-seconds = 1/3 member-hour; reaction: demand rises at k=1 to 4, supply reaches 4 at
    k=3 -> 120 s."""
    f = el.figures(
        demand=[2, 4, 4, 4, 2, 2],
        supply=[2, 2, 3, 4, 4, 2],
        need=[1, 4, 4, 4, 1, 1],
        billed=[2, 4, 4, 4, 4, 2],
        dt=60.0,
        scaling_actions=3,
        cap=6,
    )
    assert f["accuracy_U"] == pytest.approx(0.5) and f["accuracy_O"] == pytest.approx(1 / 3)
    assert (f["timeshare_U"], f["timeshare_O"]) == (pytest.approx(2 / 6), pytest.approx(1 / 6))
    assert f["instability"] == 1.0
    assert f["jitter"] == pytest.approx(10.0)
    assert f["slo_violation_share"] == pytest.approx(2 / 6)
    assert f["cost_member_seconds"] == 1200.0 and f["cost_member_hours"] == pytest.approx(1 / 3)
    assert f["reaction_time_mean_s"] == 120.0 and f["demand_rises"] == 1
    assert f["scaling_actions"] == 3


# --- stabilisation on the noisy load, in compare mode ------------------------------------------


def test_stabilisation_cuts_scaling_actions_on_the_noisy_load_and_the_compare_report_shows_it(tmp_path):
    out = tmp_path / "noisy"
    answer = simulate(
        str(SCENARIOS / "noisy-load.yaml"),
        "--out",
        str(out),
        "--policy",
        str(POLICIES / "stratos-default.json"),
        "--policy",
        str(POLICIES / "hpa-like.json"),
    )
    doc = json.loads((out / "metrics.json").read_text())
    default, hpa = (doc["policies"][p]["total"] for p in ("stratos-default", "hpa-like"))
    assert hpa["scaling_actions"] < default["scaling_actions"] * 0.75, (hpa, default)
    assert hpa["instability"] <= default["instability"]
    assert set(doc["ranking"]) == {"stratos-default", "hpa-like"} and doc["pareto_front"]
    wins = doc["pairwise_wins"]
    assert wins["hpa-like"]["stratos-default"] + wins["stratos-default"]["hpa-like"] > 0
    assert answer["ranking"] == doc["ranking"]
    report = (out / "report.html").read_text()
    assert "Pairwise wins" in report and "hpa-like" in report and "stratos-default" in report
    assert (out / "pareto.png").exists()
    rows = (out / "timeline.csv").read_text().splitlines()
    assert rows[0] == "time_s,cluster,demand,supply,pending,terminating,decision,policy"
    assert {r.rsplit(",", 1)[1] for r in rows[1:]} == {"stratos-default", "hpa-like"}


def test_policy_options_reach_the_cluster_spec_that_the_live_autoscaler_reads():
    hpa = json.loads((POLICIES / "hpa-like.json").read_text())
    defs = {f"autoscalingPolicy/{hpa['id']}": hpa}
    for kind, name in (
        ("cartridge", "php.json"),
        ("deploymentPolicy", "deployment-policy.json"),
        ("networkPartition", "network-partition.json"),
        ("applicationPolicy", "application-policy.json"),
    ):
        body = json.loads((EXAMPLES / "definitions" / name).read_text())
        defs[f"{kind}/{body.get('id') or body.get('type')}"] = body
    application = json.loads((EXAMPLES / "definitions" / "application-scaling.json").read_text())
    (spec,) = build_cluster_specs(application, "application-policy-1", defs)
    assert (spec.tolerance, spec.scale_down_stabilisation_seconds, spec.scale_down_after) == (0.1, 300.0, 1)


# --- malformed scenarios ----------------------------------------------------------------------


def _scenario(tmp_path: Path, text: str) -> Path:
    for folder in ("definitions", "policies"):
        shutil.copytree(EXAMPLES / folder, tmp_path / folder, dirs_exist_ok=True)
    (tmp_path / "scenarios").mkdir(exist_ok=True)
    path = tmp_path / "scenarios" / "bad.yaml"
    path.write_text(text)
    return path


GOOD = (SCENARIOS / "flash-crowd.yaml").read_text()


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("peak: 300", "peak: lots", ":25: load.0.spike.peak: Input should be a valid number"),
        ("duration: 2h", "duration: two hours", ":6: duration: Value error, 'two hours' is not a duration"),
        (
            "    model: shared",
            "    model: shared\n    shape: square",
            ":25: load.0.shape: Extra inputs are not permitted",
        ),
        ("  - cluster: web", "  - cluster: nosuch", ":22: load.0.cluster: no cluster with alias or id 'nosuch'"),
        ("[../definitions/php.json]", "[../definitions/missing.json]", ":10: definitions.cartridges.0: file"),
        (
            "[../definitions/deployment-policy-large.json]",
            "[../definitions/deployment-policy-large.json, ../definitions/deployment-policy-large.json]",
            ":12: definitions.deploymentPolicies.1: AddDeploymentPolicy rejected: deploymentPolicy "
            "'deployment-policy-large' already exists",
        ),
    ],
    ids=["bad-number", "bad-duration", "unknown-field", "unknown-cluster", "missing-file", "rejected-definition"],
)
def test_malformed_scenario_error_names_its_line_and_field(tmp_path, old, new, expected):
    assert old in GOOD
    path = _scenario(tmp_path, GOOD.replace(old, new))
    result = runner.invoke(app, ["simulate", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{path}{expected}" in result.output, result.output
    assert "Traceback" not in result.output


def test_invalid_yaml_names_its_line(tmp_path):
    path = _scenario(tmp_path, "seed: 1\nduration: [2h\n")
    with pytest.raises(ScenarioFileError, match=r"bad.yaml:\d+: not valid YAML"):
        load_scenario(path)


# --- properties of the elasticity figures --------------------------------------------------------

curves = st.integers(min_value=1, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 20), min_size=n, max_size=n), st.lists(st.integers(0, 20), min_size=n, max_size=n)
    )
)


@hsettings(max_examples=150)
@given(curves)
def test_accuracy_and_timeshare_bound_each_other(pair):
    demand, supply = pair
    under, over = el.accuracy(demand, supply)
    share_u, share_o = el.timeshare(demand, supply)
    assert under >= 0 and over >= 0
    assert under - over == pytest.approx((sum(demand) - sum(supply)) / len(demand))
    assert 0 <= share_u + share_o <= 1
    assert (under == 0) == (share_u == 0) and (over == 0) == (share_o == 0)
    assert under <= share_u * 20 + 1e-9 and over <= share_o * 20 + 1e-9  # at most 20 members off (float sums)


@hsettings(max_examples=150)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=60), st.floats(1, 600))
def test_perfect_supply_scores_zero_everywhere(demand, dt):
    f = el.figures(demand, demand, demand, demand, dt, 0)
    assert (f["accuracy_U"], f["accuracy_O"], f["timeshare_U"], f["timeshare_O"]) == (0, 0, 0, 0)
    assert f["instability"] == 0 and f["jitter"] == 0 and f["slo_violation_share"] == 0
    assert all(r == 0 for r in el.reaction_times(demand, demand, dt))
    assert f["cost_member_seconds"] == pytest.approx(sum(demand) * dt)


@hsettings(max_examples=150)
@given(st.lists(st.integers(0, 10), min_size=2, max_size=40), st.integers(0, 5))
def test_supply_lagging_demand_reacts_after_the_lag(demand, lag):
    supply = [demand[0]] * lag + demand[: len(demand) - lag] if lag < len(demand) else [demand[0]] * len(demand)
    for k, reaction in zip(
        [k for k in range(1, len(demand)) if demand[k] > demand[k - 1]],
        el.reaction_times(demand, supply, 15.0),
        strict=False,
    ):
        if reaction is not None:
            assert reaction <= lag * 15.0
            assert supply[k + int(reaction // 15)] >= demand[k]


@hsettings(max_examples=150)
@given(curves)
def test_instability_and_jitter_are_shares_and_counts(pair):
    demand, supply = pair
    assert 0 <= el.instability(demand, supply) <= 1
    hours = len(demand) * 60 / 3600
    j = el.jitter(demand, supply, 60)
    assert j * hours == pytest.approx(el.adaptations(supply) - el.adaptations(demand))
    assert abs(j * hours) <= len(demand) - 1


@hsettings(max_examples=100)
@given(
    st.dictionaries(
        st.text("abc", min_size=1, max_size=3), st.tuples(st.floats(0, 100), st.floats(0, 1)), min_size=1, max_size=6
    )
)
def test_pareto_front_is_undominated_and_ranking_is_a_total_order(points):
    totals = {name: {"cost_member_hours": c, "slo_violation_share": v} for name, (c, v) in points.items()}
    front = el.pareto_front(totals)
    assert front
    for p in front:
        assert not any(el.dominates(totals[q], totals[p], el.PARETO_AXES) for q in totals)
    for p in set(totals) - set(front):
        assert any(el.dominates(totals[q], totals[p], el.PARETO_AXES) for q in front)
    order = el.ranking(totals)
    assert sorted(order) == sorted(totals) and set(order[: len(front)]) == set(front)


def test_start_failures_and_crashes_go_through_the_platforms_own_recovery():
    """Nodes that fail to start are retried by the cloud controller's rule and given up after
    3 attempts (the member is terminated, the scaling rules ask again); crashed nodes are
    reported vanished by the reconciler and replaced. No command is rejected on the way."""
    from dataclasses import replace

    base = load_scenario(SCENARIOS / "flash-crowd.yaml").setup
    setup = replace(
        base, duration=3600.0, instances=replace(base.instances, start_failure_rate=0.5, crash_rate_per_hour=1.0)
    )
    result = Simulation(setup, keep_log=True).run()
    reasons = [e.payload.reason for e in result.log if e.type == "MemberTerminated"]
    failed = [e.payload.attempt for e in result.log if e.type == "MemberStartFailed"]
    assert failed and max(failed) == 3
    assert any(r.startswith("start failed 3 times") for r in reasons)
    assert "node vanished" in reasons
    assert result.rejected == {}
    (track,) = result.clusters.values()
    assert max(track.supply) >= 10  # the flash crowd is still served
