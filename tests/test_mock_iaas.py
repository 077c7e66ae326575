"""The mock IaaS: its libcloud driver, health patterns, and REST view."""
from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from libcloud.common.types import LibcloudError
from libcloud.compute.providers import get_driver
from pydantic import ValidationError

from infra.iaas.mock import MockNodeDriver, register_mock_driver
from infra.iaas.patterns import HealthPatterns, SamplePattern
from infra.kafka import read_to_end
from infra.mock_api import mock_iaas_app
from tests.conftest import wait_until
from tests.test_cloud_controller import active_members, cloud, cloud_settings, deploy  # noqa: F401


@pytest.fixture
def driver() -> MockNodeDriver:
    register_mock_driver()
    return get_driver("mock")(f"test-{uuid.uuid4().hex[:8]}")


def test_registering_twice_is_harmless_and_get_driver_gives_the_mock():
    register_mock_driver()
    register_mock_driver()
    assert get_driver("mock") is MockNodeDriver


def test_node_id_is_the_member_id_with_ips_from_the_pools(driver):
    node = driver.create_node(name="php1.abc", ex_metadata={"clusterId": "c1"})
    assert (node.id, node.name) == ("php1.abc", "php1.abc")
    assert node.private_ips[0].startswith("10.11.") and node.public_ips[0].startswith("192.0.2.")
    other = driver.create_node(name="php1.def")
    assert other.private_ips != node.private_ips and other.public_ips != node.public_ips
    assert sorted(n.id for n in driver.list_nodes()) == ["php1.abc", "php1.def"]
    assert node.extra == {"clusterId": "c1", "localPorts": {}}  # process mode fills localPorts


def test_drivers_with_the_same_key_share_one_cloud(driver):
    driver.create_node(name="m1")
    assert [n.id for n in get_driver("mock")(driver.key).list_nodes()] == ["m1"]
    assert get_driver("mock")("another-cloud-" + driver.key).list_nodes() == []


def test_a_destroyed_node_is_gone_and_its_id_never_comes_back(driver):
    node = driver.create_node(name="m1")
    assert driver.destroy_node(node)
    assert driver.list_nodes() == []
    assert not driver.destroy_node(node)
    with pytest.raises(LibcloudError, match="never reused"):
        driver.create_node(name="m1")


def test_injected_start_failures_fail_that_many_creates(driver):
    driver.cloud.fail_next_starts(2, "quota exceeded")
    for _ in range(2):
        with pytest.raises(LibcloudError, match="quota exceeded"):
            driver.create_node(name="m1")
    assert driver.create_node(name="m1").id == "m1"


@pytest.mark.parametrize("mode, elapsed, expected", [
    ("loop", 0.0, 10), ("loop", 1.9, 10), ("loop", 2.0, 50), ("loop", 4.0, 90),
    ("loop", 6.5, 10), ("continue", 6.5, 90), ("continue", 600, 90), ("stop", 5.9, 90),
    ("stop", 6.0, None),
], ids=lambda v: str(v))
def test_pattern_holds_each_value_for_its_duration_then_follows_its_mode(mode, elapsed, expected):
    pattern = SamplePattern(sampleValues=[10, 50, 90], sampleDuration=2, mode=mode)
    assert pattern.value_at(elapsed) == expected


def test_patterns_restart_their_timeline_when_replaced_and_stop_goes_silent(tmp_path):
    now = [1000.0]
    patterns = HealthPatterns(clock=lambda: now[0])
    path = tmp_path / "patterns.yaml"
    path.write_text("php:\n  load-average: {sampleValues: [20, 80], sampleDuration: 10, mode: stop}\n"
                    "  memory-consumption: {sampleValues: [40], sampleDuration: 5, mode: continue}\n")
    assert patterns.load(path) == ["php"]
    assert patterns.values("php") == {"load_average": 20, "memory_consumption": 40}
    now[0] += 25
    assert patterns.values("php") == {"memory_consumption": 40}  # load went silent
    patterns.replace("php", patterns.of("php"))
    assert patterns.values("php")["load_average"] == 20
    assert patterns.values("tomcat") == {}


def test_a_bad_patterns_file_names_the_field(tmp_path):
    path = tmp_path / "patterns.json"
    path.write_text('{"php": {"load-average": {"sampleValues": [], "sampleDuration": 10}}}')
    with pytest.raises(ValidationError) as caught:
        HealthPatterns().load(path)
    assert caught.value.errors()[0]["loc"] == ("php", "load-average", "sampleValues")


@pytest.fixture
def api(driver):
    return TestClient(mock_iaas_app(lambda: driver.cloud)), driver


def test_rest_view_lists_gets_and_crashes_instances(api):
    http, driver = api
    driver.create_node(name="php1.abc", ex_metadata={"clusterId": "c1"})
    listed = http.get("/mock-iaas/api/instances").json()
    assert [(i["id"], i["clusterId"], i["agentStatus"]) for i in listed] == [("php1.abc", "c1", "Created")]
    assert http.get("/mock-iaas/api/instances/php1.abc").json()["privateIp"] == listed[0]["privateIp"]
    crashed = http.delete("/mock-iaas/api/instances/php1.abc")
    assert crashed.status_code == 200 and crashed.json()["status"] == "success"
    assert driver.list_nodes() == []
    missing = http.get("/mock-iaas/api/instances/php1.abc")
    assert missing.status_code == 404 and "'php1.abc'" in missing.json()["message"]
    assert http.delete("/mock-iaas/api/instances/php1.abc").status_code == 404


def test_rest_view_replaces_health_patterns_and_rejects_bad_ones_naming_the_field(api):
    http, driver = api
    body = {"load-average": {"sampleValues": [70, 90], "sampleDuration": 30, "mode": "continue"}}
    assert http.put("/mock-iaas/api/health-patterns/php", json=body).status_code == 200
    assert http.get("/mock-iaas/api/health-patterns/php").json() == {
        "load-average": {"sampleValues": [70.0, 90.0], "sampleDuration": 30.0, "mode": "continue"}}
    assert driver.cloud.patterns.values("php") == {"load_average": 70}
    bad = http.put("/mock-iaas/api/health-patterns/php",
                   json={"load-average": {"sampleValues": [1], "sampleDuration": 0}})
    assert bad.status_code == 400 and "load-average.sampleDuration" in bad.json()["message"]
    unknown = http.put("/mock-iaas/api/health-patterns/php", json={"cpu": {"sampleValues": [1], "sampleDuration": 1}})
    assert unknown.status_code == 400 and "cpu" in unknown.json()["message"]
    broken = http.put("/mock-iaas/api/health-patterns/php", content=b"{not json")
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["message"]
    assert driver.cloud.patterns.values("php") == {"load_average": 70}  # nothing lost
    assert http.get("/mock-iaas/api/health-patterns/tomcat").status_code == 404


def test_rest_view_injects_start_failures(api):
    http, driver = api
    assert http.post("/mock-iaas/api/start-failures", json={"count": 1, "reason": "no capacity"}).status_code == 200
    with pytest.raises(LibcloudError, match="no capacity"):
        driver.create_node(name="m1")
    assert http.post("/mock-iaas/api/start-failures", json={"count": 0}).status_code == 400


@pytest.mark.integration
def test_active_mock_instances_publish_health_from_the_pattern_put_at_run_time(cloud_settings, cloud, client):
    deploy(client)
    (member,) = wait_until(lambda: active_members(cloud_settings), timeout=40, message="an Active member")
    http = TestClient(mock_iaas_app(lambda: cloud.cloud))
    body = {"memory-consumption": {"sampleValues": [42], "sampleDuration": 60, "mode": "continue"},
            "requests-in-flight": {"sampleValues": [7], "sampleDuration": 60, "mode": "continue"}}
    assert http.put("/mock-iaas/api/health-patterns/php", json=body).status_code == 200

    def stats():
        found = {}
        for d in read_to_end(cloud_settings, "health"):
            stat = d.record.payload
            found[(stat.metric, stat.member_id)] = (stat.value, stat.cluster_id, d.record.aggregate_id)
        return found if len(found) == 2 else None

    found = wait_until(stats, timeout=20, message="health from the pattern")
    cluster = "single-cartridge-app.php1.php.domain"
    assert found[("memory_consumption", member)] == (42, cluster, f"carbon.super/cluster/{cluster}")
    assert found[("requests_in_flight", None)][0] == 7  # per cluster, as a load balancer reports
