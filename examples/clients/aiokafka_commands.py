"""Send commands to Stratos-ES and wait for their replies, with aiokafka, in CloudEvents binary
mode: the record's value is the command itself, its envelope comes from `ce_*` headers
(ce_id = the command id, ce_subject = the target aggregate id, ce_time, ce_type).

    python examples/clients/aiokafka_commands.py --bootstrap 127.0.0.1:9092 commands.json

Same file format, replies and exit status as kafka_python_commands.py.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from stratos_signing import Headers, add_command_options, command_headers  # beside this script


def cloudevent_headers(aggregate_id: str, command: dict[str, Any], command_id: str, tenant: str) -> Headers:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", command_id.encode()),
        ("ce_source", b"/examples/aiokafka-commands"),
        ("ce_type", f"stratos.{command['type']}".encode()),
        ("ce_time", datetime.now(UTC).isoformat().encode()),
        ("ce_subject", aggregate_id.encode()),
        ("ce_tenant", tenant.encode()),
        ("content-type", b"application/json"),
    ]


async def run(args: argparse.Namespace, commands: list[tuple[str, dict[str, Any], str]]) -> int:
    replies_topic = args.prefix + "replies"
    consumer = AIOKafkaConsumer(bootstrap_servers=args.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    await producer.start()
    try:
        found = await producer.partitions_for(replies_topic)  # asks the broker for this topic's metadata
        partitions = [TopicPartition(replies_topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # fix the start before sending
        for aggregate_id, command, command_id in commands:
            key, value = aggregate_id.encode(), json.dumps(command).encode()
            await producer.send_and_wait(
                args.prefix + "commands",
                key=key,
                value=value,
                headers=cloudevent_headers(aggregate_id, command, command_id, args.tenant)
                + command_headers(args, key, value),
            )
        waiting = {command_id: command["type"] for _, command, command_id in commands}
        failed = False
        deadline = time.monotonic() + args.timeout
        while waiting and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    try:
                        reply = json.loads(record.value)["payload"]
                    except (TypeError, ValueError, KeyError):
                        continue
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
        for command_id, command_type in waiting.items():
            print(
                f"{command_id} {command_type}: no reply within {args.timeout:g}s "
                f"(not handled: see `stratos deadletter list --topic commands`)"
            )
        return 1 if failed or waiting else 0
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="JSON list of {aggregate_id, command[, id]}")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="stratos.")
    parser.add_argument("--tenant", default="carbon.super")
    parser.add_argument("--timeout", type=float, default=20.0)
    add_command_options(parser)
    args = parser.parse_args()
    try:
        with open(args.file) as source:
            commands = [(i["aggregate_id"], i["command"], i.get("id") or uuid.uuid4().hex) for i in json.load(source)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run(args, commands))


if __name__ == "__main__":
    sys.exit(main())
