"""Bulk reads where raw speed matters (replay, recovery): aiokafka on a helper thread.

kafka-python reads tens of thousands of records per second here, aiokafka several hundred
thousand; the sync callers (node recovery, replay tools) iterate batches through a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.log.kafka import kafka_client_options
from infra.settings import Settings

_DONE = object()
BULK_FETCH_WAIT_MS = 20
"""How long the broker may hold a fetch: a bulk read wants what is there now, and a fetch of a
partition's tail waits its whole wait when nothing more comes."""


async def _produce_batches(
    settings: Settings, topic: str, partition: int, start: int, out: queue.Queue, stop: threading.Event, row=None
) -> None:
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings, "aiokafka"),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=32 << 20,
        fetch_max_wait_ms=BULK_FETCH_WAIT_MS,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        beginning = (await consumer.beginning_offsets([tp]))[tp]
        # should retention move the beginning past it meanwhile, "earliest" goes to the new one
        consumer.seek(tp, max(start, beginning))
        # the position, not the last record's offset + 1: it also passes transaction markers
        # and records compacted away, which end offsets count
        while await consumer.position(tp) < end and not stop.is_set():
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=20_000)
            records = batch.get(tp, [])
            if records:
                out.put([(r.offset, r.key, r.value) for r in records] if row is None else [row(r) for r in records])
    finally:
        await consumer.stop()


def iter_partition(
    settings: Settings, topic_kind: str, partition: int, start: int = 0
) -> Iterator[tuple[int, bytes | None, bytes]]:
    """(offset, key, value) of one partition from `start` (or from its beginning, if retention
    deleted the records before `start`) to its end as it is now."""
    for batch in iter_batches(settings, topic_kind, partition, start):
        yield from batch


def iter_records(settings: Settings, topic_kind: str, partition: int, start: int = 0) -> Iterator:
    """`iter_partition` as aiokafka's ConsumerRecords (topic, partition, offset, key, value,
    headers): what a reader that verifies signatures needs."""
    for batch in iter_batches(settings, topic_kind, partition, start, row=_itself):
        yield from batch


def _itself(record):
    return record


def iter_batches(settings: Settings, topic_kind: str, partition: int, start: int = 0, row=None) -> Iterator[list]:
    """`iter_partition` a fetch at a time (a list each, at most 32 MB), each record as
    `row(record)` of the aiokafka ConsumerRecord if given (the archive keeps timestamps and
    headers): no per-record hand-over between the threads."""
    out: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_produce_batches(settings, settings.topic(topic_kind), partition, start, out, stop, row))
        except BaseException as exc:  # handed to the caller below, not swallowed
            failure.append(exc)
        finally:
            out.put(_DONE)

    reader = threading.Thread(target=run, name=f"bulk-{topic_kind}-{partition}", daemon=True)
    reader.start()
    try:
        while (batch := out.get()) is not _DONE:
            yield batch
    finally:
        stop.set()
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                out.get(timeout=0.1)
        reader.join()
    if failure:
        raise failure[0]
