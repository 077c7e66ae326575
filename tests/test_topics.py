"""Topics configured on purpose and checked at start, on the real broker.

The events topic is the only store of state: it is created to keep history forever, and a part
that rebuilds from it refuses to start once its head is gone or when the partition counts of
the topics a node owns by partition differ. `stratos status` names dangerous configs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from infra.log.kafka import check_topics, ensure_topics, topic_config
from infra.observe.status import broker_status
from infra.settings import Settings
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def _configs(settings: Settings, kind: str) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, settings.topic(kind))])
    finally:
        admin.close()
    return {k: v["value"] for k, v in described["topic"][settings.topic(kind)].items()}


def _stratos(settings: Settings, *args: str, **more_env: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(settings.state_dir),
        **more_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_history_is_kept_forever_and_snapshots_are_compacted(settings):
    events, snapshots = _configs(settings, "events"), _configs(settings, "snapshots")
    assert events["retention.ms"] == "-1" and events["retention.bytes"] == "-1"
    assert events["cleanup.policy"] == "delete"
    assert snapshots["cleanup.policy"] == "compact"
    assert check_topics(settings) == ([], [])


def test_min_insync_replicas_follows_the_replication_factor():
    three = Settings(kafka_bootstrap="x", replication_factor=3)
    assert topic_config("events", three)["min.insync.replicas"] == "2"
    assert topic_config("events", Settings(kafka_bootstrap="x"))["min.insync.replicas"] == "1"
    assert topic_config("events", three.model_copy(update={"min_insync_replicas": 3}))["min.insync.replicas"] == "3"


def test_a_deleted_head_of_history_is_an_error_naming_topic_partition_and_offset(settings):
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for _ in range(3):
        producer.send(settings.topic("events"), b"{}", key=b"k", partition=1)
    producer.flush()
    producer.close()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:  # what retention does to a topic's head, done at once
        admin.delete_records({TopicPartition(settings.topic("events"), 1): 2})
    finally:
        admin.close()

    errors, _warnings = check_topics(settings)
    assert errors == [
        f"{settings.topic('events')} partition 1 starts at offset 2: its history "
        "before 2 was deleted (retention?) and cannot be rebuilt"
    ]
    refused = _stratos(settings, "node")
    assert refused.returncode == 3
    assert f"{settings.topic('events')} partition 1 starts at offset 2" in " ".join(refused.stdout.split())
    assert "Traceback" not in refused.stdout + refused.stderr
    status = broker_status(settings)
    assert status["state"] == "unsafe" and "partition 1 starts at offset 2" in status["lastError"]


def test_partition_counts_that_differ_refuse_the_node(broker, tmp_path):
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="mismatch.", partitions=4, state_dir=tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:  # created elsewhere with another count, before the platform's first start
        admin.create_topics(
            [NewTopic(settings.topic("snapshots"), 2, 1, topic_configs=topic_config("snapshots", settings))]
        )
    finally:
        admin.close()
    ensure_topics(settings)

    errors, _ = check_topics(settings)
    assert errors == [
        "partition counts differ: mismatch.commands has 4, mismatch.events has 4, "
        "mismatch.snapshots has 2 (they must be equal: partition p of each belongs to one node)"
    ]
    refused = _stratos(settings, "node")
    assert refused.returncode == 3 and "mismatch.snapshots has 2" in " ".join(refused.stdout.split())


def test_status_reports_retention_on_history_and_snapshots_not_compacted(settings):
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    settings.topic("events"),
                    configs={
                        "cleanup.policy": "delete",
                        "retention.ms": "604800000",
                        "retention.bytes": "-1",
                        "min.insync.replicas": "1",
                    },
                ),
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    settings.topic("snapshots"),
                    configs={"cleanup.policy": "delete", "min.insync.replicas": "1"},
                ),
            ]
        )
    finally:
        admin.close()

    # a config change reaches every broker's view shortly after it is accepted
    errors, warnings = wait_until(lambda: (found := check_topics(settings))[1] and found, message="the altered configs")
    assert errors == []
    assert any(w.startswith(f"{settings.topic('events')}: retention.ms=604800000 deletes history") for w in warnings)
    assert f"{settings.topic('snapshots')}: cleanup.policy=delete (compact expected)" in warnings
    status = broker_status(settings)
    assert status["state"] == "running" and len(status["topicProblems"]) == 2


@pytest.mark.parametrize(
    "verb",
    [
        ["topics"],
        ["state", "carbon.super/cluster/c1"],
        ["history", "carbon.super/cluster/c1"],
        ["why", "carbon.super/cluster/c1"],
        ["replay", "--at", "2026-01-01T00:00:00Z"],
        ["digest"],
    ],
    ids=" ".join,
)
def test_a_broker_out_of_reach_is_one_line_naming_it(tmp_path, verb):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    unreachable = Settings(kafka_bootstrap=address, state_dir=tmp_path)
    ran = _stratos(unreachable, *verb, STRATOS_KAFKA_CONNECT_TIMEOUT_SECONDS="1")
    assert ran.returncode == 1
    assert f"error: Kafka at {address} (STRATOS_KAFKA_BOOTSTRAP): " in ran.stdout
    assert "Unable to bootstrap" in ran.stdout
    assert "Traceback" not in ran.stdout + ran.stderr
