"""The AsyncAPI 3.0 document of the platform's topics, generated from the pydantic models.

Every topic is a channel (its address carries the configurable prefix, its key described in the
Kafka binding), every topic record type a message whose payload is the record's JSON Schema
(shared definitions under `components.schemas`), with the CloudEvents binary-mode headers the
platform writes. Operations say which side sends: clients send commands, health statistics and
instance status; the platform sends the rest.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.records import TOPIC_RECORDS

KEYS = {
    "commands": "the target aggregate id, `<tenant>/<kind>/<id>` (a member's commands: its cluster's id)",
    "events": "the aggregate id (a Claim: `claim/<partition>`); same partition as the command that caused it",
    "replies": "the aggregate id of the command answered",
    "snapshots": "the aggregate id (checkpoint markers `checkpoint/<p>`, claim markers `claim/<p>`); compacted",
    "topology": "the cluster's aggregate id; compacted, the latest value per key is the view",
    "health": "the cluster's aggregate id `<tenant>/cluster/<cluster id>`",
    "instance-status": "the cluster's aggregate id `<tenant>/cluster/<cluster id>`",
    "instance-notifier": "the cluster's aggregate id the notice is for",
    "deadletter": "`<source topic>:<partition>:<offset>` of the record that was refused",
    "logs": "the member id (or the platform part) whose lines these are",
    "usage": "the cluster's aggregate id; one record per period and cluster, its id stable",
    "heartbeats": "the part and its process (`<part>/<host>:<pid>`); compacted",
}
DESCRIPTIONS = {
    "commands": "Commands to aggregates. Each is answered on replies (causation_id = the command id); "
    "an id seen before is answered with its first outcome (duplicate: true).",
    "events": "The log: one Commit per handled command (all the events of one decision), and Claims.",
    "replies": "CommandAccepted / CommandRejected for every command handled.",
    "snapshots": "Aggregate snapshots and checkpoint / claim markers (recovery).",
    "topology": "Latest view of each cluster for load balancers.",
    "health": "Health statistics (per member or per cluster) and member faults.",
    "instance-status": "What cartridge agents report about their instance.",
    "instance-notifier": "Notices to instances (artifact updates, clean-up).",
    "deadletter": "Records that did not validate or could not be handled, with the reason and "
    "Kafka Connect error headers.",
    "logs": "Log lines of instances and platform parts, batched (stratos logs, GET /api/logs).",
    "usage": "Metering: what each cluster used per period (member-seconds, scaling actions).",
    "heartbeats": "Each platform part's liveness, the groups it reads and its last error (stratos status).",
}
CLIENT_SENDS = ("commands", "health", "instance-status")
CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 Kafka protocol binding, binary mode: every record the platform writes "
    "carries them; a client record may carry them instead of the envelope's id, "
    "aggregate_id, occurred_at (see docs/clients.md).",
    "properties": {
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_id": {"type": "string", "description": "= envelope id"},
        "ce_source": {
            "type": "string",
            "description": "the writing part, /stratos-es/<node|reactor|cloud|health|api|agent|...>",
        },
        "ce_type": {
            "type": "string",
            "description": "stratos.<envelope type>, e.g. stratos.Commit, stratos.ScaleCluster",
        },
        "ce_time": {"type": "string", "format": "date-time", "description": "= envelope occurred_at"},
        "ce_subject": {"type": "string", "description": "= envelope aggregate_id"},
        "ce_tenant": {"type": "string", "description": "= envelope tenant (extension)"},
        "ce_correlationid": {"type": "string", "description": "= envelope correlation_id (extension)"},
        "ce_causationid": {"type": "string", "description": "= envelope causation_id (extension)"},
        "content-type": {"type": "string", "const": "application/json"},
    },
}
CONNECT_HEADERS = {
    "__connect.errors.topic": "the topic of the refused record",
    "__connect.errors.partition": "its partition (decimal text)",
    "__connect.errors.offset": "its offset (decimal text)",
    "__connect.errors.exception.class.name": "the error's class, e.g. pydantic_core._pydantic_core.ValidationError",
    "__connect.errors.exception.message": "the reason, naming the field",
}


def _asyncapi_schema(node: Any) -> Any:
    """Pydantic's JSON Schema, made an AsyncAPI Schema Object: its `discriminator` is the name
    of the property (OpenAPI's object form is not allowed there)."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def asyncapi_document(
    prefix: str = "stratos.", partitions: int = 4, version: str = "1", bootstrap: str = "127.0.0.1:9092"
) -> dict[str, Any]:
    records = list(TOPIC_RECORDS.items())
    refs, definitions = models_json_schema(
        [(model, "validation") for _, model in records], ref_template="#/components/schemas/{model}"
    )
    schemas = _asyncapi_schema(definitions.get("$defs", {}))
    messages, channels, operations = {}, {}, {}
    for topic, model in records:
        name = model.__name__
        payload_ref = refs[(model, "validation")]
        message = {
            "name": name,
            "title": f"{prefix}{topic} record",
            "contentType": "application/json",
            "summary": (model.__doc__ or DESCRIPTIONS[topic]).strip().splitlines()[0],
            "payload": payload_ref,
            "headers": CLOUDEVENTS_HEADERS
            if topic != "deadletter"
            else {
                **CLOUDEVENTS_HEADERS,
                "properties": {
                    **CLOUDEVENTS_HEADERS["properties"],
                    **{h: {"type": "string", "description": d} for h, d in CONNECT_HEADERS.items()},
                },
            },
            "correlationId": {
                "description": "the command a record answers or was caused by",
                "location": "$message.payload#/causation_id",
            },
            "bindings": {"kafka": {"key": {"type": "string", "description": KEYS[topic]}, "bindingVersion": "0.5.0"}},
        }
        messages[name] = message
        channel = topic.replace("-", "_")
        channels[channel] = {
            "address": f"{prefix}{topic}",
            "title": f"{prefix}{topic}",
            "description": DESCRIPTIONS[topic],
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {"topic": f"{prefix}{topic}", "partitions": partitions, "bindingVersion": "0.5.0"}},
        }
        action = "send" if topic in CLIENT_SENDS else "receive"
        operations[f"{action}_{channel}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"a client {'sends to' if action == 'send' else 'reads'} {prefix}{topic}",
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Stratos-ES",
            "version": version,
            "description": "Topics, keys and records of the Stratos-ES control plane. Every record "
            "is a JSON envelope (id, type, schema_version, aggregate_id, aggregate_seq, "
            "occurred_at, tenant, correlation_id, causation_id, payload). See docs/clients.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "embedded": {
                "host": bootstrap,
                "protocol": "kafka",
                "description": "the bootstrap servers (STRATOS_KAFKA_BOOTSTRAP)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
