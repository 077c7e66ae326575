"""Append 200,000 records of the events topic, read them back raw and decoded (kafka-python, aiokafka).

Each record is a Commit (the log's unit) carrying one event, the smallest decision a node writes.

Prints events/s for each and the ratio of the decoded aiokafka read to the raw aiokafka read
measured in the same run (these machines are noisy: quote ratios and medians).
Usage: python bench/log_throughput.py [--events N] [--runs R]
"""
from __future__ import annotations

import argparse
import asyncio
import time

from common import bench_settings, finish, median

from infra.eventlog import decode_log
from infra.kafka import Appender, envelope
from schemas.events import MemberActivated
from schemas.records import Commit, LogRecord


def make_records(count: int) -> list[bytes]:
    commit = Commit(command_type="ReportInstanceStatus", outcome="accepted",
                    events=[MemberActivated(member_id="m", cluster_id="c")], writer="bench")
    template = envelope(LogRecord, commit, "carbon.super/cluster/c")
    return [template.model_copy(update={"id": f"{n:032x}", "aggregate_seq": n + 1, "causation_id": f"{n:031x}c",
                                        "aggregate_id": f"carbon.super/cluster/c{n % 1000}"}
                                ).model_dump_json().encode() for n in range(count)]


def append(settings, values: list[bytes]) -> float:
    appender = Appender(settings, linger_ms=20, batch_size=512 * 1024, max_in_flight_requests_per_connection=5)
    topic = settings.topic("events")
    started = time.perf_counter()
    for n, value in enumerate(values):
        appender.send_raw(topic, f"c{n % 1000}".encode(), value)
    appender.flush(120)
    elapsed = time.perf_counter() - started
    appender.close()
    return len(values) / elapsed


def read_kafka_python(settings, count: int, decode: bool) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             enable_auto_commit=False, max_poll_records=10_000,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)
    tps = [TopicPartition(settings.topic("events"), p) for p in range(settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < count:
        for records in consumer.poll(timeout_ms=500).values():
            if decode:
                for record in records:
                    decode_log(record.value)
            seen += len(records)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


async def read_aiokafka(settings, count: int, decode: bool) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_bytes=64 << 20,
                                max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    tps = [TopicPartition(settings.topic("events"), p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < count:
        batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
        for records in batch.values():
            if decode:
                for record in records:
                    decode_log(record.value)
            seen += len(records)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    values = make_records(args.events)
    started = time.perf_counter()
    for value in values[:50_000]:
        decode_log(value)
    decode_only = 50_000 / (time.perf_counter() - started)
    with bench_settings() as settings:
        append_rate = append(settings, values)
        figures: dict[str, list[float]] = {k: [] for k in ("kp_raw", "kp_decoded", "aio_raw", "aio_decoded")}
        for _ in range(args.runs):
            figures["kp_raw"].append(read_kafka_python(settings, args.events, False))
            figures["kp_decoded"].append(read_kafka_python(settings, args.events, True))
            figures["aio_raw"].append(asyncio.run(read_aiokafka(settings, args.events, False)))
            figures["aio_decoded"].append(asyncio.run(read_aiokafka(settings, args.events, True)))
    med = {k: median(v) for k, v in figures.items()}
    print(f"events: {args.events}, runs: {args.runs} (medians)")
    print(f"append (kafka-python, idempotent, acks=all): {append_rate:,.0f}/s")
    print(f"pydantic decode alone:                       {decode_only:,.0f}/s")
    for name, label in (("kp_raw", "kafka-python raw"), ("kp_decoded", "kafka-python decoded"),
                        ("aio_raw", "aiokafka raw"), ("aio_decoded", "aiokafka decoded")):
        print(f"read {label:<22} {med[name]:>12,.0f}/s")
    ratio = med["aio_decoded"] / med["aio_raw"]
    print(f"ratio decoded/raw (aiokafka): {ratio:.2f}")
    finish({"bench": "log_throughput", "events": args.events, "append_per_s": round(append_rate),
            "decode_only_per_s": round(decode_only),
            "read_raw_kafka_python_per_s": round(med["kp_raw"]),
            "read_decoded_kafka_python_per_s": round(med["kp_decoded"]),
            "read_raw_aiokafka_per_s": round(med["aio_raw"]),
            "read_decoded_aiokafka_per_s": round(med["aio_decoded"]), "ratio": round(ratio, 3)})


if __name__ == "__main__":
    main()
