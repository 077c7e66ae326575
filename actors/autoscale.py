"""What a cluster does with a ``ScaleCluster`` request (docs/operators/autoscaler.md): a pure plan.

The streams side says how many members the cluster *requires*; only the cluster knows its
members, so min/max, pending members, partitions and the scale-down counter are applied here.
Rules, first match wins:

1. MaxRule: a partition above its ``partitionMax`` (or the cluster above its max, after a
   runtime update) sheds the surplus. Terminating members are not counted, so once the
   surplus is marked terminating the next decision sees none: Stratos counted them and asked
   again forever.
2. Min rule / scale up: with fewer than ``min`` members (active + pending) spawn the
   difference (self-healing). With ``active < required`` spawn ``required - (active +
   pending)``: pending members are capacity on its way (``count_pending``), so decisions made
   every few seconds do not overshoot. Never past the max in total nor a partition's max;
   a need past the max is reported (``past_max``) so the parent can add a group instance or
   burst to the next network partition.
3. Scale down when ``active > required``: only on the ``scale_down_after``-th request in a row
   (Stratos: the 4th), one member per decision, never below min, and not within
   ``stabilisation_seconds`` of the last scaling action (HPA's lesson against flapping). The
   counter resets on any other decision and after a termination (Stratos never reset it after
   a termination, so every later scale-down request terminated at once, without the wait).
4. Otherwise Stable. Stratos also entered its scale-down branch when required and active
   were both 1; with min >= 1 all that branch could do there was be refused by its min check
   (while bumping the counter), so here it is simply Stable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from actors.partitions import (
    ONE_AFTER_ANOTHER,
    PartitionState,
    choose_partitions_for_removal,
    choose_partitions_for_spawn,
)

__all__ = ["PartitionState", "ScalingPolicy", "ScalingPlan", "decide_scaling", "max_rule"]


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """The cluster's limits and the scaling behaviour; the defaults are Stratos's."""

    min: int
    max: int
    algorithm: str = ONE_AFTER_ANOTHER
    scale_down_after: int = 4
    stabilisation_seconds: float = 0.0
    max_scale_up_per_decision: int | None = None
    count_pending: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max:
            raise ValueError(f"need 0 <= min <= max, got min={self.min} max={self.max}")
        if self.scale_down_after < 1:
            raise ValueError("scale_down_after must be at least 1")
        if self.max_scale_up_per_decision is not None and self.max_scale_up_per_decision < 1:
            raise ValueError("max_scale_up_per_decision must be at least 1 (or None)")


@dataclass(frozen=True, slots=True)
class ScalingPlan:
    """What to do: one partition id per member to create / to terminate, in order."""

    spawn: tuple[str, ...] = ()
    terminate_from: tuple[str, ...] = ()
    scale_down_requests: int = 0
    """The consecutive scale-down counter to keep for the next decision."""
    reason: str = "Stable"
    """MaxRule | MinRule | ScaleUp | ScaleUpLimitedByMax | ScaleUpLimitedByRate |
    AboveMaxNotifyParent | ScaleUpInProgress | ScaleDownPending | ScaleDownStabilising |
    ScaleDown | AtMin | Stable"""
    past_max: int = 0
    """How many members the requirement goes past what the cluster may hold."""


def max_rule(partitions: Sequence[PartitionState], policy: ScalingPolicy) -> list[str]:
    """One partition id per member above a partition's max or the cluster's (MaxRule)."""
    shed = [p.id for p in partitions for _ in range(max(0, p.members - p.max))]
    capped = [PartitionState(p.id, p.max, active=min(p.members, p.max), tier=p.tier) for p in partitions]
    over = sum(p.members for p in capped) - policy.max
    return shed + choose_partitions_for_removal(policy.algorithm, capped, over)


def _stabilising(now: float, window: float, *times: float | None) -> bool:
    return window > 0 and any(t is not None and now - t < window for t in times)


def decide_scaling(
    required: int,
    partitions: Sequence[PartitionState],
    policy: ScalingPolicy,
    *,
    scale_down_requests: int = 0,
    last_scale_up_at: float | None = None,
    last_scale_down_at: float | None = None,
    now: float = 0.0,
) -> ScalingPlan:
    """The plan for one ``ScaleCluster`` request, given the partitions in policy order."""
    shed = max_rule(partitions, policy)
    if shed:
        return ScalingPlan(terminate_from=tuple(shed), reason="MaxRule")

    active = sum(p.active for p in partitions)
    members = sum(p.members for p in partitions)
    ceiling = min(policy.max, sum(p.max for p in partitions))
    past_max = max(0, required - ceiling)

    for_min = policy.min - members
    if for_min > 0 or active < required:
        capacity = members if policy.count_pending else active
        for_need = min(required, ceiling) - capacity if active < required else 0
        limit = policy.max_scale_up_per_decision
        allowed = for_need if limit is None else min(for_need, limit)
        count = min(max(for_min, allowed, 0), ceiling - members)
        spawn = choose_partitions_for_spawn(policy.algorithm, partitions, count)
        if for_min > 0 and for_min >= allowed:
            reason = "MinRule"
        elif not spawn:
            reason = "AboveMaxNotifyParent" if past_max else "ScaleUpInProgress"
        elif past_max:
            reason = "ScaleUpLimitedByMax"
        elif allowed < for_need:
            reason = "ScaleUpLimitedByRate"
        else:
            reason = "ScaleUp"
        return ScalingPlan(spawn=tuple(spawn), reason=reason, past_max=past_max)

    if active > required:
        if active <= policy.min:
            return ScalingPlan(reason="AtMin")
        requests = min(scale_down_requests + 1, policy.scale_down_after)
        if requests < policy.scale_down_after:
            return ScalingPlan(scale_down_requests=requests, reason="ScaleDownPending")
        window = policy.stabilisation_seconds
        if _stabilising(now, window, last_scale_up_at, last_scale_down_at):
            return ScalingPlan(scale_down_requests=requests, reason="ScaleDownStabilising")
        with_active = [p for p in partitions if p.active > 0]
        source = choose_partitions_for_removal(policy.algorithm, with_active, 1)
        return ScalingPlan(terminate_from=tuple(source), reason="ScaleDown")

    return ScalingPlan(reason="Stable")
