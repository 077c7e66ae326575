"""Read-model states as the JSON beans Stratos clients read: runtime tree, cluster, member."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from actors.application import ApplicationState
from actors.cluster import ClusterState
from actors.member import MemberState
from schemas.definitions import Application, CartridgeSubscription, GroupSubscription
from schemas.domain import ApplicationStatus


def member_bean(member: MemberState, cluster_id: str) -> dict:
    return {
        "memberId": member.member_id,
        "clusterId": cluster_id,
        "status": member.status.value,
        "networkPartitionId": member.network_partition_id,
        "partitionId": member.partition_id,
        "defaultPrivateIP": member.private_ip,
        "defaultPublicIP": member.public_ip,
        "nodeId": member.node_id,
        "initTime": member.created_at.isoformat(),
        "terminating": member.termination_requested_at is not None,
        "obsolete": member.obsolete_since is not None,
    }


def cluster_bean(state: ClusterState) -> dict:
    spec = state.spec
    assert spec is not None
    return {
        "clusterId": spec.cluster_id,
        "alias": spec.alias,
        "serviceName": spec.cartridge_type,
        "applicationId": spec.application_id,
        "status": state.status.value,
        "minInstances": state.min,
        "maxInstances": state.max,
        "networkPartitionIds": list(state.cluster_instances),  # one per cluster instance
        "deploymentPolicy": spec.deployment_policy_id,
        "autoscalingPolicy": spec.autoscaling_policy_id,
        "member": [member_bean(m, spec.cluster_id) for _, m in sorted(state.members.items())],
    }


def _combined_status(statuses: list[str]) -> str:
    """A parent is Active when all its children are (Stratos 4.1's application and group lifecycle)."""
    if statuses and all(s == "Active" for s in statuses):
        return "Active"
    for status in ("Inactive", "Terminating", "Terminated"):
        if status in statuses:
            return status
    return "Created"


def application_runtime(state: ApplicationState, cluster: Callable[[str], ClusterState | None]) -> dict:
    """Application -> application instance -> group instances -> cluster instances -> members."""
    definition = Application.model_validate(state.definition)
    cluster_ids = definition.cluster_ids()
    bean = {  # type: ignore[var-annotated]
        "applicationId": definition.applicationId,
        "alias": definition.alias,
        "name": definition.name,
        "status": state.status.value,
        "applicationPolicyId": state.application_policy_id,
        "applicationInstances": [],
    }
    if state.status in (ApplicationStatus.CREATED, ApplicationStatus.DEPLOYING):
        return bean

    def cluster_instance(subscription: CartridgeSubscription) -> dict:
        cid = cluster_ids[subscription.alias]
        found = cluster(cid)
        if found is not None and found.spec is not None:
            return cluster_bean(found)
        return {
            "clusterId": cid,
            "alias": subscription.alias,
            "serviceName": subscription.type,
            "applicationId": definition.applicationId,
            "status": state.cluster_status.get(cid, "Waiting"),
            "member": [],
        }

    def group_instance(group: GroupSubscription) -> dict:
        clusters = [cluster_instance(c) for c in group.cartridges]
        groups = [group_instance(g) for g in group.groups]
        return {
            "groupId": group.name,
            "alias": group.alias,
            "instanceId": f"{group.alias}-1",
            "instanceCount": state.group_instances.get(group.alias, max(1, group.groupMinInstances)),
            "status": _combined_status([x["status"] for x in clusters + groups]),
            "clusterInstances": clusters,
            "groupInstances": groups,
        }

    clusters = [cluster_instance(c) for c in definition.components.cartridges]
    groups = [group_instance(g) for g in definition.components.groups]
    network_partitions = sorted({m["networkPartitionId"] for c in _all_clusters(clusters, groups) for m in c["member"]})
    bean["applicationInstances"] = [
        {
            "instanceId": f"{definition.applicationId}-1",
            "status": state.status.value,
            "networkPartitionIds": network_partitions,
            "clusterInstances": clusters,
            "groupInstances": groups,
        }
    ]
    return bean


def _all_clusters(clusters: list[dict], groups: list[dict]) -> Iterable[dict]:
    yield from clusters
    for group in groups:
        yield from _all_clusters(group["clusterInstances"], group["groupInstances"])
