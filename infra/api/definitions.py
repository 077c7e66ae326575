"""CRUD of every Stratos definition, with Stratos 4.1's paths, codes and messages.

One router factory serves all kinds; what differs per kind (whose tenant it lives in, who may
change it, which field is a password) is data in `Resource`. Bodies are the Stratos JSON models
of `schemas.definitions`, so validation errors name the field and OpenAPI shows the shapes.
(No `from __future__ import annotations` here: FastAPI reads the body annotations at runtime.)
"""

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from infra.api.identity import (
    MAX_PASSWORD_BYTES,
    Principal,
    current_principal,
    hash_password,
    is_hashed,
    super_admin,
    tenant_admin,
)
from infra.api.read_model import ReadModel
from infra.api.references import in_use_problem, reference_problem
from infra.api.responses import ERROR_RESPONSES, ResponseMessage, Writer
from schemas import commands as C
from schemas.base import masked
from schemas.definitions import DEFINITION_KINDS, RegisteredDefinition
from schemas.envelope import SUPER_TENANT
from schemas.ids import aggregate_id


@dataclass(frozen=True)
class Resource:
    path: str
    kind: str
    label: str
    id_name: str
    super_tenant: bool = False
    secret: str | None = None

    @property
    def model(self) -> type[RegisteredDefinition]:
        return DEFINITION_KINDS[self.kind]

    def tenant_for(self, principal: Principal) -> str:
        return SUPER_TENANT if self.super_tenant else principal.tenant


RESOURCES = [
    Resource("cartridges", "cartridge", "Cartridge", "cartridgeType"),
    Resource("cartridgeGroups", "cartridgeGroup", "Cartridge group", "groupDefinitionName"),
    Resource("networkPartitions", "networkPartition", "Network partition", "networkPartitionId"),
    Resource("deploymentPolicies", "deploymentPolicy", "Deployment policy", "deploymentPolicyId"),
    Resource("autoscalingPolicies", "autoscalingPolicy", "Autoscaling policy", "autoscalingPolicyId"),
    Resource("applicationPolicies", "applicationPolicy", "Application policy", "applicationPolicyId"),
    Resource("applications", "application", "Application", "applicationId"),
    Resource("kubernetesClusters", "kubernetesCluster", "Kubernetes cluster", "kubernetesClusterId"),
    Resource("tenants", "tenant", "Tenant", "tenantDomain", super_tenant=True, secret="adminPassword"),
    Resource("users", "user", "User", "userName", secret="credential"),
]


def public_body(resource: Resource, state) -> dict:
    """The stored Stratos JSON as a GET answers it: password hashes never leave the server, and
    every other secret shows as "********"."""
    body = masked(dict(state.definition))
    if resource.secret:
        body.pop(resource.secret, None)
    if resource.kind == "application":
        body["status"] = state.status.value
    return body


def check_references(read_model: ReadModel, tenant: str, resource: Resource, definition: RegisteredDefinition) -> None:
    """Stratos refuses a definition that names unknown definitions: 400 naming them."""
    if problem := reference_problem(read_model, tenant, resource.kind, definition):
        raise HTTPException(400, problem)


def with_hashed_secret(
    resource: Resource, definition: RegisteredDefinition, request: Request, existing
) -> RegisteredDefinition:
    """Passwords are hashed before they are logged; an update without one keeps the old hash."""
    if not resource.secret:
        return definition
    value = getattr(definition, resource.secret)
    if not value:
        if existing is None:
            raise HTTPException(400, f"{resource.secret}: a password is required")
        value = existing.definition.get(resource.secret, "")
    elif not is_hashed(value):
        if len(value.encode()) > MAX_PASSWORD_BYTES:
            raise HTTPException(400, f"{resource.secret}: at most {MAX_PASSWORD_BYTES} bytes (UTF-8) are allowed")
        value = hash_password(value, request.app.state.settings.password_hash_rounds)
    return definition.model_copy(update={resource.secret: value})


def definition_router(resource: Resource) -> APIRouter:
    router = APIRouter(prefix=f"/{resource.path}", tags=[resource.label], responses=ERROR_RESPONSES)
    reader = super_admin if resource.super_tenant else current_principal
    changer = super_admin if resource.super_tenant else tenant_admin
    model = resource.model
    pascal = C._pascal(resource.kind)
    add, update, remove = (getattr(C, f"{verb}{pascal}") for verb in ("Add", "Update", "Remove"))

    def writer(request: Request) -> Writer:
        return request.app.state.writer

    async def hashed(body: RegisteredDefinition, request: Request, existing) -> RegisteredDefinition:
        """Write routes run on the event loop; bcrypt (users, tenants) runs on a worker thread."""
        if not resource.secret:
            return body
        return await run_in_threadpool(with_hashed_secret, resource, body, request, existing)

    @router.get("", summary=f"List {resource.label.lower()}s")
    def list_all(request: Request, principal: Principal = Depends(reader)) -> list[dict]:
        read_model: ReadModel = request.app.state.read_model
        return [public_body(resource, s) for s in read_model.all(resource.tenant_for(principal), resource.kind)]

    @router.get("/{id}", summary=f"Get one {resource.label.lower()}")
    def get_one(id: str, request: Request, principal: Principal = Depends(reader)) -> dict:
        state = request.app.state.read_model.get(resource.tenant_for(principal), resource.kind, id)
        if state is None:
            raise HTTPException(404, f"{resource.kind} '{id}' not found")
        return public_body(resource, state)

    @router.post("", status_code=201, response_model=ResponseMessage, summary=f"Add a {resource.label.lower()}")
    async def add_one(
        body: model,  # type: ignore[valid-type]
        request: Request,
        principal: Principal = Depends(changer),
        wait: bool = Query(True, description="false: answer 202 once the command is logged"),
    ):
        tenant = resource.tenant_for(principal)
        definition = await hashed(body, request, None)
        check_references(request.app.state.read_model, tenant, resource, definition)
        id = definition.definition_id
        return await writer(request).write_async(
            aggregate_id(tenant, resource.kind, id),
            add(definition=definition),
            tenant,
            f"{resource.label} added successfully: [{resource.id_name}] {id}",
            201,
            wait,
            headers={"Location": f"/api/{resource.path}/{quote(id, safe='')}"},
        )

    @router.put("", response_model=ResponseMessage, summary=f"Update a {resource.label.lower()}")
    async def update_one(
        body: model,  # type: ignore[valid-type]
        request: Request,
        principal: Principal = Depends(changer),
        wait: bool = Query(True, description="false: answer 202 once the command is logged"),
    ):
        tenant = resource.tenant_for(principal)
        id = body.definition_id  # type: ignore[attr-defined]
        existing = request.app.state.read_model.get(tenant, resource.kind, id)
        if existing is None:
            raise HTTPException(404, f"{resource.kind} '{id}' not found")
        definition = await hashed(body, request, existing)
        check_references(request.app.state.read_model, tenant, resource, definition)
        return await writer(request).write_async(
            aggregate_id(tenant, resource.kind, id),
            update(definition=definition),
            tenant,
            f"{resource.label} updated successfully: [{resource.id_name}] {id}",
            200,
            wait,
        )

    @router.delete("/{id}", response_model=ResponseMessage, summary=f"Remove a {resource.label.lower()}")
    async def remove_one(
        id: str,
        request: Request,
        principal: Principal = Depends(changer),
        wait: bool = Query(True, description="false: answer 202 once the command is logged"),
    ):
        tenant = resource.tenant_for(principal)
        read_model: ReadModel = request.app.state.read_model
        if read_model.get(tenant, resource.kind, id) is None:
            raise HTTPException(404, f"{resource.kind} '{id}' not found")
        if problem := in_use_problem(read_model, tenant, resource.kind, id):
            raise HTTPException(400, problem)
        return await writer(request).write_async(
            aggregate_id(tenant, resource.kind, id),
            remove(id=id),
            tenant,
            f"{resource.label} removed successfully: [{resource.id_name}] {id}",
            200,
            wait,
        )

    return router


def definition_routers() -> list[APIRouter]:
    return [definition_router(resource) for resource in RESOURCES]
