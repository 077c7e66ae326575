"""Debugging by replay: an aggregate's state at any past point of the log, and a digest of all.

"What did the cluster know when it decided this?" — `stratos state <aggregate> --until <event id>`
folds the aggregate's events up to and including that event with the aggregates' own `apply`.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime

from actors.runtime import Tracked
from infra.kafka import read_to_end
from infra.settings import Settings


def state_at(settings: Settings, aggregate_id: str, until_event: str | None = None,
             before: datetime | None = None) -> tuple[Tracked, list]:
    """Fold one aggregate's events (up to an event id or a time); returns it and its events."""
    tracked = Tracked.new(aggregate_id)
    seen = []
    for delivered in read_to_end(settings, "events"):
        record = delivered.record
        if record.aggregate_id != aggregate_id:
            continue
        if before and record.occurred_at >= before:
            break
        tracked.fold(record)
        seen.append(record)
        if record.id == until_event:
            break
    return tracked, seen


def digest_all(settings: Settings) -> tuple[str, int]:
    """A digest of every aggregate's state rebuilt from the whole log, and how many there are."""
    aggregates: dict[str, Tracked] = {}
    for delivered in read_to_end(settings, "events"):
        record = delivered.record
        tracked = aggregates.get(record.aggregate_id)
        if tracked is None:
            tracked = aggregates[record.aggregate_id] = Tracked.new(record.aggregate_id)
        tracked.fold(record)
    return digest_of(aggregates), len(aggregates)


def digest_of(aggregates: dict[str, Tracked]) -> str:
    canonical = json.dumps({k: t.state.model_dump(mode="json") for k, t in sorted(aggregates.items())},
                           sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()
