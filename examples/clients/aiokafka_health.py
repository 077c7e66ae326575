"""Send health statistics to Stratos-ES with aiokafka, in CloudEvents binary mode (the value is
the HealthStat itself; ce_id, ce_subject = the cluster's aggregate id, ce_time in headers).

    python examples/clients/aiokafka_health.py --bootstrap 127.0.0.1:9092 \
        --cluster app1.php1.php.domain --network-partition np1 --member php1.a --value 90

Same options as kafka_python_health.py.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from stratos_signing import add_health_options, health_headers  # beside this script


async def run(args: argparse.Namespace) -> int:
    key = f"{args.tenant}/cluster/{args.cluster}"
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    sent = 0
    try:
        end = time.monotonic() + args.seconds
        while True:
            for member in args.member or [None]:
                now = datetime.now(UTC)
                stat = {
                    "type": "HealthStat",
                    "cluster_id": args.cluster,
                    "network_partition_id": args.network_partition,
                    "member_id": member,
                    "metric": args.metric,
                    "value": args.value,
                    "timestamp": now.timestamp(),
                }
                headers = [
                    ("ce_specversion", b"1.0"),
                    ("ce_id", uuid.uuid4().hex.encode()),
                    ("ce_source", b"/examples/aiokafka-health"),
                    ("ce_type", b"stratos.HealthStat"),
                    ("ce_time", now.isoformat().encode()),
                    ("ce_subject", key.encode()),
                    ("ce_tenant", args.tenant.encode()),
                    ("content-type", b"application/json"),
                ]
                value = json.dumps(stat).encode()
                await producer.send(
                    args.prefix + "health",
                    key=key.encode(),
                    value=value,
                    headers=headers + health_headers(args, key.encode(), value, member),
                )
                sent += 1
            await producer.flush()
            if time.monotonic() >= end:
                break
            await asyncio.sleep(args.interval)
    finally:
        await producer.stop()
    print(f"sent {sent} health statistics for {args.cluster}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="stratos.")
    parser.add_argument("--tenant", default="carbon.super")
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--network-partition", required=True)
    parser.add_argument("--member", action="append", default=[])
    parser.add_argument(
        "--metric", default="load_average", choices=["load_average", "memory_consumption", "requests_in_flight"]
    )
    parser.add_argument("--value", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0)
    add_health_options(parser)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
