"""Live mode against the embedded platform: a node and its reactor, the cloud controller with the
simulated mock IaaS and a faust health worker on the test's topics (short windows, as in
tests/test_scaling_acceptance.py). `stratos simulate --live` deploys Stratos's single-cluster
scenario, publishes its load on the health topic at twice real time, and writes the report from
the events it observed; the report's member counts are the runtime API's."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from rich.console import Console

from infra.api.app import create_app
from infra.health.app import HealthWorkerThread
from infra.observe.follower import stop_together
from infra.simulation.live import run_live
from infra.simulation.scenario import load_scenario
from tests.conftest import wait_until
from tests.test_cloud_controller import RunningCloud
from tests.test_simulation import EXAMPLES

pytestmark = pytest.mark.integration
APP_ID = "scaling-app"
SCENARIO = f"""
name: live single cluster
seed: 1
duration: 46s
step: 1s
definitions:
  networkPartitions: [{EXAMPLES}/definitions/network-partition.json]
  cartridges: [{EXAMPLES}/definitions/php.json]
  autoscalingPolicies: [{EXAMPLES}/policies/stratos-default.json]
  deploymentPolicies: [{EXAMPLES}/definitions/deployment-policy.json]
  applicationPolicies: [{EXAMPLES}/definitions/application-policy.json]
  applications: [{EXAMPLES}/definitions/application-scaling.json]
deploy:
  - {{application: {APP_ID}, policy: application-policy-1}}
load:
  - {{cluster: php1, metric: load_average, steps: [[0, 60], [14s, 10]]}}
  - {{cluster: php1, metric: memory_consumption, steps: [[0, 60], [14s, 10]]}}
"""


@pytest.fixture
def live_settings(settings, tmp_path):
    # no fault detection within the run: once the run stops publishing, nothing may change
    return settings.model_copy(
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


def test_live_mode_report_matches_the_runtime_api(live_settings, tmp_path):
    from tests.conftest import RunningNode

    node = RunningNode(live_settings)
    cloud = RunningCloud(live_settings)
    worker = HealthWorkerThread(live_settings).start()
    # the run plays the scenario's health itself: its simulated instances say nothing (what
    # `--mock-api` makes the live run do against a platform's mock IaaS)
    assert cloud.http.put("/health-patterns/php", json={}).status_code == 200
    wait_until(worker.service.reading.is_set, timeout=60, message="the health worker's group join")
    try:
        path = tmp_path / "live.yaml"
        path.write_text(SCENARIO)
        doc = run_live(
            load_scenario(path),
            None,
            tmp_path / "out",
            None,
            2.0,
            Console(quiet=True),
            quiet=True,
            settings=live_settings,
        )
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert metrics == json.loads(json.dumps(doc)) and metrics["scenario"]["mode"] == "live"
        rows = [r.split(",") for r in (tmp_path / "out" / "timeline.csv").read_text().splitlines()[1:]]
        supply = [int(r[3]) for r in rows]
        assert max(supply) == 5, supply
        decisions = ";".join(r[6] for r in rows)
        assert decisions.count("ScaleDown:-1") == 3 and "ScaleUp:+3" in decisions

        with TestClient(create_app(live_settings)) as api:

            def runtime_members():
                tree = api.get(f"/api/applications/{APP_ID}/runtime", auth=("admin", "pw")).json()
                clusters = (
                    tree["applicationInstances"][0]["clusterInstances"] if tree.get("applicationInstances") else []
                )
                members = clusters[0]["member"] if clusters else []
                active = [m for m in members if m["status"] == "Active"]
                return active if len(active) == supply[-1] else None

            active = wait_until(runtime_members, timeout=20, message="the runtime API's Active members")
        assert len(active) == supply[-1] == 2
        cluster = metrics["policies"]["scenario"]["clusters"][f"{APP_ID}.php1.php.domain"]
        assert cluster["scaling_actions"] == 4  # +3, then -1 three times
    finally:
        stop_together(worker.stop, cloud.stop, node.stop)
