"""`stratos log export / import` of 1,000,000 events: events/s each way and peak RSS.

The events topic (4 partitions) is filled with commits as nodes write them (one event each,
1,000 clusters, CloudEvents headers), first 250,000 then up to 1,000,000. At each size the
whole history is exported to a file and imported into fresh topics, and the process's peak RSS
is sampled during each step: memory flat in the number of records means the 1M figures match
the 250k ones. Same-run baselines: a bare aiokafka read of the same partitions (export's
reader, writing nothing) and the bench's own loader (aiokafka batches of the same records,
nothing to decode), so the ratios say what the archive format costs. Rates are given per
wall-clock second and per CPU-second of this process: on a shared machine the broker's share
of the cores dominates the wall clock.
Usage: python bench/archive.py [--events 1000000] [--small 250000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
from aiokafka import AIOKafkaProducer
from common import bench_settings, finish

from infra.log.archive import export_log, import_log
from infra.log.bulk import iter_partition
from infra.log.kafka import ce_headers, encode, ensure_topics, envelope
from infra.node.node import partition_for
from schemas.events import MemberActivated
from schemas.records import Commit, LogRecord

PARTITIONS = 4
ID_TAG = "f" * 16


class PeakRSS:
    """Samples this process's resident set every 10 ms; `peak()` since the last reset (MB)."""

    def __init__(self) -> None:
        self.process, self.value, self.stopping = psutil.Process(), 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.value = max(self.value, self.process.memory_info().rss)
            time.sleep(0.01)

    def reset(self) -> None:
        self.value = self.process.memory_info().rss

    def peak(self) -> float:
        return round(self.value / 1e6, 1)


def template(cluster: int) -> tuple[bytes, bytes, list]:
    aggregate = f"carbon.super/cluster/app{cluster}.php.php.domain"
    record = envelope(
        LogRecord,
        Commit(
            command_type="ReportInstanceStatus",
            outcome="accepted",
            claim="c" * 32,
            writer="bench:1:abcdef",
            events=[MemberActivated(member_id=f"php.{cluster}.m1", cluster_id=f"app{cluster}.php.php.domain")],
        ),
        aggregate,
        aggregate_seq=7,
        record_id=ID_TAG,
        causation_id=ID_TAG + "c",
        correlation_id=ID_TAG + "r",
    )
    return aggregate.encode(), encode(record), ce_headers(record, b"/stratos-es/node")


async def load(settings, start: int, stop: int) -> float:
    """Append events start..stop-1 (ids differ per record); returns seconds taken."""
    templates = [template(c) for c in range(1000)]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_batch_size=1 << 20, linger_ms=5
    )
    await producer.start()
    began = time.monotonic()
    batches = {p: producer.create_batch() for p in range(PARTITIONS)}
    pending = []
    for n in range(start, stop):
        key, value, headers = templates[n % 1000]
        tag = f"{n:016x}"
        value = value.replace(ID_TAG.encode(), tag.encode())
        headers = [(h, v.replace(ID_TAG.encode(), tag.encode())) for h, v in headers]
        partition = partition_for(key.decode(), PARTITIONS)
        if batches[partition].append(key=key, value=value, timestamp=None, headers=headers) is None:
            pending.append(await producer.send_batch(batches[partition], settings.topic("events"), partition=partition))
            batches[partition] = producer.create_batch()
            batches[partition].append(key=key, value=value, timestamp=None, headers=headers)
        if len(pending) > 32:
            await pending.pop(0)
    for partition, batch in batches.items():
        pending.append(await producer.send_batch(batch, settings.topic("events"), partition=partition))
    await asyncio.gather(*pending)
    await producer.stop()
    return time.monotonic() - began


def raw_read(settings) -> tuple[int, float, float]:
    began, cpu = time.monotonic(), time.process_time()
    count = sum(1 for p in range(PARTITIONS) for _ in iter_partition(settings, "events", p))
    return count, time.monotonic() - began, time.process_time() - cpu


def round_trip(settings, rss: PeakRSS, directory: Path, size: int) -> dict:
    archive = directory / f"events-{size}.archive"
    rss.reset()
    cpu = time.process_time()
    exported = export_log(settings, archive)
    export_cpu = time.process_time() - cpu
    export_rss = rss.peak()
    target = settings.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:6]}."})
    ensure_topics(target)
    rss.reset()
    cpu = time.process_time()
    imported = import_log(target, archive)
    import_cpu = time.process_time() - cpu
    import_rss = rss.peak()
    assert imported.total == exported.total == size, (imported.total, exported.total, size)
    assert imported.offset_mismatches == 0 and imported.corrupt is None
    archive.unlink()
    return {
        "events": size,
        "export_per_s": round(size / exported.seconds),
        "import_per_s": round(size / imported.seconds),
        "export_per_cpu_s": round(size / export_cpu),
        "import_per_cpu_s": round(size / import_cpu),
        "export_peak_rss_mb": export_rss,
        "import_peak_rss_mb": import_rss,
        "archive_bytes": exported.bytes,
        "bytes_per_event": round(exported.bytes / size, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=250_000)
    args = parser.parse_args()
    rss = PeakRSS()
    with bench_settings(PARTITIONS) as settings, tempfile.TemporaryDirectory() as tmp:
        small_load = asyncio.run(load(settings, 0, args.small))
        small = round_trip(settings, rss, Path(tmp), args.small)
        print(
            f"{args.small:,} events: export {small['export_per_s']:,}/s (peak RSS {small['export_peak_rss_mb']} MB), "
            f"import {small['import_per_s']:,}/s (peak RSS {small['import_peak_rss_mb']} MB)"
        )
        big_load = asyncio.run(load(settings, args.small, args.events))
        loader_per_s = round((args.events) / (small_load + big_load))
        read_count, read_seconds, read_cpu = raw_read(settings)
        big = round_trip(settings, rss, Path(tmp), args.events)
        print(
            f"{args.events:,} events: export {big['export_per_s']:,}/s (peak RSS {big['export_peak_rss_mb']} MB), "
            f"import {big['import_per_s']:,}/s (peak RSS {big['import_peak_rss_mb']} MB), "
            f"{big['bytes_per_event']} archive bytes per event"
        )
        print(
            f"per CPU-second of this process (the broker's share excluded): export "
            f"{big['export_per_cpu_s']:,}/s, import {big['import_per_cpu_s']:,}/s, bare read "
            f"{round(read_count / read_cpu):,}/s"
        )
        read_per_s = round(read_count / read_seconds)
        print(f"baselines: bare aiokafka read {read_per_s:,}/s, loader (aiokafka batches) {loader_per_s:,}/s")
        result = {
            "bench": "archive",
            "small": small,
            "large": big,
            "raw_read_per_s": read_per_s,
            "loader_per_s": loader_per_s,
            "raw_read_per_cpu_s": round(read_count / read_cpu),
            "export_vs_raw_read": round(big["export_per_s"] / read_per_s, 2),
            "import_vs_loader": round(big["import_per_s"] / loader_per_s, 2),
            "rss_ratio_large_vs_small": round(
                max(big["export_peak_rss_mb"], big["import_peak_rss_mb"])
                / max(small["export_peak_rss_mb"], small["import_peak_rss_mb"]),
                2,
            ),
            "aim_per_s": 100_000,
        }
        print(
            f"ratios: export/raw read {result['export_vs_raw_read']}, import/loader {result['import_vs_loader']}, "
            f"peak RSS 1M/250k {result['rss_ratio_large_vs_small']}"
        )
        finish(result)


if __name__ == "__main__":
    main()
