"""Broker faults on real processes: Kafka killed (-9) while commands flow to a node process.

One broker restarted on its own data: what was answered before the kill is still history after.
One broker of three lost for good (a plain broker, then the active controller): every command is
answered, each decided once, and commands sent after the kill are answered too. A tool reading a
topic when its only broker dies ends with an error naming the topic instead of hanging."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from infra.broker import EmbeddedBroker
from infra.log.commands_client import CommandClient
from infra.log.eventlog import read_history
from infra.log.kafka import ensure_topics, kafka_client_options, read_to_end
from infra.settings import Settings
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted
from tests.conftest import wait_until
from tests.examples import definition
from tests.processes import end, start_node

pytestmark = pytest.mark.integration
T = "carbon.super"


def network_partition(n: int):
    """A cheap command: one definition added to an aggregate of its own."""
    body = definition("networkPartition").model_copy(update={"id": f"np{n}"})
    return aggregate_id(T, "networkPartition", f"np{n}"), C.AddNetworkPartition(definition=body)


class SteadySender(threading.Thread):
    """Sends `count` commands, one every `interval` seconds. A send returns once the broker has
    acked it, so a stalled broker slows the sender down; a send that fails ends it (`error`)."""

    def __init__(self, client: CommandClient, count: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.client, self.count, self.interval = client, count, interval
        self.sent: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        started = time.monotonic()
        try:
            for n in range(self.count):
                self.sent.append(self.client.send(*network_partition(n)))
                time.sleep(max(0.0, started + (n + 1) * self.interval - time.monotonic()))  # the rate
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def answered(client: CommandClient) -> set[str]:
    """Ids of the commands whose reply the client has received (nobody waits on them here)."""
    with client.lock:
        return set(client.replies)


def await_node(client: CommandClient) -> None:
    """Until the node answers (it has claimed its partitions): the burst then meets a working node."""
    assert isinstance(client.call(*network_partition(-1), timeout=90), CommandAccepted)


def commits_per_command(settings: Settings) -> Counter:
    return Counter(commit.causation_id for _p, _o, commit in read_history(settings))


def test_one_broker_killed_mid_burst_and_restarted_on_its_data_keeps_what_was_answered(tmp_path):
    """kill -9 of the only broker, then a new JVM on the same ports and data_dir. The client lives
    through the outage (its producer retries the sends meanwhile); the node process may not (an
    offset commit that finds no broker ends it) and is then started again, as `stratos up`'s
    supervisor would: what is asserted is the log, not the node's survival."""
    broker = EmbeddedBroker(data_dir=tmp_path / "kafka").start()
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="faults.", partitions=4, state_dir=tmp_path)
    ensure_topics(settings)
    nodes = [start_node(settings)]
    client = CommandClient(settings)

    def every_command_answered() -> bool:
        if not nodes[-1].is_alive():
            nodes.append(start_node(settings))
        return set(sender.sent) <= answered(client)

    try:
        await_node(client)
        sender = SteadySender(client, count=200, interval=0.01)
        sender.start()
        wait_until(lambda: len(answered(client)) >= 50, timeout=90, message="50 replies")
        answered_before_kill = answered(client)
        broker.kill(1)
        assert len(answered_before_kill) < 200, "the kill came after the burst, not during it"
        broker.restart(1)
        sender.join(120)
        assert sender.error is None and len(sender.sent) == 200
        wait_until(every_command_answered, timeout=120, message="a reply to every command sent")
        commits = commits_per_command(settings)
        assert answered_before_kill <= set(commits)  # answered = durable history
        assert {commits[c] for c in sender.sent} == {1}  # none lost, none decided twice
    finally:
        client.close()
        for node in nodes:
            end(node)
        broker.stop()


@pytest.mark.parametrize("victim", ["a plain broker", "the active controller"])
def test_one_of_three_brokers_killed_every_command_answered_once(tmp_path, victim):
    with EmbeddedBroker(brokers=3, data_dir=tmp_path / "kafka") as cluster:
        settings = Settings(
            kafka_bootstrap=cluster.bootstrap,
            topic_prefix="faults.",
            partitions=4,
            replication_factor=3,
            state_dir=tmp_path,
        )
        ensure_topics(settings)
        controller = wait_until(cluster.active_controller, timeout=30, message="a KRaft leader")
        killed = (
            controller
            if victim == "the active controller"
            else next(n.node_id for n in cluster.nodes if n.node_id != controller)
        )
        node = start_node(settings)
        client = CommandClient(settings)
        try:
            await_node(client)
            sender = SteadySender(client, count=300, interval=0.02)
            sender.start()
            wait_until(lambda: len(answered(client)) >= 100, timeout=90, message="100 replies")
            cluster.kill(killed)
            sent_before_kill = len(sender.sent)
            sender.join(120)
            assert sender.error is None and len(sender.sent) == 300
            assert sent_before_kill < 300, "the kill came after the last command was sent"
            wait_until(
                lambda: set(sender.sent) <= answered(client), timeout=120, message="a reply to every command sent"
            )
            commits = commits_per_command(settings)
            assert {commits[c] for c in sender.sent} == {1}  # none lost, none decided twice
            assert node.is_alive()
            assert isinstance(client.call(*network_partition(300), timeout=60), CommandAccepted)
            assert cluster.active_controller() not in (None, killed)
        finally:
            client.close()
            end(node)


def test_a_read_to_the_end_gives_up_naming_the_topic_when_the_broker_dies_mid_read(tmp_path):
    """`stratos status`, `deadletter list`, `digest` and the API's status read whole topics: the
    broker killed (-9) after the first record, the read raises within its patience (the CLI
    prints it as one line, the API answers 503) where it used to poll an absent broker forever."""
    broker = EmbeddedBroker(data_dir=tmp_path / "kafka").start()
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix="midread.",
        partitions=1,
        state_dir=tmp_path,
        kafka_connect_timeout_seconds=3,
    )
    outcome: list[object] = []
    try:
        ensure_topics(settings)
        producer = KafkaProducer(**kafka_client_options(settings))
        for n in range(4000):  # 8 MB: several fetches of at most 1 MB
            producer.send(settings.topic("deadletter"), value=b"%05d" % n + b"x" * 2048)
        producer.flush()
        producer.close()
        records = read_to_end(settings, "deadletter", decode_records=False)
        first = next(records)
        assert first.value.startswith(b"00000")
        broker.kill(1)

        def read_the_rest() -> None:
            try:
                outcome.append(sum(1 for _ in records))
            except Exception as exc:  # what the caller sees
                outcome.append(exc)

        reader = threading.Thread(target=read_the_rest, daemon=True)
        reader.start()
        wait_until(lambda: outcome, timeout=120, message="the read to end, ended")
    finally:
        broker.stop()
    assert isinstance(outcome[0], KafkaTimeoutError), outcome
    assert "midread.deadletter" in str(outcome[0]) and "records left" in str(outcome[0])
