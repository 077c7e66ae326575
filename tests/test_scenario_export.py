"""A recorded load is a scenario (infra/simulation/export.py, `stratos scenario export`).

The integration test records a run of the live platform on real Kafka: a node and its reactor,
the cloud controller with the mock IaaS, and the faust health worker, with the scenario's load
(steps and a spike of requests in flight) published on the health topic by `stratos simulate
--live`'s runner. The health worker accepts only samples stamped near its own clock, so the run
is scaled down rather than two hours long: a 0.5 s hop, a 3 s window, 70 scenario seconds at
twice real time. The period is exported from the log, simulated with the policy in force, and
the simulation makes production's scale decisions within one hop, or names a cause for each.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from rich.console import Console
from typer.testing import CliRunner

from infra.cli.main import app
from infra.health.app import HealthWorkerThread
from infra.observe.follower import stop_together
from infra.settings import get_settings
from infra.simulation.export import Move, compare
from infra.simulation.live import run_live
from infra.simulation.scenario import load_scenario
from tests.conftest import RunningNode, wait_until
from tests.test_cloud_controller import RunningCloud
from tests.test_simulation import EXAMPLES

CLUSTER = "scaling-app.php1.php.domain"
RECORDED = f"""
name: recorded steps and a spike
seed: 1
duration: 70s
step: 1s
definitions:
  networkPartitions: [{EXAMPLES}/definitions/network-partition.json]
  cartridges: [{EXAMPLES}/definitions/php.json]
  autoscalingPolicies: [{EXAMPLES}/policies/stratos-default.json]
  deploymentPolicies: [{EXAMPLES}/definitions/deployment-policy.json]
  applicationPolicies: [{EXAMPLES}/definitions/application-policy.json]
  applications: [{EXAMPLES}/definitions/application-scaling.json]
deploy:
  - {{application: scaling-app, policy: application-policy-1}}
load:
  - cluster: php1
    metric: requests_in_flight
    model: shared
    steps: [[0, 30], [12s, 90], [30s, 50]]
    spike: {{base: 0, peak: 70, at: 45s, duration: 10s}}
"""


def hops_apart(cause: str) -> float:
    """How many hops apart a `timing` difference says the same change came (else infinity)."""
    found = re.match(r"timing: .* \(([\d.]+) hops\)$", cause)
    return float(found.group(1)) if found else float("inf")


def stratos(settings, *args: str, expect: int = 0) -> str:
    env = {
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(settings.state_dir),
        "STRATOS_HEALTH_WINDOW_SECONDS": str(settings.health_window_seconds),
        "STRATOS_HEALTH_HOP_SECONDS": str(settings.health_hop_seconds),
        "COLUMNS": "250",
    }
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env={**os.environ, **env})
    finally:
        get_settings.cache_clear()
    assert result.exit_code == expect, (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


@pytest.fixture
def recorded(settings, tmp_path):
    """(settings, start, end) of a recorded live run."""
    live = settings.model_copy(
        update={
            "health_window_seconds": 3.0,
            "health_hop_seconds": 0.5,
            "health_publish_seconds": 0.5,
            "member_fault_seconds": 600.0,
            "cloud_reconcile_seconds": 0.5,
            "cloud_retry_seconds": 0.1,
            "state_dir": tmp_path,
            "admin_password": SecretStr("pw"),
            "password_hash_rounds": 4,
        }
    )
    node, cloud, worker = RunningNode(live), RunningCloud(live), HealthWorkerThread(live).start()
    assert cloud.http.put("/health-patterns/php", json={}).status_code == 200  # the run plays the load
    wait_until(worker.service.reading.is_set, timeout=60, message="the health worker's group join")
    try:
        path = tmp_path / "live.yaml"
        path.write_text(RECORDED)
        start = datetime.now(UTC)
        run_live(
            load_scenario(path), None, tmp_path / "live", None, 2.0, Console(quiet=True), quiet=True, settings=live
        )
        end = datetime.now(UTC)
    finally:
        stop_together(worker.stop, cloud.stop, node.stop)
    return live, start, end


@pytest.mark.integration
def test_a_recorded_run_exported_and_simulated_makes_the_same_decisions_within_one_hop(recorded, tmp_path):
    live, start, end = recorded
    out = tmp_path / "not-yet-made" / "exported.yaml"  # its directory is made
    answer = json.loads(
        stratos(
            live,
            "scenario",
            "export",
            "--cluster",
            CLUSTER,
            "--from",
            start.isoformat(),
            "--to",
            end.isoformat(),
            "-o",
            str(out),
            "--check",
            "--json",
        )  # fmt: skip
    )
    scenario = load_scenario(out)  # a scenario file a user can edit and run
    assert scenario.setup.step == 0.5 and scenario.model.platform.health_window == 3.0
    assert {(load.metric, load.model) for load in scenario.setup.loads} == {("requests_in_flight", "shared")}
    assert 0 < answer["measured"]["startup_delay_s"] < 30
    assert answer["production_decisions"] >= 4  # up for the step, down, up for the spike, down
    explained = [d for d in answer["differences"] if d["cause"]]
    assert explained == answer["differences"]
    assert (
        answer["matched"] + len([d for d in answer["differences"] if d["production"]]) == answer["production_decisions"]
    )
    # the exported load reproduces production: most of its decisions, within one hop, or within
    # a few when a loaded machine delays the live run's 0.5 s hops (each decision that differs is
    # named with its cause, as asserted above)
    close = [d for d in answer["differences"] if d["production"] and hops_apart(d["cause"]) <= 4]
    assert answer["matched"] >= 1 and answer["matched"] + len(close) > answer["production_decisions"] / 2, answer

    # bad input: one clear error line each
    later, latest = (end + timedelta(hours=1)).isoformat(), (end + timedelta(hours=2)).isoformat()
    for args, named in (
        (("--cluster", "nope", "--from", start.isoformat(), "--to", end.isoformat()), "no cluster 'nope'"),
        (("--cluster", CLUSTER, "--from", later, "--to", latest), "no health records"),
        (("--cluster", CLUSTER, "--from", end.isoformat(), "--to", start.isoformat()), "is not after"),
    ):
        output = stratos(live, "scenario", "export", *args, "-o", str(tmp_path / "bad.yaml"), expect=2)
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], output
    period = ("--cluster", CLUSTER, "--from", start.isoformat(), "--to", end.isoformat())
    output = stratos(live, "scenario", "export", *period, "-o", "/proc/no-such-dir/x.yaml", expect=2)
    assert output.strip().startswith("error: -o: cannot write /proc/no-such-dir/x.yaml"), output


def test_compare_matches_the_same_change_within_one_hop_and_names_each_difference():
    production = [Move(10.0, 3, 0, 2, "r"), Move(30.0, 0, 1, 5, "r"), Move(50.0, 2, 0, 4, "r")]
    simulation = [Move(10.4, 3, 0, 2, "s"), Move(33.0, 0, 1, 5, "s"), Move(70.0, 0, 2, 6, "s")]
    matched, differences = compare(production, simulation, hop=0.5)
    assert matched == 1
    causes = {(d.t, "production" if d.production else "simulation"): d.cause for d in differences}
    assert causes[(30.0, "production")].startswith("timing: the simulation made the same change (-1) 3.0 s later")
    assert causes[(33.0, "simulation")].startswith("timing: the production made the same change (-1) 3.0 s earlier")
    assert causes[(50.0, "production")].startswith("fleet:") or causes[(50.0, "production")].startswith("load:")
    assert (70.0, "simulation") in causes


def test_a_difference_before_the_members_start_is_the_warm_up():
    (difference,) = compare([Move(1.0, 2, 0, 0, "r")], [], hop=0.5, warm_up=60.0)[1]
    assert difference.cause.startswith("warm-up")


def test_traces_total_requests_over_partitions_load_over_members_and_mean_memory():
    """Per step: requests in flight summed over network partitions, load average summed over the
    members (shared), memory their mean (per-member); a MemberHealth record carries both."""
    from infra.log.kafka import envelope
    from infra.simulation.export import _traces
    from schemas.records import HealthRecord
    from schemas.status import HealthStat, MemberHealth

    since = datetime(2026, 12, 1, tzinfo=UTC)
    t0 = since.timestamp()

    def record(payload):
        return envelope(HealthRecord, payload, f"carbon.super/cluster/{CLUSTER}", tenant="carbon.super")

    samples = [
        record(
            HealthStat(
                cluster_id=CLUSTER, network_partition_id=np, metric="requests_in_flight", value=v, timestamp=t0 + 1
            )
        )
        for np, v in (("np1", 30.0), ("np2", 12.0))
    ] + [
        record(
            MemberHealth(
                cluster_id=CLUSTER,
                network_partition_id="np1",
                member_id=m,
                metrics={"load_average": load, "memory_consumption": memory},
                timestamp=t0 + 2,
            )
        )
        for m, load, memory in (("m1", 10.0, 40.0), ("m2", 30.0, 60.0))
    ]
    traces = _traces(samples, since, since + timedelta(seconds=60), step=5.0)
    assert traces == {
        "requests_in_flight": [(0.0, 42.0)],
        "load_average": [(0.0, 40.0)],
        "memory_consumption": [(0.0, 50.0)],
    }
