"""One envelope type per topic, and the table that says which record each topic carries."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from schemas.base import Message
from schemas.commands import Command
from schemas.definitions import DEFINITION_KINDS
from schemas.envelope import Envelope
from schemas.events import Event
from schemas.ids import parse_aggregate_id
from schemas.status import Health, InstanceStatus, Notification, Reply


AGGREGATE_KINDS = frozenset(DEFINITION_KINDS) | {"cluster"}


class CommandRecord(Envelope):
    payload: Command

    @field_validator("aggregate_id")
    @classmethod
    def _known_aggregate(cls, value: str) -> str:
        kind = parse_aggregate_id(value).kind
        if kind not in AGGREGATE_KINDS:
            raise ValueError(f"aggregate id {value!r}: unknown kind {kind!r} "
                             f"(one of {', '.join(sorted(AGGREGATE_KINDS))})")
        return value


class EventRecord(Envelope):
    payload: Event


class ReplyRecord(Envelope):
    payload: Reply


class HealthRecord(Envelope):
    payload: Health


class InstanceStatusRecord(Envelope):
    payload: InstanceStatus


class NotifierRecord(Envelope):
    payload: Notification


class Snapshot(Message):
    """An aggregate's state as of `events_offset` (the offset of the last event it covers)."""

    type: Literal["Snapshot"] = "Snapshot"
    aggregate_type: str
    events_partition: int
    events_offset: int
    state: dict


class SnapshotRecord(Envelope):
    payload: Snapshot


class TopologyEntry(Message):
    """Latest view of one cluster for load balancers (compacted topic: key = cluster id)."""

    type: Literal["TopologyEntry"] = "TopologyEntry"
    cluster_id: str
    application_id: str
    cartridge_type: str
    status: str
    members: list[dict] = []
    removed: bool = False


class TopologyRecord(Envelope):
    payload: TopologyEntry


class DeadLetter(Message):
    type: Literal["DeadLetter"] = "DeadLetter"
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    original: str = Field(description="the original bytes, decoded as UTF-8 with replacement")
    original_key: str | None = None


class DeadLetterRecord(Envelope):
    payload: DeadLetter


TOPIC_RECORDS: dict[str, type[Envelope]] = {
    "commands": CommandRecord,
    "events": EventRecord,
    "replies": ReplyRecord,
    "snapshots": SnapshotRecord,
    "topology": TopologyRecord,
    "health": HealthRecord,
    "instance-status": InstanceStatusRecord,
    "instance-notifier": NotifierRecord,
    "deadletter": DeadLetterRecord,
}
"""Topic name (without the configurable prefix) -> the envelope its records must validate as."""


def export_json_schemas(directory: Path) -> list[Path]:
    """Write one JSON Schema per topic record type, for clients in any language."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, record in TOPIC_RECORDS.items():
        path = directory / f"{topic}.schema.json"
        schema = record.model_json_schema(mode="validation")
        schema["title"] = f"stratos.{topic} record"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True))
        written.append(path)
    return written
