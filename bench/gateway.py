"""The long-poll gateway's cost on throughput: the same work on a bare Tansu and through the gateway.

One run starts two embedded Tansu brokers (infra/broker.py): one bare, one behind its long-poll
gateway (`infra/longpoll.py`), as `stratos up` runs it. (Tansu advertises one address, so a
client that bootstraps through a gateway is sent back to it: two brokers of the same build, with
the same records, are the same-run baseline.) On each, measured in alternation (bare, then
gateway, --runs times; medians):
- append: N records of ~500 bytes (the log's commits) with kafka-python, idempotent, acks=all,
  linger 20 ms, 512 KiB batches, 5 requests in flight (as bench/log_throughput.py appends);
- small produce: N/10 records of ~200 bytes (a health record's size) with the platform's
  Appender settings (idempotent, acks=all, linger 2 ms), sent without waiting, then flushed;
- round trips: 300 records sent one at a time, each waited for (a command's append);
- raw bulk reads of the N records (4 partitions, from the beginning, nothing decoded) with
  aiokafka and with kafka-python, as bench/log_throughput.py reads them.
Prints each figure for both and the ratio gateway/bare; ends with one JSON line.
Usage: python bench/gateway.py [--records N] [--runs R]
"""
from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from common import finish, median

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from infra.broker import EmbeddedBroker
from infra.kafka import ensure_topics
from infra.settings import Settings

PARTITIONS = 4
ROUND_TRIPS = 300


def commit_like(n: int) -> bytes:
    """A record the size and shape of a one-event commit of the log (~500 bytes)."""
    return (b'{"id":"%032x","type":"Commit","schema_version":1,"aggregate_id":"carbon.super/cluster/c%d",'
            b'"aggregate_seq":%d,"occurred_at":"2026-12-01T18:34:01.712298Z","tenant":"carbon.super",'
            b'"correlation_id":null,"causation_id":"%031xc","payload":{"type":"Commit","command_type":'
            b'"ReportInstanceStatus","outcome":"accepted","events":[{"type":"MemberActivated","member_id":'
            b'"m","cluster_id":"c"}],"reason":null,"field":null,"code":null,"claim":null,"writer":"bench"}}'
            % (n, n % 1000, n + 1, n))


def health_like(n: int) -> bytes:
    """A record the size of a member's health sample (~200 bytes)."""
    return (b'{"id":"%032x","type":"HealthRecord","aggregate_id":"carbon.super/cluster/c%d","payload":'
            b'{"member_id":"c%d.m%d","load_average":%d.5,"memory_consumption":41.25}}'
            % (n, n % 100, n % 100, n, n % 97))


def append(settings: Settings, values: list[bytes]) -> float:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=20, batch_size=512 * 1024, max_in_flight_requests_per_connection=5)
    topic = settings.topic("events")
    started = time.perf_counter()
    for n, value in enumerate(values):
        producer.send(topic, key=b"c%d" % (n % 1000), value=value)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    producer.close()
    return len(values) / elapsed


def small_produce(settings: Settings, count: int) -> float:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=2, max_in_flight_requests_per_connection=5)
    topic = settings.topic("health")
    started = time.perf_counter()
    for n in range(count):
        producer.send(topic, key=b"c%d" % (n % 100), value=health_like(n))
    producer.flush(120)
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


def round_trips(settings: Settings, count: int) -> float:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=0)
    topic = settings.topic("health")
    producer.send(topic, value=b"warm-up").get(30)
    started = time.perf_counter()
    for n in range(count):
        producer.send(topic, key=b"rt", value=health_like(n)).get(30)
    elapsed = time.perf_counter() - started
    producer.close()
    return count / elapsed


def read_kafka_python(settings: Settings, count: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                             max_poll_records=10_000, fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    tps = [TopicPartition(settings.topic("events"), p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < count:
        seen += sum(len(records) for records in consumer.poll(timeout_ms=500).values())
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


async def read_aiokafka(settings: Settings, count: int) -> float:
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as AioTopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    tps = [AioTopicPartition(settings.topic("events"), p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < count:
        batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
        seen += sum(len(records) for records in batch.values())
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return count / elapsed


FIGURES = {
    "append": "append, kafka-python, acks=all, 512 KiB batches",
    "small_produce": "small produce, Appender settings, flushed",
    "round_trips": "one at a time, each waited for",
    "aiokafka_read": "raw bulk read, aiokafka",
    "kafka_python_read": "raw bulk read, kafka-python",
}


def measure(settings: Settings, values: list[bytes], small: int, figures: dict[str, list[float]]) -> None:
    figures["append"].append(append(settings, values))
    figures["small_produce"].append(small_produce(settings, small))
    figures["round_trips"].append(round_trips(settings, ROUND_TRIPS))
    figures["aiokafka_read"].append(asyncio.run(read_aiokafka(settings, len(values))))
    figures["kafka_python_read"].append(read_kafka_python(settings, len(values)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    values = [commit_like(n) for n in range(args.records)]
    small = max(args.records // 10, 1)
    results = {way: {name: [] for name in FIGURES} for way in ("bare", "gateway")}
    with EmbeddedBroker(long_poll=False) as bare, EmbeddedBroker(long_poll=True) as gateway:
        for run in range(args.runs):
            for way, broker in (("bare", bare), ("gateway", gateway)):
                # fresh topics each run: every read reads exactly this run's N records
                settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"gw{uuid.uuid4().hex[:6]}.",
                                    partitions=PARTITIONS)
                ensure_topics(settings, ["events", "health"])
                measure(settings, values, small, results[way])
    med = {way: {name: median(v) for name, v in figures.items()} for way, figures in results.items()}
    ratios = {name: med["gateway"][name] / med["bare"][name] for name in FIGURES}
    print(f"records: {args.records} (~{len(values[0])} bytes), small: {small}, runs: {args.runs} (medians, records/s)")
    print(f"{'':48} {'bare':>10} {'gateway':>10} {'ratio':>6}")
    for name, label in FIGURES.items():
        print(f"{label:<48} {med['bare'][name]:>10,.0f} {med['gateway'][name]:>10,.0f} {ratios[name]:>6.2f}")
    finish({"bench": "gateway", "records": args.records, "runs": args.runs,
            **{f"{way}_{name}_per_s": round(value) for way, figures in med.items() for name, value in figures.items()},
            **{f"ratio_{name}": round(value, 3) for name, value in ratios.items()}})


if __name__ == "__main__":
    main()
