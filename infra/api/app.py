"""The REST API's application factory: routers, error answers, and what it runs on.

Every error is a ResponseMessageBean (`{"status": "error", "message": ...}`) with the code
Stratos used: invalid JSON and bodies that break a rule answer 400 naming the field path.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from aiokafka.errors import KafkaError as AIOKafkaError
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBasicCredentials
from fastapi.staticfiles import StaticFiles
from kafka.errors import KafkaError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from infra.api.console.routes import VENDOR as CONSOLE_VENDOR
from infra.api.console.routes import router as console_router
from infra.api.definitions import definition_routers
from infra.api.identity import Identity, Principal, basic_scheme, client_address, current_principal, unauthorized
from infra.api.logs import router as logs_router
from infra.api.metadata import router as metadata_router
from infra.api.mock_iaas import router as mock_iaas_router
from infra.api.read_model import ReadModel
from infra.api.replay import router as replay_router
from infra.api.responses import ERROR_RESPONSES, MaskedJSONResponse, Writer, answer
from infra.api.runtime import router as runtime_router
from infra.api.signups import router as signups_router
from infra.api.usage import router as usage_router
from infra.auth.access import DEMO_PASSWORD
from infra.auth.secrets import secret_box
from infra.log.commands_client import CommandClient
from infra.observe.follower import stop_together
from infra.settings import Settings

log = logging.getLogger(__name__)
WRITE_THREADS = 256
DOCS_SITE = Path(__file__).resolve().parents[2] / "site"
"""The documentation site `make docs` builds (served at /docs, the console's "Docs" link)."""


class ConfigurationError(RuntimeError):
    """The API cannot start with these settings (the message says which one to set)."""


def admin_password(settings: Settings, demo: bool) -> str:
    if settings.admin_password is not None:
        return settings.admin_password.get_secret_value()
    if not demo:
        raise ConfigurationError(
            "STRATOS_ADMIN_PASSWORD is not set: the API needs the bootstrap "
            f"admin's password (user {settings.admin_username!r})"
        )
    log.warning(
        "embedded demo: bootstrap admin %r has the password %r; set STRATOS_ADMIN_PASSWORD for anything else",
        settings.admin_username,
        DEMO_PASSWORD,
    )
    return DEMO_PASSWORD


def field_errors(errors) -> str:
    """pydantic errors as `field.path: reason`, the body's own paths (without FastAPI's `body`)."""
    parts = []
    for err in list(errors)[:5]:
        loc = list(err.get("loc", ()))
        if loc and loc[0] == "body":
            loc = loc[1:]
        where = ".".join(str(p) for p in loc) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


class TokenRequest(BaseModel):
    username: str
    password: str


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: float


def _token_router() -> APIRouter:
    router = APIRouter(tags=["Identity"], responses=ERROR_RESPONSES)

    @router.post(
        "/token",
        response_model=Token,
        summary="A bearer token, for basic credentials or a JSON {username, password}; "
        "429 after too many failed logins for the user or from the address",
    )
    def token(
        request: Request, body: TokenRequest | None = None, basic: HTTPBasicCredentials | None = Depends(basic_scheme)
    ) -> Token:
        identity: Identity = request.app.state.identity
        login = (body.username, body.password) if body else (basic.username, basic.password) if basic else None
        if login is None:
            raise unauthorized("credentials required: HTTP basic auth or a JSON body")
        principal = identity.authenticate(*login, address=client_address(request))
        if principal is None:
            raise unauthorized("wrong user name or password")
        return Token(
            access_token=identity.issue_token(principal), expires_in=request.app.state.settings.token_ttl_seconds
        )

    @router.get("/whoami", summary="The caller's user name, tenant and role")
    def whoami(principal: Principal = Depends(current_principal)) -> dict:
        return {
            "username": principal.username,
            "tenant": principal.tenant,
            "role": principal.role,
            "superAdmin": principal.is_super_admin,
        }

    return router


def create_app(
    settings: Settings,
    *,
    demo: bool = False,
    read_model: ReadModel | None = None,
    commands: CommandClient | None = None,
) -> FastAPI:
    """The API on `settings`' broker. Pass a running read model / command client to share them;
    otherwise the app starts its own on startup and closes them on shutdown."""
    password = admin_password(settings, demo)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # what the app stops on shutdown, all at once: its own readers, then the routers' ones
        app.state.stops = []
        model = read_model
        if model is None:
            model = await run_in_threadpool(lambda: ReadModel(settings).start())
            app.state.stops.append(model.stop)
        client = commands
        if client is None:
            client = await run_in_threadpool(CommandClient, settings)
            app.state.stops.append(client.close)
        app.state.settings = settings
        app.state.read_model = model
        app.state.commands = client
        app.state.writer = Writer(settings, client, model)
        app.state.secrets = secret_box(settings)
        app.state.identity = await run_in_threadpool(Identity, settings, model, password)
        app.state.runtime_views = {}
        app.state.runtime_build = asyncio.Lock()
        # the state read so far is long-lived: keep it out of the cyclic collector, whose full
        # passes over it (~100 ms with 1,000 members) otherwise show as latency spikes
        gc.freeze()
        # a sync route's write (sign-ups) holds a worker thread while it waits: allow many at once
        anyio.to_thread.current_default_thread_limiter().total_tokens = WRITE_THREADS
        try:
            yield
        finally:
            if (proxy := getattr(app.state, "mock_iaas", None)) is not None:
                await proxy.close()
            await run_in_threadpool(stop_together, *app.state.stops)

    app = FastAPI(
        title="Stratos-ES",
        version="4.1",
        lifespan=lifespan,
        description="Apache Stratos 4.1's REST API on an event-sourced control plane.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        default_response_class=MaskedJSONResponse,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return answer(400, field_errors(exc.errors()), "error")

    @app.exception_handler(ValidationError)
    async def invalid_value(request: Request, exc: ValidationError):
        return answer(400, field_errors(exc.errors(include_url=False)), "error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return answer(exc.status_code, str(exc.detail), "error", headers=getattr(exc, "headers", None))

    async def broker_out_of_reach(request: Request, exc: Exception):
        """A request that had to read the log while the broker could not be reached (`stratos
        status`'s heartbeats, the dead letters): 503, as Stratos answers when a backend is down."""
        log.warning("%s %s: Kafka out of reach: %s", request.method, request.url.path, exc)
        return answer(503, f"the platform's Kafka is out of reach ({type(exc).__name__}: {exc})", "error")

    app.add_exception_handler(KafkaError, broker_out_of_reach)
    app.add_exception_handler(AIOKafkaError, broker_out_of_reach)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return answer(500, "internal error; the server log has the details", "error")

    # the runtime routes first: polled most, they are matched before the ~50 definition routes
    for router in (
        [runtime_router]
        + definition_routers()
        + [signups_router, replay_router, _token_router(), logs_router, usage_router]
    ):
        app.include_router(router, prefix="/api")
    app.include_router(mock_iaas_router)
    app.include_router(console_router)
    if CONSOLE_VENDOR.is_dir():  # the console's editor (make console-assets); without, a text area
        app.mount("/console/vendor", StaticFiles(directory=CONSOLE_VENDOR), name="console-vendor")
    app.include_router(metadata_router)  # Stratos's /metadata/api, beside /api
    if DOCS_SITE.is_dir():  # only in a checkout where `make docs` ran: static pages, no login
        app.mount("/docs", StaticFiles(directory=DOCS_SITE, html=True), name="docs")
    return app
