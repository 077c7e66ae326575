"""Live application updates, redeploy, group scaling and bursting on the real broker with the
whole loop running (node, reactor, cloud controller with simulated mock instances, health
worker), as in tests/test_scaling_acceptance.py. What is checked is what a user sees: members
Active per cluster and network partition, and the decisions in the log."""

from __future__ import annotations

import copy

import pytest

from schemas import commands as C
from schemas.definitions import Application
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted, CommandRejected
from tests.conftest import events_of, sample, wait_until
from tests.test_runtime_flow import add
from tests.test_scaling_acceptance import (  # noqa: F401 - fixtures
    CALM_FAULT_SECONDS,
    LEAVING,
    T,
    deploy_nested,
    mock_iaas,
    nested_application,
    nested_cluster,
    platform,
    put_pattern,
    short_loop_settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def loop_settings(settings, tmp_path):
    """The acceptance tests' short loop, without member faults: these tests count members, and
    a member faulted on a starved machine would be replaced beside them."""
    return short_loop_settings(settings, tmp_path, CALM_FAULT_SECONDS)


AUTOSCALING = {
    "id": "scaling-policy",
    "loadThresholds": {"memoryConsumption": {"threshold": 30}, "loadAverage": {"threshold": 25}},
}


def members(settings, cluster_id: str) -> dict[str, str]:
    """Active members of a cluster -> their network partition."""
    found: dict[str, str] = {}
    spawned: dict[str, str] = {}
    for event in events_of(settings, aggregate_id(T, "cluster", cluster_id)):
        member = getattr(event.payload, "member_id", None)
        if event.type == "MemberSpawnRequested":
            spawned[member] = event.payload.network_partition_id
        elif event.type == "MemberActivated":
            found[member] = spawned[member]
        elif event.type in LEAVING:
            found.pop(member, None)
    return found


def single_app(app_id: str, min_count: int, max_count: int) -> dict:
    application = sample("application-single-cartridge.json")
    application.update(applicationId=app_id, alias=app_id)
    cartridge = application["components"]["cartridges"][0]
    cartridge.update(cartridgeMin=min_count, cartridgeMax=max_count)
    cartridge["subscribableInfo"].pop("artifactRepository")
    cartridge["subscribableInfo"]["autoscalingPolicy"] = "scaling-policy"
    return application


def define(client, application: dict, deployment: dict, policy: dict) -> None:
    np2 = {**sample("network-partition.json"), "id": "network-partition-2"}
    for kind, body in (
        ("networkPartition", sample("network-partition.json")),
        ("networkPartition", np2),
        ("cartridge", sample("php.json")),
        ("autoscalingPolicy", AUTOSCALING),
        ("deploymentPolicy", deployment),
        ("applicationPolicy", policy),
        ("application", application),
    ):
        assert isinstance(add(client, kind, body), CommandAccepted), kind


def deploy(client, app_id: str, policy: str = "application-policy-1") -> None:
    reply = client.call(aggregate_id(T, "application", app_id), C.DeployApplication(application_policy_id=policy))
    assert isinstance(reply, CommandAccepted), reply


def update(client, application: dict):
    return client.call(
        aggregate_id(T, "application", application["applicationId"]),
        C.UpdateApplication(definition=Application.model_validate(application)),
    )


def app_status(settings, app_id: str) -> str | None:
    changes = [
        e.payload.status
        for e in events_of(settings, aggregate_id(T, "application", app_id))
        if e.type == "ApplicationStatusChanged"
    ]
    return changes[-1] if changes else None


def test_limits_of_a_deployed_application_converge_and_a_redeploy_starts_afresh(
    loop_settings, platform, mock_iaas, client
):
    put_pattern(mock_iaas, load=10, memory=10)  # asks for no more than min
    application = single_app("update-app", 1, 4)
    define(client, application, sample("deployment-policy.json"), sample("application-policy.json"))
    deploy(client, "update-app")
    cluster = "update-app.php1.php.domain"
    wait_until(lambda: len(members(loop_settings, cluster)) == 1, timeout=40, message="1 Active member")

    raised = copy.deepcopy(application)
    raised["components"]["cartridges"][0].update(cartridgeMin=3)
    assert isinstance(update(client, raised), CommandAccepted)
    wait_until(lambda: len(members(loop_settings, cluster)) == 3, timeout=40, message="min 1 -> 3: 3 Active")
    first = set(members(loop_settings, cluster))

    lowered = copy.deepcopy(application)
    lowered["components"]["cartridges"][0].update(cartridgeMin=1, cartridgeMax=2)
    assert isinstance(update(client, lowered), CommandAccepted)
    wait_until(lambda: len(members(loop_settings, cluster)) == 2, timeout=40, message="max 4 -> 2: 2 Active")
    key = aggregate_id(T, "cluster", cluster)
    leaving = [e.payload for e in events_of(loop_settings, key) if e.type == "MemberTerminationRequested"]
    assert len(leaving) == 1 and leaving[0].graceful and leaving[0].reason == "MaxRule"
    # a raised min is not a fault: the cluster and its application stayed Active throughout
    assert [e.payload.status for e in events_of(loop_settings, key) if e.type == "ClusterStatusChanged"] == ["Active"]
    assert app_status(loop_settings, "update-app") == "Active"

    renamed = copy.deepcopy(lowered)
    renamed["components"]["cartridges"][0]["subscribableInfo"]["alias"] = "php2"
    refused = update(client, renamed)
    assert isinstance(refused, CommandRejected) and refused.code == 400
    assert refused.field == "components.cartridges[0].subscribableInfo.alias", refused

    app = aggregate_id(T, "application", "update-app")
    assert isinstance(client.call(app, C.UndeployApplication()), CommandAccepted)
    wait_until(
        lambda: any(e.type == "ApplicationUndeployed" for e in events_of(loop_settings, app)),
        timeout=40,
        message="undeployed",
    )
    deploy(client, "update-app")
    wait_until(
        lambda: (
            len(members(loop_settings, cluster)) == 1
            and app_status(loop_settings, "update-app") == "Active"
            and [e.type for e in events_of(loop_settings, key)].count("ClusterCreated") == 2
        ),
        timeout=40,
        message="Active again after the redeploy",
    )
    assert not set(members(loop_settings, cluster)) & first  # fresh members, with the last limits kept
    wait_until(
        lambda: len(platform.cloud.all()) == 1,
        timeout=40,
        message="the undeployed members' instances gone from the IaaS",
    )


def test_bursting_into_a_second_network_partition_and_back(loop_settings, platform, mock_iaas, client):
    put_pattern(mock_iaas, load=80, memory=10)  # ceil(1 * 80 / 25) = 4: past max 2
    deployment = sample("deployment-policy.json")
    deployment["networkPartitions"][0]["partitions"] = deployment["networkPartitions"][0]["partitions"][:1]
    deployment["networkPartitions"].append(
        {
            "id": "network-partition-2",
            "partitionAlgo": "one-after-another",
            "partitions": [{"id": "partition-3", "partitionMax": 3}],
        }
    )
    policy = {
        "id": "burst-policy",
        "algorithm": "one-after-another",
        "networkPartitions": ["network-partition-1", "network-partition-2"],
    }
    define(client, single_app("burst-app", 1, 2), deployment, policy)
    deploy(client, "burst-app", "burst-policy")
    cluster = "burst-app.php1.php.domain"
    wait_until(
        lambda: (
            sorted(members(loop_settings, cluster).values())
            == ["network-partition-1"] * 2 + ["network-partition-2"] * 2
        ),
        timeout=60,
        message="2 Active members in each network partition (max 2 per cluster instance)",
    )
    app = aggregate_id(T, "application", "burst-app")
    reasons = [e.payload.reason for e in events_of(loop_settings, app) if e.type == "ApplicationInstancesChanged"]
    assert reasons and reasons[0].startswith("Burst:")

    put_pattern(mock_iaas, load=5, memory=5)
    wait_until(
        lambda: list(members(loop_settings, cluster).values()) == ["network-partition-1"],
        timeout=60,
        message="back to one member, in the first network partition",
    )
    reasons = [e.payload.reason for e in events_of(loop_settings, app) if e.type == "ApplicationInstancesChanged"]
    assert reasons[-1].startswith("BurstBack:")
    wait_until(  # a member leaves the topology before its instance is destroyed
        lambda: all(
            i.metadata.get("networkPartitionId", "network-partition-1") == "network-partition-1"
            for i in platform.cloud.all()
        ),
        timeout=60,
        message="no instance left in the second network partition",
    )


def test_a_group_scales_out_with_all_its_clusters_and_back_in(loop_settings, platform, mock_iaas, client):
    """tests/samples/stratos: web-group has groupScalingEnabled (its definition) and
    groupMaxInstances 2; its php clusters (max 2) get load 200 (autoscaling-policy-1: 70)."""
    put_pattern(mock_iaas, load=200, memory=10)
    answer = mock_iaas.put(
        "/health-patterns/tomcat",
        json={
            f: {"sampleValues": [5], "sampleDuration": 60, "mode": "continue"}
            for f in ("load-average", "memory-consumption")
        },
    )
    assert answer.status_code == 200
    deploy_nested(client)
    group = [
        nested_cluster("my-php-web", "php"),
        nested_cluster("my-php-app", "php"),
        nested_cluster("my-tomcat-app", "tomcat"),
    ]
    outside = nested_cluster("my-tomcat", "tomcat")
    app = aggregate_id(T, "application", "nested-group-app")

    def group_instances() -> int | None:
        changes = [
            e.payload.group_instances["my-web-group"]
            for e in events_of(loop_settings, app)
            if e.type == "ApplicationInstancesChanged"
        ]
        return changes[-1] if changes else None

    wait_until(
        lambda: (
            group_instances() == 2
            and len(members(loop_settings, group[2])) == 2
            and all(len(members(loop_settings, c)) >= 2 for c in group)
        ),
        timeout=120,
        message="a second web-group instance, each of its clusters at 2 members or more",
        seen=lambda: (group_instances(), {c: len(members(loop_settings, c)) for c in group}),
    )
    changed = [e.payload for e in events_of(loop_settings, app) if e.type == "ApplicationInstancesChanged"][0]
    assert changed.reason.startswith("GroupScaleUp")
    # the group's clusters started by then: on a busy machine the group can scale out before
    # its last cluster's turn in the startup order comes, and that one starts with two instances
    assert changed.clusters and set(changed.clusters) <= set(group)
    # outside the group (it scales as the group's scaling dependent, within its one instance)
    assert outside not in changed.clusters
    assert not [
        e for e in events_of(loop_settings, aggregate_id(T, "cluster", outside)) if e.type == "ClusterInstancesChanged"
    ]

    put_pattern(mock_iaas, load=5, memory=5)

    def instances_of(cid: str) -> int:
        changes = [
            e.payload.network_partitions
            for e in events_of(loop_settings, aggregate_id(T, "cluster", cid))
            if e.type == "ClusterInstancesChanged"
        ]
        return len(changes[-1])

    # each cluster of the group back to one cluster instance, within its limits (max 2)
    wait_until(
        lambda: (
            group_instances() == 1
            and all(instances_of(c) == 1 and 1 <= len(members(loop_settings, c)) <= 2 for c in group)
        ),
        timeout=60,
        message="back to one web-group instance",
    )
    down = [e.payload for e in events_of(loop_settings, app) if e.type == "ApplicationInstancesChanged"][-1]
    assert down.reason.startswith("GroupScaleDown") and sorted(down.clusters) == sorted(group)

    # the group's limits, live: groupMinInstances 2 starts a second instance of each cluster of
    # the group (load is low, it stays); groupMaxInstances 1 takes it away again
    nested = nested_application()
    web = nested["components"]["groups"][0]
    web.update(groupMinInstances=2)
    assert isinstance(update(client, nested), CommandAccepted)
    wait_until(
        lambda: (
            group_instances() == 2 and all(instances_of(c) == 2 and len(members(loop_settings, c)) >= 2 for c in group)
        ),
        timeout=40,
        message="groupMinInstances 1 -> 2: two instances of each cluster of the group",
    )
    web.update(groupMinInstances=1, groupMaxInstances=1)
    assert isinstance(update(client, nested), CommandAccepted)
    wait_until(
        lambda: (
            group_instances() == 1 and all(instances_of(c) == 1 and len(members(loop_settings, c)) <= 2 for c in group)
        ),
        timeout=40,
        message="groupMaxInstances 2 -> 1: one instance each",
    )
    reasons = [e.payload.reason for e in events_of(loop_settings, app) if e.type == "ApplicationInstancesChanged"]
    assert reasons[-2:] == ["ApplicationUpdated: group instance limits"] * 2
