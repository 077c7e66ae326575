"""Every reader starts from where it left off (infra/log/projection.py): a read side restarted
after its checkpoint folds only the records that follow it, and ends where a fold from offset 0
ends; a forged or unusable checkpoint is not used."""

from __future__ import annotations

import threading

import pytest
from kafka import KafkaProducer

from infra.api.read_model import ReadModel
from infra.lb.topology import TopologyProjector
from infra.log.kafka import Appender, ensure_topics, read_to_end
from infra.log.projection import TOPIC, Checkpoint, load_checkpoint, write_checkpoint
from infra.observe.follower import stop_together
from tests.conftest import sample, wait_until
from tests.test_runtime_flow import T, add, define_all

pytestmark = pytest.mark.integration


def events_end(settings) -> dict[int, int]:
    """partition -> the end offset of the events topic now"""
    ends: dict[int, int] = {}
    for raw in read_to_end(settings, "events", decode_records=False):
        ends[raw.partition] = raw.offset + 1
    return ends


def states(model: ReadModel) -> dict:
    return {aggregate_id: t.state.model_dump(mode="json") for aggregate_id, t in model.aggregates.items()}


def test_a_read_model_restarted_after_its_checkpoint_folds_only_what_follows(settings, running_node, client):
    define_all(client)
    first = ReadModel(settings).start()
    first.stop()  # a clean stop writes its checkpoint
    covered = dict(first.projection.positions)
    assert first.projection.read == sum(events_end(settings).values())
    for n in range(3):
        assert add(client, "cartridge", {**sample("php.json"), "type": f"php{n}"}).event_types == ["CartridgeAdded"]
    after = {p: end - covered.get(p, 0) for p, end in events_end(settings).items()}

    restarted = ReadModel(settings).start()
    cold = ReadModel(settings)
    cold.name = "a-cold-read-model"  # no checkpoint of its own: a fold from offset 0
    try:
        assert restarted.projection.restored_from is not None
        assert restarted.projection.read == sum(after.values()) > 0  # only the records after the checkpoint
        assert restarted.get(T, "cartridge", "php2") is not None
        cold.start()
        assert cold.projection.read == sum(events_end(settings).values())
        assert states(restarted) == states(cold)
    finally:
        stop_together(restarted.stop, cold.stop)


def test_a_checkpoint_not_signed_by_the_platform_is_not_used(settings, running_node, client):
    define_all(client)
    ReadModel(settings).start().stop()
    raw = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:  # the manifest again, unsigned: it must not replace the signed one
        manifest = next(r for r in read_to_end(settings, TOPIC, decode_records=False) if r.key == b"api-read-model")
        forged = manifest.value.replace(b'"records":', b'"records":1', 1)
        raw.send(settings.topic(TOPIC), key=manifest.key, value=forged, partition=manifest.partition).get(timeout=10)
    finally:
        raw.close()
    checkpoint, _slot = load_checkpoint(settings, "api-read-model", ReadModel.format_version)
    assert checkpoint.records == sum(events_end(settings).values())
    letters = wait_until(
        lambda: [
            d.record.payload.reason
            for d in read_to_end(settings, "deadletter")
            if d.record.payload.source_topic == settings.topic(TOPIC)
        ],
        message="the forged checkpoint dead-lettered",
    )
    assert "unsigned projections record" in letters[0]


def run_until_ready(projector: TopologyProjector) -> threading.Thread:
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    wait_until(projector.ready.is_set, timeout=60, message="the topology projector caught up")
    return thread


def test_the_topology_projector_resumes_from_its_checkpoint(settings, running_node, client):
    define_all(client)
    first = TopologyProjector(settings)
    thread = run_until_ready(first)
    first.stop()
    thread.join(30)
    covered = dict(first.projection.positions)
    assert add(client, "cartridge", {**sample("php.json"), "type": "php9"}).event_types == ["CartridgeAdded"]
    again = TopologyProjector(settings)
    thread = run_until_ready(again)
    try:
        assert again.projection.restored_from is not None
        assert again.projection.read == sum(end - covered.get(p, 0) for p, end in events_end(settings).items()) > 0
        assert again.writes == 0  # nothing differs from what the first one wrote
    finally:
        again.stop()
        thread.join(30)


def test_a_checkpoint_past_the_end_of_the_log_is_not_used(settings, running_node, client):
    """A log recreated under the same topics: its read sides fold it from offset 0."""
    define_all(client)
    ensure_topics(settings, [TOPIC])
    appender = Appender(settings)
    try:
        state = Checkpoint({0: 10**9}, {0: None}, {"aggregates": {}})
        write_checkpoint(appender, "api-read-model", ReadModel.format_version, state, None)
    finally:
        appender.close()
    model = ReadModel(settings).start()
    try:
        assert model.projection.restored_from is None
        assert model.projection.read == sum(events_end(settings).values())
        assert model.get(T, "cartridge", "php") is not None
    finally:
        model.stop()
