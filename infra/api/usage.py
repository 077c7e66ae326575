"""`GET /api/usage`: what a tenant used (member-seconds by instance type and partition, pending
seconds, scaling actions), folded from the events log by actors/metering.py. A tenant sees only
its own usage; the super tenant's admin may ask for any tenant's."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from actors.metering import GROUPINGS
from infra.api.identity import Principal, current_principal
from infra.api.responses import ERROR_RESPONSES
from infra.observe.follower import follower_lifespan
from infra.observe.usage import UsageFold
from streams.logrules import parse_duration

router = APIRouter(tags=["Usage"], responses=ERROR_RESPONSES, lifespan=follower_lifespan("usage_fold", UsageFold))


def instant(value: str | None, name: str, now: float, default: float) -> float:
    """An ISO-8601 time, epoch seconds, or a duration back from now (`24h`)."""
    if not value:
        return default
    for parse in (
        lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp(),
        float,
        lambda v: now - parse_duration(v),
    ):
        try:
            return parse(value)
        except ValueError:
            continue
    raise HTTPException(400, f"{name}: {value!r} is not an ISO-8601 time, epoch seconds or a duration (24h)")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@router.get("/usage", summary="Usage of a tenant in [from, to), grouped by application, cluster or cartridge")
def get_usage(
    request: Request,
    principal: Principal = Depends(current_principal),
    tenant: str | None = Query(None, description="default: the caller's tenant"),
    from_: str | None = Query(
        None,
        alias="from",
        description="ISO-8601, epoch seconds or a duration back (24h); default: the start of the log",
    ),
    to: str | None = Query(None, description="same forms; default: now"),
    groupBy: str = Query("cluster", description=" | ".join(GROUPINGS)),
) -> dict:
    wanted = tenant or principal.tenant
    if wanted != principal.tenant and not principal.is_super_admin:
        raise HTTPException(403, f"user {principal.username!r} sees only the usage of tenant {principal.tenant!r}")
    if groupBy not in GROUPINGS:
        raise HTTPException(400, f"groupBy: {groupBy!r} is not one of {', '.join(GROUPINGS)}")
    now = time.time()
    start, end = instant(from_, "from", now, 0.0), instant(to, "to", now, now)
    if end < start:
        raise HTTPException(400, f"to: {iso(end)} is before from: {iso(start)}")
    fold: UsageFold = request.app.state.usage_fold
    if not fold.caught_up.wait(request.app.state.settings.api_wait_seconds):
        raise HTTPException(503, "usage is still being folded from the events log: try again")
    rows = fold.usage(wanted, start, min(end, now), groupBy)
    total = {name: round(sum(r[name] for r in rows), 3) for name in ("member_seconds", "pending_seconds")}
    total["scaling_actions"] = sum(r["scaling_actions"] for r in rows)
    return {"tenant": wanted, "from": iso(start), "to": iso(end), "groupBy": groupBy, "rows": rows, "total": total}


@router.get("/health", tags=["Platform"], summary="Each part of the platform: running or not, lag, last error")
def get_health(request: Request, principal: Principal = Depends(current_principal)) -> dict:
    from infra.observe.status import platform_status

    if not principal.is_super_admin:
        raise HTTPException(
            403,
            f"only the super tenant's admin sees the platform's health "
            f"(user {principal.username!r} of tenant {principal.tenant!r})",
        )
    return platform_status(request.app.state.settings)
