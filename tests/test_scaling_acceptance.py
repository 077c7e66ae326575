"""Stratos's autoscaling acceptance tests, on the real broker with the whole loop running: a
node and its reactor, the cloud controller with the simulated mock IaaS (its instances publish
health from patterns replaced at run time through the mock's REST view), and a faust health
worker. Short windows (3 s, hop 0.5 s, samples every 0.5 s) keep each test well under a minute.

What is checked is what a user reads in the cluster's event log: the members spawned and let
go, in which partitions, in which order, and the cluster's status changes.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.health import HEALTH_GROUP
from infra.health.app import HealthWorkerThread
from infra.log.kafka import read_to_end
from infra.observe.follower import stop_together
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted
from tests.conftest import events_of, sample, wait_until
from tests.test_cloud_controller import RunningCloud
from tests.test_runtime_flow import add

pytestmark = pytest.mark.integration
T = "carbon.super"
APP_ID = "scaling-app"
CLUSTER_ID = f"{APP_ID}.php1.php.domain"
CLUSTER = aggregate_id(T, "cluster", CLUSTER_ID)
APP = aggregate_id(T, "application", APP_ID)
LEAVING = ("MemberTerminationRequested", "MemberObsoleted", "MemberTerminated")


def short_loop_settings(settings, tmp_path, member_fault_seconds: float = 3.0):
    """Short windows, hops and retries, so that a whole scaling loop runs in seconds."""
    return settings.model_copy(
        update={
            "health_window_seconds": 3.0,
            "health_hop_seconds": 0.5,
            "health_publish_seconds": 0.5,
            "member_fault_seconds": member_fault_seconds,
            "cloud_reconcile_seconds": 0.5,
            "cloud_retry_seconds": 0.1,
            "state_dir": tmp_path,
        }
    )


CALM_FAULT_SECONDS = 60.0
"""A member fault time for tests that check the autoscaler's own decisions: long enough that no
member of a busy machine looks silent (at 3 s, a starved health worker can fault healthy members)."""


@pytest.fixture
def loop_settings(settings, tmp_path):
    return short_loop_settings(settings, tmp_path)


@pytest.fixture
def platform(loop_settings, running_node):
    """Cloud controller, simulated instances and a health worker beside the node."""
    cloud = RunningCloud(loop_settings)
    worker = HealthWorkerThread(loop_settings).start()
    yield cloud
    stop_together(worker.stop, cloud.stop)


@pytest.fixture
def mock_iaas(platform):
    """An HTTP client of this test's mock IaaS (`stratos mock-iaas`), under /mock-iaas/api."""
    return platform.http


def put_pattern(http, load: float, memory: float, mode: str = "continue", duration: float = 60.0) -> None:
    body = {
        factor: {"sampleValues": [value], "sampleDuration": duration, "mode": mode}
        for factor, value in (("load-average", load), ("memory-consumption", memory))
    }
    answer = http.put("/health-patterns/php", json=body)
    assert answer.status_code == 200, answer.text


def deploy(client, min_count: int, max_count: int, algorithm: str = "round-robin") -> None:
    """Stratos's scaling set-up: two partitions of partitionMax 3, thresholds memory 30, load 25."""
    deployment = sample("deployment-policy.json")
    deployment["networkPartitions"][0]["partitionAlgo"] = algorithm
    autoscaling = {
        "id": "scaling-policy",
        "loadThresholds": {"memoryConsumption": {"threshold": 30}, "loadAverage": {"threshold": 25}},
    }
    application = sample("application-single-cartridge.json")
    application.update(applicationId=APP_ID, alias=APP_ID)
    cartridge = application["components"]["cartridges"][0]
    cartridge.update(cartridgeMin=min_count, cartridgeMax=max_count)
    cartridge["subscribableInfo"].pop("artifactRepository")  # tests reach nothing off this machine
    cartridge["subscribableInfo"]["autoscalingPolicy"] = "scaling-policy"
    for kind, body in (
        ("networkPartition", sample("network-partition.json")),
        ("cartridge", sample("php.json")),
        ("autoscalingPolicy", autoscaling),
        ("deploymentPolicy", deployment),
        ("applicationPolicy", sample("application-policy.json")),
        ("application", application),
    ):
        assert isinstance(add(client, kind, body), CommandAccepted), kind
    reply = client.call(APP, C.DeployApplication(application_policy_id="application-policy-1"))
    assert isinstance(reply, CommandAccepted), reply


def cluster_events(settings, *types: str) -> list:
    return [e for e in events_of(settings, CLUSTER) if not types or e.type in types]


def in_service_per_partition(events) -> list[dict[str, int]]:
    """After each member event: partition -> members spawned and not (yet) leaving."""
    partition_of: dict[str, str] = {}
    serving: set[str] = set()
    steps = []
    for event in events:
        member = getattr(event.payload, "member_id", None)
        if event.type == "MemberSpawnRequested":
            partition_of[member] = event.payload.partition_id
            serving.add(member)
        elif event.type in LEAVING:
            serving.discard(member)
        else:
            continue
        counts = {"partition-1": 0, "partition-2": 0}
        for m in serving:
            counts[partition_of[m]] += 1
        steps.append(counts)
    return steps


SINGLE_CLUSTER_COUNTS = [2, 5, 4, 3, 2]
"""Stratos's single-cluster test, decision by decision: members in service after each decision
that changed them (min rule 2, load 60 asks for 5, then load 10 takes it back to min 2 one
member at a time). The simulator's run of examples/scenarios/stratos-single-cluster.yaml makes
the same decisions (tests/test_simulation.py)."""


def member_counts(events) -> list[int]:
    """Members in service (spawned, not yet leaving) after each commit that changed them."""
    serving: set[str] = set()
    counts: list[int] = []
    commit_of = [e.id.rsplit(".", 1)[0] for e in events]
    for n, event in enumerate(events):
        member = getattr(event.payload, "member_id", None)
        if event.type == "MemberSpawnRequested":
            serving.add(member)
        elif event.type in LEAVING:
            serving.discard(member)
        last_of_commit = n + 1 == len(events) or commit_of[n + 1] != commit_of[n]
        if last_of_commit and (not counts or counts[-1] != len(serving)) and (counts or serving):
            counts.append(len(serving))
    return counts


def check_single_cluster_log(events) -> None:
    """What Stratos's single-cluster test checks in the cluster's log (live and simulated)."""
    steps = in_service_per_partition(events)
    assert max(sum(s.values()) for s in steps) == 5
    assert all(abs(s["partition-1"] - s["partition-2"]) <= 1 for s in steps), steps
    assert steps[-1] == {"partition-1": 1, "partition-2": 1}
    downs = [e.payload for e in events if e.type == "ScalingDecided" and e.payload.terminate]
    assert [d.terminate for d in downs] == [1, 1, 1]
    assert all(d.reason == "ScaleDown" for d in downs)
    # every scale-down waited for the 4th request in a row
    pending = [
        e.payload.scale_down_requests
        for e in events
        if e.type == "ScalingDecided" and e.payload.reason == "ScaleDownPending"
    ]
    assert pending.count(3) >= 3
    leaving = [e.payload for e in events if e.type == "MemberTerminationRequested"]
    assert len(leaving) == 3 and all(m.graceful for m in leaving)
    assert member_counts(events) == SINGLE_CLUSTER_COUNTS


def active(settings) -> set[str]:
    members: set[str] = set()
    for event in cluster_events(settings, "MemberActivated", *LEAVING):
        (members.add if event.type == "MemberActivated" else members.discard)(event.payload.member_id)
    return members


def health_ends(settings) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = [
            TopicPartition(settings.topic("health"), p) for p in consumer.partitions_for_topic(settings.topic("health"))
        ]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()


def worker_read_to(settings, ends: dict[TopicPartition, int]) -> bool:
    """The health worker's group has windowed every health record before `ends` (it commits
    what it windowed): a steady cluster's verdicts are not sent (docs/adr), so this is how a
    test knows the worker has heard what the members said."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.topic(HEALTH_GROUP), enable_auto_commit=False
    )
    try:
        return all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close()


def samples_of(settings, cluster_id: str) -> list:
    return [
        d.record.payload
        for d in read_to_end(settings, "health")
        if getattr(d.record.payload, "cluster_id", None) == cluster_id and hasattr(d.record.payload, "member_id")
    ]


def wait_heard(settings, cluster_id: str, enough, message: str) -> None:
    """Wait until the health topic holds `enough` of the cluster's samples, then until the worker
    has windowed up to that point."""
    wait_until(lambda: enough(samples_of(settings, cluster_id)), timeout=20, message=f"{message} published")
    ends = health_ends(settings)
    wait_until(lambda: worker_read_to(settings, ends), timeout=20, message=f"{message} heard by the worker")


def statuses(settings) -> list[str]:
    return [e.payload.status for e in cluster_events(settings, "ClusterStatusChanged")]


def test_single_cluster_scales_above_min_then_down_one_at_a_time_balanced(loop_settings, platform, mock_iaas, client):
    """Stratos's single-cluster test: min 2, max 6, load 60 then 10."""
    put_pattern(mock_iaas, load=60, memory=60)
    deploy(client, min_count=2, max_count=6)
    # load: ceil(min 2 * 60 / 25) = 5; memory: ceil(2 + (60 - 30) * 4 / 70) = 4 -> 5 members
    wait_until(lambda: len(active(loop_settings)) == 5, timeout=40, message="5 Active members")
    put_pattern(mock_iaas, load=10, memory=10)
    # load: ceil(2 * 10 / 25) = 1; memory below 30: min - 1 = 1 -> down to min, one at a time
    wait_until(
        lambda: len(active(loop_settings)) == 2 and len(cluster_events(loop_settings, "MemberTerminated")) == 3,
        timeout=45,
        message="back to 2 members, 3 terminated",
    )

    check_single_cluster_log(cluster_events(loop_settings))
    assert len(platform.cloud.all()) == 2  # the IaaS holds exactly the members left


@pytest.mark.parametrize(
    "algorithm, expected",
    [
        ("round-robin", ["partition-1", "partition-2", "partition-1", "partition-2"]),
        ("one-after-another", ["partition-1", "partition-1", "partition-1", "partition-2"]),
    ],
    ids=["round-robin-alternates", "one-after-another-fills-the-first-partition"],
)
def test_partition_algorithm_places_new_members(loop_settings, platform, mock_iaas, client, algorithm, expected):
    put_pattern(mock_iaas, load=80, memory=10)
    deploy(client, min_count=1, max_count=6, algorithm=algorithm)
    # load: ceil(min 1 * 80 / 25) = 4 members
    wait_until(lambda: len(active(loop_settings)) == 4, timeout=40, message="4 Active members")
    spawned = [e.payload.partition_id for e in cluster_events(loop_settings, "MemberSpawnRequested")]
    assert spawned == expected


def test_silent_members_are_faulted_and_replaced_inactive_then_active(loop_settings, platform, mock_iaas, client):
    put_pattern(mock_iaas, load=10, memory=10, mode="loop")
    deploy(client, min_count=2, max_count=6)
    first = wait_until(
        lambda: len(active(loop_settings)) == 2 and active(loop_settings), timeout=40, message="2 Active members"
    )
    wait_until(lambda: statuses(loop_settings) == ["Active"], message="the cluster Active")
    wait_heard(
        loop_settings, CLUSTER_ID, lambda samples: {m.member_id for m in samples} >= first, "both members' samples"
    )
    put_pattern(mock_iaas, load=10, memory=10, mode="stop", duration=0.5)  # silent after 0.5 s

    wait_until(
        lambda: statuses(loop_settings)[-2:] == ["Inactive", "Active"],
        timeout=45,
        message="Inactive, then Active again",
    )
    obsoleted = {e.payload.member_id: e.payload.reason for e in cluster_events(loop_settings, "MemberObsoleted")}
    assert set(obsoleted) == first and all("silent" in reason for reason in obsoleted.values())
    replacements = active(loop_settings)
    assert len(replacements) == 2 and not replacements & first
    assert statuses(loop_settings) == ["Active", "Inactive", "Active"]
    assert {i.node_id for i in platform.cloud.all()} == replacements


NESTED_APP = "nested-group-app"


def nested_cluster(alias: str, cartridge: str) -> str:
    return f"{NESTED_APP}.{alias}.{cartridge}.domain"


def nested_application() -> dict:
    """tests/samples/stratos/application-nested-group.json without its artifact repositories."""
    application = sample("application-nested-group.json")

    def strip(components: dict) -> None:
        for cartridge in components.get("cartridges", []):
            cartridge["subscribableInfo"].pop("artifactRepository", None)
        for group in components.get("groups", []):
            strip(group)

    strip(application["components"])
    return application


def deploy_nested(client) -> None:
    """tests/samples/stratos/application-nested-group.json with its group definition; the
    artifact repositories are dropped (tests reach nothing off this machine)."""
    dp1 = sample("deployment-policy.json")
    dp2 = {
        **dp1,
        "id": "deployment-policy-2",
        "networkPartitions": [{**dp1["networkPartitions"][0], "partitionAlgo": "one-after-another"}],
    }
    application = nested_application()
    for kind, body in (
        ("networkPartition", sample("network-partition.json")),
        ("cartridge", sample("php.json")),
        ("cartridge", sample("tomcat.json")),
        ("cartridgeGroup", sample("cartridge-group-nested.json")),
        ("autoscalingPolicy", sample("autoscaling-policy.json")),
        ("deploymentPolicy", dp1),
        ("deploymentPolicy", dp2),
        ("applicationPolicy", sample("application-policy.json")),
        ("application", application),
    ):
        assert isinstance(add(client, kind, body), CommandAccepted), kind
    reply = client.call(
        aggregate_id(T, "application", NESTED_APP), C.DeployApplication(application_policy_id="application-policy-1")
    )
    assert isinstance(reply, CommandAccepted), reply


def first_event(settings, cluster_id: str, type_: str, status: str | None = None):
    return next(
        (
            e
            for e in events_of(settings, aggregate_id(T, "cluster", cluster_id))
            if e.type == type_ and (status is None or e.payload.status == status)
        ),
        None,
    )


def test_nested_groups_start_in_declared_order(loop_settings, platform, client):
    deploy_nested(client)
    # app-group: php-app, then tomcat-app; web-group: app-group, then php-web; app: web-group, then tomcat
    order = [
        nested_cluster("my-php-app", "php"),
        nested_cluster("my-tomcat-app", "tomcat"),
        nested_cluster("my-php-web", "php"),
        nested_cluster("my-tomcat", "tomcat"),
    ]
    wait_until(
        lambda: all(first_event(loop_settings, c, "ClusterStatusChanged", "Active") for c in order),
        timeout=50,
        message="every cluster Active",
    )
    created = [first_event(loop_settings, c, "ClusterCreated").occurred_at for c in order]
    active_at = [first_event(loop_settings, c, "ClusterStatusChanged", "Active").occurred_at for c in order]
    assert created == sorted(created)
    # each cluster is created only once its predecessor is Active
    assert all(active_at[n] <= created[n + 1] for n in range(len(order) - 1)), (created, active_at)
    tomcat = aggregate_id(T, "cluster", order[-1])
    assert len([e for e in events_of(loop_settings, tomcat) if e.type == "MemberSpawnRequested"]) == 2


def test_siblings_without_an_order_start_in_parallel(loop_settings, platform, client):
    application = sample("application-single-cartridge.json")
    first = application["components"]["cartridges"][0]
    first["subscribableInfo"].pop("artifactRepository")
    second = {**first, "subscribableInfo": {**first["subscribableInfo"], "alias": "php2"}}
    application["components"]["cartridges"].append(second)
    for kind, body in (
        ("networkPartition", sample("network-partition.json")),
        ("cartridge", sample("php.json")),
        ("autoscalingPolicy", sample("autoscaling-policy.json")),
        ("deploymentPolicy", sample("deployment-policy.json")),
        ("applicationPolicy", sample("application-policy.json")),
        ("application", application),
    ):
        assert isinstance(add(client, kind, body), CommandAccepted), kind
    app = aggregate_id(T, "application", application["applicationId"])
    assert isinstance(
        client.call(app, C.DeployApplication(application_policy_id="application-policy-1")), CommandAccepted
    )
    clusters = [f"{application['applicationId']}.{alias}.php.domain" for alias in ("php1", "php2")]
    wait_until(
        lambda: all(first_event(loop_settings, c, "ClusterStatusChanged", "Active") for c in clusters),
        timeout=40,
        message="both clusters Active",
    )
    (start,) = [e.payload for e in events_of(loop_settings, app) if e.type == "ClustersStartRequested"]
    assert sorted(s.cluster_id for s in start.clusters) == clusters  # asked for together
    created = [first_event(loop_settings, c, "ClusterCreated").occurred_at for c in clusters]
    active_at = [first_event(loop_settings, c, "ClusterStatusChanged", "Active").occurred_at for c in clusters]
    assert max(created) < min(active_at)  # neither waited for the other


def test_scaling_dependents_scale_by_the_same_factor(loop_settings, platform, mock_iaas, client):
    """php (min 1) and tomcat (min 2) listed together in scalingDependents: php's load asks
    for 2 = 2 x its min, so tomcat, idle itself, keeps 2 x 2 = 4."""
    put_pattern(mock_iaas, load=50, memory=10)  # php: ceil(1 * 50 / 25) = 2
    answer = mock_iaas.put(
        "/health-patterns/tomcat",
        json={
            factor: {"sampleValues": [10], "sampleDuration": 60, "mode": "continue"}
            for factor in ("load-average", "memory-consumption")
        },
    )  # tomcat alone: 1, below its min
    assert answer.status_code == 200
    application = sample("application-single-cartridge.json")
    application.update(applicationId="dependents-app", alias="dependents-app")
    php = application["components"]["cartridges"][0]
    php.update(cartridgeMin=1, cartridgeMax=4)
    php["subscribableInfo"].pop("artifactRepository")
    php["subscribableInfo"]["autoscalingPolicy"] = "scaling-policy"
    tomcat = {
        "type": "tomcat",
        "cartridgeMin": 2,
        "cartridgeMax": 6,
        "subscribableInfo": {**php["subscribableInfo"], "alias": "tomcat1"},
    }
    application["components"]["cartridges"].append(tomcat)
    application["components"]["dependencies"] = {
        "scalingDependents": [{"aliases": ["cartridge.php1", "cartridge.tomcat1"]}]
    }
    autoscaling = {
        "id": "scaling-policy",
        "loadThresholds": {"memoryConsumption": {"threshold": 30}, "loadAverage": {"threshold": 25}},
    }
    for kind, body in (
        ("networkPartition", sample("network-partition.json")),
        ("cartridge", sample("php.json")),
        ("cartridge", sample("tomcat.json")),
        ("autoscalingPolicy", autoscaling),
        ("deploymentPolicy", sample("deployment-policy.json")),
        ("applicationPolicy", sample("application-policy.json")),
        ("application", application),
    ):
        assert isinstance(add(client, kind, body), CommandAccepted), kind
    app = aggregate_id(T, "application", "dependents-app")
    assert isinstance(
        client.call(app, C.DeployApplication(application_policy_id="application-policy-1")), CommandAccepted
    )
    php_key = aggregate_id(T, "cluster", "dependents-app.php1.php.domain")
    tomcat_key = aggregate_id(T, "cluster", "dependents-app.tomcat1.tomcat.domain")

    def active_in(key: str) -> set[str]:
        members: set[str] = set()
        for event in events_of(loop_settings, key):
            if event.type == "MemberActivated":
                members.add(event.payload.member_id)
            elif event.type in LEAVING:
                members.discard(event.payload.member_id)
        return members

    wait_until(
        lambda: len(active_in(php_key)) == 2 and len(active_in(tomcat_key)) == 4,
        timeout=45,
        message="php at 2, tomcat at 4",
    )
    (announced,) = [e.payload for e in events_of(loop_settings, php_key) if e.type == "DependentScalingRequested"]
    assert (announced.factor, announced.clusters) == (2.0, ["dependents-app.tomcat1.tomcat.domain"])
    (floor,) = [e.payload for e in events_of(loop_settings, tomcat_key) if e.type == "DependentFloorChanged"]
    assert (floor.factor, floor.required) == (2.0, 4)

    # tomcat's own figures keep asking for 1; hops of them must not take it below 4
    since = time.time()
    hops = 6 * loop_settings.health_hop_seconds
    wait_heard(
        loop_settings,
        "dependents-app.tomcat1.tomcat.domain",
        lambda samples: any(m.timestamp > since + hops for m in samples),
        "six hops of tomcat's own figures",
    )
    assert len(active_in(tomcat_key)) == 4
    assert not [e for e in events_of(loop_settings, tomcat_key) if e.type == "MemberTerminationRequested"]


def test_terminate_all_takes_the_whole_group_when_one_cluster_fails(loop_settings, platform, client):
    deploy_nested(client)
    app_group = [nested_cluster("my-php-app", "php"), nested_cluster("my-tomcat-app", "tomcat")]
    others = [nested_cluster("my-php-web", "php"), nested_cluster("my-tomcat", "tomcat")]
    wait_until(
        lambda: all(first_event(loop_settings, c, "ClusterStatusChanged", "Active") for c in app_group + others),
        timeout=50,
        message="every cluster Active",
    )
    (victim,) = [i.node_id for i in platform.cloud.all() if i.metadata["clusterId"] == app_group[0]]
    assert platform.cloud.destroy(victim)  # a crash in app-group, whose behaviour is terminate-all
    wait_until(
        lambda: all(first_event(loop_settings, c, "ClusterTerminated") for c in app_group),
        timeout=40,
        message="both clusters of app-group terminated",
    )
    app = aggregate_id(T, "application", NESTED_APP)
    (request,) = [e.payload for e in events_of(loop_settings, app) if e.type == "GroupTerminationRequested"]
    assert (request.cluster_id, request.behaviour, sorted(request.clusters)) == (
        app_group[0],
        "terminate-all",
        sorted(app_group),
    )
    assert all(first_event(loop_settings, c, "ClusterTerminating") is None for c in others)
    assert not [i for i in platform.cloud.all() if i.metadata["clusterId"] in app_group]
