"""The mock IaaS on the platform API's own port, on the real broker with the whole loop running:
a node and its reactor, the mock IaaS part (its cloud in the state directory, its simulated
agents) reached by the cloud controller's libcloud driver over HTTP, and the API in front.

Stratos's smoke test, through `/mock-iaas/api` on the API's port: in-use removals refused,
deploy, kill every member with DELETE, the application heals, undeploy, the mock IaaS holds no
instance, and every removal then succeeds. And who may see and crash what.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.log.kafka import ensure_topics
from infra.observe.follower import stop_together
from infra.settings import Settings
from tests.conftest import RunningNode, sample, wait_until
from tests.test_cloud_controller import RunningCloud

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "mock-iaas-secret"
APP = "single-cartridge-app"
DEFINED = [  # what the sample application needs, in the order its references need
    ("networkPartitions", "network-partition.json", "network-partition-1"),
    ("cartridges", "php.json", "php"),
    ("autoscalingPolicies", "autoscaling-policy.json", "autoscaling-policy-1"),
    ("deploymentPolicies", "deployment-policy.json", "deployment-policy-1"),
    ("applicationPolicies", "application-policy.json", "application-policy-1"),
    ("applications", "application-single-cartridge.json", APP),
]


class Stack:
    def __init__(self, broker, state_dir) -> None:
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
            partitions=4,
            admin_password=ADMIN_PASSWORD,
            password_hash_rounds=4,
            state_dir=state_dir,
            cloud_reconcile_seconds=0.3,
            cloud_retry_seconds=0.1,
            health_publish_seconds=0.5,
        )
        ensure_topics(settings)
        self.node = RunningNode(settings)
        self.cloud = RunningCloud(settings)
        self.settings = settings.model_copy(
            update={"mock_iaas_url": self.cloud.service.url, "mock_iaas_key": SecretStr(self.cloud.service.key)}
        )
        self.server = ApiServer(create_app(self.settings), port=free_port()).start()
        self.url = self.server.url

    def client(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> httpx.Client:
        """A client of the API's port: `/api/...` and `/mock-iaas/api/...` alike."""
        return httpx.Client(base_url=self.url, auth=(username, password), timeout=60)

    def new_tenant(self) -> str:
        domain = f"t{uuid.uuid4().hex[:8]}.org"
        with self.client() as admin:
            reply = admin.post(
                "/api/tenants",
                json={
                    "tenantDomain": domain,
                    "admin": "admin",
                    "adminPassword": "tenant-pw",
                    "email": f"admin@{domain}",
                },
            )
        assert reply.status_code == 201, reply.text
        return domain

    def stop(self) -> None:
        stop_together(self.server.stop, self.cloud.stop, self.node.stop)


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[Stack]:
    running = Stack(broker, tmp_path_factory.mktemp("mock-iaas"))
    yield running
    running.stop()


def define(client: httpx.Client) -> None:
    for extra in ("network-partition-2", "network-partition-3"):  # the application policy names them
        reply = client.post("/api/networkPartitions", json={**sample("network-partition.json"), "id": extra})
        assert reply.status_code == 201, reply.text
    for path, name, _id in DEFINED:
        body = sample(name)
        if path == "applications":  # tests reach nothing off this machine
            body["components"]["cartridges"][0]["subscribableInfo"].pop("artifactRepository")
        reply = client.post(f"/api/{path}", json=body)
        assert reply.status_code == 201, f"{name}: {reply.text}"


def active_members(client: httpx.Client) -> set[str]:
    runtime = client.get(f"/api/applications/{APP}/runtime").json()
    return {
        m["memberId"]
        for instance in runtime.get("applicationInstances") or []
        for cluster in instance["clusterInstances"]
        for m in cluster["member"]
        if m["status"] == "Active"
    }


def instances(client: httpx.Client) -> list[str]:
    reply = client.get("/mock-iaas/api/instances")
    assert reply.status_code == 200, reply.text
    return sorted(i["instanceId"] for i in reply.json())


def test_stratos_smoke_test_through_the_mock_iaas_on_the_api_port(stack):
    domain = stack.new_tenant()
    with stack.client(f"admin@{domain}", "tenant-pw") as tenant:
        define(tenant)
        assert tenant.post(f"/api/applications/{APP}/deploy/application-policy-1").status_code == 202
        # 202: accepted for processing; the deployment is in force (its definitions marked used)
        # once the application says Deployed (Deploying: the reactor may not have marked them yet)
        wait_until(
            lambda: tenant.get(f"/api/applications/{APP}").json().get("status") in ("Deployed", "Active"),
            timeout=30,
            message="the deployment applied",
        )
        for path, _name, definition_id in DEFINED:  # in use by the deployed application
            refused = tenant.delete(f"/api/{path}/{definition_id}")
            assert refused.status_code == 400, f"{path}/{definition_id}: {refused.text}"
        first = wait_until(lambda: active_members(tenant), timeout=60, message="the members Active")
        assert instances(tenant) == sorted(first)

        for member in first:  # kill every member
            crashed = tenant.delete(f"/mock-iaas/api/instances/{member}")
            assert crashed.status_code == 200 and crashed.json()["status"] == "success", crashed.text
        healed = wait_until(
            lambda: (now := active_members(tenant)) and not now & first and now,
            timeout=60,
            message="the application healed with new members",
        )
        assert len(healed) == len(first) and instances(tenant) == sorted(healed)

        assert tenant.post(f"/api/applications/{APP}/undeploy").status_code == 202
        wait_until(lambda: instances(tenant) == [], timeout=60, message="the mock IaaS empty")
        for path, _name, definition_id in reversed(DEFINED):  # every removal now succeeds
            wait_until(
                lambda path=path, definition_id=definition_id: (
                    tenant.delete(f"/api/{path}/{definition_id}").status_code == 200
                ),
                timeout=30,
                message=f"{path}/{definition_id} removed",
            )
        assert tenant.get(f"/api/applications/{APP}").status_code == 404


def test_who_may_see_crash_and_change_what_on_the_mock_iaas(stack):
    owner, other = stack.new_tenant(), stack.new_tenant()
    node = stack.cloud.service.endpoint.driver().create_node(
        name=f"php1.{uuid.uuid4().hex[:6]}", ex_metadata={"tenant": owner, "clusterId": "c1"}
    )
    with (
        stack.client(f"admin@{other}", "tenant-pw") as stranger,
        stack.client(f"admin@{owner}", "tenant-pw") as admin,
        stack.client() as super_admin,
    ):
        assert node.id not in instances(stranger)
        assert stranger.delete(f"/mock-iaas/api/instances/{node.id}").status_code == 404
        assert stranger.get("/mock-iaas/api/status").json()["instances"] == 0
        assert instances(admin) == [node.id]
        patterns = {"load-average": {"sampleValues": [20], "sampleDuration": 10}}
        refused = admin.put("/mock-iaas/api/health-patterns/php", json=patterns)
        assert refused.status_code == 403 and "super tenant" in refused.json()["message"]
        assert admin.post("/mock-iaas/api/start-failures", json={"count": 1}).status_code == 403

        assert node.id in instances(super_admin)
        assert super_admin.put("/mock-iaas/api/health-patterns/php-test", json=patterns).status_code == 200
        status = super_admin.get("/mock-iaas/api/status").json()
        assert status["durable"] is True and status["listings"]["count"] >= 1  # the controller reconciles
        assert admin.delete(f"/mock-iaas/api/instances/{node.id}").status_code == 200
        assert node.id not in instances(super_admin)
    user = {
        "userName": "viewer",
        "role": "user",
        "credential": "viewer-pw",
        "firstName": "V",
        "lastName": "W",
        "email": "v@example.org",
    }
    with stack.client(f"admin@{owner}", "tenant-pw") as admin:
        assert admin.post("/api/users", json=user).status_code == 201
    with stack.client(f"viewer@{owner}", "viewer-pw") as viewer:
        assert viewer.get("/mock-iaas/api/instances").status_code == 403
    with httpx.Client(base_url=stack.url) as anonymous:
        assert anonymous.get("/mock-iaas/api/instances").status_code == 401
