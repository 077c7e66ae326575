"""The reactor: runs the process manager (`actors.reactions`) over the log.

It reads events, replies, instance status and health faults in its own consumer group and
sends the follow-up commands. Command ids derive from the record that caused them, so a
reaction sent twice after a crash is a duplicate the target aggregate ignores.
"""
from __future__ import annotations

import logging
import threading
import typing

from kafka import OffsetAndMetadata

from actors.reactions import react
from infra.kafka import Appender, DeadLetters, envelope, group_consumer, topic_kind_of, validated
from infra.settings import Settings
from schemas.records import CommandRecord, NotifierRecord
from schemas.status import Notification

log = logging.getLogger(__name__)
REACTOR_GROUP = "stratos-reactor"
SOURCES = ["events", "replies", "instance-status", "health"]
NOTIFICATIONS = typing.get_args(typing.get_args(Notification)[0])
"""Reactions of these types go to the instances, on the instance notifier; the rest are commands."""
NOTIFIER = ("instance-notifier", NotifierRecord)


class Reactor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.appender = Appender(settings)
        self.dead_letters = DeadLetters(self.appender)
        self.stopping = threading.Event()

    def run(self) -> None:
        consumer = group_consumer(self.settings, REACTOR_GROUP, SOURCES)
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=100)
                if not batch:
                    continue
                offsets = {}
                for tp, raws in batch.items():
                    kind = topic_kind_of(self.settings, tp.topic)
                    wanted = raws
                    if kind == "health":  # only faults matter here; the health worker owns the
                        # statistics (and dead-letters the bad ones): skip them unparsed
                        wanted = [raw for raw in raws if b"MemberFault" in raw.value]
                    for delivered in validated(self.settings, kind, wanted, self.dead_letters):
                        self.send_reactions(delivered.record)
                    offsets[tp] = OffsetAndMetadata(raws[-1].offset + 1, "", -1)
                self.appender.flush()
                consumer.commit(offsets)
        finally:
            consumer.close(autocommit=False)
            self.appender.close()

    def send_reactions(self, record) -> None:
        for n, (target, message) in enumerate(react(record)):
            kind, record_type = NOTIFIER if isinstance(message, NOTIFICATIONS) else ("commands", CommandRecord)
            self.appender.send(kind, target, envelope(
                record_type, message, target, tenant=record.tenant, record_id=f"{record.id}.{n}",
                correlation_id=record.correlation_id or record.id, causation_id=record.id))

    def stop(self) -> None:
        self.stopping.set()
