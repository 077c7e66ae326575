"""What-if: the recorded health statistics of a period run through the same window maths,
scaling rules and cluster decision with a changed autoscaling policy, hop by recorded hop.

Open loop, on purpose: at every hop the what-if verdict is taken against the cluster as it
really was then (its members, its consecutive scale-down count), so each line compares two
answers to the same question: "with these figures and this fleet, what would the platform
have decided?". What the changed fleet would have measured afterwards is not in the log, and
`stratos simulate` is the tool for that closed loop.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from actors import cluster
from actors.base import Context, Rejection, evolve
from actors.runtime import Tracked
from schemas import commands as C
from schemas.events import ScalingDecided
from schemas.records import CommandRecord, Commit, LogRecord
from streams.health_state import Decision, HealthBook, Rejected, view_of

UNBOUNDED = float("inf")


@dataclass(frozen=True)
class Verdict:
    at: datetime
    hop_id: str
    recorded_required: int
    recorded_spawn: int
    recorded_terminate: int
    recorded_reason: str
    what_if_required: int | None
    what_if_spawn: int
    what_if_terminate: int
    what_if_reason: str

    @property
    def differs(self) -> bool:
        return (self.recorded_spawn, self.recorded_terminate) != (self.what_if_spawn, self.what_if_terminate)

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.at.isoformat(),
            "hop": self.hop_id,
            "recorded": {
                "required": self.recorded_required,
                "spawn": self.recorded_spawn,
                "terminate": self.recorded_terminate,
                "reason": self.recorded_reason,
            },
            "what_if": {
                "required": self.what_if_required,
                "spawn": self.what_if_spawn,
                "terminate": self.what_if_terminate,
                "reason": self.what_if_reason,
            },
            "differs": self.differs,
        }


@dataclass
class WhatIf:
    verdicts: list[Verdict]
    samples_used: int
    samples_skipped: int

    def totals(self) -> dict[str, int]:
        return {
            "hops": len(self.verdicts),
            "recorded_scale_ups": sum(v.recorded_spawn > 0 for v in self.verdicts),
            "what_if_scale_ups": sum(v.what_if_spawn > 0 for v in self.verdicts),
            "recorded_scale_downs": sum(v.recorded_terminate > 0 for v in self.verdicts),
            "what_if_scale_downs": sum(v.what_if_terminate > 0 for v in self.verdicts),
            "recorded_members_started": sum(v.recorded_spawn for v in self.verdicts),
            "what_if_members_started": sum(v.what_if_spawn for v in self.verdicts),
            "differing_hops": sum(v.differs for v in self.verdicts),
        }


def _decided(events: Iterable[Any]) -> ScalingDecided | None:
    return next((e for e in events if isinstance(e, ScalingDecided)), None)


def what_if(
    cluster_key: str,
    commits: list[Any],
    samples: list[Any],
    hops: list[Any],
    policy: Mapping[str, Any],
    window_seconds: float,
    since: datetime | None = None,
    until: datetime | None = None,
) -> WhatIf:
    """`commits`: the cluster's commits (LogRecords, log order); `samples`: its HealthRecords;
    `hops`: the recorded ScaleCluster CommandRecords; `policy`: the spec fields a policy sets
    (`actors.topology_plan.scaling_settings`). Hops outside [since, until] are not compared
    (the windows still fill from the samples before `since`)."""
    by_cause = {c.causation_id: c for c in commits}
    tracked = Tracked.new(cluster_key)
    book = HealthBook(window_seconds, fault_seconds=UNBOUNDED, max_skew=UNBOUNDED, max_age=UNBOUNDED)
    ids = (f"what-if-{n}" for n in itertools.count())
    steps = sorted(
        [(c.occurred_at, 0, n, c) for n, c in enumerate(commits)]
        + [(s.occurred_at, 1, n, s) for n, s in enumerate(samples)]
        + [(h.occurred_at, 2, n, h) for n, h in enumerate(hops)],
        key=lambda s: s[:3],
    )
    verdicts: list[Verdict] = []
    used = skipped = 0
    for at, kind, _n, record in steps:
        if kind == 0:
            tracked.fold_commit(record)
            continue
        view = view_of(tracked.state)  # type: ignore[arg-type]
        if view is None:
            skipped += kind == 1
            continue
        views = {
            cluster_key: dataclasses.replace(
                view,
                thresholds=dict(policy["thresholds"]),
                tolerance=policy["tolerance"],
                forecast=policy.get("forecast"),
            )
        }
        if kind == 1:
            try:
                book.ingest(record, views, 0, at.timestamp(), at.timestamp())
                used += 1
            except Rejected:
                skipped += 1  # a member the cluster did not know yet (or any more)
            continue
        decision = next((d for d in book.assess(views, at.timestamp()) if d.key == cluster_key), None)
        if (since and at < since) or (until and at > until):
            continue
        verdicts.append(_verdict(tracked, policy, record, by_cause.get(record.id), decision, at, ids))
    return WhatIf(verdicts, used, skipped)


def _verdict(
    tracked: Tracked,
    policy: Mapping[str, Any],
    hop: CommandRecord,
    commit: LogRecord | None,
    decision: Decision | None,
    at: datetime,
    ids: Iterator[str],
) -> Verdict:
    recorded: C.ScaleCluster = hop.payload
    done = _decided(cast(Commit, commit.payload).events) if commit is not None else None
    spawn = terminate = 0
    required, reason = None, "no fresh figures: no verdict"
    if decision is not None:
        required, reason = decision.command.required, decision.command.reason
        state = cast(cluster.ClusterState, tracked.state)
        spec = state.spec.model_copy(update=dict(policy))  # type: ignore[union-attr]
        try:
            would = _decided(
                cluster.decide(
                    evolve(state, {"spec": spec}), decision.command, Context(now=at, new_id=lambda: next(ids))
                )
            )
        except Rejection as exc:
            would, reason = None, f"rejected: {exc.reason}"
        if would is not None:
            spawn, terminate, reason = would.spawn, would.terminate, f"{would.reason}: {reason}"
    return Verdict(
        at,
        hop.id,
        recorded.required,
        done.spawn if done else 0,
        done.terminate if done else 0,
        f"{done.reason}: {recorded.reason}" if done else f"no change: {recorded.reason}",
        required,
        spawn,
        terminate,
        reason,
    )
