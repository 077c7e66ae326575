"""What the health app knows and decides, as plain Python: no faust, no Kafka, no clock.

Three pieces, each fed by the faust agents in ``infra.health.agents``:

- the cluster view (``view_of``): what the windows read of a cluster (limits, thresholds,
  members and their status), derived from the cluster aggregate's own state as folded by
  ``actors.cluster.apply``, so member status has one fold, shared with the node;
- ``HealthBook``, the windows of the clusters the worker owns: per network partition (requests
  in flight, from the load balancer) and per member (load average, memory), on the records'
  own timestamps, so a replay of the health topic gives the same figures;
- ``HealthBook.decide`` / ``HealthBook.faults``, called on every hop: the ``ScaleCluster``
  verdicts (through ``streams.scaling_rules.decide_required``) and the silent members. A verdict
  the cluster would decide to no event (``actors.cluster.scaling_changes``: Stable, AtMin) is not
  sent, so a steady cluster leaves no command, commit or reply; ``HealthBook.latest`` keeps
  every cluster's last verdict, sent or not (docs/adr/0007-verdicts-that-change-nothing.md).

Silence is the one thing measured on the worker's own clock (``received_at``/``now`` passed
in): it is the absence of records, which no replay can show, and measuring it by when the
worker read a member's last record means a worker catching up on a backlog after a restart
raises no false alarm. The worker's wall clock also bounds what a sample may claim: one
stamped far in the future would otherwise become every window's newest sample and evict all
the others.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from actors.base import Rejection, evolve
from actors.cluster import ClusterState, scaling_changes
from actors.member import MemberState
from schemas import commands as C
from schemas.domain import ClusterStatus, ForecastSpec
from schemas.envelope import Envelope
from schemas.ids import aggregate_id, parse_aggregate_id
from schemas.status import HealthStat, MemberFault, MemberHealth
from streams.forecast import Forecaster, Outlook, combined_required, outlook_figures
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

log = logging.getLogger(__name__)
MEMBER_METRICS = (LOAD_AVERAGE, MEMORY_CONSUMPTION)


def cluster_key(tenant: str, cluster_id: str) -> str:
    """The cluster's aggregate id: table key, record key of its commands and health records."""
    return aggregate_id(tenant, "cluster", cluster_id)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What the windows read of one cluster. ``members`` is the aggregate state's own mapping
    (every member not yet terminated), not a copy, so a view costs the same whatever the size
    of the cluster and can be derived after every commit."""

    tenant: str
    cluster_id: str
    min: int
    max: int
    thresholds: Mapping[str, float]
    members: Mapping[str, MemberState]
    state: ClusterState
    """The aggregate's state itself: what the cluster would make of a verdict is asked of it."""
    tolerance: float = 0.0
    """The autoscaling policy's tolerance band (``ScalingInputs.tolerance``)."""
    forecast: ForecastSpec | None = None
    """The policy's predictive scaling (``streams.forecast``); None: off."""


def view_of(state: ClusterState) -> ClusterView | None:
    """The view of a cluster's state; None before it is created and once it is terminated."""
    spec = state.spec
    if spec is None or state.status == ClusterStatus.TERMINATED:
        return None
    return ClusterView(
        parse_aggregate_id(state.aggregate_id).tenant,
        spec.cluster_id,
        state.min,
        state.max,
        spec.thresholds,
        state.members,
        state,
        spec.tolerance,
        spec.forecast,
    )


def active_members(view: ClusterView) -> list[str]:
    """Members whose figures count: Active and neither leaving nor obsolete (HPA's lesson:
    not-yet-ready members stay out of the averages)."""
    return [m.member_id for m in view.members.values() if m.is_active]


def combined(figures: list[WindowFigures]) -> WindowFigures | None:
    """The figures of a sum of series (requests in flight over several network partitions):
    average, gradient and second derivative are linear, so they add up."""
    if not figures:
        return None
    return WindowFigures(
        average=sum(f.average for f in figures),
        gradient=sum(f.gradient for f in figures),
        second_derivative=sum(f.second_derivative for f in figures),
        count=sum(f.count for f in figures),
        first_ts=min(f.first_ts for f in figures),
        last_ts=max(f.last_ts for f in figures),
    )


@dataclass
class MemberWindows:
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
    forecaster: Forecaster | None = None
    """The load history and forecast, while the policy asks for one."""
    settled: bool = True
    """The cluster holds what the last verdict sent to it asked (or none was sent by this worker,
    whose view is caught up when it starts): a verdict that changes nothing need not be sent.
    After a verdict that changed something, the next one is sent even if this worker's view
    says it changes nothing, so a scale-down count the view has not seen yet is reset."""

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
    send: bool = True
    """False: the cluster would decide it to no event (kept in ``HealthBook.latest`` only)."""

    def command_id(self, hop_index: int) -> str:
        """The ScaleCluster's id names the cluster, the latest sample and the hop: a hop sent
        again (a worker restarted within it) is a duplicate the cluster ignores."""
        return f"{self.key}:scale:{self.causation_id}:{hop_index}"


@dataclass(frozen=True)
class Fault:
    key: str
    tenant: str
    fault: MemberFault


class Rejected(ValueError):
    """A health record that validates as a schema but not against what the platform knows."""


class HealthBook:
    """The windows of the clusters this worker owns, and the rules that read them.

    ``max_skew`` and ``max_age`` (seconds) bound a sample's timestamp against the worker's
    wall clock. ``failures`` counts, per cluster key, the hops whose decision or fault check
    raised: one cluster's bug is logged and counted, and the others are still decided."""

    def __init__(
        self, window_seconds: float, fault_seconds: float, max_skew: float = 30.0, max_age: float = 300.0
    ) -> None:
        self.window_seconds = window_seconds
        self.fault_seconds = fault_seconds
        self.max_skew = max_skew
        self.max_age = max_age
        self.clusters: dict[str, ClusterWindows] = {}
        self.failures: Counter[str] = Counter()
        self.latest: dict[str, Decision] = {}
        """cluster key -> its last verdict, sent or not: what the cluster rests on now."""

    def ingest(
        self, record: Envelope, views: Mapping[str, ClusterView], partition: int, received_at: float, now: float
    ) -> None:
        """Add one valid HealthRecord's samples (a ``HealthStat``: one metric; a ``MemberHealth``:
        every metric of one member's publish); raises Rejected naming the unknown id, the
        missing field or the timestamp out of bounds (``now``: the worker's epoch seconds), and
        then adds none of the record's samples. MemberFault records (this app's own output) are
        not samples."""
        stat = record.payload
        if not isinstance(stat, HealthStat | MemberHealth):
            return
        self._check_time(stat.timestamp, now)
        key = cluster_key(record.tenant, stat.cluster_id)
        view = views.get(key)
        if view is None:
            raise Rejected(f"payload.cluster_id: unknown cluster {stat.cluster_id!r} of tenant {record.tenant!r}")
        book = self.clusters.get(key)
        if book is None:
            book = self.clusters[key] = ClusterWindows(record.tenant, stat.cluster_id, partition)
        ts, newest = stat.timestamp, book.newest
        if isinstance(stat, MemberHealth):
            member = self._member(book, view, stat.member_id, stat.cluster_id, "MemberHealth")
            member.heard_at, member.faulted = received_at, False
            for metric, value in stat.metrics.items():
                member.windows[metric].add(ts, value)
                newest[metric] = max(ts, newest.get(metric, ts))
        else:
            if stat.metric == REQUESTS_IN_FLIGHT:
                window = book.requests.get(stat.network_partition_id)
                if window is None:
                    window = book.requests[stat.network_partition_id] = SlidingWindow(self.window_seconds)
            else:
                member = self._member(book, view, stat.member_id, stat.cluster_id, stat.metric)
                member.heard_at, member.faulted = received_at, False
                window = member.windows[stat.metric]
            window.add(ts, stat.value)
            newest[stat.metric] = max(ts, newest.get(stat.metric, ts))
        book.partition, book.last_record_id = partition, record.id

    def _check_time(self, ts: float, now: float) -> None:
        if ts > now + self.max_skew:
            raise Rejected(
                f"payload.timestamp: {ts:.3f} is {ts - now:.0f} s ahead of the worker's "
                f"clock ({now:.3f}), more than the {self.max_skew:g} s skew allowed"
            )
        if ts < now - self.max_age:
            raise Rejected(
                f"payload.timestamp: {ts:.3f} is {now - ts:.0f} s old (worker clock "
                f"{now:.3f}), older than the {self.max_age:g} s max age"
            )

    def _member(
        self, book: ClusterWindows, view: ClusterView, member_id: str | None, cluster_id: str, what: str
    ) -> MemberWindows:
        if member_id is None:
            raise Rejected(f"payload.member_id: required for {what}")
        if member_id not in view.members:
            raise Rejected(f"payload.member_id: unknown member {member_id!r} of cluster {cluster_id!r}")
        member = book.members.get(member_id)
        if member is None:
            member = book.members[member_id] = MemberWindows(
                {m: SlidingWindow(self.window_seconds) for m in MEMBER_METRICS}
            )
        return member

    def decide(self, views: Mapping[str, ClusterView], now: float) -> list[Decision]:
        """The verdicts to send this hop: those of clusters with fresh figures that the cluster
        would act on (``now``: the worker's epoch seconds, for the scale-down stabilisation)."""
        return [decision for decision in self.assess(views, now) if decision.send]

    def assess(self, views: Mapping[str, ClusterView], now: float) -> list[Decision]:
        """One verdict per cluster with fresh figures, sent or not; none where nothing new arrived."""
        decisions = []
        for key, book in list(self.clusters.items()):
            view = views.get(key)
            if view is None:  # terminated (or never created): nothing left to scale
                del self.clusters[key]
                self.latest.pop(key, None)
                continue
            try:
                book.evict(self.window_seconds)
                decision = self._decide(key, book, view, now)
            except Exception:
                self._failed(key, "decision")
                continue
            if decision is not None:
                self.latest[key] = decision
                decisions.append(decision)
        return decisions

    def _failed(self, key: str, what: str) -> None:
        self.failures[key] += 1
        log.exception("%s of cluster %s failed (%d so far); the other clusters go on", what, key, self.failures[key])

    def _decide(self, key: str, book: ClusterWindows, view: ClusterView, now: float) -> Decision | None:
        for gone in [m for m in book.members if m not in view.members]:
            del book.members[gone]
        active = active_members(view)
        heard = [book.members[m] for m in active if m in book.members]
        per_metric: dict[str, list[WindowFigures]] = {}
        for metric in MEMBER_METRICS:
            per_metric[metric] = [f for member in heard if (f := member.windows[metric].figures()) is not None]
        requests = combined([f for w in book.requests.values() if (f := w.figures()) is not None])
        per_metric[REQUESTS_IN_FLIGHT] = [requests] if requests else []
        fresh = {m for m in METRICS if book.newest.get(m, float("-inf")) > book.decided.get(m, float("-inf"))}
        requirement = decide_required(
            ScalingInputs(
                min_count=view.min,
                max_count=view.max,
                thresholds=view.thresholds,
                figures={m: (f if m in fresh else []) for m, f in per_metric.items()},
                current=len(active),
                tolerance=view.tolerance,
            )
        )
        if requirement.metric is None:
            return None
        book.decided = dict(book.newest)
        stale = {m: "Stale" for m in METRICS if m not in fresh and per_metric[m] and m in view.thresholds}
        requirement = evolve(requirement, {"ignored": {**requirement.ignored, **stale}})
        partitions = set(book.requests) | {view.members[m].network_partition_id for m in active if m in book.members}
        outlook = self._outlook(book, view, requests if REQUESTS_IN_FLIGHT in fresh else None)
        required = combined_required(requirement.required, outlook)
        figures = figures_of(requirement, {m: per_metric[m] for m in fresh}, view.thresholds, len(active))
        reason = explain(requirement, view.thresholds)
        if outlook is not None:
            figures |= outlook_figures(outlook, required > requirement.required)
            reason += (
                f"; {outlook.mode}: {outlook.predicted:.4g} in flight due within "
                f"{outlook.buffer:g} s needs {outlook.required}"
            )
        command = C.ScaleCluster(
            network_partition_id=next(iter(partitions)) if len(partitions) == 1 else None,
            required=required,
            metric=requirement.metric,
            reason=reason,
            figures=figures,
            member_load=member_load(book, active),
        )
        changes = _changes(view.state, command, now)
        send, book.settled = changes or not book.settled, not changes
        return Decision(key, book.tenant, command, book.last_record_id, requirement, send)

    @staticmethod
    def _outlook(book: ClusterWindows, view: ClusterView, requests: WindowFigures | None) -> Outlook | None:
        """The policy's forecast at this hop (``streams.forecast``), its history fed with the
        cluster's total requests in flight; None when the policy asks for none or it cannot
        tell yet (less than two seasons of history)."""
        threshold = view.thresholds.get(REQUESTS_IN_FLIGHT)
        if view.forecast is None or threshold is None:
            book.forecaster = None
            return None
        if book.forecaster is None or book.forecaster.spec != view.forecast:
            book.forecaster = Forecaster.of(view.forecast)
        if requests is not None:
            book.forecaster.observe(requests.last_ts, requests.average)
        now = max(book.newest.values())
        return book.forecaster.outlook(now, threshold)

    def faults(self, views: Mapping[str, ClusterView], now: float) -> list[Fault]:
        """Active members heard from once and silent for longer than the fault time; one fault
        per silence (a member heard again may fault again later)."""
        found = []
        for key, book in self.clusters.items():
            view = views.get(key)
            if view is None:
                continue
            try:
                found += self._silent(key, book, view, now)
            except Exception:
                self._failed(key, "fault check")
        return found

    def _silent(self, key: str, book: ClusterWindows, view: ClusterView, now: float) -> list[Fault]:
        active = set(active_members(view))
        found = []
        for member_id, member in book.members.items():
            if member.faulted or member.heard_at is None or member_id not in active:
                continue
            silent = now - member.heard_at
            if silent > self.fault_seconds:
                member.faulted = True
                found.append(
                    Fault(
                        key,
                        book.tenant,
                        MemberFault(cluster_id=book.cluster_id, member_id=member_id, silent_seconds=silent),
                    )
                )
        return found

    def keep_partitions(self, partitions: set[int]) -> None:
        """Forget clusters of partitions this worker no longer owns (another worker decides
        for them now; their members must not look silent here)."""
        for key in [k for k, b in self.clusters.items() if b.partition not in partitions]:
            del self.clusters[key]
            self.latest.pop(key, None)


def _changes(state: ClusterState, command: C.ScaleCluster, now: float) -> bool:
    """The cluster's own answer (``actors.cluster.scaling_changes``); a verdict it would
    reject is sent, so that the rejection is the cluster's, with its reason."""
    try:
        return scaling_changes(state, command, datetime.fromtimestamp(now, UTC))
    except Rejection:
        return True


def explain(requirement: ScalingRequirement, thresholds: Mapping[str, float]) -> str:
    """Reason word, then the sentence behind it: `AboveMax: load_average predicted 61.2 over
    threshold 25 needs 5 members`."""
    metric = requirement.metric
    assert metric is not None
    return (
        f"{requirement.reason}: {metric} predicted {requirement.predicted[metric]:.4g} "
        f"against threshold {thresholds[metric]:g} needs {requirement.by_metric[metric]} members"
    )


def figures_of(
    requirement: ScalingRequirement,
    voted: Mapping[str, list[WindowFigures]],
    thresholds: Mapping[str, float],
    active: int,
) -> dict[str, float]:
    """Flat `metric.figure` numbers behind the verdict; per-member metrics are the means over
    the members that voted. JSON has no infinity, so a figure that is not finite (a policy may
    set an infinite threshold) is left out rather than sent as null."""
    out: dict[str, float] = {"active_members": float(active)}
    for metric, windows in voted.items():
        if metric not in requirement.by_metric or not windows:
            continue
        n = len(windows)
        out.update(
            {
                f"{metric}.average": sum(f.average for f in windows) / n,
                f"{metric}.gradient": sum(f.gradient for f in windows) / n,
                f"{metric}.second_derivative": sum(f.second_derivative for f in windows) / n,
                f"{metric}.predicted": requirement.predicted[metric],
                f"{metric}.threshold": thresholds[metric],
                f"{metric}.required": float(requirement.by_metric[metric]),
                f"{metric}.samples": float(sum(f.count for f in windows)),
                f"{metric}.windows": float(n),
                f"{metric}.last_ts": max(f.last_ts for f in windows),
            }
        )
    return {name: value for name, value in out.items() if math.isfinite(value)}


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


def verdict_now(
    state: ClusterState, samples: list[Envelope], window_seconds: float, now: float
) -> tuple[ClusterView, Decision | None]:
    """A cluster's verdict at ``now`` from its state and its health records, by the worker's own
    rules: what a steady cluster rests on, though no verdict of it was sent. The samples of
    the last window count (older ones, and those of members the cluster no longer has, do
    not). Raises ValueError when the cluster does not exist (or no longer does)."""
    view = view_of(state)
    if view is None:
        raise ValueError(f"cluster {state.aggregate_id!r} does not exist (never created, or terminated)")
    views = {state.aggregate_id: view}
    book = HealthBook(window_seconds, math.inf, max_skew=math.inf, max_age=window_seconds)
    for record in samples:
        try:
            book.ingest(record, views, 0, now, now)
        except Rejected:
            continue  # out of the window, or about a member gone: it no longer counts
    verdicts = book.assess(views, now)
    return view, verdicts[0] if verdicts else None
