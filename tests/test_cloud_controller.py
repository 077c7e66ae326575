"""The cloud controller on the real broker, with a node, a reactor and the mock IaaS (its own
service over HTTP, reached by the libcloud `mock` driver) whose simulated instances play the
cartridge agent."""

from __future__ import annotations

import secrets
import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from infra.cloud.controller import CloudController
from infra.cloud.mock.cloud import MockCloud
from infra.cloud.mock.service import MockIaasService
from infra.observe.follower import stop_together
from schemas import commands as C
from schemas.definitions import DEFINITION_KINDS
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted
from tests.conftest import events_of, sample, wait_until
from tests.test_runtime_flow import DEFINITIONS, add

pytestmark = pytest.mark.integration
T = "carbon.super"
APP = aggregate_id(T, "application", "single-cartridge-app")
CLUSTER = aggregate_id(T, "cluster", "single-cartridge-app.php1.php.domain")


class RunningCloud:
    """The mock IaaS (`stratos mock-iaas`: its cloud in the state directory, its HTTP API on a
    free port, its instances' agents) and the cloud controller reaching it over HTTP, on threads."""

    def __init__(self, settings, controller: bool = True) -> None:
        self.settings = settings
        own = Path(tempfile.mkdtemp(prefix="mock-iaas-"))  # this test's cloud, whatever the state dir
        self.service = MockIaasService(
            settings, cloud=MockCloud(own / "cloud.sqlite3"), port=free_port(), key=secrets.token_urlsafe(16)
        ).start()
        self.cloud = self.service.cloud
        self.agents = self.service.agents
        self.http = httpx.Client(
            base_url=f"{self.service.url}/mock-iaas/api",
            timeout=10,
            headers={"Authorization": f"Bearer {self.service.key}"},
        )
        self.controller = None
        self.thread = None
        if controller:
            self.start_controller()

    def crash(self, member_id: str) -> None:
        """What a user's DELETE /mock-iaas/api/instances/{id} does."""
        answer = self.http.delete(f"/instances/{member_id}")
        assert answer.status_code == 200, answer.text

    def fail_next_starts(self, count: int, reason: str) -> None:
        answer = self.http.post("/start-failures", json={"count": count, "reason": reason})
        assert answer.status_code == 200, answer.text

    def start_controller(self) -> None:
        self.controller = CloudController(self.settings, self.service.endpoint)
        self.thread = threading.Thread(target=self.controller.run, daemon=True)
        self.thread.start()
        wait_until(self.controller.ready.is_set, timeout=30, message="the cloud controller's assignment")

    def stop_controller(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.thread.join(20)

    def stop(self) -> None:
        self.http.close()
        stop_together(self.stop_controller, self.service.stop)


@pytest.fixture
def cloud_settings(settings):
    return settings.model_copy(
        update={"cloud_reconcile_seconds": 0.3, "cloud_retry_seconds": 0.1, "health_publish_seconds": 0.3}
    )


@pytest.fixture
def cloud(cloud_settings, running_node):
    running = RunningCloud(cloud_settings)
    yield running
    running.stop()


def member_events(settings, *types):
    return [e for e in events_of(settings, CLUSTER) if not types or e.type in types]


def active_members(settings) -> set[str]:
    """Members whose last lifecycle word is Activated (and not terminated since)."""
    active: set[str] = set()
    for event in member_events(settings):
        if event.type == "MemberActivated":
            active.add(event.payload.member_id)
        elif event.type in ("MemberTerminated", "MemberTerminationRequested", "MemberObsoleted"):
            active.discard(event.payload.member_id)
    return active


def deploy(client, repo_url: str | None = None, credentials: tuple[str, str] | None = None) -> None:
    """Define the sample application and deploy it; its artifact repository is `repo_url` (the
    sample's public one is dropped: tests reach nothing outside this machine), private if
    `credentials` (user, password) are given."""
    for kind, name in DEFINITIONS:
        body = sample(name)
        if kind == "application":
            info = body["components"]["cartridges"][0]["subscribableInfo"]
            info.pop("artifactRepository")
            if repo_url:
                info["artifactRepository"] = {"privateRepo": bool(credentials), "repoUrl": repo_url}
                if credentials:
                    info["artifactRepository"].update(repoUsername=credentials[0], repoPassword=credentials[1])
        assert isinstance(add(client, kind, body), CommandAccepted)
    reply = client.call(APP, C.DeployApplication(application_policy_id="application-policy-1"))
    assert isinstance(reply, CommandAccepted), reply


def test_deploying_brings_cartridge_min_members_to_active_on_mock_nodes(cloud_settings, cloud, client):
    deploy(client)
    members = wait_until(lambda: active_members(cloud_settings), timeout=40, message="an Active member")
    assert len(members) == 1  # cartridgeMin of the sample application
    (member,) = members
    node = cloud.cloud.get(member)
    assert node is not None and node.agent_status == "Activated"
    initialized = member_events(cloud_settings, "MemberInitialized")[0].payload
    assert (initialized.node_id, initialized.private_ip, initialized.public_ip) == (
        member,
        node.private_ip,
        node.public_ip,
    )
    order = [e.type for e in member_events(cloud_settings) if e.type.startswith("Member")]
    assert order == ["MemberSpawnRequested", "MemberInitialized", "MemberStarting", "MemberActivated"]
    wait_until(
        lambda: any(
            e.type == "ApplicationStatusChanged" and e.payload.status == "Active"
            for e in events_of(cloud_settings, APP)
        ),
        message="application Active",
    )


def test_a_crashed_mock_instance_is_detected_and_the_member_replaced(cloud_settings, cloud, client):
    deploy(client)
    (first,) = wait_until(lambda: active_members(cloud_settings), timeout=40, message="an Active member")
    cloud.crash(first)
    terminated = wait_until(
        lambda: [e for e in member_events(cloud_settings, "MemberTerminated") if e.payload.member_id == first],
        message="the crash detected",
    )
    assert terminated[0].payload.reason == "node vanished"
    replacement = wait_until(
        lambda: active_members(cloud_settings) - {first}, timeout=40, message="a replacement member Active"
    )
    assert len(replacement) == 1
    assert {i.node_id for i in cloud.cloud.all()} == replacement


def test_graceful_termination_follows_the_full_chain_in_order(cloud_settings, cloud, client):
    deploy(client)
    (member,) = wait_until(lambda: active_members(cloud_settings), timeout=40, message="an Active member")
    reply = client.call(CLUSTER, C.TerminateMember(member_id=member, graceful=True))
    assert isinstance(reply, CommandAccepted), reply
    wait_until(
        lambda: any(
            e.type == "MemberTerminated" and e.payload.member_id == member for e in member_events(cloud_settings)
        ),
        timeout=30,
        message="member terminated",
    )
    chain = [e.type for e in member_events(cloud_settings) if getattr(e.payload, "member_id", None) == member]
    assert chain == [
        "MemberSpawnRequested",
        "MemberInitialized",
        "MemberStarting",
        "MemberActivated",
        "MemberTerminationRequested",
        "MemberInMaintenance",
        "MemberReadyToShutdown",
        "MemberTerminated",
    ]
    assert cloud.cloud.get(member) is None  # the node is gone from the IaaS


def test_restarted_controller_finds_the_node_it_created_and_starts_no_second(cloud_settings, cloud, client):
    cloud.stop_controller()  # the controller is down while the member is asked for
    deploy(client)
    (spawn,) = wait_until(lambda: member_events(cloud_settings, "MemberSpawnRequested"), message="spawn request")
    member = spawn.payload.member_id
    # what a controller killed between "node created" and "reported" leaves behind: a node named
    # after the member, created through the driver, and no report
    cloud.service.endpoint.driver().create_node(
        name=member,
        ex_metadata={"memberId": member, "clusterId": spawn.payload.cluster_id, "tenant": T, "cartridgeType": "php"},
    )
    cloud.start_controller()
    wait_until(lambda: member in active_members(cloud_settings), timeout=40, message="the member Active")
    assert [i.node_id for i in cloud.cloud.all()] == [member]
    # and one more restart (everything redelivered to a fresh group member) changes nothing
    cloud.stop_controller()
    cloud.start_controller()
    wait_until(lambda: cloud.controller.book.spawn(member) is not None, message="read model rebuilt")
    assert [i.node_id for i in cloud.cloud.all()] == [member]
    assert len(member_events(cloud_settings, "MemberSpawnRequested")) == 1


def test_start_failures_are_visible_on_the_member_and_retried(cloud_settings, cloud, client):
    cloud.fail_next_starts(1, "quota exceeded in partition-1")
    deploy(client)
    failed = wait_until(lambda: member_events(cloud_settings, "MemberStartFailed"), message="start failure")
    assert failed[0].payload.reason == "quota exceeded in partition-1" and failed[0].payload.attempt == 1
    member = failed[0].payload.member_id
    wait_until(lambda: member in active_members(cloud_settings), timeout=40, message="retried and Active")


def test_a_start_that_keeps_failing_gives_up_and_the_min_rule_tries_a_new_member(cloud_settings, cloud, client):
    cloud.fail_next_starts(cloud_settings.cloud_start_attempts, "image not found")
    deploy(client)
    gone = wait_until(lambda: member_events(cloud_settings, "MemberTerminated"), message="member given up")
    assert "start failed 3 times: image not found" in gone[0].payload.reason
    wait_until(
        lambda: active_members(cloud_settings) - {gone[0].payload.member_id}, timeout=40, message="a new member Active"
    )


def test_unknown_iaas_provider_is_rejected_at_definition_time_naming_the_field():
    from pydantic import ValidationError

    body = sample("php.json")
    body["iaasProvider"][0]["type"] = "nimbus"
    with pytest.raises(ValidationError) as caught:
        DEFINITION_KINDS["cartridge"].model_validate(body)
    (error,) = caught.value.errors()
    assert error["loc"] == ("iaasProvider", 0, "type") and "nimbus" in error["msg"]


def test_a_real_cloud_without_credentials_is_rejected_naming_them():
    from pydantic import ValidationError

    body = sample("php.json")
    body["iaasProvider"][0].update(type="ec2", identity="AKIDEXAMPLE")
    with pytest.raises(ValidationError) as caught:
        DEFINITION_KINDS["cartridge"].model_validate(body)
    (error,) = caught.value.errors()
    assert error["loc"] == ("iaasProvider", 0, "credential") and "needs credential" in error["msg"]
    assert "AKIDEXAMPLE" not in str(caught.value)  # the identity given is not echoed back


def test_in_process_mode_each_member_is_an_agent_process_whose_http_port_answers(
    cloud_settings, running_node, client, tmp_path
):
    """The member's repository is private (git http-backend behind basic auth): its password is
    sealed in the log, re-sealed for the cluster in the node's payload, handed to the agent
    process in its environment and opened there, for git alone."""
    import httpx
    from pydantic import SecretStr

    from infra.auth.secrets import secret_box
    from tests.git_server import GitServer

    (tmp_path / "git").mkdir()
    server = GitServer(tmp_path / "git")
    url, _ = server.repository("php1", "deployer", "php1-repo-pw", "hello from php1")
    keys = SecretStr(",".join(secret_box(cloud_settings).keys))  # the parts share the platform key
    settings = cloud_settings.model_copy(
        update={"mock_iaas_mode": "process", "state_dir": tmp_path, "secret_key": keys}
    )
    running = RunningCloud(settings)
    try:
        deploy(client, repo_url=url, credentials=("deployer", "php1-repo-pw"))
        (member,) = wait_until(lambda: active_members(settings), timeout=60, message="an Active member")
        instance = running.cloud.get(member)
        assert instance.private_ip == "127.0.0.1"
        answer = httpx.get(f"http://127.0.0.1:{instance.local_ports['http']}/index.html", timeout=5)
        assert (answer.status_code, answer.text) == (200, "hello from php1")
        process = running.agents.processes[member]
        assert process.poll() is None  # a real, running process
        assert "php1-repo-pw" not in (tmp_path / "instances" / f"{member}.log").read_text()
        running.crash(member)
        assert process.poll() is not None  # a crash ends it
    finally:
        stop_together(running.stop, server.stop)
