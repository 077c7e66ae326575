"""Records that prove who sent them: forged records from a raw kafka-python client change
nothing and are dead-lettered or refused with their reasons; the same records signed as the
platform hands out keys (a member's key, a user's token) take effect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import bcrypt
import httpx
import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.auth.access import Principal, Tokens
from infra.auth.signing import SIGNATURE, SIGNER, TOKEN, Signer, member_credentials, platform_secret
from infra.broker import free_port
from infra.log.commands_client import CommandClient
from infra.log.kafka import encode, ensure_topics, envelope, new_id, read_to_end
from infra.observe.follower import stop_together
from infra.settings import Settings
from schemas import commands as C
from schemas.definitions import DEFINITION_KINDS
from schemas.ids import aggregate_id
from schemas.records import CommandRecord, HealthRecord, InstanceStatusRecord, ReplyRecord
from schemas.status import CommandAccepted, CommandRejected, HealthStat, InstanceStatus
from tests.conftest import RunningNode, events_of, sample, wait_until
from tests.test_health_flow import CLUSTER as HEALTH_CLUSTER  # noqa: F401
from tests.test_health_flow import KEY as HEALTH_KEY
from tests.test_health_flow import active_cluster, health_settings, worker  # noqa: F401,F811  (fixtures)
from tests.test_runtime_flow import define_all

pytestmark = pytest.mark.integration
T = "carbon.super"
CLUSTER = "single-cartridge-app.php1.php.domain"
KEY = aggregate_id(T, "cluster", CLUSTER)
ADMIN_PASSWORD = "signed-admin-pw"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "clients"


@pytest.fixture
def raw(settings):
    """A plain kafka-python producer: what anyone who reaches the broker has."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    yield producer
    producer.close()


def put(raw, settings, kind: str, record, headers=()) -> None:
    raw.send(settings.topic(kind), key=record.aggregate_id.encode(), value=encode(record), headers=list(headers)).get(
        timeout=10
    )


def letters(settings, kind: str) -> dict[str, str]:
    """record id -> dead-letter reason, for the letters of records from `kind`."""
    found = {}
    for delivered in read_to_end(settings, "deadletter"):
        letter = delivered.record.payload
        if letter.source_topic == settings.topic(kind):
            found[json.loads(letter.original)["id"]] = letter.reason
    return found


def member_headers(settings, tenant: str, cluster: str, member: str, kind: str, record, key_hex=None):
    """Headers signed with the member's own key (what its payload carries), or `key_hex`."""
    key_hex = key_hex or member_credentials(platform_secret(settings), tenant, cluster, member)["signingKey"]
    return Signer.member(tenant, cluster, member, key_hex).headers(kind, record.aggregate_id.encode(), encode(record))


def in_maintenance(settings, client) -> str:
    """A deployed member, Active and then in maintenance (it may now say ReadyToShutdown)."""
    define_all(client)
    client.call(
        aggregate_id(T, "application", "single-cartridge-app"),
        C.DeployApplication(application_policy_id="application-policy-1"),
    )
    member = wait_until(
        lambda: [e.payload.member_id for e in events_of(settings, KEY) if e.type == "MemberSpawnRequested"],
        message="a spawned member",
    )[0]
    for command in (
        C.ReportNodeCreated(member_id=member, node_id=member),
        *(C.ReportInstanceStatus(member_id=member, status=s) for s in ("Started", "Activated", "MaintenanceMode")),
    ):
        assert isinstance(client.call(KEY, command), CommandAccepted), command
    return member


def test_forged_ready_to_shutdown_is_dead_lettered_and_the_members_own_works(settings, running_node, client, raw):
    member = in_maintenance(settings, client)

    def ready(record_id: str | None = None):
        status = InstanceStatus(type="InstanceReadyToShutdown", member_id=member, cluster_id=CLUSTER)
        return envelope(InstanceStatusRecord, status, KEY, tenant=T, record_id=record_id)

    unsigned, other_tenant, guessed = ready(), ready(), ready()
    put(raw, settings, "instance-status", unsigned)
    # a member of another tenant, signing with its own (valid) key, about this member
    put(
        raw,
        settings,
        "instance-status",
        other_tenant,
        member_headers(settings, "evil.org", "evil.php.domain", "evil.m1", "instance-status", other_tenant),
    )
    # this member's name with a key made up by the forger
    put(
        raw,
        settings,
        "instance-status",
        guessed,
        member_headers(settings, T, CLUSTER, member, "instance-status", guessed, key_hex="00" * 32),
    )
    reasons = wait_until(
        lambda: len(found := letters(settings, "instance-status")) == 3 and found,
        timeout=30,
        message="three dead letters",
    )
    assert "unsigned instance-status record" in reasons[unsigned.id]
    assert f"about another tenant '{T}' (signed by 'evil.org')" in reasons[other_tenant.id]
    assert f"member '{member}' (signed by 'evil.m1')" in reasons[other_tenant.id]
    assert "does not verify" in reasons[guessed.id]
    assert not [e for e in events_of(settings, KEY) if e.type == "MemberReadyToShutdown"]

    own = ready()
    put(raw, settings, "instance-status", own, member_headers(settings, T, CLUSTER, member, "instance-status", own))
    wait_until(
        lambda: [e for e in events_of(settings, KEY) if e.type == "MemberReadyToShutdown"],
        timeout=30,
        message="the member's own ReadyToShutdown taking effect",
    )
    assert own.id not in letters(settings, "instance-status")


def test_health_for_another_cluster_is_dead_lettered_and_the_members_own_is_windowed(
    settings, health_settings, client, worker, raw
):  # noqa: F811
    members = active_cluster(settings, client, worker, 1, {"load_average": 80.0})

    def sample(record_id=None):
        stat = HealthStat(
            cluster_id=HEALTH_CLUSTER,
            network_partition_id="np1",
            member_id=members[0],
            metric="load_average",
            value=10.0,
            timestamp=time.time(),
        )
        return envelope(HealthRecord, stat, HEALTH_KEY, tenant=T, record_id=record_id)

    unsigned, elsewhere = sample(), sample()
    put(raw, settings, "health", unsigned)
    # a member of another cluster sends figures for this one
    put(
        raw,
        settings,
        "health",
        elsewhere,
        member_headers(settings, T, "other.php.domain", members[0], "health", elsewhere),
    )
    reasons = wait_until(
        lambda: len(found := letters(settings, "health")) == 2 and found, timeout=30, message="two dead letters"
    )
    assert "unsigned health record" in reasons[unsigned.id]
    assert f"cluster '{HEALTH_CLUSTER}' (signed by 'other.php.domain')" in reasons[elsewhere.id]
    windows = worker.service.book.clusters.get(HEALTH_KEY)
    assert windows is None or windows.last_record_id not in (unsigned.id, elsewhere.id)

    own = sample()
    put(raw, settings, "health", own, member_headers(settings, T, HEALTH_CLUSTER, members[0], "health", own))
    wait_until(
        lambda: (w := worker.service.book.clusters.get(HEALTH_KEY)) is not None and w.last_record_id == own.id,
        timeout=30,
        message="the member's own sample in its cluster's windows",
    )


# --- commands from Kafka clients ---------------------------------------------------------------
@pytest.fixture(scope="module")
def api(broker):
    """A node and the REST API that issues the tokens, with one bootstrap admin password; shared
    by the module's command tests (each writes its own users and reads its own replies)."""
    made = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        admin_password=SecretStr(ADMIN_PASSWORD),
        password_hash_rounds=4,
    )
    ensure_topics(made)
    node = RunningNode(made)
    server = ApiServer(create_app(made), port=free_port()).start()
    try:
        yield made, server.url
    finally:
        stop_together(server.stop, node.stop)


@pytest.fixture
def api_client(api):
    made = CommandClient(api[0])
    yield made
    made.close()


def token(url: str, username: str, password: str) -> str:
    issued = httpx.post(f"{url}/api/token", json={"username": username, "password": password}, timeout=30)
    assert issued.status_code == 200, issued.text
    return issued.json()["access_token"]


def add_user(name: str, password: str, role: str = "admin", tenant: str = T):
    model = DEFINITION_KINDS["user"].model_validate(
        {
            "userName": name,
            "role": role,
            "email": f"{name}@example.org",
            "credential": bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode(),
        }
    )
    return envelope(
        CommandRecord,
        C.AddUser(definition=model),
        aggregate_id(tenant, "user", name),
        tenant=tenant,
        record_id=new_id(),
    )


def test_forged_commands_are_refused_with_their_reasons_and_a_tokened_one_works(api, api_client):
    settings, url = api
    client = api_client
    raw = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    with httpx.Client(base_url=f"{url}/api", auth=("admin", ADMIN_PASSWORD), timeout=30) as admin:
        assert (
            admin.post(
                "/tenants",
                json={
                    "tenantDomain": "other.org",
                    "admin": "boss",
                    "adminPassword": "boss-pw",
                    "email": "boss@other.org",
                },
            ).status_code
            == 201
        )
    with httpx.Client(base_url=f"{url}/api", auth=("boss@other.org", "boss-pw"), timeout=30) as boss:
        assert (
            boss.post("/users", json={"userName": "reader", "credential": "reader-pw", "role": "user"}).status_code
            == 201
        )
    expired = Tokens(
        platform_secret(settings), None, "admin", ADMIN_PASSWORD, 60.0, clock=lambda: time.time() - 3600
    ).issue(Principal(username="admin", tenant=T, role="admin"), "")
    forged = {
        "none": (add_user("mallory1", "pw"), []),
        "garbage": (add_user("mallory2", "pw"), [(TOKEN, b"st1.eyJzdWIiOiJhZG1pbiJ9.bm90LWEtbWFj")]),
        "expired": (add_user("mallory3", "pw"), [(TOKEN, expired.encode())]),
        "other tenant": (add_user("mallory4", "pw"), [(TOKEN, token(url, "boss@other.org", "boss-pw").encode())]),
        "reader": (
            add_user("mallory5", "pw", tenant="other.org"),
            [(TOKEN, token(url, "reader@other.org", "reader-pw").encode())],
        ),
    }
    member = add_user("mallory6", "pw")  # a member, with its own valid key
    forged["a member"] = (member, member_headers(settings, T, CLUSTER, "m1", "commands", member))
    # a forged answer to the first one, ahead of the node's: the API's reader takes only the node's
    fake = envelope(
        ReplyRecord,
        CommandAccepted(command_id=forged["none"][0].id, command_type="AddUser"),
        forged["none"][0].aggregate_id,
    )
    put(raw, settings, "replies", fake)
    for record, headers in forged.values():
        put(raw, settings, "commands", record, headers)
    bad_signature = add_user("mallory7", "pw")
    put(raw, settings, "commands", bad_signature, [(SIGNER, b"platform"), (SIGNATURE, b"00")])
    replies = {case: client.wait(record.id, timeout=30) for case, (record, _) in forged.items()}
    assert all(isinstance(r, CommandRejected) for r in replies.values()), replies
    assert (replies["none"].code, replies["garbage"].code, replies["expired"].code) == (401, 401, 401)
    assert "stratos-token header" in replies["none"].reason
    assert "not one this platform issued" in replies["garbage"].reason
    assert "expired" in replies["expired"].reason
    assert (
        replies["other tenant"].code == 403
        and "'other.org' may not change the resources of tenant 'carbon.super'" in replies["other tenant"].reason
    )
    assert replies["reader"].code == 403 and "may read but not change" in replies["reader"].reason
    assert replies["a member"].code == 403 and "may not send commands" in replies["a member"].reason
    ids = {record.id for record, _ in forged.values()} | {bad_signature.id}
    refused = wait_until(lambda: ids <= set(found := letters(settings, "commands")) and found, timeout=30)
    assert refused[forged["none"][0].id].startswith("refused (401): unauthenticated command")
    assert "signature of 'platform' does not verify" in refused[bad_signature.id]
    assert not [e for e in events_of(settings) if e.aggregate_id.split("/")[-1].startswith("mallory")]
    assert "unsigned replies record" in wait_until(lambda: letters(settings, "replies").get(fake.id), timeout=30)

    # the same command with the super admin's token (the REST API's own) is accepted
    signed = add_user("trent", "trent-pw")
    put(raw, settings, "commands", signed, [(TOKEN, token(url, "admin", ADMIN_PASSWORD).encode())])
    assert isinstance(client.wait(signed.id, timeout=30), CommandAccepted)
    wait_until(
        lambda: httpx.get(f"{url}/api/whoami", auth=("trent", "trent-pw"), timeout=30).status_code == 200,
        timeout=30,
        message="the added user logging in",
    )
    # and what only the platform sends is refused even with a good token
    fact = envelope(CommandRecord, C.ReportNodeDestroyed(member_id="m1"), KEY, record_id=new_id())
    put(raw, settings, "commands", fact, [(TOKEN, token(url, "admin", ADMIN_PASSWORD).encode())])
    reply = client.wait(fact.id, timeout=30)
    assert isinstance(reply, CommandRejected) and reply.code == 403 and "platform's own parts only" in reply.reason
    # and the REST routes' reference rules: an application naming cartridges nobody defined
    app = DEFINITION_KINDS["application"].model_validate(sample("application-single-cartridge.json"))
    dangling = envelope(
        CommandRecord,
        C.AddApplication(definition=app),
        aggregate_id(T, "application", app.definition_id),
        record_id=new_id(),
    )
    put(raw, settings, "commands", dangling, [(TOKEN, token(url, "admin", ADMIN_PASSWORD).encode())])
    reply = client.wait(dangling.id, timeout=30)
    assert isinstance(reply, CommandRejected) and reply.code == 400
    assert "uses cartridge 'php'" in reply.reason and "which does not exist" in reply.reason
    raw.close()


def test_the_documented_command_client_needs_a_token_and_works_with_one(api):
    """examples/clients/kafka_python_commands.py as docs/clients.md runs it: a user's token."""
    settings, url = api
    env = {**{k: v for k, v in os.environ.items() if k != "STRATOS_PLATFORM_SECRET"}, "PYTHONPATH": ""}
    run = [
        sys.executable,
        str(EXAMPLES / "kafka_python_commands.py"),
        "--bootstrap",
        settings.kafka_bootstrap,
        "--prefix",
        settings.topic_prefix,
        str(EXAMPLES / "commands.json"),
    ]
    anonymous = subprocess.run(run, capture_output=True, text=True, timeout=60, env=env)
    assert (
        anonymous.returncode == 1 and "AddAutoscalingPolicy: rejected: 401 unauthenticated command" in anonymous.stdout
    )
    done = subprocess.run(
        [*run, "--token", token(url, "admin", ADMIN_PASSWORD)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AddAutoscalingPolicy: accepted: AutoscalingPolicyAdded" in done.stdout
