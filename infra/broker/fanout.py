"""Each tenant's replies on a topic of its own (`stratos tenant-replies`, a part of `stratos up
--secure`), so that the broker's ACLs let a tenant's Kafka clients read their replies and no one
else's (`infra.broker.acls`).

The node answers every command on `<prefix>replies` (the platform's parts read it); this part
copies each reply the platform signed to `<prefix>replies.<tenant>` of the reply's tenant, signed
again for that topic, when that topic exists: `stratos kafka-acls --apply` creates it with the
tenant's client principal. A reply carries the command's id, type and outcome, never its body.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaAdminClient

from infra.auth.signing import SIGNATURE, SIGNER, Unauthenticated, Verifier
from infra.broker.acls import tenant_replies
from infra.log.kafka import IDLE_POLL_MS, Appender, decode, group_consumer, kafka_client_options
from infra.settings import Settings

log = logging.getLogger(__name__)
GROUP = "tenant-replies"
TOPICS_REFRESH_SECONDS = 5.0
"""How often the topics are listed again when a reply's tenant has none (yet)."""


class TenantReplies:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.appender = Appender(settings, source="tenant-replies")
        self.verifier = Verifier.of(settings)
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

    def run(self) -> None:
        consumer = group_consumer(self.settings, GROUP, ["replies"], fetch_max_wait_ms=IDLE_POLL_MS)
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=IDLE_POLL_MS)
                self.ready.set()
                if not batch:
                    continue
                for records in batch.values():
                    for raw in records:
                        self.copy(raw)
                self.appender.flush()
                consumer.commit()
        finally:
            consumer.close()
            self.appender.close()

    def stop(self) -> None:
        self.stopping.set()
