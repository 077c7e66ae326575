"""Append 200,000 records of the events topic, read them back raw, decoded in full and decoded
as far as the envelope (kafka-python, aiokafka).

Each record is a Commit (the log's unit) carrying one event, the smallest decision a node writes.
"full" is `decode_log` (`LogRecord`'s pydantic-core validator, called without
`model_validate_json`'s Python wrapper, which is also measured as the decode before): what every reader that
folds commits uses (node recovery, read models, reactor, cloud controller, `replay --at`, `diff`,
the `why` index). "head" is `decode_head` (msgspec, the envelope checked as strictly, payloads
validated on demand): what `stratos history`, `replay --what-if` and `stratos state` use
before they pick their aggregate's commits.

Prints records/s for each and the ratios of the decoded aiokafka reads to the raw aiokafka read
measured in the same run (these machines are noisy: quote ratios and medians).
Usage: python bench/log_throughput.py [--events N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import bench_settings, finish, median

from infra.log.eventlog import decode_head, decode_log
from infra.log.kafka import Appender, envelope
from schemas.events import MemberActivated
from schemas.records import Commit, LogRecord


def make_records(count: int) -> list[bytes]:
    commit = Commit(
        command_type="ReportInstanceStatus",
        outcome="accepted",
        events=[MemberActivated(member_id="m", cluster_id="c")],
        writer="bench",
    )
    template = envelope(LogRecord, commit, "carbon.super/cluster/c")
    return [
        template.model_copy(
            update={
                "id": f"{n:032x}",
                "aggregate_seq": n + 1,
                "causation_id": f"{n:031x}c",
                "aggregate_id": f"carbon.super/cluster/c{n % 1000}",
            }
        )
        .model_dump_json()
        .encode()
        for n in range(count)
    ]


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


def read_kafka_python(settings, count: int, decode) -> float:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_poll_records=10_000,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    tps = [TopicPartition(settings.topic("events"), p) for p in range(settings.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < count:
        for records in consumer.poll(timeout_ms=500).values():
            if decode is not None:
                for record in records:
                    decode(record.value)
            seen += len(records)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


async def read_aiokafka(settings, count: int, decode) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    tps = [TopicPartition(settings.topic("events"), p) for p in range(settings.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    seen = 0
    started = time.perf_counter()
    while seen < count:
        batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
        for records in batch.values():
            if decode is not None:
                for record in records:
                    decode(record.value)
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
    alone = {name: 0.0 for name in ("model_validate_json", "full", "head")}
    for _ in range(5):  # interleaved, best of 5 passes over 20,000 records
        for name, decode in (
            ("model_validate_json", LogRecord.model_validate_json),
            ("full", decode_log),
            ("head", decode_head),
        ):
            started = time.perf_counter()
            for value in values[:20_000]:
                decode(value)
            alone[name] = max(alone[name], 20_000 / (time.perf_counter() - started))
    readers = {"raw": None, "before": LogRecord.model_validate_json, "full": decode_log, "head": decode_head}
    with bench_settings() as settings:
        append_rate = append(settings, values)
        figures: dict[str, list[float]] = {
            f"{client}_{kind}": [] for client in ("kp", "aio") for kind in readers if (client, kind) != ("kp", "before")
        }
        for _ in range(args.runs):
            for kind, decode in readers.items():
                if kind != "before":  # the decode before this change: on aiokafka only
                    figures[f"kp_{kind}"].append(read_kafka_python(settings, args.events, decode))
                figures[f"aio_{kind}"].append(asyncio.run(read_aiokafka(settings, args.events, decode)))
    med = {k: median(v) for k, v in figures.items()}
    ratio = {k: med[k] / med[k.split("_")[0] + "_raw"] for k in med}
    print(f"events: {args.events}, runs: {args.runs} (medians; ratios to the same run's raw read)")
    print(f"append (kafka-python, idempotent, acks=all): {append_rate:,.0f}/s")
    print(f"decode alone, LogRecord.model_validate_json: {alone['model_validate_json']:,.0f}/s (the decode before)")
    print(f"decode alone, full (decode_log):             {alone['full']:,.0f}/s")
    print(f"decode alone, head (decode_head, msgspec):   {alone['head']:,.0f}/s")
    labels = {"raw": "raw", "before": "model_validate_json", "full": "full decode", "head": "head decode"}
    for client, name in (("kp", "kafka-python"), ("aio", "aiokafka")):
        for kind in readers:
            key = f"{client}_{kind}"
            if key not in med:
                continue
            print(f"read {name:<13} {labels[kind]:<19} {med[key]:>10,.0f}/s  ratio {ratio[key]:.2f}")
    print("full decode: node recovery, read models, reactor, cloud controller, replay --at, diff, why index;")
    print("head decode: history, replay --what-if, state (their aggregate's payloads decoded in full)")
    finish(
        {
            "bench": "log_throughput",
            "events": args.events,
            "runs": args.runs,
            "append_per_s": round(append_rate),
            "decode_model_validate_json_only_per_s": round(alone["model_validate_json"]),
            "decode_only_per_s": round(alone["full"]),
            "decode_head_only_per_s": round(alone["head"]),
            "read_raw_kafka_python_per_s": round(med["kp_raw"]),
            "read_decoded_kafka_python_per_s": round(med["kp_full"]),
            "read_head_kafka_python_per_s": round(med["kp_head"]),
            "read_raw_aiokafka_per_s": round(med["aio_raw"]),
            "read_model_validate_json_aiokafka_per_s": round(med["aio_before"]),
            "ratio_model_validate_json": round(ratio["aio_before"], 3),
            "read_decoded_aiokafka_per_s": round(med["aio_full"]),
            "read_head_aiokafka_per_s": round(med["aio_head"]),
            "ratio": round(ratio["aio_full"], 3),
            "ratio_head": round(ratio["aio_head"], 3),
            "ratio_head_kafka_python": round(ratio["kp_head"], 3),
            "full_decode_readers": ["recovery", "read models", "reactor", "cloud", "replay --at", "diff", "why"],
            "head_decode_readers": ["history", "replay --what-if", "state"],
        }
    )


if __name__ == "__main__":
    main()
