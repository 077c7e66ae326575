"""The `TOKEN` in each member's payload: what lets an instance use its application's metadata.

A token names its member, application and tenant and carries an HMAC-SHA256 of them under a
platform secret kept in the state directory (`keys/metadata-token.key`, owner-only). Nothing
stores a token: the cloud controller derives it when it builds a member's payload, the metadata
service checks it by deriving it again. Whoever reads the log or the snapshots learns no
token; only the secret's holders (the cloud controller and the API, on the state directory)
can make one.

    stm1.<base64url of JSON [tenant, application, member]>.<base64url of the HMAC>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
PREFIX = "stm1."
KEY_FILE = Path("keys") / "metadata-token.key"
KEY_BYTES = 32


@dataclass(frozen=True)
class MemberClaim:
    tenant: str
    application_id: str
    member_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_key(state_dir: Path) -> bytes:
    """The platform secret, made on first use (owner-only file in an owner-only folder). Two
    processes racing to make it agree: the file is created exclusively, the loser reads it."""
    path = Path(state_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(KEY_BYTES))
        log.info("made the metadata token secret %s", path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o): made owner-only", path, mode)
        path.chmod(0o600)
    text = path.read_text().strip()
    if len(text) < 2 * KEY_BYTES:
        raise ValueError(
            f"{path}: the metadata token secret is truncated; remove it to make a new one "
            f"(tokens of running members then stop working)"
        )
    return bytes.fromhex(text)


class MemberTokens:
    """Makes and checks member tokens with one platform secret."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> MemberTokens:
        return cls(load_key(state_dir))

    def _mac(self, body: str) -> bytes:
        return hmac.new(self.key, body.encode(), hashlib.sha256).digest()

    def token(self, tenant: str, application_id: str, member_id: str) -> str:
        body = _b64(json.dumps([tenant, application_id, member_id], separators=(",", ":")).encode())
        return f"{PREFIX}{body}.{_b64(self._mac(body))}"

    def check(self, token: str) -> MemberClaim | None:
        """The claim of a genuine token; None for anything else (forged, altered, malformed)."""
        if not token.startswith(PREFIX):
            return None
        body, _, mac = token[len(PREFIX) :].partition(".")
        try:
            if not hmac.compare_digest(_unb64(mac), self._mac(body)):
                return None
            tenant, application_id, member_id = json.loads(_unb64(body))
        except (ValueError, TypeError):
            return None
        if not all(isinstance(v, str) and v for v in (tenant, application_id, member_id)):
            return None
        return MemberClaim(tenant, application_id, member_id)


def is_member_token(token: str) -> bool:
    return token.startswith(PREFIX)
