"""Aggregate ids: `<tenant>/<kind>/<id>`, the key every record of that aggregate carries.

Members live inside their cluster's aggregate, so a member's records are keyed by its cluster.
"""
from __future__ import annotations

from typing import NamedTuple


class AggregateRef(NamedTuple):
    tenant: str
    kind: str
    id: str


def aggregate_id(tenant: str, kind: str, id: str) -> str:
    return f"{tenant}/{kind}/{id}"


def parse_aggregate_id(value: str) -> AggregateRef:
    """Split an aggregate id; raises ValueError naming the id when it is not `tenant/kind/id`."""
    parts = value.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"aggregate id {value!r} is not of the form <tenant>/<kind>/<id>")
    return AggregateRef(*parts)


def cluster_id_for(application_id: str, alias: str, cartridge_type: str) -> str:
    """Stratos's cluster id."""
    return f"{application_id}.{alias}.{cartridge_type}.domain"
