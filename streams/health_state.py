"""What the health app knows and decides, as plain Python: no faust, no Kafka, no clock.

Three pieces, each fed by the faust agents in ``streams.agents``:

- the cluster view, a JSON-able dict per cluster folded from ``stratos.events`` by
  ``apply_event`` (limits, thresholds, members and their status), kept in the worker's memory;
- ``HealthBook``, the windows of the clusters the worker owns: per network partition (requests
  in flight, from the load balancer) and per member (load average, memory), on the records'
  own timestamps, so a replay of the health topic gives the same figures;
- ``HealthBook.decide`` / ``HealthBook.faults``, called on every hop: the ``ScaleCluster``
  verdicts (through ``streams.scaling_rules.decide_required``) and the silent members.

Silence is the one thing measured on the worker's own clock (``received_at``/``now`` passed
in): it is the absence of records, which no replay can show, and measuring it by when the
worker read a member's last record means a worker catching up on a backlog after a restart
raises no false alarm.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from schemas import commands as C
from schemas import events as E
from schemas.envelope import Envelope
from schemas.ids import aggregate_id
from schemas.status import HealthStat, MemberFault
from streams.scaling_rules import (
    LOAD_AVERAGE,
    MEMORY_CONSUMPTION,
    METRICS,
    REQUESTS_IN_FLIGHT,
    ScalingInputs,
    ScalingRequirement,
    decide_required,
)
from streams.windows import SlidingWindow, WindowFigures

ACTIVE = "Active"
MEMBER_METRICS = (LOAD_AVERAGE, MEMORY_CONSUMPTION)
ClusterView = dict[str, Any]
"""{"tenant", "cluster_id", "min", "max", "thresholds": {metric: threshold},
"members": {member_id: status}, "leaving": {member_id: reason}}, plain JSON values."""

_MEMBER_STATUS = {
    E.MemberSpawnRequested: "Created", E.MemberInitialized: "Initialized",
    E.MemberStarting: "Starting", E.MemberActivated: ACTIVE,
    E.MemberInMaintenance: "In_Maintenance", E.MemberReadyToShutdown: "ReadyToShutDown",
}
VIEW_EVENTS = frozenset({"ClusterCreated", "ClusterLimitsUpdated", "ClusterTerminated",
                         "MemberTerminationRequested", "MemberObsoleted", "MemberTerminated",
                         *(cls.__name__ for cls in _MEMBER_STATUS)})
"""Event types that change a cluster view; the events agent skips the others."""


def cluster_key(tenant: str, cluster_id: str) -> str:
    """The cluster's aggregate id: table key, record key of its commands and health records."""
    return aggregate_id(tenant, "cluster", cluster_id)


def apply_event(view: ClusterView | None, record: Envelope) -> ClusterView | None:
    """Fold one event of a cluster's stream into its view (None: no such cluster)."""
    event = record.payload
    if isinstance(event, E.ClusterCreated):
        spec = event.spec
        return {"tenant": record.tenant, "cluster_id": spec.cluster_id, "min": spec.min,
                "max": spec.max, "thresholds": dict(spec.thresholds), "members": {}, "leaving": {}}
    if view is None or isinstance(event, E.ClusterTerminated):
        return None
    if isinstance(event, E.ClusterLimitsUpdated):
        return {**view, "min": event.min, "max": event.max}
    member_id = getattr(event, "member_id", None)
    if member_id is None:
        return view
    members, leaving = dict(view["members"]), dict(view["leaving"])
    if isinstance(event, E.MemberTerminated):
        members.pop(member_id, None)
        leaving.pop(member_id, None)
    elif isinstance(event, (E.MemberTerminationRequested, E.MemberObsoleted)):
        leaving[member_id] = event.reason
    elif type(event) in _MEMBER_STATUS and (member_id in members or isinstance(event, E.MemberSpawnRequested)):
        members[member_id] = _MEMBER_STATUS[type(event)]
    else:
        return view
    return {**view, "members": members, "leaving": leaving}


def active_members(view: ClusterView) -> list[str]:
    """Members whose figures count: Active and neither leaving nor obsolete (HPA's lesson:
    not-yet-ready members stay out of the averages)."""
    return [m for m, status in view["members"].items() if status == ACTIVE and m not in view["leaving"]]


def combined(figures: list[WindowFigures]) -> WindowFigures | None:
    """The figures of a sum of series (requests in flight over several network partitions):
    average, gradient and second derivative are linear, so they add up."""
    if not figures:
        return None
    return WindowFigures(
        average=sum(f.average for f in figures), gradient=sum(f.gradient for f in figures),
        second_derivative=sum(f.second_derivative for f in figures),
        count=sum(f.count for f in figures), first_ts=min(f.first_ts for f in figures),
        last_ts=max(f.last_ts for f in figures))


@dataclass
class MemberWindows:
    network_partition_id: str
    windows: dict[str, SlidingWindow]
    heard_at: float | None = None
    """Worker clock when its last record was read; None: never heard by this worker."""
    faulted: bool = False
    """A fault has been raised for the current silence."""


@dataclass
class ClusterWindows:
    tenant: str
    cluster_id: str
    partition: int
    requests: dict[str, SlidingWindow] = field(default_factory=dict)
    members: dict[str, MemberWindows] = field(default_factory=dict)
    newest: dict[str, float] = field(default_factory=dict)
    """metric -> newest sample timestamp seen."""
    decided: dict[str, float] = field(default_factory=dict)
    """metric -> newest sample timestamp the previous decision saw (the reset rule)."""
    last_record_id: str | None = None

    def network_partitions(self) -> set[str]:
        return set(self.requests) | {m.network_partition_id for m in self.members.values()}

    def evict(self, span: float) -> None:
        """Drop samples older than one window before the cluster's newest sample (event time:
        a member gone silent leaves the averages once its samples age out)."""
        if not self.newest:
            return
        before = max(self.newest.values()) - span
        for window in self.requests.values():
            window.evict(before)
        for member in self.members.values():
            for window in member.windows.values():
                window.evict(before)


@dataclass(frozen=True)
class Decision:
    key: str
    tenant: str
    command: C.ScaleCluster
    causation_id: str | None
    requirement: ScalingRequirement


@dataclass(frozen=True)
class Fault:
    key: str
    tenant: str
    fault: MemberFault


class Rejected(ValueError):
    """A health record that validates as a schema but not against what the platform knows."""


class HealthBook:
    """The windows of the clusters this worker owns, and the rules that read them."""

    def __init__(self, window_seconds: float, fault_seconds: float) -> None:
        self.window_seconds = window_seconds
        self.fault_seconds = fault_seconds
        self.clusters: dict[str, ClusterWindows] = {}

    def ingest(self, record: Envelope, views: Mapping[str, ClusterView], partition: int,
               received_at: float) -> None:
        """Add one valid HealthRecord's sample; raises Rejected naming the unknown id or the
        missing field. MemberFault records (this app's own output) are not samples."""
        stat = record.payload
        if not isinstance(stat, HealthStat):
            return
        key = cluster_key(record.tenant, stat.cluster_id)
        view = views.get(key)
        if view is None:
            raise Rejected(f"payload.cluster_id: unknown cluster {stat.cluster_id!r} "
                           f"of tenant {record.tenant!r}")
        book = self.clusters.get(key)
        if book is None:
            book = self.clusters[key] = ClusterWindows(record.tenant, stat.cluster_id, partition)
        if stat.metric == REQUESTS_IN_FLIGHT:
            window = book.requests.get(stat.network_partition_id)
            if window is None:
                window = book.requests[stat.network_partition_id] = SlidingWindow(self.window_seconds)
        else:
            member = self._member(book, view, stat)
            member.heard_at, member.faulted = received_at, False
            window = member.windows[stat.metric]
        window.add(stat.timestamp, stat.value)
        book.newest[stat.metric] = max(stat.timestamp, book.newest.get(stat.metric, stat.timestamp))
        book.partition, book.last_record_id = partition, record.id

    def _member(self, book: ClusterWindows, view: ClusterView, stat: HealthStat) -> MemberWindows:
        if stat.member_id is None:
            raise Rejected(f"payload.member_id: required for {stat.metric}")
        if stat.member_id not in view["members"]:
            raise Rejected(f"payload.member_id: unknown member {stat.member_id!r} "
                           f"of cluster {stat.cluster_id!r}")
        member = book.members.get(stat.member_id)
        if member is None:
            member = book.members[stat.member_id] = MemberWindows(
                stat.network_partition_id, {m: SlidingWindow(self.window_seconds) for m in MEMBER_METRICS})
        return member

    def decide(self, views: Mapping[str, ClusterView]) -> list[Decision]:
        """One verdict per cluster with fresh figures; none where nothing new arrived."""
        decisions = []
        for key, book in list(self.clusters.items()):
            view = views.get(key)
            if view is None:  # terminated (or never created): nothing left to scale
                del self.clusters[key]
                continue
            book.evict(self.window_seconds)
            decision = self._decide(key, book, view)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _decide(self, key: str, book: ClusterWindows, view: ClusterView) -> Decision | None:
        for gone in set(book.members) - set(view["members"]):
            del book.members[gone]
        active = active_members(view)
        per_metric: dict[str, list[WindowFigures]] = {}
        for metric in MEMBER_METRICS:
            per_metric[metric] = [f for m in active if m in book.members
                                  if (f := book.members[m].windows[metric].figures()) is not None]
        requests = combined([f for w in book.requests.values() if (f := w.figures()) is not None])
        per_metric[REQUESTS_IN_FLIGHT] = [requests] if requests else []
        fresh = {m for m in METRICS if book.newest.get(m, float("-inf")) > book.decided.get(m, float("-inf"))}
        requirement = decide_required(ScalingInputs(
            min_count=view["min"], max_count=view["max"], thresholds=view["thresholds"],
            figures={m: (f if m in fresh else []) for m, f in per_metric.items()},
            current=len(active)))
        if requirement.metric is None:
            return None
        book.decided = dict(book.newest)
        stale = {m: "Stale" for m in METRICS
                 if m not in fresh and per_metric[m] and m in view["thresholds"]}
        requirement = requirement.model_copy(update={"ignored": {**requirement.ignored, **stale}})
        partitions = book.network_partitions()
        command = C.ScaleCluster(
            network_partition_id=next(iter(partitions)) if len(partitions) == 1 else None,
            required=requirement.required, metric=requirement.metric,
            reason=explain(requirement, view["thresholds"]),
            figures=figures_of(requirement, {m: per_metric[m] for m in fresh}, view["thresholds"], len(active)),
            member_load=member_load(book, active))
        return Decision(key, book.tenant, command, book.last_record_id, requirement)

    def faults(self, views: Mapping[str, ClusterView], now: float) -> list[Fault]:
        """Active members heard from once and silent for longer than the fault time; one fault
        per silence (a member heard again may fault again later)."""
        found = []
        for key, book in self.clusters.items():
            view = views.get(key)
            if view is None:
                continue
            active = set(active_members(view))
            for member_id, member in book.members.items():
                if member.faulted or member.heard_at is None or member_id not in active:
                    continue
                silent = now - member.heard_at
                if silent > self.fault_seconds:
                    member.faulted = True
                    found.append(Fault(key, book.tenant, MemberFault(
                        cluster_id=book.cluster_id, member_id=member_id, silent_seconds=silent)))
        return found

    def keep_partitions(self, partitions: set[int]) -> None:
        """Forget clusters of partitions this worker no longer owns (another worker decides
        for them now; their members must not look silent here)."""
        for key in [k for k, b in self.clusters.items() if b.partition not in partitions]:
            del self.clusters[key]


def explain(requirement: ScalingRequirement, thresholds: Mapping[str, float]) -> str:
    """Reason word, then the sentence behind it: `AboveMax: load_average predicted 61.2 over
    threshold 25 needs 5 members`."""
    metric = requirement.metric
    assert metric is not None
    return (f"{requirement.reason}: {metric} predicted {requirement.predicted[metric]:.4g} "
            f"against threshold {thresholds[metric]:g} needs {requirement.by_metric[metric]} members")


def figures_of(requirement: ScalingRequirement, voted: Mapping[str, list[WindowFigures]],
               thresholds: Mapping[str, float], active: int) -> dict[str, float]:
    """Flat `metric.figure` numbers behind the verdict; per-member metrics are the means over
    the members that voted."""
    out: dict[str, float] = {"active_members": float(active)}
    for metric, windows in voted.items():
        if metric not in requirement.by_metric or not windows:
            continue
        n = len(windows)
        out.update({
            f"{metric}.average": sum(f.average for f in windows) / n,
            f"{metric}.gradient": sum(f.gradient for f in windows) / n,
            f"{metric}.second_derivative": sum(f.second_derivative for f in windows) / n,
            f"{metric}.predicted": requirement.predicted[metric],
            f"{metric}.threshold": thresholds[metric],
            f"{metric}.required": float(requirement.by_metric[metric]),
            f"{metric}.samples": float(sum(f.count for f in windows)),
            f"{metric}.windows": float(n),
            f"{metric}.last_ts": max(f.last_ts for f in windows),
        })
    return out


def member_load(book: ClusterWindows, active: list[str]) -> dict[str, float]:
    """member id -> (predicted load + predicted memory) / 2, what the cluster reads to pick the
    least loaded member on scale-down (the mean of what is known when one metric is missing)."""
    loads = {}
    for member_id in active:
        member = book.members.get(member_id)
        if member is None:
            continue
        known = [f.predicted() for w in member.windows.values() if (f := w.figures()) is not None]
        if known:
            loads[member_id] = sum(known) / len(known)
    return loads
