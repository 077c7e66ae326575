"""Why did this happen, and what did it lead to: walks over causation ids.

Every record the platform writes names its cause (`causation_id`): an event names the command
its decision handled, a reaction command the event it reacts to, a ScaleCluster the last health
sample of its window, a cloud controller's report the event it acted on. These walks are pure:
`lookup` and `children` come from whatever index the caller has (the CLI's, a test's dict).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Link = Mapping[str, Any]
"""One indexed record: `id`, `topic`, `type`, `aggregate`, `at`, `cause`, `figures`, …"""
MAX_DEPTH = 64


def causes(lookup: Callable[[str], Link | None], record_id: str) -> tuple[list[Link], str | None]:
    """The chain from a record back to its root (the record first); and the id of a cause the
    index does not hold (older than the topic's retention, or from outside), if the walk stopped
    there rather than at a record without a cause."""
    chain: list[Link] = []
    seen: set[str] = set()
    current: str | None = record_id
    while current is not None and current not in seen and len(chain) < MAX_DEPTH:
        link = lookup(current)
        if link is None:
            return chain, current
        seen.add(current)
        chain.append(link)
        current = link.get("cause")
    return chain, None


def effects(
    children: Callable[[str], list[Link]], record_id: str, max_depth: int = MAX_DEPTH, max_records: int = 500
) -> dict[str, Any]:
    """What a record led to, as a tree `{"id", "link", "effects": [...]}` (breadth-bounded:
    `truncated` says when the bound cut it)."""
    budget = [max_records]

    def grow(node_id: str, depth: int) -> list[dict[str, Any]]:
        if depth >= max_depth:
            return []
        grown = []
        for child in children(node_id):
            if budget[0] <= 0:
                break
            budget[0] -= 1
            grown.append({"id": child["id"], "link": dict(child), "effects": grow(child["id"], depth + 1)})
        return grown

    tree: dict[str, Any] = {"id": record_id, "effects": grow(record_id, 0)}
    tree["truncated"] = budget[0] <= 0
    return tree
