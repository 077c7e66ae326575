"""Deployment and runtime: deploy / undeploy, the runtime tree, clusters, git hooks, providers."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from infra.api.identity import Principal, current_principal, tenant_admin
from infra.api.read_model import ReadModel
from infra.api.responses import ERROR_RESPONSES, ResponseMessage, Writer, answer
from infra.api.views import application_runtime, cluster_bean
from infra.auth.secrets import notice_for_instances
from infra.log.kafka import envelope
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.records import NotifierRecord
from schemas.status import ArtifactUpdated

router = APIRouter(tags=["Runtime"], responses=ERROR_RESPONSES)
WAIT = Query(True, description="false: answer 202 once the command is logged")


def _read_model(request: Request) -> ReadModel:
    return request.app.state.read_model


def _application(request: Request, tenant: str, application_id: str):
    state = _read_model(request).get(tenant, "application", application_id)
    if state is None:
        raise HTTPException(404, f"application '{application_id}' not found")
    return state


@router.post(
    "/applications/{application_id}/deploy/{application_policy_id}",
    status_code=202,
    response_model=ResponseMessage,
    summary="Deploy an application with an application policy",
)
async def deploy(
    application_id: str,
    application_policy_id: str,
    request: Request,
    principal: Principal = Depends(tenant_admin),
    wait: bool = WAIT,
):
    _application(request, principal.tenant, application_id)
    if _read_model(request).get(principal.tenant, "applicationPolicy", application_policy_id) is None:
        raise HTTPException(404, f"applicationPolicy '{application_policy_id}' not found")
    writer: Writer = request.app.state.writer
    return await writer.write_async(
        aggregate_id(principal.tenant, "application", application_id),
        C.DeployApplication(application_policy_id=application_policy_id),
        principal.tenant,
        f"Application deployed successfully: [application] {application_id}",
        202,
        wait,
    )


@router.post(
    "/applications/{application_id}/undeploy",
    status_code=202,
    response_model=ResponseMessage,
    summary="Undeploy an application (force: terminate members without cleanup)",
)
async def undeploy(
    application_id: str,
    request: Request,
    principal: Principal = Depends(tenant_admin),
    force: bool = Query(False),
    wait: bool = WAIT,
):
    _application(request, principal.tenant, application_id)
    writer: Writer = request.app.state.writer
    return await writer.write_async(
        aggregate_id(principal.tenant, "application", application_id),
        C.UndeployApplication(force=force),
        principal.tenant,
        f"Application undeployed successfully: [application] {application_id}",
        202,
        wait,
    )


@router.get(
    "/applications/{application_id}/runtime",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
    summary="The runtime tree: application -> group instances -> cluster instances -> members",
)
async def runtime(application_id: str, request: Request, principal: Principal = Depends(current_principal)) -> Response:
    """Built once per read-model version and application, off the event loop and by one request
    at a time; polling clients get the cached bytes straight from the loop."""
    read_model = _read_model(request)
    cache: dict = request.app.state.runtime_views
    key = (principal.tenant, application_id)
    cached = cache.get(key)
    if cached is None or cached[0] != read_model.version:
        async with request.app.state.runtime_build:
            cached = cache.get(key)
            version = read_model.version
            if cached is None or cached[0] != version:
                state = _application(request, principal.tenant, application_id)
                body = await run_in_threadpool(
                    lambda: json.dumps(
                        application_runtime(state, lambda cid: read_model.get(principal.tenant, "cluster", cid))  # type: ignore[arg-type, return-value]
                    ).encode()
                )
                cached = (version, body)
                cache[key] = cached
    return Response(cached[1], media_type="application/json")


@router.get("/cluster/{cluster_id}", summary="One cluster with its members")
def cluster(cluster_id: str, request: Request, principal: Principal = Depends(current_principal)) -> dict:
    state = _read_model(request).get(principal.tenant, "cluster", cluster_id)
    if state is None:
        raise HTTPException(404, f"cluster '{cluster_id}' not found")
    return cluster_bean(state)  # type: ignore[arg-type]


class GitRepository(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str


class GitNotification(BaseModel):
    """The part of a git hook's payload Stratos reads (GitHub's push payload has it)."""

    model_config = ConfigDict(extra="allow")
    repository: GitRepository
    after: str | None = None


def _same_repository(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        return url.strip().rstrip("/").removesuffix(".git").lower()

    return norm(a) == norm(b)


@router.post(
    "/repo/notify",
    response_model=ResponseMessage,
    summary="Git hook: the clusters using this repository update their artifacts",
)
def repo_notify(payload: GitNotification, request: Request, principal: Principal = Depends(tenant_admin)):
    read_model = _read_model(request)
    clusters = [
        s.spec  # type: ignore[attr-defined]
        for s in read_model.all(principal.tenant, "cluster")
        if s.spec is not None  # type: ignore[attr-defined]
        and s.spec.repo_url  # type: ignore[attr-defined]
        and s.status.value != "Terminated"  # type: ignore[attr-defined]
        and _same_repository(s.spec.repo_url, payload.repository.url)  # type: ignore[attr-defined]
    ]
    appender = request.app.state.commands.appender
    for spec in clusters:
        target = aggregate_id(principal.tenant, "cluster", spec.cluster_id)
        notice = notice_for_instances(
            request.app.state.secrets,
            ArtifactUpdated(
                cluster_id=spec.cluster_id,
                repo_url=spec.repo_url or "",
                repo_username=spec.repo_username,
                repo_password=spec.repo_password,
                commit=payload.after,
            ),
            target,
        )
        appender.send("instance-notifier", target, envelope(NotifierRecord, notice, target, tenant=principal.tenant))
    appender.flush()
    names = ", ".join(s.cluster_id for s in clusters) or "none"
    return answer(200, f"Repository notification sent: [repoUrl] {payload.repository.url} [clusters] {names}")


@router.get("/iaasProviders", summary="IaaS providers the cloud controller serves")
def iaas_providers(request: Request, principal: Principal = Depends(current_principal)) -> dict:
    return {"iaasProviders": list(request.app.state.settings.iaas_providers)}
