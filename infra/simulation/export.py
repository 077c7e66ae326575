"""A recorded load is a scenario: `stratos scenario export` reads what the events log and the
health topic hold of one cluster over a period and writes a scenario file the simulator runs.

What is taken from the log:

- the definitions as the deployment resolved them (the application aggregate's ``resolved``
  bodies and its own definition), so the autoscaling policy is the one in force;
- the load per metric as a trace (``<file>.<metric>.csv``, time_s,value from ``--from``):
  requests in flight as the cluster's total (summed over network partitions), load average as
  the total over the members (``shared``: spread over the members the simulation runs), memory
  as the members' mean (``per-member``);
- the instances' start-up delay (spawn request to Active: median, and half the 10-90 % spread as
  jitter) and the node start failure rate, measured over the period;
- the platform's settings that shape decisions (health window, hop, timeouts).

``compare`` then matches production's scaling decisions (``ScalingDecided`` with a spawn or a
terminate, placed at the time of the newest sample its ``ScaleCluster`` read) with a
simulation's, each within one hop, and names a cause for every one left over.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from actors.history import events_of
from actors.runtime import Tracked
from infra.replay.timetravel import _records_of, commits_of
from infra.settings import Settings
from infra.simulation.scenario import DEFINITION_SECTIONS
from schemas import events as E
from schemas.ids import aggregate_id
from schemas.status import MemberHealth
from streams.scaling_rules import LOAD_AVERAGE, MEMORY_CONSUMPTION, REQUESTS_IN_FLIGHT
from streams.simulation import EPOCH, RunResult

SECTION_OF = {kind: section for section, kind in DEFINITION_SECTIONS.items()}
MODEL_OF = {REQUESTS_IN_FLIGHT: "shared", LOAD_AVERAGE: "shared", MEMORY_CONSUMPTION: "per-member"}


class ExportError(ValueError):
    """What the log cannot give for the period asked, in one line."""


@dataclass(frozen=True)
class Move:
    """One scaling decision that changed the fleet, at ``t`` seconds into the period."""

    t: float
    spawn: int
    terminate: int
    active: int
    reason: str

    @property
    def word(self) -> str:
        return f"+{self.spawn}" if self.spawn else f"-{self.terminate}"

    def as_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "change": self.word, "active": self.active, "reason": self.reason}


@dataclass
class Recorded:
    """A cluster's period as the log holds it, ready to be written as a scenario."""

    cluster_id: str
    alias: str
    since: datetime
    until: datetime
    scenario: dict[str, Any]
    traces: dict[str, list[tuple[float, float]]]
    moves: list[Move]
    active_at_start: int
    measured: dict[str, float] = field(default_factory=dict)


def _moves(events: Iterable[tuple[datetime, Any]], since: datetime) -> list[Move]:
    return [
        Move((at - since).total_seconds(), e.spawn, e.terminate, e.active, e.reason)
        for at, e in events
        if isinstance(e, E.ScalingDecided) and (e.spawn or e.terminate)
    ]


def _data_time(hop: Any) -> datetime | None:
    """When the newest sample a ScaleCluster decided on was taken: production's decision on the
    simulation's time axis, where a hop decides at once on the samples of its instant (the live
    worker's hop timer, the command's and the commit's way through Kafka come after)."""
    stamps = [v for k, v in hop.payload.figures.items() if k.endswith(".last_ts")]
    return datetime.fromtimestamp(max(stamps), tz=hop.occurred_at.tzinfo) if stamps else None


def _startup(events: list[tuple[datetime, Any]]) -> tuple[float, float, float]:
    """(median start-up delay, jitter, node start failure rate) of the period's members."""
    asked: dict[str, datetime] = {}
    delays: list[float] = []
    starts = failures = 0
    for at, event in events:
        if isinstance(event, E.MemberSpawnRequested):
            asked[event.member_id] = at
        elif isinstance(event, E.MemberActivated) and event.member_id in asked:
            delays.append((at - asked.pop(event.member_id)).total_seconds())
        if isinstance(event, E.MemberInitialized):
            starts += 1
        elif isinstance(event, E.MemberStartFailed):
            starts += 1
            failures += 1
    if not delays:
        return 60.0, 0.0, failures / starts if starts else 0.0
    median = statistics.median(delays)
    if len(delays) >= 3:
        deciles = statistics.quantiles(delays, n=10, method="inclusive")
        jitter = (deciles[-1] - deciles[0]) / 2
    else:
        jitter = (max(delays) - min(delays)) / 2
    return median, min(jitter, median), min(failures / starts, 0.99) if starts else 0.0


def _traces(samples: Sequence[Any], since: datetime, until: datetime, step: float) -> dict[str, list]:
    """metric -> [(time_s, value)]: per step, the total (or mean) over partitions and members
    of each one's mean within the step."""
    start, end = since.timestamp(), until.timestamp()
    cells: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in samples:
        stat = record.payload
        if not start <= stat.timestamp <= end:
            continue
        k = int((stat.timestamp - start) // step)
        if isinstance(stat, MemberHealth):  # one member's publish, every metric in one record
            for name, value in stat.metrics.items():
                cells[(name, k)][stat.member_id].append(value)
            continue
        cells[(stat.metric, k)][stat.member_id or stat.network_partition_id].append(stat.value)
    traces: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (metric, k), sources in sorted(cells.items()):
        means = [sum(v) / len(v) for v in sources.values()]
        value = sum(means) / len(means) if MODEL_OF[metric] == "per-member" else sum(means)
        traces[metric].append((k * step, value))
    return dict(traces)


def read_period(settings: Settings, tenant: str, cluster_id: str, since: datetime, until: datetime) -> Recorded:
    """The cluster's period from the log (events and health topics); ExportError naming what
    is missing: an unknown cluster, a period before it or without health records."""
    if until <= since:
        raise ExportError(f"--to {until.isoformat()} is not after --from {since.isoformat()}")
    key = aggregate_id(tenant, "cluster", cluster_id)
    seen = {hop.id: t for hop in _records_of(settings, "commands", key, ("ScaleCluster",)) if (t := _data_time(hop))}
    tracked = Tracked.new(key)
    events: list[tuple[datetime, Any]] = []
    active_at_start = 0
    for _p, _o, commit in commits_of(settings, key):
        if commit.occurred_at > until:
            break
        if commit.occurred_at <= since:
            tracked.fold_commit(commit)
            active_at_start = sum(m.is_active for m in tracked.state.members.values())  # type: ignore[attr-defined]
            continue
        tracked.fold_commit(commit)
        decided_on = seen.get(commit.causation_id or "")
        events += [
            (decided_on if decided_on and isinstance(e.payload, E.ScalingDecided) else e.occurred_at, e.payload)
            for e in events_of(commit)
        ]
    spec = tracked.state.spec  # type: ignore[attr-defined]
    if spec is None:
        raise ExportError(
            f"--cluster: no cluster {cluster_id!r} of tenant {tenant!r} in the log by {until.isoformat()}"
        )
    samples = _records_of(settings, "health", key, ("HealthStat", "MemberHealth"))
    step = settings.health_hop_seconds
    traces = _traces(samples, since, until, step)
    if not traces:
        raise ExportError(
            f"--from/--to: no health records of cluster {cluster_id!r} between {since.isoformat()} "
            f"and {until.isoformat()}"
        )
    app_key = aggregate_id(tenant, "application", spec.application_id)
    app = Tracked.new(app_key)
    for _p, _o, commit in commits_of(settings, app_key):
        if commit.occurred_at > until:
            break
        app.fold_commit(commit)
    state = app.state
    delay, jitter, failure_rate = _startup(events)
    sections: dict[str, list[dict]] = defaultdict(list)
    for name, body in sorted(state.resolved.items()):  # type: ignore[attr-defined]
        sections[SECTION_OF[name.split("/", 1)[0]]].append(body)
    sections["applications"].append(state.definition)  # type: ignore[attr-defined]
    scenario = {
        "name": f"{cluster_id} from {since.isoformat()} to {until.isoformat()}",
        "description": "exported from the log by `stratos scenario export`",
        "seed": 0,
        "duration": round((until - since).total_seconds(), 3),
        "step": step,
        "tenant": tenant,
        "definitions": {s: sections[s] for s in DEFINITION_SECTIONS if sections.get(s)},
        "deploy": [{"application": spec.application_id, "policy": state.application_policy_id}],  # type: ignore[attr-defined]
        "instances": {
            "startup_delay": round(delay, 3),
            "startup_jitter": round(jitter, 3),
            "start_failure_rate": round(failure_rate, 4),
        },
        "platform": {
            "health_window": settings.health_window_seconds,
            "member_fault": settings.member_fault_seconds,
            "reconcile": settings.cloud_reconcile_seconds,
            "start_attempts": settings.cloud_start_attempts,
            "retry": settings.cloud_retry_seconds,
            "pending_timeout": settings.pending_timeout_seconds,
            "termination_timeout": settings.termination_timeout_seconds,
            "obsolete_timeout": settings.obsolete_timeout_seconds,
        },
    }
    return Recorded(
        cluster_id,
        spec.alias,
        since,
        until,
        scenario,
        traces,
        _moves(events, since),
        active_at_start,
        {"startup_delay_s": delay, "startup_jitter_s": jitter, "start_failure_rate": failure_rate},
    )


def write_scenario(recorded: Recorded, path: Path) -> list[Path]:
    """The scenario file and its traces beside it (``<stem>.<metric>.csv``); the paths written."""
    written = []
    loads = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"-o: cannot write {path}: {exc.strerror}") from None
    for metric, points in sorted(recorded.traces.items()):
        trace = path.with_name(f"{path.stem}.{metric}.csv")
        trace.write_text("time_s,value\n" + "".join(f"{t:g},{v:.6g}\n" for t, v in points))
        written.append(trace)
        loads.append({"cluster": recorded.alias, "metric": metric, "model": MODEL_OF[metric], "trace": trace.name})
    header = (
        f"# {recorded.cluster_id}: the load, definitions and instances recorded in the log from\n"
        f"# {recorded.since.isoformat()} to {recorded.until.isoformat()} (`stratos scenario export`).\n"
        f"# Production's scaling decisions over the period: {len(recorded.moves)}.\n"
    )
    path.write_text(header + yaml.safe_dump({**recorded.scenario, "load": loads}, sort_keys=False))
    written.insert(0, path)
    return written


def simulated_moves(result: RunResult, cluster_id: str) -> list[Move]:
    """The simulation's scaling decisions of one cluster, on the period's time axis (the
    simulation's time 0 is ``--from``)."""
    assert result.log is not None, "run the simulation with keep_log=True"
    key = next(k for k, t in result.clusters.items() if t.cluster_id == cluster_id)
    return _moves(((r.occurred_at, r.payload) for r in result.log if r.aggregate_id == key), EPOCH)


@dataclass(frozen=True)
class Difference:
    t: float
    production: Move | None
    simulation: Move | None
    cause: str

    def as_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "production": self.production.as_json() if self.production else None,
            "simulation": self.simulation.as_json() if self.simulation else None,
            "cause": self.cause,
        }


def compare(
    production: Sequence[Move], simulation: Sequence[Move], hop: float, warm_up: float = 0.0
) -> tuple[int, list[Difference]]:
    """(decisions matched, differences): each production decision is matched with the first
    unmatched simulated one of the same change within one hop. A difference names its cause:
    the fleets differed (the instances started at other times), the same change came more than
    a hop apart, or the load read differently (the figures behind it, from the reason)."""
    unmatched = list(simulation)
    matched = 0
    differences: list[Difference] = []
    for move in production:
        twin = next((s for s in unmatched if s.word == move.word and abs(s.t - move.t) <= hop + 1e-6), None)
        if twin is not None:
            unmatched.remove(twin)
            matched += 1
            continue
        differences.append(Difference(move.t, move, None, _cause(move, simulation, hop, warm_up, "production")))
    for move in unmatched:
        differences.append(Difference(move.t, None, move, _cause(move, production, hop, warm_up, "simulation")))
    return matched, sorted(differences, key=lambda d: d.t)


def _cause(move: Move, others: Sequence[Move], hop: float, warm_up: float, side: str) -> str:
    other = "simulation" if side == "production" else "production"
    if move.t < warm_up:
        return f"warm-up: the simulation starts without members, production had them at --from ({move.t:.1f} s)"
    same = [o for o in others if o.word == move.word]
    if same:
        near = min(same, key=lambda o: abs(o.t - move.t))
        lag = near.t - move.t
        return (
            f"timing: the {other} made the same change ({near.word}) {abs(lag):.1f} s "
            f"{'later' if lag > 0 else 'earlier'} ({abs(lag) / hop:.1f} hops)"
        )
    before = [o for o in others if o.t <= move.t + hop]
    fleet = before[-1].active + before[-1].spawn - before[-1].terminate if before else None
    if fleet is not None and fleet != move.active:
        return (
            f"fleet: {side} had {move.active} active members here, the {other} ~{fleet} "
            "(instances started at other times)"
        )
    return f"load: the {other} read the figures otherwise ({side}: {move.reason})"
