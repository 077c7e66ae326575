"""Each tenant's replies, and what its instances need, on topics of its own (`stratos
tenant-replies`, a part of `stratos up --secure`), so that the broker's ACLs let a tenant's Kafka
clients read their replies and its instances their notices, and no one else's (`infra.broker.acls`).

The node answers every command on `<prefix>replies` (the platform's parts read it); this part
copies each reply the platform signed to `<prefix>replies.<tenant>` of the reply's tenant, signed
again for that topic, when that topic exists: `stratos kafka-acls --apply` creates it with the
tenant's client principal. A reply carries the command's id, type and outcome, never its body.

Likewise each notifier notice, and each commit of the events topic that is history (fenced here,
as every reader of the log fences) and holds a `MemberInitialized` (the one event an agent waits
for), is copied to `<prefix>instances.<tenant>` of its aggregate's tenant (the
cluster's owner, whose instances they concern), with a `stratos-copied-from` header naming the
topic it came from: an agent on the secure broker reads only that topic (`infra.agent.agent`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from kafka import KafkaAdminClient

from actors.history import events_of
from infra.auth.signing import SIGNATURE, SIGNER, Unauthenticated, Verifier
from infra.broker.acls import COPIED_FROM, tenant_instances, tenant_replies
from infra.log.eventlog import ForgetFences, History
from infra.log.kafka import (
    IDLE_POLL_MS,
    Appender,
    decode,
    decode_key,
    group_consumer,
    kafka_client_options,
    poll_through_broker_loss,
    topic_kind_of,
)
from infra.log.recovery import fence_before
from infra.settings import Settings
from schemas import events as E
from schemas.ids import parse_aggregate_id

log = logging.getLogger(__name__)
GROUP = "tenant-replies"
TOPICS_REFRESH_SECONDS = 5.0
"""How often the topics are listed again when a reply's tenant has none (yet)."""
FOR_INSTANCES = ("instance-notifier", "events")
INITIALIZED = b"MemberInitialized"


class TenantReplies:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.appender = Appender(settings, source="tenant-replies")
        self.verifier = Verifier.of(settings)
        self.history = History.of(settings, functools.partial(fence_before, settings))
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.topics: set[str] = set()
        self.listed_at = 0.0
        self.copied = 0

    def _has_topic(self, topic: str) -> bool:
        if topic not in self.topics and time.monotonic() - self.listed_at > TOPICS_REFRESH_SECONDS:
            admin = KafkaAdminClient(**kafka_client_options(self.settings), client_id="stratos-tenant-replies")
            try:
                self.topics = set(admin.list_topics())
            finally:
                admin.close()
            self.listed_at = time.monotonic()
        return topic in self.topics

    def copy(self, raw) -> bool:
        """Copy one reply to its tenant's topic; False when it is not the platform's or its
        tenant has no topic (no client principal)."""
        try:
            if not self.verifier.sender("replies", raw.key, raw.value, raw.headers).trusted:
                return False
            tenant = decode("replies", raw.value).tenant
        except (Unauthenticated, ValueError) as exc:
            log.warning("reply %s[%d]@%d not copied: %s", raw.topic, raw.partition, raw.offset, exc)
            return False
        topic = self.settings.topic(tenant_replies(tenant))
        if not self._has_topic(topic):
            return False
        headers = [(name, value) for name, value in raw.headers or () if name not in (SIGNER, SIGNATURE)]
        self.appender.send_raw(topic, raw.key, raw.value, headers=headers)
        self.copied += 1
        return True

    def copy_for_instances(self, kind: str, raw) -> bool:
        """Copy one platform-signed notice, or events record with a member's initialisation, to
        the instance topic of its aggregate's tenant; False when it is not one or has no topic."""
        try:
            if kind == "events":
                head = self.history.head(raw)  # the platform's, and history (claims move the fence)
                if head is None or INITIALIZED not in (raw.value or b""):
                    return False  # most commits: their payload not even decoded
                if not any(isinstance(event.payload, E.MemberInitialized) for event in events_of(head.record())):
                    return False
            elif not self.verifier.sender(kind, raw.key, raw.value, raw.headers).trusted:
                return False
            tenant = parse_aggregate_id(decode_key(raw.key) or "").tenant
        except (Unauthenticated, ValueError) as exc:
            log.warning("%s[%d]@%d not copied: %s", raw.topic, raw.partition, raw.offset, exc)
            return False
        topic = self.settings.topic(tenant_instances(tenant))
        if not self._has_topic(topic):
            return False
        headers = [(name, value) for name, value in raw.headers or () if name not in (SIGNER, SIGNATURE, COPIED_FROM)]
        self.appender.send_raw(topic, raw.key, raw.value, headers=[*headers, (COPIED_FROM, kind.encode())])
        self.copied += 1
        return True

    def run(self) -> None:
        kinds = ["replies", *FOR_INSTANCES]
        consumer = group_consumer(self.settings, GROUP, kinds, fetch_max_wait_ms=IDLE_POLL_MS)
        consumer.unsubscribe()
        consumer.subscribe(
            [self.settings.topic(k) for k in kinds], listener=ForgetFences(self.history, self.settings.topic("events"))
        )
        try:
            while not self.stopping.is_set():
                batch = poll_through_broker_loss(consumer, IDLE_POLL_MS)
                self.ready.set()
                if not batch:
                    continue
                for partition, records in batch.items():
                    kind = topic_kind_of(self.settings, partition.topic)
                    for raw in records:
                        if kind == "replies":
                            self.copy(raw)
                        else:
                            self.copy_for_instances(kind, raw)
                self.appender.flush()
                consumer.commit()
        finally:
            consumer.close()
            self.appender.close()

    def stop(self) -> None:
        self.stopping.set()
