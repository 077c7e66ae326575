"""What a debugging engineer reads of the log: the figures of a record, the platform at an
instant, and what changed between two states.

Pure, shared by `stratos history`, `replay`, `diff` and `why`, and by the console, so that every
view prints a record the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from schemas.base import MASK, secret_field_names
from schemas.ids import parse_aggregate_id

TEXT_LIMIT = 120
"""Longer strings are cut in a summary (a definition's JSON is not a figure)."""
_SKIPPED = {"type", "definition", "spec", "resolved", "clusters", "payload"}
"""Fields that hold whole documents: the state shows them, a timeline line does not."""


def figures(payload: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    """The figures that matter of an event or command: its scalar fields (ids, counts, reasons,
    statuses) and flat numeric maps (`figures`, `member_load`), without nulls or documents."""
    data = payload.__dict__ if isinstance(payload, BaseModel) else payload  # no dump: a hot path
    out: dict[str, Any] = {}
    secrets = secret_field_names()
    for name, value in data.items():
        if name in _SKIPPED or value is None or value == {} or value == []:
            continue
        if name in secrets:
            value = MASK
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, datetime):
            value = value.isoformat()
        if isinstance(value, str):
            out[name] = value if len(value) <= TEXT_LIMIT else value[: TEXT_LIMIT - 1] + "…"
        elif (
            isinstance(value, (int, float, bool))
            or isinstance(value, dict)
            and all(isinstance(v, (int, float, str, bool)) for v in value.values())
            or isinstance(value, list)
            and len(value) <= 8
            and all(isinstance(v, (int, float, str)) for v in value)
        ):
            out[name] = value
    return out


REDUNDANT = frozenset({"cluster_id", "application_id"})
"""Ids a line already shows as its aggregate."""


def one_line(values: Mapping[str, Any]) -> str:
    """`required=2 reason=… figures.load_average.predicted=31.2`: nested numbers flattened."""
    parts = []
    for name, value in values.items():
        if name in REDUNDANT:
            continue
        if isinstance(value, dict):
            parts += [f"{name}.{k}={_short(v)}" for k, v in value.items()]
        else:
            parts.append(f"{name}={_short(value)}")
    return " ".join(parts)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Change:
    path: tuple[str, ...]
    """Keys from the root (ids may hold dots, so a dotted string would be ambiguous)."""
    before: Any
    after: Any

    @property
    def kind(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None else "changed"

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def diff(before: Any, after: Any, path: tuple[str, ...] = ()) -> list[Change]:
    """Leaf-level differences of two JSON documents; a key present on one side only is one
    change with None on the other."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[Change] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = (*path, str(key))
            if key not in before:
                changes.append(Change(sub, None, after[key]))
            elif key not in after:
                changes.append(Change(sub, before[key], None))
            else:
                changes += diff(before[key], after[key], sub)
        return changes
    return [] if before == after else [Change(path, before, after)]


def platform_view(states: Iterable[BaseModel]) -> dict[str, Any]:
    """The platform at an instant, as `replay --at` prints it: applications with their status,
    clusters with their members (status, node, addresses), and every definition by kind."""
    view: dict[str, Any] = {"applications": {}, "clusters": {}, "definitions": {}}
    for state in states:
        data = state.model_dump(mode="json")
        if not data.get("exists"):
            continue  # removed, or never created (a rejected add)
        ref = parse_aggregate_id(data["aggregate_id"])
        if ref.kind == "cluster":
            view["clusters"][data["aggregate_id"]] = {
                "status": data.get("status"),
                "min": data.get("min"),
                "max": data.get("max"),
                "seq": data.get("seq"),
                "members": {
                    m: {
                        "status": s["status"],
                        "partition": s["partition_id"],
                        "network_partition": s["network_partition_id"],
                        "node": s.get("node_id"),
                        "ip": s.get("private_ip"),
                        "leaving": s.get("termination_requested_at") is not None,
                    }
                    for m, s in sorted(data.get("members", {}).items())
                },
            }
        elif ref.kind == "application":
            view["applications"][data["aggregate_id"]] = {
                "status": data.get("status"),
                "policy": data.get("application_policy_id"),
                "clusters": data.get("cluster_status", {}),
                "seq": data.get("seq"),
            }
        else:
            view["definitions"].setdefault(ref.kind, []).append(
                ref.id if ref.tenant == "carbon.super" else f"{ref.tenant}/{ref.id}"
            )
    for ids in view["definitions"].values():
        ids.sort()
    return view
