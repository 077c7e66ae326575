"""Secrets kept secret, checked after a scripted session that uses every secret-bearing field:
an IaaS account and a property marked secret on a cartridge, an application's repository
password, a tenant's admin password, users' credentials, a sign-up's repository password, a git
hook's artifact update. On the real broker, with a node, the reactor, the cloud controller (mock
IaaS) and the API served by uvicorn.

Nobody may find a secret in the clear: read-only users of the super tenant and of a tenant on
every GET route (streams included), every topic's raw bytes (the instance notifier's included),
an exported archive, the platform's log lines and the CLI's output. The cloud controller's
driver alone gets the account in the clear. Then the key is rotated: old records still open,
new ones are sealed with the new key."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from pydantic import SecretStr

import infra.cloud.controller
from infra.api.app import create_app
from infra.api.identity import hash_password
from infra.api.server import ApiServer
from infra.auth.secrets import key_id, new_key, open_for_instance, secret_box
from infra.broker import free_port
from infra.log.archive import export_log
from infra.log.archive_format import ArchiveReader
from infra.log.commands_client import CommandClient
from infra.log.kafka import Appender, DeadLetters, ensure_topics, read_to_end
from infra.observe.follower import stop_together
from infra.settings import Settings
from schemas import commands as C
from schemas.base import MASK
from schemas.definitions import Tenant
from schemas.records import TOPIC_RECORDS
from tests.conftest import RunningNode, events_of, sample, wait_until
from tests.test_api_platform import ADMIN_PASSWORD, define_samples
from tests.test_cloud_controller import RunningCloud

pytestmark = pytest.mark.integration
APP = "single-cartridge-app"
CLUSTER = f"{APP}.php1.php.domain"
SECRETS = {
    "identity": "AKID-session-identity",
    "credential": "session-iaas-credential",
    "property": "session-api-token",
    "repo": "session-repo-password",
    "tenant": "session-tenant-admin-pw",
    "user": "session-reader-pw",
    "super_user": "session-super-reader-pw",
    "signup": "session-signup-pw",
}
SECRET_BYTES = [s.encode() for s in SECRETS.values()] + [b"$2b$"]  # bcrypt hashes are sealed too


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


def raw_topics(settings) -> dict[str, bytes]:
    """Every topic's records (keys, values, headers) as the broker holds them."""
    found = {}
    for kind in TOPIC_RECORDS:
        parts = []
        for raw in read_to_end(settings, kind, decode_records=False):
            parts += [raw.key or b"", raw.value or b""] + [v or b"" for _, v in raw.headers or []]
        found[kind] = b"\n".join(parts)
    return found


def stream_bytes(client: httpx.Client, path: str, seconds: float = 1.0) -> bytes:
    """What an event stream sends in its first seconds."""
    received = b""
    try:
        with client.stream("GET", path, timeout=httpx.Timeout(seconds, read=seconds)) as answer:
            deadline = time.monotonic() + seconds
            for chunk in answer.iter_bytes():
                received += chunk
                if time.monotonic() > deadline:
                    break
    except httpx.ReadTimeout:
        pass
    return received


def assert_no_secret(where: str, data: bytes | str) -> None:
    data = data.encode() if isinstance(data, str) else data
    for secret in SECRET_BYTES:
        assert secret not in data, f"{secret!r} in {where}"


@pytest.fixture(scope="module")
def session(broker, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        admin_password=ADMIN_PASSWORD,
        password_hash_rounds=4,
        snapshot_every=1,
        state_dir=state,
        cloud_reconcile_seconds=0.5,
        node_partitions=[0, 1, 2, 3],
        cloud_retry_seconds=0.1,
        health_publish_seconds=0.3,
    )
    ensure_topics(settings)
    captured = Captured()
    root = logging.getLogger()
    root.addHandler(captured)
    ours = [logging.getLogger(name) for name in ("infra", "actors", "streams", "uvicorn")]
    levels = [logger.level for logger in ours]
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    accounts = []
    original = infra.cloud.controller.build_driver

    def recording(target, *args):
        accounts.append((target.identity, target.credential))
        return original(target, *args)

    infra.cloud.controller.build_driver = recording
    node = RunningNode(settings)
    cloud = RunningCloud(settings)
    server = ApiServer(
        create_app(
            settings.model_copy(
                update={  # /mock-iaas/api reaches this test's cloud
                    "mock_iaas_url": cloud.service.url,
                    "mock_iaas_key": SecretStr(cloud.service.key),
                }
            )
        ),
        port=free_port(),
    ).start()
    try:
        script(settings, server.url)
        yield settings, server.url, cloud, captured, accounts
    finally:
        stop_together(server.stop, cloud.stop, node.stop)
        infra.cloud.controller.build_driver = original
        root.removeHandler(captured)
        for logger, level in zip(ours, levels, strict=True):
            logger.setLevel(level)


def client(url: str, user: str, password: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api", auth=(user, password), timeout=60)


def script(settings, url: str) -> None:
    """The session: every secret-bearing field used once, through the REST API."""
    with client(url, "admin", ADMIN_PASSWORD) as admin:
        cartridge = sample("php.json")
        iaas = cartridge["iaasProvider"][0]
        iaas.update(identity=SECRETS["identity"], credential=SECRETS["credential"])
        iaas["property"].append({"name": "apiToken", "value": SECRETS["property"], "secret": True})
        define_samples(admin)
        assert admin.put("/cartridges", json=cartridge).status_code == 200
        application = sample("application-single-cartridge.json")
        application["multiTenant"] = True
        application["components"]["cartridges"][0]["subscribableInfo"]["artifactRepository"] = {
            "privateRepo": True,
            "repoUrl": "http://127.0.0.1:9/site.git",
            "repoUsername": "deployer",
            "repoPassword": SECRETS["repo"],
        }
        assert admin.put("/applications", json=application).status_code == 200
        assert admin.post(f"/applications/{APP}/deploy/application-policy-1").status_code == 202
        assert (
            admin.post(
                "/tenants", json={"tenantDomain": "session.org", "admin": "boss", "adminPassword": SECRETS["tenant"]}
            ).status_code
            == 201
        )
        assert (
            admin.post(
                "/users", json={"userName": "sreader", "credential": SECRETS["super_user"], "role": "user"}
            ).status_code
            == 201
        )
        wait_until(
            lambda: (
                admin.get(f"/cluster/{CLUSTER}").status_code == 200
                and any(m["status"] == "Active" for m in admin.get(f"/cluster/{CLUSTER}").json()["member"])
            ),
            timeout=60,
            message="an Active member",
        )
        assert (
            admin.post(
                "/repo/notify", json={"repository": {"url": "http://127.0.0.1:9/site.git"}, "after": "abc123"}
            ).status_code
            == 200
        )
    with client(url, "boss@session.org", SECRETS["tenant"]) as boss:  # the sealed hash checks
        assert (
            boss.post("/users", json={"userName": "reader", "credential": SECRETS["user"], "role": "user"}).status_code
            == 201
        )
        reply = boss.post(
            f"/applications/{APP}/signup",
            json={
                "artifactRepositories": [
                    {
                        "alias": "php1",
                        "repoUrl": "http://127.0.0.1:9/tenant.git",
                        "repoUsername": "boss",
                        "repoPassword": SECRETS["signup"],
                    }
                ]
            },
        )
        assert reply.status_code == 201, reply.text
    wait_until(
        lambda: (
            sum(
                b"ArtifactUpdated" in raw.value
                for raw in read_to_end(settings, "instance-notifier", decode_records=False)
            )
            >= 2
        ),
        message="both artifact updates",
    )


def get_paths(app, record_id: str) -> list[str]:
    """Every GET route of the API with its parameters filled in with the session's ids."""
    ids = {
        "cartridges": "php",
        "applications": APP,
        "users": "reader",
        "tenants": "session.org",
        "networkPartitions": "network-partition-1",
        "autoscalingPolicies": "autoscale-policy-1",
        "deploymentPolicies": "deployment-policy-1",
        "applicationPolicies": "application-policy-1",
        "cartridgeGroups": "group1",
        "kubernetesClusters": "kubernetes-cluster-1",
    }

    def routes(found, prefix=""):
        for route in found:
            if hasattr(route, "original_router"):  # FastAPI's included router
                yield from routes(route.original_router.routes, prefix + route.include_context.prefix)
            elif "GET" in (getattr(route, "methods", None) or ()):
                yield prefix + route.path

    paths = []
    for path in routes(app.routes):
        resource = path.split("/")[2] if path.startswith("/api/") else ""
        path = path.replace("{id}", ids.get(resource, "x")).replace("{application_id}", APP)
        path = path.replace("{cluster_id}", CLUSTER).replace("{name}", "console.js")
        path = path.replace("{record_id}", record_id).replace("{path:path}", "instances")  # the mock IaaS's nodes
        paths.append(path)
    return paths


def test_readers_see_no_secret_on_any_get_route(session):
    settings, url, *_ = session
    app = create_app(settings)
    notice = next(d.record for d in read_to_end(settings, "instance-notifier") if d.record.type == "ArtifactUpdated")
    paths = get_paths(app, notice.id)  # `why` of a record that carries a sealed password
    assert len(paths) >= 25 and "/api/cartridges/php" in paths and "/api/console/stream" in paths
    for user, password in (
        ("sreader", SECRETS["super_user"]),
        ("reader@session.org", SECRETS["user"]),
        ("boss@session.org", SECRETS["tenant"]),
    ):
        with httpx.Client(base_url=url, auth=(user, password), timeout=60) as reader:
            for path in paths:
                if path.endswith("/stream"):
                    body = stream_bytes(reader, path + ("?tenant=session.org" if "logs" in path else ""))
                else:
                    answer = reader.get(path, params={"at": "2099-01-01T00:00:00Z"} if path == "/api/replay" else None)
                    assert answer.status_code < 500, (path, answer.text)
                    body = answer.content
                assert_no_secret(f"GET {path} as {user}", body)
    with httpx.Client(base_url=f"{url}/api", auth=("sreader", SECRETS["super_user"])) as reader:
        shown = reader.get("/cartridges/php").json()["iaasProvider"][0]
        assert (shown["identity"], shown["credential"]) == (MASK, MASK)
        assert {"name": "apiToken", "value": MASK, "secret": True} in shown["property"]
        repository = reader.get(f"/applications/{APP}").json()["components"]["cartridges"][0]["subscribableInfo"][
            "artifactRepository"
        ]
        assert repository["repoPassword"] == MASK and repository["repoUsername"] == "deployer"
        assert reader.post("/cartridges", json=sample("php.json")).status_code == 403  # read-only


def test_no_topic_holds_a_secret_in_the_clear_and_the_notifier_only_what_its_cluster_opens(session):
    settings, _, cloud, *_ = session
    topics = raw_topics(settings)
    for kind in ("commands", "events", "snapshots", "replies", "instance-notifier", "logs"):
        assert topics[kind], f"the session wrote nothing to {kind}"
    for kind, data in topics.items():
        assert_no_secret(f"topic {kind}", data)
    box = secret_box(settings)
    cluster_key = f"carbon.super/cluster/{CLUSTER}"
    notices = [
        d.record.payload for d in read_to_end(settings, "instance-notifier") if d.record.type == "ArtifactUpdated"
    ]
    member_key = box.cartridge_key(cluster_key)  # what a member of the cluster holds
    assert sorted(open_for_instance(n.repo_password, member_key) for n in notices) == sorted(
        [SECRETS["repo"], SECRETS["signup"]]
    )
    with pytest.raises(ValueError):
        open_for_instance(notices[0].repo_password, box.cartridge_key("carbon.super/cluster/other.domain"))
    spawns = [e.payload for e in events_of(settings) if e.type == "MemberSpawnRequested"]
    assert spawns and all("identity" not in s.iaas and "credential" not in s.iaas for s in spawns)
    for instance in cloud.cloud.all():  # the mock IaaS shows the payload without its keys
        view = instance.view()
        assert view["cartridgeKey"] == MASK and view["repoPassword"] == MASK


def test_the_driver_alone_gets_the_account_in_the_clear(session):
    *_, accounts = session
    assert (SECRETS["identity"], SECRETS["credential"]) in accounts


def test_an_archive_of_the_log_holds_no_secret(session, tmp_path):
    settings, *_ = session
    path = tmp_path / "session.archive"
    export_log(settings, path)
    rows = [row for block in ArchiveReader(path) for row in block.rows]
    assert len(rows) > 50
    assert_no_secret("the archive", b"\n".join(bytes(row[3] or b"") + bytes(row[2] or b"") for row in rows))
    assert_no_secret("the archive file", path.read_bytes())


def test_log_lines_and_the_cli_show_no_secret_and_replay_shows_them_masked(session):
    settings, *_, captured, _ = session
    assert captured.lines
    assert_no_secret("the platform's log lines", "\n".join(captured.lines))
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(settings.state_dir),
    }
    stratos = [sys.executable, "-c", "from infra.cli.main import main; main()"]
    outputs = []
    for args in (
        ["replay", "--at", "2099-01-01T00:00:00+00:00", "--aggregate", f"carbon.super/application/{APP}", "--json"],
        ["state", f"carbon.super/cluster/{CLUSTER}"],
    ):
        done = subprocess.run(stratos + args, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (args, done.stderr)
        assert_no_secret(" ".join(args), done.stdout + done.stderr)
        outputs.append(done.stdout)
    assert MASK in outputs[0] and MASK in outputs[1]  # replayed state: there, and masked


def test_a_dead_letter_masks_the_clear_secrets_of_a_raw_record(settings):
    appender = Appender(settings)
    raw = json.dumps({"type": "AddUser", "payload": {"definition": {"userName": "x", "credential": SECRETS["user"]}}})
    assert DeadLetters(appender).send("somewhere", 0, 7, b"key", raw.encode() + b"{broken", "not a record")
    appender.close()
    (letter,) = [d.record.payload for d in read_to_end(settings, "deadletter")]
    assert SECRETS["user"] not in letter.original and MASK in letter.original and "userName" in letter.original


def test_after_rotating_the_key_old_records_open_and_new_ones_use_the_new_key(broker, tmp_path):
    old, new = new_key(), new_key()
    base = dict(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        admin_password=ADMIN_PASSWORD,
        password_hash_rounds=4,
        state_dir=tmp_path,
        node_partitions=[0, 1, 2, 3],
    )  # no group join: the node starts at once
    before = Settings(**base, secret_key=old)
    ensure_topics(before)
    node = RunningNode(before)
    writer = CommandClient(before)  # what the API does with a new tenant: hash, seal, send
    try:
        tenant = Tenant(tenantDomain="old.org", admin="boss", adminPassword=hash_password("old-tenant-pw", 4))
        assert writer.call("carbon.super/tenant/old.org", C.AddTenant(definition=tenant)).type == "CommandAccepted"
    finally:
        writer.close()
        node.stop()
    after = Settings(**base, secret_key=f"{new},{old}")  # STRATOS_SECRET_KEY="NEW,OLD", parts restarted
    node = RunningNode(after)
    server = ApiServer(create_app(after), port=free_port()).start()
    try:
        with client(server.url, "boss@old.org", "old-tenant-pw") as boss:  # an old record opens
            assert boss.get("/whoami").status_code == 200
        with client(server.url, "admin", ADMIN_PASSWORD) as admin:
            assert (
                admin.post(
                    "/tenants", json={"tenantDomain": "new.org", "admin": "boss", "adminPassword": "new-tenant-pw"}
                ).status_code
                == 201
            )
        with client(server.url, "boss@new.org", "new-tenant-pw") as boss:
            assert boss.get("/whoami").status_code == 200
    finally:
        stop_together(server.stop, node.stop)
    box = secret_box(after)
    sealed = {
        e.payload.definition.tenantDomain: e.payload.definition.adminPassword
        for e in events_of(after)
        if e.type == "TenantAdded"
    }
    assert box.sealed_with(sealed["old.org"]) == key_id(old)
    assert box.sealed_with(sealed["new.org"]) == key_id(new)
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": broker.bootstrap,
        "STRATOS_TOPIC_PREFIX": base["topic_prefix"],
        "STRATOS_SECRET_KEY": f"{new},{old}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli", "secrets", "usage", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {key_id(old): 1, key_id(new): 1}
