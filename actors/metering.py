"""Metering: what each tenant used, as a pure fold of the log.

The member statuses come from the cluster aggregate's own fold (`Tracked.fold_commit`, the
cluster's `apply`): after each commit of a cluster, every member whose status class changed
closes one interval and opens the next, at the commit's time. A member is *pending* from its
spawn request until it is Active, *running* from Active until it is Terminated (maintenance and
ready-to-shutdown included: the instance is still there); pending time is counted apart.
Scaling actions are the ScalingDecided events that spawned or terminated members.

Because it is a fold of the log, the usage over any past window [start, end) is exact: intervals
are clipped to the window, and whatever the log says after `end` does not touch it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

from actors.member import PENDING
from actors.runtime import Tracked
from schemas import events as E
from schemas.domain import ClusterSpec
from schemas.domain import MemberStatus as S
from schemas.ids import parse_aggregate_id
from schemas.records import Commit, LogRecord

GROUPINGS = ("application", "cluster", "cartridge")
PENDING_KIND, RUNNING_KIND = "pending", "running"


def status_kind(status: S | None) -> str | None:
    if status is None or status == S.TERMINATED:
        return None
    return PENDING_KIND if status in PENDING else RUNNING_KIND


@dataclass(frozen=True)
class Owner:
    """Whose an interval is: the keys usage can be grouped by."""

    tenant: str
    application: str
    cluster: str
    cartridge: str
    instance_type: str
    partition: str


@dataclass
class Interval:
    owner: Owner
    member: str
    kind: str
    start: float
    end: float | None = None

    def seconds(self, start: float, end: float) -> float:
        """Its length inside [start, end) (an open interval runs to `end`)."""
        stop = end if self.end is None else min(self.end, end)
        return max(0.0, stop - max(self.start, start))


@dataclass(frozen=True)
class ScalingAction:
    owner: Owner
    at: float
    spawn: int
    terminate: int


def instance_type(spec: ClusterSpec, partition_id: str) -> str:
    """The cartridge's `instanceType` property for the partition's IaaS provider, else its image."""
    provider = next((p.provider for p in spec.partitions if p.id == partition_id), None)
    iaas = spec.iaas.get(provider or "", {}) if provider else next(iter(spec.iaas.values()), {})
    for prop in iaas.get("property", []) or []:
        if isinstance(prop, dict) and prop.get("name") == "instanceType":
            return str(prop.get("value"))
    return str(iaas.get("imageId") or "default")


@dataclass
class Meter:
    """Feed it the commits that are history (infra.log.eventlog.History), in log order."""

    clusters: dict[str, Tracked] = field(default_factory=dict)
    open: dict[str, Interval] = field(default_factory=dict)
    intervals: list[Interval] = field(default_factory=list)
    actions: list[ScalingAction] = field(default_factory=list)
    by_tenant: dict[str, tuple[list[Interval], list[ScalingAction]]] = field(default_factory=dict)
    """the same intervals and actions per tenant (a query reads only its tenant's)"""
    last_at: float = 0.0

    def fold(self, commit: LogRecord) -> None:
        ref = parse_aggregate_id(commit.aggregate_id)
        if ref.kind != "cluster" or not getattr(commit.payload, "events", None):
            return
        tracked = self.clusters.get(commit.aggregate_id) or Tracked.new(commit.aggregate_id)
        before = {mid: m.status for mid, m in tracked.state.members.items()}  # type: ignore[attr-defined]
        problem = tracked.fold_commit(commit)
        if problem and problem.endswith("repeat skipped"):
            return  # the cluster's fold skipped it: nothing changed
        self.clusters[commit.aggregate_id] = tracked
        state, at = tracked.state, commit.occurred_at.timestamp()
        self.last_at = max(self.last_at, at)
        spec = state.spec  # type: ignore[attr-defined]
        if spec is None:
            return
        after = {mid: m for mid, m in state.members.items()}  # type: ignore[attr-defined]
        for mid in before.keys() | after.keys():
            old, new = status_kind(before.get(mid)), status_kind(after[mid].status if mid in after else None)
            if old == new:
                continue
            if mid in self.open:
                interval = self.open.pop(mid)
                interval.end = at
            if new is not None:
                member = after[mid]
                owner = Owner(
                    ref.tenant,
                    spec.application_id,
                    spec.cluster_id,
                    spec.cartridge_type,
                    instance_type(spec, member.partition_id),
                    member.partition_id,
                )
                self.open[mid] = interval = Interval(owner, mid, new, at)
                self.intervals.append(interval)
                self._of(ref.tenant)[0].append(interval)
        for event in cast(Commit, commit.payload).events:
            if isinstance(event, E.ScalingDecided) and (event.spawn or event.terminate):
                owner = Owner(ref.tenant, spec.application_id, spec.cluster_id, spec.cartridge_type, "", "")
                action = ScalingAction(owner, at, event.spawn, event.terminate)
                self.actions.append(action)
                self._of(ref.tenant)[1].append(action)

    def _of(self, tenant: str) -> tuple[list[Interval], list[ScalingAction]]:
        return self.by_tenant.setdefault(tenant, ([], []))


def _key(owner: Owner, group_by: str) -> tuple[str, ...]:
    if group_by == "application":
        return (owner.application,)
    if group_by == "cartridge":
        return (owner.cartridge,)
    return (owner.application, owner.cluster, owner.cartridge)


KEY_FIELDS = {
    "application": ("application",),
    "cartridge": ("cartridge",),
    "cluster": ("application", "cluster", "cartridge"),
}


def usage(
    meter: Meter,
    tenant: str,
    start: float,
    end: float,
    group_by: str = "cluster",
    requests_served: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Rows of usage of `tenant` in [start, end), one per group (application, cluster or
    cartridge): member_seconds (running) and pending_seconds, each also by instance type and
    by partition, scaling actions, and requests served (None while nothing reports them)."""
    if group_by not in GROUPINGS:
        raise ValueError(f"groupBy {group_by!r}: one of {', '.join(GROUPINGS)}")
    rows: dict[tuple[str, ...], dict[str, Any]] = {}

    def row(owner: Owner) -> dict[str, Any]:
        key = _key(owner, group_by)
        found = rows.get(key)
        if found is None:
            found = rows[key] = {
                **dict(zip(KEY_FIELDS[group_by], key, strict=True)),
                "member_seconds": 0.0,
                "pending_seconds": 0.0,
                "by_instance_type": defaultdict(float),
                "by_partition": defaultdict(float),
                "scaling_actions": 0,
                "requests_served": None,
                "clusters": set(),
            }
        found["clusters"].add(owner.cluster)
        return found

    intervals, actions = meter.by_tenant.get(tenant, ([], []))
    for interval in intervals:
        seconds = interval.seconds(start, end)
        if seconds <= 0:
            continue
        target = row(interval.owner)
        if interval.kind == RUNNING_KIND:
            target["member_seconds"] += seconds
            target["by_instance_type"][interval.owner.instance_type] += seconds
            target["by_partition"][interval.owner.partition] += seconds
        else:
            target["pending_seconds"] += seconds
    for action in actions:
        if start <= action.at < end:
            row(action.owner)["scaling_actions"] += 1
    out = []
    for key in sorted(rows):
        found = rows[key]
        served = [requests_served[c] for c in found.pop("clusters") if requests_served and c in requests_served]
        found["requests_served"] = sum(served) if served else None
        found["member_seconds"] = round(found["member_seconds"], 3)
        found["pending_seconds"] = round(found["pending_seconds"], 3)
        found["by_instance_type"] = {k: round(v, 3) for k, v in sorted(found["by_instance_type"].items())}
        found["by_partition"] = {k: round(v, 3) for k, v in sorted(found["by_partition"].items())}
        out.append(found)
    return out


def periods(start: float, end: float, length: float) -> list[tuple[float, float]]:
    """Whole periods of `length` seconds (aligned to the epoch) that lie inside [start, end)."""
    first = (start // length) * length
    out = []
    while first + length <= end:
        out.append((first, first + length))
        first += length
    return out
