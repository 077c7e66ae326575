"""The reactor: runs the process manager (`actors.reactions`) over the log.

It reads events, replies, instance status and health faults in its own consumer group and
sends the follow-up commands. Command ids derive from the record that caused them, so a
reaction sent twice after a crash is a duplicate the target aggregate ignores. Events are read
as history (`infra.log.eventlog.History`): a fenced writer's commits cause nothing. It is a
supervised part of its own (`stratos reactor`); no record can stop it: one that does not
decode, or whose reaction fails, goes to the dead-letter topic with the reason.
"""

from __future__ import annotations

import logging
import threading
import typing

from kafka import OffsetAndMetadata
from kafka.errors import CommitFailedError

from actors.reactions import react
from infra.auth.secrets import notice_for_instances, secret_box
from infra.auth.signing import Verifier
from infra.log.eventlog import ForgetFences, History, history_events
from infra.log.kafka import (
    IDLE_POLL_MS,
    Appender,
    DeadLetters,
    envelope,
    group_consumer,
    poll_through_broker_loss,
    topic_kind_of,
    validated,
)
from infra.log.recovery import fence_before
from infra.settings import Settings
from schemas.records import CommandRecord, NotifierRecord
from schemas.status import Notification

log = logging.getLogger(__name__)
REACTOR_GROUP = "reactor"
SOURCES = ["events", "replies", "instance-status", "health"]
NOTIFICATIONS = typing.get_args(typing.get_args(Notification)[0])
"""Reactions of these types go to the instances, on the instance notifier; the rest are commands."""
NOTIFIER = ("instance-notifier", NotifierRecord)


class Reactor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.appender = Appender(settings, source="reactor")
        self.dead_letters = DeadLetters(self.appender)
        self.box = secret_box(settings)
        self.verifier = Verifier.of(settings)
        self.history = History.of(settings, lambda partition, offset: fence_before(settings, partition, offset))
        self.stopping = threading.Event()

    def run(self) -> None:
        consumer = group_consumer(self.settings, REACTOR_GROUP, SOURCES)
        consumer.unsubscribe()
        consumer.subscribe(
            [self.settings.topic(k) for k in SOURCES],
            listener=ForgetFences(self.history, self.settings.topic("events")),
        )
        try:
            while not self.stopping.is_set():
                batch = poll_through_broker_loss(consumer, IDLE_POLL_MS)
                if not batch:
                    continue
                sent = {tp: self.react_to(topic_kind_of(self.settings, tp.topic), raws) for tp, raws in batch.items()}
                self.appender.flush()
                offsets = {}
                for tp, futures in sent.items():
                    if all(f.succeeded() for f in futures):
                        offsets[tp] = OffsetAndMetadata(batch[tp][-1].offset + 1, "", -1)
                    else:  # a reaction that was not sent is not done: read these records again
                        log.warning("reactions to %s[%d] not sent; reading them again", tp.topic, tp.partition)
                        self.history.forget([tp.partition] if tp.topic == self.settings.topic("events") else [])
                        consumer.seek(tp, batch[tp][0].offset)
                try:
                    consumer.commit(offsets)
                except CommitFailedError as exc:  # a rebalance: the records come again, as duplicates
                    log.warning("offset commit failed, records will be read again: %s", exc)
        finally:
            consumer.close(autocommit=False)
            self.appender.close()

    def react_to(self, kind: str, raws) -> list:
        """Send the reactions to these records; returns the sends' futures."""
        futures: list = []
        if kind == "events":
            records = history_events(self.history, raws, self.dead_letters)
        else:
            if kind == "health":  # only faults matter here; the health worker owns the
                # statistics (and dead-letters the bad ones): skip them unparsed
                raws = [raw for raw in raws if raw.value and b"MemberFault" in raw.value]
            # instance status and health: the member's own or the platform's; replies: the platform's
            records = (
                (d.record, d)  # type: ignore[misc]
                for d in validated(self.settings, kind, raws, self.dead_letters, self.verifier, signed_only=True)
            )
        for record, source in records:
            try:
                futures += self.send_reactions(record)
            except Exception as exc:  # noqa: BLE001 - a record no reaction can follow is poison
                self.dead_letters.handling_failed(source, record, exc)
        return futures

    def send_reactions(self, record) -> list:
        futures = []
        for n, (target, message) in enumerate(react(record)):
            kind, record_type = NOTIFIER if isinstance(message, NOTIFICATIONS) else ("commands", CommandRecord)
            if kind == "instance-notifier":
                message = notice_for_instances(self.box, message, target)
            futures.append(
                self.appender.send(
                    kind,
                    target,
                    envelope(
                        record_type,
                        message,
                        target,
                        tenant=record.tenant,
                        record_id=f"{record.id}.{n}",
                        correlation_id=record.correlation_id or record.id,
                        causation_id=record.id,
                    ),
                )
            )
        return futures

    def stop(self) -> None:
        self.stopping.set()
