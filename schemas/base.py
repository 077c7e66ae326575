"""Base models shared by every schema.

Definitions keep Stratos 4.1's camelCase field names so that a Stratos user's JSON files load
unchanged; internal messages use snake_case. Both are pydantic v2 models.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Definition(BaseModel):
    """A user-written definition (Stratos JSON): lenient on input types, ignores unknown keys."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", str_strip_whitespace=True)


class Message(BaseModel):
    """A command, event or status record: immutable once built."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _secret_field_names() -> frozenset[str]:
    """Fields declared with `repr=False` (credentials, passwords) in any of our models."""
    names: set[str] = set()
    pending = list(Definition.__subclasses__()) + list(Message.__subclasses__())
    while pending:
        model = pending.pop()
        pending += model.__subclasses__()
        for name, info in model.model_fields.items():
            if info.repr is False:
                names.update({name, info.alias or name})
    return frozenset(names)


def redacted(model: BaseModel) -> dict:
    """The model as JSON data with every secret replaced, for replies and logs that echo input."""
    secrets = _secret_field_names()

    def scrub(value):
        if isinstance(value, dict):
            return {k: ("***" if k in secrets and v else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub(model.model_dump(mode="json", by_alias=True))
