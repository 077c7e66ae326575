"""Secrets at rest: sealed before they enter the log, opened only where they are used.

A secret field (schemas.base.secret_field_names: IaaS identity and credential, repository and
tenant passwords, user credentials, properties marked ``"secret": true``) travels as
``stratos:sealed:<key id>:<Fernet token>``. The keys live outside the log: ``STRATOS_SECRET_KEY``
(comma-separated Fernet keys, the newest first) or, unset, ``<state dir>/secret.key`` (one key
per line, newest first, created with mode 0600 on first use). A key's id is the start of its
SHA-256, so a record names the key that sealed it: after a rotation new secrets are sealed with
the new key and old records still open with the old one, as long as it stays in the list.

Instances never get the platform key. Each cluster has a cartridge key derived from it (HKDF,
per cluster aggregate id, as Stratos's CARTRIDGE_KEY in the payload); what the instance notifier
carries for a cluster is sealed with that cluster's cartridge keys, so the agents of other
clusters read only ciphertext.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel

from schemas.base import SEALED_PREFIX, has_clear_secret, is_sealed, map_secrets, may_hold_secrets

KEY_FILE = "secret.key"
M = TypeVar("M", bound=BaseModel)


class SecretError(ValueError):
    """A secret cannot be opened (unknown key id, corrupt token); the message says which."""


def key_id(key: bytes | str) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw.strip()).hexdigest()[:8]


def new_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(text: str) -> list[str]:
    """Keys from STRATOS_SECRET_KEY or the key file: separated by commas or lines, newest first."""
    keys = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip() and not k.strip().startswith("#")]
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise SecretError(
                f"secret key {key_id(key)} is not a Fernet key (32 url-safe base64 "
                "bytes; make one with `stratos secrets new-key`)"
            ) from None
    return keys


def key_file(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_FILE


def load_or_create_keys(state_dir: Path) -> list[str]:
    """The key file's keys; a fresh key is written (owner-only, atomically) if there is none."""
    path = key_file(state_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{KEY_FILE}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(new_key() + "\n")
        try:
            os.link(temporary, path)  # whole or not at all; fails if another part made it meanwhile
        except FileExistsError:
            pass  # theirs is the key
        finally:
            os.unlink(temporary)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return parse_keys(path.read_text())


def rotate_key_file(state_dir: Path) -> str:
    """Put a new key first in the key file (the old ones stay, to open old records); its id."""
    keys = load_or_create_keys(state_dir)
    fresh = new_key()
    path = key_file(state_dir)
    temporary = path.with_suffix(".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write("\n".join([fresh, *keys]) + "\n")
    os.replace(temporary, path)
    return key_id(fresh)


def _derived(key: str, cluster_key: str) -> str:
    raw = base64.urlsafe_b64decode(key.encode())
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"stratos cartridge key\0" + cluster_key.encode())
    return base64.urlsafe_b64encode(hkdf.derive(raw)).decode()


def _seal_with(key: str, kid: str, text: str) -> str:
    return f"{SEALED_PREFIX}{kid}:{Fernet(key).encrypt(text.encode()).decode()}"


def _parts(value: str) -> list[tuple[str, str]]:
    """(key id, token) of each sealed value in `value` (the notifier may carry several)."""
    found = []
    for part in value.split():
        if not is_sealed(part):
            raise SecretError("not a sealed secret")
        kid, _, token = part[len(SEALED_PREFIX) :].partition(":")
        found.append((kid, token))
    return found


def open_for_instance(value: str | None, cartridge_key: str | None) -> str | None:
    """What an agent does with a secret from its payload or the notifier: open it with its
    cartridge key (``<key id>:<key>``). A clear value (an older platform) is returned as is."""
    if not value or not is_sealed(value):
        return value
    if not cartridge_key:
        raise SecretError("a sealed secret arrived but this instance has no cartridge key")
    kid, _, key = cartridge_key.partition(":")
    for part_kid, token in _parts(value):
        if part_kid == f"c{kid}":
            try:
                return Fernet(key).decrypt(token.encode()).decode()
            except InvalidToken:
                raise SecretError(
                    f"secret sealed for cartridge key c{kid} does not open with this "
                    "instance's key (another cluster's?)"
                ) from None
    raise SecretError(f"no part of the secret is sealed for this instance's cartridge key c{kid}")


@dataclass(frozen=True)
class SecretBox:
    """The platform's keys: seals with the first, opens with any (by key id)."""

    keys: tuple[str, ...]
    source: str

    @property
    def primary_id(self) -> str:
        return key_id(self.keys[0])

    @property
    def key_ids(self) -> list[str]:
        return [key_id(k) for k in self.keys]

    def _key(self, kid: str) -> str:
        for key in self.keys:
            if key_id(key) == kid:
                return key
        raise SecretError(
            f"secret sealed with key {kid}, which is not among the keys of {self.source} "
            f"({', '.join(self.key_ids)}): keep old keys after a rotation"
        )

    # --- one value ----------------------------------------------------------------------------
    def seal(self, text: str) -> str:
        return text if is_sealed(text) or not text else _seal_with(self.keys[0], self.primary_id, text)

    def open(self, value: str | None) -> str | None:
        """The clear secret; a value that is not sealed (an old record) is returned as is."""
        if not value or not is_sealed(value):
            return value
        ((kid, token),) = _parts(value)
        try:
            return Fernet(self._key(kid)).decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretError(f"secret sealed with key {kid} is corrupt or was not sealed by it") from None

    def sealed_with(self, value: str) -> str:
        """The id of the key that sealed `value`."""
        return _parts(value)[0][0]

    # --- whole records --------------------------------------------------------------------------
    def seal_data(self, data: Any) -> Any:
        return map_secrets(data, self.seal)

    def open_data(self, data: Any) -> Any:
        return map_secrets(data, self.open)

    def seal_model(self, model: M) -> M:
        """`model` with every clear secret sealed (the same object if it holds none)."""
        payload = getattr(model, "payload", None)  # an envelope: its payload's type decides
        if not may_hold_secrets(type(payload) if isinstance(payload, BaseModel) else type(model)):
            return model
        data = model.model_dump(mode="json", by_alias=True)
        if not has_clear_secret(data):
            return model
        return type(model).model_validate(self.seal_data(data))

    # --- instances ----------------------------------------------------------------------------
    def cartridge_key(self, cluster_key: str) -> str:
        """The key a member of `cluster_key` (the cluster's aggregate id) gets in its payload."""
        return f"{self.primary_id}:{_derived(self.keys[0], cluster_key)}"

    def for_instances(self, value: str | None, cluster_key: str) -> str | None:
        """A log secret re-sealed for the members of one cluster, with each key's cartridge key
        (members started before a rotation hold the old one); space-separated parts."""
        clear = self.open(value)
        if not clear:
            return clear
        return " ".join(_seal_with(_derived(key, cluster_key), f"c{key_id(key)}", clear) for key in self.keys)


_BOXES: dict[tuple, SecretBox] = {}
_LOCK = threading.Lock()


def secret_box(settings) -> SecretBox:
    """The box for these settings: STRATOS_SECRET_KEY, else the state directory's key file."""
    configured = settings.secret_key.get_secret_value() if settings.secret_key else None
    cache_key = (configured, str(Path(settings.state_dir).resolve()))
    with _LOCK:
        if cache_key not in _BOXES:
            if configured:
                _BOXES[cache_key] = SecretBox(tuple(parse_keys(configured)), "STRATOS_SECRET_KEY")
            else:
                _BOXES[cache_key] = SecretBox(
                    tuple(load_or_create_keys(settings.state_dir)), str(key_file(settings.state_dir))
                )
        return _BOXES[cache_key]


def notice_for_instances(box: SecretBox, notice: M, cluster_key: str) -> M:
    """An instance-notifier record with its repository password re-sealed for the members of
    its cluster (the log's sealing is for the platform's parts only)."""
    password = getattr(notice, "repo_password", None)
    if not password:
        return notice
    return notice.model_copy(update={"repo_password": box.for_instances(password, cluster_key)})
