"""The topology: what load balancers need of each cluster, folded from the log (pure).

One entry per cluster (the record of the compacted `stratos.topology` topic, key = the cluster's
aggregate id): its application, cartridge, port mappings, the domain mappings routed to it, and
its members with status, addresses, ports and partition. The states are the aggregates' own,
folded by `Tracked.fold_commit` (the node's fold: member status has one fold), from the commits
the log's fence admits; this module only derives the entry from them.
"""

from __future__ import annotations

from typing import Any, cast

from actors.cluster import ClusterState
from actors.runtime import Tracked
from schemas.domain import ClusterStatus
from schemas.ids import aggregate_id, parse_aggregate_id
from schemas.records import LogRecord, TopologyDomain, TopologyEntry, TopologyMember, TopologyPort

LOAD_BALANCER = "load-balancer"
"""The cartridge category of a load balancer (Stratos 4.1)."""


def port_mappings(ports: list[dict[str, Any]]) -> list[TopologyPort]:
    """A cartridge's `portMapping` entries (Stratos writes numbers as strings); one that is not
    a port mapping is left out, never the whole cluster."""
    found = []
    for mapping in ports:
        try:
            proxy = mapping.get("proxyPort", mapping.get("proxy_port"))
            found.append(
                TopologyPort(
                    name=mapping.get("name"),
                    protocol=str(mapping["protocol"]),
                    port=int(mapping["port"]),
                    proxy_port=int(proxy) if proxy not in (None, "") else None,
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return found


def entry_of(cluster: Tracked, application: Tracked | None) -> TopologyEntry | None:
    """The topology entry of a cluster aggregate's state; None before it is created."""
    state = cast(ClusterState, cluster.state)
    spec = getattr(state, "spec", None)
    if spec is None:
        return None
    removed = state.status == ClusterStatus.TERMINATED
    domains = (
        []
        if application is None or removed
        else [
            TopologyDomain(domain_name=name, context_path=m.get("contextPath"), tenant=m.get("tenant"))
            for name, m in sorted(getattr(application.state, "domain_mappings", {}).items())
            if m.get("clusterId") == spec.cluster_id
        ]
    )
    members = (
        []
        if removed
        else [
            TopologyMember(
                member_id=m.member_id,
                status=m.status.value,
                in_service=m.in_service,
                network_partition_id=m.network_partition_id,
                partition_id=m.partition_id,
                private_ip=m.private_ip,
                public_ip=m.public_ip,
                ports=dict(m.ports),
            )
            for m in sorted(state.members.values(), key=lambda m: m.member_id)
        ]
    )
    return TopologyEntry(
        cluster_id=spec.cluster_id,
        application_id=spec.application_id,
        cartridge_type=spec.cartridge_type,
        alias=spec.alias,
        category=spec.category,
        status=state.status.value,
        port_mappings=port_mappings(spec.ports),
        domain_mappings=domains,
        members=members,
        removed=removed,
    )


class Topology:
    """Cluster and application states, fed the commits that are history in log order."""

    def __init__(self) -> None:
        self.clusters: dict[str, Tracked] = {}
        self.applications: dict[str, Tracked] = {}

    def fold(self, commit: LogRecord) -> tuple[set[str], str | None]:
        """Fold one commit; returns the cluster keys whose entry may have changed, and the
        fold's problem report (a repeat skipped, a gap), if any."""
        ref = parse_aggregate_id(commit.aggregate_id)
        if ref.kind == "cluster":
            tracked = self.clusters.setdefault(commit.aggregate_id, Tracked.new(commit.aggregate_id))
            return {commit.aggregate_id}, tracked.fold_commit(commit)
        if ref.kind != "application":
            return set(), None
        tracked = self.applications.setdefault(commit.aggregate_id, Tracked.new(commit.aggregate_id))
        before = dict(getattr(tracked.state, "domain_mappings", {}))
        problem = tracked.fold_commit(commit)
        after = getattr(tracked.state, "domain_mappings", {})
        touched = {
            m.get("clusterId")
            for name in before.keys() | after.keys()
            if before.get(name) != after.get(name)
            for m in (before.get(name), after.get(name))
            if m
        }
        return {aggregate_id(ref.tenant, "cluster", c) for c in touched if c}, problem

    def entry(self, cluster_key: str) -> TopologyEntry | None:
        cluster = self.clusters.get(cluster_key)
        if cluster is None:
            return None
        spec = getattr(cluster.state, "spec", None)
        app = (
            None
            if spec is None
            else self.applications.get(
                aggregate_id(parse_aggregate_id(cluster_key).tenant, "application", spec.application_id)
            )
        )
        return entry_of(cluster, app)

    def entries(self) -> dict[str, TopologyEntry]:
        return {key: entry for key in self.clusters if (entry := self.entry(key)) is not None}
