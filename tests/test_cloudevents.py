"""CloudEvents binary-mode headers on the platform's records, client records completed from them,
and the Kafka Connect headers of dead letters (pure: no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from infra.log.kafka import ce_headers, connect_error_headers, decode, envelope
from schemas.commands import ScaleCluster
from schemas.records import CommandRecord, HealthRecord
from schemas.status import HealthStat

KEY = "carbon.super/cluster/app1.php1.php.domain"
STAT = {
    "type": "HealthStat",
    "cluster_id": "app1.php1.php.domain",
    "network_partition_id": "np1",
    "member_id": "m1",
    "metric": "load_average",
    "value": 42.0,
    "timestamp": 1.9e9,
}


def headers(**extra) -> list[tuple[str, bytes]]:
    base = {
        "ce_specversion": "1.0",
        "ce_id": "client-1",
        "ce_source": "/my/app",
        "ce_type": "stratos.HealthStat",
        "ce_time": "2026-12-01T09:30:00Z",
        "ce_subject": KEY,
        **extra,
    }
    return [(name, value.encode()) for name, value in base.items()]


def test_every_envelope_field_is_in_the_headers():
    record = envelope(
        HealthRecord,
        HealthStat(**STAT),
        KEY,
        correlation_id="corr",
        causation_id="cause",
        tenant="t1",
        record_id="r1",
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    found = {name: value.decode() for name, value in ce_headers(record, b"/stratos-es/health")}
    assert found == {
        "ce_specversion": "1.0",
        "ce_id": "r1",
        "ce_source": "/stratos-es/health",
        "ce_type": "stratos.HealthStat",
        "ce_time": "2026-12-01T00:00:00+00:00",
        "ce_subject": KEY,
        "ce_tenant": "t1",
        "content-type": "application/json",
        "ce_correlationid": "corr",
        "ce_causationid": "cause",
    }


def test_a_payload_alone_with_cloudevents_headers_is_a_record():
    record = decode("health", json.dumps(STAT).encode(), headers(ce_tenant="t2", ce_causationid="c9"))
    assert (record.id, record.aggregate_id, record.type, record.tenant, record.causation_id) == (
        "client-1",
        KEY,
        "HealthStat",
        "t2",
        "c9",
    )
    assert record.occurred_at == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert record.payload.value == 42.0


def test_an_envelope_missing_its_id_takes_ce_id_and_its_own_fields_win():
    body = {
        "type": "ScaleCluster",
        "aggregate_id": KEY,
        "occurred_at": "2026-12-01T10:00:00Z",
        "payload": {"type": "ScaleCluster", "required": 3},
    }
    record = decode("commands", json.dumps(body).encode(), headers(ce_subject="carbon.super/cluster/other"))
    assert isinstance(record, CommandRecord) and record.id == "client-1" and record.aggregate_id == KEY
    assert isinstance(record.payload, ScaleCluster)


def test_without_an_id_anywhere_the_error_names_the_field():
    with pytest.raises(ValidationError, match="id"):
        decode("health", json.dumps(STAT).encode(), [("content-type", b"application/json")])
    with pytest.raises(ValidationError, match="value"):  # headers do not hide a bad payload
        decode("health", json.dumps({**STAT, "value": -1}).encode(), headers())


def test_dead_letter_headers_follow_kafka_connect():
    try:
        decode("health", b"{}")
    except ValidationError as exc:
        found = dict(connect_error_headers("stratos.health", 3, 17, "id: Field required", exc))
    assert found == {
        "__connect.errors.topic": b"stratos.health",
        "__connect.errors.partition": b"3",
        "__connect.errors.offset": b"17",
        "__connect.errors.exception.class.name": b"pydantic_core._pydantic_core.ValidationError",
        "__connect.errors.exception.message": b"id: Field required",
    }
