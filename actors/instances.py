"""Cluster instances: group scaling and application bursting (docs/operators/applications.md), pure rules.

A cluster holds one *cluster instance* per instance of each group it is in (nested group
instances multiply) and per network partition its application has burst into. Each cluster
instance may hold min..max members (``cartridgeMin``/``cartridgeMax``) and each of its
partitions up to ``partitionMax``: a cluster with n instances has limits n·min..n·max.

- **Group scaling**: a cluster whose requirement goes past what its instances hold asks for
  more (``wanted_instances``); the innermost group around it with ``groupScalingEnabled`` and
  room below ``groupMaxInstances`` gets one more group instance: a cluster instance for every
  cluster of the group. (Stratos read only ``groupMaxInstances > 1`` and ignored the flag.)
- **Bursting**: when no group can grow, an application policy with further network partitions
  bursts into the next step: with ``one-after-another`` each network partition is a step, with
  the ``networkPartitionGroups`` property each group is one, ``all-at-once`` is a single step
  taking them all from the start.
- **Back in**, in the reverse order: the last burst step first, then the innermost group, and
  only when every cluster concerned says its requirement fits in what would be left (a cluster
  says so only after ``scale_down_after`` decisions in a row, as a member's scale-down waits).

The cluster aggregate (``actors.cluster``), the application aggregate (``actors.application``)
and so the live path, replay, ``stratos replay --what-if`` and ``stratos simulate`` all call
these functions; nothing else decides instances.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from actors.partitions import PartitionState
from schemas.domain import PartitionSpec
from schemas.ids import cluster_id_for


@dataclass(frozen=True, slots=True)
class GroupScaling:
    """One group of an application: its instance limits and every cluster inside it."""

    alias: str
    min: int
    max: int
    enabled: bool
    """``groupScalingEnabled`` and ``groupMaxInstances > 1``."""
    clusters: tuple[str, ...]
    depth: int
    """0 for a group of the application, 1 for a group inside it, ..."""

    @property
    def floor(self) -> int:
        return max(1, self.min)


def _cluster_ids(app_id: str, components: Mapping) -> Iterator[str]:
    for cartridge in components.get("cartridges", []) or []:
        yield cluster_id_for(app_id, cartridge["subscribableInfo"]["alias"], cartridge["type"])
    for group in components.get("groups", []) or []:
        yield from _cluster_ids(app_id, group)


def groups_of(application: Mapping, group_definitions: Mapping[str, Mapping] | None = None
              ) -> dict[str, GroupScaling]:
    """Every group of an application by alias. ``groupScalingEnabled`` is read from the
    application's group entry, or else from the cartridge group definition of that name."""
    app_id = application["applicationId"]
    found: dict[str, GroupScaling] = {}

    def walk(components: Mapping, depth: int) -> None:
        for group in components.get("groups", []) or []:
            definition = (group_definitions or {}).get(group.get("name", ""), {})
            flag = group.get("groupScalingEnabled") or definition.get("groupScalingEnabled") or False
            low, high = int(group.get("groupMinInstances", 1)), int(group.get("groupMaxInstances", 1))
            found[group["alias"]] = GroupScaling(group["alias"], low, high, bool(flag) and high > 1,
                                                 tuple(_cluster_ids(app_id, group)), depth)
            walk(group, depth + 1)

    walk(application.get("components") or {}, 0)
    return found


def burst_steps(application_policy: Mapping, available: Sequence[str]) -> list[list[str]]:
    """The network partitions an application bursts into, step by step, among ``available``
    (those its deployment policies have), in the application policy's order."""
    allowed = [np for np in application_policy.get("networkPartitions", []) or [] if np in available] \
        or list(available)
    grouped = next((str(p.get("value") or "") for p in application_policy.get("properties", []) or []
                    if p.get("name") == "networkPartitionGroups"), "")
    if grouped:
        steps = [[np.strip() for np in part.split("|") if np.strip() in allowed] for part in grouped.split(",")]
        listed = {np for step in steps for np in step}
        steps += [[np] for np in allowed if np not in listed]
    elif application_policy.get("algorithm") == "all-at-once":
        steps = [allowed]
    else:
        steps = [[np] for np in allowed]
    return [step for step in steps if step]


def network_partitions_of(partitions: Iterable[PartitionSpec]) -> list[str]:
    """A cluster's network partitions, in the order of its partitions."""
    return list(dict.fromkeys(p.network_partition_id for p in partitions))


def cluster_instances(cluster_id: str, cluster_nps: Sequence[str], groups: Mapping[str, GroupScaling],
                      group_instances: Mapping[str, int], steps: Sequence[Sequence[str]],
                      burst: int) -> list[str]:
    """The network partition of each cluster instance of one cluster: one per network
    partition of the burst steps in use (that the cluster has), times the instances of every
    group around it. Never empty: a cluster has at least one instance, in its first network
    partition."""
    copies = 1
    for group in groups.values():
        if cluster_id in group.clusters:
            copies *= max(1, group_instances.get(group.alias, group.floor))
    nps = [np for step in steps[:burst] for np in step if np in cluster_nps] or list(cluster_nps[:1])
    return [np for np in nps for _ in range(copies)]


def limits(base_min: int, base_max: int, instances: Sequence[str]) -> tuple[int, int]:
    """The cluster's min and max members over all its cluster instances."""
    n = max(1, len(instances))
    return base_min * n, base_max * n


def partition_maxima(partitions: Sequence[PartitionSpec], base_max: int, instances: Sequence[str]
                     ) -> dict[str, int]:
    """Partition id -> members it may hold: its ``partitionMax`` (or the cluster's max) per
    cluster instance in its network partition; 0 in a network partition left."""
    return {p.id: (p.max or base_max) * instances.count(p.network_partition_id) for p in partitions}


def floors(base_min: int, instances: Sequence[str]) -> dict[str, int]:
    """Network partition -> the members its cluster instances hold at least (min per instance)."""
    return {np: base_min * instances.count(np) for np in dict.fromkeys(instances)}


def fit_maximums(partitions: Sequence[PartitionState], np_of: Mapping[str, str], base_max: int,
                 instances: Sequence[str], spawn: Sequence[str]) -> list[str]:
    """The partitions to start members in: no network partition holds more than max per
    cluster instance there, whatever its partitions' ``partitionMax``; a member that does not
    fit goes to the first partition with room (bursting order), or is not started."""
    room = {np: base_max * instances.count(np) for np in np_of.values()}
    held = {p.id: p.members for p in partitions}
    limit = {p.id: p.max for p in partitions}
    for pid, n in held.items():
        room[np_of[pid]] -= n

    def fits(pid: str) -> bool:
        return room[np_of[pid]] > 0 and held[pid] < limit[pid]

    placed: list[str] = []
    for pid in spawn:
        choice = pid if fits(pid) else next((q for q in held if fits(q)), None)
        if choice is not None:
            room[np_of[choice]] -= 1
            held[choice] += 1
            placed.append(choice)
    return placed


def keep_minimums(partitions: Sequence[PartitionState], np_of: Mapping[str, str], base_min: int,
                  instances: Sequence[str], terminate_from: Sequence[str]) -> list[str]:
    """The partitions to let members go from: never below the min of a network partition's
    cluster instances (the min rule would start them again); from the last partition with
    members to spare instead."""
    needed = floors(base_min, instances)
    counts = {p.id: p.members for p in partitions}

    def spare(pid: str) -> bool:
        np = np_of[pid]
        return counts[pid] > 0 and sum(n for q, n in counts.items() if np_of[q] == np) > needed.get(np, 0)

    kept: list[str] = []
    for pid in terminate_from:
        choice = pid if spare(pid) else next((q for q in reversed(list(counts)) if spare(q)), None)
        if choice is not None:
            counts[choice] -= 1
            kept.append(choice)
    return kept


def wanted_instances(required: int, past_max: int, per_instance: int, instances: int) -> int:
    """Cluster instances a requirement needs: more when it goes past what they hold, else the
    fewest that hold it."""
    per_instance = max(1, per_instance)
    if past_max > 0:
        return instances + math.ceil(past_max / per_instance)
    return max(1, math.ceil(required / per_instance))


@dataclass(frozen=True, slots=True)
class InstancePlan:
    group_instances: dict[str, int]
    burst: int
    reason: str


@dataclass(frozen=True, slots=True)
class Topology:
    """What the application knows to decide instances: its groups, burst steps and each
    cluster's network partitions."""

    groups: Mapping[str, GroupScaling]
    steps: Sequence[Sequence[str]]
    cluster_nps: Mapping[str, Sequence[str]]

    def counts(self, group_instances: Mapping[str, int]) -> dict[str, int]:
        return {alias: group_instances.get(alias, g.floor) for alias, g in self.groups.items()}

    def instances(self, group_instances: Mapping[str, int], burst: int) -> dict[str, list[str]]:
        counts = self.counts(group_instances)
        return {cid: cluster_instances(cid, nps, self.groups, counts, self.steps, burst)
                for cid, nps in self.cluster_nps.items()}


def plan_instances(topology: Topology, group_instances: Mapping[str, int], burst: int,
                   demands: Mapping[str, int], cluster_id: str) -> InstancePlan | None:
    """One step for the demand ``cluster_id`` has just reported (``demands``: what each cluster
    last asked for; a cluster that has not asked is content with what it holds), or None."""
    counts = topology.counts(group_instances)
    current = topology.instances(counts, burst)
    holds = len(current.get(cluster_id, ()))
    wanted = demands.get(cluster_id, holds)
    around = sorted((g for g in topology.groups.values() if cluster_id in g.clusters),
                    key=lambda g: -g.depth)  # innermost first
    if wanted > holds:
        for group in around:
            if group.enabled and counts[group.alias] < group.max:
                return InstancePlan({**counts, group.alias: counts[group.alias] + 1}, burst,
                                    f"GroupScaleUp: {cluster_id} needs {wanted} cluster instances, "
                                    f"holds {holds}: group {group.alias!r} instance {counts[group.alias] + 1}")
        if burst < len(topology.steps):
            return InstancePlan(counts, burst + 1,
                                f"Burst: {cluster_id} needs {wanted} cluster instances, holds {holds}: "
                                f"into {', '.join(topology.steps[burst])}")
        return None
    if wanted >= holds:
        return None

    def content(candidate: InstancePlan, concerned: Iterable[str]) -> bool:
        after = topology.instances(candidate.group_instances, candidate.burst)
        return all(demands.get(c, len(current[c])) <= len(after[c]) for c in concerned)

    if burst > 1:
        back = InstancePlan(counts, burst - 1, f"BurstBack: out of {', '.join(topology.steps[burst - 1])}")
        if content(back, current):
            return back
        return None
    for group in around:
        if group.enabled and counts[group.alias] > group.floor:
            back = InstancePlan({**counts, group.alias: counts[group.alias] - 1}, burst,
                                f"GroupScaleDown: group {group.alias!r} back to {counts[group.alias] - 1} instances")
            if content(back, group.clusters):
                return back
            return None
    return None
