"""Bulk reads and writes where raw speed matters (replay, recovery, generated histories):
aiokafka on a helper thread.

kafka-python reads tens of thousands of records per second here, aiokafka several hundred
thousand; the sync callers (node recovery, replay tools) iterate batches through a queue.
Writing, kafka-python's producer costs about 150 us a record in the caller's thread;
`BulkAppender` hands whole record batches to aiokafka instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as SyncTopicPartition
from pydantic import BaseModel

from infra.auth.signing import Signer
from infra.log.kafka import ce_headers, encode, kafka_client_options, topic_kind_of
from infra.settings import Settings
from schemas.envelope import Envelope

_DONE = object()
BULK_FETCH_BYTES = 32 << 20
"""The most a bulk read fetches of its partition at once."""
RANGE_BYTES_PER_RECORD = 2048
"""What a read of a known range asks the broker for per record (a commit is about 1.3 KB), at
least 1 MB: the broker sends the whole amount whatever the range needs, and 32 MB cost a range
of a few records 70 ms."""
READ_AHEAD_RECORDS = 1000
"""What a reader that may stop at any record lets the reader thread fetch and unpack ahead of
it (`iter_records(..., ahead=True)`): the rest of a 32 MB fetch, unpacked for a caller that has
stopped, was a third of a `replay --at`."""
BULK_FETCH_WAIT_MS = 20
"""How long the broker may hold a fetch: a bulk read wants what is there now, and a fetch of a
partition's tail waits its whole wait when nothing more comes."""


async def _produce_batches(
    settings: Settings,
    topic: str,
    partition: int,
    start: int,
    end: int | None,
    out: queue.Queue,
    stop: threading.Event,
    row=None,
    ahead: bool = False,
) -> None:
    most = READ_AHEAD_RECORDS if ahead else (None if end is None else end - start)
    fetch_bytes = (
        BULK_FETCH_BYTES if most is None else min(BULK_FETCH_BYTES, max(1 << 20, most * RANGE_BYTES_PER_RECORD))
    )
    per_batch = READ_AHEAD_RECORDS if ahead else 20_000
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings, "aiokafka"),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=2 * fetch_bytes,
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_wait_ms=BULK_FETCH_WAIT_MS,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        tail = (await consumer.end_offsets([tp]))[tp]
        end = tail if end is None else min(end, tail)
        beginning = (await consumer.beginning_offsets([tp]))[tp]
        # should retention move the beginning past it meanwhile, "earliest" goes to the new one
        consumer.seek(tp, max(start, beginning))
        # the position, not the last record's offset + 1: it also passes transaction markers
        # and records compacted away, which end offsets count
        while (position := await consumer.position(tp)) < end and not stop.is_set():
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=min(per_batch, end - position))
            records = [r for r in batch.get(tp, []) if r.offset < end]
            if records:
                out.put([(r.offset, r.key, r.value) for r in records] if row is None else [row(r) for r in records])
    finally:
        await consumer.stop()


def iter_partition(
    settings: Settings, topic_kind: str, partition: int, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes | None, bytes]]:
    """(offset, key, value) of one partition from `start` (or from its beginning, if retention
    deleted the records before `start`) to its end as it is now, or to offset `end` (excluded)."""
    for batch in iter_batches(settings, topic_kind, partition, start, end=end):
        yield from batch


def iter_records(
    settings: Settings, topic_kind: str, partition: int, start: int = 0, end: int | None = None, ahead: bool = False
) -> Iterator:
    """`iter_partition` as aiokafka's ConsumerRecords (topic, partition, offset, key, value,
    headers): what a reader that verifies signatures needs. `ahead`: the caller may stop at any
    record, so the reader thread keeps only `READ_AHEAD_RECORDS` ahead of it."""
    for batch in iter_batches(settings, topic_kind, partition, start, row=_itself, end=end, ahead=ahead):
        yield from batch


def _itself(record):
    return record


def iter_batches(
    settings: Settings,
    topic_kind: str,
    partition: int,
    start: int = 0,
    row=None,
    end: int | None = None,
    ahead: bool = False,
) -> Iterator[list]:
    """`iter_partition` a fetch at a time (a list each, at most 32 MB), each record as
    `row(record)` of the aiokafka ConsumerRecord if given (the archive keeps timestamps and
    headers): no per-record hand-over between the threads. A reader that needs only a range
    gives its `end`: the reader thread fetches ahead, and would otherwise fetch and unpack up
    to the partition's tail whatever the caller stops at."""
    out: queue.Queue = queue.Queue(maxsize=1 if ahead else 8)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                _produce_batches(settings, settings.topic(topic_kind), partition, start, end, out, stop, row, ahead)
            )
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


BULK_BATCH_RECORDS = 2000
BULK_BATCH_BYTES = 900_000
"""Below the broker's default message.max.bytes (1 MB): a record batch is one message to it."""


class OffsetMoved(RuntimeError):
    """A bulk batch landed elsewhere than expected: another writer appended to the partition."""


@dataclass
class Appended:
    """Where a record sent through `BulkAppender` is; `get` waits until the broker has it."""

    appender: BulkAppender
    topic: str
    partition: int
    offset: int

    def get(self, timeout: float = 60.0) -> Appended:
        self.appender._wait_for(self.topic, self.partition, self.offset, timeout)
        return self


class BulkAppender:
    """The Appender's `send` / `send_raw` / `flush` for one writer appending much: the same
    records with the same CloudEvents headers and signature (the platform's), sent a record
    batch at a time (idempotent, one batch in flight per partition: the order holds).

    Each send returns at once with the record's offset (the partition's end when first
    written to, plus what this appender sent there since): it must be the partitions' only
    writer meanwhile, and a batch that lands elsewhere raises `OffsetMoved`."""

    def __init__(self, settings: Settings, source: str = "node") -> None:
        self.settings = settings
        self.source = f"/stratos-es/{source}".encode()
        self.signer = Signer.platform(settings)
        self.rows: dict[tuple[str, int], list] = {}
        self.next: dict[tuple[str, int], int] = {}
        self.shipped: dict[tuple[str, int], list[tuple[int, Future]]] = {}
        """Per partition: (the offset after the batch, its future), in order."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bulk-appender", daemon=True)
        self.thread.start()
        self.locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.producer: AIOKafkaProducer = self._run(self._start()).result(60)
        self.ends = KafkaConsumer(**kafka_client_options(settings), group_id=None)

    async def _start(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(  # made on the loop that runs it
            **kafka_client_options(self.settings, "aiokafka"),
            enable_idempotence=True,
            max_batch_size=BULK_BATCH_BYTES,
            max_request_size=2 * BULK_BATCH_BYTES,
            linger_ms=0,
        )
        await producer.start()
        return producer

    def _run(self, coroutine) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def send(
        self,
        topic_kind: str,
        key: str | None,
        record: BaseModel,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> Appended:
        if partition is None:
            raise ValueError("partition: a bulk append names the partition of every record")
        return self.send_raw(
            self.settings.topic(topic_kind),
            key.encode() if key else None,
            encode(record),
            partition,
            record if isinstance(record, Envelope) else None,
            headers,
            timestamp_ms,
        )

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        record: Envelope | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> Appended:
        if partition is None:
            raise ValueError("partition: a bulk append names the partition of every record")
        all_headers = (ce_headers(record, self.source) if record is not None else []) + (headers or [])
        all_headers += self.signer.headers(topic_kind_of(self.settings, topic), key, value)
        where = (topic, partition)
        if where not in self.next:
            tp = SyncTopicPartition(topic, partition)
            self.next[where] = self.ends.end_offsets([tp])[tp]
            self.rows[where], self.shipped[where] = [], []
        offset = self.next[where]
        self.next[where] = offset + 1
        rows = self.rows[where]
        rows.append((timestamp_ms, key, value, all_headers))
        if len(rows) >= BULK_BATCH_RECORDS:
            self._ship(where)
        return Appended(self, topic, partition, offset)

    def _ship(self, where: tuple[str, int]) -> None:
        rows, self.rows[where] = self.rows[where], []
        shipped = self.shipped[where]
        while shipped and shipped[0][1].done():
            shipped.pop(0)[1].result()  # a failed batch raises here
        if rows:
            end = self.next[where]
            self.shipped[where].append((end, self._run(self._send(where, rows, end - len(rows)))))

    async def _send(self, where: tuple[str, int], rows: list, first: int) -> None:
        topic, partition = where
        lock = self.locks.setdefault(where, asyncio.Lock())
        async with lock:  # batches of a partition go in the order they were made
            sent, batch, at, count = [], self.producer.create_batch(), first, 0
            for timestamp, key, value, headers in rows:
                if batch.append(timestamp=timestamp, key=key, value=value, headers=headers) is None:
                    sent.append((await self.producer.send_batch(batch, topic, partition=partition), at))
                    batch, at, count = self.producer.create_batch(), at + count, 0
                    batch.append(timestamp=timestamp, key=key, value=value, headers=headers)
                count += 1
            sent.append((await self.producer.send_batch(batch, topic, partition=partition), at))
        for future, expected in sent:
            meta = await future
            if meta.offset != expected:
                raise OffsetMoved(
                    f"{topic}[{partition}]: a batch expected at offset {expected} landed at {meta.offset}"
                )

    def _wait_for(self, topic: str, partition: int, offset: int, timeout: float) -> None:
        where = (topic, partition)
        if offset >= self.next[where] - len(self.rows[where]):
            self._ship(where)
        for end, future in self.shipped[where]:
            if offset < end:
                future.result(timeout)
                return

    def flush(self, timeout: float = 60.0) -> None:
        for where in list(self.rows):
            self._ship(where)
        for shipped in self.shipped.values():
            for _end, future in shipped:
                future.result(timeout)
            shipped.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._run(self.producer.stop()).result(60)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.ends.close()
