"""Value types shared by commands and events: the member, cluster and application lifecycles of
Stratos 4.1 and the resolved specification a cluster is created from."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from schemas.base import Value


class MemberStatus(str, Enum):
    CREATED = "Created"
    INITIALIZED = "Initialized"
    STARTING = "Starting"
    ACTIVE = "Active"
    IN_MAINTENANCE = "In_Maintenance"
    READY_TO_SHUTDOWN = "ReadyToShutDown"
    SUSPENDED = "Suspended"
    TERMINATED = "Terminated"


class ClusterStatus(str, Enum):
    CREATED = "Created"
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    PATCHING = "Patching"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


class ApplicationStatus(str, Enum):
    """Status of the application definition (Created until deployed) and of its instance."""

    CREATED = "Created"
    DEPLOYING = "Deploying"
    DEPLOYED = "Deployed"
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    UNDEPLOYING = "Undeploying"


class PartitionSpec(Value):
    id: str
    network_partition_id: str
    provider: str = Field(description="the network partition's IaaS provider")
    max: int = Field(ge=0)
    properties: dict[str, str] = {}


class ForecastSpec(Value):
    """An autoscaling policy's predictive settings as a cluster holds them (seconds)."""

    mode: str = Field(description="forecast-only | forecast-and-scale")
    horizon: float = Field(gt=0)
    buffer: float = Field(ge=0)
    season: float = Field(gt=0)
    bucket: float = Field(gt=0)


class ClusterSpec(Value):
    """Everything a cluster needs, resolved from the application and its definitions when the
    application is deployed, so the cluster never reads another aggregate."""

    cluster_id: str
    application_id: str
    alias: str
    cartridge_type: str
    category: str | None = Field(None, description="the cartridge's category (load-balancer, ...)")
    group_alias: str | None = None
    min: int = Field(ge=0)
    max: int = Field(ge=1)
    autoscaling_policy_id: str
    deployment_policy_id: str
    partition_algorithm: str = "one-after-another"
    partitions: list[PartitionSpec]
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="metric name -> threshold from the autoscaling policy"
    )
    iaas: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="provider -> the cartridge's iaasProvider entry"
    )
    ports: list[dict[str, Any]] = []
    repo_url: str | None = None
    repo_username: str | None = None
    repo_password: str | None = Field(None, repr=False, description="sealed (infra/secrets.py)")
    tolerance: float = Field(0.0, ge=0, lt=1, description="the autoscaling policy's tolerance band")
    scale_down_stabilisation_seconds: float = Field(0.0, ge=0)
    scale_down_after: int = Field(4, ge=1, description="consecutive scale-down requests needed")
    forecast: ForecastSpec | None = Field(None, description="predictive scaling; None: off")
    scaling_dependents: list[str] = Field(default_factory=list, description="cluster ids")
    startup_after: list[str] = Field(default_factory=list, description="cluster ids started first")
    log_file_paths: list[str] = Field(default_factory=list, description="files the agent ships to the logs topic")
    instances: list[str] = Field(
        default_factory=list,
        description="network partition of each cluster "
        "instance at creation (group instances, bursting); empty: one, in the first",
    )
