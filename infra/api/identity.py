"""Who is calling: passwords (bcrypt), bearer tokens, roles, and the tenant of every request.

A login name is `user` in the super tenant or `user@tenantDomain` in another tenant (Stratos's
convention). Roles: the super tenant's admin manages tenants; a tenant's admin (the tenant's
`admin`, or a user with role `admin`) changes that tenant's resources; any other user reads them.
Tenants are definitions under the super tenant; users are definitions under their own tenant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque

import bcrypt
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from infra.api.read_model import ReadModel
from infra.auth.access import Principal, TokenRefused, Tokens, candidate
from infra.auth.secrets import SecretError, secret_box
from infra.auth.signing import platform_secret
from infra.settings import Settings

log = logging.getLogger(__name__)

VERIFIED_TTL_SECONDS = 300.0
"""How long a checked (password, hash) pair is trusted without running bcrypt again."""


MAX_PASSWORD_BYTES = 72
"""bcrypt reads no further than 72 bytes (and bcrypt 5 refuses longer input): a longer password
is refused where it is set, with its field named, rather than cut silently."""


def hash_password(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def is_hashed(value: str) -> bool:
    return value.startswith(("$2a$", "$2b$", "$2y$")) and len(value) == 60


class LoginThrottle:
    """Failed logins counted per user name from one client address, and per address, over a
    sliding window: past `limit` failures either one is refused with 429 until its oldest
    failure leaves the window (a correct password does not get through meanwhile: that is the
    point). Never per user name alone: failing someone's logins from one address must not lock
    them out of theirs from another."""

    def __init__(self, limit: int, window_seconds: float, clock=time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window_seconds, clock
        self.failures: dict[tuple[str, ...], deque[float]] = {}
        self.lock = threading.Lock()

    def _recent(self, key: tuple[str, ...], now: float) -> deque[float]:
        found = self.failures.get(key)
        while found and found[0] <= now - self.window:
            found.popleft()
        if found is not None and not found:
            del self.failures[key]
            return deque()
        return found if found is not None else deque()

    @staticmethod
    def _keys(login: str, address: str) -> tuple[tuple[str, ...], ...]:
        return (("login", login, address), ("address", address))

    def retry_after(self, login: str, address: str) -> float | None:
        """Seconds until `login` from `address` may try again, or None when it may now."""
        now = self.clock()
        with self.lock:
            waits = [
                found[0] + self.window - now
                for key in self._keys(login, address)
                if len(found := self._recent(key, now)) >= self.limit
            ]
        return max(waits) if waits else None

    def failed(self, login: str, address: str) -> None:
        now = self.clock()
        with self.lock:
            for key in self._keys(login, address):
                self.failures.setdefault(key, self._recent(key, now)).append(now)


class Identity:
    """Checks credentials against the bootstrap admin and the tenant and user definitions,
    issues tokens and checks them (`infra.auth.access.Tokens`: signed, revocable, expiring)."""

    def __init__(self, settings: Settings, read_model: ReadModel, admin_password: str) -> None:
        self.settings = settings
        self.read_model = read_model
        self.admin_username = settings.admin_username
        self.admin_hash = hash_password(admin_password, settings.password_hash_rounds)
        self.box = secret_box(settings)
        """Password hashes are sealed in the log like every secret: opened here, where checked."""
        self.tokens = Tokens(
            platform_secret(settings),
            read_model,
            settings.admin_username,
            admin_password,
            settings.token_ttl_seconds,
            open_secret=self.open_hash,
        )
        self.tokens.admin_hash = self.admin_hash
        self.throttle = LoginThrottle(settings.login_failures, settings.login_lockout_seconds)
        self.lock = threading.Lock()
        self.verified: dict[bytes, float] = {}
        self.cache_key = secrets.token_bytes(32)

    def open_hash(self, sealed: str | None) -> str | None:
        """A stored password hash, opened; 503 naming the key when this process lacks the key
        that sealed it (a configuration fault of the server, not the caller's wrong password)."""
        try:
            return self.box.open(sealed)
        except SecretError as exc:
            log.error("a password hash cannot be opened: %s", exc)
            raise HTTPException(
                503,
                f"this API process cannot check passwords: {exc} (STRATOS_SECRET_KEY must hold "
                "the key that sealed them: keep old keys after a rotation)",
            ) from None

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
        return candidate(self.read_model, self.admin_username, self.admin_hash, login, self.open_hash)

    def check_throttle(self, login: str, address: str) -> None:
        if (wait := self.throttle.retry_after(login, address)) is not None:
            raise HTTPException(
                429,
                f"too many failed logins for {login!r} from {address}: try again in {int(wait) + 1} s",
                headers={"Retry-After": str(int(wait) + 1)},
            )

    def authenticate(self, login: str, password: str, address: str = "") -> Principal | None:
        """The principal for these credentials, or None (counted as a failure); raises 429 while
        this user name or address has failed too often."""
        self.check_throttle(login, address)
        found = self.candidate(login)
        if found is not None:
            principal, hashed = found
            if self.known(password, hashed) or self.verify(password, hashed):
                return principal
        self.throttle.failed(login, address)
        return None

    def issue_token(self, principal: Principal) -> str:
        found = self.candidate(principal.username)
        return self.tokens.issue(principal, found[1] if found else "")

    def principal_for_token(self, token: str) -> Principal | None:
        try:
            return self.tokens.principal(token)
        except TokenRefused:
            return None

    def caller_now(self, authorization: str) -> Principal | str:
        """The caller of a long request (the console stream) checked again: its principal, or
        why it is no longer let in (token expired or revoked, user removed, password changed)."""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            try:
                return self.tokens.principal(value.strip())
            except TokenRefused as exc:
                return str(exc)
        try:
            login, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except ValueError:
            return "credentials required: HTTP basic auth or a bearer token"
        found = self.candidate(login)
        if found is None or not (self.known(password, found[1]) or self.verify(password, found[1])):
            return f"user {login!r} was removed, its password changed or its tenant was deactivated"
        return found[0]

    def check_token(self, token: str) -> Principal:
        """The token's principal now; raises 401 naming why it is refused (expired, revoked)."""
        try:
            return self.tokens.principal(token)
        except TokenRefused as exc:
            raise unauthorized(str(exc)) from None


basic_scheme = HTTPBasic(auto_error=False, description="user, or user@tenantDomain")
bearer_scheme = HTTPBearer(auto_error=False, description="a token from POST /api/token")


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Basic realm="stratos"'})


async def current_principal(
    request: Request,
    basic: HTTPBasicCredentials | None = Depends(basic_scheme),
    bearer: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
) -> Principal:
    """On the event loop (no worker-thread hop per request); only a bcrypt check leaves it."""
    identity: Identity = request.app.state.identity
    if bearer is not None:
        return identity.check_token(bearer.credentials)
    if basic is None:
        raise unauthorized("credentials required: HTTP basic auth or a bearer token")
    address = client_address(request)
    identity.check_throttle(basic.username, address)
    found = identity.candidate(basic.username)
    if found is not None:
        principal, hashed = found
        if identity.known(basic.password, hashed) or await run_in_threadpool(identity.verify, basic.password, hashed):
            return principal
    identity.throttle.failed(basic.username, address)
    raise unauthorized("wrong user name or password")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def tenant_admin(principal: Principal = Depends(current_principal)) -> Principal:
    """Changes to a tenant's resources need its admin."""
    if principal.role != "admin":
        raise HTTPException(
            403, f"user {principal.username!r} may read but not change the resources of tenant {principal.tenant!r}"
        )
    return principal


async def super_admin(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.is_super_admin:
        raise HTTPException(
            403,
            f"only the super tenant's admin manages tenants "
            f"(user {principal.username!r} of tenant {principal.tenant!r})",
        )
    return principal
