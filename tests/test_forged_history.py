"""History that proves its author: records a raw kafka-python client appends to the events and
snapshots topics (unsigned, or signed with a member's key) change nothing any reader shows, are
dead-lettered with their reason and counted by `stratos status`; a forged log line does not
reach another tenant's `stratos logs`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.auth.signing import Signer, member_credentials, platform_secret
from infra.broker import free_port
from infra.log.eventlog import decode_log
from infra.log.kafka import encode, envelope, new_id, read_to_end
from infra.log.recovery import CHECKPOINT, COVERS, checkpoint_key, recover_partition
from infra.node.node import partition_for
from infra.observe.follower import stop_together
from schemas.ids import aggregate_id
from schemas.observability import LogBatch, LogBatchRecord, LogLine
from schemas.records import Claim, LogRecord, Snapshot, SnapshotRecord
from tests.conftest import RunningNode, sample, wait_until

pytestmark = pytest.mark.integration
T = "carbon.super"
PASSWORD = "forged-history-pw"


@pytest.fixture
def platform(settings):
    made = settings.model_copy(update={"admin_password": SecretStr(PASSWORD), "password_hash_rounds": 4})
    node = RunningNode(made)
    server = ApiServer(create_app(made), port=free_port()).start()
    try:
        yield made, server.url, node
    finally:
        stop_together(server.stop, node.stop)


@pytest.fixture
def raw(settings):
    """A plain kafka-python producer: what anyone who reaches the broker has."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    yield producer
    producer.close()


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=f"{url}/api", auth=("admin", PASSWORD), timeout=60)


def add_network_partition(url: str, name: str) -> httpx.Response:
    with api(url) as client:
        return client.post("/networkPartitions", json={**sample("network-partition.json"), "id": name})


def np_key(name: str) -> str:
    return aggregate_id(T, "networkPartition", name)


def claim_in_force(settings, partition: int) -> str:
    """The id of the last Claim on an events partition, read from the log as docs/log.md says."""
    claims = [
        record.id
        for record in (
            decode_log(r.value) for r in read_to_end(settings, "events", partitions=[partition], decode_records=False)
        )
        if record.payload.type == "Claim"
    ]
    return claims[-1]


def forged_commit(settings, real: str, forged: str) -> tuple[bytes, bytes, int]:
    """(key, value, partition) of a Commit adding network partition `forged`, made from the
    real commit of `real` and stamped with the claim in force on its own partition."""
    commit = next(
        decode_log(r.value)
        for r in read_to_end(settings, "events", decode_records=False)
        if r.key == np_key(real).encode() and b'"Commit"' in r.value
    )
    partition = partition_for(np_key(forged), settings.partitions)
    value = json.loads(commit.model_dump_json().replace(real, forged))
    value["id"], value["payload"]["claim"] = new_id(), claim_in_force(settings, partition)
    return np_key(forged).encode(), LogRecord.model_validate(value).model_dump_json().encode(), partition


def send(raw, topic: str, key: bytes, value: bytes, partition: int, headers=()) -> int:
    return raw.send(topic, key=key, value=value, partition=partition, headers=list(headers)).get(timeout=10).offset


def rejected_positions(settings) -> dict[tuple[str, int, int], str]:
    """(source topic kind, partition, offset) -> reason, of the dead letters refused for their signature."""
    found = {}
    for letter in read_to_end(settings, "deadletter"):
        payload = letter.record.payload
        kind = payload.source_topic.removeprefix(settings.topic_prefix)
        found[(kind, payload.source_partition, payload.source_offset)] = payload.reason
    return found


def letters_of(settings, positions) -> dict[tuple[str, int, int], str] | None:
    """The reasons of the dead letters of these positions, once every one is there."""
    found = rejected_positions(settings)
    return found if set(positions) <= set(found) else None


def status_json(settings) -> dict:
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(settings.state_dir),
    }
    done = subprocess.run(
        [sys.executable, "-m", "infra.cli.main", "status", "--direct", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 3), done.stderr  # 3: not healthy (no part beats in this test)
    return json.loads(done.stdout)


def test_forged_commits_claims_and_checkpoints_change_nothing_and_are_counted(platform, raw):
    settings, url, node = platform
    assert add_network_partition(url, "np-real").status_code == 201
    events, snapshots = settings.topic("events"), settings.topic("snapshots")

    key, value, unsigned_at = forged_commit(settings, "np-real", "np-unsigned")
    unsigned_commit = send(raw, events, key, value, unsigned_at)
    key, value, member_at = forged_commit(settings, "np-real", "np-member")
    member = Signer.member(
        T, "some.cluster", "m1", member_credentials(platform_secret(settings), T, "some.cluster", "m1")["signingKey"]
    )
    member_commit = send(raw, events, key, value, member_at, member.headers("events", key, value))
    home = partition_for(np_key("np-real"), settings.partitions)
    claim = envelope(LogRecord, Claim(partition=home, writer="intruder", generation=99), f"claim/{home}")
    unsigned_claim = send(raw, events, b"claim/%d" % home, encode(claim), home)
    # a checkpoint past the partition's end with an empty manifest: if it counted, a rebuild
    # would start after every commit and forget np-real
    real_claim = claim_in_force(settings, home)
    marker = envelope(
        SnapshotRecord,
        Snapshot(
            aggregate_type=CHECKPOINT,
            events_partition=home,
            events_offset=unsigned_claim + 1000,
            state={COVERS: {}},
            claim=real_claim,
        ),
        checkpoint_key(home, real_claim),
    )
    forged_checkpoint = send(raw, snapshots, checkpoint_key(home, real_claim).encode(), encode(marker), home)

    # the platform keeps answering and later real commands count, under the real claim
    assert add_network_partition(url, "np-after").status_code == 201
    with api(url) as client:
        assert client.get("/networkPartitions/np-after").status_code == 200
        assert client.get("/networkPartitions/np-unsigned").status_code == 404
        assert client.get("/networkPartitions/np-member").status_code == 404

    # a node that starts now rebuilds past the forged checkpoint and claim
    node.stop()
    rebuilt = recover_partition(settings, home)
    assert rebuilt.snapshots_loaded == 0 and np_key("np-real") in rebuilt.aggregates
    restarted = RunningNode(settings)
    try:
        assert add_network_partition(url, "np-real").status_code == 409  # still known after the restart
        assert add_network_partition(url, "np-later").status_code == 201
    finally:
        restarted.stop()

    wanted = {
        ("events", unsigned_at, unsigned_commit): "unsigned events record",
        ("events", member_at, member_commit): "signed by member 'm1'",
        ("events", home, unsigned_claim): "unsigned events record",
        ("snapshots", home, forged_checkpoint): "unsigned snapshots record",
    }
    letters = wait_until(
        lambda: letters_of(settings, wanted),
        timeout=30,
        message="each forged record dead-lettered",
    )
    for position, reason in wanted.items():
        assert reason in letters[position], (position, letters[position])
    rejected = status_json(settings)["rejected"]
    assert rejected["events"]["records"] == 3 and rejected["snapshots"]["records"] == 1


def test_a_forged_log_line_does_not_reach_another_tenants_logs(platform, raw):
    settings, url, _node = platform
    logs = settings.topic("logs")

    def batch(member: str, message: str, tenant: str = T) -> LogBatchRecord:
        lines = [LogLine(at=datetime.now(UTC), message=message)]
        return envelope(
            LogBatchRecord, LogBatch(member_id=member, cluster_id="app.php1", lines=lines), member, tenant=tenant
        )

    def their_signer(tenant: str) -> Signer:
        key = member_credentials(platform_secret(settings), tenant, "app.php1", "php1.theirs")["signingKey"]
        return Signer.member(tenant, "app.php1", "php1.theirs", key)

    intruder = their_signer("other.org")
    forged = batch("php1.theirs", "a line put into carbon.super")  # says super tenant, signed by other.org's member
    unsigned = batch("php1.theirs", "an unsigned line")
    own = batch("php1.theirs", "their own line", tenant="other.org")
    forged_at = raw.send(
        logs, key=b"php1.theirs", value=encode(forged), headers=intruder.headers("logs", b"php1.theirs", encode(forged))
    ).get(timeout=10)
    unsigned_at = raw.send(logs, key=b"php1.theirs", value=encode(unsigned)).get(timeout=10)
    genuine = batch("php1.theirs", "a line of the super tenant's own member")
    super_member = their_signer(T)
    for record, signer in ((own, intruder), (genuine, super_member)):
        raw.send(
            logs,
            key=b"php1.theirs",
            value=encode(record),
            headers=signer.headers("logs", b"php1.theirs", encode(record)),
        )
    raw.flush()

    def shown() -> list[str]:
        reply = httpx.get(f"{url}/api/logs", params={"target": "php1.theirs"}, auth=("admin", PASSWORD), timeout=30)
        return [line["message"] for line in reply.json()["lines"]] if reply.status_code == 200 else []

    assert wait_until(shown, message="the super tenant member's own line") == [
        "a line of the super tenant's own member"
    ]
    forged_position = ("logs", forged_at.partition, forged_at.offset)
    unsigned_position = ("logs", unsigned_at.partition, unsigned_at.offset)
    letters = wait_until(
        lambda: letters_of(settings, [forged_position, unsigned_position]),
        message="the forged and the unsigned line dead-lettered",
    )
    assert "tenant 'carbon.super' (signed by 'other.org')" in letters[forged_position]
    assert "unsigned logs record" in letters[unsigned_position]
