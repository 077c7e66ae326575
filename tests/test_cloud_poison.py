"""Poison on the topics the cloud controller, the mock IaaS's simulated agents and the cartridge
agent read: every bad record is dead-lettered with its reason, the reader stays alive and
handles the next good record."""

from __future__ import annotations

import json
import threading

import pytest

from infra.agent.agent import CartridgeAgent
from infra.cloud.controller import CloudController
from infra.cloud.mock.cloud import MockCloud
from infra.cloud.mock.simulator import SimulatedAgents
from infra.log.kafka import Appender, encode, envelope, read_to_end
from schemas import events as E
from schemas.definitions import Cartridge
from schemas.ids import aggregate_id
from schemas.records import Commit, InstanceStatusRecord, LogRecord, NotifierRecord
from schemas.status import InstanceCleanupMember, InstanceStatus
from tests.conftest import sample, signed_payload, wait_until
from tests.test_cloud_controller import RunningCloud

pytestmark = pytest.mark.integration
T = "carbon.super"
CLUSTER = "app.php1.php.domain"
KEY = aggregate_id(T, "cluster", CLUSTER)
MEMBER = "php1.m1"


def commit(aggregate: str, *events, seq: int = 1) -> bytes:
    """A commit record as a node appends it."""
    return encode(
        envelope(
            LogRecord,
            Commit(command_type="Test", outcome="accepted", events=list(events)),
            aggregate,
            aggregate_seq=seq,
            tenant=T,
        )
    )


def spawn(member_id: str = MEMBER) -> E.MemberSpawnRequested:
    iaas = Cartridge.model_validate(sample("php.json")).iaasProvider[0].model_dump()
    return E.MemberSpawnRequested(
        member_id=member_id,
        cluster_id=CLUSTER,
        application_id="app",
        cartridge_type="php",
        network_partition_id="np1",
        partition_id="p1",
        provider="mock",
        iaas=iaas,
    )


class Topics:
    """Writes records to partition 0 of the test's topics (so the good record comes after the
    poison in the reader's order) and remembers where the poison went."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.appender = Appender(settings)
        self.poison: list[tuple[str, int]] = []

    def put(self, kind: str, value: bytes | None, key: bytes | None = KEY.encode()) -> int:
        meta = self.appender.send_raw(self.settings.topic(kind), key, value, partition=0).get(timeout=10)
        return meta.offset

    def put_poison(self, kind: str, value: bytes | None, key: bytes | None = KEY.encode()) -> None:
        self.poison.append((self.settings.topic(kind), self.put(kind, value, key)))

    def put_undecodable(self, kind: str, good: bytes) -> None:
        """Bad key bytes, a null value, bytes that are not JSON, and an envelope of an unknown type."""
        unknown = json.loads(good)
        unknown["payload"]["type"] = "NoSuchThing"
        self.put_poison(kind, good, key=b"\xff\xfe")
        self.put_poison(kind, None)
        self.put_poison(kind, b"not json")
        self.put_poison(kind, json.dumps(unknown).encode())

    def dead_lettered(self) -> dict[tuple[str, int], str] | None:
        """Reason per poison record, once every one of them is in the dead-letter topic."""
        letters = {
            (d.record.payload.source_topic, d.record.payload.source_offset): d.record.payload.reason
            for d in read_to_end(self.settings, "deadletter")
        }
        found = {at: letters[at] for at in self.poison if at in letters}
        return found if len(found) == len(self.poison) else None

    def close(self) -> None:
        self.appender.close()


@pytest.fixture
def topics(settings):
    made = Topics(settings)
    yield made
    made.close()


def status_record(cluster_id: str) -> bytes:
    status = InstanceStatus(type="InstanceStarted", member_id=MEMBER, cluster_id=cluster_id)
    return encode(envelope(InstanceStatusRecord, status, KEY, tenant=T))


def statuses(settings) -> list[tuple[str, str]]:
    return [(d.record.type, d.record.payload.member_id) for d in read_to_end(settings, "instance-status")]


@pytest.fixture
def mock_iaas(settings):
    """The mock IaaS over HTTP, without a controller (each test runs its own)."""
    running = RunningCloud(settings, controller=False)
    yield running
    running.stop()


def test_cloud_controller_dead_letters_poison_and_starts_the_next_member(settings, topics, mock_iaas):
    cloud = mock_iaas.cloud
    controller = CloudController(settings, mock_iaas.service.endpoint)
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        wait_until(controller.ready.is_set, timeout=30, message="the cloud controller's assignment")
        topics.put("events", commit(KEY, E.MemberActivated(member_id="php1.unknown", cluster_id=CLUSTER)))
        topics.put_undecodable("events", commit(KEY, spawn()))
        # valid records whose handling raises: an aggregate id naming no cluster, an iaas entry
        # that is no entry
        topics.put_poison("events", commit(f"{T}/cluster/", spawn("php1.nowhere")))
        topics.put_poison("events", commit(KEY, spawn("php1.bad").model_copy(update={"iaas": {"property": 7}})))
        topics.put("events", commit(KEY, spawn(), seq=2))
        wait_until(lambda: cloud.get(MEMBER), message="the good member's node")
        reasons = wait_until(topics.dead_lettered, message="every poison record dead-lettered")
        assert thread.is_alive()
        assert all(reasons.values()), reasons
        assert "key: not UTF-8" in reasons[topics.poison[0]]
        assert "null value" in reasons[topics.poison[1]]
        assert "aggregate id" in reasons[topics.poison[4]]
        created = wait_until(
            lambda: [d.record for d in read_to_end(settings, "commands") if d.record.type == "ReportNodeCreated"],
            message="the node reported",
        )
        assert [c.payload.member_id for c in created] == [MEMBER] and created[0].aggregate_id == KEY
    finally:
        controller.stop()
        thread.join(20)


def test_simulated_agents_dead_letter_poison_and_follow_the_next_member(settings, topics):
    cloud = MockCloud()
    agents = SimulatedAgents(settings, cloud).start()
    try:
        cloud.create("bare", {})  # a node without the tags the agents need
        cloud.create(MEMBER, {"memberId": MEMBER, "clusterId": CLUSTER, "tenant": T})
        topics.put(
            "events", commit(KEY, E.MemberInitialized(member_id="php1.other", cluster_id=CLUSTER, node_id="php1.other"))
        )
        topics.put_undecodable(
            "events", commit(KEY, E.MemberInitialized(member_id=MEMBER, cluster_id=CLUSTER, node_id=MEMBER))
        )
        topics.put_poison(
            "events", commit(KEY, E.MemberInitialized(member_id="bare", cluster_id=CLUSTER, node_id="bare"))
        )
        topics.put_undecodable(
            "instance-notifier",
            encode(envelope(NotifierRecord, InstanceCleanupMember(member_id=MEMBER, cluster_id=CLUSTER), KEY)),
        )
        topics.put_poison("instance-notifier", status_record(""))
        topics.put(
            "instance-notifier",
            encode(envelope(NotifierRecord, InstanceCleanupMember(member_id="php1.other", cluster_id=CLUSTER), KEY)),
        )
        topics.put("events", commit(KEY, E.MemberInitialized(member_id=MEMBER, cluster_id=CLUSTER, node_id=MEMBER)))
        wait_until(lambda: ("InstanceStarted", MEMBER) in statuses(settings), message="the good member started")
        reasons = wait_until(topics.dead_lettered, message="every poison record dead-lettered")
        assert all(t.is_alive() for t in agents.threads)
        assert "KeyError" in reasons[topics.poison[4]]
        assert statuses(settings) == [("InstanceStarted", MEMBER)]
    finally:
        agents.stop()


def test_cartridge_agent_dead_letters_poison_on_events_and_notifier_and_goes_on(settings, topics, tmp_path):
    agent = CartridgeAgent(settings, signed_payload(settings, member_id=MEMBER, cluster_id=CLUSTER), tmp_path / "app")
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        topics.put(
            "events", commit(KEY, E.MemberInitialized(member_id="php1.other", cluster_id=CLUSTER, node_id="php1.other"))
        )
        topics.put_undecodable(
            "events", commit(KEY, E.MemberInitialized(member_id=MEMBER, cluster_id=CLUSTER, node_id=MEMBER))
        )
        topics.put("events", commit(KEY, E.MemberInitialized(member_id=MEMBER, cluster_id=CLUSTER, node_id=MEMBER)))
        wait_until(lambda: statuses(settings), message="InstanceStarted")
        assert statuses(settings)[0] == ("InstanceStarted", MEMBER)
        topics.put_undecodable(
            "instance-notifier",
            encode(envelope(NotifierRecord, InstanceCleanupMember(member_id=MEMBER, cluster_id=CLUSTER), KEY)),
        )
        topics.put_poison("instance-notifier", status_record(""))
        topics.put(
            "instance-notifier",
            encode(envelope(NotifierRecord, InstanceCleanupMember(member_id="php1.other", cluster_id=CLUSTER), KEY)),
        )
        topics.put(
            "instance-notifier",
            encode(envelope(NotifierRecord, InstanceCleanupMember(member_id=MEMBER, cluster_id=CLUSTER), KEY)),
        )
        wait_until(lambda: statuses(settings)[-1][0] == "InstanceReadyToShutdown", message="ready to shut down")
        reasons = wait_until(topics.dead_lettered, message="every poison record dead-lettered")
        assert thread.is_alive() and all(reasons.values())
    finally:
        agent.stop()
        thread.join(10)


def test_cloud_controller_resuming_past_a_null_record_handles_the_next_member(settings, topics, mock_iaas):
    topics.put_poison("events", None)
    topics.put("events", commit(KEY, spawn()))
    cloud = mock_iaas.cloud
    controller = CloudController(settings, mock_iaas.service.endpoint)
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: cloud.get(MEMBER), timeout=8, message="the member's node")
    finally:
        controller.stop()
        thread.join(20)
