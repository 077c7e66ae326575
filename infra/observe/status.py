"""Platform status (`GET /api/health`, `stratos status`): each part, whether it runs, its lag
on the topics it reads and its last error.

- Liveness and last error: the parts' heartbeats (infra/observe/heartbeat.py), read from the compacted
  `<prefix>heartbeats` topic (the last per key: the topic is compacted, and the cleaner may not have run yet).
  A part is `running` while a process of it beat within 3 intervals, `stopped` when its last
  process said it stopped or fell silent, `not seen` when none ever beat.
- Lag: the committed offsets of the part's consumer group (`<prefix>nodes`, `<prefix>cloud`,
  `<prefix>reactor`, `<prefix>health-windows`: group ids carry the topic prefix) against the end
  offsets of its topics. A stopped part's lag grows as records arrive for it.
- The broker: reachable or not, from a metadata request.
- Rejected records: records dead-lettered because their signature did not prove a sender allowed
  to write them (`infra.auth.signing.Unauthenticated`: unsigned, signed by a member where only
  the platform counts, altered), per source topic, each counted once however many readers met it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from infra.auth.signing import Unauthenticated
from infra.log.kafka import CONNECT_ERRORS, check_topics, exception_class_name, kafka_client_options, read_to_end
from infra.settings import Settings

PARTS = ("node", "reactor", "mock-iaas", "cloud", "health", "api", "topology", "lb", "usage-export")
"""The parts `stratos status` always lists (lb: the load balancer, `not seen` without HAProxy)."""
MISSED_BEATS = 3
STOPPED_SHOWN = 3
"""Stopped processes listed per part (the latest): a part restarted many times stays readable."""


def heartbeats(settings: Settings) -> dict[str, object]:
    """key -> the latest Heartbeat record per part process."""
    latest: dict[str, object] = {}
    for delivered in read_to_end(settings, "heartbeats"):
        latest[delivered.key or delivered.record.id] = delivered.record
    return latest


REJECTED = exception_class_name(Unauthenticated("")).encode()


def rejected_records(settings: Settings) -> dict[str, dict]:
    """topic kind -> {"records": how many distinct records were refused for their signature,
    "lastReason": the latest reason}, from the dead-letter topic."""
    seen: dict[str, dict[tuple[int, int], str]] = {}
    for raw in read_to_end(settings, "deadletter", decode_records=False):
        headers = dict(raw.headers or ())
        if headers.get(CONNECT_ERRORS + "exception.class.name") != REJECTED:
            continue
        topic = headers.get(CONNECT_ERRORS + "topic", b"").decode("utf-8", "replace")
        position = tuple(int(headers.get(CONNECT_ERRORS + n, b"-1") or -1) for n in ("partition", "offset"))
        reason = headers.get(CONNECT_ERRORS + "exception.message", b"").decode("utf-8", "replace")
        seen.setdefault(topic.removeprefix(settings.topic_prefix), {})[position] = reason  # type: ignore[index]
    return {
        kind: {"records": len(positions), "lastReason": list(positions.values())[-1]}
        for kind, positions in sorted(seen.items())
    }


def group_lag(settings: Settings, groups: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """group -> topic -> records the group has not committed yet, over every partition of the
    topics it reads (a partition it never committed counts from its beginning)."""
    if not groups:
        return {}
    admin = KafkaAdminClient(**kafka_client_options(settings), client_id="stratos-status", request_timeout_ms=10_000)
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None)
    try:
        out: dict[str, dict[str, int]] = {}
        for group, kinds in groups.items():
            committed = admin.list_group_offsets({group: None}).get(group, {})
            tps = {tp for tp in committed}
            for kind in kinds:
                topic = settings.topic(kind)
                tps |= {TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()}
            tps_list = sorted(tps)
            ends = consumer.end_offsets(tps_list) if tps_list else {}
            starts = consumer.beginning_offsets(tps_list) if tps_list else {}
            lag: dict[str, int] = {}
            for tp in tps_list:
                done = committed.get(tp)
                position = done.offset if done is not None and done.offset >= 0 else starts.get(tp, 0)
                kind = tp.topic.removeprefix(settings.topic_prefix)
                lag[kind] = lag.get(kind, 0) + max(0, ends.get(tp, 0) - position)
            out[group] = lag
        return out
    finally:
        consumer.close()
        admin.close()


def broker_status(settings: Settings) -> dict:
    started = time.monotonic()
    try:
        consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None, request_timeout_ms=5000)
        try:
            topics = [t for t in consumer.topics() if t.startswith(settings.topic_prefix)]
        finally:
            consumer.close()
    except Exception as exc:  # noqa: BLE001 - reported, not raised: that is the answer
        return {
            "part": "broker",
            "state": "unreachable",
            "address": settings.kafka_bootstrap,
            "lastError": f"{type(exc).__name__}: {exc}",
        }
    answered = round((time.monotonic() - started) * 1000, 1)
    report = {
        "part": "broker",
        "state": "running",
        "address": settings.kafka_bootstrap,
        "topics": len(topics),
        "answeredInMs": answered,
    }
    try:
        errors, warnings = check_topics(settings)
    except Exception as exc:  # noqa: BLE001 - a broker too old for DescribeConfigs: say so
        errors, warnings = [], [f"topic configs not checked: {type(exc).__name__}: {exc}"]
    if errors or warnings:
        report["topicProblems"] = errors + warnings  # type: ignore[assignment]
        report["lastError"] = "; ".join(errors + warnings)
    if errors:
        report["state"] = "unsafe"
    return report


def platform_status(settings: Settings, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    broker = broker_status(settings)
    if broker["state"] != "running":
        return {"healthy": False, "parts": [broker], "at": _iso(now)}
    beats = heartbeats(settings)
    by_part: dict[str, list] = {}
    for record in beats.values():
        by_part.setdefault(record.payload.part, []).append(record)  # type: ignore[attr-defined]
    groups: dict[str, list[str]] = {}
    for records in by_part.values():
        for r in records:
            for g in r.payload.groups:
                groups.setdefault(g, sorted(set(groups.get(g, [])) | set(r.payload.topics)))
    try:
        lags = group_lag(settings, groups)
    except Exception as exc:  # noqa: BLE001
        lags, lag_error = {}, f"{type(exc).__name__}: {exc}"
    else:
        lag_error = None  # type: ignore[assignment]
    parts = [broker]
    for name in [*PARTS, *sorted(set(by_part) - set(PARTS))]:
        parts.append(_part(name, by_part.get(name, []), lags, lag_error, now))
    healthy = all(p["state"] in ("running", "not seen") for p in parts) and any(
        p["part"] == "node" and p["state"] == "running" for p in parts
    )
    return {"healthy": healthy, "parts": parts, "rejected": rejected_records(settings), "at": _iso(now)}


def _part(name: str, records: list, lags: dict, lag_error: str | None, now: float) -> dict:
    if not records:
        return {"part": name, "state": "not seen", "processes": [], "lag": {}, "lastError": None}
    processes = []
    for record in sorted(records, key=lambda r: r.occurred_at):
        beat = record.payload
        age = now - record.occurred_at.timestamp()
        state = "stopped" if beat.stopping or age > MISSED_BEATS * beat.interval_seconds else "running"
        processes.append(
            {
                "process": beat.process,
                "state": state,
                "lastBeatSecondsAgo": round(age, 1),
                "startedAt": beat.started_at.isoformat(),
                "errors": beat.errors,
                "lastError": beat.last_error,
                "lastErrorAt": beat.last_error_at.isoformat() if beat.last_error_at else None,
            }
        )
    running_now = [p for p in processes if p["state"] == "running"]
    processes = running_now + [p for p in processes if p["state"] != "running"][-STOPPED_SHOWN:]
    latest = max(records, key=lambda r: r.occurred_at).payload
    lag: dict[str, int] = {}
    for group in latest.groups:
        for topic, count in lags.get(group, {}).items():
            lag[topic] = lag.get(topic, 0) + count
    errored = [p for p in processes if p["lastError"]]
    last = max(errored, key=lambda p: p["lastErrorAt"] or "") if errored else None
    return {
        "part": name,
        "state": "running" if running_now else "stopped",
        "running": len(running_now),
        "processes": processes,
        "groups": latest.groups,
        "lag": lag,
        "lagError": lag_error if latest.groups else None,
        "lastError": last["lastError"] if last else None,
        "lastErrorAt": last["lastErrorAt"] if last else None,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
