"""The web console: its static page, and one server-sent-events stream of what it shows.

The stream sends the caller's tenant as one JSON document (`event: state`) whenever it
changes: every application's runtime tree (the same beans as `/api/applications/{id}/runtime`,
built from the API's read model), a short history of member count and load per cluster, and
the latest events. Health figures come from `<prefix>health`, tailed without a consumer group
like the read model reads the events log.

The page's actions (definitions, deploy, limits, tenants and users, history and what-if) are
plain calls of the REST API with the caller's token: what a role may not do, the API refuses.
Its JSON editor (Monaco, served from `VENDOR`) validates and completes against the body schemas
of /api/openapi.json; without `make console-assets` a plain text area stands in.

The page logs in like any API client (POST /api/token) and reads the stream with `fetch`
so that the token travels in the Authorization header, never in a URL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterable
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from statistics import fmean

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from kafka import KafkaConsumer

from actors.timeline import figures, one_line
from infra.api.identity import Principal, current_principal
from infra.api.read_model import ReadModel
from infra.api.views import application_runtime
from infra.auth.signing import Verifier
from infra.log.eventlog import History
from infra.log.kafka import decode, poll_through_broker_loss, rejection_reason, topic_kind_of, topics_consumer
from infra.log.recovery import fence_before
from infra.settings import Settings
from schemas.domain import MemberStatus
from schemas.ids import parse_aggregate_id
from schemas.status import HealthStat, MemberHealth

log = logging.getLogger(__name__)

STATIC = files("infra.api.console")
STATIC_TYPES = {
    "console.js": "text/javascript",
    "operate.js": "text/javascript",
    "debugging.js": "text/javascript",
    "console.css": "text/css",
}
VENDOR = Path(str(STATIC.joinpath("vendor")))
"""Third-party front-end code (the Monaco editor, axe-core), copied from npm by `make console-assets`."""
SAMPLE_SECONDS = 1.0
"""One chart point per cluster this often."""
HISTORY_POINTS = 300
"""Chart points kept per cluster: five minutes at one a second."""
RECENT_EVENTS = 100
"""Events kept per tenant for the console's event list."""
TAIL_RECORDS = 500
"""Records per partition read back on start, so a fresh console shows recent history."""
FRESH_SECONDS = 30.0
"""A member's health sample older than this no longer counts toward its cluster's load."""
PUSH_SECONDS = 0.5
"""How often a stream looks for a change to send."""


class ConsoleFeed:
    """Health samples and recent events from the log, and chart points sampled from the read
    model; `view(tenant)` is the JSON document a console of that tenant shows."""

    def __init__(self, settings: Settings, read_model: ReadModel) -> None:
        self.settings = settings
        self.read_model = read_model
        self.lock = threading.Lock()
        self.events_history = History.of(settings, lambda partition, offset: fence_before(settings, partition, offset))
        self.health: dict[str, dict[str, dict[str, tuple[float, float]]]] = defaultdict(lambda: defaultdict(dict))
        """cluster aggregate id -> metric -> member id -> (timestamp, value)"""
        self.history: dict[str, deque] = {}
        self.recent: dict[str, deque[dict]] = defaultdict(lambda: deque(maxlen=RECENT_EVENTS))
        self.samples = 0
        self.views: dict[str, tuple[tuple[int, int], str]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console-feed", daemon=True)

    def start(self) -> ConsoleFeed:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def _tail(self) -> KafkaConsumer:
        """One reader of the health and events topics, from the last TAIL_RECORDS of each partition."""
        consumer = topics_consumer(self.settings, {"health": False, "events": False})
        starts = consumer.beginning_offsets(list(consumer.assignment()))
        for tp in consumer.assignment():
            consumer.seek(tp, max(starts[tp], consumer.position(tp) - TAIL_RECORDS))
        return consumer

    def _run(self) -> None:
        try:
            consumer = self._tail()
        except Exception:  # the console then shows runtime trees without health or events
            log.exception("console feed could not open the health and events topics")
            return
        notes = {"health": self._note_health, "events": self._note_event}
        try:
            next_sample = time.monotonic()
            while not self.stopping.is_set():
                wait = max(1, int((next_sample - time.monotonic()) * 1000))
                for tp, raws in poll_through_broker_loss(consumer, wait).items():
                    kind = topic_kind_of(self.settings, tp.topic)
                    for raw in raws:
                        self._decoded(kind, raw, notes[kind])
                if time.monotonic() >= next_sample:
                    self._sample(time.time())
                    next_sample = time.monotonic() + SAMPLE_SECONDS
        finally:
            consumer.close()

    def _decoded(self, kind: str, raw, note) -> None:
        """Invalid records are logged and skipped: the topic's own consumers dead-letter them.
        Events are read as history (a tail starts mid-partition: its fence is looked up); a
        health sample counts only when signed by the platform or the member it is about."""
        try:
            records: list = []
            if kind == "events":
                records = self.events_history.events(raw)
            else:
                sender = self.events_history.verifier.sender(kind, raw.key, raw.value, raw.headers)
                sample = decode(kind, raw.value)
                Verifier.require_signed(kind, sender, sample)
                records = [sample]
        except ValueError as exc:
            log.warning("console skips %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, rejection_reason(exc))
            return
        for record in records:
            try:
                note(record)
            except Exception:  # noqa: BLE001 - one odd record must not end the console feed
                log.exception("console skips %s[%d]@%d", raw.topic, raw.partition, raw.offset)

    def _note_health(self, record) -> None:
        stat = record.payload
        if isinstance(stat, HealthStat):
            with self.lock:
                self.health[record.aggregate_id][stat.metric][stat.member_id or ""] = (stat.timestamp, stat.value)
        elif isinstance(stat, MemberHealth):  # every metric of one member's publish
            with self.lock:
                for metric, value in stat.metrics.items():
                    self.health[record.aggregate_id][metric][stat.member_id] = (stat.timestamp, value)

    def _note_event(self, record) -> None:
        payload = record.payload
        detail = one_line(figures(payload))
        with self.lock:
            self.recent[record.tenant].append(
                {
                    "id": record.id,
                    "at": record.occurred_at.isoformat(),
                    "type": payload.type,
                    "aggregate": record.aggregate_id.split("/", 1)[-1],
                    "detail": detail[:200],
                }
            )

    def _mean(self, cluster_key: str, metric: str, members: set[str], now: float) -> float | None:
        """The mean of the members' fresh samples; stale ones are forgotten here."""
        latest = self.health.get(cluster_key, {}).get(metric, {})
        for member in [m for m, (at, _) in latest.items() if at < now - FRESH_SECONDS]:
            del latest[member]
        values = [value for member, (_, value) in latest.items() if member in members or member == ""]
        return round(fmean(values), 2) if values else None

    def _sample(self, now: float) -> None:
        """One chart point per existing cluster: members in service, active ones, load, memory."""
        for tenant in self.read_model.tenants_with("cluster"):
            for state in self.read_model.all(tenant, "cluster"):
                serving = {
                    m.member_id
                    for m in state.members.values()  # type: ignore[attr-defined]
                    if m.in_service and m.status != MemberStatus.TERMINATED
                }
                with self.lock:
                    point = [
                        round(now, 1),
                        len(serving),
                        state.active,  # type: ignore[attr-defined]
                        self._mean(state.aggregate_id, "load_average", serving, now),
                        self._mean(state.aggregate_id, "memory_consumption", serving, now),
                    ]
                    self.history.setdefault(state.aggregate_id, deque(maxlen=HISTORY_POINTS)).append(point)
        with self.lock:
            self.samples += 1

    def view(self, tenant: str) -> str:
        """The tenant's console document as JSON, rebuilt only when the log or a sample moved."""
        versions = (self.read_model.version, self.samples)
        cached = self.views.get(tenant)
        if cached is not None and cached[0] == versions:
            return cached[1]
        model = self.read_model
        applications = [
            application_runtime(state, lambda cid: model.get(tenant, "cluster", cid))  # type: ignore[arg-type, return-value]
            for state in model.all(tenant, "application")
        ]
        clusters = []
        with self.lock:
            for key, points in self.history.items():
                ref = parse_aggregate_id(key)
                state = model.get(tenant, "cluster", ref.id) if ref.tenant == tenant else None
                if state is not None and state.spec is not None:  # type: ignore[attr-defined]
                    clusters.append(
                        {
                            "clusterId": ref.id,
                            "applicationId": state.spec.application_id,  # type: ignore[attr-defined]
                            "alias": state.spec.alias,  # type: ignore[attr-defined]
                            "status": state.status.value,  # type: ignore[attr-defined]
                            "points": list(points),
                        }
                    )
            events = list(reversed(self.recent.get(tenant, ())))
        body = json.dumps(
            {"applications": applications, "clusters": clusters, "events": events, "sampleSeconds": SAMPLE_SECONDS}
        )
        self.views[tenant] = (versions, body)
        return body


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Runs inside the app's own lifespan, so its read model is there to sample."""
    feed = await run_in_threadpool(lambda: ConsoleFeed(app.state.settings, app.state.read_model).start())
    app.state.console_feed = feed
    try:
        yield
    finally:
        await run_in_threadpool(feed.stop)


router = APIRouter(tags=["Console"], include_in_schema=False, lifespan=_lifespan)


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/console")


@router.get("/console")
def page() -> HTMLResponse:
    """The page itself holds no data: it logs in and then reads the stream."""
    return HTMLResponse(STATIC.joinpath("index.html").read_text())


@router.get("/console/{name}")
def static_file(name: str) -> Response:
    if name not in STATIC_TYPES:
        raise HTTPException(404, f"console file '{name}' not found")
    return Response(
        STATIC.joinpath(name).read_text(), media_type=STATIC_TYPES[name], headers={"Cache-Control": "no-cache"}
    )


@router.get("/api/console/stream", response_class=EventSourceResponse)
async def stream(request: Request, principal: Principal = Depends(current_principal)) -> AsyncIterable[ServerSentEvent]:
    """`event: state` with the caller's tenant document, again whenever it changes. The caller
    is checked again before each document: once its token is revoked or has expired (or its
    user removed), the stream sends `event: refused` with the reason and ends."""
    feed: ConsoleFeed = request.app.state.console_feed
    identity = request.app.state.identity
    authorization = request.headers.get("authorization", "")
    sent = None
    while True:
        now = await run_in_threadpool(identity.caller_now, authorization)
        if isinstance(now, str) or now != principal:
            yield ServerSentEvent(
                event="refused",
                data={"reason": now if isinstance(now, str) else f"the role of {principal.username!r} changed"},
            )
            return
        body = await run_in_threadpool(feed.view, principal.tenant)
        if body != sent:
            yield ServerSentEvent(event="state", raw_data=body, retry=2000)
            sent = body
        await anyio.sleep(PUSH_SECONDS)
