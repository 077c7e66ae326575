"""Domain events: facts appended to `stratos.events` by the aggregate that owns them.

Member events carry the member id as aggregate id but the cluster id as record key, so a
cluster and its members share a partition and a node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import Field, create_model

from schemas.app_scaling import SCALING_EVENTS
from schemas.base import Message
from schemas.commands import _literal, _pascal
from schemas.definitions import DEFINITION_KINDS
from schemas.domain import ClusterSpec
from schemas.metadata import METADATA_EVENTS, MetadataCleared, MetadataPropertyRemoved, MetadataPropertySet  # noqa: F401


def _definition_events() -> list[type[Message]]:
    made: list[type[Message]] = []
    for kind, model in DEFINITION_KINDS.items():
        name = _pascal(kind)
        for past in ("Added", "Updated"):
            made.append(
                create_model(
                    f"{name}{past}",
                    __base__=Message,
                    __module__=__name__,
                    type=(_literal(f"{name}{past}"), f"{name}{past}"),
                    definition=(model, ...),
                )
            )
        made.append(
            create_model(
                f"{name}Removed",
                __base__=Message,
                __module__=__name__,
                type=(_literal(f"{name}Removed"), f"{name}Removed"),
                id=(str, ...),
            )
        )
    return made


DEFINITION_EVENTS = _definition_events()
globals().update({e.__name__: e for e in DEFINITION_EVENTS})


class DefinitionUsed(Message):
    type: Literal["DefinitionUsed"] = "DefinitionUsed"
    kind: str
    id: str
    by: str
    definition: dict[str, Any] = Field(description="the body the user depends on, as used")


class DefinitionReleased(Message):
    type: Literal["DefinitionReleased"] = "DefinitionReleased"
    kind: str
    id: str
    by: str


# --- application -------------------------------------------------------------------------


class ApplicationDeploymentRequested(Message):
    type: Literal["ApplicationDeploymentRequested"] = "ApplicationDeploymentRequested"
    application_policy_id: str
    needs: list[tuple[str, str]] = Field(description="(kind, id) of every definition it uses")


class ApplicationDependencyResolved(Message):
    type: Literal["ApplicationDependencyResolved"] = "ApplicationDependencyResolved"
    kind: str
    id: str
    definition: dict[str, Any]


class ApplicationDependencyReleased(Message):
    """A definition confirmed its use after the deployment had failed or ended: give it back."""

    type: Literal["ApplicationDependencyReleased"] = "ApplicationDependencyReleased"
    kind: str
    id: str


class ApplicationDeploymentFailed(Message):
    type: Literal["ApplicationDeploymentFailed"] = "ApplicationDeploymentFailed"
    reason: str
    release: list[tuple[str, str]] = Field(description="definitions to release again")


class ApplicationDeployed(Message):
    type: Literal["ApplicationDeployed"] = "ApplicationDeployed"
    application_policy_id: str
    clusters: list[ClusterSpec]


class ClustersStartRequested(Message):
    """Clusters whose startup-order predecessors are Active (or that have none): create them."""

    type: Literal["ClustersStartRequested"] = "ClustersStartRequested"
    clusters: list[ClusterSpec]


class ApplicationStatusChanged(Message):
    type: Literal["ApplicationStatusChanged"] = "ApplicationStatusChanged"
    status: str


class ApplicationClusterStatusChanged(Message):
    type: Literal["ApplicationClusterStatusChanged"] = "ApplicationClusterStatusChanged"
    cluster_id: str
    status: str


class GroupTerminationRequested(Message):
    """A cluster went Inactive inside a group whose terminationBehaviour is terminate-all (every
    cluster of the group goes) or terminate-dependents (the clusters started after it go)."""

    type: Literal["GroupTerminationRequested"] = "GroupTerminationRequested"
    cluster_id: str = Field(description="the cluster that went Inactive")
    behaviour: str
    clusters: list[str] = Field(description="cluster ids to terminate")


class ApplicationUndeploying(Message):
    type: Literal["ApplicationUndeploying"] = "ApplicationUndeploying"
    force: bool
    clusters: list[str]


class ApplicationUndeployed(Message):
    type: Literal["ApplicationUndeployed"] = "ApplicationUndeployed"
    release: list[tuple[str, str]]


class ApplicationSignupAdded(Message):
    """`clusters` maps each repository's alias to the cluster whose instances check it out."""

    type: Literal["ApplicationSignupAdded"] = "ApplicationSignupAdded"
    tenant: str
    artifact_repositories: list[dict[str, Any]]
    clusters: dict[str, str]


class ApplicationSignupRemoved(Message):
    type: Literal["ApplicationSignupRemoved"] = "ApplicationSignupRemoved"
    tenant: str


class DomainMappingsAdded(Message):
    """Each mapping carries the cluster it routes to (`clusterId`), for load balancers."""

    type: Literal["DomainMappingsAdded"] = "DomainMappingsAdded"
    tenant: str
    mappings: list[dict[str, Any]]


class DomainMappingRemoved(Message):
    type: Literal["DomainMappingRemoved"] = "DomainMappingRemoved"
    tenant: str
    domain_name: str
    cluster_id: str


# --- cluster -------------------------------------------------------------------------------


class ClusterCreated(Message):
    type: Literal["ClusterCreated"] = "ClusterCreated"
    spec: ClusterSpec


class ClusterStatusChanged(Message):
    type: Literal["ClusterStatusChanged"] = "ClusterStatusChanged"
    application_id: str
    status: str
    reason: str = ""


class ClusterLimitsUpdated(Message):
    """Min and max members per cluster instance."""

    type: Literal["ClusterLimitsUpdated"] = "ClusterLimitsUpdated"
    min: int
    max: int
    scaling_dependents: list[str] | None = None


class ScalingDecided(Message):
    """What the cluster made of a ScaleCluster request: explainable in replay with `why`."""

    type: Literal["ScalingDecided"] = "ScalingDecided"
    network_partition_id: str | None = None
    required: int
    active: int
    pending: int
    spawn: int
    terminate: int
    scale_down_requests: int = Field(description="consecutive scale-down requests so far")
    reason: str
    metric: str | None = None
    figures: dict[str, float] = {}


class DependentScalingRequested(Message):
    """The cluster's own requirement changed its factor (required / min): the clusters of its
    `scalingDependents` group are asked to scale by the same factor."""

    type: Literal["DependentScalingRequested"] = "DependentScalingRequested"
    factor: float
    required: int
    min: int
    clusters: list[str] = Field(description="cluster ids of the dependents")


class DependentFloorChanged(Message):
    """A dependent's request: this cluster keeps at least `required` members while it holds."""

    type: Literal["DependentFloorChanged"] = "DependentFloorChanged"
    source_cluster_id: str
    factor: float
    required: int


class ClusterTerminating(Message):
    type: Literal["ClusterTerminating"] = "ClusterTerminating"
    application_id: str
    force: bool


class ClusterTerminated(Message):
    type: Literal["ClusterTerminated"] = "ClusterTerminated"
    application_id: str


# --- member --------------------------------------------------------------------------------


class MemberSpawnRequested(Message):
    """The cloud controller starts a node named after `member_id` (its idempotency key)."""

    type: Literal["MemberSpawnRequested"] = "MemberSpawnRequested"
    member_id: str
    cluster_id: str
    application_id: str
    cartridge_type: str
    category: str | None = None
    network_partition_id: str
    partition_id: str
    provider: str
    iaas: dict[str, Any] = {}
    ports: list[dict[str, Any]] = []
    repo_url: str | None = None
    reason: str = ""


class MemberInitialized(Message):
    type: Literal["MemberInitialized"] = "MemberInitialized"
    member_id: str
    cluster_id: str
    node_id: str
    private_ip: str | None = None
    public_ip: str | None = None
    ports: dict[str, int] = {}


class MemberStartFailed(Message):
    type: Literal["MemberStartFailed"] = "MemberStartFailed"
    member_id: str
    cluster_id: str
    reason: str
    attempt: int


class MemberStarting(Message):
    type: Literal["MemberStarting"] = "MemberStarting"
    member_id: str
    cluster_id: str


class MemberActivated(Message):
    type: Literal["MemberActivated"] = "MemberActivated"
    member_id: str
    cluster_id: str


class MemberInMaintenance(Message):
    type: Literal["MemberInMaintenance"] = "MemberInMaintenance"
    member_id: str
    cluster_id: str


class MemberReadyToShutdown(Message):
    type: Literal["MemberReadyToShutdown"] = "MemberReadyToShutdown"
    member_id: str
    cluster_id: str


class MemberTerminationRequested(Message):
    """Graceful: the instance is asked to clean up first; otherwise the node is destroyed."""

    type: Literal["MemberTerminationRequested"] = "MemberTerminationRequested"
    member_id: str
    cluster_id: str
    graceful: bool
    reason: str


class MemberObsoleted(Message):
    type: Literal["MemberObsoleted"] = "MemberObsoleted"
    member_id: str
    cluster_id: str
    reason: str


class MemberTerminated(Message):
    type: Literal["MemberTerminated"] = "MemberTerminated"
    member_id: str
    cluster_id: str
    reason: str = ""


MEMBER_EVENTS = (
    MemberSpawnRequested,
    MemberInitialized,
    MemberStartFailed,
    MemberStarting,
    MemberActivated,
    MemberInMaintenance,
    MemberReadyToShutdown,
    MemberTerminationRequested,
    MemberObsoleted,
    MemberTerminated,
)

_EVENT_TYPES: tuple[type[Message], ...] = (
    *DEFINITION_EVENTS,
    DefinitionUsed,
    DefinitionReleased,
    ApplicationDeploymentRequested,
    ApplicationDependencyResolved,
    ApplicationDependencyReleased,
    ApplicationDeploymentFailed,
    ApplicationDeployed,
    ClustersStartRequested,
    ApplicationStatusChanged,
    ApplicationClusterStatusChanged,
    GroupTerminationRequested,
    ApplicationUndeploying,
    ApplicationUndeployed,
    ApplicationSignupAdded,
    ApplicationSignupRemoved,
    DomainMappingsAdded,
    DomainMappingRemoved,
    ClusterCreated,
    ClusterStatusChanged,
    ClusterLimitsUpdated,
    ScalingDecided,
    DependentScalingRequested,
    DependentFloorChanged,
    ClusterTerminating,
    ClusterTerminated,
    *MEMBER_EVENTS,
    *METADATA_EVENTS,
    *SCALING_EVENTS,
)
if TYPE_CHECKING:
    # a union built at import time (the definition events come from DEFINITION_KINDS): the type
    # checker cannot see its members, so to it any event; code narrows with isinstance
    Event: TypeAlias = Any
else:
    Event = Annotated[Union[_EVENT_TYPES], Field(discriminator="type")]  # noqa: UP007
