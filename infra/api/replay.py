"""Replay for the console: the caller's runtime tree at a past instant, and why an event
happened (the same rebuild and causation index as `stratos replay` and `stratos why`).

Tenant-scoped like every runtime route: a tenant sees its own aggregates; a causation chain
stops where it would enter another tenant's records (the super tenant's admin sees all).

A replay rebuilds partitions from the log, so it is for a tenant's admins only, rebuilds only
the partitions holding that tenant's applications and clusters, runs one at a time per API
process (429 meanwhile), and leaves the process's garbage collector alone (`pause_gc=False`:
the server keeps answering while it runs).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from actors.causality import causes, effects
from infra.api.identity import Principal, current_principal, tenant_admin
from infra.api.responses import ERROR_RESPONSES
from infra.api.views import application_runtime
from infra.replay.causation_index import CausalIndex
from infra.replay.timetravel import Position, PositionError, parse_time, platform_at, timeline, what_if_from_log
from schemas.definitions import AutoscalingPolicy
from schemas.ids import aggregate_id, parse_aggregate_id

router = APIRouter(tags=["Replay"])
REPLAY_RETRY_SECONDS = 2
_replaying = threading.Lock()
"""One replay at a time per API process: each rebuilds partitions from the log."""


@contextmanager
def one_replay() -> Iterator[None]:
    """Holds the process's one replay (a rebuild, a history, a what-if read the log); 429 while
    another runs."""
    if not _replaying.acquire(blocking=False):
        raise HTTPException(
            429,
            "a replay is running on this API process: try again in a moment",
            headers={"Retry-After": str(REPLAY_RETRY_SECONDS)},
        )
    try:
        yield
    finally:
        _replaying.release()


def _visible(principal: Principal, link: dict) -> bool:
    return principal.is_super_admin or parse_aggregate_id(link["aggregate"]).tenant == principal.tenant


def tenant_aggregates(read_model, tenant: str) -> list[str]:
    """The tenant's applications and their clusters, as the API knows them now: what a replay
    of that tenant rebuilds (only their partitions)."""
    applications = read_model.all(tenant, "application")
    return [a.aggregate_id for a in applications] + [
        aggregate_id(tenant, "cluster", cluster_id) for a in applications for cluster_id in a.clusters
    ]


@router.get(
    "/replay",
    summary="The caller's applications as they were at a past instant (the tenant's admins)",
    responses=ERROR_RESPONSES,
)
async def replay_at(
    request: Request,
    at: str = Query(..., description="ISO 8601 time"),
    principal: Principal = Depends(tenant_admin),
) -> dict:
    try:
        instant = parse_time(at)
    except PositionError as exc:
        raise HTTPException(400, f"at: {exc}") from exc
    tenant = principal.tenant
    wanted = tenant_aggregates(request.app.state.read_model, tenant)
    with one_replay():
        found = await run_in_threadpool(
            platform_at, request.app.state.settings, Position(time=instant), only=wanted, pause_gc=False
        )

    def cluster(cluster_id: str):
        tracked = found.get(aggregate_id(tenant, "cluster", cluster_id))
        return tracked.state if tracked else None

    applications = [
        application_runtime(t.state, cluster)  # type: ignore[arg-type]
        for key, t in found.items()
        if key.startswith(f"{tenant}/application/") and t.state.exists
    ]
    return {"at": instant.isoformat(), "applications": applications}


@router.get(
    "/why/cluster/{cluster_id}",
    summary="Why a cluster of the caller has its members: the last change, its figures, the verdict now",
    responses=ERROR_RESPONSES,
)
async def why_cluster(request: Request, cluster_id: str, principal: Principal = Depends(current_principal)) -> dict:
    from infra.health.verdict import cluster_explained

    def explain() -> dict:
        try:
            return cluster_explained(request.app.state.settings, aggregate_id(principal.tenant, "cluster", cluster_id))
        except ValueError as exc:
            raise HTTPException(404, f"cluster '{cluster_id}' not found: {exc}") from exc

    return await run_in_threadpool(explain)


@router.get(
    "/why/{record_id}",
    summary="What caused a record (or, with effects=true, what it led to)",
    responses=ERROR_RESPONSES,
)
async def why(
    request: Request,
    record_id: str,
    effects_of: bool = Query(False, alias="effects"),
    principal: Principal = Depends(current_principal),
) -> dict:
    def walk() -> dict:
        index = CausalIndex(request.app.state.settings)
        try:
            index.refresh()
            start = index.lookup(record_id)
            if start is None or not _visible(principal, start):
                raise HTTPException(404, f"record '{record_id}' not found")
            if effects_of:
                return effects(lambda rid: [c for c in index.children(rid) if _visible(principal, c)], record_id)
            chain, missing = causes(
                lambda rid: link if (link := index.lookup(rid)) and _visible(principal, link) else None, record_id
            )
            return {"chain": chain, "missing_cause": missing}
        finally:
            index.close()

    return await run_in_threadpool(walk)


def _instant(text: str | None, name: str) -> datetime | None:
    try:
        return parse_time(text) if text else None
    except PositionError as exc:
        raise HTTPException(400, f"{name}: {exc}") from exc


@router.get(
    "/cluster/{cluster_id}/history",
    summary="A cluster's events (its scaling decisions with their figures) in log order, as `stratos history`",
    responses=ERROR_RESPONSES,
)
async def cluster_history(
    cluster_id: str,
    request: Request,
    since: str | None = Query(None, description="ISO 8601 time"),
    until: str | None = Query(None, description="ISO 8601 time"),
    principal: Principal = Depends(current_principal),
) -> dict:
    key = aggregate_id(principal.tenant, "cluster", cluster_id)  # the caller's own, gone or not
    start, end = _instant(since, "since"), _instant(until, "until")
    problems: list[str] = []
    with one_replay():
        entries = await run_in_threadpool(timeline, request.app.state.settings, key, start, end, problems)
    return {"clusterId": cluster_id, "entries": [e.as_json() for e in entries], "problems": problems}


class WhatIfRequest(BaseModel):
    policy: AutoscalingPolicy = Field(description="the autoscaling policy to try, in Stratos's JSON")
    since: str | None = Field(None, alias="from", description="first decision compared (ISO 8601)")
    until: str | None = Field(None, alias="to", description="last decision compared (ISO 8601)")


@router.post(
    "/cluster/{cluster_id}/whatif",
    summary="What another autoscaling policy would have decided over the cluster's recorded period, "
    "decision by recorded decision (as `stratos replay --what-if`; nothing is sent; the tenant's admins)",
    responses=ERROR_RESPONSES,
)
async def cluster_what_if(
    cluster_id: str, body: WhatIfRequest, request: Request, principal: Principal = Depends(tenant_admin)
) -> dict:
    """It reads the health and commands topics through: like a replay, for the tenant's admins."""
    key = aggregate_id(principal.tenant, "cluster", cluster_id)
    start, end = _instant(body.since, "from"), _instant(body.until, "to")
    policy = body.policy.model_dump(by_alias=True, exclude_none=True)
    try:
        with one_replay():
            result = await run_in_threadpool(what_if_from_log, request.app.state.settings, key, policy, start, end)
    except ValueError as exc:  # the cluster has no events yet
        raise HTTPException(404, str(exc).removeprefix("--aggregate: ")) from exc
    return {
        "clusterId": cluster_id,
        "policy": body.policy.definition_id,
        "verdicts": [v.as_json() for v in result.verdicts],
        "totals": result.totals(),
        "samplesUsed": result.samples_used,
        "samplesSkipped": result.samples_skipped,
    }
