"""Stratos 4.1's member lifecycle as a transition table, and a member's state.

Members are entities of their cluster's aggregate (one consistency boundary, so the cluster
counts its members synchronously); this module holds the rules about one member.
"""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from actors.base import Rejection
from schemas.domain import MemberStatus as S

ALLOWED: dict[S, frozenset[S]] = {
    S.CREATED: frozenset({S.INITIALIZED}),
    S.INITIALIZED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.ACTIVE}),
    S.ACTIVE: frozenset({S.IN_MAINTENANCE, S.SUSPENDED}),
    S.IN_MAINTENANCE: frozenset({S.READY_TO_SHUTDOWN}),
    S.SUSPENDED: frozenset(),
    S.READY_TO_SHUTDOWN: frozenset(),
    S.TERMINATED: frozenset(),
}
"""Forward transitions; termination is allowed from every state but Terminated."""

PENDING = frozenset({S.CREATED, S.INITIALIZED, S.STARTING})


def can_move(current: S, target: S) -> bool:
    if target == S.TERMINATED:
        return current != S.TERMINATED
    return target in ALLOWED[current]


def check_move(member_id: str, current: S, target: S) -> None:
    if not can_move(current, target):
        raise Rejection(f"member {member_id!r} cannot go from {current.value} to {target.value}",
                        field=member_id, code=409)


class MemberState(BaseModel):
    model_config = ConfigDict(frozen=True)

    member_id: str
    partition_id: str
    network_partition_id: str
    status: S = S.CREATED
    node_id: str | None = None
    private_ip: str | None = None
    public_ip: str | None = None
    ports: dict[str, int] = {}
    """protocol -> the port the node listens on when it is not the cartridge's (process mode)."""
    created_at: datetime
    status_since: datetime
    termination_requested_at: datetime | None = None
    obsolete_since: datetime | None = None
    start_attempts: int = 0

    @property
    def in_service(self) -> bool:
        """Counts toward the cluster's size: neither leaving nor obsolete."""
        return self.termination_requested_at is None and self.obsolete_since is None

    @property
    def is_active(self) -> bool:
        return self.status == S.ACTIVE and self.in_service

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING and self.in_service
