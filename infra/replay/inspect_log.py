"""Debugging by replay: an aggregate's state at any past point of the log, and a digest of all.

"What did the cluster know when it decided this?" — `stratos state <aggregate> --until <event id>`
folds the aggregate's events up to and including that event with the aggregates' own `apply`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from actors.history import events_of
from actors.runtime import Tracked
from infra.log.eventlog import read_history
from infra.settings import Settings


def state_at(
    settings: Settings, aggregate_id: str, until_event: str | None = None, before: datetime | None = None
) -> tuple[Tracked, list]:
    """Fold one aggregate's decisions (up to the one holding an event or commit id, or up to a
    time); returns it and its events."""
    tracked = Tracked.new(aggregate_id)
    seen = []

    def its_own(head) -> bool:  # the other aggregates' payloads are not decoded
        return head.envelope.aggregate_id == aggregate_id

    for _partition, _offset, commit in read_history(settings, where=its_own):
        if before and commit.occurred_at >= before:
            break
        tracked.fold_commit(commit)
        events = events_of(commit)
        seen += events
        if until_event in {commit.id, *(e.id for e in events)}:
            break
    return tracked, seen


def digest_all(settings: Settings) -> tuple[str, int]:
    """A digest of every aggregate's state rebuilt from the whole log, and how many there are."""
    aggregates: dict[str, Tracked] = {}
    for _partition, _offset, commit in read_history(settings):
        tracked = aggregates.get(commit.aggregate_id)
        if tracked is None:
            tracked = aggregates[commit.aggregate_id] = Tracked.new(commit.aggregate_id)
        tracked.fold_commit(commit)
    return digest_of(aggregates), len(aggregates)


def digest_of(aggregates: dict[str, Tracked]) -> str:
    canonical = json.dumps({k: t.state.model_dump(mode="json") for k, t in sorted(aggregates.items())}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
