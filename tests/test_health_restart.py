"""A health worker restarted: the new one reads the health partitions it gains from the first
record of the last window (offsets-for-times), not from the offsets the old one committed, so
its first decision already counts the samples sent before the restart; its cluster views start
from their own checkpoint and fold only the events that follow it. Fixtures and helpers of
tests/test_health_flow.py; a window of a minute, longer than the restart takes."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.health import HEALTH_GROUP
from infra.health.app import HealthWorkerThread
from infra.health.views import ClusterViews
from infra.log.kafka import read_to_end
from infra.log.projection import load_checkpoint
from schemas import commands as C
from schemas.status import CommandAccepted
from tests.conftest import wait_until
from tests.test_health_flow import (  # noqa: F401 - appender, health_settings: fixtures
    KEY,
    active_cluster,
    appender,
    commands_of,
    create_cluster,
    health_settings,
    publish,
    stat,
)

pytestmark = pytest.mark.integration


def handled_to_the_end(settings, partition: int) -> bool:
    """The worker's group has committed the health partition up to its end."""
    tp = TopicPartition(settings.topic("health"), partition)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.topic(HEALTH_GROUP), enable_auto_commit=False
    )
    try:
        return consumer.committed(tp) == consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def test_a_restarted_worker_decides_at_once_on_the_window_before_the_restart(
    health_settings, running_node, client, appender, tmp_path
):
    # no member fault: the member stays Active while no worker hears it
    settings = health_settings.model_copy(update={"health_window_seconds": 60.0, "member_fault_seconds": 600.0})
    first = HealthWorkerThread(settings.model_copy(update={"state_dir": tmp_path / "first"})).start()
    try:
        members = active_cluster(settings, client, first, 1, {"load_average": 25.0})
        now = time.time()
        publish(
            appender,
            *(stat(members[0], "load_average", value, at=now - 2 + n) for n, value in enumerate((40.0, 50.0, 60.0))),
        )
        wait_until(
            lambda: any(
                c.payload.figures.get("load_average.samples") == 3 for c in commands_of(settings, "ScaleCluster")
            ),
            timeout=30,
            message="the first worker's decision on the three samples",
        )
        partition = next(d.partition for d in read_to_end(settings, "health"))
        wait_until(
            lambda: handled_to_the_end(settings, partition),
            timeout=30,
            message="the first worker's commit of the samples",
        )
    finally:
        first.stop()
    before = len(commands_of(settings, "ScaleCluster"))

    second = HealthWorkerThread(settings.model_copy(update={"state_dir": tmp_path / "second"})).start()
    try:
        command = wait_until(
            lambda: commands_of(settings, "ScaleCluster")[before:],
            timeout=60,
            message="the second worker's first decision",
        )[0]
    finally:
        second.stop()
    assert command.aggregate_id == KEY
    assert command.payload.figures["load_average.samples"] == 3
    assert command.payload.figures["load_average.average"] == pytest.approx(50.0)


def views_ready(worker: HealthWorkerThread) -> bool:
    return worker.service is not None and worker.service.views_ready.is_set()


def events_ends(settings) -> dict[int, int]:
    """partition -> the end offset of the events topic now"""
    return {raw.partition: raw.offset + 1 for raw in read_to_end(settings, "events", decode_records=False)}


def cluster_states(views: ClusterViews) -> dict:
    return {key: tracked.state.model_dump(mode="json") for key, tracked in views.tracked.items()}


def test_a_restarted_worker_folds_only_the_events_after_its_views_checkpoint(health_settings, running_node, client):
    create_cluster(client, 1, 3, {"load_average": 80.0})
    first = HealthWorkerThread(health_settings.model_copy(update={"state_dir": health_settings.state_dir / "1"}))
    first.start()
    try:
        wait_until(lambda: views_ready(first) and KEY in first.service.clusters, timeout=60, message="the views")
        wait_until(
            lambda: load_checkpoint(health_settings, ClusterViews.name, ClusterViews.format_version),
            timeout=30,
            message="the views' checkpoint, written once they held the log",
        )
    finally:
        first.stop()
    covered = dict(first.service.views.projection.positions)
    assert covered == events_ends(health_settings)
    assert isinstance(client.call(KEY, C.UpdateClusterLimits(min=1, max=5)), CommandAccepted)

    second = HealthWorkerThread(health_settings.model_copy(update={"state_dir": health_settings.state_dir / "2"}))
    second.start()
    try:
        wait_until(lambda: views_ready(second), timeout=60, message="the restarted worker's views")
        projection = second.service.views.projection
        assert projection.restored_from is not None and projection.restored_from.offsets == covered
        # the records after the checkpoint, not the log from offset 0
        assert projection.read == sum(at - covered.get(p, 0) for p, at in projection.positions.items()) > 0
        assert second.service.views.tracked[KEY].state.max == 5
        cold = ClusterViews(health_settings)
        for raw in read_to_end(health_settings, "events", decode_records=False):
            cold.feed(raw)
        assert cluster_states(second.service.views) == cluster_states(cold)
    finally:
        second.stop()
