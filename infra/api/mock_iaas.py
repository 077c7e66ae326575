"""The mock IaaS's API on the platform API's own address and port (`/mock-iaas/api/...`), as
Stratos serves it beside its REST API: each call is authenticated here like any API call and
passed on to the mock IaaS part (`stratos mock-iaas`) with the cloud's access key.

Who may call: a tenant's admin. The super tenant's admin sees the whole cloud; any other admin
is passed on as its tenant (`X-Stratos-Tenant`), so the mock IaaS shows it, and lets it crash,
only its tenant's instances, and refuses it patterns, start failures and node starts (the
rules live in one place, infra/cloud/mock/api.py). Other users get 403.
"""

from __future__ import annotations

import logging

import httpx
from fastapi import APIRouter, Depends, Request, Response

from infra.api.identity import Principal, tenant_admin
from infra.api.responses import ERROR_RESPONSES, answer
from infra.cloud.mock.account import mock_endpoint
from infra.cloud.mock.api import PREFIX, TENANT_HEADER
from infra.settings import Settings

log = logging.getLogger(__name__)
PASSED_ON = ("content-type",)


class MockIaasProxy:
    """One HTTP client to the mock IaaS part for the API's lifetime."""

    def __init__(self, settings: Settings) -> None:
        self.endpoint = mock_endpoint(settings)
        verify = True
        if self.endpoint.ca_cert:
            import ssl

            verify = ssl.create_default_context(cafile=self.endpoint.ca_cert)  # type: ignore[assignment]
        self.client = httpx.AsyncClient(
            base_url=self.endpoint.url,
            timeout=30,
            verify=verify,
            headers={"Authorization": f"Bearer {self.endpoint.key}"},
        )

    async def forward(self, request: Request, path: str, principal: Principal) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in PASSED_ON}
        if not principal.is_super_admin:
            headers[TENANT_HEADER] = principal.tenant
        try:
            reply = await self.client.request(
                request.method,
                f"{PREFIX}/{path}",
                params=request.query_params,
                content=await request.body(),
                headers=headers,
            )
        except httpx.HTTPError as exc:
            log.warning("mock IaaS at %s: %s", self.endpoint.url, exc)
            return answer(
                503,
                f"the mock IaaS is not reachable at {self.endpoint.url} "
                f"(is `stratos mock-iaas` running?): {type(exc).__name__}",
                "error",
            )
        return Response(
            reply.content,
            status_code=reply.status_code,
            media_type=reply.headers.get("content-type", "application/json"),
        )

    async def close(self) -> None:
        await self.client.aclose()


router = APIRouter(tags=["Mock IaaS"], responses=ERROR_RESPONSES)


@router.api_route(
    PREFIX + "/{path:path}",
    methods=["GET", "POST", "PUT", "DELETE"],
    summary="The mock IaaS (status, instances, health patterns, start failures)",
)
async def mock_iaas(path: str, request: Request, principal: Principal = Depends(tenant_admin)) -> Response:
    proxy: MockIaasProxy | None = getattr(request.app.state, "mock_iaas", None)
    if proxy is None:
        proxy = request.app.state.mock_iaas = MockIaasProxy(request.app.state.settings)
    return await proxy.forward(request, path, principal)
