"""Who is calling: passwords (bcrypt), bearer tokens, roles, and the tenant of every request.

A login name is `user` in the super tenant or `user@tenantDomain` in another tenant (Stratos's
convention). Roles: the super tenant's admin manages tenants; a tenant's admin (the tenant's
`admin`, or a user with role `admin`) changes that tenant's resources; any other user reads them.
Tenants are definitions under the super tenant; users are definitions under their own tenant.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from typing import Literal

import bcrypt
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel

from infra.api.read_model import ReadModel
from infra.secrets import secret_box
from infra.settings import Settings
from schemas.envelope import SUPER_TENANT

log = logging.getLogger(__name__)

Role = Literal["admin", "user"]
ADMIN_ROLES = {"admin", "tenantadmin", "tenant-admin"}
"""User roles that make a user an admin of its tenant (Stratos's `admin`, and the plain words)."""
VERIFIED_TTL_SECONDS = 300.0
"""How long a checked (password, hash) pair is trusted without running bcrypt again."""


class Principal(BaseModel):
    username: str
    tenant: str
    role: Role

    @property
    def is_super_admin(self) -> bool:
        return self.tenant == SUPER_TENANT and self.role == "admin"


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def is_hashed(value: str) -> bool:
    return value.startswith(("$2a$", "$2b$", "$2y$")) and len(value) == 60


def split_login(login: str, known_tenant) -> tuple[str, str]:
    """`name@domain` -> (name, domain) when domain is a tenant; otherwise a super-tenant name."""
    name, at, domain = login.rpartition("@")
    if at and name and known_tenant(domain):
        return name, domain
    return login, SUPER_TENANT


class Identity:
    """Checks credentials against the bootstrap admin and the tenant and user definitions."""

    def __init__(self, settings: Settings, read_model: ReadModel, admin_password: str) -> None:
        self.settings = settings
        self.read_model = read_model
        self.admin_username = settings.admin_username
        self.admin_hash = hash_password(admin_password, settings.password_hash_rounds)
        self.tokens: dict[str, tuple[Principal, float]] = {}
        self.lock = threading.Lock()
        self.verified: dict[bytes, float] = {}
        self.cache_key = secrets.token_bytes(32)
        self.box = secret_box(settings)
        """Password hashes are sealed in the log like every secret: opened here, where checked."""

    def _digest(self, password: str, hashed: str) -> bytes:
        return hmac.new(self.cache_key, f"{hashed}\0{password}".encode(), hashlib.sha256).digest()

    def known(self, password: str, hashed: str) -> bool:
        """A (password, hash) pair bcrypt accepted within the TTL: remembered only as a digest
        keyed by a per-process secret, so a changed hash (new password) is checked again."""
        expires = self.verified.get(self._digest(password, hashed))
        return expires is not None and expires > time.monotonic()

    def verify(self, password: str, hashed: str) -> bool:
        """bcrypt, slow by design (run it off the event loop); a success is remembered."""
        try:
            ok = bcrypt.checkpw(password.encode(), hashed.encode())
        except ValueError:
            return False
        if ok:
            now = time.monotonic()
            with self.lock:
                self.verified = {d: t for d, t in self.verified.items() if t > now}
                self.verified[self._digest(password, hashed)] = now + VERIFIED_TTL_SECONDS
        return ok

    def candidate(self, login: str) -> tuple[Principal, str] | None:
        """Who `login` would be, and the password hash to check; None if no such active login."""
        name, tenant = split_login(login, lambda d: self.read_model.get(SUPER_TENANT, "tenant", d))
        if tenant == SUPER_TENANT and name == self.admin_username:
            return Principal(username=name, tenant=tenant, role="admin"), self.admin_hash
        if tenant != SUPER_TENANT:
            body = self.read_model.get(SUPER_TENANT, "tenant", tenant).definition  # type: ignore[union-attr]
            if not body.get("active", True):
                return None
            if name == body.get("admin"):
                return Principal(username=login, tenant=tenant, role="admin"), self.box.open(body.get("adminPassword")) or ""
        user = self.read_model.get(tenant, "user", name)
        if user is None:
            return None
        role: Role = "admin" if (user.definition.get("role") or "").lower() in ADMIN_ROLES else "user"  # type: ignore[attr-defined]
        return Principal(username=login, tenant=tenant, role=role), self.box.open(user.definition.get("credential")) or ""  # type: ignore[attr-defined]

    def authenticate(self, login: str, password: str) -> Principal | None:
        found = self.candidate(login)
        if found is None:
            return None
        principal, hashed = found
        return principal if self.known(password, hashed) or self.verify(password, hashed) else None

    def issue_token(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        with self.lock:
            now = time.monotonic()
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
            self.tokens[token] = (principal, now + self.settings.token_ttl_seconds)
        return token

    def principal_for_token(self, token: str) -> Principal | None:
        with self.lock:
            found = self.tokens.get(token)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]


basic_scheme = HTTPBasic(auto_error=False, description="user, or user@tenantDomain")
bearer_scheme = HTTPBearer(auto_error=False, description="a token from POST /api/token")


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Basic realm="stratos"'})


async def current_principal(request: Request,
                            basic: HTTPBasicCredentials | None = Depends(basic_scheme),
                            bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> Principal:
    """On the event loop (no worker-thread hop per request); only a bcrypt check leaves it."""
    identity: Identity = request.app.state.identity
    if bearer is not None:
        principal = identity.principal_for_token(bearer.credentials)
        if principal is None:
            raise unauthorized("the bearer token is unknown or expired")
        return principal
    if basic is None:
        raise unauthorized("credentials required: HTTP basic auth or a bearer token")
    found = identity.candidate(basic.username)
    if found is None:
        raise unauthorized("wrong user name or password")
    principal, hashed = found
    if not (identity.known(basic.password, hashed)
            or await run_in_threadpool(identity.verify, basic.password, hashed)):
        raise unauthorized("wrong user name or password")
    return principal


async def tenant_admin(principal: Principal = Depends(current_principal)) -> Principal:
    """Changes to a tenant's resources need its admin."""
    if principal.role != "admin":
        raise HTTPException(403, f"user {principal.username!r} may read but not change the "
                                 f"resources of tenant {principal.tenant!r}")
    return principal


async def super_admin(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.is_super_admin:
        raise HTTPException(403, f"only the super tenant's admin manages tenants "
                                 f"(user {principal.username!r} of tenant {principal.tenant!r})")
    return principal
