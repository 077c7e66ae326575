"""A cluster's scaling state on request (`stratos why <tenant>/cluster/<id>`, `GET /api/why/cluster/{id}`):
its members, the last decision that changed it and the figures it rested on, and the verdict of
its health now.

The health worker sends only verdicts that change a cluster (docs/adr/0007-verdicts-that-change-nothing.md),
so a steady cluster's verdicts are not in the log; this recomputes the current one from what is:
the cluster's commits and the health records of its last window, through the worker's own rules
(``streams.health_state.verdict_now``). Read without a consumer group; writes nothing.
"""

from __future__ import annotations

import time
from typing import Any

from actors.cluster import ClusterState
from actors.runtime import Tracked
from infra.replay.timetravel import _records_of, commits_of
from infra.settings import Settings
from schemas import events as E
from schemas.ids import parse_aggregate_id
from streams.health_state import verdict_now

HEALTH_TYPES = ("HealthStat", "MemberHealth")


def cluster_explained(settings: Settings, cluster_key: str) -> dict[str, Any]:
    """The cluster's members, its last scaling change and its verdict now, as JSON data; raises
    ValueError naming the id when it is not a cluster's or the cluster does not exist."""
    if parse_aggregate_id(cluster_key).kind != "cluster":
        raise ValueError(f"{cluster_key!r} is not a cluster aggregate id (<tenant>/cluster/<cluster id>)")
    tracked, last_change = Tracked.new(cluster_key), None
    for _partition, _offset, commit in commits_of(settings, cluster_key):
        tracked.fold_commit(commit)
        for event in commit.payload.events:
            if isinstance(event, E.ScalingDecided) and (event.spawn or event.terminate):
                last_change = {"at": commit.occurred_at.isoformat(), "commit": commit.id, **event.model_dump()}
    state = tracked.state
    assert isinstance(state, ClusterState)
    if not state.exists:
        raise ValueError(f"no events for cluster {cluster_key!r}")
    samples = _records_of(settings, "health", cluster_key, HEALTH_TYPES)
    view, verdict = verdict_now(state, samples, settings.health_window_seconds, time.time())
    return {
        "cluster": cluster_key,
        "status": state.status.value,
        "members": {"active": state.active, "pending": state.pending, "min": view.min, "max": view.max},
        "last_change": last_change,
        "verdict": None
        if verdict is None
        else {
            "required": verdict.command.required,
            "metric": verdict.command.metric,
            "reason": verdict.command.reason,
            "figures": verdict.command.figures,
            "changes_cluster": verdict.send,
        },
    }
