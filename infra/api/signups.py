"""Application sign-ups and domain mappings, with Stratos 4.1's paths, codes and messages.

A tenant signs up for a multi-tenant application: its own, or one the super tenant offers.
Sign-ups and mappings live in the application aggregate, one per signing tenant; every route
answers only the caller's tenant's own, so another tenant's are never seen or changed (404).
The rules (deployed, multi-tenant, one sign-up per tenant, known aliases, unique domains) are
the aggregate's: these routes only find the application and send the command.
(No `from __future__ import annotations` here: FastAPI reads the body annotations at runtime.)
"""

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from actors.application import ApplicationState
from infra.api.identity import Principal, current_principal, tenant_admin
from infra.api.read_model import ReadModel
from infra.api.responses import ERROR_RESPONSES, ResponseMessage, Writer
from schemas import commands as C
from schemas.definitions import ApplicationSignup, DomainMappings
from schemas.envelope import SUPER_TENANT
from schemas.ids import parse_aggregate_id

router = APIRouter(tags=["Sign-ups and domain mappings"], responses=ERROR_RESPONSES)
WAIT = Query(True, description="false: answer 202 once the command is logged")


def find_application(request: Request, tenant: str, application_id: str) -> ApplicationState:
    """The caller's own application, else the super tenant's multi-tenant one of that id."""
    read_model: ReadModel = request.app.state.read_model
    state = read_model.get(tenant, "application", application_id)
    if state is None and tenant != SUPER_TENANT:
        offered = read_model.get(SUPER_TENANT, "application", application_id)
        if offered is not None and (offered.definition or {}).get("multiTenant"):  # type: ignore[attr-defined]
            state = offered
    if state is None:
        raise HTTPException(404, f"application '{application_id}' not found")
    return state  # type: ignore[return-value]


def send(request: Request, state: ApplicationState, command: BaseModel, done: str, code: int, wait: bool):
    writer: Writer = request.app.state.writer
    owner = parse_aggregate_id(state.aggregate_id).tenant  # events keep the application's tenant
    return writer.write(state.aggregate_id, command, owner, done, code, wait)


def signup_bean(application_id: str, tenant: str, signup: dict) -> dict:
    """Stratos's ApplicationSignUpBean; repository passwords never leave the server."""
    repositories = [{k: v for k, v in repo.items() if k != "repoPassword"} for repo in signup["artifactRepositories"]]
    return {
        "applicationId": application_id,
        "tenantDomain": tenant,
        "artifactRepositories": repositories,
        "clusterIds": sorted(set(signup["clusters"].values())),
    }


@router.post(
    "/applications/{application_id}/signup",
    status_code=201,
    response_model=ResponseMessage,
    summary="Sign the caller's tenant up for a deployed multi-tenant application",
)
def add_signup(
    application_id: str,
    body: ApplicationSignup,
    request: Request,
    principal: Principal = Depends(tenant_admin),
    wait: bool = WAIT,
):
    if body.applicationId not in (None, application_id):
        raise HTTPException(400, f"applicationId: '{body.applicationId}' does not match the path's '{application_id}'")
    state = find_application(request, principal.tenant, application_id)
    return send(
        request,
        state,
        C.AddApplicationSignup(tenant=principal.tenant, signup=body),
        f"Successfully added application signup: [application-id] {application_id}",
        201,
        wait,
    )


@router.get("/applications/{application_id}/signup", summary="The caller's tenant's sign-up")
def get_signup(application_id: str, request: Request, principal: Principal = Depends(current_principal)) -> dict:
    state = find_application(request, principal.tenant, application_id)
    signup = state.signups.get(principal.tenant)
    if signup is None:
        raise HTTPException(404, f"application signup not found: [application-id] {application_id}")
    return signup_bean(application_id, principal.tenant, signup)


@router.delete(
    "/applications/{application_id}/signup",
    response_model=ResponseMessage,
    summary="Remove the caller's tenant's sign-up and its domain mappings",
)
def remove_signup(
    application_id: str, request: Request, principal: Principal = Depends(tenant_admin), wait: bool = WAIT
):
    state = find_application(request, principal.tenant, application_id)
    return send(
        request,
        state,
        C.RemoveApplicationSignup(tenant=principal.tenant),
        f"Application signup removed successfully: [application-id] {application_id}",
        200,
        wait,
    )


@router.post(
    "/applications/{application_id}/domainMappings",
    status_code=201,
    response_model=ResponseMessage,
    summary="Map domain names to cartridge aliases of the application",
)
def add_domain_mappings(
    application_id: str,
    body: DomainMappings,
    request: Request,
    principal: Principal = Depends(tenant_admin),
    wait: bool = WAIT,
):
    if not body.domainMappings:
        raise HTTPException(400, "domainMappings: at least one mapping is required")
    state = find_application(request, principal.tenant, application_id)
    return send(
        request,
        state,
        C.AddDomainMappings(tenant=principal.tenant, mappings=body),
        f"Domain mappings added successfully: [application-id] {application_id}",
        201,
        wait,
    )


@router.get("/applications/{application_id}/domainMappings", summary="The caller's tenant's domain mappings")
def list_domain_mappings(
    application_id: str, request: Request, principal: Principal = Depends(current_principal)
) -> list[dict]:
    state = find_application(request, principal.tenant, application_id)
    return [
        {k: v for k, v in m.items() if k != "tenant"}
        for _, m in sorted(state.domain_mappings.items())
        if m["tenant"] == principal.tenant
    ]


class DomainName(BaseModel):
    model_config = ConfigDict(extra="allow")
    domainName: str = Field(min_length=1)


class DomainNames(BaseModel):
    """Stratos's removal body: the mappings bean, of which only the domain names count."""

    domainMappings: list[DomainName] = Field(min_length=1)


def _remove(request: Request, principal: Principal, application_id: str, names: list[str], wait: bool):
    state = find_application(request, principal.tenant, application_id)
    return send(
        request,
        state,
        C.RemoveDomainMappings(tenant=principal.tenant, domain_names=names),
        f"Domain mappings removed successfully: [application-id] {application_id} [domain-names] {', '.join(names)}",
        200,
        wait,
    )


@router.delete(
    "/applications/{application_id}/domainMappings",
    response_model=ResponseMessage,
    summary="Remove domain mappings named in a mappings body",
)
def remove_domain_mappings(
    application_id: str,
    body: DomainNames,
    request: Request,
    principal: Principal = Depends(tenant_admin),
    wait: bool = WAIT,
):
    return _remove(request, principal, application_id, [m.domainName for m in body.domainMappings], wait)


@router.delete(
    "/applications/{application_id}/domainMappings/{domain_name}",
    response_model=ResponseMessage,
    summary="Remove one domain mapping",
)
def remove_domain_mapping(
    application_id: str,
    domain_name: str,
    request: Request,
    principal: Principal = Depends(tenant_admin),
    wait: bool = WAIT,
):
    return _remove(request, principal, application_id, [domain_name], wait)
