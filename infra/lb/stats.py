"""Requests in flight from HAProxy's `show stat`, per cluster and network partition (pure).

Per server row (`svname` neither FRONTEND nor BACKEND): `scur`, the sessions it is serving now,
and `qcur`, the requests queued for it; summed over the servers of a cluster's backends that
sit in one network partition. (Stratos's extension summed other counters.) Columns are found
by name in the CSV header, never by position.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.ids import parse_aggregate_id
from schemas.status import HealthStat

REQUESTS_IN_FLIGHT = "requests_in_flight"


def _number(row: Mapping[str, str], column: str) -> float:
    value = row.get(column) or "0"
    try:
        return float(value)
    except ValueError:
        return 0.0


def requests_in_flight(
    rows: list[Mapping[str, str]], where: Mapping[tuple[str, str], tuple[str, str]], now: float
) -> list[tuple[str, HealthStat]]:
    """`where` maps (backend, server) to (cluster key, network partition id); servers it does
    not know (another proxy's) are not counted. Returns (cluster key, stat) pairs, one per
    cluster and network partition that has servers."""
    totals: dict[tuple[str, str], list[float]] = {}
    for key_np in where.values():
        totals.setdefault(key_np, [0.0, 0.0])
    for row in rows:
        found = where.get((row.get("pxname", ""), row.get("svname", "")))
        if found is None:
            continue
        totals[found][0] += _number(row, "scur")
        totals[found][1] += _number(row, "qcur")
    return [
        (
            key,
            HealthStat(
                cluster_id=parse_aggregate_id(key).id,
                network_partition_id=np,
                metric=REQUESTS_IN_FLIGHT,
                value=scur,
                queued=qcur,
                timestamp=now,
            ),
        )
        for (key, np), (scur, qcur) in sorted(totals.items())
    ]
