"""The cluster aggregate: its members' lifecycles, the min rule, and scaling decisions.

Every rule about counts lives here or in `actors.autoscale` (pure): the cluster is the single
writer of its members' events, so active / pending / terminating counts are exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator

from actors import instances as I
from actors.autoscale import ScalingPlan, ScalingPolicy, decide_scaling, max_rule
from actors.base import Context, Rejection, State, Timeouts, evolve, made, not_found
from actors.member import PENDING, MemberState, check_move
from actors.partitions import PartitionState, choose_member_to_remove, choose_partitions_for_spawn
from schemas import app_scaling as X
from schemas import commands as C
from schemas import events as E
from schemas.base import without_secrets
from schemas.domain import ClusterSpec, ClusterStatus, PartitionSpec
from schemas.domain import MemberStatus as S

AGENT_STATUS = {
    "Started": S.STARTING,
    "Activated": S.ACTIVE,
    "MaintenanceMode": S.IN_MAINTENANCE,
    "ReadyToShutdown": S.READY_TO_SHUTDOWN,
}
DEPENDENT = "dependent"
"""The metric word of a requirement that comes from a scaling dependent, not from health."""
STATUS_EVENT = {
    S.STARTING: E.MemberStarting,
    S.ACTIVE: E.MemberActivated,
    S.IN_MAINTENANCE: E.MemberInMaintenance,
    S.READY_TO_SHUTDOWN: E.MemberReadyToShutdown,
}
STATUS_OF_EVENT: dict[type[BaseModel], S] = {event: status for status, event in STATUS_EVENT.items()}


class ClusterState(State):
    spec: ClusterSpec | None = None
    status: ClusterStatus = ClusterStatus.CREATED
    min: int = 0
    max: int = 1
    members: dict[str, MemberState] = {}
    scale_down_requests: int = 0
    last_scale_up_at: float | None = None
    last_scale_down_at: float | None = None
    dependent_floors: dict[str, int] = {}
    """cluster id of a scaling dependent -> the members it asks this cluster to keep."""
    announced_factor: float | None = None
    """The factor (required / min) last announced to this cluster's scaling dependents."""
    base_min: int | None = None
    base_max: int | None = None
    """Min and max members per cluster instance (`min`/`max` are the cluster's, over all its
    instances; None in snapshots written before cluster instances: min and max)."""
    instances: tuple[str, ...] = ()
    """Network partition of each cluster instance (group instances, bursting)."""
    reported_wanted: int | None = None
    """Cluster instances last asked of the application (None: content with what it holds)."""
    scale_in_requests: int = 0
    tally: tuple[int, int, int] = Field((0, 0, 0), exclude=True)
    """(active, pending, in transition) members (`tally_of`), kept by the fold so that the
    rules' counts and the node's timer question cost O(1), not a pass over every member. Not in
    snapshots: counted when one is loaded."""

    @model_validator(mode="after")
    def _count(self) -> ClusterState:
        counts = [tally_of(m) for m in self.members.values()]
        object.__setattr__(self, "tally", tuple(sum(c[i] for c in counts) for i in range(3)))
        return self

    @property
    def in_transition(self) -> int:
        return self.tally[2]

    @property
    def per_instance(self) -> tuple[int, int]:
        return (
            self.min if self.base_min is None else self.base_min,
            self.max if self.base_max is None else self.base_max,
        )

    @property
    def cluster_instances(self) -> tuple[str, ...]:
        assert self.spec is not None
        return self.instances or tuple(I.network_partitions_of(self.spec.partitions)[:1])

    def partition_states(self) -> list[PartitionState]:
        """Partitions in use (and those left that still hold members), with their maxima over
        the cluster instances, tiered in the application's bursting order."""
        assert self.spec is not None
        counts = {p.id: [0, 0, 0] for p in self.spec.partitions}
        for m in self.members.values():
            slot = counts.setdefault(m.partition_id, [0, 0, 0])
            if m.is_active:
                slot[0] += 1
            elif m.is_pending:
                slot[1] += 1
            elif m.obsolete_since is None and m.status != S.TERMINATED:
                slot[2] += 1
        maxima = I.partition_maxima(self.spec.partitions, self.per_instance[1], self.cluster_instances)
        order = I.network_partitions_of(self.spec.partitions)
        return [
            PartitionState(
                p.id,
                maxima[p.id],
                active=counts[p.id][0],
                pending=counts[p.id][1],
                terminating=counts[p.id][2],
                tier=order.index(p.network_partition_id),
            )
            for p in self.spec.partitions
            if maxima[p.id] or any(counts[p.id])
        ]

    @property
    def active(self) -> int:
        return self.tally[0]

    @property
    def pending(self) -> int:
        return self.tally[1]


def timed(member: MemberState) -> bool:
    """A member whose timeouts the cluster checks: pending, asked to leave, or obsolete."""
    return member.status in PENDING or not member.in_service


NO_TALLY = (0, 0, 0)
"""What no member adds."""


def tally_of(member: MemberState) -> tuple[int, int, int]:
    """What one member adds to `ClusterState.tally`: (active, pending, in transition)."""
    return int(member.is_active), int(member.is_pending), int(timed(member))


def initial(aggregate_id: str) -> ClusterState:
    return ClusterState(aggregate_id=aggregate_id)


def _spawn(
    state: ClusterState, partition_ids: list[str] | tuple[str, ...], ctx: Context, reason: str
) -> list[BaseModel]:
    spec = state.spec
    assert spec is not None
    by_id = {p.id: p for p in spec.partitions}
    events: list[BaseModel] = []
    for pid in partition_ids:
        part = by_id[pid]
        events.append(
            made(
                E.MemberSpawnRequested,
                member_id=f"{spec.alias}.{ctx.new_id()}",
                cluster_id=spec.cluster_id,
                application_id=spec.application_id,
                cartridge_type=spec.cartridge_type,
                category=spec.category,
                network_partition_id=part.network_partition_id,
                partition_id=pid,
                provider=part.provider,
                iaas=with_partition(without_secrets(spec.iaas.get(part.provider, {})), part),
                ports=spec.ports,
                repo_url=spec.repo_url,
                reason=reason,
            )
        )
    return events


def with_partition(iaas: dict[str, Any], partition: PartitionSpec) -> dict[str, Any]:
    """The cartridge's iaasProvider entry for a member of `partition`: the partition's properties
    (region, zone, a Kubernetes cluster's master...) over the entry's own, as Stratos did."""
    if not partition.properties:
        return iaas
    own = [p for p in iaas.get("property") or [] if p.get("name") not in partition.properties]
    return {**iaas, "property": own + [{"name": k, "value": v} for k, v in partition.properties.items()]}


def _terminate(state: ClusterState, member: MemberState, reason: str, graceful: bool = True) -> BaseModel:
    assert state.spec is not None
    return made(
        E.MemberTerminationRequested,
        member_id=member.member_id,
        cluster_id=state.spec.cluster_id,
        graceful=graceful and member.status == S.ACTIVE,
        reason=reason,
    )


def _min_rule(state: ClusterState, ctx: Context) -> list[BaseModel]:
    """Self-healing: keep active + pending at least min in each network partition, min per
    cluster instance there (never while terminating)."""
    if state.status in (ClusterStatus.TERMINATING, ClusterStatus.TERMINATED) or state.spec is None:
        return []
    if state.active + state.pending >= state.min and len(set(state.cluster_instances)) == 1:
        return []  # one network partition: its floor is the cluster's min
    where: list[str] = []
    partitions, np_of = state.partition_states(), _np_of(state)
    for np, floor in I.floors(state.per_instance[0], state.cluster_instances).items():
        mine = [p for p in partitions if np_of[p.id] == np]
        missing = floor - sum(p.members for p in mine)
        if missing > 0:
            where += choose_partitions_for_spawn(state.spec.partition_algorithm, mine, missing)
    return _spawn(state, where, ctx, reason="MinRule") if where else []


def _np_of(state: ClusterState) -> dict[str, str]:
    """Partition id -> its network partition."""
    assert state.spec is not None
    return {p.id: p.network_partition_id for p in state.spec.partitions}


def _status_after(before: ClusterState, after: ClusterState) -> list[BaseModel]:
    """Cluster status follows its members: Active at min, Inactive below, Terminated when empty."""
    assert after.spec is not None
    app = after.spec.application_id
    if after.status == ClusterStatus.TERMINATING and all(m.status == S.TERMINATED for m in after.members.values()):
        return [
            made(E.ClusterTerminated, application_id=app),
            made(E.ClusterStatusChanged, application_id=app, status=ClusterStatus.TERMINATED.value),
        ]
    if after.status in (ClusterStatus.CREATED, ClusterStatus.INACTIVE) and after.active >= after.min:
        return [made(E.ClusterStatusChanged, application_id=app, status=ClusterStatus.ACTIVE.value)]
    if after.status == ClusterStatus.ACTIVE and after.active < min(after.min, before.active):
        # a member lost below min (a raised min or a new cluster instance is not a fault)
        return [
            made(
                E.ClusterStatusChanged,
                application_id=app,
                status=ClusterStatus.INACTIVE.value,
                reason=f"{after.active} active members, min {after.min}",
            )
        ]
    return []


Decided = tuple[list[BaseModel], ClusterState]
"""A decision's events and the state they lead to: the rules fold as they decide (status and the
min rule read the state after the events), so the runtime takes that state instead of folding
the same events again."""


def _with_consequences(state: ClusterState, events: list[BaseModel], ctx: Context) -> Decided:
    """Append what follows from `events`: status changes and the min rule."""
    after = fold(state, events, ctx.now)
    mine = after.members is not state.members  # the fold copied them: later folds may write in place
    follow = _status_after(state, after)
    after = fold(after, follow, ctx.now, own_members=mine)
    healing = _min_rule(after, ctx)
    return events + follow + healing, fold(after, healing, ctx.now, own_members=mine)


def _plain(state: ClusterState, events: list[BaseModel], ctx: Context) -> Decided:
    """Events with no consequence to look for (none, or a member step that changes no count)."""
    return events, fold(state, events, ctx.now)


def _member(state: ClusterState, member_id: str) -> MemberState:
    member = state.members.get(member_id)
    if member is None or member.status == S.TERMINATED:
        raise not_found("member", member_id)
    return member


def decide(state: ClusterState, command: BaseModel, ctx: Context) -> list[BaseModel]:
    return decide_and_fold(state, command, ctx)[0]


def decide_and_fold(state: ClusterState, command: BaseModel, ctx: Context) -> Decided:
    """The events `command` leads to and the state after them (`decide` and `fold` in one pass)."""
    if isinstance(command, C.CreateCluster):
        if state.exists and state.status != ClusterStatus.TERMINATED:  # a Terminated one starts afresh
            if state.spec == command.spec:
                return [], state
            raise Rejection(
                f"cluster {command.spec.cluster_id!r} already exists", code=409, field=command.spec.cluster_id
            )
        return _with_consequences(state, [made(E.ClusterCreated, spec=command.spec)], ctx)
    if not state.exists or state.spec is None:
        raise not_found("cluster", state.aggregate_id)
    spec = state.spec
    cid = spec.cluster_id

    if isinstance(command, C.ScaleCluster):
        return _scale(state, command, ctx)
    if isinstance(command, C.ScaleAsDependent):
        return _scale_as_dependent(state, command, ctx)
    if isinstance(command, (C.UpdateClusterLimits, X.SetClusterInstances)):
        return decide_limits(state, command, ctx)
    if isinstance(command, C.TerminateCluster):
        if state.status in (ClusterStatus.TERMINATING, ClusterStatus.TERMINATED):
            return [], state
        events: list[BaseModel] = [
            made(E.ClusterTerminating, application_id=spec.application_id, force=command.force),
            made(E.ClusterStatusChanged, application_id=spec.application_id, status=ClusterStatus.TERMINATING.value),
        ]
        events += [
            _terminate(state, m, "cluster terminating", graceful=not command.force)
            for m in state.members.values()
            if m.status != S.TERMINATED and m.termination_requested_at is None
        ]
        return _with_consequences(state, events, ctx)
    if isinstance(command, C.CheckTimeouts):
        return _with_consequences(state, _timeouts(state, ctx), ctx)

    member = _member(state, command.member_id)  # type: ignore[attr-defined]
    mid = member.member_id
    if isinstance(command, C.ReportNodeCreated):
        check_move(mid, member.status, S.INITIALIZED)
        initialized = made(
            E.MemberInitialized,
            member_id=mid,
            cluster_id=cid,
            node_id=command.node_id,
            private_ip=command.private_ip,
            public_ip=command.public_ip,
            ports=command.ports,
        )
        return _plain(state, [initialized], ctx)
    if isinstance(command, C.ReportNodeStartFailed):
        failed = made(
            E.MemberStartFailed, member_id=mid, cluster_id=cid, reason=command.reason, attempt=command.attempt
        )
        if command.final or command.attempt >= ctx.timeouts.start_attempts:
            gone = made(
                E.MemberTerminated,
                member_id=mid,
                cluster_id=cid,
                reason=f"start failed {command.attempt} times: {command.reason}",
            )
            return _with_consequences(state, [failed, gone], ctx)
        return _plain(state, [failed], ctx)
    if isinstance(command, C.ReportInstanceStatus):
        target = AGENT_STATUS[command.status]
        if member.status == target:
            return [], state
        check_move(mid, member.status, target)
        return _with_consequences(state, [made(STATUS_EVENT[target], member_id=mid, cluster_id=cid)], ctx)
    if isinstance(command, C.ReportNodeDestroyed):
        reason = command.reason or ("terminated" if member.termination_requested_at else "node vanished")
        return _with_consequences(state, [made(E.MemberTerminated, member_id=mid, cluster_id=cid, reason=reason)], ctx)
    if isinstance(command, C.ReportMemberFault):
        if member.obsolete_since is not None:
            return [], state
        return _with_consequences(
            state,
            [
                made(E.MemberObsoleted, member_id=mid, cluster_id=cid, reason=f"fault: {command.reason}"),
                _terminate(state, member, f"fault: {command.reason}", graceful=False),
            ],
            ctx,
        )
    if isinstance(command, C.TerminateMember):
        if member.termination_requested_at is not None:
            return [], state
        return _with_consequences(state, [_terminate(state, member, "requested", command.graceful)], ctx)
    raise Rejection(f"command {command.type} does not apply to a cluster")  # type: ignore[attr-defined]


def _deadline(m: MemberState, t: Timeouts) -> datetime | None:
    """When a member in transition times out (None: it is not in transition); `_timeouts`
    acts on it once the clock has passed it, and the node sends CheckTimeouts only then."""
    if m.status == S.TERMINATED:
        return None
    if m.obsolete_since is not None:
        return m.obsolete_since + timedelta(seconds=t.obsolete_seconds)
    if m.termination_requested_at is not None:
        return m.termination_requested_at + timedelta(seconds=t.termination_seconds)
    if m.is_pending:
        return m.created_at + timedelta(seconds=t.pending_seconds)
    return None


def next_timeout(state: ClusterState, timeouts: Timeouts) -> datetime | None:
    """The earliest time a CheckTimeouts would change this cluster (None: nothing will)."""
    return min(filter(None, (_deadline(m, timeouts) for m in state.members.values())), default=None)


def _timeouts(state: ClusterState, ctx: Context) -> list[BaseModel]:
    assert state.spec is not None
    cid, t = state.spec.cluster_id, ctx.timeouts
    events: list[BaseModel] = []
    for m in state.members.values():
        deadline = _deadline(m, t)
        if deadline is None or ctx.now <= deadline:
            continue
        if m.obsolete_since is not None:
            events.append(
                made(
                    E.MemberTerminated,
                    member_id=m.member_id,
                    cluster_id=cid,
                    reason="obsolete timeout: forced termination",
                )
            )
        elif m.termination_requested_at is not None:
            events += [
                made(E.MemberObsoleted, member_id=m.member_id, cluster_id=cid, reason="termination timeout"),
                _terminate(state, m, "termination timeout", graceful=False),
            ]
        else:
            events += [
                made(E.MemberObsoleted, member_id=m.member_id, cluster_id=cid, reason="pending timeout"),
                _terminate(state, m, "pending timeout", graceful=False),
            ]
    return events


def _announce(state: ClusterState, command: C.ScaleCluster) -> list[BaseModel]:
    """Dependent scaling: the cluster's own requirement, as a factor of its min, for the
    clusters of its `scalingDependents` group; only when the factor changes. A requirement that
    came from a dependent is not passed on (it would echo back, rounded up, and ratchet)."""
    assert state.spec is not None
    if not state.spec.scaling_dependents or command.metric == DEPENDENT:
        return []
    required = min(max(command.required, state.min), state.max)
    factor = round(required / max(state.min, 1), 6)
    if factor == state.announced_factor:
        return []
    return [
        made(
            E.DependentScalingRequested,
            factor=factor,
            required=required,
            min=state.min,
            clusters=list(state.spec.scaling_dependents),
        )
    ]


def scaling_changes(state: ClusterState, command: C.ScaleCluster, now: datetime) -> bool:
    """Whether deciding this ScaleCluster would record anything. A verdict that changes nothing
    (Stable or AtMin with no scale-down count to reset, no dependent or instance demand) is
    decided to no event; a sender that asks first (the health worker) keeps it to itself, so a
    steady cluster costs no command, commit or reply per hop. The answer is `decide`'s own: the
    same plan (`_scaling`), without making the events, ids or folds it would not send."""
    if not state.exists or state.spec is None:
        raise not_found("cluster", state.aggregate_id)
    if state.status in (ClusterStatus.TERMINATING, ClusterStatus.TERMINATED):
        return False
    scaling = _scaling(state, command, now.timestamp())
    return not scaling.quiet or bool(scaling.announced or scaling.demand)


def _scale_as_dependent(state: ClusterState, command: C.ScaleAsDependent, ctx: Context) -> Decided:
    """Keep ``ceil(factor * min)`` members (at most max) while the source's factor holds."""
    if state.status in (ClusterStatus.TERMINATING, ClusterStatus.TERMINATED):
        return [], state
    required = min(state.max, math.ceil(command.factor * state.min - 1e-9))
    if state.dependent_floors.get(command.source_cluster_id) == required:
        return [], state
    floor = made(
        E.DependentFloorChanged, source_cluster_id=command.source_cluster_id, factor=command.factor, required=required
    )
    scale = made(
        C.ScaleCluster,
        required=required,
        metric=DEPENDENT,
        reason=f"ScalingDependent: {command.source_cluster_id} scaled by factor {command.factor:g}",
    )
    events, after = _scale(apply(state, floor, ctx.now), scale, ctx)
    return [floor, *events], after


@dataclass(frozen=True, slots=True)
class _Scaling:
    """What a ScaleCluster comes to before any event is made: `_scale` makes the events,
    `scaling_changes` only asks whether there would be any."""

    announced: list[BaseModel]
    required: int
    floor: int
    plan: ScalingPlan
    spawn: list[str]
    leaving: list[MemberState]
    demand: list[BaseModel]
    quiet: bool
    """Nothing to explain beyond the previous decision: no ScalingDecided."""


def _scaling(state: ClusterState, command: C.ScaleCluster, now: float) -> _Scaling:
    assert state.spec is not None
    announced = _announce(state, command)
    floor = max(state.dependent_floors.values(), default=0)
    required = max(command.required, floor)
    partitions = state.partition_states()
    plan = decide_scaling(
        required,
        partitions,
        ScalingPolicy(
            min=state.min,
            max=state.max,
            algorithm=state.spec.partition_algorithm,
            scale_down_after=state.spec.scale_down_after,
            stabilisation_seconds=state.spec.scale_down_stabilisation_seconds,
        ),
        scale_down_requests=state.scale_down_requests,
        last_scale_up_at=state.last_scale_up_at,
        last_scale_down_at=state.last_scale_down_at,
        now=now,
    )
    leave_from, spawn = plan.terminate_from, list(plan.spawn)
    (base_min, base_max), held = state.per_instance, state.cluster_instances
    if len(held) > 1:  # several cluster instances: min and max hold per network partition too
        np_of = _np_of(state)
        if plan.reason != "MaxRule":
            leave_from = tuple(I.keep_minimums(partitions, np_of, base_min, held, plan.terminate_from))
        spawn = I.fit_maximums(partitions, np_of, base_max, held, plan.spawn)
    leaving = _leaving(state, leave_from, command.member_load)
    demand = _demand(state, partitions, required, plan.past_max)
    quiet = (
        state.scale_down_requests == plan.scale_down_requests
        and not plan.spawn
        and not leaving
        and plan.reason in ("Stable", "AtMin")
    )
    return _Scaling(announced, required, floor, plan, spawn, leaving, demand, quiet)


def _scale(state: ClusterState, command: C.ScaleCluster, ctx: Context) -> Decided:
    assert state.spec is not None
    if state.status in (ClusterStatus.TERMINATING, ClusterStatus.TERMINATED):
        return [], state
    scaling = _scaling(state, command, ctx.now.timestamp())
    plan, required, floor = scaling.plan, scaling.required, scaling.floor
    if scaling.quiet:
        return _plain(state, scaling.announced + scaling.demand, ctx)
    figures = {**command.figures, "dependent_floor": float(floor)} if floor > command.required else command.figures
    decided = made(
        E.ScalingDecided,
        network_partition_id=command.network_partition_id,
        required=required,
        active=state.active,
        pending=state.pending,
        spawn=len(scaling.spawn),
        terminate=len(scaling.leaving),
        scale_down_requests=plan.scale_down_requests,
        reason=plan.reason,
        metric=command.metric,
        figures=figures,
    )
    events: list[BaseModel] = [
        *scaling.announced,
        decided,
        *scaling.demand,
        *_spawn(state, scaling.spawn, ctx, plan.reason),
    ]
    events += [_terminate(state, m, plan.reason) for m in scaling.leaving]
    return _with_consequences(state, events, ctx)


def _leaving(state: ClusterState, partition_ids: Iterable[str], member_load: dict[str, Any]) -> list[MemberState]:
    """One member per partition id: the one with the lowest load (``choose_member_to_remove``)."""
    leaving: list[MemberState] = []
    for pid in partition_ids:
        candidates = [
            (m.member_id, member_load.get(m.member_id), None)
            for m in state.members.values()
            if m.partition_id == pid and m.in_service and m.status != S.TERMINATED and m not in leaving
        ]
        if candidates:
            chosen = choose_member_to_remove(candidates)
            leaving.append(state.members[chosen])
    return leaving


def decide_limits(state: ClusterState, command: BaseModel, ctx: Context) -> Decided:
    """New limits per cluster instance (a live application update) or new cluster instances
    (group scaling, bursting): the min rule starts what is missing, the max rule lets the
    surplus go through the graceful termination path."""
    assert state.spec is not None
    if state.status in (ClusterStatus.TERMINATING, ClusterStatus.TERMINATED):
        return [], state
    if isinstance(command, C.UpdateClusterLimits):
        if command.min > command.max:
            raise Rejection(f"min {command.min} is above max {command.max}", field="min")
        dependents = command.scaling_dependents
        if (command.min, command.max) == state.per_instance and dependents in (None, state.spec.scaling_dependents):
            return [], state
        changed: BaseModel = made(
            E.ClusterLimitsUpdated, min=command.min, max=command.max, scaling_dependents=dependents
        )
    else:
        assert isinstance(command, X.SetClusterInstances)
        known = I.network_partitions_of(state.spec.partitions)
        unknown = [np for np in command.network_partitions if np not in known]
        if unknown:
            raise Rejection(
                f"network partition {unknown[0]!r} is not one of cluster "
                f"{state.spec.cluster_id!r} ({', '.join(known)})",
                field="network_partitions",
            )
        if tuple(command.network_partitions) == state.cluster_instances:
            return [], state
        changed = made(X.ClusterInstancesChanged, network_partitions=command.network_partitions, reason=command.reason)
    after = apply(state, changed, ctx.now)
    low, high = after.min, after.max
    shed = max_rule(
        after.partition_states(), ScalingPolicy(min=low, max=high, algorithm=state.spec.partition_algorithm)
    )
    leaving = [_terminate(after, m, "MaxRule") for m in _leaving(after, shed, {})]
    return _with_consequences(state, [changed, *leaving], ctx)


def _demand(state: ClusterState, partitions: list[PartitionState], required: int, past_max: int) -> list[BaseModel]:
    """Ask the application for more cluster instances at once when the requirement goes past
    them; for fewer after `scale_down_after` decisions in a row that fit in fewer."""
    assert state.spec is not None
    n = len(state.cluster_instances)
    ceiling = min(state.max, sum(p.max for p in partitions))
    wanted = I.wanted_instances(required, past_max, ceiling // n, n)
    reported = state.reported_wanted
    if wanted == reported:
        return [made(X.InstanceScaleInCounted, requests=0)] if state.scale_in_requests else []
    ask = made(X.ClusterInstancesWanted, application_id=state.spec.application_id, wanted=wanted, instances=n)
    if wanted > n or (wanted == n and reported is not None):
        return [ask]
    if wanted == n:
        return [made(X.InstanceScaleInCounted, requests=0)] if state.scale_in_requests else []
    count = state.scale_in_requests + 1
    return [ask] if count >= state.spec.scale_down_after else [made(X.InstanceScaleInCounted, requests=count)]


def _apply_scaling(state: ClusterState, event: BaseModel) -> ClusterState:
    """The events of cluster instances and per-instance limits."""
    assert state.spec is not None
    if isinstance(event, E.ClusterLimitsUpdated):
        spec = (
            state.spec
            if event.scaling_dependents is None
            else state.spec.model_copy(update={"scaling_dependents": event.scaling_dependents})
        )
        low, high = I.limits(event.min, event.max, state.cluster_instances)
        return evolve(
            state,
            {
                "spec": spec,
                "base_min": event.min,
                "base_max": event.max,
                "min": low,
                "max": high,
                "reported_wanted": None,
                "scale_in_requests": 0,
            },
        )
    if isinstance(event, X.ClusterInstancesChanged):
        base_min, base_max = state.per_instance
        low, high = I.limits(base_min, base_max, event.network_partitions)
        return evolve(
            state,
            {
                "instances": tuple(event.network_partitions),
                "base_min": base_min,
                "base_max": base_max,
                "min": low,
                "max": high,
                "reported_wanted": None,
                "scale_in_requests": 0,
            },
        )
    if isinstance(event, X.ClusterInstancesWanted):
        return evolve(state, {"reported_wanted": event.wanted, "scale_in_requests": 0})
    assert isinstance(event, X.InstanceScaleInCounted)
    return evolve(state, {"scale_in_requests": event.requests})


SCALING_EVENTS = (E.ClusterLimitsUpdated, X.ClusterInstancesChanged, X.ClusterInstancesWanted, X.InstanceScaleInCounted)


def apply(state: ClusterState, event: BaseModel, at: datetime | None = None) -> ClusterState:
    return fold(state, [event], at)


def fold(
    state: ClusterState,
    events: list[BaseModel],
    at: datetime | None,
    in_place: bool = False,
    own_members: bool = False,
) -> ClusterState:
    """`state` after `events`. The members dict is copied once per fold, at its first member
    event (not once per event); with `own_members` the caller owns `state.members` (a state its
    own decision made) and member events change it without a copy. Either way the other fields
    go through `evolve`, which copies no container. With `in_place` the caller owns the state
    and every member in it (a rebuild): a member event changes the member and the state's tally
    where they are, copying nothing."""
    members = state.members if in_place or own_members else None
    for event in events:
        if isinstance(event, E.MEMBER_EVENTS):
            if members is None:
                members = dict(state.members)
                state = evolve(state, {"members": members})
            state = _apply_member(state, members, event, at, in_place)
        else:
            state = _apply_cluster(state, event, at)
            if members is not None and state.members is not members:
                members = None  # created afresh: the next member event copies the new dict
    return state


def _apply_cluster(state: ClusterState, event: BaseModel, at: datetime | None) -> ClusterState:
    if isinstance(event, E.ClusterCreated):  # afresh: a Terminated cluster may be created again
        spec = event.spec
        instances = tuple(spec.instances) or tuple(I.network_partitions_of(spec.partitions)[:1])
        low, high = I.limits(spec.min, spec.max, instances)
        return evolve(
            initial(state.aggregate_id),
            {
                "seq": state.seq,
                "exists": True,
                "spec": spec,
                "min": low,
                "max": high,
                "base_min": spec.min,
                "base_max": spec.max,
                "instances": instances,
            },
        )
    if isinstance(event, E.ClusterStatusChanged):
        return evolve(state, {"status": ClusterStatus(event.status)})
    if isinstance(event, SCALING_EVENTS):
        return _apply_scaling(state, event)
    if isinstance(event, E.ScalingDecided):
        update: dict[str, Any] = {"scale_down_requests": event.scale_down_requests}
        if event.spawn and at:
            update["last_scale_up_at"] = at.timestamp()
        if event.terminate and at:
            update["last_scale_down_at"] = at.timestamp()
        return evolve(state, update)
    if isinstance(event, E.DependentScalingRequested):
        return evolve(state, {"announced_factor": event.factor})
    if isinstance(event, E.DependentFloorChanged):
        return evolve(state, {"dependent_floors": {**state.dependent_floors, event.source_cluster_id: event.required}})
    return state  # ClusterTerminating, ClusterTerminated: facts for the others


def _apply_member(
    state: ClusterState, members: dict[str, MemberState], event: BaseModel, at: datetime | None, owned: bool
) -> ClusterState:
    """One member event, written into `members` (the fold's own dict, `state.members`); `owned`:
    the member and the state too (`fold`'s `in_place`)."""
    when = at or datetime.fromtimestamp(0).astimezone()
    if isinstance(event, E.MemberSpawnRequested):
        spawned = made(
            MemberState,
            member_id=event.member_id,
            partition_id=event.partition_id,
            network_partition_id=event.network_partition_id,
            created_at=when,
            status_since=when,
        )
        replaced = members.get(event.member_id)
        members[event.member_id] = spawned
        return _counted(state, tally_of(replaced) if replaced else NO_TALLY, tally_of(spawned), owned)
    member = members.get(getattr(event, "member_id", ""))
    if member is None:
        return state
    if isinstance(event, E.MemberTerminated):
        del members[member.member_id]
        return _counted(state, tally_of(member), NO_TALLY, owned)
    before = tally_of(member)  # `changed` may be `member` itself, changed in place
    if isinstance(event, E.MemberInitialized):
        changed = evolve(
            member,
            {
                "status": S.INITIALIZED,
                "status_since": when,
                "node_id": event.node_id,
                "private_ip": event.private_ip,
                "public_ip": event.public_ip,
                "ports": event.ports,
            },
            owned,
        )
    elif isinstance(event, E.MemberStartFailed):
        changed = evolve(member, {"start_attempts": event.attempt}, owned)
    elif isinstance(event, E.MemberTerminationRequested):
        changed = evolve(member, {"termination_requested_at": when}, owned)
    elif isinstance(event, E.MemberObsoleted):
        changed = evolve(member, {"obsolete_since": when}, owned)
    else:
        target = STATUS_OF_EVENT[type(event)]
        changed = evolve(member, {"status": target, "status_since": when}, owned)
    members[member.member_id] = changed
    return _counted(state, before, tally_of(changed), owned)


def _counted(state: ClusterState, old: tuple[int, int, int], new: tuple[int, int, int], owned: bool) -> ClusterState:
    """`state` with its tally moved by one member's change (`tally_of` it before and after)."""
    if old == new:
        return state
    return evolve(state, {"tally": tuple(t + n - o for t, n, o in zip(state.tally, new, old, strict=True))}, owned)
