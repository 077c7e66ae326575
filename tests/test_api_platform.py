"""The API served by uvicorn over the real broker and a running node, shared by a test module;
each test works in a tenant of its own. Also: what a caller without the right identity gets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.log.kafka import ensure_topics
from infra.observe.follower import stop_together
from infra.settings import Settings
from tests.conftest import RunningNode, sample

pytestmark = pytest.mark.integration
ADMIN_PASSWORD = "super-secret"


@dataclass
class Platform:
    settings: Settings
    url: str

    def client(self, username: str = "admin", password: str = ADMIN_PASSWORD, **options) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api", auth=(username, password), timeout=60, **options)

    def new_tenant(self, password: str = "tenant-pw") -> str:
        """A fresh tenant (domain returned) whose admin is `admin@<domain>`."""
        domain = f"t{uuid.uuid4().hex[:8]}.org"
        with self.client() as admin:
            reply = admin.post(
                "/tenants",
                json={"tenantDomain": domain, "admin": "admin", "adminPassword": password, "email": f"admin@{domain}"},
            )
        assert reply.status_code == 201, reply.text
        return domain


SAMPLES = [  # Stratos 4.1 sample files, in the order their references need
    ("networkPartitions", "network-partition.json"),
    ("cartridges", "php.json"),
    ("cartridges", "tomcat.json"),
    ("cartridgeGroups", "cartridge-group-nested.json"),
    ("autoscalingPolicies", "autoscaling-policy.json"),
    ("deploymentPolicies", "deployment-policy.json"),
    ("applicationPolicies", "application-policy.json"),
    ("applications", "application-single-cartridge.json"),
    ("kubernetesClusters", "kubernetes-cluster.json"),
    ("users", "user.json"),
]


def define_samples(client: httpx.Client) -> None:
    """Every sample, unchanged; the application policy also names network partitions 2 and 3."""
    for extra in ("network-partition-2", "network-partition-3"):
        reply = client.post("/networkPartitions", json={**sample("network-partition.json"), "id": extra})
        assert reply.status_code == 201, reply.text
    for path, name in SAMPLES:
        reply = client.post(f"/{path}", json=sample(name))
        assert reply.status_code == 201, f"{name}: {reply.text}"


@pytest.fixture(scope="module")
def platform(broker) -> Iterator[Platform]:
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        admin_password=ADMIN_PASSWORD,
        password_hash_rounds=4,
    )
    ensure_topics(settings)
    node = RunningNode(settings)
    server = ApiServer(create_app(settings), port=free_port()).start()
    try:
        yield Platform(settings, server.url)
    finally:
        stop_together(server.stop, node.stop)


@pytest.fixture
def tenant(platform) -> Iterator[httpx.Client]:
    """A client logged in as the admin of a tenant made for this test."""
    domain = platform.new_tenant()
    with platform.client(f"admin@{domain}", "tenant-pw") as client:
        yield client


def test_no_credentials_is_401_with_a_message(platform):
    with httpx.Client(base_url=f"{platform.url}/api") as anonymous:
        reply = anonymous.get("/cartridges")
    assert reply.status_code == 401
    assert reply.json()["status"] == "error" and "credentials" in reply.json()["message"]
    assert reply.headers["WWW-Authenticate"].startswith("Basic")


def test_wrong_password_is_401(platform):
    with platform.client(password="wrong") as client:
        reply = client.get("/cartridges")
    assert reply.status_code == 401 and reply.json()["message"] == "wrong user name or password"


def test_a_bearer_token_stands_for_the_user_it_was_issued_to(platform):
    domain = platform.new_tenant()
    with httpx.Client(base_url=f"{platform.url}/api") as anonymous:
        issued = anonymous.post("/token", json={"username": f"admin@{domain}", "password": "tenant-pw"})
        assert issued.status_code == 200, issued.text
        bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        me = anonymous.get("/whoami", headers=bearer).json()
        assert me == {"username": f"admin@{domain}", "tenant": domain, "role": "admin", "superAdmin": False}
        assert anonymous.get("/whoami", headers={"Authorization": "Bearer forged"}).status_code == 401


def test_passwords_are_stored_hashed_and_never_shown(platform):
    domain = platform.new_tenant(password="plain-text-pw")
    with platform.client() as admin:
        shown = admin.get(f"/tenants/{domain}").json()
    assert "adminPassword" not in shown and shown["tenantDomain"] == domain
    from schemas.envelope import SUPER_TENANT
    from tests.conftest import events_of

    added = events_of(platform.settings, f"{SUPER_TENANT}/tenant/{domain}")[0]
    stored = added.payload.definition.adminPassword  # hashed, and the hash sealed like every secret
    from infra.auth.secrets import secret_box

    assert secret_box(platform.settings).open(stored).startswith("$2")
    assert "plain-text-pw" not in added.model_dump_json() and "$2" not in added.model_dump_json()


def test_a_user_with_role_user_reads_but_cannot_change(platform, tenant):
    domain = tenant.get("/whoami").json()["tenant"]
    reply = tenant.post("/users", json={"userName": "reader", "credential": "reader-pw", "role": "user"})
    assert reply.status_code == 201, reply.text
    with platform.client(f"reader@{domain}", "reader-pw") as reader:
        assert reader.get("/cartridges").status_code == 200
        refused = reader.post("/cartridges", json={"type": "php", "category": "framework"})
        assert refused.status_code == 403 and "reader" in refused.json()["message"]


def test_only_the_super_admin_manages_tenants(platform, tenant):
    reply = tenant.post("/tenants", json={"tenantDomain": "other.org", "admin": "a", "adminPassword": "p"})
    assert reply.status_code == 403
    assert tenant.get("/tenants").status_code == 403


def test_a_deactivated_tenant_cannot_log_in(platform):
    domain = platform.new_tenant()
    with platform.client() as admin:
        reply = admin.put("/tenants", json={"tenantDomain": domain, "admin": "admin", "active": False})
        assert reply.status_code == 200, reply.text
    with platform.client(f"admin@{domain}", "tenant-pw") as client:
        assert client.get("/cartridges").status_code == 401
