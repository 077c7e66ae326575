"""The Kafka adapter: topics, the appender, readers, and the dead-letter path.

Every record is a pydantic envelope serialised as JSON. A record that does not validate goes
to `<prefix>deadletter` with the reason and the original bytes; the reader carries on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, overload

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from pydantic import BaseModel, ValidationError

from actors.base import made
from infra.auth.signing import Sender, Signer, Verifier
from infra.settings import Settings
from schemas.base import without_clear_secrets
from schemas.envelope import Envelope
from schemas.records import (  # type: ignore[attr-defined]
    TOPIC_RECORDS,
    CommandRecord,
    DeadLetter,
    DeadLetterRecord,
    HealthRecord,
    HeartbeatRecord,
    InstanceStatusRecord,
    LogBatchRecord,
    LogRecord,
    NotifierRecord,
    ReplyRecord,
    SnapshotRecord,
    TopologyRecord,
    UsageRecord,
)

log = logging.getLogger(__name__)
PLATFORM_SIGNER = object()
"""Appender's default signer: the platform secret's."""


class _Ids:
    """Unique record ids, cheaply: 64 random bits per process, then a counter.

    uuid4 per record cost a quarter of a busy node's time here (a getrandom call each); the
    random part is drawn again in a forked child so that parent and child never collide."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


new_id = _Ids()


def utcnow() -> datetime:
    return datetime.now(UTC)


class KafkaSecurityError(ValueError):
    """The Kafka security settings cannot work (the message names the setting)."""


def kafka_client_options(settings: Settings, flavour: Literal["kafka-python", "aiokafka"] = "kafka-python") -> dict:
    """The bootstrap servers and the security options of a Kafka client of the platform: the one
    place they are built from `STRATOS_KAFKA_*` (every kafka-python and aiokafka client takes
    them; faust gets them as credentials, `infra.health.app`). With SASL_SSL the client
    authenticates as STRATOS_KAFKA_USERNAME over TLS, trusting STRATOS_KAFKA_CA (else the
    certificate `stratos broker --secure` made in the state dir, else the system's CAs)."""
    options: dict = {"bootstrap_servers": settings.kafka_bootstrap}
    if flavour == "kafka-python":
        options["bootstrap_timeout_ms"] = int(settings.kafka_connect_timeout_seconds * 1000)
    if settings.kafka_security_protocol == "PLAINTEXT":
        return options
    if not settings.kafka_username or settings.kafka_password is None:
        raise KafkaSecurityError(
            f"STRATOS_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "STRATOS_KAFKA_USERNAME and STRATOS_KAFKA_PASSWORD (the principal's SCRAM credentials)"
        )
    from infra.auth.tls import kafka_ca

    ca = kafka_ca(settings)
    options |= {
        "security_protocol": settings.kafka_security_protocol,
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_username,
        "sasl_plain_password": settings.kafka_password.get_secret_value(),
    }
    if flavour == "aiokafka":
        import ssl

        options["ssl_context"] = ssl.create_default_context(cafile=str(ca) if ca else None)
    else:
        options |= {"ssl_cafile": str(ca) if ca else None, "ssl_check_hostname": True}
    return options


HISTORY_TOPICS = ("events",)
"""Topics whose every record is history: kept forever unless the operator says otherwise."""
COMPACTED_TOPICS = ("snapshots", "topology", "usage", "heartbeats", "projections")
"""Topics read as the latest record per key."""
ALIGNED_TOPICS = ("commands", "events", "snapshots")
"""Topics whose partition p belongs to one node: their partition counts must agree."""


def ensure_topics(settings: Settings, names: Iterable[str] = TOPIC_RECORDS) -> list[str]:
    """Create the topics that are missing, each with its configs set on purpose (`topic_config`);
    safe to call again (idempotent). Existing topics are left as they are: `check_topics` says
    what is wrong with them."""
    admin = KafkaAdminClient(**kafka_client_options(settings), client_id="stratos-admin")
    try:
        wanted = [settings.topic(n) for n in names]
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # TopicAlreadyExistsError: created by a concurrent caller, that is the state we want
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            t,
                            settings.partitions,
                            settings.replication_factor,
                            topic_configs=topic_config(topic_kind_of(settings, t), settings),
                        )
                        for t in missing
                    ]
                )
        _wait_for_metadata(settings, wanted)
        return missing
    finally:
        admin.close()


def topic_config(kind: str, settings: Settings) -> dict[str, str]:
    """The configs a topic of this kind is created with (docs/kafka.md says why)."""
    min_isr = settings.min_insync_replicas or min(settings.replication_factor, 2)
    config = {"min.insync.replicas": str(min(min_isr, settings.replication_factor))}
    transient = str(int(settings.transient_retention_hours * 3_600_000))
    if kind in HISTORY_TOPICS:
        return config | {
            "cleanup.policy": "delete",
            "retention.ms": str(settings.events_retention_ms),
            "retention.bytes": "-1",
        }
    if kind in COMPACTED_TOPICS:
        # segments roll hourly so that the cleaner can compact them (it never touches the active one)
        config |= {"cleanup.policy": "compact", "segment.ms": "3600000"}
        if kind == "snapshots" and settings.time_travel_hours:  # time travel's horizon (docs/replay.md)
            config["min.compaction.lag.ms"] = str(int(settings.time_travel_hours * 3_600_000))
        return config
    if kind == "logs":  # bounded: by age and by size per partition
        return config | {
            "cleanup.policy": "delete",
            "retention.ms": str(int(settings.logs_retention_hours * 3_600_000)),
            "retention.bytes": str(settings.logs_retention_bytes),
        }
    return config | {"cleanup.policy": "delete", "retention.ms": transient}


class TopicsError(RuntimeError):
    """The topics cannot carry the platform safely (a part refuses to start on them)."""


def check_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the platform's topics as the broker has them.

    Errors: partition counts of commands, events and snapshots that differ (a node would route
    an aggregate's commands and its commits to different owners); an events partition whose head
    was deleted (history is gone: no reader can rebuild it). Warnings: configs that will lose
    data later (retention on events, snapshots not compacted)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    errors: list[str] = []
    warnings: list[str] = []
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None, enable_auto_commit=False)
    admin = KafkaAdminClient(**kafka_client_options(settings), client_id="stratos-admin")
    try:
        counts = {kind: len(consumer.partitions_for_topic(settings.topic(kind)) or ()) for kind in ALIGNED_TOPICS}
        present = {kind: n for kind, n in counts.items() if n}
        if len(set(present.values())) > 1:
            errors.append(
                "partition counts differ: "
                + ", ".join(f"{settings.topic(k)} has {n}" for k, n in present.items())
                + " (they must be equal: partition p of each belongs to one node)"
            )
        if counts["events"]:
            events = settings.topic("events")
            starts = consumer.beginning_offsets([TopicPartition(events, p) for p in range(counts["events"])])
            for tp, start in sorted(starts.items(), key=lambda item: item[0].partition):
                if start > 0:
                    errors.append(
                        f"{events} partition {tp.partition} starts at offset {start}: its "
                        f"history before {start} was deleted (retention?) and cannot be rebuilt"
                    )
        kinds = [k for k in (*HISTORY_TOPICS, *COMPACTED_TOPICS) if consumer.partitions_for_topic(settings.topic(k))]
        if kinds:
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, settings.topic(k)) for k in kinds]
            )
            for kind, config in zip(kinds, _topic_configs(described, [settings.topic(k) for k in kinds]), strict=True):
                name = settings.topic(kind)
                if kind in HISTORY_TOPICS:
                    if "delete" in config.get("cleanup.policy", "") and config.get("retention.ms") not in ("-1", None):
                        warnings.append(
                            f"{name}: retention.ms={config['retention.ms']} deletes history "
                            "(set -1: kafka-configs --alter --add-config retention.ms=-1)"
                        )
                    if "compact" in config.get("cleanup.policy", ""):
                        warnings.append(f"{name}: cleanup.policy={config['cleanup.policy']} removes commits")
                elif "compact" not in config.get("cleanup.policy", ""):
                    warnings.append(f"{name}: cleanup.policy={config.get('cleanup.policy')} (compact expected)")
    finally:
        consumer.close()
        admin.close()
    return errors, warnings


def _topic_configs(described: dict, names: list[str]) -> list[dict[str, str]]:
    """Each described topic's configs as name -> value, in the order of `names` (kafka-python 3
    answers {"topic": {name: {config: {"value": ...}}}})."""
    topics = described.get("topic", {})
    return [{key: entry.get("value") for key, entry in topics.get(name, {}).items()} for name in names]


def require_sound_topics(settings: Settings) -> None:
    """Raise TopicsError naming every problem `check_topics` finds an error; log its warnings."""
    errors, warnings = check_topics(settings)
    for warning in warnings:
        log.warning("topic config: %s", warning)
    if errors:
        raise TopicsError("; ".join(errors))


def _wait_for_metadata(settings: Settings, topics: list[str], timeout: float = 15.0) -> None:
    consumer = KafkaConsumer(**kafka_client_options(settings), enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        while any(not consumer.partitions_for_topic(t) for t in topics):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not visible after {timeout}s: {topics}")
            time.sleep(0.05)
    finally:
        consumer.close()


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()


# each topic kind decodes to its record type (TOPIC_RECORDS)
@overload
def decode(topic_kind: Literal["commands"], raw: bytes | None, headers=None) -> CommandRecord: ...
@overload
def decode(topic_kind: Literal["events"], raw: bytes | None, headers=None) -> LogRecord: ...
@overload
def decode(topic_kind: Literal["replies"], raw: bytes | None, headers=None) -> ReplyRecord: ...
@overload
def decode(topic_kind: Literal["snapshots"], raw: bytes | None, headers=None) -> SnapshotRecord: ...
@overload
def decode(topic_kind: Literal["topology"], raw: bytes | None, headers=None) -> TopologyRecord: ...
@overload
def decode(topic_kind: Literal["health"], raw: bytes | None, headers=None) -> HealthRecord: ...
@overload
def decode(topic_kind: Literal["instance-status"], raw: bytes | None, headers=None) -> InstanceStatusRecord: ...
@overload
def decode(topic_kind: Literal["instance-notifier"], raw: bytes | None, headers=None) -> NotifierRecord: ...
@overload
def decode(topic_kind: Literal["deadletter"], raw: bytes | None, headers=None) -> DeadLetterRecord: ...
@overload
def decode(topic_kind: Literal["logs"], raw: bytes | None, headers=None) -> LogBatchRecord: ...
@overload
def decode(topic_kind: Literal["usage"], raw: bytes | None, headers=None) -> UsageRecord: ...
@overload
def decode(topic_kind: Literal["heartbeats"], raw: bytes | None, headers=None) -> HeartbeatRecord: ...
@overload
def decode(topic_kind: str, raw: bytes | None, headers=None) -> Envelope: ...
def decode(topic_kind: str, raw: bytes | None, headers=None) -> Envelope:
    """Validate raw bytes as the record type of a topic; raises ValidationError or ValueError.

    A record that is not a whole envelope but carries CloudEvents binary-mode headers (`ce_id`,
    `ce_subject`, `ce_time`...) is completed from them (`from_cloudevent`): only then are the
    headers looked at, so the usual path costs nothing more."""
    if raw is None:
        raise ValueError("record: null value (tombstones carry no record here)")
    try:
        return _VALIDATE_JSON[topic_kind](raw)
    except ValidationError:
        attributes = ce_attributes(headers) if headers else None
        if not attributes or "id" not in attributes:
            raise
    return TOPIC_RECORDS[topic_kind].model_validate(from_cloudevent(raw, attributes))


_VALIDATE_JSON = {kind: record.__pydantic_validator__.validate_json for kind, record in TOPIC_RECORDS.items()}
"""Each topic's `model_validate_json` without its Python wrapper, as `decode_log` does: 6-16 % of
a health record's decode."""


# --- CloudEvents binary mode (Kafka protocol binding 1.0) --------------------------------------
CE_PREFIX = "ce_"
CE_TYPE_PREFIX = "stratos."
_CE_FIELDS = {
    "id": "id",
    "subject": "aggregate_id",
    "time": "occurred_at",
    "tenant": "tenant",
    "correlationid": "correlation_id",
    "causationid": "causation_id",
}
"""CloudEvents attribute -> envelope field, for records that clients complete with headers."""


def ce_headers(record: Envelope, source: bytes) -> list[tuple[str, bytes]]:
    """The CloudEvents binary-mode headers of one record: built in one place for every record
    the platform writes (a few microseconds: plain encodes, no JSON)."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", record.id.encode()),
        ("ce_source", source),
        ("ce_type", (CE_TYPE_PREFIX + record.type).encode()),
        ("ce_time", record.occurred_at.isoformat().encode()),
        ("ce_subject", record.aggregate_id.encode()),
        ("ce_tenant", record.tenant.encode()),
        ("content-type", b"application/json"),
    ]
    if record.correlation_id:
        headers.append(("ce_correlationid", record.correlation_id.encode()))
    if record.causation_id:
        headers.append(("ce_causationid", record.causation_id.encode()))
    return headers


def ce_attributes(headers) -> dict[str, str]:
    """The `ce_*` headers of a record (a list of (name, bytes) pairs or a mapping) as text."""
    items = headers.items() if hasattr(headers, "items") else headers
    found = {}
    for name, value in items:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name.startswith(CE_PREFIX) and value is not None:
            found[name[len(CE_PREFIX) :]] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return found


def from_cloudevent(raw: bytes, attributes: dict[str, str]) -> dict:
    """An envelope from a client's record in CloudEvents binary mode: the value is the payload
    (or an envelope missing some fields), the attributes fill in what is missing."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("record: a JSON object is expected")
    if "payload" not in data:
        data = {"payload": data}
    for attribute, name in _CE_FIELDS.items():
        if attribute in attributes:
            data.setdefault(name, attributes[attribute])
    if isinstance(data["payload"], dict) and "type" in data["payload"]:
        data.setdefault("type", data["payload"]["type"])
    elif "type" in attributes:
        data.setdefault("type", attributes["type"].removeprefix(CE_TYPE_PREFIX))
    return data


def envelope(
    record_type: type[Envelope],
    payload: BaseModel,
    aggregate_id: str,
    *,
    aggregate_seq: int = 0,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    tenant: str | None = None,
    record_id: str | None = None,
    occurred_at: datetime | None = None,
    trusted: bool = False,
) -> Envelope:
    """Wrap a payload. `trusted`: every part is already validated (the node's own replies), so
    the envelope is made without validating it again (a hot path: pydantic's `model_construct`
    took 34 µs a reply, `made` 16)."""
    fields = dict(
        id=record_id or new_id(),
        type=payload.type,  # type: ignore[attr-defined]
        aggregate_id=aggregate_id,
        aggregate_seq=aggregate_seq,
        occurred_at=occurred_at or utcnow(),
        correlation_id=correlation_id,
        causation_id=causation_id,
        payload=payload,
    )
    if tenant:
        fields["tenant"] = tenant
    if trusted:
        return made(record_type, **fields)
    return record_type(**fields)


def rejection_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False)[:5]:
            where = ".".join(str(p) for p in err["loc"]) or "record"
            parts.append(f"{where}: {err['msg']}")
        return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"


class Appender:
    """Appends envelopes keyed by aggregate (idempotent producer, acks=all), each with its
    CloudEvents headers; `source` names the writing part (`ce_source`: /stratos-es/<source>).

    A send outlives a broker's loss. Until a dead leader's partitions have moved (its broker is
    fenced after 4 s; losing the active controller adds an election) every attempt fails with a
    connection error or NotLeaderForPartition, 100 ms apart: a retry count could be spent within
    seconds, so retries are unlimited and bounded in time instead. The delivery timeout stays
    below the 30 s callers wait, so that a send they give up on has failed in the producer too
    rather than landing later; the request timeout bounds one attempt held by a leader waiting
    for a dead follower. Idempotence writes each retried record once, in order."""

    DELIVERY_TIMEOUT_MS = 25_000
    REQUEST_TIMEOUT_MS = 10_000

    def __init__(self, settings: Settings, source: str = "platform", signer=PLATFORM_SIGNER, **overrides) -> None:
        self.settings = settings
        self.source = f"/stratos-es/{source}".encode()
        self.signer: Signer | None = Signer.platform(settings) if signer is PLATFORM_SIGNER else signer
        """Who signs what this appender sends (`infra.auth.signing`): the platform's parts by default;
        an instance passes its member signer; None sends unsigned (refused where it matters)."""
        options = dict(
            **kafka_client_options(settings),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_in_flight_requests_per_connection=5,
            retries=float("inf"),
            delivery_timeout_ms=self.DELIVERY_TIMEOUT_MS,
            request_timeout_ms=self.REQUEST_TIMEOUT_MS,
        )
        options.update(overrides)
        self.producer = KafkaProducer(**options)

    def send(
        self,
        topic_kind: str,
        key: str | None,
        record: BaseModel,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        signer: Signer | None = None,
        timestamp_ms: int | None = None,
    ):
        """Send without waiting; returns kafka-python's future of RecordMetadata.

        `partition` pins the record next to the command it answers (co-location does not then
        depend on every client hashing keys alike); `headers` come after the CloudEvents ones;
        `signer` signs this record instead of the appender's own (a simulated instance's);
        `timestamp_ms` is the record's Kafka time (a generated history's; the producer's now
        by default)."""
        all_headers = ce_headers(record, self.source) if isinstance(record, Envelope) else []
        if headers:
            all_headers += headers
        key_bytes, value = key.encode() if key else None, encode(record)
        if (signer := signer or self.signer) is not None:
            all_headers += signer.headers(topic_kind, key_bytes, value)
        return self.producer.send(
            self.settings.topic(topic_kind),
            key=key_bytes,
            value=value,
            partition=partition,
            headers=all_headers or None,
            timestamp_ms=timestamp_ms,
        )

    def append(
        self, topic_kind: str, key: str | None, record: BaseModel, timeout: float = 30.0, partition: int | None = None
    ):
        """Send and wait until the broker has it; returns (partition, offset)."""
        meta = self.send(topic_kind, key, record, partition).get(timeout=timeout)
        return meta.partition, meta.offset

    def append_many(
        self, topic_kind: str, items: Iterable[tuple[str | None, BaseModel]], timeout: float = 30.0
    ) -> list[tuple[int, int]]:
        futures = [self.send(topic_kind, key, record) for key, record in items]
        self.producer.flush(timeout)
        return [(m.partition, m.offset) for m in (f.get(timeout=timeout) for f in futures)]

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        record: Envelope | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ):
        """Send bytes already encoded; `record` (what they encode) gives the CloudEvents headers."""
        all_headers = (ce_headers(record, self.source) if record is not None else []) + (headers or [])
        if self.signer is not None:
            all_headers += self.signer.headers(topic_kind_of(self.settings, topic), key, value)
        return self.producer.send(
            topic, key=key, value=value, partition=partition, headers=all_headers or None, timestamp_ms=timestamp_ms
        )

    def flush(self, timeout: float = 30.0) -> None:
        self.producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Close the producer; `timeout`: how long records not yet acknowledged are waited for
        (None: until each is delivered or its delivery timeout passes)."""
        self.producer.close(timeout)


@dataclass(frozen=True)
class Delivered:
    """A record read and validated, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: str | None
    record: Envelope
    sender: Sender | None = None
    """Who signed it, when the reader verified (`validated(..., verifier=)`)."""


DEAD_LETTER_ORIGINAL_BYTES = 256_000
"""An oversized record's dead letter keeps its beginning: the letter itself must fit."""


CONNECT_ERRORS = "__connect.errors."
"""Kafka Connect's dead-letter header prefix: tools that read Connect's DLQs read ours."""
ORIGINAL_HEADERS = "stratos.original."
"""A dead letter keeps the refused record's own headers under this prefix (its sender's token or
signature): a replay re-sends them, so the record is checked as its sender's again."""
DEAD_LETTER_SEND_SECONDS = 30.0


def exception_class_name(exception: BaseException | str | None) -> str:
    if exception is None:
        return "stratos.InvalidRecord"
    if isinstance(exception, str):
        return exception
    kind = type(exception)
    return f"{kind.__module__}.{kind.__qualname__}"


def connect_error_headers(
    topic: str, partition: int, offset: int, reason: str, exception: BaseException | str | None
) -> list[tuple[str, bytes]]:
    return [
        (CONNECT_ERRORS + "topic", topic.encode()),
        (CONNECT_ERRORS + "partition", str(partition).encode()),
        (CONNECT_ERRORS + "offset", str(offset).encode()),
        (CONNECT_ERRORS + "exception.class.name", exception_class_name(exception).encode()),
        (CONNECT_ERRORS + "exception.message", reason.encode()),
    ]


class DeadLetters:
    """Routes records that do not validate to the dead-letter topic, with the reason, and with
    Kafka Connect's error headers (`__connect.errors.topic`, `.partition`, `.offset`,
    `.exception.class.name`, `.exception.message`)."""

    def __init__(self, appender: Appender) -> None:
        self.appender = appender

    def send(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        raw: bytes | None,
        reason: str,
        exception: BaseException | str | None = None,
        original_headers=None,
    ) -> bool:
        """Write the dead letter and wait for the broker's ack; a failure is logged as an error
        naming the record (it is lost to the dead letters) and answered False, never raised:
        the reader goes on. `original_headers` (the record's own) are kept, prefixed."""
        log.warning("dead-letter %s[%d]@%d: %s", topic, partition, offset, reason)
        original = raw or b""
        if len(original) > DEAD_LETTER_ORIGINAL_BYTES:
            reason += f" (original of {len(original)} bytes, first {DEAD_LETTER_ORIGINAL_BYTES} kept)"
            original = original[:DEAD_LETTER_ORIGINAL_BYTES]
        letter = DeadLetter(
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            reason=reason,
            original=without_clear_secrets(original.decode("utf-8", "replace")),
            original_key=key[:1000].decode("utf-8", "replace") if key else None,
        )
        record = envelope(DeadLetterRecord, letter, aggregate_id=f"{topic}:{partition}:{offset}")
        future = self.appender.send(
            "deadletter",
            record.aggregate_id,
            record,
            headers=connect_error_headers(topic, partition, offset, reason, exception)
            + [(ORIGINAL_HEADERS + name, value) for name, value in original_headers or () if value is not None],
        )
        try:
            future.get(timeout=DEAD_LETTER_SEND_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any failed send is reported the same way
            log.error(
                "dead letter for %s[%d]@%d NOT written (%s); reason was: %s", topic, partition, offset, exc, reason
            )
            return False
        return True

    def handling_failed(self, source, record: BaseModel, exc: Exception) -> None:
        """A record whose handling raised: logged and dead-lettered with why, so the reader goes
        on. `source` is where it came from (a raw ConsumerRecord or a Delivered)."""
        log.error("handling %s@%d failed", source.topic, source.offset, exc_info=exc)
        key = source.key.encode() if isinstance(source.key, str) else source.key
        original_headers = getattr(source, "headers", None)  # a raw record's own
        if original_headers is None and getattr(source, "sender", None) is not None:
            original_headers = source.sender.headers()  # a Delivered's: what its sender proved
        self.send(
            source.topic,
            source.partition,
            source.offset,
            key,
            encode(record),
            f"handling failed: {rejection_reason(exc)}",
            exc,
            original_headers,
        )


def validated(
    settings: Settings,
    topic_kind: str,
    raw_records,
    dead_letters: DeadLetters,
    verifier: Verifier | None = None,
    signed_only: bool = False,
) -> Iterator[Delivered]:
    """Decode kafka-python ConsumerRecords (key, value and all); a record that does not decode
    goes to the dead-letter topic with the reason, and the reader carries on.

    With a `verifier`, the signature is checked on the raw bytes first (a bad one is dead-
    lettered) and each Delivered says who sent it; `signed_only` (the instance topics) also
    dead-letters what is neither the platform's nor its own member's (`Verifier.require_signed`)."""
    for raw in raw_records:
        sender = None
        try:
            if verifier is not None:
                sender = verifier.sender(topic_kind, raw.key, raw.value, raw.headers)
            key, record = decode_key(raw.key), decode(topic_kind, raw.value, raw.headers)
            if signed_only:
                Verifier.require_signed(topic_kind, sender, record)  # type: ignore[arg-type]
        except ValueError as exc:  # pydantic's ValidationError and UnicodeDecodeError are ValueErrors
            dead_letters.send(
                raw.topic, raw.partition, raw.offset, raw.key, raw.value, rejection_reason(exc), exc, raw.headers
            )
            continue
        yield Delivered(raw.topic, raw.partition, raw.offset, key, record, sender)


def decode_key(key: bytes | None) -> str | None:
    """A record key as text; raises ValueError naming the problem when it is not UTF-8."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(f"key: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def topic_kind_of(settings: Settings, topic: str) -> str:
    return topic.removeprefix(settings.topic_prefix)


GROUP_TIMINGS = dict(session_timeout_ms=6_000, heartbeat_interval_ms=2_000, max_poll_interval_ms=45_000)
"""Every group member of the platform (kafka-python, aiokafka, faust). A member that dies without
leaving is noticed after 6 s; a heartbeat every 2 s is a third of the session, as Kafka advises
(at 1 s an idle member cost twice the CPU). The poll interval is also the rebalance timeout
(how long a join waits for a member that stopped polling): a loop's batch is bounded
(`max_poll_records`) and a node's takeover rebuilds run beside its loop, but a batch's appends may
wait out a broker's loss (the Appender's 25 s delivery timeout): 45 s covers that, where 10 s
dropped a node from its group when the active controller of three brokers was killed."""
IDLE_POLL_MS = 2000
"""How long a follower's loop blocks in `poll` when nothing arrives. Records are returned the
moment they are fetched, so this bounds only how soon a loop sees its stop flag; each wake-up of
an idle kafka-python consumer costs CPU (~1 % of a core at 100 ms, ~0.1 % at 1 s)."""


def group_consumer(settings: Settings, group_id: str, topic_kinds: list[str], **overrides) -> KafkaConsumer:
    """A consumer in a group, with the platform's group timings (`GROUP_TIMINGS`).

    The group id carries the topic prefix (`stratos.nodes`): platforms that share a Kafka
    cluster under different prefixes never share, or wait on, each other's groups."""
    options = dict(
        **kafka_client_options(settings),
        group_id=settings.topic(group_id),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **GROUP_TIMINGS,
        max_poll_records=500,
        fetch_max_wait_ms=settings.fetch_wait_ms,
    )
    options.update(overrides)
    consumer = KafkaConsumer(**options)
    topics = [settings.topic(k) for k in topic_kinds]
    # the topics' metadata first: a group leader that assigns before it knows a topic's
    # partitions gives nobody any of them ("No partition metadata for topic"), and kafka-python
    # 3.0.12 was seen to leave such a group settled for a minute with nothing assigned
    for topic in topics:
        consumer.partitions_for_topic(topic)
    consumer.subscribe(topics)
    return consumer


def assigned_consumer(
    settings: Settings,
    topic_kind: str,
    from_beginning: bool = True,
    partitions: Iterable[int] | None = None,
    **overrides,
) -> KafkaConsumer:
    """A group-less reader of every (or the given) partition: no rebalance pauses."""
    consumer = _reader(settings, overrides)
    topic = settings.topic(topic_kind)
    if partitions is None:
        partitions = topic_partitions(consumer, topic)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    else:
        consumer.seek_to_end(*tps)
    return consumer


def topics_consumer(settings: Settings, from_beginning: dict[str, bool], **overrides) -> KafkaConsumer:
    """One group-less reader of every partition of several topics (topic kind -> from its
    beginning, or from its end as it is now): one fetch and one idle wait for all of them."""
    consumer = _reader(settings, overrides)
    starts = {
        TopicPartition(settings.topic(kind), p): beginning
        for kind, beginning in from_beginning.items()
        for p in topic_partitions(consumer, settings.topic(kind))
    }
    consumer.assign(list(starts))
    consumer.seek_to_beginning(*[tp for tp, beginning in starts.items() if beginning])
    if ends := [tp for tp, beginning in starts.items() if not beginning]:
        consumer.seek_to_end(*ends)
    for tp in starts:
        consumer.position(tp)  # fix each start now: nothing written later is missed
    return consumer


def _reader(settings: Settings, overrides: dict) -> KafkaConsumer:
    options = dict(
        **kafka_client_options(settings),
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=2000,
        fetch_max_wait_ms=settings.fetch_wait_ms,
    )
    options.update(overrides)
    return KafkaConsumer(**options)


POLL_RETRY_PAUSE_SECONDS = 0.5


def poll_through_broker_loss(consumer: KafkaConsumer, timeout_ms: int, **options) -> dict:
    """`consumer.poll`, with a retriable Kafka error answered as an empty batch after a short
    pause: kafka-python 3 raises out of `poll` what it used to retry inside, such as the
    connection reset of a coordinator lookup when a broker dies, and a reader loop must outlive
    a broker (the next poll looks for the coordinator again). Other errors are raised."""
    try:
        return consumer.poll(timeout_ms=timeout_ms, **options)
    except KafkaError as exc:
        if not exc.retriable:
            raise
        log.warning("a Kafka poll failed, polling again: %s", exc)
        time.sleep(POLL_RETRY_PAUSE_SECONDS)
        return {}


def topic_partitions(consumer: KafkaConsumer, topic: str, timeout: float = 10.0) -> list[int]:
    """The topic's partitions, once the consumer's metadata knows the topic."""
    deadline = time.monotonic() + timeout
    while not (found := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} not found")
        time.sleep(0.05)
    return sorted(found)


def partitions_of(settings: Settings, topic_kind: str) -> int:
    """How many partitions the topic has on the broker (it may predate STRATOS_PARTITIONS)."""
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None)
    try:
        return len(topic_partitions(consumer, settings.topic(topic_kind)))
    finally:
        consumer.close()


def read_to_end(
    settings: Settings,
    topic_kind: str,
    dead_letters: DeadLetters | None = None,
    partitions: Iterable[int] | None = None,
    decode_records: bool = True,
    wait_for_broker: bool = False,
):
    """Read a topic from its beginning to its current end (for replay and tools).

    A partition is read once the reader's position reaches its end offset: the position, not
    the last record's offset + 1, because it also passes what end offsets count and no record
    shows (transaction markers, records compacted away).

    A read that makes no progress for `STRATOS_KAFKA_CONNECT_TIMEOUT_SECONDS` (the broker gone
    mid-read) raises KafkaTimeoutError naming the topic: a tool or a request ends with an error
    instead of hanging. `wait_for_broker`: a service's reader waits for the broker to come back.

    Yields Delivered records (or raw ConsumerRecords with decode_records=False).
    """
    consumer = assigned_consumer(settings, topic_kind, partitions=partitions)
    try:
        ends = consumer.end_offsets(list(consumer.assignment()))
        remaining = {tp for tp, end in ends.items() if end > consumer.position(tp)}
        patience = settings.kafka_connect_timeout_seconds
        progress, progressed_at = sum(consumer.position(tp) for tp in ends), time.monotonic()
        while remaining:
            batch = poll_through_broker_loss(consumer, 500)
            for tp, raws in batch.items():
                if decode_records:
                    if dead_letters is None:
                        for raw in raws:
                            try:
                                yield Delivered(
                                    raw.topic,
                                    raw.partition,
                                    raw.offset,
                                    decode_key(raw.key),
                                    decode(topic_kind, raw.value),
                                )
                            except ValueError as exc:
                                log.warning("skipping invalid record %s@%d: %s", tp, raw.offset, rejection_reason(exc))
                    else:
                        yield from validated(settings, topic_kind, raws, dead_letters)
                else:
                    yield from raws
            # every partition: a fetch that passed only markers returns no record of it
            remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
            now, positions = time.monotonic(), sum(consumer.position(tp) for tp in ends)
            if positions != progress:
                progress, progressed_at = positions, now
            elif remaining and not wait_for_broker and now - progressed_at > patience:
                raise KafkaTimeoutError(
                    f"reading {settings.topic(topic_kind)}: nothing more came for {patience:.0f} s "
                    f"with {sum(ends[tp] - consumer.position(tp) for tp in remaining):,} records left "
                    "(is the broker up?)"
                )
    finally:
        consumer.close()
