"""The mock IaaS's HTTP API under `/mock-iaas/api`, as `stratos mock-iaas` serves it.

Stratos's paths: `GET /status`, `GET|POST /instances`, `GET|DELETE /instances/{id}` (a DELETE
is a crash: the node goes silent and disappears), `POST /instances/{id}/allocateIpAddress`;
ours: `GET|PUT /health-patterns/{cartridgeType}` (replaceable at run time) and
`POST /start-failures` (the next starts fail). Answers to writes and errors follow Stratos's
ResponseMessageBean: `{"status": "success"|"error", "message": ...}`.

Who may call: holders of the cloud's access key (`Authorization: Bearer <key>`): the cloud
controller's libcloud driver, and the platform API, which serves this same URL space on its own
port for its users (infra/api/mock_iaas.py). A caller that names a tenant (`X-Stratos-Tenant`,
what the platform API sends for a tenant's admin) sees, and crashes, only that tenant's
instances, and may neither start nodes nor change patterns or failures.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infra.cloud.mock.cloud import MockCloud, MockIaasError, MockInstance
from infra.cloud.mock.patterns import CartridgePatterns
from infra.log.kafka import rejection_reason

PREFIX = "/mock-iaas/api"
TENANT_HEADER = "X-Stratos-Tenant"


class StartFailures(BaseModel):
    """Body of POST /start-failures: the next `count` node starts fail with `reason`."""

    count: int = Field(1, ge=1, le=1000)
    reason: str = Field("simulated IaaS failure", min_length=1)


class InstanceRequest(BaseModel):
    """Body of POST /instances: the libcloud driver's `{"name", "metadata"}`, or Stratos's
    MockInstanceContext (`memberId`, `clusterId`, `applicationId`, ...: kept as tags)."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[^/\s]+$")
    memberId: str | None = Field(None, min_length=1, max_length=255, pattern=r"^[^/\s]+$")
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("metadata", mode="before")
    @classmethod
    def _as_strings(cls, value):
        return {str(k): "" if v is None else str(v) for k, v in value.items()} if isinstance(value, dict) else value

    def node_name(self) -> str | None:
        return self.name or self.memberId

    def tags(self) -> dict[str, str]:
        context = {k: str(v) for k, v in (self.model_extra or {}).items() if isinstance(v, (str, int, float))}
        return {**context, **({"memberId": self.memberId} if self.memberId else {}), **self.metadata}


def message(status_code: int, text: str) -> JSONResponse:
    return JSONResponse(
        {"status": "success" if status_code < 400 else "error", "message": text}, status_code=status_code
    )


async def _body(request: Request, model: type[BaseModel]) -> BaseModel | JSONResponse:
    """Parse and validate a JSON body; an error answer names what is wrong."""
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError as exc:
        return message(400, f"invalid JSON: {exc}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return message(400, rejection_reason(exc))


class Caller(BaseModel):
    tenant: str | None = None
    """None: the cloud's owner (sees everything); else the one tenant it may see."""

    def sees(self, instance: MockInstance | None) -> bool:
        return instance is not None and (self.tenant is None or instance.tenant == self.tenant)


class Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        self.status, self.text = status, text


def mock_iaas_router(cloud_of: Callable[[], MockCloud], key: str | None = None, mode: str = "simulated") -> APIRouter:
    """The routes over `cloud_of()`; with `key`, every call must carry it as a bearer token."""

    def caller(
        authorization: str | None = Header(None), tenant: str | None = Header(None, alias=TENANT_HEADER)
    ) -> Caller:
        if key is not None:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), key.encode()):
                raise Refused(401, "the mock IaaS needs its access key (Authorization: Bearer <key>)")
        return Caller(tenant=tenant or None)

    def owner(who: Caller = Depends(caller)) -> Caller:
        if who.tenant is not None:
            raise Refused(
                403, "only the super tenant's admin changes the mock IaaS's health patterns, start failures and nodes"
            )
        return who

    router = APIRouter(prefix=PREFIX, tags=["mock-iaas"])
    listings = {"count": 0, "lastAt": None}
    """Whole-cloud listings since this server started: the cloud controller's reconciler shows here."""

    @router.get("/status")
    def status(who: Caller = Depends(caller)) -> dict:
        cloud = cloud_of()
        seen = [i for i in cloud.all() if who.sees(i)]
        body = {
            "status": "running",
            "mode": mode,
            "instances": len(seen),
            "active": sum(i.agent_status == "Activated" for i in seen),
        }
        if who.tenant is None:
            body.update(
                pendingStartFailures=cloud.pending_failures(), durable=cloud.path is not None, listings=dict(listings)
            )
        return body

    @router.get("/instances")
    def list_instances(who: Caller = Depends(caller)) -> list[dict]:
        found = [instance.view() for instance in cloud_of().all() if who.sees(instance)]
        if who.tenant is None:
            listings.update(count=listings["count"] + 1, lastAt=time.time())  # type: ignore[call-overload, operator]
        return found

    @router.post("/instances", status_code=201)
    async def start_instance(request: Request, who: Caller = Depends(owner)):
        body = await _body(request, InstanceRequest)
        if isinstance(body, JSONResponse):
            return body
        name = body.node_name()  # type: ignore[attr-defined]
        if not name:
            return message(400, "name: required (or Stratos's memberId)")
        try:
            instance = await run_in_threadpool(cloud_of().create, name, body.tags())  # type: ignore[attr-defined]
        except MockIaasError as exc:
            return message(exc.status, str(exc.value))
        return JSONResponse(instance.view(), status_code=201)

    @router.get("/instances/{instance_id}")
    def get_instance(instance_id: str, who: Caller = Depends(caller)):
        instance = cloud_of().get(instance_id)
        if not who.sees(instance):
            return message(404, f"instance '{instance_id}' not found")
        return instance.view()  # type: ignore[union-attr]

    @router.post("/instances/{instance_id}/allocateIpAddress")
    def allocate_ip_address(instance_id: str, who: Caller = Depends(caller)):
        """Stratos's call for a public address: every mock node has one from its start, so
        this answers the instance as GET does."""
        return get_instance(instance_id, who)

    @router.delete("/instances/{instance_id}")
    def crash_instance(instance_id: str, who: Caller = Depends(caller)):
        """Simulates a crash: the instance goes silent and its node disappears."""
        cloud = cloud_of()
        if not who.sees(cloud.get(instance_id)) or not cloud.destroy(instance_id):
            return message(404, f"instance '{instance_id}' not found")
        return message(200, f"instance '{instance_id}' crashed")

    @router.get("/health-patterns")
    def list_patterns(who: Caller = Depends(owner)) -> dict:
        return cloud_of().patterns.as_json()

    @router.get("/health-patterns/{cartridge_type}")
    def get_patterns(cartridge_type: str, who: Caller = Depends(owner)):
        patterns = cloud_of().patterns.of(cartridge_type)
        if patterns is None:
            return message(404, f"no health pattern for cartridge type '{cartridge_type}'")
        return patterns.model_dump()

    @router.put("/health-patterns/{cartridge_type}")
    async def put_patterns(cartridge_type: str, request: Request, who: Caller = Depends(owner)):
        patterns = await _body(request, CartridgePatterns)
        if isinstance(patterns, JSONResponse):
            return patterns
        await run_in_threadpool(cloud_of().replace_patterns, cartridge_type, patterns)  # type: ignore[arg-type]
        return message(200, f"health pattern of cartridge type '{cartridge_type}' replaced")

    @router.post("/start-failures")
    async def inject_start_failures(request: Request, who: Caller = Depends(owner)):
        failures = await _body(request, StartFailures)
        if isinstance(failures, JSONResponse):
            return failures
        await run_in_threadpool(cloud_of().fail_next_starts, failures.count, failures.reason)  # type: ignore[attr-defined]
        return message(200, f"the next {failures.count} node start(s) will fail: {failures.reason}")  # type: ignore[attr-defined]

    return router


def mock_iaas_app(cloud_of: Callable[[], MockCloud], key: str | None = None, mode: str = "simulated") -> FastAPI:
    app = FastAPI(title="Stratos-ES mock IaaS", openapi_url=f"{PREFIX}/openapi.json", docs_url=None, redoc_url=None)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return message(exc.status, exc.text)

    app.include_router(mock_iaas_router(cloud_of, key, mode))
    return app
