"""The outer wall: Kafka authenticates every client over TLS and its authorizer decides.

Real processes: `stratos up --secure` runs the whole platform (embedded Kafka with a SASL_SSL
listener only, SCRAM-SHA-512, the StandardAuthorizer) with the sample deployed through it; a
plaintext client, a wrong password and a principal without ACLs are refused by the broker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import UserScramCredentialUpsertion
from kafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from infra.agent.agent import AgentPayload, CartridgeAgent
from infra.broker import BrokerError, EmbeddedBroker, free_port
from infra.broker.acls import COPIED_FROM, apply, client_principal, instance_credentials, instance_principal, plan
from infra.broker.fanout import TenantReplies
from infra.broker.secure import as_platform_principal, broker_security, password
from infra.log.kafka import (
    Appender,
    decode,
    encode,
    ensure_topics,
    envelope,
    kafka_client_options,
    new_id,
    read_to_end,
)
from infra.settings import Settings
from schemas import commands as C
from schemas import events as E
from schemas.ids import aggregate_id
from schemas.records import Claim, CommandRecord, Commit, LogRecord, NotifierRecord
from schemas.status import CommandRejected, InstanceCleanupMember
from tests.conftest import RunningNode, stop_stratos_up, stratos_broker, wait_until

pytestmark = pytest.mark.integration
PASSWORD = "secure-admin-pw"
APP = "single-cartridge-app"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    """A secure embedded broker and the platform's settings on it (its own principal)."""
    state = tmp_path_factory.mktemp("secure")
    base = Settings(state_dir=state, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=2)
    broker = EmbeddedBroker(security=broker_security(base), log_path=state / "kafka.log").start()
    platform = as_platform_principal(base).model_copy(update={"kafka_bootstrap": broker.bootstrap})
    ensure_topics(platform)
    try:
        yield broker, platform
    finally:
        broker.stop()


def as_user(platform: Settings, name: str, password: str) -> Settings:
    return platform.model_copy(update={"kafka_username": name, "kafka_password": SecretStr(password)})


def add_user(platform: Settings, name: str, password: str) -> Settings:
    """A SCRAM principal made by the platform's (a super user), without any ACL."""
    admin = KafkaAdminClient(**kafka_client_options(platform))
    try:
        assert admin.alter_user_scram_credentials([UserScramCredentialUpsertion(name, "SCRAM-SHA-512", password)]) == {
            name: None
        }
    finally:
        admin.close()
    return as_user(platform, name, password)


REFUSED_QUICKLY = dict(request_timeout_ms=3000, max_block_ms=3000, bootstrap_timeout_ms=3000)
"""A client the broker turns away gives up in 3 s, not kafka-python's 30 s of bootstrap attempts."""


def test_plaintext_and_wrong_passwords_are_refused(secure):
    broker, platform = secure
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=broker.bootstrap, **REFUSED_QUICKLY)
    assert wait_until(
        lambda: "SSL handshake failed" in Path(broker.log_path).read_text(),
        message="the broker's log of the plaintext attempt",
    )
    with pytest.raises(KafkaError):
        KafkaProducer(**{**kafka_client_options(as_user(platform, "stratos", "not-the-password")), **REFUSED_QUICKLY})
    assert wait_until(
        lambda: re.search(r"Failed authentication .*Authentication failed", Path(broker.log_path).read_text()),
        message="the broker's log of the failed SCRAM authentication",
    )


def test_a_principal_without_acls_is_refused_by_the_authorizer(secure):
    _, platform = secure
    nobody = add_user(platform, "nobody", "nobody-pw")
    producer = KafkaProducer(**kafka_client_options(nobody), max_block_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(platform.topic("events"), b"{}").get(timeout=10)
    finally:
        producer.close()
    assert refused_read(nobody, "snapshots")


def refused_read(settings: Settings, kind: str) -> bool:
    """The broker refuses this principal a read of the topic (TopicAuthorizationFailed, not
    merely nothing to read): asked for its offsets, as every reader does first, then fetched."""
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None)
    try:
        partition = TopicPartition(settings.topic(kind), 0)
        consumer.assign([partition])
        try:
            consumer.end_offsets([partition])  # needs DESCRIBE (which WRITE implies)
            consumer.seek_to_beginning(partition)
            for _ in range(3):  # the fetch itself needs READ
                consumer.poll(timeout_ms=1000)
        except TopicAuthorizationFailedError:
            return True
        return False
    finally:
        consumer.close()


def principal(platform: Settings, name: str) -> Settings:
    return as_user(platform, name, password(platform, name))


def send(settings: Settings, kind: str, value: bytes = b"{}", key: bytes = b"k"):
    producer = KafkaProducer(**kafka_client_options(settings), max_block_ms=10_000)
    try:
        return producer.send(settings.topic(kind), value, key=key).get(timeout=10)
    finally:
        producer.close()


def test_instances_and_each_tenants_clients_get_exactly_their_acls(secure):
    _, platform = secure
    apply(platform, plan(platform, ["a.org", "b.org"]))
    instance_a = principal(platform, instance_principal("a.org"))
    client_a = principal(platform, client_principal("a.org"))
    for kind in ("instance-status", "health", "logs"):
        assert send(instance_a, kind).topic == platform.topic(kind)
    for kind in ("events", "snapshots", "commands", "replies", "instance-notifier", "instances.a.org"):
        with pytest.raises(TopicAuthorizationFailedError):
            send(instance_a, kind)
    for kind in ("replies", "replies.a.org", "snapshots", "commands", "deadletter"):
        assert refused_read(instance_a, kind), kind

    assert send(client_a, "commands").topic == platform.topic("commands")
    for kind in ("events", "snapshots", "replies", "instance-status", "health"):
        with pytest.raises(TopicAuthorizationFailedError):
            send(client_a, kind)
    for kind in ("replies", "replies.b.org", "events", "snapshots", "instance-notifier", "commands"):
        assert refused_read(client_a, kind), kind
    assert not refused_read(client_a, "replies.a.org")


def test_a_tenants_client_reads_its_own_replies_and_no_other_tenants(secure):
    """A client of a.org sends a command (no token: the node answers 401); the reply reaches
    a.org's topic, which b.org's client may not read; the platform runs as its own principal."""
    _, platform = secure
    apply(platform, plan(platform, ["a.org", "b.org"]))
    client_a, client_b = (principal(platform, client_principal(t)) for t in ("a.org", "b.org"))
    node = RunningNode(platform)
    fanout = TenantReplies(platform)
    thread = threading.Thread(target=fanout.run, daemon=True)
    thread.start()
    try:
        command = envelope(
            CommandRecord,
            C.RemoveUser(id="someone"),
            aggregate_id("a.org", "user", "someone"),
            tenant="a.org",
            record_id=new_id(),
        )
        send(client_a, "commands", encode(command), command.aggregate_id.encode())

        def replied():
            found = [
                reply.payload
                for raw in read_to_end(client_a, "replies.a.org", decode_records=False)
                if (reply := decode("replies", raw.value)).payload.command_id == command.id
            ]
            return found and found[0]

        reply = wait_until(replied, timeout=60, message="a.org's reply on its own topic")
        assert isinstance(reply, CommandRejected) and reply.code == 401
        assert refused_read(client_b, "replies.a.org") and refused_read(client_b, "replies")
        assert not list(read_to_end(platform, "replies.b.org", decode_records=False))
    finally:
        fanout.stop()
        thread.join(15)
        node.stop()


def test_an_instances_credentials_cannot_read_another_tenants_records(secure):
    """Issue 26: a.org's instance principal is refused by the broker on b.org's instance topic,
    the events topic and the notifier topic; it reads its own tenant's instance topic."""
    _, platform = secure
    apply(platform, plan(platform, ["a.org", "b.org"]))
    instance_a = principal(platform, instance_principal("a.org"))
    for kind in ("instances.b.org", "events", "instance-notifier", "replies.b.org"):
        assert refused_read(instance_a, kind), kind
    assert not refused_read(instance_a, "instances.a.org")


def committed(appender: Appender, tenant: str, cluster: str, *events) -> None:
    """A claim, then a commit under it, as a node writes them, on one events partition."""
    claim = envelope(LogRecord, Claim(partition=0, writer="test-node"), f"claim/{new_id()}", tenant=tenant)
    appender.append("events", claim.aggregate_id, claim, partition=0)
    key = aggregate_id(tenant, "cluster", cluster)
    commit = envelope(
        LogRecord,
        Commit(command_type="Test", outcome="accepted", events=list(events), claim=claim.id),
        key,
        tenant=tenant,
        aggregate_seq=1,
    )
    appender.append("events", key, commit, partition=0)


def test_an_agent_on_the_secure_broker_reads_only_its_tenants_copies(secure, tmp_path):
    """The feed copies a.org's member initialisation and notice to `instances.a.org` (and
    b.org's to b.org's topic only); an agent running as a.org's instance principal, which may
    read neither the events nor the notifier topic, starts its member and cleans up on notice."""
    _, platform = secure
    apply(platform, plan(platform, ["a.org", "b.org"]))
    username, handed = instance_credentials(platform, "a.org")  # what the cloud controller hands it
    instance_a = as_user(platform, username, handed)
    member, cluster = f"m-{new_id()[:8]}", "app.php.php.domain"
    feed = TenantReplies(platform)
    feeding = threading.Thread(target=feed.run, daemon=True)
    feeding.start()
    agent = CartridgeAgent(
        instance_a, AgentPayload(member_id=member, cluster_id=cluster, tenant="a.org"), tmp_path / "work"
    )
    running = threading.Thread(target=agent.run, daemon=True)
    running.start()
    platform_log = Appender(platform, source="test")
    key = aggregate_id("a.org", "cluster", cluster)
    try:
        committed(
            platform_log,
            "b.org",
            cluster,
            E.MemberInitialized(member_id="member-of-b.org", cluster_id=cluster, node_id="n"),
        )
        committed(
            platform_log, "a.org", cluster, E.MemberInitialized(member_id=member, cluster_id=cluster, node_id="n")
        )

        def statuses() -> list[str]:
            return [
                status.payload.type
                for raw in read_to_end(platform, "instance-status", decode_records=False)
                if raw.key == key.encode()  # not the other tests' bare records
                and (status := decode("instance-status", raw.value)).payload.member_id == member
            ]

        assert wait_until(lambda: "InstanceStarted" in statuses(), timeout=60, message="the agent's InstanceStarted")
        notice = envelope(
            NotifierRecord, InstanceCleanupMember(member_id=member, cluster_id=cluster), key, tenant="a.org"
        )
        platform_log.append("instance-notifier", key, notice)
        assert wait_until(
            lambda: "InstanceReadyToShutdown" in statuses(), timeout=60, message="the agent's clean-up on notice"
        )
        copies_a = list(read_to_end(platform, "instances.a.org", decode_records=False))
        assert {dict(raw.headers)[COPIED_FROM] for raw in copies_a} == {b"events", b"instance-notifier"}
        assert all(raw.key.decode().startswith("a.org/") for raw in copies_a)
        assert b"member-of-b.org" not in b"".join(raw.value for raw in copies_a)
        assert any(
            b"member-of-b.org" in raw.value for raw in read_to_end(platform, "instances.b.org", decode_records=False)
        )
    finally:
        agent.stop()
        running.join(15)
        feed.stop()
        feeding.join(15)
        platform_log.close()


class SecureUp:
    """`stratos up --secure` as a user runs it; `stop` is Ctrl-C."""

    def __init__(self, state_dir: Path, *options: str) -> None:
        self.api_port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STRATOS_")},
            "PYTHONPATH": os.getcwd(),
            "STRATOS_ADMIN_PASSWORD": PASSWORD,
            "STRATOS_PASSWORD_HASH_ROUNDS": "4",
            "STRATOS_MOCK_API_PORT": str(free_port()),
            "STRATOS_CLOUD_RECONCILE_SECONDS": "0.5",
            "STRATOS_HEALTH_PUBLISH_SECONDS": "0.5",
            "COLUMNS": "300",
        }
        self.output = state_dir.parent / "up.txt"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "up", "--secure", *options, "--api-port", str(self.api_port)]
                + ["--state-dir", str(state_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.state_dir = state_dir
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", auth=("admin", PASSWORD), timeout=30)

    def bootstrap(self) -> str | None:
        assert self.process.poll() is None, self.output.read_text()
        found = re.search(r"on Kafka (\S+)", self.output.read_text())
        return found.group(1) if found else None

    def active(self) -> list[str]:
        try:
            runtime = self.http.get(f"/api/applications/{APP}/runtime").json()
        except (httpx.HTTPError, ValueError):
            return []
        return [
            m["memberId"]
            for instance in runtime.get("applicationInstances") or []
            for cluster in instance["clusterInstances"]
            for m in cluster["member"]
            if m["status"] == "Active"
        ]

    def stop(self) -> int:
        self.http.close()
        return stop_stratos_up(self.process)


def test_stratos_up_secure_runs_the_whole_platform_as_its_own_principal(tmp_path):
    state_dir = tmp_path / "state"
    up = SecureUp(state_dir)
    try:
        bootstrap = wait_until(up.bootstrap, timeout=120, interval=0.2, message="`stratos up --secure` on its broker")
        members = wait_until(
            lambda: len(found := up.active()) == 2 and found,
            timeout=300,  # the whole platform starting on a machine it shares
            interval=0.5,
            message="the sample's two members Active through node, reactor, cloud controller and API",
        )
        platform = as_platform_principal(Settings(state_dir=state_dir)).model_copy(
            update={"kafka_bootstrap": bootstrap}
        )
        wait_until(
            lambda: set(members) <= {d.record.payload.member_id for d in read_to_end(platform, "health")},
            timeout=60,
            interval=0.5,
            message="health samples of both members (the faust worker's topics)",
        )
        log = (state_dir / "logs" / "kafka.log").read_text()
        assert "Failed authentication" not in log and "Principal = User:ANONYMOUS" not in log
        with pytest.raises(KafkaError):
            KafkaProducer(bootstrap_servers=bootstrap, **REFUSED_QUICKLY)
    finally:
        code = up.stop()
    assert code == 0, up.output.read_text()[-3000:]
    secret = (state_dir / "kafka-tls" / "stratos.password").read_text().strip()
    logs = [path for path in (state_dir / "logs").rglob("*") if path.is_file()]
    assert logs and all(secret not in path.read_text(errors="replace") for path in [up.output, *logs])


def test_stratos_up_secure_process_runs_real_agents_as_their_tenants_instance_principal(tmp_path):
    """`--process`: every member a real `stratos agent`, connecting with the instance principal
    and password the cloud controller put in its payload; they reach Active, which they can only
    through `instances.<tenant>` (their principal may not read the events or the notifier)."""
    state_dir = tmp_path / "state"
    up = SecureUp(state_dir, "--process")
    try:
        wait_until(up.bootstrap, timeout=120, interval=0.2, message="`stratos up --secure --process` on its broker")
        wait_until(
            lambda: len(found := up.active()) == 2 and found,
            timeout=300,
            interval=0.5,
            message="the sample's two members Active, said by real agents on the secure broker",
        )
        log = (state_dir / "logs" / "kafka.log").read_text()
        assert "Failed authentication" not in log
    finally:
        code = up.stop()
    assert code == 0, up.output.read_text()[-3000:]
    secrets = [path.read_text().strip() for path in (state_dir / "kafka-tls").glob("instance.*.password")]
    outputs = [up.output, *(path for path in state_dir.rglob("*.log") if path.is_file())]
    assert secrets and all(secret not in path.read_text(errors="replace") for secret in secrets for path in outputs)


def test_stratos_broker_secure_prints_what_the_platforms_tools_need(tmp_path):
    """`stratos broker --secure` as an operator runs it, then `stratos kafka-acls --apply` with the
    settings it printed."""
    with stratos_broker(tmp_path, "ops.", "--secure", printed=("STRATOS_KAFKA_PASSWORD",)) as (_broker, env, output):
        printed = output.read_text()
        settings = dict(re.findall(r"(STRATOS_KAFKA_[A-Z_]+)=(\S+)", printed))
        password_file = re.search(r'STRATOS_KAFKA_PASSWORD="\$\(cat (\S+)\)"', printed)[1]
        tools = {**env, **settings, "STRATOS_KAFKA_PASSWORD": Path(password_file).read_text().strip()}
        applied = subprocess.run(
            [sys.executable, "-m", "infra.cli", "kafka-acls", "--tenant", "t.org", "--apply", "--json"],
            env=tools,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        answer = json.loads(applied.stdout.strip().splitlines()[-1])
        assert answer["applied"] and Path(answer["password_files"]["client.t.org"]).stat().st_mode & 0o077 == 0


def test_a_secure_data_dir_restarts_secure_and_refuses_to_start_plain(tmp_path):
    settings = Settings(state_dir=tmp_path / "state", topic_prefix="restart.", partitions=1)
    for _ in range(2):  # the principals made at format time are there after a restart
        broker = EmbeddedBroker(data_dir=tmp_path / "kafka", security=broker_security(settings)).start()
        try:
            ensure_topics(as_platform_principal(settings).model_copy(update={"kafka_bootstrap": broker.bootstrap}))
        finally:
            broker.stop()
    with pytest.raises(BrokerError, match="was formatted with --secure: start it with --secure"):
        EmbeddedBroker(data_dir=tmp_path / "kafka").start()
