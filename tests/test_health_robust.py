"""The health worker on the real broker when its input is hostile: samples stamped out of
bounds, poison records on the health and events topics, a cluster whose decision raises; and
two workers sharing the health partitions. Short windows (3 s, hop 0.5 s) as in
tests/test_health_flow.py, whose fixtures and helpers these tests reuse."""

from __future__ import annotations

import time

import pytest

from infra.health.app import HealthWorkerThread
from infra.log.kafka import read_to_end
from schemas import commands as C
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.status import CommandAccepted, HealthStat
from streams.health_state import active_members, cluster_key
from tests.conftest import events_of, wait_until
from tests.test_health_flow import (  # noqa: F401 - appender, health_settings, worker: fixtures
    KEY,
    T,
    activate,
    active_cluster,
    appender,
    commands_of,
    health_settings,
    publish,
    stat,
    worker,
)

pytestmark = pytest.mark.integration


def reasons(settings) -> list[str]:
    return [d.record.payload.reason for d in read_to_end(settings, "deadletter")]


def scale_commands(settings, key: str, required: int) -> list:
    return [
        c for c in commands_of(settings, "ScaleCluster") if c.aggregate_id == key and c.payload.required == required
    ]


def test_samples_stamped_out_of_bounds_are_dead_lettered_and_scaling_goes_on(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 1, {"load_average": 25.0})
    now = time.time()
    publish(
        appender,
        stat(members[0], "load_average", 90.0, at=now + 3600),  # an hour ahead
        stat(members[0], "load_average", 90.0, at=now - 3600),
    )  # an hour old

    found = wait_until(
        lambda: len(reasons(settings)) == 2 and reasons(settings),
        timeout=30,
        message="both samples in the dead-letter topic",
    )
    assert any(
        f"payload.timestamp: {now + 3600:.3f} is" in r and "s ahead of the worker's clock" in r and "30 s skew" in r
        for r in found
    ), found
    assert any(f"payload.timestamp: {now - 3600:.3f} is" in r and "300 s max age" in r for r in found), found

    def scaled():
        publish(appender, stat(members[0], "load_average", 60.0))
        return scale_commands(settings, KEY, 3)

    # ceil(1 * 60 / 25) = 3, and only the normal samples are in the window
    command = wait_until(scaled, timeout=30, interval=0.3, message="a decision on normal load")[0]
    assert command.payload.figures["load_average.average"] == pytest.approx(60.0)


def test_poison_on_the_health_topic_is_dead_lettered_and_the_worker_goes_on(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 1, {"load_average": 25.0})
    topic = settings.topic("health")
    for key, value in ((b"\xff\xfe", b"{}"), (KEY.encode(), None), (KEY.encode(), b"{not json")):
        appender.send_raw(topic, key, value)
    appender.flush()

    found = wait_until(
        lambda: len(reasons(settings)) == 3 and reasons(settings),
        timeout=30,
        message="the three poison records in the dead-letter topic",
    )
    assert any("key: not UTF-8" in r for r in found), found
    assert any("null value" in r for r in found), found
    assert any("Invalid JSON" in r for r in found), found

    def scaled():
        publish(appender, stat(members[0], "load_average", 60.0))
        return scale_commands(settings, KEY, 3)

    wait_until(scaled, timeout=30, interval=0.3, message="the next good record decided on")


def test_poison_on_the_events_topic_leaves_the_views_following(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 1, {"load_average": 25.0})
    topic = settings.topic("events")
    for partition in range(settings.partitions):
        for key, value in ((b"\xff\xfe", b"{}"), (KEY.encode(), None), (KEY.encode(), b"{not json")):
            appender.send_raw(topic, key, value, partition=partition)
    appender.flush()
    assert isinstance(client.call(KEY, C.UpdateClusterLimits(min=1, max=3)), CommandAccepted)

    wait_until(
        lambda: worker.service.clusters[KEY].max == 3, timeout=30, message="the next commit folded into the view"
    )
    assert worker.worker is not None and worker.thread.is_alive()

    def scaled():
        publish(appender, stat(members[0], "load_average", 60.0))
        return scale_commands(settings, KEY, 3)

    wait_until(scaled, timeout=30, interval=0.3, message="a decision after the poison")


def make_cluster(client, cid: str, thresholds: dict[str, float]) -> str:
    key = cluster_key(T, cid)
    spec = ClusterSpec(
        cluster_id=cid,
        application_id=cid.split(".")[0],
        alias="php1",
        cartridge_type="php",
        min=1,
        max=4,
        autoscaling_policy_id="as-1",
        deployment_policy_id="dp-1",
        thresholds=thresholds,
        partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=4)],
    )
    assert isinstance(client.call(key, C.CreateCluster(spec=spec)), CommandAccepted)
    return key


def activate_all(settings, client, keys: list[str], workers) -> dict[str, str]:
    """key -> its one member, Active and seen so by every worker."""
    members = {}
    for key in keys:
        members[key] = wait_until(
            lambda key=key: [e.payload.member_id for e in events_of(settings, key) if e.type == "MemberSpawnRequested"],
            message="the min rule's spawn",
        )[0]
        activate(client, [members[key]], key)
    wait_until(
        lambda: all(
            (v := w.service.clusters.get(k)) is not None and active_members(v) == [m]
            for w in workers
            for k, m in members.items()
        ),
        timeout=30,
        message="every worker's view of the active members",
    )
    return members


def health_stat(key: str, member: str, value: float) -> HealthStat:
    return HealthStat(
        cluster_id=key.rsplit("/", 1)[1],
        network_partition_id="np1",
        member_id=member,
        metric="load_average",
        value=value,
        timestamp=time.time(),
    )


def test_a_cluster_whose_decision_raises_does_not_stop_another(settings, client, worker, appender):
    # a threshold of 0 passes the cluster spec (the policy would refuse it); the rule raises
    bad = make_cluster(client, "bad.php1.php.domain", {"load_average": 0.0})
    good = make_cluster(client, "good.php1.php.domain", {"load_average": 25.0})
    members = activate_all(settings, client, [bad, good], [worker])

    def scaled():
        publish(appender, *(health_stat(k, m, 60.0) for k, m in members.items()))
        return scale_commands(settings, good, 3)

    wait_until(scaled, timeout=30, interval=0.3, message="the good cluster's decision")
    assert worker.service.book.failures[bad] > 0
    assert not [c for c in commands_of(settings, "ScaleCluster") if c.aggregate_id == bad]


def test_two_workers_share_the_health_partitions_and_decide_for_every_cluster(
    health_settings, running_node, client, appender, tmp_path
):
    workers = [
        HealthWorkerThread(health_settings.model_copy(update={"state_dir": tmp_path / name})).start()
        for name in ("a", "b")
    ]
    try:
        # these keys hash to partitions 2, 2, 1, 2, 1, 3: every pair of partitions holds one
        keys = [make_cluster(client, f"two{n}.php1.php.domain", {"load_average": 25.0}) for n in range(6)]
        members = activate_all(health_settings, client, keys, workers)

        def shared():
            publish(appender, *(health_stat(k, m, 60.0) for k, m in members.items()))
            owned = [set(w.service.book.clusters) for w in workers]
            return all(owned) and not owned[0] & owned[1] and owned[0] | owned[1] == set(keys)

        wait_until(shared, timeout=30, interval=0.3, message="each worker windowing its own clusters")
        since = len(commands_of(health_settings, "ScaleCluster"))

        def decided_for_all():
            publish(appender, *(health_stat(k, m, 60.0) for k, m in members.items()))
            return {c.aggregate_id for c in commands_of(health_settings, "ScaleCluster")[since:]} == set(keys)

        wait_until(decided_for_all, timeout=30, interval=0.3, message="decisions for every cluster")
    finally:
        for running in workers:
            running.stop()
