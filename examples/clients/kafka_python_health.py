"""Send health statistics to Stratos-ES with plain kafka-python (what a cartridge agent or a load
balancer does): one HealthStat per member (load_average, memory_consumption) or per cluster
(requests_in_flight) every --interval seconds, for --seconds.

    python examples/clients/kafka_python_health.py --bootstrap 127.0.0.1:9092 \
        --cluster app1.php1.php.domain --network-partition np1 --member php1.a --metric load_average --value 90

Each sample is signed as its member, with the signingKey of its payload (--signing-key or
$STRATOS_AGENT_SIGNING_KEY; `stratos member-key` prints it), or, for cluster-wide figures, with the
platform secret (stratos_signing.py); unsigned ones are dead-lettered.
Records are keyed by the cluster's aggregate id (<tenant>/cluster/<cluster id>). The health
worker averages each window per cluster and network partition and sends ScaleCluster commands;
a record it cannot accept (a negative value, a sample from the future) goes to <prefix>deadletter.
"""

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime

from kafka import KafkaProducer
from stratos_signing import add_health_options, health_headers  # beside this script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--prefix", default="stratos.")
    parser.add_argument("--tenant", default="carbon.super")
    parser.add_argument("--cluster", required=True, help="cluster id, e.g. app1.php1.php.domain")
    parser.add_argument("--network-partition", required=True)
    parser.add_argument("--member", action="append", default=[], help="member id (repeat); none: a cluster-wide sample")
    parser.add_argument(
        "--metric", default="load_average", choices=["load_average", "memory_consumption", "requests_in_flight"]
    )
    parser.add_argument("--value", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0)
    add_health_options(parser)
    args = parser.parse_args()

    key = f"{args.tenant}/cluster/{args.cluster}"
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", linger_ms=5)
    sent = 0
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
            record = {
                "id": uuid.uuid4().hex,
                "type": "HealthStat",
                "schema_version": 1,
                "aggregate_id": key,
                "aggregate_seq": 0,
                "occurred_at": now.isoformat(),
                "tenant": args.tenant,
                "correlation_id": None,
                "causation_id": None,
                "payload": stat,
            }
            value = json.dumps(record).encode()
            producer.send(
                args.prefix + "health",
                key=key.encode(),
                value=value,
                headers=health_headers(args, key.encode(), value, member),
            )
            sent += 1
        producer.flush()
        if time.monotonic() >= end:
            break
        time.sleep(args.interval)
    producer.close()
    print(f"sent {sent} health statistics for {args.cluster}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
