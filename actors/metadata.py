"""The metadata service's rules (Stratos 4.1's MetadataApiRegistry), as part of the application
aggregate: pure `decide` and `apply` over the application's `metadata`, scope -> key -> values.

Scope "" holds the application's own properties; a cartridge alias holds that cluster's.
Stratos's semantics are kept: publishing an application property adds the values it lacks,
publishing a cluster property sets its values; removing a property or a value that is not
there changes nothing (Stratos answered 200, and agents' clean-up hooks rely on it). Properties
exist while the application is deployed: adding needs a running application, and undeploying
removes them all (`apply` of ApplicationUndeployed, in actors.application).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from actors.base import Rejection
from schemas.domain import ApplicationStatus
from schemas.metadata import (
    AddMetadataProperties,
    MetadataCleared,
    MetadataPropertyRemoved,
    MetadataPropertySet,
    RemoveMetadataProperties,
    RemoveMetadataProperty,
)

APPLICATION_SCOPE = ""
WRITABLE = (ApplicationStatus.DEPLOYED, ApplicationStatus.ACTIVE, ApplicationStatus.INACTIVE)
REMOVABLE = WRITABLE + (ApplicationStatus.UNDEPLOYING,)
"""Instances being shut down may still withdraw what they published."""

Metadata = dict[str, dict[str, list[str]]]
MAX_KEYS = 1000
"""Properties one scope may hold: the application's state (and its snapshots) stay bounded."""


def scope(alias: str | None) -> str:
    return alias or APPLICATION_SCOPE


def properties(metadata: Metadata, alias: str | None) -> list[dict[str, Any]]:
    """Stratos's Property beans of one scope, in the order they were first published."""
    return [{"key": key, "values": list(values)} for key, values in metadata.get(scope(alias), {}).items()]


def decide(
    app_id: str, status: ApplicationStatus, aliases: set[str], metadata: Metadata, command: BaseModel
) -> list[BaseModel]:
    alias = getattr(command, "alias", None)
    allowed = WRITABLE if isinstance(command, AddMetadataProperties) else REMOVABLE
    if status not in allowed:
        raise Rejection(
            f"application {app_id!r} is {status.value}: its metadata exists only while it is deployed", field=app_id
        )
    if alias is not None and alias not in aliases:
        raise Rejection(
            f"cluster {alias!r} is not a cartridge alias of application {app_id!r} "
            f"(aliases: {', '.join(sorted(aliases)) or 'none'})",
            field=alias,
            code=404,
        )
    current = metadata.get(scope(alias), {})
    if isinstance(command, AddMetadataProperties):
        new_keys = {p.key for p in command.properties} - set(current)
        if len(current) + len(new_keys) > MAX_KEYS:
            raise Rejection(
                f"{'cluster ' + repr(alias) if alias else 'application ' + repr(app_id)} would hold "
                f"more than {MAX_KEYS} properties",
                field="properties",
                code=413,
            )
        return _add(command, dict(current))
    if isinstance(command, RemoveMetadataProperty):
        values = current.get(command.key)
        if values is None or (command.value is not None and command.value not in values):
            return []
        left = [v for v in values if v != command.value] if command.value is not None else []
        if left:
            return [MetadataPropertySet(alias=alias, key=command.key, values=left)]
        return [MetadataPropertyRemoved(alias=alias, key=command.key)]
    if isinstance(command, RemoveMetadataProperties):
        # Stratos deleted the application's registry collection: its clusters' properties too
        if alias is None and any(metadata.values()):
            return [MetadataCleared(alias=None, everything=True)]
        return [MetadataCleared(alias=alias)] if current else []
    raise Rejection(f"command {command.type} is not a metadata command")  # type: ignore[attr-defined]


def _add(command: AddMetadataProperties, current: dict[str, list[str]]) -> list[BaseModel]:
    events: list[BaseModel] = []
    for prop in command.properties:
        before = current.get(prop.key)
        if command.alias is None:  # application scope: the union, first-published order
            values = list(dict.fromkeys([*(before or []), *prop.values]))
        else:  # cluster scope: exactly the values given
            values = list(dict.fromkeys(prop.values))
        if values != before:
            current[prop.key] = values
            events.append(MetadataPropertySet(alias=command.alias, key=prop.key, values=values, by=command.by))
    return events


def apply(metadata: Metadata, event: BaseModel) -> Metadata:
    """The metadata after one of its events (a new dict; the old one is left as it was)."""
    if isinstance(event, MetadataPropertySet):
        name = scope(event.alias)
        return {**metadata, name: {**metadata.get(name, {}), event.key: list(event.values)}}
    if isinstance(event, MetadataPropertyRemoved):
        name = scope(event.alias)
        left = {k: v for k, v in metadata.get(name, {}).items() if k != event.key}
        return {k: v for k, v in {**metadata, name: left}.items() if v}
    if isinstance(event, MetadataCleared):
        if event.everything:
            return {}
        return {k: v for k, v in metadata.items() if k != scope(event.alias)}
    return metadata
