"""Base models shared by every schema.

Definitions keep Stratos 4.1's camelCase field names so that a Stratos user's JSON files load
unchanged; internal messages use snake_case. Both are pydantic v2 models.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any, cast, get_args, get_origin

from pydantic import BaseModel, ConfigDict


class Definition(BaseModel):
    """A user-written definition (Stratos JSON): lenient on input types, ignores unknown keys."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", str_strip_whitespace=True)


class Message(BaseModel):
    """A command, event or status record: immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Value(BaseModel):
    """A value type inside messages (schemas/domain.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


SEALED_PREFIX = "stratos:sealed:"
"""A secret as the log holds it: ``stratos:sealed:<key id>:<token>`` (infra/auth/secrets.py seals and
opens it with a key held outside the log)."""
MASK = "********"
"""A secret as a reader sees it: REST answers, the CLI, dead letters, log lines."""
EXTRA_SECRET_KEYS = frozenset({"cartridgeKey", "repoPassword", "repo_password", "TOKEN"})
"""Keys that hold secrets in plain dicts (node metadata, notifier records) beside the models' fields."""


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


@lru_cache(maxsize=1)
def secret_field_names() -> frozenset[str]:
    """Fields declared with `repr=False` (credentials, passwords) in any of our models, under
    their Python name and their alias, plus :data:`EXTRA_SECRET_KEYS`. A definition marks any
    other value as a secret with a property ``{"name": ..., "value": ..., "secret": true}``."""
    names: set[str] = set(EXTRA_SECRET_KEYS)
    pending = list(Definition.__subclasses__()) + list(Message.__subclasses__()) + list(Value.__subclasses__())
    while pending:
        model = pending.pop()
        pending += model.__subclasses__()
        for name, info in model.model_fields.items():
            if info.repr is False:
                names.update({name, info.alias or name})
    return frozenset(names)


@cache
def may_hold_secrets(model: type[BaseModel]) -> bool:
    """Whether instances of `model` can carry a secret: a secret field, a free-form dict (a
    definition body), or a nested model that can. Cached per class: the hot path asks once."""
    names = secret_field_names()

    def can(annotation: Any) -> bool:
        if annotation is Any or annotation is dict:
            return True
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation is not model and may_hold_secrets(annotation)
        args = get_args(annotation)
        if get_origin(annotation) is dict:
            return not args or args[1] is object or can(args[1])
        return any(can(arg) for arg in args)

    if "secret" in model.model_fields:  # a property a definition can mark secret
        return True
    return any(
        name in names or (info.alias or "") in names or can(info.annotation)
        for name, info in model.model_fields.items()
    )


def _is_secret_key(data: dict[str, Any], key: str, names: frozenset[str]) -> bool:
    return key in names or (key == "value" and data.get("secret") is True)


def map_secrets(value: Any, change: Callable[[str], object]) -> Any:
    """`value` (JSON-like data) with every non-empty secret string replaced by `change(secret)`:
    the one walk that sealing, opening, masking and stripping share."""
    names = secret_field_names()

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {
                k: (change(v) if _is_secret_key(item, k, names) and isinstance(v, str) and v else walk(v))
                for k, v in item.items()
            }
        if isinstance(item, (list, tuple)):
            return [walk(v) for v in item]
        return item

    return walk(value)


def has_clear_secret(value: Any) -> bool:
    found: list[str] = []
    map_secrets(value, lambda secret: found.append(secret) if not is_sealed(secret) else None)
    return bool(found)


def masked(value: Any) -> Any:
    """JSON-like data as readers may see it: every secret (sealed or clear) is ``"********"``."""
    return map_secrets(value, lambda _secret: MASK)


def without_secrets(value: Any) -> Any:
    """JSON-like data with its secret keys removed: what a member event carries (a reference to
    its cluster's definition, not a copy of the definition's secrets)."""
    marker = object()
    data = map_secrets(value, lambda _secret: marker)

    def drop(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: drop(v) for k, v in item.items() if v is not marker}
        if isinstance(item, list):
            return [drop(v) for v in item]
        return item

    return drop(data)


@lru_cache(maxsize=1)
def _clear_secret_in_json() -> re.Pattern[str]:
    names = "|".join(re.escape(n) for n in sorted(secret_field_names()))
    return re.compile(rf'("(?:{names})"\s*:\s*")(?!{re.escape(SEALED_PREFIX)})(?:[^"\\]|\\.)+"')


def without_clear_secrets(text: str) -> str:
    """JSON text (valid or not: a dead letter's original) with every clear secret masked;
    sealed ones are kept, so the record can still be replayed."""
    return _clear_secret_in_json().sub(lambda m: m.group(1) + MASK + '"', text)


def redacted(model: BaseModel) -> dict[str, Any]:
    """The model as JSON data with every secret masked, for replies and logs that echo input."""
    return cast(dict[str, Any], masked(model.model_dump(mode="json", by_alias=True)))
