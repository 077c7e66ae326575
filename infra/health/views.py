"""The health worker's cluster views: the cluster aggregates folded from the events topic.

Each cluster's state is folded by ``actors.runtime.Tracked.fold_commit``, the node's own fold
(the cluster's ``apply``, repeats skipped), from the commits ``infra.log.eventlog.History`` says are
history; the view the windows read is derived from that state (``streams.health_state.view_of``)
after each commit. Every events partition is read from its beginning, without a group.
"""

from __future__ import annotations

import logging

from actors.runtime import Tracked
from infra.log.eventlog import History
from infra.log.kafka import rejection_reason
from schemas.ids import parse_aggregate_id
from streams.health_state import ClusterView, view_of

log = logging.getLogger(__name__)


class ClusterViews:
    """Every cluster's state and view; feed it each events partition's records in offset order."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.tracked: dict[str, Tracked] = {}
        self.clusters: dict[str, ClusterView] = {}
        """cluster aggregate id -> its view, for every live cluster of the platform."""

    def feed(self, raw) -> None:
        """Fold one record. An invalid one is logged and skipped (the reactor dead-letters it);
        a fold that raises costs that commit, never the reader."""
        try:
            commit = self.history.commit(raw)
            if commit is None or parse_aggregate_id(commit.aggregate_id).kind != "cluster":
                return
        except ValueError as exc:
            log.warning("skipping invalid event record %d@%d: %s", raw.partition, raw.offset, rejection_reason(exc))
            return
        key = commit.aggregate_id
        tracked = self.tracked.get(key)
        if tracked is None:
            tracked = self.tracked[key] = Tracked.new(key)
        try:
            problem = tracked.fold_commit(commit)
        except Exception:
            log.exception("folding commit %s of %s failed (%d@%d)", commit.id, key, raw.partition, raw.offset)
            return
        if problem:
            log.warning("%s", problem)
        view = view_of(tracked.state)  # type: ignore[arg-type]
        if view is None:
            self.clusters.pop(key, None)
        else:
            self.clusters[key] = view
