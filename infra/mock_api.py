"""The mock IaaS's REST view under `/mock-iaas/api`: instances (list, get, delete = crash),
health patterns (replaceable at run time) and injected start failures.

`mock_iaas_router()` is mounted by the platform's API; `mock_iaas_app()` serves it alone (the
`stratos cloud --api-port` option). Answers follow Stratos's ResponseMessageBean:
`{"status": "success"|"error", "message": ...}` for writes and errors.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from infra.iaas.mock import MockCloud
from infra.iaas.patterns import CartridgePatterns
from infra.kafka import rejection_reason
from infra.settings import get_settings

PREFIX = "/mock-iaas/api"


class StartFailures(BaseModel):
    """Body of POST /start-failures: the next `count` node starts fail with `reason`."""

    count: int = Field(1, ge=1, le=1000)
    reason: str = Field("simulated IaaS failure", min_length=1)


def message(status_code: int, text: str) -> JSONResponse:
    return JSONResponse({"status": "success" if status_code < 400 else "error", "message": text},
                        status_code=status_code)


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


def default_cloud() -> MockCloud:
    settings = get_settings()
    return MockCloud.named(settings.mock_cloud or settings.topic_prefix)


def mock_iaas_router(cloud_of: Callable[[], MockCloud] = default_cloud) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["mock-iaas"])

    @router.get("/instances")
    def list_instances() -> list[dict]:
        return [instance.view() for instance in cloud_of().all()]

    @router.get("/instances/{instance_id}")
    def get_instance(instance_id: str):
        instance = cloud_of().get(instance_id)
        if instance is None:
            return message(404, f"instance '{instance_id}' not found")
        return instance.view()

    @router.delete("/instances/{instance_id}")
    def crash_instance(instance_id: str):
        """Simulates a crash: the instance goes silent and its node disappears."""
        if not cloud_of().destroy(instance_id):
            return message(404, f"instance '{instance_id}' not found")
        return message(200, f"instance '{instance_id}' crashed")

    @router.get("/health-patterns")
    def list_patterns() -> dict:
        return cloud_of().patterns.as_json()

    @router.get("/health-patterns/{cartridge_type}")
    def get_patterns(cartridge_type: str):
        patterns = cloud_of().patterns.of(cartridge_type)
        if patterns is None:
            return message(404, f"no health pattern for cartridge type '{cartridge_type}'")
        return patterns.model_dump()

    @router.put("/health-patterns/{cartridge_type}")
    async def put_patterns(cartridge_type: str, request: Request):
        patterns = await _body(request, CartridgePatterns)
        if isinstance(patterns, JSONResponse):
            return patterns
        cloud_of().patterns.replace(cartridge_type, patterns)
        return message(200, f"health pattern of cartridge type '{cartridge_type}' replaced")

    @router.post("/start-failures")
    async def inject_start_failures(request: Request):
        failures = await _body(request, StartFailures)
        if isinstance(failures, JSONResponse):
            return failures
        cloud_of().fail_next_starts(failures.count, failures.reason)
        return message(200, f"the next {failures.count} node start(s) will fail: {failures.reason}")

    return router


def mock_iaas_app(cloud_of: Callable[[], MockCloud] = default_cloud) -> FastAPI:
    app = FastAPI(title="Stratos-ES mock IaaS")
    app.include_router(mock_iaas_router(cloud_of))
    return app
