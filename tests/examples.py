"""One example of every record payload type, for round-trip tests and benchmarks."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path

from schemas import app_scaling as AS
from schemas import commands as C
from schemas import events as E
from schemas import metadata as M
from schemas import status as S
from schemas.definitions import DEFINITION_KINDS, ApplicationSignup, DomainMappings
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import (
    Claim,
    CommandRecord,
    Commit,
    DeadLetter,
    DeadLetterRecord,
    EventRecord,
    HealthRecord,
    InstanceStatusRecord,
    LogRecord,
    NotifierRecord,
    ReplyRecord,
    Snapshot,
    SnapshotRecord,
    TopologyDomain,
    TopologyEntry,
    TopologyMember,
    TopologyPort,
    TopologyRecord,
)

SAMPLES = Path(__file__).parent / "samples" / "stratos"
SAMPLE_OF_KIND = {
    "cartridge": "php.json",
    "cartridgeGroup": "cartridge-group-nested.json",
    "networkPartition": "network-partition.json",
    "deploymentPolicy": "deployment-policy.json",
    "autoscalingPolicy": "autoscaling-policy.json",
    "applicationPolicy": "application-policy.json",
    "application": "application-single-cartridge.json",
    "kubernetesCluster": "kubernetes-cluster.json",
    "tenant": "tenant.json",
    "user": "user.json",
}


def definition(kind: str):
    return DEFINITION_KINDS[kind].model_validate(json.loads((SAMPLES / SAMPLE_OF_KIND[kind]).read_text()))


SPEC = ClusterSpec(
    cluster_id="app.php1.php.domain",
    application_id="app",
    alias="php1",
    cartridge_type="php",
    min=2,
    max=6,
    autoscaling_policy_id="as",
    deployment_policy_id="dp",
    partition_algorithm="round-robin",
    partitions=[
        PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=3),
        PartitionSpec(id="p2", network_partition_id="np1", provider="mock", max=3),
    ],
    thresholds={"memory_consumption": 30.0, "load_average": 25.0},
    iaas={"mock": {"type": "mock"}},
    ports=[{"name": "http", "port": 80}],
    repo_url="https://git/x",
)
MEMBER = dict(member_id="php1.abc", cluster_id=SPEC.cluster_id)

_EXPLICIT = [
    C.MarkDefinitionUsed(kind="cartridge", id="php", by="t/application/app"),
    C.ReleaseDefinition(kind="cartridge", id="php", by="t/application/app"),
    C.DeployApplication(application_policy_id="ap"),
    C.RecordDependencyResolved(kind="cartridge", id="php", definition={"type": "php"}),
    C.RecordDependencyMissing(kind="cartridge", id="php", reason="not found"),
    C.UndeployApplication(force=True),
    C.RecordClusterStatus(cluster_id=SPEC.cluster_id, status="Active"),
    C.CreateCluster(spec=SPEC),
    C.ScaleCluster(
        network_partition_id="np1",
        required=4,
        metric="memory_consumption",
        reason="AboveMax",
        figures={"memory_consumption.average": 60.0},
        member_load={"php1.abc": 42.5},
    ),
    C.UpdateClusterLimits(min=1, max=3),
    C.TerminateCluster(force=False),
    C.CheckTimeouts(),
    C.ReportNodeCreated(member_id="php1.abc", node_id="n1", private_ip="10.0.0.1", public_ip="1.2.3.4"),
    C.ReportNodeStartFailed(member_id="php1.abc", reason="quota", attempt=2, final=False),
    C.ReportNodeDestroyed(member_id="php1.abc", reason="gone"),
    C.ReportInstanceStatus(member_id="php1.abc", status="Activated"),
    C.ReportMemberFault(member_id="php1.abc", reason="silent"),
    C.TerminateMember(member_id="php1.abc", graceful=True),
    C.AddApplicationSignup(
        tenant="t.org",
        signup=ApplicationSignup.model_validate(json.loads((SAMPLES / "application-signup.json").read_text())),
    ),
    C.RemoveApplicationSignup(tenant="t.org"),
    C.AddDomainMappings(
        tenant="t.org",
        mappings=DomainMappings.model_validate(json.loads((SAMPLES / "domain-mappings.json").read_text())),
    ),
    C.RemoveDomainMappings(tenant="t.org", domain_names=["abc.com"]),
    E.ApplicationSignupAdded(
        tenant="t.org",
        clusters={"php1": SPEC.cluster_id},
        artifact_repositories=[{"alias": "php1", "repoUrl": "https://git/x"}],
    ),
    E.ApplicationSignupRemoved(tenant="t.org"),
    E.DomainMappingsAdded(
        tenant="t.org", mappings=[{"cartridgeAlias": "php1", "domainName": "abc.com", "clusterId": SPEC.cluster_id}]
    ),
    E.DomainMappingRemoved(tenant="t.org", domain_name="abc.com", cluster_id=SPEC.cluster_id),
    C.ScaleAsDependent(source_cluster_id=SPEC.cluster_id, factor=2.0),
    E.GroupTerminationRequested(cluster_id=SPEC.cluster_id, behaviour="terminate-all", clusters=[SPEC.cluster_id]),
    E.DependentScalingRequested(factor=2.0, required=4, min=2, clusters=["app.tomcat1.tomcat.domain"]),
    E.DependentFloorChanged(source_cluster_id=SPEC.cluster_id, factor=2.0, required=4),
    E.DefinitionUsed(kind="cartridge", id="php", by="t/application/app", definition={"type": "php"}),
    E.DefinitionReleased(kind="cartridge", id="php", by="t/application/app"),
    E.ApplicationDeploymentRequested(application_policy_id="ap", needs=[("cartridge", "php")]),
    E.ApplicationDependencyResolved(kind="cartridge", id="php", definition={"type": "php"}),
    E.ApplicationDeploymentFailed(reason="x", release=[("cartridge", "php")]),
    E.ApplicationDependencyReleased(kind="cartridge", id="php"),
    E.ApplicationDeployed(application_policy_id="ap", clusters=[SPEC]),
    E.ClustersStartRequested(clusters=[SPEC]),
    E.ApplicationStatusChanged(status="Active"),
    E.ApplicationClusterStatusChanged(cluster_id=SPEC.cluster_id, status="Active"),
    E.ApplicationUndeploying(force=False, clusters=[SPEC.cluster_id]),
    E.ApplicationUndeployed(release=[("cartridge", "php")]),
    E.ClusterCreated(spec=SPEC),
    E.ClusterStatusChanged(application_id="app", status="Active"),
    E.ClusterLimitsUpdated(min=1, max=4),
    E.ScalingDecided(
        required=4,
        active=2,
        pending=0,
        spawn=2,
        terminate=0,
        scale_down_requests=0,
        reason="ScaleUp",
        metric="memory_consumption",
        figures={"x": 1.5},
    ),
    E.ClusterTerminating(application_id="app", force=False),
    E.ClusterTerminated(application_id="app"),
    E.MemberSpawnRequested(
        **MEMBER,
        application_id="app",
        cartridge_type="php",
        network_partition_id="np1",
        partition_id="p1",
        provider="mock",
        iaas={"type": "mock"},
        reason="MinRule",
    ),
    E.MemberInitialized(**MEMBER, node_id="n1", private_ip="10.0.0.1"),
    E.MemberStartFailed(**MEMBER, reason="quota", attempt=1),
    E.MemberStarting(**MEMBER),
    E.MemberActivated(**MEMBER),
    E.MemberInMaintenance(**MEMBER),
    E.MemberReadyToShutdown(**MEMBER),
    E.MemberTerminationRequested(**MEMBER, graceful=True, reason="ScaleDown"),
    E.MemberObsoleted(**MEMBER, reason="fault"),
    E.MemberTerminated(**MEMBER, reason="done"),
    S.CommandAccepted(command_id="c1", command_type="AddCartridge", event_types=["CartridgeAdded"]),
    S.CommandRejected(command_id="c1", command_type="AddCartridge", reason="exists", field="php", code=409),
    S.HealthStat(
        cluster_id=SPEC.cluster_id,
        network_partition_id="np1",
        member_id="php1.abc",
        metric="load_average",
        value=42.0,
        timestamp=1.7e9,
    ),
    S.MemberHealth(
        cluster_id=SPEC.cluster_id,
        network_partition_id="np1",
        member_id="php1.abc",
        metrics={"load_average": 42.0, "memory_consumption": 61.5},
        timestamp=1.7e9,
    ),
    S.MemberFault(cluster_id=SPEC.cluster_id, member_id="php1.abc", silent_seconds=61),
    S.InstanceStatus(type="InstanceActivated", **MEMBER, network_partition_id="np1", revision="abc"),
    S.ArtifactUpdated(cluster_id=SPEC.cluster_id, repo_url="https://git/x", commit="abc"),
    S.InstanceCleanupMember(**MEMBER),
    S.InstanceCleanupCluster(cluster_id=SPEC.cluster_id),
    Snapshot(aggregate_type="cluster", events_partition=0, events_offset=10, state={"a": 1}, claim="k1"),
    Commit(
        command_type="CreateCluster",
        outcome="accepted",
        events=[E.ClusterCreated(spec=SPEC)],
        claim="k1",
        writer="node-a",
    ),
    Commit(command_type="AddCartridge", outcome="rejected", reason="exists", field="php", code=409),
    Claim(partition=0, writer="node-a", generation=3),
    TopologyEntry(
        cluster_id=SPEC.cluster_id,
        application_id="app",
        cartridge_type="php",
        status="Active",
        members=[TopologyMember(member_id="php1.abc", status="Active", network_partition_id="np1", partition_id="p1")],
        port_mappings=[TopologyPort(protocol="http", port=80, proxy_port=8280)],
        domain_mappings=[TopologyDomain(domain_name="abc.com")],
    ),
    DeadLetter(source_topic="x", source_partition=0, source_offset=1, reason="bad", original="{"),
    AS.SetClusterInstances(network_partitions=["np1", "np2"], reason="Burst"),
    AS.ClusterInstancesChanged(network_partitions=["np1", "np2"], reason="Burst"),
    AS.RecordClusterDemand(cluster_id=SPEC.cluster_id, wanted=7, instances=1),
    AS.ApplicationClusterDemandRecorded(cluster_id=SPEC.cluster_id, wanted=7),
    AS.ClusterInstancesWanted(application_id="app", wanted=7, instances=1),
    AS.ApplicationInstancesChanged(
        group_instances={"web": 2}, burst=1, clusters={SPEC.cluster_id: ["np1", "np2"]}, reason="Burst"
    ),
    AS.ApplicationLimitsUpdated(clusters=[SPEC], running=[SPEC.cluster_id]),
    AS.InstanceScaleInCounted(requests=2),
    M.AddMetadataProperties(
        alias="php1", properties=[M.MetadataProperty(key="host", values=["10.0.0.1"])], by="php1.abc"
    ),
    M.RemoveMetadataProperty(alias="php1", key="host", value="10.0.0.1"),
    M.RemoveMetadataProperties(alias="php1"),
    M.MetadataPropertySet(alias="php1", key="host", values=["10.0.0.1"], by="php1.abc"),
    M.MetadataPropertyRemoved(alias="php1", key="host"),
    M.MetadataCleared(alias=None, everything=True),
]


def _definition_examples():
    made = []
    for kind in DEFINITION_KINDS:
        body = definition(kind)
        name = kind[0].upper() + kind[1:]
        made += [
            getattr(C, f"Add{name}")(definition=body),
            getattr(C, f"Update{name}")(definition=body),
            getattr(C, f"Remove{name}")(id=body.definition_id),
            getattr(E, f"{name}Added")(definition=body),
            getattr(E, f"{name}Updated")(definition=body),
            getattr(E, f"{name}Removed")(id=body.definition_id),
        ]
    return made


EXAMPLES = _definition_examples() + _EXPLICIT


def union_members(record_type) -> set[type]:
    """Every payload class a record type accepts."""
    annotation = record_type.model_fields["payload"].annotation
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # Union[A, B] or A | B
        return set(typing.get_args(annotation))
    return {annotation}


RECORD_TYPES = [
    CommandRecord,
    EventRecord,
    LogRecord,
    ReplyRecord,
    HealthRecord,
    InstanceStatusRecord,
    NotifierRecord,
    SnapshotRecord,
    TopologyRecord,
    DeadLetterRecord,
]
