"""The process manager: which commands follow from an event or a reply.

Pure: `react(record)` returns (key, aggregate id, command) triples; the reactor in `infra`
sends them with ids derived from the record's id, so a reaction run twice (after a crash) is
deduplicated by the target aggregate.
"""

from __future__ import annotations

from pydantic import BaseModel

from actors.application import needed_by
from schemas import app_scaling as X
from schemas import commands as C
from schemas import events as E
from schemas.envelope import Envelope
from schemas.ids import aggregate_id, parse_aggregate_id
from schemas.status import ArtifactUpdated, CommandRejected, InstanceStatus, MemberFault

Reaction = tuple[str, BaseModel]
"""(target aggregate id, command or instance notification); the record key is the target's
routing key."""

AGENT_STATUS: dict[str, C.AgentStatus] = {
    "InstanceStarted": "Started",
    "InstanceActivated": "Activated",
    "InstanceMaintenanceMode": "MaintenanceMode",
    "InstanceReadyToShutdown": "ReadyToShutdown",
}


def react(record: Envelope) -> list[Reaction]:
    payload = record.payload
    tenant = record.tenant
    if isinstance(payload, E.ApplicationDeploymentRequested):
        return [
            (aggregate_id(tenant, kind, id), C.MarkDefinitionUsed(kind=kind, id=id, by=record.aggregate_id))
            for kind, id in payload.needs
        ]
    if isinstance(payload, E.ApplicationDependencyResolved):  # network partitions, Kubernetes clusters
        return [
            (aggregate_id(tenant, kind, id), C.MarkDefinitionUsed(kind=kind, id=id, by=record.aggregate_id))
            for kind, id in needed_by(payload.kind, payload.definition)
        ]
    if isinstance(payload, E.DefinitionUsed) and parse_aggregate_id(payload.by).kind == "application":
        return [
            (payload.by, C.RecordDependencyResolved(kind=payload.kind, id=payload.id, definition=payload.definition))
        ]
    if isinstance(payload, (E.ApplicationDeploymentFailed, E.ApplicationUndeployed)):
        return [
            (aggregate_id(tenant, kind, id), C.ReleaseDefinition(kind=kind, id=id, by=record.aggregate_id))
            for kind, id in payload.release
        ]
    if isinstance(payload, E.ApplicationDependencyReleased):
        return [
            (
                aggregate_id(tenant, payload.kind, payload.id),
                C.ReleaseDefinition(kind=payload.kind, id=payload.id, by=record.aggregate_id),
            )
        ]
    if isinstance(payload, E.ApplicationSignupAdded):  # the tenant's instances check out its artifacts
        return [
            (
                aggregate_id(tenant, "cluster", payload.clusters[repo["alias"]]),
                ArtifactUpdated(
                    cluster_id=payload.clusters[repo["alias"]],
                    repo_url=repo["repoUrl"],
                    repo_username=repo.get("repoUsername") or None,
                    repo_password=repo.get("repoPassword") or None,
                    tenant=payload.tenant,
                ),
            )
            for repo in payload.artifact_repositories
            if repo.get("repoUrl")
        ]
    if isinstance(payload, E.ClustersStartRequested):
        return [
            (aggregate_id(tenant, "cluster", spec.cluster_id), C.CreateCluster(spec=spec)) for spec in payload.clusters
        ]
    if isinstance(payload, E.ApplicationUndeploying):
        return [
            (aggregate_id(tenant, "cluster", cid), C.TerminateCluster(force=payload.force)) for cid in payload.clusters
        ]
    if isinstance(payload, E.GroupTerminationRequested):
        return [(aggregate_id(tenant, "cluster", cid), C.TerminateCluster(force=False)) for cid in payload.clusters]
    if isinstance(payload, E.DependentScalingRequested):
        source = parse_aggregate_id(record.aggregate_id).id
        return [
            (aggregate_id(tenant, "cluster", cid), C.ScaleAsDependent(source_cluster_id=source, factor=payload.factor))
            for cid in payload.clusters
        ]
    if isinstance(payload, (X.ApplicationLimitsUpdated, X.ApplicationInstancesChanged, X.ClusterInstancesWanted)):
        return _scaling_reactions(record)
    if isinstance(payload, E.ClusterStatusChanged):
        cluster = parse_aggregate_id(record.aggregate_id).id
        return [
            (
                aggregate_id(tenant, "application", payload.application_id),
                C.RecordClusterStatus(cluster_id=cluster, status=payload.status),
            )
        ]
    if isinstance(payload, CommandRejected) and payload.command_type == "MarkDefinitionUsed":
        used = payload.command
        by = used.get("by", "")
        if by and parse_aggregate_id(by).kind == "application":
            return [(by, C.RecordDependencyMissing(kind=used["kind"], id=used["id"], reason=payload.reason))]
    if isinstance(payload, InstanceStatus):
        return [
            (
                aggregate_id(tenant, "cluster", payload.cluster_id),
                C.ReportInstanceStatus(member_id=payload.member_id, status=AGENT_STATUS[payload.type]),
            )
        ]
    if isinstance(payload, MemberFault):
        return [
            (
                aggregate_id(tenant, "cluster", payload.cluster_id),
                C.ReportMemberFault(member_id=payload.member_id, reason=f"silent for {payload.silent_seconds:.0f}s"),
            )
        ]
    return []


def _scaling_reactions(record: Envelope) -> list[Reaction]:
    """Live limits, group instances and bursting (`actors.instances`): the application tells
    its clusters; a cluster asks its application."""
    payload, tenant = record.payload, record.tenant
    if isinstance(payload, X.ApplicationLimitsUpdated):
        return [
            (
                aggregate_id(tenant, "cluster", spec.cluster_id),
                C.UpdateClusterLimits(min=spec.min, max=spec.max, scaling_dependents=spec.scaling_dependents),
            )
            for spec in payload.clusters
            if spec.cluster_id in payload.running
        ]
    if isinstance(payload, X.ApplicationInstancesChanged):
        return [
            (aggregate_id(tenant, "cluster", cid), X.SetClusterInstances(network_partitions=nps, reason=payload.reason))
            for cid, nps in payload.clusters.items()
        ]
    assert isinstance(payload, X.ClusterInstancesWanted)
    return [
        (
            aggregate_id(tenant, "application", payload.application_id),
            X.RecordClusterDemand(
                cluster_id=parse_aggregate_id(record.aggregate_id).id,
                wanted=payload.wanted,
                instances=payload.instances,
            ),
        )
    ]
