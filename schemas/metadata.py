"""The metadata service's commands and events (Stratos 4.1's `/metadata/api`), kept by the
application aggregate: what an application's instances publish for each other (a database's
address for its clients, a cluster's well-known members...).

A property is Stratos's `{"key": k, "values": [v, ...]}`; `alias` names the cartridge alias
(Stratos's cluster-level properties), or is None for the application's own properties.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.base import Message

PROPERTY_KEY_MAX = 255
VALUE_MAX = 4096
VALUES_MAX = 1000


class MetadataProperty(BaseModel):
    """Stratos's Property bean as its agent sends it: `values` a list, or one bare string."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str = Field(min_length=1, max_length=PROPERTY_KEY_MAX)
    values: list[str] = Field(default_factory=list, max_length=VALUES_MAX)

    @field_validator("values", mode="before")
    @classmethod
    def _one_value_is_a_list(cls, value: object) -> object:
        """Stratos's Jettison provider reads `"values": "x"` as one value (agents send both)."""
        if isinstance(value, (str, int, float, bool)):
            return [str(value)]
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float, bool)) else v for v in value]
        return value

    @field_validator("values")
    @classmethod
    def _bounded_values(cls, values: list[str]) -> list[str]:
        for value in values:
            if len(value) > VALUE_MAX:
                raise ValueError(f"a value is longer than {VALUE_MAX} characters")
        return values


class AddMetadataProperties(Message):
    """Publish properties: an application property gains the values it lacks (Stratos's
    `addPropertyToApplication`); a cluster property is set to exactly these values
    (`addPropertyToCluster`)."""

    type: Literal["AddMetadataProperties"] = "AddMetadataProperties"
    alias: str | None = None
    properties: list[MetadataProperty] = Field(min_length=1)
    by: str = Field("", description="who published them: member id or user name")


class RemoveMetadataProperty(Message):
    type: Literal["RemoveMetadataProperty"] = "RemoveMetadataProperty"
    alias: str | None = None
    key: str = Field(min_length=1)
    value: str | None = Field(None, description="only this value of the property; None = the whole property")


class RemoveMetadataProperties(Message):
    """Every property of the application (alias None) or of one cartridge alias."""

    type: Literal["RemoveMetadataProperties"] = "RemoveMetadataProperties"
    alias: str | None = None


class MetadataPropertySet(Message):
    """A property now has exactly these values."""

    type: Literal["MetadataPropertySet"] = "MetadataPropertySet"
    alias: str | None = None
    key: str
    values: list[str]
    by: str = ""


class MetadataPropertyRemoved(Message):
    type: Literal["MetadataPropertyRemoved"] = "MetadataPropertyRemoved"
    alias: str | None = None
    key: str


class MetadataCleared(Message):
    """Every property of the scope is gone: alias None and `everything` = the application's
    whole metadata (on undeploy), alias None alone = the application-level properties."""

    type: Literal["MetadataCleared"] = "MetadataCleared"
    alias: str | None = None
    everything: bool = False


METADATA_COMMANDS = (AddMetadataProperties, RemoveMetadataProperty, RemoveMetadataProperties)
METADATA_EVENTS = (MetadataPropertySet, MetadataPropertyRemoved, MetadataCleared)
