"""`GET /api/logs` (paged) and `GET /api/logs/stream` (server-sent events): the caller's
tenant's log lines, from the read side in infra/observe/line_store.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterable
from datetime import datetime

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, ServerSentEvent

from infra.api.identity import Principal, current_principal
from infra.api.responses import ERROR_RESPONSES
from infra.observe.follower import follower_lifespan
from infra.observe.line_store import LogStore
from streams.logrules import level_name, parse_duration

router = APIRouter(tags=["Logs"], responses=ERROR_RESPONSES, lifespan=follower_lifespan("log_store", LogStore))
TARGET = Query(None, description="a member, cluster or application id; none = every line of the tenant")
SINCE = Query(None, description="a duration back from now (10m, 2h) or an ISO-8601 time")
LEVEL = Query(None, description="the least level shown: DEBUG, INFO, WARN, ERROR, CRITICAL")


def since_epoch(since: str | None, now: float) -> float | None:
    if not since:
        return None
    try:
        return now - parse_duration(since)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(since).timestamp()
    except ValueError:
        raise HTTPException(400, f"since: {since!r} is neither a duration (10m, 2h) nor an ISO-8601 time") from None


def _level(level: str | None) -> str | None:
    try:
        return level_name(level) if level else None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from exc


@router.get("/logs", summary="Log lines of the caller's tenant, oldest first (the last `limit` of them)")
def logs(
    request: Request,
    principal: Principal = Depends(current_principal),
    target: str | None = TARGET,
    since: str | None = SINCE,
    level: str | None = LEVEL,
    after: int = Query(0, ge=0, description="only lines after this seq (follow cursor)"),
    before: int | None = Query(None, ge=1, description="only lines before this seq (the previous page)"),
    limit: int = Query(200, ge=1, le=5000),
) -> dict:
    store: LogStore = request.app.state.log_store
    lines = store.query(principal.tenant, target, since_epoch(since, time.time()), _level(level), after, before, limit)
    if not lines and target and not store.known(principal.tenant, target):
        raise HTTPException(404, f"no log lines of a member, cluster or application '{target}'")
    return {
        "lines": [line.as_json() for line in lines],
        "next": lines[-1].seq if lines else max(after, store.seq if not before else 0),
        "previous": lines[0].seq if lines else None,
        "dropped": store.dropped(principal.tenant, target),
    }


def stream_filters(since: str | None = SINCE, level: str | None = LEVEL) -> tuple[float | None, str | None]:
    """Checked before a stream starts: a bad value is answered 400, not a stream cut short."""
    return since_epoch(since, time.time()), _level(level)


@router.get(
    "/logs/stream",
    response_class=EventSourceResponse,
    summary="`event: line` for each line (the last `limit` first, then new ones as they come)",
)
async def stream(
    request: Request,
    principal: Principal = Depends(current_principal),
    target: str | None = TARGET,
    filters: tuple = Depends(stream_filters),
    after: int = Query(0, ge=0),
    limit: int = Query(200, ge=0, le=5000),
) -> AsyncIterable[ServerSentEvent]:
    store: LogStore = request.app.state.log_store
    start, minimum = filters
    cursor = after
    if limit and not after:
        first = await run_in_threadpool(store.query, principal.tenant, target, start, minimum, 0, None, limit)
        for line in first:
            yield ServerSentEvent(event="line", raw_data=json.dumps(line.as_json()), id=str(line.seq))
        cursor = first[-1].seq if first else store.seq
    elif not after:
        cursor = store.seq
    while True:
        lines = await run_in_threadpool(store.query, principal.tenant, target, start, minimum, cursor, None, 0)
        for line in lines:
            yield ServerSentEvent(event="line", raw_data=json.dumps(line.as_json()), id=str(line.seq))
            cursor = line.seq
        if not lines:
            seen = store.seq
            await run_in_threadpool(store.wait_newer, seen, 1.0)
            if store.seq == seen:
                yield ServerSentEvent(comment="idle")
        await anyio.sleep(0)
