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
