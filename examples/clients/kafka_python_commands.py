"""Send commands to Stratos-ES and wait for their replies, with plain kafka-python.

Each command of the file is wrapped in the record envelope, keyed by its target aggregate id,
produced to <prefix>commands; its reply (CommandAccepted / CommandRejected, causation_id = the
command id) is read from <prefix>replies. A command without a reply within --timeout was not
handled (an invalid record goes to <prefix>deadletter: `stratos deadletter list`); sending it
again with the same id is safe: a handled id is answered with its first outcome.

    python examples/clients/kafka_python_commands.py --bootstrap 127.0.0.1:9092 --token $TOKEN commands.json

Each command carries the user's bearer token (POST /api/token; --token or $STRATOS_TOKEN) and
is allowed as the REST call it mirrors would be; without one the reply is 401 (stratos_signing.py).

commands.json: a list of {"aggregate_id": "carbon.super/cluster/app1.php1.php.domain",
"command": {"type": "CreateCluster", ...}} (optional "id": reuse it to retry safely).
Exit status: 0 all accepted, 1 a rejection or a missing reply, 2 bad input.
"""

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from stratos_signing import add_command_options, command_headers  # beside this script


def envelope(aggregate_id: str, command: dict[str, Any], command_id: str, tenant: str) -> dict[str, Any]:
    return {
        "id": command_id,
        "type": command["type"],
        "schema_version": 1,
        "aggregate_id": aggregate_id,
        "aggregate_seq": 0,
        "occurred_at": datetime.now(UTC).isoformat(),
        "tenant": tenant,
        "correlation_id": None,
        "causation_id": None,
        "payload": command,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="JSON list of {aggregate_id, command[, id]}")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="stratos.")
    parser.add_argument("--tenant", default="carbon.super")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for all replies")
    add_command_options(parser)
    args = parser.parse_args()
    try:
        with open(args.file) as source:
            items = json.load(source)
        commands = [(item["aggregate_id"], item["command"], item.get("id") or uuid.uuid4().hex) for item in items]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2

    # read replies from the current end of every partition, before sending anything
    replies_topic = args.prefix + "replies"
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(replies_topic, p) for p in sorted(consumer.partitions_for_topic(replies_topic))]
    consumer.assign(partitions)
    consumer.seek_to_end(*partitions)
    for tp in partitions:
        consumer.position(tp)

    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=True)
    for aggregate_id, command, command_id in commands:
        record = envelope(aggregate_id, command, command_id, args.tenant)
        # key = the aggregate id: Kafka's default (murmur2) partitioner puts it on its aggregate's partition
        key, value = aggregate_id.encode(), json.dumps(record).encode()
        producer.send(args.prefix + "commands", key=key, value=value, headers=command_headers(args, key, value))
    producer.flush()
    producer.close()

    waiting = {command_id: command["type"] for _, command, command_id in commands}
    failed = False
    deadline = time.monotonic() + args.timeout
    while waiting and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                try:
                    reply = json.loads(record.value)["payload"]
                except (TypeError, ValueError, KeyError):
                    continue  # not ours to judge: the platform dead-letters what it cannot read
                if reply.get("command_id") in waiting:
                    waiting.pop(reply["command_id"])
                    outcome = "accepted" if reply["type"] == "CommandAccepted" else "rejected"
                    detail = (
                        ", ".join(reply.get("event_types", []))
                        if outcome == "accepted"
                        else f"{reply.get('code')} {reply.get('reason')}"
                    )
                    print(
                        f"{reply['command_id']} {reply['command_type']}: {outcome}"
                        f"{' (duplicate)' if reply.get('duplicate') else ''}: {detail}"
                    )
                    failed |= outcome == "rejected"
    consumer.close()
    for command_id, command_type in waiting.items():
        print(
            f"{command_id} {command_type}: no reply within {args.timeout:g}s "
            f"(not handled: see `stratos deadletter list --topic commands`)"
        )
    return 1 if failed or waiting else 0


if __name__ == "__main__":
    sys.exit(main())
