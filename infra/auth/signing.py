"""Who sent a record: the one rule every producer signs with and every checker verifies.

Three kinds of sender, named by the `stratos-signer` header:

- `platform`: the platform's own parts (API, node, reactor, cloud controller, health worker,
  load balancer), which hold the platform secret (`STRATOS_PLATFORM_SECRET`, or the file
  `platform.secret` that the first part to need it creates in the state directory, owner-only);
- `member/<tenant>/<cluster>/<member>` (each part %-quoted): an instance, whose key the cloud
  controller derived from the platform secret and exactly that tenant, cluster and member and
  gave it in its payload. A member can sign only records about itself: the key of any other
  member, cluster or tenant is another key;
- a Kafka client's command carries no signature but a tenant user's bearer token in the
  `stratos-token` header (the REST API's tokens, `infra.auth.access`).

The signature (`stratos-signature`) is HMAC-SHA256 over the topic kind, the key and the value
bytes, so it is checked before the value is parsed and a record signed for one topic or key is
not valid on another. Headers other than these are not covered: the platform writes whole
envelopes, so the CloudEvents headers are never what a record's meaning rests on.

Rotation: the platform signs with its current secret and names it in `stratos-key-id` (a
fingerprint, `key_id`); earlier secrets stay in the keyring (`STRATOS_PLATFORM_SECRET_PREVIOUS`,
or the lines after the first of `platform.secret`) so that history signed with them still
verifies. A record without a key id (signed before key ids existed) is tried against each.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

SIGNER = "stratos-signer"
SIGNATURE = "stratos-signature"
TOKEN = "stratos-token"
KEY_ID = "stratos-key-id"
PLATFORM = "platform"
MEMBER = "member"
SECRET_FILE = "platform.secret"
MEMBER_KEY_PURPOSE = "member-signing-key"
KEY_ID_PURPOSE = "key-id"


class Unauthenticated(ValueError):
    """A record whose sender cannot be established, or who may not say what it says."""


# --- keys --------------------------------------------------------------------------------------
def derive(secret: bytes, purpose: str, *parts: str) -> bytes:
    """A key for one purpose and one holder: HMAC-SHA256 of the platform secret over the
    purpose and the parts (each length-prefixed, so no two part lists give the same input)."""
    message = b"".join(struct.pack(">I", len(p)) + p for p in (s.encode() for s in (purpose, *parts)))
    return hmac.new(secret, message, hashlib.sha256).digest()


_SECRETS: dict[str, list[bytes]] = {}
_SECRETS_LOCK = threading.Lock()


def platform_secret(settings) -> bytes:
    """The secret the platform signs with now: the first of `platform_secrets`."""
    return platform_secrets(settings)[0]


def platform_secrets(settings) -> list[bytes]:
    """The platform's keyring, current secret first: `STRATOS_PLATFORM_SECRET` and
    `STRATOS_PLATFORM_SECRET_PREVIOUS` (comma-separated, newest first), else the lines of the
    state directory's `platform.secret` (created on first use, mode 0600, by an atomic link so
    that parts starting together agree)."""
    previous = [
        s.strip().encode()
        for s in (
            settings.platform_secret_previous.get_secret_value() if settings.platform_secret_previous else ""
        ).split(",")
        if s.strip()
    ]
    if settings.platform_secret is not None:
        return [settings.platform_secret.get_secret_value().encode(), *previous]
    path = (Path(settings.state_dir) / SECRET_FILE).absolute()
    with _SECRETS_LOCK:
        if (known := _SECRETS.get(str(path))) is None:
            known = _SECRETS[str(path)] = _read_or_create(path)
    return [*known, *previous]


def key_id(secret: bytes) -> str:
    """A platform secret's public name (`stratos-key-id`): 8 hex digits derived from it."""
    return derive(secret, KEY_ID_PURPOSE).hex()[:8]


def _read_or_create(path: Path) -> list[bytes]:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
        try:
            os.link(temporary, path)  # fails if another part created it first: then use theirs
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        log.info("platform secret created in %s (owner-only)", path)
    mode = path.stat().st_mode & 0o077
    if mode:
        raise PermissionError(f"{path} is readable by others (mode {oct(path.stat().st_mode & 0o777)}): chmod 600 it")
    keyring = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not keyring or any(len(secret) < 32 for secret in keyring):
        raise ValueError(f"{path}: a platform secret (one per line, current first) is shorter than 32 characters")
    return [secret.encode() for secret in keyring]


def member_signer_name(tenant: str, cluster_id: str, member_id: str) -> str:
    return "/".join((MEMBER, *(quote(p, safe="") for p in (tenant, cluster_id, member_id))))


def member_key(secret: bytes, tenant: str, cluster_id: str, member_id: str) -> bytes:
    """The signing key the cloud controller puts in a member's payload."""
    return derive(secret, MEMBER_KEY_PURPOSE, tenant, cluster_id, member_id)


# --- signing -----------------------------------------------------------------------------------
_PADS: dict[bytes, tuple] = {}


def _pads(key: bytes) -> tuple:
    """HMAC-SHA256's inner and outer hashes after the key block (RFC 2104), computed once per
    key and copied per record: cheaper than keying an HMAC object per record."""
    pads = _PADS.get(key)
    if pads is None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        pads = (hashlib.sha256(bytes(b ^ 0x36 for b in block)), hashlib.sha256(bytes(b ^ 0x5C for b in block)))
        if len(_PADS) > 100_000:
            _PADS.clear()
        _PADS[key] = pads
    return pads


def signature(key: bytes, topic_kind: str, record_key: bytes | None, value: bytes | None) -> bytes:
    """HMAC-SHA256 over topic kind, key and value, hex: the one signature of every record."""
    inner_pad, outer_pad = _pads(key)
    record_key = record_key or b""
    inner = inner_pad.copy()
    inner.update(topic_kind.encode() + struct.pack(">I", len(record_key)) + record_key)
    inner.update(value or b"")
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.hexdigest().encode()


@dataclass(frozen=True)
class Signer:
    """A sender's name and key: `headers` are what it adds to each record it produces."""

    name: str
    key: bytes = field(repr=False)
    key_id: str | None = None
    """The platform secret's id (`stratos-key-id`), for the platform's signer."""

    def headers(self, topic_kind: str, record_key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        found = [(SIGNER, self.name.encode()), (SIGNATURE, signature(self.key, topic_kind, record_key, value))]
        return found + [(KEY_ID, self.key_id.encode())] if self.key_id else found

    @classmethod
    def platform(cls, settings) -> Signer:
        secret = platform_secret(settings)
        return cls(PLATFORM, secret, key_id(secret))

    @classmethod
    def member(cls, tenant: str, cluster_id: str, member_id: str, key_hex: str) -> Signer:
        """An instance's signer, from the key its payload carries (hex)."""
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            raise ValueError("signing key: not hexadecimal") from None
        return cls(member_signer_name(tenant, cluster_id, member_id), key)

    @classmethod
    def for_instance(cls, metadata: dict[str, str]) -> Signer | None:
        """The signer of an instance from its node's metadata (what the cloud controller
        tagged it with); None when it has no key (a node made before keys existed)."""
        key = metadata.get("signingKey")
        if not key:
            return None
        return cls.member(metadata["tenant"], metadata["clusterId"], metadata["memberId"], key)


PAYLOAD_SECRETS = {"signingKey", "kafkaPassword"}
"""Node metadata only the instance itself may see (never in a listing of nodes)."""


def public_metadata(metadata: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in metadata.items() if k not in PAYLOAD_SECRETS}


def member_credentials(
    secret: bytes, tenant: str, cluster_id: str, member_id: str, kafka: tuple[str, str] | None = None
) -> dict[str, str]:
    """What a member's payload gets so that it can sign: its key, hex (tag `signingKey`); on a
    secure broker also its tenant's instance principal and password (`kafka`: tags
    `kafkaUsername`, `kafkaPassword`), which may read only that tenant's instance topic."""
    found = {"signingKey": member_key(secret, tenant, cluster_id, member_id).hex()}
    if kafka is not None:
        found["kafkaUsername"], found["kafkaPassword"] = kafka
    return found


# --- verifying ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sender:
    """Who a record is from, as its headers prove: `platform`, `member` (with the tenant,
    cluster and member its key was made for), `token` (a bearer token to check) or `anonymous`."""

    kind: str
    tenant: str | None = None
    cluster_id: str | None = None
    member_id: str | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def trusted(self) -> bool:
        return self.kind == PLATFORM

    def headers(self) -> list[tuple[str, bytes]]:
        """What of its record's headers can be sent again as they were: a client's token (a
        signature covers the original bytes only, which a refused command is not kept as)."""
        return [(TOKEN, self.token.encode())] if self.token else []


ANONYMOUS = Sender("anonymous")
MEMBER_RECORDS = {
    "instance-status": {"InstanceStarted", "InstanceActivated", "InstanceMaintenanceMode", "InstanceReadyToShutdown"},
    "health": {"HealthStat", "MemberHealth"},
    "logs": {"LogBatch"},
}
"""What a member may say, per topic: its own status, its own health samples and its own lines."""


def header_map(headers) -> dict[str, bytes]:
    """Only this module's headers of a record (kafka-python and aiokafka give (str, bytes) pairs)."""
    found = {}
    for name, value in headers or ():
        if name in _OURS:
            found[_OURS[name]] = value if isinstance(value, bytes) else str(value or "").encode()
    return found


_PLATFORM_NAME = PLATFORM.encode()
_OURS = {n: n for n in (SIGNER, SIGNATURE, TOKEN, KEY_ID)} | {n.encode(): n for n in (SIGNER, SIGNATURE, TOKEN, KEY_ID)}


class Verifier:
    """Checks records against the platform's keyring; one per reading part (keys are cached)."""

    def __init__(self, secret: bytes, previous: list[bytes] | tuple[bytes, ...] = ()) -> None:
        self.secret = secret
        self.keyring: dict[str, bytes] = {}
        """key id -> platform secret, the current one first."""
        for known in (secret, *previous):
            self.keyring.setdefault(key_id(known), known)
        self.member_keys: dict[tuple[bytes, bytes], tuple[bytes, Sender]] = {}

    @classmethod
    def of(cls, settings) -> Verifier:
        current, *previous = platform_secrets(settings)
        return cls(current, previous)

    def sender(self, topic_kind: str, record_key: bytes | None, value: bytes | None, headers) -> Sender:
        """Who signed this record (checked on the raw bytes, before any parsing); raises
        Unauthenticated naming why when the signature is there but does not verify."""
        found = header_map(headers)
        name, sig = found.get(SIGNER), found.get(SIGNATURE)
        if name is None and sig is None:
            token = found.get(TOKEN)
            return Sender("token", token=token.decode("utf-8", "replace")) if token else ANONYMOUS
        if not name or not sig:
            raise Unauthenticated(f"record has {SIGNER if name else SIGNATURE} but not {SIGNATURE if name else SIGNER}")
        for secret in self._secrets(found.get(KEY_ID)):
            key, sender = (secret, Sender(PLATFORM)) if name == PLATFORM.encode() else self._member(name, secret)
            if hmac.compare_digest(sig, signature(key, topic_kind, record_key, value)):
                return sender
        raise Unauthenticated(
            f"signature of {name.decode('utf-8', 'replace')!r} does not verify for "
            f"this {topic_kind} record (wrong key, or altered key or value)"
        )

    def platform(self, topic_kind: str, record_key: bytes | None, value: bytes | None, headers) -> None:
        """Raises Unauthenticated unless the platform signed this record: what a record of the
        platform's own topics (events, snapshots, read-side checkpoints) must prove to count.
        A member's key is not enough: it is given to instances."""
        found = header_map(headers)
        named, signed = found.get(KEY_ID), found.get(SIGNATURE)
        if named is not None and signed and found.get(SIGNER) == _PLATFORM_NAME:
            # the common case, checked once per record on every replay: the platform's key it names
            secret = self.keyring.get(named.decode("utf-8", "replace"))
            if secret is not None and hmac.compare_digest(signed, signature(secret, topic_kind, record_key, value)):
                return
        sender = self.sender(topic_kind, record_key, value, headers)  # refused: `sender` says why
        if sender.kind == PLATFORM:
            return
        if sender.kind == MEMBER:
            raise Unauthenticated(
                f"{topic_kind} record signed by member {sender.member_id!r} of cluster {sender.cluster_id!r}: "
                f"only the platform's signature counts on {topic_kind}"
            )
        raise Unauthenticated(
            f"unsigned {topic_kind} record: only the platform's parts write {topic_kind} "
            f"(no {SIGNER}/{SIGNATURE} headers)"
        )

    def _secrets(self, wanted: bytes | None) -> list[bytes]:
        """The secrets to try: the one the record names, or each (records before key ids)."""
        if wanted is None:
            return list(self.keyring.values())
        secret = self.keyring.get(wanted.decode("utf-8", "replace"))
        if secret is None:
            raise Unauthenticated(
                f"signed with platform key {wanted.decode('utf-8', 'replace')!r}, which is not in this part's keyring "
                f"({', '.join(sorted(self.keyring))}: STRATOS_PLATFORM_SECRET_PREVIOUS keeps retired secrets)"
            )
        return [secret]

    def _member(self, name: bytes, secret: bytes) -> tuple[bytes, Sender]:
        if (known := self.member_keys.get((name, secret))) is not None:
            return known
        parts = name.decode("utf-8", "replace").split("/")
        if len(parts) != 4 or parts[0] != MEMBER or not all(parts[1:]):
            raise Unauthenticated(
                f"unknown signer {name.decode('utf-8', 'replace')!r} "
                f"(expected {PLATFORM!r} or member/<tenant>/<cluster>/<member>)"
            )
        tenant, cluster_id, member_id = (unquote(p) for p in parts[1:])
        found = (member_key(secret, tenant, cluster_id, member_id), Sender(MEMBER, tenant, cluster_id, member_id))
        if len(self.member_keys) > 100_000:
            self.member_keys.clear()
        self.member_keys[(name, secret)] = found
        return found

    @staticmethod
    def require_signed(topic_kind: str, sender: Sender, record) -> None:
        """A record on an instance topic must come from the platform or from the member it is
        about, in its own cluster and tenant; raises Unauthenticated naming the mismatch. (So a
        line on `logs` belongs to its signer: a member cannot put lines under another tenant,
        cluster or member, whatever its envelope says.)"""
        if sender.kind == PLATFORM:
            return
        if sender.kind != MEMBER:
            if topic_kind not in MEMBER_RECORDS:
                raise Unauthenticated(f"unsigned {topic_kind} record: only the platform's parts write {topic_kind}")
            raise Unauthenticated(
                f"unsigned {topic_kind} record: instances sign theirs with the key "
                f"of their payload ({SIGNER}/{SIGNATURE} headers)"
            )
        payload = record.payload
        if payload.type not in MEMBER_RECORDS.get(topic_kind, ()):
            raise Unauthenticated(f"member {sender.member_id!r} may not send {payload.type} on {topic_kind}")
        said = {
            "tenant": record.tenant,
            "cluster": payload.cluster_id,
            "member": payload.member_id,
            "key": record.aggregate_id,
        }
        signed = {
            "tenant": sender.tenant,
            "cluster": sender.cluster_id,
            "member": sender.member_id,
            # a member's lines are keyed by the member, its status and health by its cluster
            "key": sender.member_id if topic_kind == "logs" else f"{sender.tenant}/cluster/{sender.cluster_id}",
        }
        if said == signed:
            return
        wrong = [f"{what} {said[what]!r} (signed by {signed[what]!r})" for what in said if said[what] != signed[what]]
        raise Unauthenticated(f"{payload.type} from member {sender.member_id!r} is about another {', '.join(wrong)}")
