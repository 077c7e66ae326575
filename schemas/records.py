"""One envelope type per topic, and the table that says which record each topic carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from schemas.base import Message
from schemas.commands import Command
from schemas.definitions import DEFINITION_KINDS
from schemas.envelope import Envelope
from schemas.events import Event
from schemas.ids import parse_aggregate_id
from schemas.observability import HeartbeatRecord, LogBatchRecord, UsageRecord
from schemas.status import Health, InstanceStatus, Notification, Reply

AGGREGATE_KINDS = frozenset(DEFINITION_KINDS) | {"cluster"}


class CommandRecord(Envelope):
    payload: Command

    @field_validator("aggregate_id")
    @classmethod
    def _known_aggregate(cls, value: str) -> str:
        kind = parse_aggregate_id(value).kind
        if kind not in AGGREGATE_KINDS:
            raise ValueError(
                f"aggregate id {value!r}: unknown kind {kind!r} (one of {', '.join(sorted(AGGREGATE_KINDS))})"
            )
        return value


class EventRecord(Envelope):
    """One event as readers see it; on the log it travels inside its decision's Commit."""

    payload: Event


class Commit(Message):
    """One handled command, as one record of its aggregate's stream: atomic by construction.

    The envelope around it carries the aggregate, tenant, time and the command id (as
    `causation_id`); its `aggregate_seq` is the seq of the first event (or, with none, the
    aggregate's seq after the decision). Event i gets seq `aggregate_seq + i` and id
    `<commit id>.<i>`, so events need no envelope of their own."""

    type: Literal["Commit"] = "Commit"
    command_type: str
    outcome: Literal["accepted", "rejected"]
    events: list[Event] = []
    reason: str | None = None
    field: str | None = None
    code: int | None = None
    claim: str | None = Field(None, description="id of the Claim its writer owns the partition by")
    writer: str | None = None


class Claim(Message):
    """A node takes an events partition: commits under older claims that follow are not history."""

    type: Literal["Claim"] = "Claim"
    partition: int
    writer: str
    generation: int = Field(-1, description="the consumer group generation, for diagnosis")


LogEntry = Annotated[Commit | Claim, Field(discriminator="type")]


class LogRecord(Envelope):
    """What the events topic carries: commits and claims."""

    payload: LogEntry


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
    state: dict[str, Any]
    claim: str | None = Field(None, description="the writer's claim: snapshots of a fenced writer are ignored")


class SnapshotRecord(Envelope):
    payload: Snapshot


class TopologyPort(Message):
    """One port mapping of a cluster's cartridge: members serve `port`, the load balancer
    listens on `proxy_port` (0 or none: not exposed)."""

    type: Literal["TopologyPort"] = "TopologyPort"
    name: str | None = None
    protocol: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    proxy_port: int | None = Field(None, ge=0, le=65535)


class TopologyMember(Message):
    """A member as load balancers need it: status, where it is, which ports it answers on.
    `ports` maps a protocol (or a mapping's name) to the port the member itself listens on when
    it is not the mapping's `port` (the mock IaaS's process mode: one loopback port each)."""

    type: Literal["TopologyMember"] = "TopologyMember"
    member_id: str = Field(min_length=1)
    status: str
    in_service: bool = Field(True, description="neither leaving (termination requested) nor obsolete")
    network_partition_id: str
    partition_id: str
    private_ip: str | None = None
    public_ip: str | None = None
    ports: dict[str, int] = {}


class TopologyDomain(Message):
    type: Literal["TopologyDomain"] = "TopologyDomain"
    domain_name: str = Field(min_length=1)
    context_path: str | None = None
    tenant: str | None = None


class TopologyEntry(Message):
    """Latest view of one cluster for load balancers (compacted topic: key = cluster's
    aggregate id). A cluster that is gone is written once more with `removed: true`."""

    type: Literal["TopologyEntry"] = "TopologyEntry"
    cluster_id: str = Field(min_length=1)
    application_id: str
    cartridge_type: str
    alias: str | None = None
    category: str | None = Field(None, description="the cartridge's category (`load-balancer`, ...)")
    status: str
    port_mappings: list[TopologyPort] = []
    domain_mappings: list[TopologyDomain] = []
    members: list[TopologyMember] = []
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
    "events": LogRecord,
    "replies": ReplyRecord,
    "snapshots": SnapshotRecord,
    "topology": TopologyRecord,
    "health": HealthRecord,
    "instance-status": InstanceStatusRecord,
    "instance-notifier": NotifierRecord,
    "deadletter": DeadLetterRecord,
    "logs": LogBatchRecord,
    "usage": UsageRecord,
    "heartbeats": HeartbeatRecord,
}
"""Topic name (without the configurable prefix) -> the envelope its records must validate as."""


def topic_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per topic record type (topic name without prefix -> schema)."""
    schemas = {}
    for topic, record in TOPIC_RECORDS.items():
        schema = record.model_json_schema(mode="validation")
        schema["title"] = f"stratos.{topic} record"
        schemas[topic] = schema
    return schemas


def export_json_schemas(directory: Path) -> list[Path]:
    """Write one JSON Schema per topic record type, for clients in any language."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, schema in topic_schemas().items():
        path = directory / f"{topic}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def read_json_schemas(directory: Path) -> dict[str, dict[str, Any]]:
    """The schemas `export_json_schemas` wrote into a directory (a published baseline)."""
    return {
        path.name.removesuffix(".schema.json"): json.loads(path.read_text())
        for path in sorted(directory.glob("*.schema.json"))
    }
