"""What the log says happened: decisions (commits) expanded into events, and fencing.

Pure and shared by every reader of the events topic (node recovery, read models, the cloud
controller, health views, replay tools), so that all of them agree on what is history:

- a Claim says "from here on, this partition is written under this claim";
- a Commit is history only if it was written under the claim in force where it lies, so a
  node that lost its partition (paused, cut off) can append, but nobody reads it.
"""

from __future__ import annotations

from actors.base import built
from schemas.records import Claim, Commit, EventRecord, LogRecord


class Fence:
    """The claim in force at the reader's position in one events partition."""

    __slots__ = ("claim",)

    def __init__(self, claim: str | None = None) -> None:
        self.claim = claim

    def admit(self, record: LogRecord) -> bool:
        """Is this record a decision that belongs to history? A Claim moves the fence."""
        entry = record.payload
        if isinstance(entry, Claim):
            self.claim = record.id
            return False
        return self.admits(entry.claim)

    def admits(self, claim: str | None) -> bool:
        """Is a commit written under `claim` history here?"""
        return claim == self.claim


def event_id(commit_id: str, index: int) -> str:
    return f"{commit_id}.{index}"


def events_of(record: LogRecord) -> list[EventRecord]:
    """The events of one commit, each as the enveloped record readers and reactions expect."""
    entry = record.payload
    if not isinstance(entry, Commit):
        return []
    return [
        built(
            EventRecord,
            dict(  # built from validated parts: no re-validation
                schema_version=record.schema_version,
                id=event_id(record.id, n),
                type=event.type,
                aggregate_id=record.aggregate_id,
                aggregate_seq=record.aggregate_seq + n,
                occurred_at=record.occurred_at,
                tenant=record.tenant,
                correlation_id=record.correlation_id,
                causation_id=record.causation_id,
                payload=event,
            ),
        )
        for n, event in enumerate(entry.events)
    ]
