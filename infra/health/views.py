"""The health worker's cluster views: the cluster aggregates folded from the events topic.

Each cluster's state is folded by ``actors.runtime.Tracked.fold_commit``, the node's own fold
(the cluster's ``apply``, repeats skipped), from the commits ``infra.log.eventlog.History`` says are
history; the view the windows read is derived from that state (``streams.health_state.view_of``)
after each commit. Every events partition is read without a group, from the views' own
checkpoint (``infra.log.projection``: the cluster states and the offsets they cover).
"""

from __future__ import annotations

import logging

from actors.runtime import Tracked
from infra.log.eventlog import History
from infra.log.kafka import rejection_reason
from infra.log.projection import Projection, states_of, tracked_of
from infra.settings import Settings
from schemas.ids import parse_aggregate_id
from schemas.records import LogRecord
from streams.health_state import ClusterView, view_of

log = logging.getLogger(__name__)


class ClusterViews:
    """Every cluster's state and view; feed it each events partition's records in offset order."""

    name = "health-views"
    format_version = "1"

    def __init__(self, settings: Settings, history: History | None = None) -> None:
        self.projection = Projection(settings, self, history=history)
        self.tracked: dict[str, Tracked] = {}
        self.clusters: dict[str, ClusterView] = {}
        """cluster aggregate id -> its view, for every live cluster of the platform."""

    def feed(self, raw) -> None:
        """Fold one record. An invalid one is logged and skipped (the reactor dead-letters it);
        a fold that raises costs that commit, never the reader."""
        try:
            self.projection.feed(raw)
        except ValueError as exc:
            log.warning("skipping invalid event record %d@%d: %s", raw.partition, raw.offset, rejection_reason(exc))

    def checkpoint_state(self) -> dict:
        return {"clusters": states_of(self.tracked)}

    def restore(self, state: dict) -> None:
        for key, tracked in tracked_of(state["clusters"]).items():
            self.tracked[key] = tracked
            self._view(key, tracked)

    def fold(self, commit: LogRecord, raw) -> None:
        if parse_aggregate_id(commit.aggregate_id).kind != "cluster":
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
        self._view(key, tracked)

    def _view(self, key: str, tracked: Tracked) -> None:
        view = view_of(tracked.state)  # type: ignore[arg-type]
        if view is None:
            self.clusters.pop(key, None)
        else:
            self.clusters[key] = view
