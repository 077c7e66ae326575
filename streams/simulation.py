"""The load simulator's engine: the platform's own domain code, driven on a simulated clock.

Nothing here is a model of Stratos: every decision is the live platform's. Commands go through
``actors.runtime.handle`` on each aggregate's ``Tracked`` (the node's step: decide, one commit,
fold), events through ``actors.reactions.react`` (the reactor), the IaaS side through
``actors.iaas_plan`` (the cloud controller's and the simulated agents' rules), health samples
into ``streams.health_state.HealthBook`` (the faust worker's windows, scaling rules and fault
detector) read against views derived from the cluster states by ``view_of``. What is simulated
is only the world outside the platform: the load (``streams.load_shapes``), the instances'
start-up time, start failures and crashes, and time itself.

Time is discrete-event: everything due at one instant (a cascade of commands, events, replies,
instance status) is delivered in FIFO order before time moves on; instance boots, retries and
shutdowns are scheduled at their own instants; health is sampled, decided on and checked for
silence every ``step`` seconds. The clock and the ids in every ``Context`` come from the
simulation (ids from a generator seeded by the scenario's seed), and random draws come from
generators seeded per purpose, so a seed gives the same log, the same timeline and the same
figures, bit for bit.

Why ``streams/``: the engine drives both the aggregates (``actors``) and the health rules
(``streams``); ``streams`` may import pure ``actors`` rules, ``actors`` may not import ``streams``.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count, islice
from typing import Any, cast

from pydantic import BaseModel

from actors.base import Context, Timeouts, built
from actors.cluster import ClusterState
from actors.history import events_of
from actors.iaas_plan import (
    CLEANUP,
    DESTROY,
    DESTROY_LEFTOVER,
    START,
    agent_answer,
    cleanup_answer,
    iaas_work,
    node_expected,
)
from actors.reactions import react
from actors.runtime import Tracked, handle, needs_timer, timeouts_command_id
from schemas import commands as C
from schemas import events as E
from schemas.definitions import DEFINITION_KINDS
from schemas.envelope import SUPER_TENANT, Envelope
from schemas.ids import aggregate_id, parse_aggregate_id
from schemas.records import CommandRecord, Commit, EventRecord, HealthRecord, InstanceStatusRecord, ReplyRecord
from schemas.status import (
    ArtifactUpdated,
    CommandRejected,
    HealthStat,
    InstanceCleanupCluster,
    InstanceCleanupMember,
    InstanceStatus,
)
from streams import elasticity
from streams.health_state import ClusterView, HealthBook, Rejected, cluster_key, view_of
from streams.load_shapes import Shape, load_series
from streams.scaling_rules import (
    MEMORY_CONSUMPTION,
    REQUESTS_IN_FLIGHT,
    required_by_load,
    required_by_memory,
    required_by_requests_in_flight,
)
from streams.steady import Inputs, Parked, fingerprint, quiet, woken

PER_MEMBER, SHARED = "per-member", "shared"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
"""Simulated time 0 (any fixed instant: the log's timestamps must not depend on the wall clock)."""


class ScenarioError(ValueError):
    """A scenario the platform cannot run; ``path`` names the field (as in the YAML)."""

    def __init__(self, path: Sequence[str | int], message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


@dataclass(frozen=True)
class InstanceModel:
    """The simulated IaaS and instances (seconds; rates are probabilities)."""

    startup_delay: float = 60.0
    """From the node's creation to the agent's InstanceStarted (then Activated at once)."""
    startup_jitter: float = 0.0
    """The start-up delay varies uniformly by ± this much."""
    start_failure_rate: float = 0.0
    """Chance that one node start fails (the cloud controller retries with backoff)."""
    crash_rate_per_hour: float = 0.0
    """Crashes per Active instance-hour (exponential): the node vanishes, the agent goes silent."""
    shutdown_delay: float = 0.0
    """The clean hook's time: from maintenance mode to ready-to-shutdown."""


@dataclass(frozen=True)
class PlatformModel:
    """The platform's settings the live parts take from ``STRATOS_*`` (infra.settings)."""

    health_window_seconds: float = 60.0
    member_fault_seconds: float = 60.0
    timer_seconds: float = 30.0
    reconcile_seconds: float = 15.0
    start_attempts: int = 3
    retry_seconds: float = 2.0
    timeouts: Timeouts = field(default_factory=Timeouts)


@dataclass(frozen=True)
class LoadSpec:
    cluster: str
    """A cartridge alias or a cluster id."""
    metric: str
    model: str
    shapes: tuple[Shape, ...]


@dataclass(frozen=True)
class SimulationSetup:
    seed: int
    duration: float
    step: float
    definitions: tuple[tuple[str, dict[str, Any]], ...]
    """(kind, Stratos JSON body) in the order they are added."""
    deploy: tuple[tuple[str, str], ...]
    """(application id, application policy id)."""
    loads: tuple[LoadSpec, ...] = ()
    instances: InstanceModel = field(default_factory=InstanceModel)
    platform: PlatformModel = field(default_factory=PlatformModel)
    tenant: str = SUPER_TENANT

    @property
    def steps(self) -> int:
        return int(math.floor(self.duration / self.step + 1e-9))


class SeededIds:
    """The id generator of every Context: 16 hex digits from a generator seeded by the run."""

    __slots__ = ("_bits",)

    def __init__(self, seed: int) -> None:
        self._bits = random.Random(f"{seed}:ids").getrandbits

    def __call__(self) -> str:
        return f"{self._bits(64):016x}"

    def block(self, n: int) -> bytes:
        """The next n ids at once (what n calls would draw, in one draw: the generator fills a
        wide number 32 bits at a time from its low end), read with `in_block`: one step's
        health records of every cluster, sleeping ones included, so every later id is the same."""
        return self._bits(64 * n).to_bytes(8 * n, "little") if n else b""

    @staticmethod
    def in_block(block: bytes, j: int) -> str:
        """The j-th id of a `block` (from 0)."""
        return f"{int.from_bytes(block[8 * j : 8 * j + 8], 'little'):016x}"


@dataclass
class Instance:
    """A simulated node and the agent on it."""

    member_id: str
    cluster_key: str
    cluster_id: str
    network_partition_id: str
    rng: random.Random
    node: bool = False
    agent_status: str | None = None
    crashed: bool = False


@dataclass
class ClusterTrack:
    """What the report reads of one cluster, per step."""

    key: str
    cluster_id: str
    alias: str
    min: int
    max: int
    thresholds: dict[str, float]
    loads: list[tuple[str, str, Sequence[float]]] = field(default_factory=list)
    """(metric, model, value at every step)."""
    demand: array[int] = field(default_factory=lambda: array("i"))
    need: array[int] = field(default_factory=lambda: array("i"))
    supply: array[int] = field(default_factory=lambda: array("i"))
    pending: array[int] = field(default_factory=lambda: array("i"))
    terminating: array[int] = field(default_factory=lambda: array("i"))
    decisions: dict[int, list[str]] = field(default_factory=dict)
    """step -> the scaling decisions made during it, as `Reason:+n` / `Reason:-n` / `Reason`."""
    scaling_actions: int = 0
    spawned: int = 0
    terminated: int = 0
    counted_state: Any = None
    counts: tuple[int, int, int] = (0, 0, 0)
    """The state last counted and its (active, pending, other) members: a state is immutable."""
    _need: tuple[Any, int] | None = None
    """(the loads, min and max it was computed for, need): one step's need, kept for the next."""
    _load_changes: list[int] | None = None

    def load_changes(self) -> list[int]:
        """The steps whose load differs from the step before's (any metric), found once."""
        if self._load_changes is None:
            changed: set[int] = set()
            for _metric, _model, series in self.loads:
                changed.update(j for j, a, b in zip(count(1), series, islice(series, 1, None)) if a != b)
            self._load_changes = sorted(changed)
        return self._load_changes

    def hold(self, k: int) -> None:
        """Repeat the last step's figures up to step ``k`` (not included): the steps the cluster
        slept, which change nothing it reports."""
        gap = k - len(self.need)
        if gap > 0:
            for series in (self.need, self.demand, self.supply, self.pending, self.terminating):
                series.extend(array("i", (series[-1],)) * gap)

    def record(self, need: int, active: int, pending: int, terminating: int) -> None:
        self.need.append(need)
        self.demand.append(max(self.min, need))
        self.supply.append(active)
        self.pending.append(pending)
        self.terminating.append(terminating)

    def need_at(self, k: int) -> int:
        """The fewest members the load of step ``k`` needs, over the metrics with a threshold."""
        inputs = (tuple(series[k] for _metric, _model, series in self.loads), self.min, self.max)
        if self._need is not None and self._need[0] == inputs:
            return self._need[1]
        need = self._need_at(k)
        self._need = (inputs, need)
        return need

    def _need_at(self, k: int) -> int:
        need = 0
        for metric, model, series in self.loads:
            threshold = self.thresholds.get(metric)
            if threshold:
                need = max(need, need_of(metric, model, series[k], threshold, self.min, self.max))
        return need

    def note(self, k: int, event: E.ScalingDecided) -> None:
        word = (
            event.reason
            + (f":+{event.spawn}" if event.spawn else "")
            + (f":-{event.terminate}" if event.terminate else "")
        )
        self.decisions.setdefault(k, []).append(word)
        if event.spawn or event.terminate:
            self.scaling_actions += 1

    def figures(self, step: float) -> dict[str, Any]:
        billed = [s + p + x for s, p, x in zip(self.supply, self.pending, self.terminating, strict=True)]
        return elasticity.figures(
            list(self.demand), list(self.supply), list(self.need), billed, step, self.scaling_actions, cap=self.max
        )


@dataclass
class RunResult:
    policy: str
    setup: SimulationSetup
    clusters: dict[str, ClusterTrack]
    commands: int
    rejected: dict[str, int]
    """command type -> rejections (a healthy run rejects only what the rules refuse)."""
    dead_letters: int
    log: list[EventRecord] | None
    """Every event in order, when kept (tests read it like the live log)."""

    def figures(self) -> dict[str, dict[str, Any]]:
        return {t.cluster_id: t.figures(self.setup.step) for t in self.clusters.values()}


def attach_loads(setup: SimulationSetup, tracks: list[ClusterTrack]) -> None:
    """Each load's series (seeded by the run's seed and the load's index, so a live run and a
    simulation of one scenario see the same load) on the clusters it names."""
    times = [k * setup.step for k in range(setup.steps)]
    for n, load in enumerate(setup.loads):
        matches = [t for t in tracks if load.cluster in (t.alias, t.cluster_id)]
        if not matches:
            known = ", ".join(sorted(t.alias for t in tracks)) or "none"
            raise ScenarioError(
                ("load", n, "cluster"), f"no cluster with alias or id {load.cluster!r} (aliases: {known})"
            )
        ceiling = 100.0 if load.metric == MEMORY_CONSUMPTION and load.model == PER_MEMBER else math.inf
        series = array("d", load_series(load.shapes, times, random.Random(f"{setup.seed}:load:{n}"), ceiling))
        for track in matches:
            track.loads.append((load.metric, load.model, series))


def sample_values(track: ClusterTrack, k: int, serving: int) -> list[tuple[str, float, bool]]:
    """(metric, value, per member?) that the instances of a cluster report at step ``k`` with
    ``serving`` Active members: requests in flight once per cluster (the load balancer's
    figure), load and memory per member, a shared total divided among the members."""
    out = []
    for metric, model, series in track.loads:
        value = series[k]
        if metric == REQUESTS_IN_FLIGHT:
            out.append((metric, value, False))
            continue
        each = value / serving if model == SHARED and serving else value
        out.append((metric, min(each, 100.0) if metric == MEMORY_CONSUMPTION else each, True))
    return out


def counts_of(state: Any) -> tuple[int, int, int]:
    """(active, pending, other) members of a cluster's state."""
    members = getattr(state, "members", {})
    active = pending = 0
    for m in members.values():
        if m.is_active:
            active += 1
        elif m.is_pending:
            pending += 1
    return active, pending, len(members) - active - pending


def samples_per_step(track: ClusterTrack, serving: int) -> int:
    """How many health records `Simulation._sample` publishes for a cluster in one step."""
    return sum(1 if metric == REQUESTS_IN_FLIGHT else serving for metric, _model, _series in track.loads)


def need_of(metric: str, model: str, value: float, threshold: float, min_count: int, max_count: int) -> int:
    """The fewest members that keep the metric within its threshold. With a shared load
    (a total spread over the members) that is ``ceil(total / threshold)``; with a per-member
    load (every member reports the value, whatever their number) it is what the platform's
    own rule asks for on the true value."""
    if model == SHARED or metric == REQUESTS_IN_FLIGHT:
        return required_by_requests_in_flight(value, threshold)
    if metric == MEMORY_CONSUMPTION:
        return required_by_memory(value, threshold, min_count, max_count)
    return required_by_load(value, threshold, min_count)


class Simulation:
    """One run of a setup; ``run()`` returns what the report needs."""

    def __init__(
        self, setup: SimulationSetup, policy: str = "scenario", keep_log: bool = False, event_driven: bool = True
    ) -> None:
        self.setup = setup
        self.policy = policy
        self.new_id = SeededIds(setup.seed)
        self.t = 0.0
        self.step_index = 0
        self.aggregates: dict[str, Tracked] = {}
        self.views: dict[str, ClusterView] = {}
        p = setup.platform
        self.book = HealthBook(
            p.health_window_seconds,
            p.member_fault_seconds,
            max_skew=setup.step,
            max_age=max(300.0, 2 * p.health_window_seconds),
        )
        self.instances: dict[str, Instance] = {}
        self.queue: deque[Envelope | BaseModel] = deque()
        self.timers: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.timer_seq = 0
        self.tracks: dict[str, ClusterTrack] = {}
        self.commands = 0
        self.rejected: dict[str, int] = {}
        self.dead_letters = 0
        self.log: list[EventRecord] | None = [] if keep_log else None
        self._ctx: Context | None = None
        self._ctx_t = -1.0
        self.nodes: dict[str, dict[str, Instance]] = {}
        """cluster key -> its instances that have a node (what the IaaS holds)."""
        self.first_rejections: list[CommandRejected] = []
        self.event_driven = event_driven and float(setup.step).is_integer()
        """Steady clusters sleep (`streams.steady`); only for whole-second steps, whose times
        move by exact additions."""
        self.parked: dict[str, Parked] = {}
        self.slept = 0
        """Cluster-steps not re-decided (the cluster was parked)."""
        self.awake: set[str] = set()
        """The tracked clusters not parked: the only ones a step visits."""
        self.track_rank: dict[str, int] = {}
        """cluster key -> its place among the tracks (health samples are published in that order)."""
        self.drawn = array("q")
        """Per track (by rank), the ids its health records drew at the last step's sampling;
        `block`: those ids, every cluster's, in one block (a woken cluster reads its last one)."""
        self.block = b""
        self.newly_parked: list[str] = []
        """Parked since the last sampling: from the next one on they draw `Parked.records` ids."""
        self.aggregate_rank: dict[str, int] = {}
        """aggregate id -> the order the node first heard of it (timers and reconciling go in it)."""
        self.timed: set[str] = set()
        """Aggregates with members in transition (`needs_timer`), kept as their states change."""
        self.nodeless: dict[str, set[str]] = {}
        """cluster key -> its members whose instance has no node (what the reconciler looks at);
        only clusters that have some."""
        self.touched: set[str] = set()
        """Parked clusters whose state, nodes or agents changed: woken at the next step."""
        self.wakes: list[tuple[int, str]] = []
        """(step, cluster key): when a parked cluster's load changes."""
        self.steady: dict[str, tuple[Inputs, tuple[Any, ...] | None]] = {}
        """cluster key -> its inputs at the previous step and, when they were the same as the
        step before, the fingerprint of its windows then."""
        self.book_rank: dict[str, int] = {}
        """The health book's clusters in the order it first heard of them (its decisions, and so
        every id drawn after them, follow that order: a woken cluster goes back to its place)."""

    # --- time -------------------------------------------------------------------------------
    def epoch(self, t: float | None = None) -> float:
        return EPOCH.timestamp() + (self.t if t is None else t)

    def ctx(self) -> Context:
        if self._ctx is None or self._ctx_t != self.t:
            self._ctx_t = self.t
            self._ctx = Context(
                now=EPOCH + timedelta(seconds=self.t), new_id=self.new_id, timeouts=self.setup.platform.timeouts
            )
        return self._ctx

    def at(self, when: float, action: Callable[..., None], *args: Any) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (when, self.timer_seq, action, args))

    # --- delivery ---------------------------------------------------------------------------
    def send(
        self, target: str, command: BaseModel, record_id: str | None = None, causation: Envelope | None = None
    ) -> None:
        self.queue.append(
            built(
                CommandRecord,
                dict(
                    schema_version=1,
                    id=record_id or self.new_id(),
                    type=command.type,  # type: ignore[attr-defined]
                    aggregate_id=target,
                    aggregate_seq=0,
                    occurred_at=self.ctx().now,
                    tenant=parse_aggregate_id(target).tenant,
                    correlation_id=(causation.correlation_id or causation.id) if causation else None,
                    causation_id=causation.id if causation else None,
                    payload=command,
                ),
            )
        )

    def drain(self) -> None:
        queue = self.queue
        while queue:
            item = queue.popleft()
            if isinstance(item, CommandRecord):
                self._command(item)
            elif isinstance(item, EventRecord):
                self._event(item)
            elif isinstance(item, (InstanceStatusRecord, HealthRecord, ReplyRecord)):
                self._react(item)
            elif isinstance(item, (InstanceCleanupMember, InstanceCleanupCluster)):
                self._cleanup(item)

    def _command(self, record: CommandRecord) -> None:
        """The node's step: the aggregate's actor runs `handle`; the commit's events follow."""
        key = record.aggregate_id
        tracked = self.aggregates.get(key)
        if tracked is None:
            tracked = self.aggregates[key] = Tracked.new(key)
            self.aggregate_rank[key] = len(self.aggregate_rank)
        before = tracked.state
        outcome = handle(tracked, record, self.ctx())
        self.commands += 1
        if tracked.state is not before:
            if needs_timer(tracked.state):
                self.timed.add(key)
            else:
                self.timed.discard(key)
        if isinstance(outcome.reply, CommandRejected):
            self.rejected[outcome.reply.command_type] = self.rejected.get(outcome.reply.command_type, 0) + 1
            if len(self.first_rejections) < 20:
                self.first_rejections.append(outcome.reply)
            self.queue.append(
                built(
                    ReplyRecord,
                    dict(  # the reactor reads replies too
                        schema_version=1,
                        id=self.new_id(),
                        type=outcome.reply.type,
                        aggregate_id=key,
                        aggregate_seq=0,
                        occurred_at=self.ctx().now,
                        tenant=record.tenant,
                        correlation_id=record.correlation_id or record.id,
                        causation_id=record.id,
                        payload=outcome.reply,
                    ),
                )
            )
        if outcome.commit is None or not cast(Commit, outcome.commit.payload).events:
            return
        if key in self.parked:
            self.touched.add(key)
        if parse_aggregate_id(key).kind == "cluster":
            view = view_of(tracked.state)  # type: ignore[arg-type]
            if view is None:
                self.views.pop(key, None)
            else:
                self.views[key] = view
        for event in events_of(outcome.commit):
            self.queue.append(event)

    def _react(self, record: Envelope) -> None:
        """The reactor: follow-up commands with ids derived from the record (as infra.reactor.reactor)."""
        for n, (target, message) in enumerate(react(record)):
            if isinstance(message, (InstanceCleanupMember, InstanceCleanupCluster)):
                self.queue.append(message)
            elif not isinstance(message, ArtifactUpdated):  # simulated instances have no artifacts
                self.send(target, message, record_id=f"{record.id}.{n}", causation=record)

    def _event(self, record: EventRecord) -> None:
        if self.log is not None:
            self.log.append(record)
        self._react(record)
        event = record.payload
        if isinstance(event, E.ScalingDecided):
            self._note_decision(record.aggregate_id, event)
        member_id = getattr(event, "member_id", None)
        if member_id is None:
            return
        key = record.aggregate_id
        state = self.aggregates[key].state
        member = state.members.get(member_id)  # type: ignore[attr-defined]
        if isinstance(event, E.MemberSpawnRequested):
            self.instances[member_id] = Instance(
                member_id,
                key,
                event.cluster_id,
                event.network_partition_id,
                random.Random(f"{self.setup.seed}:instance:{member_id}"),
            )
            self._nodeless(key, member_id, True)
            if (track := self.tracks.get(key)) is not None:
                track.spawned += 1
        elif isinstance(event, E.MemberTerminated) and (track := self.tracks.get(key)) is not None:
            track.terminated += 1
        instance = self.instances.get(member_id)
        if instance is None:
            return
        work = iaas_work(event, member)
        if work is not None:
            self._iaas(work.action, work.reason, instance, record)
        answer = agent_answer(event)
        if answer is not None and instance.node and not instance.crashed:
            if isinstance(event, E.MemberInitialized):
                m = self.setup.instances
                delay = max(0.0, m.startup_delay + instance.rng.uniform(-m.startup_jitter, m.startup_jitter))
                self.at(self.t + delay, self._say, instance, *answer, record.id)
            elif isinstance(event, E.MemberInMaintenance):
                self.at(self.t + self.setup.instances.shutdown_delay, self._say, instance, *answer, record.id)
            else:
                self._say(instance, *answer, record.id)
        if isinstance(event, E.MemberTerminated) and self.instances.pop(member_id, None) is not None:
            self._nodeless(key, member_id, False)

    def _note_decision(self, key: str, event: E.ScalingDecided) -> None:
        track = self.tracks.get(key)
        if track is None:
            return
        track.note(self.step_index, event)

    # --- the IaaS and the agents (outside the platform: simulated) ----------------------------
    def _iaas(self, action: str, reason: str | None, instance: Instance, cause: EventRecord) -> None:
        """The cloud controller's work, with the ids it gives its reports (infra.cloud.controller)."""
        if action == START:
            self._start(instance, cause, 1)
        elif action == CLEANUP:
            self.queue.append(InstanceCleanupMember(member_id=instance.member_id, cluster_id=instance.cluster_id))
        elif action == DESTROY:
            self._node(instance, False)
            self.send(
                instance.cluster_key,
                C.ReportNodeDestroyed(member_id=instance.member_id, reason=reason or ""),
                record_id=f"{cause.id}.destroyed",
                causation=cause,
            )
        elif action == DESTROY_LEFTOVER:
            self._node(instance, False)

    def _node(self, instance: Instance, exists: bool) -> None:
        self._instances_changed(instance)
        instance.node = exists
        if exists or self.instances.get(instance.member_id) is instance:
            self._nodeless(instance.cluster_key, instance.member_id, not exists)
        nodes = self.nodes.setdefault(instance.cluster_key, {})
        if exists:
            nodes[instance.member_id] = instance
        else:
            instance.agent_status = None
            nodes.pop(instance.member_id, None)

    def _nodeless(self, key: str, member_id: str, add: bool) -> None:
        members = self.nodeless.get(key)
        if add:
            self.nodeless.setdefault(key, set()).add(member_id)
        elif members is not None:
            members.discard(member_id)
            if not members:
                del self.nodeless[key]

    def _start(self, instance: Instance, cause: EventRecord, attempt: int) -> None:
        """One node start (infra.cloud.controller.start_node): fails with the scenario's rate, retried
        with a doubling backoff; reported with the controller's ids."""
        state = self.aggregates[instance.cluster_key].state
        if instance.member_id not in state.members:  # type: ignore[attr-defined]
            return
        p = self.setup.platform
        if instance.rng.random() < self.setup.instances.start_failure_rate:
            final = attempt >= p.start_attempts
            self.send(
                instance.cluster_key,
                C.ReportNodeStartFailed(
                    member_id=instance.member_id, reason="simulated start failure", attempt=attempt, final=final
                ),
                record_id=f"{cause.id}.failed.{attempt}",
                causation=cause,
            )
            if not final:
                self.at(self.t + p.retry_seconds * 2 ** (attempt - 1), self._start, instance, cause, attempt + 1)
            return
        self._node(instance, True)
        self.send(
            instance.cluster_key,
            C.ReportNodeCreated(member_id=instance.member_id, node_id=instance.member_id),
            record_id=f"{cause.id}.created",
            causation=cause,
        )

    def _say(self, instance: Instance, status_type: str, agent_status: str, cause: str | None = None) -> None:
        """The agent publishes an instance status naming the record it answers (infra.cloud.mock.simulator)."""
        if not instance.node or instance.crashed:
            return
        instance.agent_status = agent_status
        self._instances_changed(instance)
        self.queue.append(
            built(
                InstanceStatusRecord,
                dict(
                    schema_version=1,
                    id=self.new_id(),
                    type=status_type,
                    aggregate_id=instance.cluster_key,
                    aggregate_seq=0,
                    occurred_at=self.ctx().now,
                    tenant=parse_aggregate_id(instance.cluster_key).tenant,
                    correlation_id=None,
                    causation_id=cause,
                    payload=InstanceStatus(
                        type=status_type,
                        member_id=instance.member_id,
                        cluster_id=instance.cluster_id,
                        network_partition_id=instance.network_partition_id,
                    ),
                ),
            )
        )
        rate = self.setup.instances.crash_rate_per_hour
        if agent_status == "Activated" and rate > 0:
            self.at(self.t + instance.rng.expovariate(rate / 3600.0), self._crash, instance)

    def _cleanup(self, notice: BaseModel) -> None:
        targets = (
            [self.instances.get(notice.member_id)]
            if isinstance(notice, InstanceCleanupMember)
            else [
                i
                for nodes in self.nodes.values()
                for i in nodes.values()
                if i.cluster_id == notice.cluster_id  # type: ignore[attr-defined]
            ]
        )
        for instance in targets:
            if instance is not None and (answer := cleanup_answer(instance.agent_status)):
                self._say(instance, *answer)

    def _crash(self, instance: Instance) -> None:
        if instance.node and not instance.crashed:
            instance.crashed = True
            self._node(instance, False)

    def _reconcile(self) -> None:
        """The cloud controller's reconciler: members whose node must exist but vanished."""
        for key in sorted(self.nodeless, key=self.aggregate_rank.__getitem__):
            nodeless = self.nodeless[key]
            for member in getattr(self.aggregates[key].state, "members", {}).values():
                if member.member_id in nodeless and node_expected(member):
                    self.send(
                        key,
                        C.ReportNodeDestroyed(member_id=member.member_id, reason="node vanished"),
                        record_id=f"{member.member_id}.vanished",
                    )

    # --- health (the faust worker's part, on simulated time) ---------------------------------
    def _sample(self) -> None:
        """Every cluster's health records of this step, in track order. Their ids are drawn in
        one block, sleeping clusters' included (the ids they would have drawn, which keeps every
        later id the same); only awake clusters build and ingest their records."""
        now, k, drawn, rank = self.epoch(), self.step_index, self.drawn, self.track_rank
        for key in self.newly_parked:
            if (parked := self.parked.get(key)) is not None:
                drawn[rank[key]] = parked.records
        self.newly_parked.clear()
        self.slept += len(self.parked)
        samples = []
        for key in sorted(self.awake, key=rank.__getitem__):
            track = self.tracks[key]
            serving = self._serving(key) if track.loads else []
            values = sample_values(track, k, len(serving)) if serving else []
            drawn[rank[key]] = sum(len(serving) if per_member else 1 for _metric, _each, per_member in values)
            if values:
                samples.append((track, serving, values))
        self.block = block = self.new_id.block(sum(drawn))
        at = done = 0
        for track, serving, values in samples:
            i = rank[track.key]
            at += sum(drawn[done:i])
            done = i
            tenant = parse_aggregate_id(track.key).tenant
            for metric, each, per_member in values:
                for instance in serving if per_member else serving[:1]:
                    self._ingest(
                        track,
                        tenant,
                        SeededIds.in_block(block, at),
                        built(
                            HealthStat,
                            dict(
                                type="HealthStat",
                                cluster_id=track.cluster_id,
                                cluster_instance_id=None,
                                network_partition_id=instance.network_partition_id,
                                member_id=instance.member_id if per_member else None,
                                metric=metric,
                                value=each,
                                timestamp=now,
                            ),
                        ),
                    )
                    at += 1
            done += 1

    def _instances_changed(self, instance: Instance) -> None:
        """A node or an agent status of the instance's cluster changed (a sleeping cluster wakes)."""
        if instance.cluster_key in self.parked:
            self.touched.add(instance.cluster_key)

    def _serving(self, key: str) -> list[Instance]:
        return [i for i in self.nodes.get(key, {}).values() if i.agent_status == "Activated"]

    def _ingest(self, track: ClusterTrack, tenant: str, record_id: str, stat: HealthStat) -> None:
        record = built(
            HealthRecord,
            dict(
                schema_version=1,
                id=record_id,
                type="HealthStat",
                aggregate_id=track.key,
                aggregate_seq=0,
                occurred_at=self.ctx().now,
                tenant=tenant,
                correlation_id=None,
                causation_id=None,
                payload=stat,
            ),
        )
        try:
            self.book.ingest(record, self.views, 0, self.t, self.epoch())
        except Rejected:
            self.dead_letters += 1

    def _hop(self) -> None:
        hop_index = int(self.epoch() // self.setup.step)
        for decision in self.book.decide(self.views, self.epoch()):
            self.queue.append(
                built(
                    CommandRecord,
                    dict(
                        schema_version=1,
                        id=decision.command_id(hop_index),
                        type="ScaleCluster",
                        aggregate_id=decision.key,
                        aggregate_seq=0,
                        occurred_at=self.ctx().now,
                        tenant=decision.tenant,
                        correlation_id=None,
                        causation_id=decision.causation_id,
                        payload=decision.command,
                    ),
                )
            )
        for fault in self.book.faults(self.views, self.t):
            self.queue.append(
                built(
                    HealthRecord,
                    dict(
                        schema_version=1,
                        id=self.new_id(),
                        type="MemberFault",
                        aggregate_id=fault.key,
                        aggregate_seq=0,
                        occurred_at=self.ctx().now,
                        tenant=fault.tenant,
                        correlation_id=None,
                        causation_id=None,
                        payload=fault.fault,
                    ),
                )
            )

    def _timers(self) -> None:
        """The node's ticker: CheckTimeouts for aggregates with members in transition."""
        period = int(self.epoch() // self.setup.platform.timer_seconds)
        for key in sorted(self.timed, key=self.aggregate_rank.__getitem__):
            self.send(key, C.CheckTimeouts(), record_id=timeouts_command_id(key, period))

    # --- discrete events: steady clusters sleep (streams.steady) -----------------------------
    def _inputs(self, track: ClusterTrack, k: int) -> Inputs:
        return Inputs(
            self.aggregates[track.key].state,
            tuple([i.member_id for i in self._serving(track.key)]),
            tuple([series[k] for _metric, _model, series in track.loads]),
        )

    def _settle(self, k: int) -> None:
        """Park the clusters this step left as the previous one did, moved on by one step."""
        clusters, latest = self.book.clusters, self.book.latest
        for key in sorted(self.awake, key=self.track_rank.__getitem__):
            track = self.tracks[key]
            book = clusters.get(key)
            tracked = self.aggregates.get(key)
            if book is None or tracked is None or needs_timer(tracked.state) or not quiet(book, latest.get(key)):
                self.steady.pop(key, None)
                continue
            inputs, now = self._inputs(track, k), fingerprint(book, self.epoch(), self.t)
            before = self.steady.get(key)
            if before is None or not inputs.same(before[0]) or now != before[1]:
                self.steady[key] = (inputs, now)
                continue
            records = samples_per_step(track, len(self._serving(key)))
            del clusters[key], self.steady[key]
            self.parked[key] = Parked(book, k, inputs, latest[key], book.last_record_id, records)
            self.awake.discard(key)
            self.newly_parked.append(key)
            heapq.heappush(self.wakes, (self._load_changes(track, k), key))

    def _wake(self, k: int) -> None:
        """Put back, as stepping would have left them, the windows of parked clusters whose
        inputs changed (before this step's samples): their state or instances (`touched`), or
        their load (due at `Parked.wake_at`)."""
        due = self.touched
        while self.wakes and self.wakes[0][0] <= k:
            due.add(heapq.heappop(self.wakes)[1])  # maybe a cluster parked again since: woken early, still exact
        woken_keys = [key for key in due if key in self.parked]
        due.clear()
        if not woken_keys:
            return
        clusters, drawn = self.book.clusters, self.drawn
        for key in woken_keys:
            parked = self.parked.pop(key)
            self.awake.add(key)
            last_record_id, i = parked.last_record_id, self.track_rank[key]
            if parked.step < k - 1 and drawn[i]:  # it drew ids at the last sampling, asleep
                last_record_id = SeededIds.in_block(self.block, sum(drawn[:i]) + drawn[i] - 1)
            clusters[key], self.book.latest[key] = woken(parked, k - 1 - parked.step, self._later, last_record_id)
        ordered = sorted(clusters.items(), key=lambda item: self.book_rank[item[0]])
        clusters.clear()
        clusters.update(ordered)

    def _load_changes(self, track: ClusterTrack, k: int) -> int:
        """The first step after ``k`` whose load differs from step ``k``'s (or the run's end)."""
        changes = track.load_changes()
        n = bisect.bisect_right(changes, k)
        return changes[n] if n < len(changes) else self.setup.steps

    def _later(self, at: float, steps: int, epoch: bool = True) -> float:
        """A step's time (epoch seconds, else simulated) `steps` steps later, computed as the
        step loop computes it."""
        base, step = (EPOCH.timestamp() if epoch else 0.0), self.setup.step
        return base + (round((at - base) / step) + steps) * step

    def _rank(self) -> None:
        """Keep `book_rank` in step with the book: new clusters last, forgotten ones dropped."""
        clusters = self.book.clusters
        if len(clusters) + len(self.parked) == len(self.book_rank) and all(k in self.book_rank for k in clusters):
            return
        present = clusters.keys() | self.parked.keys()
        kept = [k for k in sorted(self.book_rank, key=self.book_rank.__getitem__) if k in present]
        kept += [k for k in clusters if k not in self.book_rank]
        self.book_rank = {k: n for n, k in enumerate(kept)}

    # --- the run ----------------------------------------------------------------------------
    def _define_and_deploy(self) -> None:
        tenant = self.setup.tenant
        for n, (kind, body) in enumerate(self.setup.definitions):
            model = DEFINITION_KINDS[kind].model_validate(body)
            command = getattr(C, f"Add{kind[0].upper()}{kind[1:]}")(definition=model)
            self.send(aggregate_id(tenant, kind, model.definition_id), command, record_id=f"definitions.{n}")
        for n, (app_id, policy_id) in enumerate(self.setup.deploy):
            self.send(
                aggregate_id(tenant, "application", app_id),
                C.DeployApplication(application_policy_id=policy_id),
                record_id=f"deploy.{n}",
            )
        self.drain()
        if self.first_rejections:
            first = self.first_rejections[0]
            where = (
                first.command_id.split(".") if first.command_id.startswith(("definitions.", "deploy.")) else ["deploy"]
            )
            raise ScenarioError(
                [int(p) if p.isdigit() else p for p in where], f"{first.command_type} rejected: {first.reason}"
            )
        for n, (app_id, _) in enumerate(self.setup.deploy):
            app = self.aggregates[aggregate_id(tenant, "application", app_id)].state
            for spec in app.clusters.values():  # type: ignore[attr-defined]
                key = cluster_key(tenant, spec.cluster_id)
                self.tracks[key] = ClusterTrack(
                    key, spec.cluster_id, spec.alias, spec.min, spec.max, dict(spec.thresholds)
                )
            if app.status.value in ("Created", "Deploying"):  # type: ignore[attr-defined]
                raise ScenarioError(
                    ("deploy", n),
                    f"application {app_id!r} was not deployed (status {app.status.value})",  # type: ignore[attr-defined]
                )
        self._attach_loads()
        self.track_rank = {key: n for n, key in enumerate(self.tracks)}
        self.awake = set(self.tracks)
        self.drawn = array("q", bytes(8 * len(self.tracks)))

    def _attach_loads(self) -> None:
        attach_loads(self.setup, list(self.tracks.values()))

    def _record(self) -> None:
        """The step's figures of the clusters awake, and of the parked ones whose state or
        instances changed (woken at the next step); the others' are their last ones (`hold`)."""
        k = self.step_index
        for key in self.awake | self.touched:
            track = self.tracks[key]
            track.hold(k)
            state = self.aggregates[track.key].state if track.key in self.aggregates else None
            if state is not track.counted_state or state is None:
                track.counted_state, track.counts = state, counts_of(state)
                if isinstance(state, ClusterState) and state.spec is not None:
                    # the cluster's own limits (live updates, group instances, bursting: actors.instances)
                    track.min, track.max = state.min, state.max
            # a parked cluster's load and limits are those of the step before
            track.record(track.need[-1] if track.key in self.parked else track.need_at(k), *track.counts)

    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        setup, p = self.setup, self.setup.platform
        self._define_and_deploy()
        next_timer, next_reconcile = p.timer_seconds, p.reconcile_seconds
        total = setup.steps
        for k in range(total):
            t = k * setup.step
            while self.timers and self.timers[0][0] <= t:
                when, _, action, args = heapq.heappop(self.timers)
                self.t = max(self.t, when)
                action(*args)
                self.drain()
            self.t, self.step_index = t, k
            if self.touched or (self.wakes and self.wakes[0][0] <= k):
                self._wake(k)
            self._sample()
            self._rank()
            self._hop()
            self._rank()
            if t >= next_timer:
                self._timers()
                while next_timer <= t:
                    next_timer += p.timer_seconds
            if t >= next_reconcile:
                self._reconcile()
                while next_reconcile <= t:
                    next_reconcile += p.reconcile_seconds
            self.drain()
            self._record()
            if self.event_driven:
                self._settle(k)
            if progress is not None and (k % 240 == 0 or k == total - 1):
                progress(k + 1, total)
        for track in self.tracks.values():
            track.hold(total)
        return RunResult(
            self.policy,
            setup,
            self.tracks,
            self.commands,
            dict(sorted(self.rejected.items())),
            self.dead_letters,
            self.log,
        )
