"""Archives of the log: `stratos log export/import`.

They write the format of `infra/log/archive_format.py` (compressed, checksummed blocks). Export reads
each partition with the bulk reader (aiokafka) and writes it as blocks; import writes the blocks
back, partition by partition, as aiokafka batches keeping keys, values, headers and timestamps,
into topics that must be empty, so that every record gets its original offset back (snapshots
name events offsets) — checked against the broker's answer for every batch.

Which topics carry history (HISTORY_TOPICS, docs/clients.md "Archive"): the events (the log), the
snapshots (checkpoints and claim markers: the snapshot fence), the commands and the replies
(every input and its outcome: `why` follows causes through them), the health statistics and
instance status (what the autoscaler and the reactor saw), the instance notifier and the dead
letters. Not the topology (a projection of the events). An imported record is history, already
handled: import commits the offsets of the platform's consumer groups (nodes, reactor, cloud
controller, health worker) at its end, so a platform started on the copy does not handle
the commands again, react again or start machines for old spawns (`reread=True` leaves them
unset).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from infra.auth.signing import TOKEN
from infra.log.archive_format import ArchiveCorrupt, ArchiveReader, ArchiveWriter
from infra.log.bulk import iter_batches
from infra.log.kafka import ORIGINAL_HEADERS, kafka_client_options
from infra.settings import Settings

log = logging.getLogger(__name__)

HISTORY_TOPICS = (
    "events",
    "snapshots",
    "commands",
    "replies",
    "instance-status",
    "health",
    "instance-notifier",
    "deadletter",
)
"""What `stratos log export` archives by default, in this order (the log first: a truncated
archive keeps the most important prefix)."""
PIPELINED_BATCHES = 16
BATCH_BYTES = 1 << 20


class ImportRefused(Exception):
    """The destination is not fit for an import (a topic partition already holds records)."""


@dataclass
class Transfer:
    """What an export or import moved: records per topic, and where it stopped if it did."""

    records: dict[str, int] = field(default_factory=dict)
    blocks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    complete: bool = True
    corrupt: ArchiveCorrupt | None = None
    offset_mismatches: int = 0
    partitions: dict[tuple[str, int], int] = field(default_factory=dict)
    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    groups_marked: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.records.values())

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "total": self.total,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.total / self.seconds) if self.seconds else None,
            "complete": self.complete,
            "offset_mismatches": self.offset_mismatches,
            "consumer_groups_at_end": self.groups_marked,
            "corrupt": self.corrupt.as_dict() if self.corrupt else None,
        }


def _partitions(settings: Settings, kinds) -> dict[str, list[int]]:
    consumer = KafkaConsumer(**kafka_client_options(settings))
    try:
        return {kind: sorted(consumer.partitions_for_topic(settings.topic(kind)) or ()) for kind in kinds}
    finally:
        consumer.close()


BEARER_HEADERS = {TOKEN, ORIGINAL_HEADERS + TOKEN}
"""Headers an archive never keeps: a user's bearer token is a credential (valid until it expires
or is revoked), not history; the platform's check of it is in the reply and the dead letter."""


def _row(record) -> tuple:
    headers = [(name, value) for name, value in record.headers or () if name not in BEARER_HEADERS]
    return (record.offset, record.timestamp, record.key, record.value, headers)


def export_log(settings: Settings, path: Path, topics=HISTORY_TOPICS) -> Transfer:
    """Write every record of the topics, partition by partition, to a new archive at `path`
    (written beside it and renamed when complete)."""
    started = time.monotonic()
    result = Transfer()
    partial = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("wb") as out:
        writer = ArchiveWriter(out)
        for kind, partitions in _partitions(settings, topics).items():
            count = 0
            for partition in partitions:
                count += writer.write_partition(kind, partition, iter_batches(settings, kind, partition, row=_row))
            result.records[kind] = count
        writer.write_end({"records": result.records})
        result.blocks, result.bytes = writer.blocks, out.tell()
    partial.replace(path)
    result.seconds = time.monotonic() - started
    return result


def check_empty(settings: Settings, kinds) -> None:
    """Refuse an import into topics that hold records: offsets would shift."""
    consumer = KafkaConsumer(**kafka_client_options(settings))
    try:
        for kind in kinds:
            topic = settings.topic(kind)
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            for tp, end in consumer.end_offsets(tps).items():
                if end:
                    raise ImportRefused(
                        f"{topic} partition {tp.partition} already holds records (end offset "
                        f"{end}): import into a fresh broker or another STRATOS_TOPIC_PREFIX"
                    )
    finally:
        consumer.close()


def import_log(settings: Settings, path: Path, topics=None, check: bool = True, reread: bool = True) -> Transfer:
    """Write the archive's records back (only `topics`, if given), each partition's records in
    order at their original offsets. A corrupt or truncated archive imports its intact prefix;
    the returned Transfer's `corrupt` says where it stopped. Unless `reread`, the platform's
    consumer groups are committed at the end of what was imported (handled history)."""
    if check:
        check_empty(settings, topics or HISTORY_TOPICS)
    result = asyncio.run(_import(settings, Path(path), set(topics) if topics else None))
    if not reread and result.ends:
        result.groups_marked = mark_handled(settings, result.ends)
    return result


def platform_groups(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each consumer group of the platform and the topics it reads (as it names them)."""
    from infra.cloud.controller import CLOUD_GROUP
    from infra.health import HEALTH_GROUP
    from infra.node.node import NODE_GROUP
    from infra.reactor.reactor import REACTOR_GROUP, SOURCES

    return {
        settings.topic(NODE_GROUP): ("commands",),
        settings.topic(REACTOR_GROUP): tuple(SOURCES),
        settings.topic(CLOUD_GROUP): ("events",),
        settings.topic(HEALTH_GROUP): ("health",),
    }


def mark_handled(settings: Settings, ends: dict[tuple[str, int], int]) -> list[str]:
    """Commit each group's offsets at the imported ends (a group-less commit, as a group with
    no members accepts); returns the groups marked."""
    from kafka.structs import OffsetAndMetadata

    marked = []
    for group, kinds in platform_groups(settings).items():
        offsets = {
            TopicPartition(settings.topic(kind), partition): OffsetAndMetadata(end, "", -1)
            for (kind, partition), end in ends.items()
            if kind in kinds
        }
        if not offsets:
            continue
        consumer = KafkaConsumer(**kafka_client_options(settings), group_id=group, enable_auto_commit=False)
        try:
            consumer.assign(list(offsets))
            consumer.commit(offsets)
        finally:
            consumer.close()
        marked.append(group)
    return marked


async def _import(settings: Settings, path: Path, topics: set[str] | None) -> Transfer:
    started = time.monotonic()
    result = Transfer(complete=False)
    # one batch in flight per partition (aiokafka mutes a partition until its batch is
    # answered) keeps the order; idempotence keeps a retried batch from landing twice, which
    # would shift every offset after it
    producer = AIOKafkaProducer(
        **kafka_client_options(settings, "aiokafka"),
        enable_idempotence=True,
        max_batch_size=BATCH_BYTES,
        max_request_size=8 * BATCH_BYTES,
        linger_ms=0,
    )
    await producer.start()
    pending: list[tuple[asyncio.Future, int, str]] = []

    async def settle(keep: int) -> None:
        while len(pending) > keep:
            future, expected, where = pending.pop(0)
            meta = await future
            if meta.offset != expected:
                result.offset_mismatches += 1
                log.warning(
                    "import: %s's batch from offset %d landed at %d (the topic was not empty?)",
                    where,
                    expected,
                    meta.offset,
                )

    reader = ArchiveReader(path)
    try:
        for block in reader:
            if block.totals is not None or (topics is not None and block.topic not in topics):
                continue
            topic, where = settings.topic(block.topic), f"{block.topic}[{block.partition}]"
            batch, first = producer.create_batch(), block.rows[0][0] if block.rows else 0
            for offset, timestamp, key, value, headers in block.rows:
                record = dict(
                    key=key, value=value, timestamp=timestamp if timestamp >= 0 else None, headers=list(headers)
                )  # aiokafka's batch builder takes a list
                if batch.append(**record) is None:  # full: it goes, the record opens the next
                    pending.append((await producer.send_batch(batch, topic, partition=block.partition), first, where))
                    batch, first = producer.create_batch(), offset
                    batch.append(**record)
            pending.append((await producer.send_batch(batch, topic, partition=block.partition), first, where))
            result.records[block.topic] = result.records.get(block.topic, 0) + len(block.rows)
            where = (block.topic, block.partition)  # type: ignore[assignment]
            result.partitions[where] = result.partitions.get(where, 0) + len(block.rows)  # type: ignore[call-overload, index]
            if block.rows:
                result.ends[where] = block.rows[-1][0] + 1  # type: ignore[index]
            await settle(PIPELINED_BATCHES)
        result.complete = reader.complete
    except ArchiveCorrupt as exc:
        result.corrupt = exc
    finally:
        try:
            await settle(0)
        finally:
            await producer.stop()
    result.blocks, result.bytes = reader.blocks, reader.valid_bytes
    result.seconds = time.monotonic() - started
    return result
