"""The agents of the health app: short loops that hand records to ``streams.health_state``.

On partition assignment the worker accepts one window of warm-up, as Stratos's CEP did after
a restart: windows start empty and fill from the records read from the committed offsets on.
Re-reading the last window would need offsets-for-times, which this broker does not answer
reliably (ARCHITECTURE.md); the cluster views, in a faust Table, are restored in full.
"""
from __future__ import annotations

import asyncio
import logging
import time

from pydantic import ValidationError

from infra.kafka import decode, encode, envelope, rejection_reason
from schemas.records import CommandRecord, HealthRecord
from streams.app import HealthService
from streams.health_state import VIEW_EVENTS, Rejected, apply_event

log = logging.getLogger(__name__)
BATCH = 2000
"""Health records handled per step (faust's per-record cost dominates below a few hundred)."""
BATCH_WITHIN = 0.1
"""Seconds a step waits to fill its batch: small beside any hop."""


def register(service: HealthService) -> None:
    app, topics, clusters, book = service.app, service.topics, service.clusters, service.book

    @app.agent(topics.events, name="cluster-views")
    async def fold_cluster_views(stream):
        """Keep each cluster's view (limits, thresholds, members) in the table, one event at a
        time so each table write goes to the partition of the event that caused it."""
        async for event in stream.events():
            try:
                record = decode("events", event.value)
            except (ValidationError, ValueError) as exc:  # the reactor dead-letters it
                log.warning("skipping invalid event at offset %d: %s", event.message.offset,
                            rejection_reason(exc))
                continue
            if record.type not in VIEW_EVENTS:
                continue
            view = apply_event(clusters.get(record.aggregate_id), record)
            if view is not None:
                clusters[record.aggregate_id] = view
            elif record.aggregate_id in clusters:
                del clusters[record.aggregate_id]

    @app.agent(topics.health, name="health-windows")
    async def fill_windows(stream):
        """Add each batch of health statistics to the windows; invalid ones go to dead letters."""
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(BATCH, within=BATCH_WITHIN):
            received_at = time.monotonic()
            for event in events:
                message = event.message
                try:
                    book.ingest(decode("health", event.value), clusters, message.partition, received_at)
                except (ValidationError, ValueError, Rejected) as exc:
                    loop.run_in_executor(None, service.dead_letters.send, message.topic,
                                         message.partition, message.offset, message.key,
                                         event.value, rejection_reason(exc))

    @app.timer(service.settings.health_hop_seconds, name="health-hop")
    async def hop():
        """Every hop: a ScaleCluster per cluster with fresh figures, a MemberFault per silence."""
        for decision in book.decide(clusters):
            record = envelope(CommandRecord, decision.command, decision.key, tenant=decision.tenant,
                              causation_id=decision.causation_id)
            await topics.commands.send(key=decision.key.encode(), value=encode(record))
        for fault in book.faults(clusters, time.monotonic()):
            record = envelope(HealthRecord, fault.fault, fault.key, tenant=fault.tenant)
            await topics.health.send(key=fault.key.encode(), value=encode(record))

    @app.on_partitions_assigned.connect
    async def forget_lost_partitions(sender, assigned, **kwargs):
        book.keep_partitions({tp.partition for tp in assigned if tp.topic == topics.health.get_topic_name()})
