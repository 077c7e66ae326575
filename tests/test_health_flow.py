"""The health app on the real broker: a faust worker beside a node and its reactor.

Health statistics in, ScaleCluster commands and member faults out, and what the cluster makes
of them. Short windows (3 s, hop 0.5 s, fault after 2 s) keep each test within seconds.
"""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from infra.cli.main import app
from infra.health.app import HealthWorkerThread
from infra.log.kafka import Appender, envelope, read_to_end
from infra.settings import get_settings
from schemas import commands as C
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import HealthRecord
from schemas.status import CommandAccepted, HealthStat
from streams.health_state import active_members, cluster_key
from tests.conftest import events_of, wait_until

pytestmark = pytest.mark.integration
T = "carbon.super"
CLUSTER = "app1.php1.php.domain"
KEY = f"{T}/cluster/{CLUSTER}"
HOP = 0.5
"""Seconds between the health worker's decisions in these tests."""
LOG_TOPICS = ("commands", "events", "replies")


@pytest.fixture
def health_settings(settings, tmp_path):
    return settings.model_copy(
        update={
            "health_window_seconds": 3.0,
            "health_hop_seconds": HOP,
            "member_fault_seconds": 2.0,
            "state_dir": tmp_path,
        }
    )


@pytest.fixture
def worker(health_settings, running_node):
    running = HealthWorkerThread(health_settings).start()
    yield running
    running.stop()


@pytest.fixture
def appender(settings):
    made = Appender(settings)
    yield made
    made.close()


def create_cluster(client, min_count: int, max_count: int, thresholds: dict[str, float]) -> None:
    spec = ClusterSpec(
        cluster_id=CLUSTER,
        application_id="app1",
        alias="php1",
        cartridge_type="php",
        min=min_count,
        max=max_count,
        autoscaling_policy_id="as-1",
        deployment_policy_id="dp-1",
        partition_algorithm="round-robin",
        thresholds=thresholds,
        partitions=[PartitionSpec(id=p, network_partition_id="np1", provider="mock", max=3) for p in ("p1", "p2")],
    )
    assert isinstance(client.call(KEY, C.CreateCluster(spec=spec)), CommandAccepted)


def spawned(settings) -> list[str]:
    return [e.payload.member_id for e in events_of(settings, KEY) if e.type == "MemberSpawnRequested"]


def activate(client, member_ids: list[str], key: str = KEY) -> None:
    """What the cloud controller and the agent would report, in lifecycle order."""
    for member in member_ids:
        for command in (
            C.ReportNodeCreated(member_id=member, node_id=member),
            C.ReportInstanceStatus(member_id=member, status="Started"),
            C.ReportInstanceStatus(member_id=member, status="Activated"),
        ):
            assert isinstance(client.call(key, command), CommandAccepted), command


def active_cluster(settings, client, worker, count: int, thresholds: dict[str, float], max_count: int = 4) -> list[str]:
    """A cluster with `count` Active members, known as such by the health worker."""
    create_cluster(client, count, max_count, thresholds)
    members = wait_until(lambda: len(spawned(settings)) == count and spawned(settings), message="the min rule's spawns")
    activate(client, members)
    wait_until(
        lambda: (
            (view := worker.service.clusters.get(KEY)) is not None and sorted(active_members(view)) == sorted(members)
        ),
        timeout=30,
        message="the health worker's view of the active members",
    )
    return members


def stat(member: str | None, metric: str, value: float, at: float | None = None) -> HealthStat:
    return HealthStat(
        cluster_id=CLUSTER,
        network_partition_id="np1",
        member_id=member,
        metric=metric,
        value=value,
        timestamp=at or time.time(),
    )


def publish(appender, *stats: HealthStat) -> None:
    """Each sample keyed by its cluster, as agents publish them."""
    keyed = [(cluster_key(T, s.cluster_id), s) for s in stats]
    appender.append_many("health", [(key, envelope(HealthRecord, s, key, tenant=T)) for key, s in keyed])


def commands_of(settings, type_: str) -> list:
    return [d.record for d in read_to_end(settings, "commands") if d.record.type == type_]


def verdict_seen(worker, at: float) -> bool:
    """The worker's last verdict on the cluster (sent or not) rests on a sample stamped ``at`` or later."""
    latest = worker.service.book.latest.get(KEY)
    return latest is not None and latest.command.figures.get("load_average.last_ts", 0.0) >= at


def record_counts(settings) -> dict[str, int]:
    return {kind: sum(1 for _ in read_to_end(settings, kind, decode_records=False)) for kind in LOG_TOPICS}


def decided(settings) -> list:
    return [e.payload for e in events_of(settings, KEY) if e.type == "ScalingDecided"]


def test_load_over_threshold_scales_up_with_the_figures_that_drove_it(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 1, {"load_average": 25.0})

    def scaled():
        publish(appender, stat(members[0], "load_average", 60.0))
        return [d for d in decided(settings) if d.spawn]

    decision = wait_until(scaled, timeout=30, interval=0.3, message="a scale-up decision")[0]
    command = next(c for c in commands_of(settings, "ScaleCluster") if c.payload.required == 3)
    scale = command.payload
    # load rule: ceil(min 1 * 60 / 25) = 3 members, driven by load_average
    assert scale.metric == "load_average" and scale.reason.startswith("WithinRange: load_average predicted 60")
    assert scale.figures["load_average.average"] == pytest.approx(60.0)
    assert scale.figures["load_average.gradient"] == pytest.approx(0.0)
    assert scale.figures["load_average.threshold"] == 25.0 and scale.figures["active_members"] == 1
    assert scale.member_load == {members[0]: pytest.approx(60.0)}
    assert command.aggregate_id == KEY and command.tenant == T
    # the cluster: 3 required, 1 active -> spawn 2, round-robin over p1 and p2
    assert (decision.reason, decision.required, decision.spawn) == ("ScaleUp", 3, 2)
    assert decision.figures == scale.figures  # the explanation travels with the decision
    new = spawned(settings)[1:]
    assert len(new) == 2


def test_load_under_threshold_scales_down_only_on_the_fourth_request(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 2, {"load_average": 50.0})
    assert isinstance(client.call(KEY, C.UpdateClusterLimits(min=1, max=4)), CommandAccepted)

    def scaled_down():
        publish(appender, *(stat(m, "load_average", 10.0) for m in members))
        return [d for d in decided(settings) if d.terminate]

    wait_until(scaled_down, timeout=40, interval=0.3, message="a scale-down")
    # ceil(min 1 * 10 / 50) = 1 required, 2 active: asked three times, done on the fourth
    steps = [(d.reason, d.scale_down_requests, d.terminate) for d in decided(settings)]
    assert steps == [
        ("ScaleDownPending", 1, 0),
        ("ScaleDownPending", 2, 0),
        ("ScaleDownPending", 3, 0),
        ("ScaleDown", 0, 1),
    ]
    leaving = [e.payload for e in events_of(settings, KEY) if e.type == "MemberTerminationRequested"]
    assert len(leaving) == 1 and leaving[0].graceful and leaving[0].member_id in members


def test_silent_active_member_is_faulted_once_and_replaced(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 1, {"load_average": 80.0})
    publish(appender, stat(members[0], "load_average", 20.0))  # heard once, then silent

    obsoleted = wait_until(
        lambda: [e.payload for e in events_of(settings, KEY) if e.type == "MemberObsoleted"],
        timeout=30,
        message="the silent member made obsolete",
    )
    assert obsoleted[0].member_id == members[0] and "silent" in obsoleted[0].reason
    replacement = wait_until(
        lambda: [m for m in spawned(settings) if m != members[0]], message="the min rule's replacement"
    )
    assert len(replacement) == 1
    faults = [d.record.payload for d in read_to_end(settings, "health") if d.record.type == "MemberFault"]
    assert [(f.member_id, f.cluster_id) for f in faults] == [(members[0], CLUSTER)]
    assert faults[0].silent_seconds > 2.0


def test_member_never_heard_from_is_not_faulted(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 2, {"load_average": 80.0})

    def heard_and_silent():  # only the first member speaks
        publish(appender, stat(members[0], "load_average", 20.0))
        return [d for d in read_to_end(settings, "health") if d.record.type == "MemberFault"]

    start = time.time()
    wait_until(
        lambda: not heard_and_silent() and verdict_seen(worker, start + 8 * HOP),
        timeout=30,
        interval=0.3,
        message="several hops with one member speaking",
    )
    assert heard_and_silent() == []


def test_bad_health_records_go_to_dead_letters_and_good_ones_still_count(settings, client, worker, appender):
    members = active_cluster(settings, client, worker, 1, {"load_average": 25.0})
    good = envelope(HealthRecord, stat(members[0], "load_average", 40.0), KEY, tenant=T)
    as_json = json.loads(good.model_dump_json())

    def bad(**payload) -> bytes:
        return json.dumps({**as_json, "payload": {**as_json["payload"], **payload}}).encode()

    bad_records = [
        bad(member_id="php1.nobody"),  # unknown member
        bad(value=float("nan")),
        bad(value=-5),
        bad(value="high"),
        bad(cluster_id="no.such.cluster"),
        b"{not json",
    ]
    for raw in bad_records:
        appender.send_raw(settings.topic("health"), KEY.encode(), raw)
    appender.flush()

    def reasons():
        return [d.record.payload.reason for d in read_to_end(settings, "deadletter")]

    def scaled():
        publish(appender, stat(members[0], "load_average", 40.0))
        return [c for c in commands_of(settings, "ScaleCluster") if c.payload.required == 2]

    command = wait_until(scaled, timeout=30, interval=0.3, message="a decision from the good records")[0]
    # only the good records are in the window: ceil(1 * 40 / 25) = 2, average exactly 40
    assert command.payload.figures["load_average.average"] == pytest.approx(40.0)
    found = wait_until(
        lambda: len(reasons()) == len(bad_records) and reasons(), message="every bad record in the dead-letter topic"
    )
    text = "\n".join(found)
    assert "unknown member 'php1.nobody'" in text
    assert "unknown cluster 'no.such.cluster'" in text
    assert text.count("payload.HealthStat.value: Input should be greater than or equal to 0") == 2  # NaN, -5
    assert "payload.HealthStat.value: Input should be a valid number" in text
    assert "Invalid JSON" in text or "json_invalid" in text


def test_a_steady_cluster_writes_nothing_and_a_change_of_load_scales_on_the_next_hop(
    settings, client, worker, appender
):
    [member] = active_cluster(settings, client, worker, 1, {"load_average": 25.0})
    publish(appender, stat(member, "load_average", 1.0))
    wait_until(lambda: KEY in worker.service.book.latest, message="a first verdict")
    before, start = record_counts(settings), time.time()

    def steady():
        publish(appender, stat(member, "load_average", 1.0))
        return verdict_seen(worker, start + 10 * HOP)

    wait_until(steady, timeout=30, interval=HOP / 2, message="ten hops of steady load")
    # load 1 against 25 on the one member min allows: the cluster would decide Stable, so no
    # command is sent and nothing is committed or answered; the verdict is still known
    assert record_counts(settings) == before
    latest = worker.service.book.latest[KEY]
    assert (latest.send, latest.command.required) == (False, 1)
    assert latest.command.figures["load_average.average"] == pytest.approx(1.0)

    burst = time.time()
    publish(appender, stat(member, "load_average", 200.0, at=burst))
    scale = wait_until(lambda: commands_of(settings, "ScaleCluster"), message="a ScaleCluster")[0].payload
    # the first hop that saw the burst sent it: the verdict rests on that very sample
    assert scale.figures["load_average.last_ts"] == pytest.approx(burst) and scale.required >= 2
    decision = wait_until(lambda: [d for d in decided(settings) if d.spawn], message="the scale-up")[0]
    assert decision.reason in ("ScaleUp", "ScaleUpLimitedByMax")

    # why: the current size (a member spawned by that decision) names the decision and its figures
    new_member = next(
        e for e in events_of(settings, KEY) if e.type == "MemberSpawnRequested" and e.payload.member_id != member
    )
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["why", new_member.id, "--json"],
            env={"STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "STRATOS_TOPIC_PREFIX": settings.topic_prefix},
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    chain = json.loads(result.output)["chain"]
    kinds = [link["type"] for link in chain]
    assert kinds.index("ScalingDecided") + 1 == kinds.index("ScaleCluster")
    assert chain[kinds.index("ScalingDecided")]["figures"]["reason"] == decision.reason
    assert chain[kinds.index("ScaleCluster")]["figures"]["figures"]["load_average.last_ts"] == pytest.approx(burst)


def why_cluster(settings) -> dict:
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            app,
            ["why", "--cluster", KEY, "--json"],
            env={"STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "STRATOS_TOPIC_PREFIX": settings.topic_prefix},
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_why_explains_a_steady_cluster_by_its_last_change_and_its_verdict_now(settings, client, worker, appender):
    [member] = active_cluster(settings, client, worker, 1, {"load_average": 25.0})
    publish(appender, stat(member, "load_average", 1.0))
    wait_until(lambda: KEY in worker.service.book.latest, message="a first verdict")
    explained = why_cluster(settings)
    # nothing was sent, and yet the cluster is explained: no scaling change yet, load 1 of 25
    assert commands_of(settings, "ScaleCluster") == []
    assert explained["members"] == {"active": 1, "pending": 0, "min": 1, "max": 4}
    assert explained["last_change"] is None
    verdict = explained["verdict"]
    assert (verdict["required"], verdict["changes_cluster"]) == (1, False)
    assert verdict["figures"]["load_average.average"] == pytest.approx(1.0)
    assert verdict == {**verdict, "reason": worker.service.book.latest[KEY].command.reason}

    publish(appender, stat(member, "load_average", 200.0))
    wait_until(lambda: [d for d in decided(settings) if d.spawn], message="the scale-up")
    explained = why_cluster(settings)
    assert explained["last_change"]["reason"] in ("ScaleUp", "ScaleUpLimitedByMax")
    assert explained["last_change"]["figures"]["load_average.threshold"] == 25.0
