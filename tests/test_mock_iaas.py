"""The mock IaaS: its cloud (durable), its libcloud driver over HTTP, health patterns, and its API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.providers import get_driver
from pydantic import ValidationError

from infra.api.server import ApiServer
from infra.broker import free_port
from infra.cloud.iaas.mock_driver import MockEndpoint
from infra.cloud.mock.api import mock_iaas_app
from infra.cloud.mock.cloud import MockCloud, MockNodeDriver, register_mock_driver
from infra.cloud.mock.patterns import CartridgePatterns, HealthPatterns, SamplePattern
from infra.log.kafka import read_to_end
from tests.conftest import wait_until
from tests.test_cloud_controller import active_members, cloud, cloud_settings, deploy  # noqa: F401

KEY = "test-access-key"


class Served:
    """A mock cloud served over real HTTP, and a libcloud driver reaching it."""

    def __init__(self, cloud: MockCloud) -> None:
        self.cloud = cloud
        self.server = ApiServer(mock_iaas_app(lambda: self.cloud, KEY), port=free_port()).start()
        self.endpoint = MockEndpoint(self.server.url, KEY)
        self.driver = self.endpoint.driver()


@pytest.fixture
def served():
    running = Served(MockCloud())
    yield running
    running.server.stop()


@pytest.fixture
def driver(served) -> MockNodeDriver:
    return served.driver


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
    assert node.extra == {"clusterId": "c1", "localPorts": {}, "agentStatus": "Created"}


def test_drivers_share_the_cloud_they_reach_and_hold_nothing_themselves(served):
    served.driver.create_node(name="m1")
    assert [n.id for n in served.endpoint.driver().list_nodes()] == ["m1"]
    assert [i.node_id for i in served.cloud.all()] == ["m1"]  # the node is the cloud's


def test_the_driver_needs_the_clouds_access_key(served):
    with pytest.raises(InvalidCredsError, match="access key"):
        MockEndpoint(served.server.url, "not-the-key").driver().list_nodes()


def test_a_destroyed_node_is_gone_and_its_id_never_comes_back(driver):
    node = driver.create_node(name="m1")
    assert driver.destroy_node(node)
    assert driver.list_nodes() == []
    assert not driver.destroy_node(node)
    with pytest.raises(LibcloudError, match="never reused"):
        driver.create_node(name="m1")


def test_injected_start_failures_fail_that_many_creates(served, driver):
    served.cloud.fail_next_starts(2, "quota exceeded")
    for _ in range(2):
        with pytest.raises(LibcloudError, match="quota exceeded"):
            driver.create_node(name="m1")
    assert driver.create_node(name="m1").id == "m1"


def test_the_cloud_keeps_nodes_ids_cursors_patterns_and_failures_across_a_restart(tmp_path):
    path = tmp_path / "cloud.sqlite3"
    cloud = MockCloud(path)
    first = cloud.create("m1", {"tenant": "t1"})
    cloud.create("m2", {"tenant": "t1"})
    cloud.destroy("m2")
    cloud.set_agent_status(first, "Activated")
    cloud.replace_patterns(
        "php",
        CartridgePatterns.model_validate(
            {"load-average": {"sampleValues": [70], "sampleDuration": 30, "mode": "continue"}}
        ),
    )
    cloud.fail_next_starts(1, "quota exceeded")
    cloud.close()

    again = MockCloud(path)
    (kept,) = again.all()
    assert (kept.node_id, kept.private_ip, kept.agent_status, kept.metadata) == (
        "m1",
        first.private_ip,
        "Activated",
        {"tenant": "t1"},
    )
    assert again.patterns.values("php") == {"load_average": 70}
    with pytest.raises(LibcloudError, match="quota exceeded"):
        again.create("m3", {})
    with pytest.raises(LibcloudError, match="never reused"):
        again.create("m2", {})
    third = again.create("m3", {})
    assert third.private_ip not in {first.private_ip} and third.private_ip != "10.11.0.2"  # cursor kept


def test_a_freed_address_is_handed_out_again_only_when_no_live_node_holds_it():
    cloud = MockCloud(private_pool="10.0.0.0/30", public_pool="192.0.2.0/30")  # two hosts each
    a, b = cloud.create("a", {}), cloud.create("b", {})
    with pytest.raises(LibcloudError, match="exhausted"):
        cloud.create("c", {})
    cloud.destroy("a")
    c = cloud.create("c", {})
    assert c.private_ip == a.private_ip and c.private_ip != b.private_ip


def test_patterns_from_a_file_do_not_override_patterns_replaced_at_run_time(tmp_path):
    path = tmp_path / "patterns.yaml"
    path.write_text(
        "php:\n  load-average: {sampleValues: [20], sampleDuration: 10}\n"
        "tomcat:\n  load-average: {sampleValues: [30], sampleDuration: 10}\n"
    )
    cloud = MockCloud()
    cloud.replace_patterns(
        "php", CartridgePatterns.model_validate({"load-average": {"sampleValues": [90], "sampleDuration": 10}})
    )
    assert cloud.load_patterns(path) == ["tomcat"]
    assert cloud.patterns.values("php") == {"load_average": 90}


@pytest.mark.parametrize(
    "mode, elapsed, expected",
    [
        ("loop", 0.0, 10),
        ("loop", 1.9, 10),
        ("loop", 2.0, 50),
        ("loop", 4.0, 90),
        ("loop", 6.5, 10),
        ("continue", 6.5, 90),
        ("continue", 600, 90),
        ("stop", 5.9, 90),
        ("stop", 6.0, None),
    ],
    ids=lambda v: str(v),
)
def test_pattern_holds_each_value_for_its_duration_then_follows_its_mode(mode, elapsed, expected):
    pattern = SamplePattern(sampleValues=[10, 50, 90], sampleDuration=2, mode=mode)
    assert pattern.value_at(elapsed) == expected


def test_patterns_restart_their_timeline_when_replaced_and_stop_goes_silent(tmp_path):
    now = [1000.0]
    patterns = HealthPatterns(clock=lambda: now[0])
    path = tmp_path / "patterns.yaml"
    path.write_text(
        "php:\n  load-average: {sampleValues: [20, 80], sampleDuration: 10, mode: stop}\n"
        "  memory-consumption: {sampleValues: [40], sampleDuration: 5, mode: continue}\n"
    )
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
def api(served):
    """The API in-process (TestClient) over the same cloud the served driver reaches."""
    return TestClient(mock_iaas_app(lambda: served.cloud, KEY), headers={"Authorization": f"Bearer {KEY}"}), served


def test_rest_view_lists_gets_and_crashes_instances(api):
    http, served = api
    driver = served.driver
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
    http, served = api
    body = {"load-average": {"sampleValues": [70, 90], "sampleDuration": 30, "mode": "continue"}}
    assert http.put("/mock-iaas/api/health-patterns/php", json=body).status_code == 200
    assert http.get("/mock-iaas/api/health-patterns/php").json() == {
        "load-average": {"sampleValues": [70.0, 90.0], "sampleDuration": 30.0, "mode": "continue"}
    }
    assert served.cloud.patterns.values("php") == {"load_average": 70}
    bad = http.put(
        "/mock-iaas/api/health-patterns/php", json={"load-average": {"sampleValues": [1], "sampleDuration": 0}}
    )
    assert bad.status_code == 400 and "load-average.sampleDuration" in bad.json()["message"]
    unknown = http.put("/mock-iaas/api/health-patterns/php", json={"cpu": {"sampleValues": [1], "sampleDuration": 1}})
    assert unknown.status_code == 400 and "cpu" in unknown.json()["message"]
    broken = http.put("/mock-iaas/api/health-patterns/php", content=b"{not json")
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["message"]
    assert served.cloud.patterns.values("php") == {"load_average": 70}  # nothing lost
    assert http.get("/mock-iaas/api/health-patterns/tomcat").status_code == 404


def test_rest_view_injects_start_failures(api):
    http, served = api
    assert http.post("/mock-iaas/api/start-failures", json={"count": 1, "reason": "no capacity"}).status_code == 200
    assert http.get("/mock-iaas/api/status").json()["pendingStartFailures"] == 1
    with pytest.raises(LibcloudError, match="no capacity"):
        served.driver.create_node(name="m1")
    assert http.post("/mock-iaas/api/start-failures", json={"count": 0}).status_code == 400


@pytest.mark.integration
def test_active_mock_instances_publish_health_from_the_pattern_put_at_run_time(cloud_settings, cloud, client):
    deploy(client)
    (member,) = wait_until(lambda: active_members(cloud_settings), timeout=40, message="an Active member")
    http = cloud.http
    body = {
        "memory-consumption": {"sampleValues": [42], "sampleDuration": 60, "mode": "continue"},
        "requests-in-flight": {"sampleValues": [7], "sampleDuration": 60, "mode": "continue"},
    }
    assert http.put("/health-patterns/php", json=body).status_code == 200

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


def test_stratos_paths_a_tenant_sees_and_crashes_only_its_own_and_changes_nothing(api):
    http, served = api
    started = http.post(
        "/mock-iaas/api/instances",
        json={
            "memberId": "php1.t1",
            "clusterId": "c1",
            "applicationId": "app",
            "networkPartitionId": "np1",
            "metadata": {"tenant": "t1.com"},
        },
    )
    assert started.status_code == 201, started.text
    assert (started.json()["instanceId"], started.json()["clusterId"]) == ("php1.t1", "c1")
    served.driver.create_node(name="php1.super", ex_metadata={"tenant": "carbon.super"})
    allocated = http.post("/mock-iaas/api/instances/php1.t1/allocateIpAddress").json()
    assert allocated["defaultPublicIp"].startswith("192.0.2.")
    assert http.post("/mock-iaas/api/instances", json={"metadata": {}}).json()["message"].startswith("name")

    tenant = {"Authorization": f"Bearer {KEY}", "X-Stratos-Tenant": "t1.com"}
    assert [i["id"] for i in http.get("/mock-iaas/api/instances", headers=tenant).json()] == ["php1.t1"]
    assert http.get("/mock-iaas/api/status", headers=tenant).json()["instances"] == 1
    assert http.get("/mock-iaas/api/instances/php1.super", headers=tenant).status_code == 404
    assert http.delete("/mock-iaas/api/instances/php1.super", headers=tenant).status_code == 404
    for method, path in (("PUT", "/health-patterns/php"), ("POST", "/start-failures"), ("POST", "/instances")):
        refused = http.request(method, f"/mock-iaas/api{path}", headers=tenant, json={})
        assert refused.status_code == 403 and "super tenant" in refused.json()["message"], path
    assert http.delete("/mock-iaas/api/instances/php1.t1", headers=tenant).status_code == 200
    assert [n.id for n in served.driver.list_nodes()] == ["php1.super"]
    assert http.get("/mock-iaas/api/instances", headers={"Authorization": "Bearer wrong"}).status_code == 401


@pytest.mark.parametrize(
    "event, agent_status, expected",
    [
        ("MemberInitialized", None, ("InstanceStarted", "Started")),
        ("MemberInitialized", "Created", ("InstanceStarted", "Started")),
        ("MemberInitialized", "Started", None),
        ("MemberInitialized", "Activated", None),
        ("MemberStarting", "Started", ("InstanceActivated", "Activated")),
        ("MemberStarting", "Activated", None),
        ("MemberInMaintenance", "MaintenanceMode", ("InstanceReadyToShutdown", "ReadyToShutdown")),
        ("MemberInMaintenance", "ReadyToShutdown", None),
    ],
    ids=lambda v: str(v),
)
def test_an_agent_says_only_what_moves_it_forward(event, agent_status, expected):
    """Without the rule, a mock IaaS reading its members' events again after a restart would
    say Started again for every Active node (a rejected command each)."""
    from actors.iaas_plan import agent_answer
    from schemas import events as E

    fields = {"member_id": "m1", "cluster_id": "c1"} | ({"node_id": "m1"} if event == "MemberInitialized" else {})
    assert agent_answer(getattr(E, event)(**fields), agent_status) == expected


@pytest.mark.integration
def test_restarted_agents_carry_on_a_half_started_node_and_repeat_nothing(settings):
    """The mock IaaS stopped between a node's MemberInitialized and its answer: started again,
    its agents read the events from the start and answer that one; the Active node says nothing."""
    from infra.cloud.mock.simulator import SimulatedAgents
    from infra.log.kafka import Appender, encode, envelope
    from schemas import events as E
    from schemas.ids import aggregate_id
    from schemas.records import Commit, LogRecord

    key, tags = aggregate_id("carbon.super", "cluster", "c1"), {"clusterId": "c1", "tenant": "carbon.super"}
    cloud = MockCloud()
    for member in ("half", "done", "marker"):
        cloud.create(member, {**tags, "memberId": member})
    cloud.set_agent_status(cloud.get("done"), "Activated")
    appender = Appender(settings)
    for seq, member in enumerate(("half", "done", "marker"), start=1):
        commit = Commit(
            command_type="Test",
            outcome="accepted",
            events=[E.MemberInitialized(member_id=member, cluster_id="c1", node_id=member)],
        )
        appender.send_raw(
            settings.topic("events"),
            key.encode(),
            encode(envelope(LogRecord, commit, key, aggregate_seq=seq, tenant="carbon.super")),
            partition=0,
        ).get(timeout=10)
    appender.close()
    agents = SimulatedAgents(settings, cloud).start()
    try:

        def said():
            return [(d.record.type, d.record.payload.member_id) for d in read_to_end(settings, "instance-status")]

        wait_until(lambda: ("InstanceStarted", "marker") in said(), timeout=30, message="the marker answered")
        assert said() == [("InstanceStarted", "half"), ("InstanceStarted", "marker")]
        assert cloud.get("half").agent_status == "Started" and cloud.get("done").agent_status == "Activated"
    finally:
        agents.stop()
