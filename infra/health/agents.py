"""The agents of the health app: short loops that hand records to ``streams.health_state``.

On partition assignment the worker reads each health partition it gains from the first record
of the last window (offsets-for-times), so that after a restart or a takeover the windows hold
what they held before and no decision waits a window of warm-up. The cluster views are rebuilt
in full from the events topic.

No record and no cluster stops an agent: invalid health records go to dead letters, invalid
events are skipped (``infra.health.views``), and a hop that fails for one cluster or one send
is logged and the rest of it goes on (a dead agent would stop the autoscaler for everyone).
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from pydantic import BaseModel

from infra.auth.signing import Signer, Verifier
from infra.health import HEALTH_GROUP
from infra.health.service import HealthService
from infra.log.kafka import (
    GROUP_TIMINGS,
    ce_headers,
    decode,
    decode_key,
    encode,
    envelope,
    kafka_client_options,
    partitions_of,
    rejection_reason,
)
from infra.settings import Settings
from schemas.envelope import Envelope
from schemas.records import CommandRecord, HealthRecord

log = logging.getLogger(__name__)
BATCH = 2000
"""Health records handled per step before the event loop is yielded."""
HEALTH_SOURCE = b"/stratos-es/health"
EVENTS_BATCH = 2000
"""Events records folded per step of the views reader before it yields the event loop."""


HEALTH_FETCH_WAIT_MS = 1000
"""The longest the health reader waits in a fetch. aiokafka keeps one fetch in flight per
broker, so a fetch of a partition read to its end holds back the other partitions' next fetch
for its whole wait: at 5 s one worker drained a backlog at 9,000-12,000 records/s, at 1 s at
~25,000/s; idle, each wait ends in an empty fetch (the events reader waits the platform's wait:
both at 500 ms cost the idle platform 0.008 of a core more)."""


def register(service: HealthService) -> None:
    app, topics, views, book = service.app, service.topics, service.views, service.book
    verifier, signer = Verifier.of(service.settings), Signer.platform(service.settings)

    @app.task
    async def follow_cluster_views():
        """Fold every partition of the events topic into the views, from their own checkpoint
        (`infra.log.projection`): no group, so no rebalance and no changelog."""
        loop = asyncio.get_running_loop()
        projection = views.projection
        restored = await loop.run_in_executor(None, projection.restore)
        consumer = AIOKafkaConsumer(
            **kafka_client_options(service.settings, "aiokafka"),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_bytes=16 << 20,
            fetch_max_wait_ms=service.settings.fetch_wait_ms,
        )
        await consumer.start()
        try:
            tps = await _assign_all(consumer, service.settings, "events")
            if restored is not None:
                for tp in tps:
                    if tp.partition in projection.positions:
                        consumer.seek(tp, projection.positions[tp.partition])
            ends = await consumer.end_offsets(tps)
            behind = set(tps)
            while True:
                behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
                if not behind and not service.views_ready.is_set():
                    service.views_ready.set()  # the views hold the log: the windows need not wait for the write
                    if projection.read:  # where the next start begins
                        checkpoint = projection.capture()
                        await loop.run_in_executor(None, projection.write, service.dead_letters.appender, checkpoint)
                for records in (await consumer.getmany(timeout_ms=1000, max_records=EVENTS_BATCH)).values():
                    for raw in records:
                        views.feed(raw)
                if projection.due():  # the state captured here, sent beside the loop
                    checkpoint = projection.capture()
                    await loop.run_in_executor(None, projection.write, service.dead_letters.appender, checkpoint)
                await asyncio.sleep(0)  # a long backlog never holds the loop (heartbeats)
        finally:
            await consumer.stop()

    @app.task
    async def fill_windows():
        """Add each batch of health statistics to the windows; invalid ones go to dead letters.

        Read in batches straight from aiokafka in the group ``<prefix>health-windows``, not as
        a faust agent: faust's per-message machinery (message, event, channel, ack, sensors)
        cost ~200 us a record here, ten times the decoding and the window update together."""
        loop = asyncio.get_running_loop()
        await service.views_ready.wait()
        consumer = AIOKafkaConsumer(
            **kafka_client_options(service.settings, "aiokafka"),
            group_id=service.settings.topic(HEALTH_GROUP),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_bytes=16 << 20,
            fetch_max_wait_ms=min(service.settings.fetch_wait_ms, HEALTH_FETCH_WAIT_MS),
            **GROUP_TIMINGS,
        )
        consumer.subscribe([service.settings.topic("health")], listener=_KeepPartitions(service, consumer))
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
                received_at, now = time.monotonic(), time.time()
                for records in batch.values():
                    for raw in records:
                        try:  # the signature is checked on the raw bytes, before parsing
                            sender = verifier.sender("health", raw.key, raw.value, raw.headers)
                            decode_key(raw.key)
                            record = decode("health", raw.value, raw.headers)
                            verifier.require_signed("health", sender, record)
                            book.ingest(record, views.clusters, raw.partition, received_at, now)
                        except Exception as exc:  # ValueError: invalid; anything else costs one record
                            if not isinstance(exc, ValueError):
                                log.exception("health record %d@%d raised", raw.partition, raw.offset)
                            loop.run_in_executor(
                                None,
                                service.dead_letters.send,
                                raw.topic,
                                raw.partition,
                                raw.offset,
                                raw.key,
                                raw.value,
                                rejection_reason(exc),
                                exc,
                            )
                if batch:
                    await _commit(consumer, {tp: records[-1].offset + 1 for tp, records in batch.items()})
                await asyncio.sleep(0)  # a long backlog never holds the loop (the hop, heartbeats)
        finally:
            await consumer.stop()

    @app.timer(service.settings.health_hop_seconds, name="health-hop")
    async def hop():
        """Every hop: a ScaleCluster per cluster with fresh figures that would change it, a
        MemberFault per silence."""
        now = time.time()
        hop_index = int(now // service.settings.health_hop_seconds)
        for decision in book.decide(views.clusters, now):
            await _send(
                topics.commands,
                signer,
                "commands",
                CommandRecord,
                decision.command,
                decision.key,
                tenant=decision.tenant,
                causation_id=decision.causation_id,
                record_id=decision.command_id(hop_index),
            )
        for fault in book.faults(views.clusters, time.monotonic()):
            await _send(topics.health, signer, "health", HealthRecord, fault.fault, fault.key, tenant=fault.tenant)


class _KeepPartitions(ConsumerRebalanceListener):
    """A rebalance: forget the clusters of health partitions this worker no longer owns, and
    fill the windows of those it gains with their last window of records."""

    def __init__(self, service: HealthService, consumer: AIOKafkaConsumer) -> None:
        self.service = service
        self.consumer = consumer
        self.held: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        self.service.book.keep_partitions({tp.partition for tp in assigned})
        gained = set(assigned) - self.held  # the windows of those kept are whole already
        self.held = set(assigned)
        try:  # should it fail (aiokafka logs it), they are read from the committed offsets
            if gained:
                await _rewind_one_window(self.consumer, gained, self.service.settings.health_window_seconds)
        finally:
            self.service.reading.set()


async def _rewind_one_window(
    consumer: AIOKafkaConsumer, partitions: set[TopicPartition], window_seconds: float
) -> None:
    """Read each partition from its first record of the last window, or from its committed
    offset if that is earlier (records nobody read yet are still read: the invalid ones go to
    dead letters). Where every record is older than a window, from the committed offset, or
    from the end without one: a new group does not fold the whole topic."""
    ends = await consumer.end_offsets(list(partitions))  # before the times: no record falls between
    since = await consumer.offsets_for_times({tp: int((time.time() - window_seconds) * 1000) for tp in partitions})
    for tp in partitions:
        window_start = since[tp].offset if since.get(tp) is not None else ends[tp]
        committed = await consumer.committed(tp)
        consumer.seek(tp, window_start if committed is None else min(window_start, committed))


async def _commit(consumer: AIOKafkaConsumer, offsets: dict) -> None:
    """Commit what was windowed; a commit lost to a rebalance means those records are read
    again: by a new owner into empty windows, by this worker if it keeps the partition (counted
    twice until they leave the window)."""
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("health offsets not committed (a rebalance): %s", exc)


async def _send(
    topic, signer: Signer, kind: str, record_type: type[Envelope], payload: BaseModel, key: str, **fields
) -> None:
    """Wrap, sign and send one record keyed by its aggregate; a failure is logged and costs only it."""
    try:
        record = envelope(record_type, payload, key, **fields)
        value = encode(record)
        await topic.send(
            key=key.encode(),
            value=value,
            headers=ce_headers(record, HEALTH_SOURCE) + signer.headers(kind, key.encode(), value),
        )
    except Exception:
        log.exception("sending %s for %s failed", payload.type, key)  # type: ignore[attr-defined]


async def _assign_all(consumer: AIOKafkaConsumer, settings: Settings, kind: str) -> list[TopicPartition]:
    """Every partition of the topic, assigned and positioned at its beginning. The count comes
    from kafka-python: aiokafka's metadata holds only the topics it reads (it starts with a
    request for no topic, which Kafka answers with none)."""
    count = await asyncio.get_running_loop().run_in_executor(None, partitions_of, settings, kind)
    tps = [TopicPartition(settings.topic(kind), p) for p in range(count)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps
