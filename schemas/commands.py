"""Commands: requests addressed to one aggregate, carried on `stratos.commands`.

Facts from the outside world (a node was created, an agent said it is active, a window
crossed a threshold) are commands too: only the aggregate's owner turns them into events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union, cast

from pydantic import Field, create_model

from schemas.app_scaling import SCALING_COMMANDS
from schemas.base import Message
from schemas.definitions import DEFINITION_KINDS, ApplicationSignup, DomainMappings
from schemas.domain import ClusterSpec
from schemas.metadata import METADATA_COMMANDS, AddMetadataProperties, RemoveMetadataProperties, RemoveMetadataProperty  # noqa: F401

AgentStatus = Literal["Started", "Activated", "MaintenanceMode", "ReadyToShutdown"]
"""What a cartridge agent says of its instance (ReportInstanceStatus)."""


def _literal(value: str) -> Any:
    """``Literal[value]`` for a value made at import time (which a type checker cannot follow)."""
    return cast(Any, Literal)[value]


def _pascal(kind: str) -> str:
    return kind[0].upper() + kind[1:]


def _definition_commands() -> list[type[Message]]:
    """Add / Update / Remove for every definition kind, named as Stratos's verbs."""
    made: list[type[Message]] = []
    for kind, model in DEFINITION_KINDS.items():
        name = _pascal(kind)
        for verb, body in (("Add", model), ("Update", model)):
            note: dict[str, Any] = (
                {"note": (str | None, Field(None, max_length=500, description="why (e.g. the tuning run behind it)"))}
                if verb == "Update"
                else {}
            )
            made.append(
                create_model(
                    f"{verb}{name}",
                    __base__=Message,
                    __module__=__name__,
                    type=(_literal(f"{verb}{name}"), f"{verb}{name}"),
                    definition=(body, ...),
                    **note,
                )
            )
        made.append(
            create_model(
                f"Remove{name}",
                __base__=Message,
                __module__=__name__,
                type=(_literal(f"Remove{name}"), f"Remove{name}"),
                id=(str, Field(min_length=1)),
            )
        )
    return made


DEFINITION_COMMANDS = _definition_commands()
globals().update({c.__name__: c for c in DEFINITION_COMMANDS})


class MarkDefinitionUsed(Message):
    """Ask a definition to record that `by` uses it (it then cannot be removed)."""

    type: Literal["MarkDefinitionUsed"] = "MarkDefinitionUsed"
    kind: str
    id: str
    by: str


class ReleaseDefinition(Message):
    type: Literal["ReleaseDefinition"] = "ReleaseDefinition"
    kind: str
    id: str
    by: str


# --- application -------------------------------------------------------------------------


class DeployApplication(Message):
    type: Literal["DeployApplication"] = "DeployApplication"
    application_policy_id: str = Field(min_length=1)


class RecordDependencyResolved(Message):
    """A definition the deployment needs has confirmed it is used (and sent its body)."""

    type: Literal["RecordDependencyResolved"] = "RecordDependencyResolved"
    kind: str
    id: str
    definition: dict[str, Any]


class RecordDependencyMissing(Message):
    type: Literal["RecordDependencyMissing"] = "RecordDependencyMissing"
    kind: str
    id: str
    reason: str


class UndeployApplication(Message):
    type: Literal["UndeployApplication"] = "UndeployApplication"
    force: bool = False


class RecordClusterStatus(Message):
    """A cluster of the application changed status (drives application Active/Inactive)."""

    type: Literal["RecordClusterStatus"] = "RecordClusterStatus"
    cluster_id: str
    status: str


class AddApplicationSignup(Message):
    """`tenant` signs up for a multi-tenant application with its own artifact repositories."""

    type: Literal["AddApplicationSignup"] = "AddApplicationSignup"
    tenant: str = Field(min_length=1)
    signup: ApplicationSignup


class RemoveApplicationSignup(Message):
    """Ends `tenant`'s sign-up, and with it the tenant's domain mappings."""

    type: Literal["RemoveApplicationSignup"] = "RemoveApplicationSignup"
    tenant: str = Field(min_length=1)


class AddDomainMappings(Message):
    type: Literal["AddDomainMappings"] = "AddDomainMappings"
    tenant: str = Field(min_length=1)
    mappings: DomainMappings


class RemoveDomainMappings(Message):
    type: Literal["RemoveDomainMappings"] = "RemoveDomainMappings"
    tenant: str = Field(min_length=1)
    domain_names: list[str] = Field(min_length=1)


# --- cluster -------------------------------------------------------------------------------


class CreateCluster(Message):
    type: Literal["CreateCluster"] = "CreateCluster"
    spec: ClusterSpec


class ScaleCluster(Message):
    """The autoscaler's verdict on a window: the count it requires and why."""

    type: Literal["ScaleCluster"] = "ScaleCluster"
    network_partition_id: str | None = None
    required: int = Field(ge=0)
    metric: str | None = None
    reason: str = ""
    figures: dict[str, float] = {}
    member_load: dict[str, float] = Field(
        default_factory=dict, description="member id -> (predicted load + memory) / 2"
    )


class ScaleAsDependent(Message):
    """A cluster of the same `scalingDependents` group scaled: keep at least `factor` times
    this cluster's min (Stratos 4.1's dependent scaling; docs/operators/autoscaler.md)."""

    type: Literal["ScaleAsDependent"] = "ScaleAsDependent"
    source_cluster_id: str
    factor: float = Field(ge=0)


class UpdateClusterLimits(Message):
    """Min and max members per cluster instance (a live application update, or an operator)."""

    type: Literal["UpdateClusterLimits"] = "UpdateClusterLimits"
    min: int = Field(ge=0)
    max: int = Field(ge=1)
    scaling_dependents: list[str] | None = Field(None, description="cluster ids; None: unchanged")


class TerminateCluster(Message):
    type: Literal["TerminateCluster"] = "TerminateCluster"
    force: bool = False


class CheckTimeouts(Message):
    """Timer tick turned into a logged command: pending / termination / obsolete timeouts."""

    type: Literal["CheckTimeouts"] = "CheckTimeouts"


# --- member (key = cluster id, aggregate id = member id) -----------------------------------


class ReportNodeCreated(Message):
    type: Literal["ReportNodeCreated"] = "ReportNodeCreated"
    member_id: str
    node_id: str
    private_ip: str | None = None
    public_ip: str | None = None
    ports: dict[str, int] = Field(
        default_factory=dict,
        description="protocol -> the port the node listens on, when it is not the cartridge's (mock process mode)",
    )


class ReportNodeStartFailed(Message):
    type: Literal["ReportNodeStartFailed"] = "ReportNodeStartFailed"
    member_id: str
    reason: str
    attempt: int = 1
    final: bool = False


class ReportNodeDestroyed(Message):
    type: Literal["ReportNodeDestroyed"] = "ReportNodeDestroyed"
    member_id: str
    reason: str = ""


class ReportInstanceStatus(Message):
    """The cartridge agent's word: Started, Activated, MaintenanceMode, ReadyToShutdown."""

    type: Literal["ReportInstanceStatus"] = "ReportInstanceStatus"
    member_id: str
    status: AgentStatus


class ReportMemberFault(Message):
    type: Literal["ReportMemberFault"] = "ReportMemberFault"
    member_id: str
    reason: str = "silent"


class TerminateMember(Message):
    type: Literal["TerminateMember"] = "TerminateMember"
    member_id: str
    graceful: bool = True


_COMMAND_TYPES: tuple[type[Message], ...] = (
    *DEFINITION_COMMANDS,
    MarkDefinitionUsed,
    ReleaseDefinition,
    DeployApplication,
    RecordDependencyResolved,
    RecordDependencyMissing,
    UndeployApplication,
    RecordClusterStatus,
    AddApplicationSignup,
    RemoveApplicationSignup,
    AddDomainMappings,
    RemoveDomainMappings,
    CreateCluster,
    ScaleCluster,
    ScaleAsDependent,
    UpdateClusterLimits,
    TerminateCluster,
    CheckTimeouts,
    ReportNodeCreated,
    ReportNodeStartFailed,
    ReportNodeDestroyed,
    ReportInstanceStatus,
    ReportMemberFault,
    TerminateMember,
    *METADATA_COMMANDS,
    *SCALING_COMMANDS,
)
if TYPE_CHECKING:
    # a union built at import time (the definition commands come from DEFINITION_KINDS): the type
    # checker cannot see its members, so to it any command; code narrows with isinstance
    Command: TypeAlias = Any
else:
    Command = Annotated[Union[_COMMAND_TYPES], Field(discriminator="type")]  # noqa: UP007
