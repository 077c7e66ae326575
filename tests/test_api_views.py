"""The runtime tree the API answers, from aggregate states (pure: no broker)."""

from __future__ import annotations

from datetime import UTC, datetime

from actors.application import ApplicationState
from actors.cluster import ClusterState
from actors.member import MemberState
from infra.api.views import application_runtime
from schemas.definitions import Application
from schemas.domain import ApplicationStatus, ClusterSpec, ClusterStatus, MemberStatus, PartitionSpec
from tests.conftest import sample

AT = datetime(2024, 1, 1, tzinfo=UTC)
APP = "nested-group-app"


def app_state(status: ApplicationStatus) -> ApplicationState:
    body = Application.model_validate(sample("application-nested-group.json")).model_dump(mode="json")
    return ApplicationState(
        aggregate_id=f"carbon.super/application/{APP}",
        kind="application",
        exists=True,
        definition=body,
        status=status,
        application_policy_id="application-policy-1",
    )


def active_cluster(cluster_id: str, alias: str, members: int) -> ClusterState:
    spec = ClusterSpec(
        cluster_id=cluster_id,
        application_id=APP,
        alias=alias,
        cartridge_type="php",
        min=1,
        max=2,
        autoscaling_policy_id="a",
        deployment_policy_id="d",
        partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=2)],
    )
    found = {
        f"{alias}.{n}": MemberState(
            member_id=f"{alias}.{n}",
            partition_id="p1",
            network_partition_id="np1",
            status=MemberStatus.ACTIVE,
            private_ip=f"10.0.0.{n}",
            created_at=AT,
            status_since=AT,
        )
        for n in range(members)
    }
    return ClusterState(
        aggregate_id=f"carbon.super/cluster/{cluster_id}",
        exists=True,
        spec=spec,
        status=ClusterStatus.ACTIVE,
        min=1,
        max=2,
        members=found,
    )


def test_an_undeployed_application_has_no_instances():
    tree = application_runtime(app_state(ApplicationStatus.CREATED), lambda cid: None)
    assert tree["status"] == "Created" and tree["applicationInstances"] == []


def test_the_tree_nests_groups_as_the_definition_does_and_a_group_is_active_when_all_children_are():
    php_web = f"{APP}.my-php-web.php.domain"
    clusters = {php_web: active_cluster(php_web, "my-php-web", 2)}
    tree = application_runtime(app_state(ApplicationStatus.DEPLOYED), clusters.get)
    instance = tree["applicationInstances"][0]
    assert [c["alias"] for c in instance["clusterInstances"]] == ["my-tomcat"]
    assert instance["clusterInstances"][0]["status"] == "Waiting"  # started after the group
    web = instance["groupInstances"][0]
    assert (web["alias"], web["groupId"]) == ("my-web-group", "web-group")
    assert web["clusterInstances"][0]["status"] == "Active"
    assert [m["defaultPrivateIP"] for m in web["clusterInstances"][0]["member"]] == ["10.0.0.0", "10.0.0.1"]
    nested = web["groupInstances"][0]
    assert nested["alias"] == "my-app-group"
    assert [c["alias"] for c in nested["clusterInstances"]] == ["my-tomcat-app", "my-php-app"]
    assert web["status"] == "Created"  # its nested group's clusters are not active yet
    assert instance["networkPartitionIds"] == ["np1"]
