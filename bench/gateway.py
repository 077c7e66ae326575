"""The long-poll gateway's cost on throughput: the same work on a bare Tansu and through the gateway.

One run starts two embedded Tansu brokers (infra/broker.py): one bare, one behind its long-poll
gateway (`infra/longpoll.py`), as `stratos up` runs it. (Tansu advertises one address, so a
client that bootstraps through a gateway is sent back to it: two brokers of the same build, with
the same records, are the same-run baseline.) On each, measured in alternation (bare, then
gateway, --runs times; medians):
- append: N one-event commits of the log (~500 bytes) with bench/log_throughput.py's `append`
  (the Appender, signed, idempotent, acks=all, linger 20 ms, 512 KiB batches, 5 in flight);
- small produce: N/10 records of ~200 bytes (a health record's size) with the platform's
  Appender as it is (signed, idempotent, acks=all, linger 2 ms), sent without waiting, flushed;
- round trips: 300 records sent one at a time with the Appender, each waited for (a command's
  append);
- raw bulk reads of the N records (4 partitions, from the beginning, nothing decoded) with
  aiokafka and with kafka-python: bench/log_throughput.py's readers.
Prints each figure for both and the ratio gateway/bare; ends with one JSON line.
Usage: python bench/gateway.py [--records N] [--runs R]
"""
from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from common import finish, median
from log_throughput import append, make_records, read_aiokafka, read_kafka_python

from infra.broker import EmbeddedBroker
from infra.kafka import Appender, ensure_topics
from infra.settings import Settings

PARTITIONS = 4
ROUND_TRIPS = 300


def health_like(n: int) -> bytes:
    """A record the size of a member's health sample (~200 bytes)."""
    return (b'{"id":"%032x","type":"HealthRecord","aggregate_id":"carbon.super/cluster/c%d","payload":'
            b'{"member_id":"c%d.m%d","load_average":%d.5,"memory_consumption":41.25}}'
            % (n, n % 100, n % 100, n, n % 97))


def small_produce(settings: Settings, count: int) -> float:
    appender = Appender(settings)
    topic = settings.topic("health")
    started = time.perf_counter()
    for n in range(count):
        appender.send_raw(topic, b"c%d" % (n % 100), health_like(n))
    appender.flush(120)
    elapsed = time.perf_counter() - started
    appender.close()
    return count / elapsed


def round_trips(settings: Settings, count: int) -> float:
    appender = Appender(settings, linger_ms=0)
    topic = settings.topic("health")
    appender.send_raw(topic, None, b"warm-up").get(30)
    started = time.perf_counter()
    for n in range(count):
        appender.send_raw(topic, b"rt", health_like(n)).get(30)
    elapsed = time.perf_counter() - started
    appender.close()
    return count / elapsed


FIGURES = {
    "append": "append, Appender, acks=all, 512 KiB batches",
    "small_produce": "small produce, Appender, flushed",
    "round_trips": "one at a time, each waited for",
    "aiokafka_read": "raw bulk read, aiokafka",
    "kafka_python_read": "raw bulk read, kafka-python",
}


def measure(settings: Settings, values: list[bytes], small: int, figures: dict[str, list[float]]) -> None:
    figures["append"].append(append(settings, values))
    figures["small_produce"].append(small_produce(settings, small))
    figures["round_trips"].append(round_trips(settings, ROUND_TRIPS))
    figures["aiokafka_read"].append(asyncio.run(read_aiokafka(settings, len(values), False)))
    figures["kafka_python_read"].append(read_kafka_python(settings, len(values), False))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    values = make_records(args.records)
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
