"""The metadata service on the real broker, with a node, a reactor, the cloud controller (its
simulated instances) and the API: the round trip Stratos's cartridge agent makes with the TOKEN
of its payload, other members' tokens refused (401), another tenant's application not found
(404), and undeploying removing the properties."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import httpx
import pytest

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.log.kafka import ensure_topics
from infra.observe.follower import stop_together
from infra.settings import Settings
from tests.conftest import RunningNode, sample, wait_until
from tests.test_api_platform import ADMIN_PASSWORD, Platform, define_samples
from tests.test_cloud_controller import RunningCloud

pytestmark = pytest.mark.integration
APP = "single-cartridge-app"
OTHER = "second-app"


class StratosAgentMetadata:
    """What Stratos 4.1's agent (`cartridge.agent/mdsclient.py`) sends and reads, with urllib as
    it does: the URL, alias, application and token from the instance's payload."""

    def __init__(self, payload: dict) -> None:
        base = payload["METADATA_SERVICE_URL"] + "/metadata/api/applications/" + payload["APPLICATION_ID"]
        self.app_url = base + "/properties"
        self.alias_url = base + "/clusters/" + payload["CARTRIDGE_ALIAS"] + "/properties"
        self.token = payload["TOKEN"]

    def _open(self, request: urllib.request.Request, data: bytes | None = None):
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        return urllib.request.urlopen(request, data, timeout=30)

    def put(self, put_req, app=False) -> int:
        request_data = json.dumps(put_req, default=lambda o: o.__dict__).encode()
        return self._open(urllib.request.Request(self.app_url if app else self.alias_url), request_data).getcode()

    def get(self, app=False) -> dict:
        response = self._open(urllib.request.Request(self.app_url if app else self.alias_url)).read()
        return {p["key"]: p["values"] for p in json.loads(response)["properties"]}

    def delete_property_value(self, property_name, value) -> int:
        request = urllib.request.Request(self.app_url + "/" + property_name + "/value/" + value, method="DELETE")
        return self._open(request).getcode()


class MDSPutRequest:
    """mdsclient's publish request: its `properties` become `{"properties": [...]}` on the wire."""

    def __init__(self, properties):
        self.properties = properties


@pytest.fixture(scope="module")
def running(broker, tmp_path_factory):
    api_port = free_port()
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        admin_password=ADMIN_PASSWORD,
        password_hash_rounds=4,
        api_port=api_port,
        state_dir=tmp_path_factory.mktemp("metadata"),
        cloud_reconcile_seconds=0.5,
        health_publish_seconds=0.5,
    )
    ensure_topics(settings)
    node = RunningNode(settings)
    cloud = RunningCloud(settings)
    server = ApiServer(create_app(settings), port=api_port).start()
    try:
        yield Platform(settings, server.url), cloud
    finally:
        stop_together(server.stop, cloud.stop, node.stop)


def deploy(client: httpx.Client, application: dict) -> None:
    if client.get(f"/applications/{application['applicationId']}").status_code == 404:
        assert client.post("/applications", json=application).status_code == 201
    reply = client.post(f"/applications/{application['applicationId']}/deploy/application-policy-1")
    assert reply.status_code == 202, reply.text


def payload_of(cloud: RunningCloud, application_id: str) -> dict:
    """The payload of one of the application's instances, as its node carries it."""

    def found():
        controller = cloud.controller
        for _member_id, spawn in list(controller.book.spawns.items()):
            if spawn.metadata.get("APPLICATION_ID") == application_id and controller.book.state(spawn):
                node = controller.find_node(spawn)
                if node is not None:  # the cloud's own record: its API masks the payload's secrets
                    return cloud.cloud.get(node.id).metadata
        return None

    return wait_until(found, timeout=60, message=f"an instance of {application_id} with its payload")


@pytest.fixture(scope="module")
def tenant_apps(running):
    platform, cloud = running
    domain = platform.new_tenant()
    client = platform.client(f"admin@{domain}", "tenant-pw")
    define_samples(client)
    deploy(client, sample("application-single-cartridge.json"))
    deploy(client, {**sample("application-single-cartridge.json"), "applicationId": OTHER})
    yield domain, client, payload_of(cloud, APP), payload_of(cloud, OTHER)
    client.close()


def test_the_agents_round_trip_with_the_token_of_its_payload(running, tenant_apps):
    platform, _ = running
    _, user, payload, _ = tenant_apps
    assert payload["METADATA_SERVICE_URL"] == platform.url and payload["CARTRIDGE_ALIAS"] == "php1"
    agent = StratosAgentMetadata(payload)
    assert agent.put({"key": "wka", "values": ["10.0.0.1"]}, app=True) == 201
    assert agent.put({"key": "wka", "values": "10.0.0.2"}, app=True) == 201  # a bare string, as plugins send
    assert (
        agent.put(
            MDSPutRequest(
                [
                    {"key": "CALLBACK_URL", "values": "https://php/saml"},
                    {"key": "SSO_ISSUER", "values": ["travelocity.com"]},
                ]
            )
        )
        == 201
    )
    assert agent.get(app=True) == {"wka": ["10.0.0.1", "10.0.0.2"]}
    assert agent.get() == {"CALLBACK_URL": ["https://php/saml"], "SSO_ISSUER": ["travelocity.com"]}
    assert agent.delete_property_value("wka", "10.0.0.1") == 200
    assert agent.delete_property_value("wka", "10.0.0.1") == 200  # gone already: still 200, as in Stratos
    assert agent.get(app=True) == {"wka": ["10.0.0.2"]}
    # the tenant's own users see the same, with their usual credentials
    base = f"{platform.url}/metadata/api/applications/{APP}"
    reply = user.get(f"{base}/properties/wka")
    assert reply.status_code == 200 and reply.json() == {"key": "wka", "values": ["10.0.0.2"]}
    reply = user.get(f"{base}/cluster/php1/properties/SSO_ISSUER")  # Stratos's singular path
    assert reply.json() == {"key": "SSO_ISSUER", "values": ["travelocity.com"]}
    assert user.delete(f"{base}/clusters/php1/properties/CALLBACK_URL").status_code == 200
    assert user.get(f"{base}/clusters/php1/properties").json() == {
        "properties": [{"key": "SSO_ISSUER", "values": ["travelocity.com"]}]
    }
    missing = user.get(f"{base}/properties/nope")
    assert (
        missing.status_code == 404 and missing.json()["message"] == f"property 'nope' not found in application '{APP}'"
    )


def test_another_members_token_forged_tokens_and_no_token_are_refused_401(running, tenant_apps):
    platform, _ = running
    _, _, payload, other = tenant_apps
    url = f"{platform.url}/metadata/api/applications/{APP}/properties"
    refused = httpx.get(url, headers={"Authorization": f"Bearer {other['TOKEN']}"})
    assert refused.status_code == 401
    assert refused.json()["message"] == (
        f"the token of member {other['memberId']!r} is valid for application '{OTHER}' only, not '{APP}'"
    )
    forged = payload["TOKEN"][:-4] + ("AAAA" if not payload["TOKEN"].endswith("AAAA") else "BBBB")
    assert httpx.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert httpx.post(url, json={"key": "k", "values": ["v"]}).status_code == 401
    with pytest.raises(urllib.error.HTTPError) as caught:
        StratosAgentMetadata({**payload, "TOKEN": other["TOKEN"]}).put({"key": "k", "values": ["v"]}, app=True)
    assert caught.value.code == 401


def test_another_tenants_application_is_not_found(running, tenant_apps):
    platform, _ = running
    stranger = platform.new_tenant()
    with platform.client(f"admin@{stranger}", "tenant-pw") as client:
        reply = client.get(f"{platform.url}/metadata/api/applications/{APP}/properties")
        assert reply.status_code == 404 and reply.json()["message"] == f"application '{APP}' not found"
        posted = client.post(
            f"{platform.url}/metadata/api/applications/{APP}/properties", json={"key": "k", "values": ["v"]}
        )
        assert posted.status_code == 404


def test_bad_bodies_and_unknown_aliases_are_named(running, tenant_apps):
    platform, _ = running
    _, user, _, _ = tenant_apps
    base = f"{platform.url}/metadata/api/applications/{APP}"
    reply = user.post(f"{base}/properties", json={"values": ["v"]})
    assert reply.status_code == 400 and reply.json()["message"] == "key: Field required"
    reply = user.post(f"{base}/properties", content=b"{not json", headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["message"].startswith("body: not valid JSON")
    reply = user.post(f"{base}/clusters/tomcat9/properties", json={"key": "k", "values": ["v"]})
    assert reply.status_code == 404 and "'tomcat9' is not a cartridge alias" in reply.json()["message"]


def test_undeploying_removes_the_properties_and_ends_the_members_tokens(running, tenant_apps):
    platform, _ = running
    _, user, _, other = tenant_apps
    agent = StratosAgentMetadata(other)
    assert agent.put({"key": "db", "values": ["10.0.0.9"]}, app=True) == 201
    assert user.post(f"/applications/{OTHER}/undeploy").status_code == 202
    wait_until(
        lambda: user.get(f"/applications/{OTHER}").json()["status"] == "Created",
        timeout=60,
        message=f"{OTHER} undeployed",
    )
    reply = user.get(f"{platform.url}/metadata/api/applications/{OTHER}/properties")
    assert reply.status_code == 200 and reply.json() == {"properties": []}
    with pytest.raises(urllib.error.HTTPError) as caught:
        agent.get(app=True)
    assert caught.value.code == 401  # its member is no longer in service


def test_cli_verbs_add_list_remove_and_name_errors(running, tenant_apps):
    from typer.testing import CliRunner

    from infra.cli.main import app

    platform, _ = running
    domain = tenant_apps[0]
    login = ["--url", platform.url, "--username", f"admin@{domain}", "--password", "tenant-pw"]
    runner = CliRunner()
    added = runner.invoke(
        app, ["add-metadata", APP, "-c", "php1", "-k", "db", "-v", "10.0.0.5", "-v", "10.0.0.6", *login]
    )
    assert added.exit_code == 0 and f"Properties added: [application-id] {APP} [cluster] php1" in added.output
    listed = runner.invoke(app, ["list-metadata", APP, "-c", "php1", "--json", *login])
    assert {"key": "db", "values": ["10.0.0.5", "10.0.0.6"]} in json.loads(listed.output)["properties"]
    removed = runner.invoke(app, ["remove-metadata", APP, "-c", "php1", "-k", "db", "-v", "10.0.0.5", *login])
    assert removed.exit_code == 0, removed.output
    listed = runner.invoke(app, ["list-metadata", APP, "-c", "php1", *login])
    assert "10.0.0.6" in listed.output and "10.0.0.5" not in listed.output
    unknown = runner.invoke(app, ["list-metadata", "nope", *login])
    assert unknown.exit_code == 1 and "application 'nope' not found (HTTP 404)" in unknown.output


def test_a_terminating_members_token_is_refused(running, tenant_apps):
    """From its termination's request on, a member's token no longer opens the service (the
    cloud controller is held off, so the member stays terminating, not yet gone)."""
    from infra.log.commands_client import CommandClient
    from schemas import commands as C
    from schemas.ids import aggregate_id
    from schemas.status import CommandAccepted

    platform, cloud = running
    domain, _, payload, _ = tenant_apps
    agent = StratosAgentMetadata(payload)
    assert agent.put({"key": "leaving", "values": ["soon"]}, app=True) == 201
    cloud.stop_controller()
    commands = CommandClient(platform.settings)
    try:
        cluster = aggregate_id(domain, "cluster", payload["clusterId"])
        reply = commands.call(cluster, C.TerminateMember(member_id=payload["memberId"]))
        assert isinstance(reply, CommandAccepted), reply

        def refused() -> bool:
            try:
                agent.get(app=True)
            except urllib.error.HTTPError as exc:
                return exc.code == 401
            return False

        wait_until(refused, timeout=30, message="the terminating member's token refused")
    finally:
        commands.close()
        cloud.start_controller()
