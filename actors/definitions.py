"""The definition aggregate: one per cartridge, group, policy, network partition, tenant, user...

Rules (those of Stratos 4.1's REST API): ids are unique per tenant (409), unknown ids answer 404, and a
definition that something uses cannot be removed (400 naming the users).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel

from actors.base import Context, Rejection, State, evolve, folded, not_found
from schemas import commands as C
from schemas import events as E
from schemas.ids import parse_aggregate_id


class DefinitionState(State):
    kind: str = ""
    definition: dict[str, Any] | None = None
    used_by: tuple[str, ...] = ()


def initial(aggregate_id: str) -> DefinitionState:
    return DefinitionState(aggregate_id=aggregate_id, kind=parse_aggregate_id(aggregate_id).kind)


def _event_class(kind: str, past: str) -> type[BaseModel]:
    return cast(type[BaseModel], getattr(E, f"{C._pascal(kind)}{past}"))


def _verb(command: BaseModel) -> str:
    for verb in ("Add", "Update", "Remove"):
        if command.type.startswith(verb):  # type: ignore[attr-defined]
            return verb
    raise Rejection(f"command {command.type} is not for a definition")  # type: ignore[attr-defined]


def decide_definition(state: DefinitionState, command: BaseModel, ctx: Context) -> list[BaseModel]:
    """Add / Update / Remove of any definition kind."""
    ref = parse_aggregate_id(state.aggregate_id)
    verb = _verb(command)
    if verb == "Add":
        if command.definition.definition_id != ref.id:  # type: ignore[attr-defined]
            raise Rejection(
                f"{ref.kind} id {command.definition.definition_id!r} does not match "  # type: ignore[attr-defined]
                f"the aggregate {ref.id!r}",
                field="id",
            )
        if state.exists:
            raise Rejection(f"{ref.kind} {ref.id!r} already exists", field=ref.id, code=409)
        return [_event_class(ref.kind, "Added")(definition=command.definition)]  # type: ignore[attr-defined]
    if not state.exists:
        raise not_found(ref.kind, ref.id)
    if verb == "Update":
        if command.definition.definition_id != ref.id:  # type: ignore[attr-defined]
            raise Rejection(f"cannot rename {ref.kind} {ref.id!r} by an update", field="id")
        return [_event_class(ref.kind, "Updated")(definition=command.definition)]  # type: ignore[attr-defined]
    if state.used_by:
        raise Rejection(f"{ref.kind} {ref.id!r} is in use by {', '.join(state.used_by)}", field=ref.id)
    return [_event_class(ref.kind, "Removed")(id=ref.id)]


def decide_usage(state: DefinitionState, command: BaseModel, ctx: Context) -> list[BaseModel]:
    ref = parse_aggregate_id(state.aggregate_id)
    if isinstance(command, C.MarkDefinitionUsed):
        if not state.exists:
            raise not_found(ref.kind, ref.id)
        return [E.DefinitionUsed(kind=ref.kind, id=ref.id, by=command.by, definition=state.definition or {})]
    if isinstance(command, C.ReleaseDefinition):
        if command.by not in state.used_by:
            return []
        return [E.DefinitionReleased(kind=ref.kind, id=ref.id, by=command.by)]
    raise Rejection(f"command {command.type} does not apply to a {ref.kind}")  # type: ignore[attr-defined]


def decide(state: DefinitionState, command: BaseModel, ctx: Context) -> list[BaseModel]:
    if isinstance(command, (C.MarkDefinitionUsed, C.ReleaseDefinition)):
        return decide_usage(state, command, ctx)
    return decide_definition(state, command, ctx)


def apply(state: DefinitionState, event: BaseModel, at: datetime | None = None) -> DefinitionState:
    kind = event.type  # type: ignore[attr-defined]
    if kind.endswith("Added") or kind.endswith("Updated"):
        body = event.definition.model_dump(mode="json", by_alias=True)  # type: ignore[attr-defined]
        return evolve(state, {"exists": True, "definition": body})
    if kind.endswith("Removed"):
        return evolve(state, {"exists": False, "definition": None, "used_by": ()})
    if isinstance(event, E.DefinitionUsed):
        if event.by in state.used_by:
            return state
        return evolve(state, {"used_by": state.used_by + (event.by,)})
    if isinstance(event, E.DefinitionReleased):
        return evolve(state, {"used_by": tuple(b for b in state.used_by if b != event.by)})
    return state


def fold(
    state: DefinitionState, events: list[BaseModel], at: datetime | None, in_place: bool = False
) -> DefinitionState:
    """`state` after `events` (`in_place` is the cluster's saving; these states hold no large
    containers, so every fold here copies)."""
    return folded(apply, state, events, at)


def decide_and_fold(
    state: DefinitionState, command: BaseModel, ctx: Context
) -> tuple[list[BaseModel], DefinitionState]:
    events = decide(state, command, ctx)
    return events, fold(state, events, ctx.now)
