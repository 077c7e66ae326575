"""The metadata service, Stratos 4.1's `/metadata/api`, on the platform API's port.

Instances publish properties for each other (a database its address, a cluster its well-known
members) and read them back, as Stratos's cartridge agent (`mdsclient.py`) does: a property is
`{"key": k, "values": [v, ...]}` (`values` may be one bare string), a publish body is one
property or `{"properties": [...]}`, a read answers `{"properties": [...]}` and one property
its bean. POST answers 201, DELETE 200 (also when there was nothing to remove, as Stratos did:
agents' clean-up hooks remove values they may never have published).

Who may call: an instance, with `Authorization: Bearer <TOKEN of its payload>`, on its own
application only, while its member is in service; a tenant's users with their usual API
credentials on their tenant's applications (any role reads, admins write). A token for another
application, of a member no longer in service, or forged, is refused with 401; another
tenant's application is not found (404). The rules themselves (deployed, known alias, Stratos's
add / set semantics) are the application aggregate's (`actors/metadata.py`): the routes find
the application, check the caller and send the command.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasicCredentials
from pydantic import ValidationError

from actors.metadata import properties
from infra.api.identity import Principal, basic_scheme, bearer_scheme, current_principal
from infra.api.metadata_token import MemberTokens, is_member_token
from infra.api.read_model import ReadModel
from infra.api.responses import ERROR_RESPONSES, Writer
from schemas.domain import MemberStatus
from schemas.metadata import AddMetadataProperties, MetadataProperty, RemoveMetadataProperties, RemoveMetadataProperty

router = APIRouter(prefix="/metadata/api", tags=["Metadata service"], responses=ERROR_RESPONSES)
LEAVING = (MemberStatus.READY_TO_SHUTDOWN, MemberStatus.TERMINATED)
"""Statuses of a member that is leaving: its token no longer opens the metadata service."""
MEMBER_GRACE_SECONDS = 3.0
"""How long a new member's token waits for the API's read model to show its member."""


@dataclass(frozen=True)
class Caller:
    tenant: str
    name: str
    may_write: bool


def refused(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="stratos-metadata"'})


def _tokens(request: Request) -> MemberTokens:
    app = request.app
    if getattr(app.state, "member_tokens", None) is None:
        app.state.member_tokens = MemberTokens.in_state_dir(app.state.settings.state_dir)
    return app.state.member_tokens


def _member_in_service(read_model: ReadModel, tenant: str, application_id: str, member_id: str) -> bool:
    """The member is in one of the application's clusters and not on its way out: from its
    termination's request on (graceful or not) its token is refused, as once it is gone."""
    app = read_model.get(tenant, "application", application_id)
    for cluster_id in getattr(app, "clusters", {}) or {}:
        cluster = read_model.get(tenant, "cluster", cluster_id)
        member = getattr(cluster, "members", {}).get(member_id) if cluster is not None else None
        if member is not None:
            return member.termination_requested_at is None and member.status not in LEAVING
    return False


async def caller(
    request: Request,
    application_id: str,
    basic: HTTPBasicCredentials | None = Depends(basic_scheme),
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
) -> Caller:
    """An instance by its payload's TOKEN, or a user by the API's own credentials."""
    if bearer is not None and is_member_token(bearer.credentials):
        claim = _tokens(request).check(bearer.credentials)
        if claim is None:
            raise refused("the metadata token is not valid")
        if claim.application_id != application_id:
            raise refused(
                f"the token of member {claim.member_id!r} is valid for application "
                f"{claim.application_id!r} only, not {application_id!r}"
            )
        read_model: ReadModel = request.app.state.read_model
        deadline = asyncio.get_running_loop().time() + MEMBER_GRACE_SECONDS
        while not _member_in_service(read_model, claim.tenant, application_id, claim.member_id):
            if asyncio.get_running_loop().time() > deadline:
                raise refused(
                    f"member {claim.member_id!r} is not in service in application "
                    f"{application_id!r}: its token is no longer valid"
                )
            await asyncio.sleep(0.05)  # a member just spawned: the read model is a moment behind
        return Caller(claim.tenant, claim.member_id, True)
    principal: Principal = await current_principal(request, basic, bearer)
    return Caller(principal.tenant, principal.username, principal.role == "admin")


def _application(request: Request, who: Caller, application_id: str):
    state = request.app.state.read_model.get(who.tenant, "application", application_id)
    if state is None:
        raise HTTPException(404, f"application '{application_id}' not found")
    return state


def _writer(who: Caller) -> None:
    if not who.may_write:
        raise HTTPException(403, f"user {who.name!r} may read but not change the metadata of tenant {who.tenant!r}")


async def _send(request: Request, who: Caller, application_id: str, command, done: str, code: int):
    _writer(who)
    state = _application(request, who, application_id)
    writer: Writer = request.app.state.writer
    return await writer.write_async(state.aggregate_id, command, who.tenant, done, code)


async def _published(request: Request) -> list[MetadataProperty]:
    """One property, or `{"properties": [...]}` (mdsclient's MDSPutRequest); 400 naming the field."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise HTTPException(400, f"body: not valid JSON ({exc})") from None
    try:
        if isinstance(body, dict) and "properties" in body and "key" not in body:
            listed = body["properties"]
            listed = listed if isinstance(listed, list) else [listed]
            if not listed:
                raise HTTPException(400, "properties: at least one property is required")
            return [MetadataProperty.model_validate(p) for p in listed]
        return [MetadataProperty.model_validate(body)]
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise HTTPException(400, f"{where}: {err['msg']}") from None


def _one(found: list[dict], name: str, application_id: str, alias: str | None) -> dict:
    for prop in found:
        if prop["key"] == name:
            return prop
    where = f"cluster '{alias}' of application '{application_id}'" if alias else f"application '{application_id}'"
    raise HTTPException(404, f"property '{name}' not found in {where}")


def _remove(request: Request, who: Caller, application_id: str, alias: str | None, name: str, value: str | None = None):
    """One property, or one of its values; 200 also when it was not there (Stratos's answer)."""
    where = f"[application-id] {application_id}" + (f" [cluster] {alias}" if alias else "") + f" [property] {name}"
    done = f"Property value removed: {where} [value] {value}" if value is not None else f"Property removed: {where}"
    return _send(request, who, application_id, RemoveMetadataProperty(alias=alias, key=name, value=value), done, 200)


# --- application properties ---------------------------------------------------------------------


@router.get("/applications/{application_id}/properties", summary="The application's properties")
async def get_application_properties(application_id: str, request: Request, who: Caller = Depends(caller)) -> dict:
    return {"properties": properties(_application(request, who, application_id).metadata, None)}


@router.post(
    "/applications/{application_id}/properties",
    status_code=201,
    summary="Publish properties: each gains the values it lacks",
)
async def add_application_properties(application_id: str, request: Request, who: Caller = Depends(caller)):
    command = AddMetadataProperties(properties=await _published(request), by=who.name)
    return await _send(
        request, who, application_id, command, f"Properties added: [application-id] {application_id}", 201
    )


@router.delete("/applications/{application_id}/properties", summary="Remove all the application's metadata")
async def remove_application_properties(application_id: str, request: Request, who: Caller = Depends(caller)):
    return await _send(
        request,
        who,
        application_id,
        RemoveMetadataProperties(),
        f"Properties removed: [application-id] {application_id}",
        200,
    )


@router.get("/applications/{application_id}/properties/{name}", summary="One application property")
async def get_application_property(
    application_id: str, name: str, request: Request, who: Caller = Depends(caller)
) -> dict:
    found = properties(_application(request, who, application_id).metadata, None)
    return _one(found, name, application_id, None)


@router.delete("/applications/{application_id}/properties/{name}", summary="Remove one application property")
async def remove_application_property(application_id: str, name: str, request: Request, who: Caller = Depends(caller)):
    return await _remove(request, who, application_id, None, name)


@router.delete(
    "/applications/{application_id}/properties/{name}/value/{value}",
    summary="Remove one value of an application property",
)
async def remove_application_property_value(
    application_id: str, name: str, value: str, request: Request, who: Caller = Depends(caller)
):
    return await _remove(request, who, application_id, None, name, value)


# --- cluster (cartridge alias) properties -----------------------------------------------------------


@router.get("/applications/{application_id}/clusters/{alias}/properties", summary="A cluster's properties")
async def get_cluster_properties(
    application_id: str, alias: str, request: Request, who: Caller = Depends(caller)
) -> dict:
    return {"properties": properties(_application(request, who, application_id).metadata, alias)}


@router.post(
    "/applications/{application_id}/clusters/{alias}/properties",
    status_code=201,
    summary="Publish cluster properties: each is set to the values given",
)
async def add_cluster_properties(application_id: str, alias: str, request: Request, who: Caller = Depends(caller)):
    command = AddMetadataProperties(alias=alias, properties=await _published(request), by=who.name)
    return await _send(
        request,
        who,
        application_id,
        command,
        f"Properties added: [application-id] {application_id} [cluster] {alias}",
        201,
    )


@router.get("/applications/{application_id}/clusters/{alias}/properties/{name}", summary="One cluster property")
@router.get("/applications/{application_id}/cluster/{alias}/properties/{name}", include_in_schema=False)
async def get_cluster_property(
    application_id: str, alias: str, name: str, request: Request, who: Caller = Depends(caller)
) -> dict:
    """(Stratos 4.1 served this one at `.../cluster/{id}/...`, singular: both paths answer.)"""
    found = properties(_application(request, who, application_id).metadata, alias)
    return _one(found, name, application_id, alias)


@router.delete(
    "/applications/{application_id}/clusters/{alias}/properties/{name}", summary="Remove one cluster property"
)
async def remove_cluster_property(
    application_id: str, alias: str, name: str, request: Request, who: Caller = Depends(caller)
):
    return await _remove(request, who, application_id, alias, name)


@router.delete(
    "/applications/{application_id}/clusters/{alias}/properties/{name}/value/{value}",
    summary="Remove one value of a cluster property",
)
async def remove_cluster_property_value(
    application_id: str, alias: str, name: str, value: str, request: Request, who: Caller = Depends(caller)
):
    return await _remove(request, who, application_id, alias, name, value)
