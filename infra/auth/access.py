"""Who may do what: principals, bearer tokens and their revocation, and the rule that says
which commands a user may send. The REST API and the node (for commands Kafka clients
produce with a token) both call these, so a command is allowed on Kafka exactly when the
REST call it mirrors is.

Tokens are signed, not stored: `st1.<claims>.<mac>` with a key derived from the platform
secret, so every API process and every node can check a token another one issued. Each
carries the user's role and a fingerprint of the password hash it was issued against, and is
accepted only while the user's current state (folded from the log by the reader's read model)
still matches: removing the user, changing its password or role, or deactivating its tenant
are events on the log, and every process that follows the log stops accepting the token as
soon as it has applied them (well within a second). Tokens also expire
(`STRATOS_TOKEN_TTL_SECONDS`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Literal

from pydantic import BaseModel

from infra.auth.signing import derive
from schemas.commands import DEFINITION_COMMANDS
from schemas.envelope import SUPER_TENANT
from schemas.ids import AggregateRef

Role = Literal["admin", "user"]
ADMIN_ROLES = {"admin", "tenantadmin", "tenant-admin"}
"""User roles that make a user an admin of its tenant (Stratos's `admin`, and the plain words)."""
TOKEN_PREFIX = "st1"
DEMO_PASSWORD = "admin"
"""The bootstrap admin's password in the embedded demo, when STRATOS_ADMIN_PASSWORD is unset."""
SUPER_TENANT_KINDS = {"tenant"}
"""Definitions kept under the super tenant that only its admin manages."""
SECRET_FIELDS = {"user": "credential", "tenant": "adminPassword"}
"""Definition fields holding a password hash (the REST API hashes what it is given)."""


class Principal(BaseModel):
    username: str
    tenant: str
    role: Role

    @property
    def is_super_admin(self) -> bool:
        return self.tenant == SUPER_TENANT and self.role == "admin"


class TokenRefused(Exception):
    """A token that is malformed, forged, expired or revoked; the message says which."""


def split_login(login: str, known_tenant) -> tuple[str, str]:
    """`name@domain` -> (name, domain) when domain is a tenant; otherwise a super-tenant name."""
    name, at, domain = login.rpartition("@")
    if at and name and known_tenant(domain):
        return name, domain
    return login, SUPER_TENANT


def role_of(definition: dict) -> Role:
    return "admin" if (definition.get("role") or "").lower() in ADMIN_ROLES else "user"


def _clear(value):
    return value


def candidate(
    read_model, admin_username: str, admin_hash: str, login: str, open_secret=_clear
) -> tuple[Principal, str] | None:
    """Who `login` is now, and the password hash to check (`open_secret` opens it: the log
    holds it sealed, infra/auth/secrets.py); None if no such active login."""
    name, tenant = split_login(login, lambda d: read_model.get(SUPER_TENANT, "tenant", d))
    if tenant == SUPER_TENANT and name == admin_username:
        return Principal(username=name, tenant=tenant, role="admin"), admin_hash
    if tenant != SUPER_TENANT:
        body = read_model.get(SUPER_TENANT, "tenant", tenant).definition
        if not body.get("active", True):
            return None
        if name == body.get("admin"):
            return Principal(username=login, tenant=tenant, role="admin"), open_secret(body.get("adminPassword")) or ""
    user = read_model.get(tenant, "user", name)
    if user is None:
        return None
    return (
        Principal(username=login, tenant=tenant, role=role_of(user.definition)),
        open_secret(user.definition.get("credential")) or "",
    )


# --- tokens ------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """Issues and checks tokens against a read model of users and tenants."""

    def __init__(
        self,
        secret: bytes,
        read_model,
        admin_username: str,
        admin_password: str | None,
        ttl_seconds: float,
        clock=time.time,
        open_secret=_clear,
    ) -> None:
        self.key = derive(secret, "bearer-token")
        self.read_model = read_model
        self.open_secret = open_secret
        self.admin_username = admin_username
        self.admin_fingerprint = (
            None if admin_password is None else self._mac(f"bootstrap\0{admin_username}\0{admin_password}")
        )
        """None where the bootstrap admin's password is not given (a node): its tokens are then
        checked by their mac (keyed from the platform secret: only an API that checked the
        password issued one) and expiry; a changed password revokes them on the API processes."""
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.admin_hash: str | None = None
        """The bootstrap admin's hash in this process (bcrypt salts differ between processes,
        so its fingerprint is of the password itself)."""

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self.key, text.encode(), hashlib.sha256).digest()[:18])

    def is_bootstrap_admin(self, principal: Principal) -> bool:
        return principal.tenant == SUPER_TENANT and principal.username == self.admin_username

    def fingerprint(self, principal: Principal, hashed: str) -> str:
        if self.is_bootstrap_admin(principal):
            if self.admin_fingerprint is None:
                raise ValueError("the bootstrap admin's password is not known here: no token is issued for it")
            return self.admin_fingerprint
        return self._mac(f"hash\0{hashed}")

    def issue(self, principal: Principal, hashed: str) -> str:
        now = self.clock()
        claims = {
            "sub": principal.username,
            "ten": principal.tenant,
            "rol": principal.role,
            "fp": self.fingerprint(principal, hashed),
            "iat": round(now, 3),
            "exp": round(now + self.ttl_seconds, 3),
            "jti": secrets.token_urlsafe(9),
        }
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}.{body}.{self._mac(body)}"

    def claims(self, token: str) -> dict:
        """The claims of a token this platform signed and that has not expired."""
        prefix, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        if prefix != TOKEN_PREFIX or not body or not mac:
            raise TokenRefused("the bearer token is malformed")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise TokenRefused("the bearer token is not one this platform issued")
        try:
            claims = json.loads(_unb64(body))
            expires = float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            raise TokenRefused("the bearer token is malformed") from None
        if expires <= self.clock():
            raise TokenRefused("the bearer token has expired: ask POST /api/token for a new one")
        return claims

    def principal(self, token: str) -> Principal:
        """Who holds this token now; raises TokenRefused naming why it is no longer good."""
        claims = self.claims(token)
        found = candidate(self.read_model, self.admin_username, self.admin_hash or "", claims["sub"], self.open_secret)
        if found is None or found[0].tenant != claims["ten"]:
            raise TokenRefused(
                f"the bearer token was revoked: user {claims['sub']!r} was removed or its tenant deactivated"
            )
        principal, hashed = found
        if principal.role != claims["rol"]:
            raise TokenRefused(f"the bearer token was revoked: the role of {claims['sub']!r} changed")
        if self.is_bootstrap_admin(principal) and self.admin_fingerprint is None:
            return principal
        if not hmac.compare_digest(self.fingerprint(principal, hashed), str(claims["fp"])):
            raise TokenRefused(f"the bearer token was revoked: the password of {claims['sub']!r} changed")
        return principal


# --- what a user may send ----------------------------------------------------------------------
SIGNUP_COMMANDS = {"AddApplicationSignup", "RemoveApplicationSignup", "AddDomainMappings", "RemoveDomainMappings"}
"""Sent by a tenant's admin for its own tenant (`tenant` field), to its own or to a super-tenant
(multi-tenant) application."""
USER_COMMANDS = (
    {c.__name__ for c in DEFINITION_COMMANDS} | {"DeployApplication", "UndeployApplication"} | SIGNUP_COMMANDS
)
"""Commands the REST API sends for a user; every other command is a fact or a reaction that
only the platform's parts send."""


def is_hash(value) -> bool:
    return isinstance(value, str) and value.startswith(("$2a$", "$2b$", "$2y$")) and len(value) == 60


def command_denied(principal: Principal, ref: AggregateRef, command) -> tuple[int, str] | None:
    """Why `principal` may not send `command` to the aggregate `ref` (HTTP code, reason), or
    None. The rules of the REST routes: a tenant's admin changes its own tenant's resources,
    the super tenant's admin manages tenants, everyone else reads."""
    kind = command.type
    if kind not in USER_COMMANDS:
        return 403, f"{kind} is sent by the platform's own parts only"
    if principal.role != "admin":
        return 403, (
            f"user {principal.username!r} may read but not change the resources of tenant {principal.tenant!r}"
        )
    if kind in SIGNUP_COMMANDS:
        if command.tenant != principal.tenant or ref.tenant not in (principal.tenant, SUPER_TENANT):
            return 403, (
                f"user {principal.username!r} of tenant {principal.tenant!r} may sign up "
                f"only its own tenant (not {command.tenant!r} on {ref.tenant!r})"
            )
        return None
    if ref.kind in SUPER_TENANT_KINDS:
        if not principal.is_super_admin:
            return 403, (
                f"only the super tenant's admin manages {ref.kind}s (user "
                f"{principal.username!r} of tenant {principal.tenant!r})"
            )
    elif ref.tenant != principal.tenant:
        return 403, (
            f"user {principal.username!r} of tenant {principal.tenant!r} may not change "
            f"the resources of tenant {ref.tenant!r}"
        )
    field = SECRET_FIELDS.get(ref.kind)
    body = getattr(command, "definition", None)
    if field and body is not None and not is_hash(getattr(body, field, None)):
        return 400, f"definition.{field}: a bcrypt hash is expected on Kafka (the REST API hashes passwords)"
    return None
