"""Commands and events of live application updates, group scaling and application bursting
(docs/operators/applications.md): a deployed application changes its clusters' limits and the number of
cluster instances each one holds (one per group instance and network partition)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Message
from schemas.domain import ClusterSpec

# --- commands ----------------------------------------------------------------------------------


class SetClusterInstances(Message):
    """The application's word to a cluster: hold one cluster instance per entry, each in the
    named network partition (group instances and bursting). Idempotent: it is the target."""

    type: Literal["SetClusterInstances"] = "SetClusterInstances"
    network_partitions: list[str] = Field(min_length=1)
    reason: str = ""


class RecordClusterDemand(Message):
    """A cluster of the application needs more (or fewer) cluster instances than it holds."""

    type: Literal["RecordClusterDemand"] = "RecordClusterDemand"
    cluster_id: str
    wanted: int = Field(ge=1, description="cluster instances the cluster's requirement needs")
    instances: int = Field(ge=1, description="cluster instances it holds")


SCALING_COMMANDS = (SetClusterInstances, RecordClusterDemand)

# --- events of the application -----------------------------------------------------------------


class ApplicationLimitsUpdated(Message):
    """A live update of a deployed application: the cluster specs whose limits or scaling
    dependents changed (`running`: those already created, which are told)."""

    type: Literal["ApplicationLimitsUpdated"] = "ApplicationLimitsUpdated"
    clusters: list[ClusterSpec]
    running: list[str] = Field(default_factory=list, description="cluster ids to update now")


class ApplicationClusterDemandRecorded(Message):
    type: Literal["ApplicationClusterDemandRecorded"] = "ApplicationClusterDemandRecorded"
    cluster_id: str
    wanted: int


class ApplicationInstancesChanged(Message):
    """Group instances added or removed, or the application burst into (or left) a network
    partition: every affected cluster's new cluster instances."""

    type: Literal["ApplicationInstancesChanged"] = "ApplicationInstancesChanged"
    group_instances: dict[str, int] = Field(description="group alias -> its group instances")
    burst: int = Field(ge=1, description="bursting steps (network partition groups) in use")
    clusters: dict[str, list[str]] = Field(description="cluster id -> network partition per cluster instance")
    reason: str


# --- events of the cluster ---------------------------------------------------------------------


class ClusterInstancesChanged(Message):
    type: Literal["ClusterInstancesChanged"] = "ClusterInstancesChanged"
    network_partitions: list[str]
    reason: str = ""


class ClusterInstancesWanted(Message):
    """The cluster's requirement needs `wanted` cluster instances (it holds `instances`): its
    application adds a group instance or bursts, or takes one back."""

    type: Literal["ClusterInstancesWanted"] = "ClusterInstancesWanted"
    application_id: str
    wanted: int
    instances: int


class InstanceScaleInCounted(Message):
    """Consecutive decisions whose requirement fits in fewer cluster instances (the scale-in
    of an instance waits for `scale_down_after` of them, as a member's scale-down does)."""

    type: Literal["InstanceScaleInCounted"] = "InstanceScaleInCounted"
    requests: int


SCALING_EVENTS = (ApplicationLimitsUpdated, ApplicationClusterDemandRecorded, ApplicationInstancesChanged,
                  ClusterInstancesChanged, ClusterInstancesWanted, InstanceScaleInCounted)
