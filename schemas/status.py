"""Records from outside the aggregates: replies to commands, health statistics, the cartridge
agent's instance status and the instance notifier (docs/clients.md lists who writes each)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from schemas.base import Message


class CommandAccepted(Message):
    type: Literal["CommandAccepted"] = "CommandAccepted"
    command_id: str
    command_type: str
    event_types: list[str] = []
    duplicate: bool = Field(False, description="the command had been handled before: no-op")


class CommandRejected(Message):
    type: Literal["CommandRejected"] = "CommandRejected"
    command_id: str
    command_type: str
    reason: str
    field: str | None = Field(None, description="the field or id the rejection is about")
    code: int = Field(400, description="HTTP-like code: 400 invalid or in use, 404, 409")
    command: dict[str, Any] = Field(default_factory=dict, description="the rejected command's payload")
    duplicate: bool = Field(False, description="the command had been rejected before: answered again, no-op")


Reply = Annotated[CommandAccepted | CommandRejected, Field(discriminator="type")]

HealthMetric = Literal["load_average", "memory_consumption", "requests_in_flight"]
MemberMetric = Literal["load_average", "memory_consumption"]


class HealthStat(Message):
    """One sample: per member (load, memory) or per cluster from the load balancer (requests)."""

    type: Literal["HealthStat"] = "HealthStat"
    cluster_id: str = Field(min_length=1)
    network_partition_id: str = Field(min_length=1)
    cluster_instance_id: str | None = None
    member_id: str | None = None
    metric: HealthMetric
    value: float = Field(ge=0)
    queued: float | None = Field(
        None,
        ge=0,
        description="requests_in_flight from a load balancer: requests queued beside those in flight (HAProxy's qcur)",
    )
    timestamp: float = Field(gt=0, description="epoch seconds when measured")

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value


class MemberHealth(Message):
    """One member's samples of one publish, every metric measured at one instant in one record:
    the health worker's cost is mostly per record (fetch, decode, signature), so a member's
    publish costs one record, not one per metric. ``HealthStat`` is still read."""

    type: Literal["MemberHealth"] = "MemberHealth"
    cluster_id: str = Field(min_length=1)
    network_partition_id: str = Field(min_length=1)
    cluster_instance_id: str | None = None
    member_id: str = Field(min_length=1)
    metrics: dict[MemberMetric, Annotated[float, Field(ge=0)]] = Field(min_length=1)
    timestamp: float = Field(gt=0, description="epoch seconds when measured")

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        for metric, value in metrics.items():
            if not math.isfinite(value):
                raise ValueError(f"{metric} must be a finite number")
        return metrics


class MemberFault(Message):
    type: Literal["MemberFault"] = "MemberFault"
    cluster_id: str
    member_id: str
    silent_seconds: float


Health = Annotated[HealthStat | MemberHealth | MemberFault, Field(discriminator="type")]


class InstanceStatus(Message):
    """What a cartridge agent publishes on `stratos.instance-status`."""

    type: Literal["InstanceStarted", "InstanceActivated", "InstanceMaintenanceMode", "InstanceReadyToShutdown"]
    member_id: str
    cluster_id: str
    network_partition_id: str | None = None
    revision: str | None = Field(None, description="artifact revision checked out, if any")


class ArtifactUpdated(Message):
    type: Literal["ArtifactUpdated"] = "ArtifactUpdated"
    cluster_id: str
    repo_url: str
    repo_username: str | None = None
    repo_password: str | None = Field(None, repr=False)
    commit: str | None = None
    tenant: str | None = Field(
        None, description="the signed-up tenant whose artifacts these are (multi-tenant applications)"
    )


class InstanceCleanupMember(Message):
    type: Literal["InstanceCleanupMember"] = "InstanceCleanupMember"
    member_id: str
    cluster_id: str


class InstanceCleanupCluster(Message):
    type: Literal["InstanceCleanupCluster"] = "InstanceCleanupCluster"
    cluster_id: str


Notification = Annotated[
    ArtifactUpdated | InstanceCleanupMember | InstanceCleanupCluster,
    Field(discriminator="type"),
]
