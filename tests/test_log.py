"""The Kafka adapter on the real broker: round trips, dead letters, groups and ordering."""

from __future__ import annotations

import json

import pytest

from infra.log.kafka import (
    Appender,
    DeadLetters,
    assigned_consumer,
    ensure_topics,
    envelope,
    group_consumer,
    read_to_end,
    validated,
)
from schemas.records import TOPIC_RECORDS, Commit, EventRecord, HealthRecord, LogRecord
from schemas.status import HealthStat
from tests.conftest import wait_until
from tests.examples import EXAMPLES, RECORD_TYPES, union_members

pytestmark = pytest.mark.integration
TOPIC_OF = {record: topic for topic, record in TOPIC_RECORDS.items()}
TOPIC_OF[EventRecord] = "events"  # events travel inside commits: see below


def test_examples_cover_every_payload_type():
    """If a new event or command is added without an example, the round trip below misses it."""
    covered = {type(e) for e in EXAMPLES}
    missing = {cls.__name__ for record in RECORD_TYPES for cls in union_members(record)} - {
        cls.__name__ for cls in covered
    }
    assert not missing


def test_every_payload_type_round_trips_through_the_broker_unchanged(settings):
    sent = []
    appender = Appender(settings)
    for n, payload in enumerate(EXAMPLES):
        record_type = next(r for r in RECORD_TYPES if type(payload) in union_members(r))
        if record_type is EventRecord:
            record_type, payload = LogRecord, Commit(command_type="X", outcome="accepted", events=[payload])
        record = envelope(
            record_type,
            payload,
            f"carbon.super/cluster/c{n}",
            aggregate_seq=n + 1,
            correlation_id="corr",
            causation_id="cause",
        )
        appender.send(TOPIC_OF[record_type], record.aggregate_id, record)
        sent.append(record)
    appender.flush()
    appender.close()
    received = {}
    for topic in {TOPIC_OF[type(r)] for r in sent}:
        received.update({d.record.id: d.record for d in read_to_end(settings, topic)})
    assert len(received) == len(sent)
    for record in sent:
        assert received[record.id] == record, record.type


def test_a_malformed_record_goes_to_the_deadletter_topic_and_later_records_are_consumed(settings):
    appender = Appender(settings)
    good = [
        envelope(
            HealthRecord,
            HealthStat(cluster_id="c", network_partition_id="np", metric="load_average", value=v, timestamp=1.7e9 + v),
            "carbon.super/cluster/c",
        )
        for v in (1.0, 2.0)
    ]
    topic = settings.topic("health")
    appender.send("health", "k", good[0], partition=0)
    appender.send_raw(topic, b"k", b'{"not": "an envelope"')  # invalid JSON
    bad_value = json.loads(good[0].model_dump_json())
    bad_value["payload"]["value"] = -5  # breaks a rule
    appender.producer.send(topic, key=b"k", value=json.dumps(bad_value).encode(), partition=0)
    appender.send("health", "k", good[1], partition=0)
    appender.flush()

    consumer = assigned_consumer(settings, "health", partitions=[0])
    letters = DeadLetters(appender)
    seen = []

    def consume():
        for raws in consumer.poll(timeout_ms=200).values():
            seen.extend(d.record.id for d in validated(settings, "health", raws, letters))
        return len(seen) >= 2

    wait_until(consume, message="the two valid records")
    consumer.close()
    appender.flush()
    assert seen == [good[0].id, good[1].id]
    dead = sorted(
        (d.record.payload for d in read_to_end(settings, "deadletter")), key=lambda letter: letter.source_offset
    )  # keyed apart: read order is not log order
    assert len(dead) == 2
    assert "Invalid JSON" in dead[0].reason or "EOF" in dead[0].reason
    assert dead[0].original == '{"not": "an envelope"'
    assert "payload.HealthStat.value" in dead[1].reason and dead[1].source_topic == topic
    appender.close()


def test_ensure_topics_is_idempotent(settings):
    assert ensure_topics(settings) == []


def test_two_consumers_in_one_group_split_partitions_and_keyed_records_stay_in_order(settings):
    """Two members of one group, each polling on its own thread as two nodes would (one thread
    polling both would block one member's rejoin on the other's)."""
    import threading

    got: dict[str, list[int]] = {}
    lock, stop = threading.Lock(), threading.Event()
    consumers = [group_consumer(settings, "split-test", ["events"]) for _ in range(2)]

    def follow(consumer) -> None:
        while not stop.is_set():
            for raws in consumer.poll(timeout_ms=100).values():
                with lock:
                    for raw in raws:
                        record = LogRecord.model_validate_json(raw.value)
                        got.setdefault(record.aggregate_id, []).append(record.aggregate_seq)

    threads = [threading.Thread(target=follow, args=(c,), daemon=True) for c in consumers]
    for thread in threads:
        thread.start()
    try:
        # the group settles before any record exists: one member cannot read everything first
        wait_until(
            lambda: all(c.assignment() for c in consumers) and sum(len(c.assignment()) for c in consumers) == 4,
            timeout=60,
            message="both members holding partitions",
        )
        owners = [{tp.partition for tp in c.assignment()} for c in consumers]
        appender = Appender(settings)
        keys = [f"carbon.super/cluster/c{n}" for n in range(8)]
        for seq in range(1, 51):
            for key in keys:
                appender.send("events", key, envelope(LogRecord, _created(), key, aggregate_seq=seq))
        appender.flush()
        appender.close()
        wait_until(lambda: sum(len(v) for v in got.values()) == 400, timeout=60, message="all 400 records consumed")
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for consumer in consumers:
            consumer.close()
    assert not owners[0] & owners[1]
    assert owners[0] | owners[1] == {0, 1, 2, 3}
    for key in keys:
        assert got[key] == list(range(1, 51)), key


def _created():
    from schemas.events import ClusterCreated
    from tests.examples import SPEC

    return Commit(command_type="CreateCluster", outcome="accepted", events=[ClusterCreated(spec=SPEC)])


def test_json_schemas_are_exported_per_topic(tmp_path):
    from typer.testing import CliRunner

    from infra.cli.main import app

    result = CliRunner().invoke(app, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {p.name for p in tmp_path.iterdir()}
    assert written == {f"{topic}.schema.json" for topic in TOPIC_RECORDS}
    events = json.loads((tmp_path / "events.schema.json").read_text())
    assert "MemberActivated" in json.dumps(events)
