"""The embedded Kafka: starts on a free loopback port, keeps its log on disk across a restart,
forms a three-node cluster whose active controller it can name, outlives its JVM's death under
`stratos broker`; clear errors otherwise."""

from __future__ import annotations

import re
import signal
import socket

import psutil
import pytest
from kafka import KafkaAdminClient

from infra.broker import BrokerError, EmbeddedBroker, port_is_open
from infra.log.kafka import Appender, ensure_topics, envelope, read_to_end
from infra.settings import Settings
from schemas import commands as C
from schemas.records import CommandRecord
from tests.conftest import stratos_broker, wait_until

pytestmark = pytest.mark.integration


def test_starts_on_loopback_answers_and_stops():
    broker = EmbeddedBroker().start()
    try:
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert port_is_open("127.0.0.1", broker.port)
    finally:
        broker.stop()
    assert not port_is_open("127.0.0.1", broker.port)


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already taken"):
            EmbeddedBroker(port).start()


def test_missing_kafka_jars_name_make_install(monkeypatch):
    monkeypatch.setenv("STRATOS_KAFKA_LIBS", "/nonexistent")
    with pytest.raises(BrokerError, match=r"not in /nonexistent: run `make install`"):
        EmbeddedBroker().start()


def test_a_record_survives_a_restart_on_the_same_data_dir(tmp_path):
    """The log is on disk: a second broker on the same directory serves what the first acked."""
    aggregate = "carbon.super/cluster/durable"
    record = envelope(CommandRecord, C.CheckTimeouts(), aggregate)
    with EmbeddedBroker(data_dir=tmp_path / "kafka") as first:
        settings = Settings(kafka_bootstrap=first.bootstrap, partitions=1, state_dir=tmp_path)
        ensure_topics(settings, ["commands"])
        appender = Appender(settings, source="test")
        try:
            appender.append("commands", aggregate, record)
        finally:
            appender.close()
    with EmbeddedBroker(data_dir=tmp_path / "kafka") as again:
        settings = Settings(kafka_bootstrap=again.bootstrap, partitions=1, state_dir=tmp_path)
        assert [d.record.id for d in read_to_end(settings, "commands")] == [record.id]
    assert (tmp_path / "kafka" / "cluster.id").exists()


def test_three_nodes_form_one_cluster_led_by_a_running_controller(tmp_path):
    with EmbeddedBroker(brokers=3, data_dir=tmp_path) as cluster:
        assert len(cluster.bootstrap.split(",")) == 3
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, client_id="stratos-test")
        try:
            brokers = admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        assert sorted(b["broker_id"] for b in brokers if not b["is_fenced"]) == [1, 2, 3]
        running = {node.node_id for node in cluster.nodes if node.running}
        leader = wait_until(cluster.active_controller, timeout=30, message="a KRaft leader")
        assert leader in running
        # the controller killed, the two others elect one of themselves
        cluster.kill(leader)

        def new_leader():
            node = cluster.active_controller()
            return node if node != leader else None

        successor = wait_until(new_leader, timeout=30, message="a new KRaft leader")
        assert successor in running - {leader}


def test_stratos_broker_starts_its_jvm_again_when_it_dies(tmp_path):
    """`stratos broker` on a data dir, its JVM killed (-9, as the kernel's OOM killer would, or
    its own OutOfMemoryError exit): the command says so and starts it again on the same data,
    where the record acked before is still served; it used to go on "running" with no broker."""
    with stratos_broker(tmp_path, "revive.", "--data", str(tmp_path / "kafka")) as (broker, _env, output):
        bootstrap = re.search(r"STRATOS_KAFKA_BOOTSTRAP=(\S+)", output.read_text())[1]
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix="revive.", partitions=1, state_dir=tmp_path)
        aggregate = "carbon.super/cluster/revived"
        record = envelope(CommandRecord, C.CheckTimeouts(), aggregate)
        appender = Appender(settings, source="test")
        try:
            appender.append("commands", aggregate, record)
        finally:
            appender.close()
        (jvm,) = [p for p in psutil.Process(broker.pid).children(recursive=True) if "java" in p.name()]
        jvm.send_signal(signal.SIGKILL)
        wait_until(
            lambda: "Kafka node 1 exited with code -9; started again on its data" in output.read_text(),
            timeout=30,
            message="the JVM's death, said",
        )
        wait_until(
            lambda: [d.record.id for d in read_to_end(settings, "commands")] == [record.id],
            timeout=120,
            message="the record acked before the kill, served by the JVM started again",
        )
        assert broker.poll() is None
