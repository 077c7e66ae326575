"""What the IaaS side does about each member event: pure rules shared by the cloud controller
(``infra.cloud``), the mock IaaS's simulated agents (``infra.cloud.mock.simulator``) and the load
simulator (``streams.simulation``), so the three never disagree on the lifecycle's effects.

- ``iaas_work``: the cloud controller's work for an event, judged on the member's state after
  its commit (start a node, ask the instance to clean up, destroy and report, destroy a
  leftover node);
- ``agent_answer``: what a cartridge agent that follows its member's events says next
  (as Stratos 4.1's cartridge agent does: Started on Initialized, Activated on Started,
  ReadyToShutdown once In Maintenance; MaintenanceMode when asked to clean up while Active);
- ``node_expected``: members whose node must still exist on the IaaS (the reconciler reports
  the others' vanished nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel

from actors.member import MemberState
from schemas import events as E
from schemas.domain import MemberStatus as S

Action = Literal["start", "cleanup", "destroy", "destroy-leftover"]
START: Final = "start"
CLEANUP: Final = "cleanup"
DESTROY: Final = "destroy"
DESTROY_LEFTOVER: Final = "destroy-leftover"


@dataclass(frozen=True, slots=True)
class IaasWork:
    action: Action
    reason: str | None = None
    """For ``destroy``: the reason reported with ReportNodeDestroyed."""


def iaas_work(event: BaseModel, member: MemberState | None) -> IaasWork | None:
    """The IaaS work an event asks for; ``member`` is its member after the event's commit
    (None once terminated)."""
    if member is None and not isinstance(event, E.MemberTerminated):
        return None
    if isinstance(event, E.MemberSpawnRequested):
        return IaasWork(START) if member is not None and member.node_id is None else None
    if isinstance(event, E.MemberTerminationRequested):
        return IaasWork(CLEANUP) if event.graceful else IaasWork(DESTROY, event.reason or "terminated")
    if isinstance(event, E.MemberReadyToShutdown):
        return IaasWork(DESTROY, "terminated after graceful shutdown")
    if isinstance(event, E.MemberTerminated):
        return IaasWork(DESTROY_LEFTOVER)
    return None


AGENT_NEXT: dict[type, tuple[str, str]] = {
    E.MemberInitialized: ("InstanceStarted", "Started"),
    E.MemberStarting: ("InstanceActivated", "Activated"),
    E.MemberInMaintenance: ("InstanceReadyToShutdown", "ReadyToShutdown"),
}
"""The member event a (simulated) agent waits for -> the status it then publishes and the
agent status it is in afterwards."""
CLEANUP_ANSWER = ("InstanceMaintenanceMode", "MaintenanceMode")
AGENT_ORDER = ("Created", "Started", "Activated", "MaintenanceMode", "ReadyToShutdown")
"""An agent's words in the order the lifecycle allows them."""


def agent_answer(event: BaseModel, agent_status: str | None = None) -> tuple[str, str] | None:
    """(instance status type, agent status) an agent publishes after its member's event; None
    when it has said that, or more, already (`agent_status`, its last word; None: nothing known),
    so an agent reading its member's events again after a restart says each word once."""
    answer = AGENT_NEXT.get(type(event))
    if answer is None or agent_status is None:
        return answer
    return answer if AGENT_ORDER.index(answer[1]) > AGENT_ORDER.index(agent_status) else None


def cleanup_answer(agent_status: str | None) -> tuple[str, str] | None:
    """An instance asked to clean up goes into maintenance, if it is Activated (once)."""
    return CLEANUP_ANSWER if agent_status == "Activated" else None


def node_expected(member: MemberState) -> bool:
    """In service with a node, and not released by a graceful shutdown: its node must exist."""
    return bool(member.node_id) and member.in_service and member.status != S.READY_TO_SHUTDOWN
