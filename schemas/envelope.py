"""The envelope every record on every topic carries.

`payload` is a discriminated union on `type`; the envelope repeats the type at top level so
that consumers in any language can route a record without parsing its payload.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

SUPER_TENANT = "carbon.super"
"""Stratos's name for the platform's own tenant."""


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="unique record id; commands are deduplicated by it")
    type: str = Field(description="the payload's type, repeated for routing")
    schema_version: int = 1
    aggregate_id: str = Field(min_length=1)
    aggregate_seq: int = Field(0, ge=0, description="position in the aggregate's own stream (events)")
    occurred_at: datetime
    tenant: str = SUPER_TENANT
    correlation_id: str | None = None
    causation_id: str | None = None
    payload: BaseModel

    @model_validator(mode="after")
    def _type_matches_payload(self) -> Envelope:
        payload_type = getattr(self.payload, "type", None)
        if payload_type != self.type:
            raise ValueError(f"type {self.type!r} does not match payload.type {payload_type!r}")
        return self
