"""From an application definition and the definitions it uses to cluster specifications.

Pure functions over Stratos JSON bodies (as stored by the definition aggregates), used by the
application aggregate when every dependency of a deployment has answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

from schemas.definitions import KUBERNETES_CLUSTER_PROPERTY, PredictiveScaling
from schemas.domain import ClusterSpec, ForecastSpec, PartitionSpec
from schemas.ids import cluster_id_for

THRESHOLD_METRICS = {
    "requestsInFlight": "requests_in_flight",
    "memoryConsumption": "memory_consumption",
    "loadAverage": "load_average",
}


def scaling_settings(autoscaling_policy: dict[str, Any]) -> dict[str, Any]:
    """What an autoscaling policy sets in a cluster's spec: the health rules' thresholds (metric
    -> value) and tolerance, the cluster's scale-down settings. Used by deploy and what-if."""
    thresholds = autoscaling_policy.get("loadThresholds") or {}
    return {
        "thresholds": {
            THRESHOLD_METRICS[k]: float(v["threshold"]) for k, v in thresholds.items() if k in THRESHOLD_METRICS and v
        },
        "tolerance": float(autoscaling_policy.get("tolerance") or 0.0),
        "scale_down_stabilisation_seconds": float(autoscaling_policy.get("scaleDownStabilisationSeconds") or 0.0),
        "scale_down_after": int(autoscaling_policy.get("scaleDownAfter") or 4),
        "forecast": forecast_spec(autoscaling_policy.get("predictive")),
    }


def forecast_spec(predictive: dict[str, Any] | None) -> ForecastSpec | None:
    """A policy's ``predictive`` block (Stratos JSON, defaults filled in) as the cluster holds it."""
    if not predictive:
        return None
    p = PredictiveScaling.model_validate(predictive)
    return ForecastSpec(
        mode=p.mode,
        horizon=p.horizonSeconds,
        buffer=p.schedulingBufferSeconds,
        season=p.seasonSeconds,
        bucket=p.bucketSeconds,
    )


def _subscriptions(
    components: dict[str, Any], group_alias: str | None, inherited_policy: str | None
) -> Iterator[tuple[dict[str, Any], str | None, str | None]]:
    """Every cartridge subscription with the alias of its group and the group's policy."""
    for cartridge in components.get("cartridges", []) or []:
        yield cartridge, group_alias, inherited_policy
    for group in components.get("groups", []) or []:
        policy = group.get("deploymentPolicy") or inherited_policy
        yield from _subscriptions(group, group.get("alias"), policy)


def group_definitions(resolved: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every cartridge group definition by name, nested ones (defined inline) included."""
    found: dict[str, dict[str, Any]] = {}
    pending = [body for key, body in resolved.items() if key.startswith("cartridgeGroup/")]
    while pending:
        group = pending.pop()
        found.setdefault(group["name"], group)
        pending += group.get("groups", []) or []
    return found


def _dependency_blocks(
    components: dict[str, Any], groups: dict[str, dict[str, Any]], declared: dict[str, Any] | None = None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(dependencies, the components they are declared in), for the app and every group: a
    group's dependencies live in its definition (Stratos), or else in the application's entry."""
    yield (components.get("dependencies") or {}) if declared is None else declared, components
    for group in components.get("groups", []) or []:
        deps = groups.get(group.get("name", ""), {}).get("dependencies") or group.get("dependencies") or {}
        yield from _dependency_blocks(group, groups, deps)


def _clusters_of(alias_ref: str, components: dict[str, Any], by_alias: dict[str, str]) -> list[str]:
    """Cluster ids behind `cartridge.<alias>` or `group.<alias>` (all clusters of the group)."""
    kind, _, alias = alias_ref.partition(".")
    if kind == "cartridge":
        return [by_alias[alias]] if alias in by_alias else []
    for group in _all_groups(components):
        if group.get("alias") == alias:
            return [by_alias[c["subscribableInfo"]["alias"]] for c, _, _ in _subscriptions(group, alias, None)]
    return []


def _all_groups(components: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in components.get("groups", []) or []:
        yield group
        yield from _all_groups(group)


def _properties(items: Any) -> dict[str, str]:
    return {x["name"]: str(x.get("value")) for x in items or [] if isinstance(x, dict) and x.get("name")}


def kubernetes_properties(cluster: dict[str, Any]) -> dict[str, str]:
    """What a member on a registered kubernetesCluster is started with (Stratos's KubernetesIaas):
    the master's address and port (KUBERNETES_MASTER_PORT, 8080 by default, plain HTTP unless
    KUBERNETES_MASTER_PROTOCOL says https, then with KUBERNETES_MASTER_CA_CERT, the path of the
    cluster's CA certificate) and the cluster's `payload_parameter.*` properties."""
    master = cluster.get("kubernetesMaster") or {}
    settings = _properties(master.get("property"))
    found = {
        "kubernetesMasterHost": master.get("privateIPAddress") or master.get("hostname") or "",
        "kubernetesMasterPort": settings.get("KUBERNETES_MASTER_PORT", "8080"),
        "kubernetesMasterProtocol": settings.get("KUBERNETES_MASTER_PROTOCOL", "http"),
    }
    if ca_cert := settings.get("KUBERNETES_MASTER_CA_CERT"):
        found["kubernetesMasterCaCert"] = ca_cert
    found.update({k: v for k, v in _properties(cluster.get("property")).items() if k.startswith("payload_parameter.")})
    return found


def _partition_properties(
    np_id: str,
    partition: dict[str, Any],
    network_partitions: dict[str, dict[str, Any]],
    resolved: dict[str, dict[str, Any]],
) -> dict[str, str]:
    """A partition's properties: the network partition's (Stratos keeps them there), those of the
    deployment policy's partition over them, and what its Kubernetes cluster, if any, gives."""
    defined: dict[str, Any] = next(
        (p for p in network_partitions.get(np_id, {}).get("partitions", []) or [] if p.get("id") == partition["id"]), {}
    )
    properties = {**_properties(defined.get("property")), **_properties(partition.get("property"))}
    cluster = resolved.get(f"kubernetesCluster/{properties.get(KUBERNETES_CLUSTER_PROPERTY, '')}")
    if cluster is not None:
        properties = {**kubernetes_properties(cluster), **properties}
    return properties


def _partitions(
    deployment_policy: dict[str, Any],
    network_partitions: dict[str, dict[str, Any]],
    allowed: list[str],
    resolved: dict[str, dict[str, Any]],
) -> tuple[str, list[PartitionSpec]]:
    """The partitions of every network partition the application policy allows, in its order
    (the first is where the cluster starts, the others where it may burst), and the partition
    algorithm of the first."""
    nps = [np for np in deployment_policy.get("networkPartitions", []) if not allowed or np["id"] in allowed]
    nps.sort(key=lambda np: allowed.index(np["id"]) if allowed else 0)
    if not nps:
        raise ValueError(
            f"deployment policy {deployment_policy.get('id')!r} has no network partition "
            f"allowed by the application policy ({', '.join(allowed) or 'none'})"
        )
    parts: list[PartitionSpec] = []
    for np in nps:
        provider = network_partitions.get(np["id"], {}).get("provider", "mock")
        for p in np.get("partitions", []):
            if any(known.id == p["id"] for known in parts):
                raise ValueError(
                    f"deployment policy {deployment_policy.get('id')!r}: partition id "
                    f"{p['id']!r} is in two network partitions the application may use"
                )
            parts.append(
                PartitionSpec(
                    id=p["id"],
                    network_partition_id=np["id"],
                    provider=provider,
                    max=int(p.get("partitionMax") or 0),
                    properties=_partition_properties(np["id"], p, network_partitions, resolved),
                )
            )
    return nps[0].get("partitionAlgo") or "one-after-another", parts


LOG_FILE_PROPERTIES = ("log_file_paths", "LOG_FILE_PATHS", "payload_parameter.LOG_FILE_PATHS")
"""Cartridge properties naming the files the agent ships (Stratos's agent read LOG_FILE_PATHS)."""


def log_file_paths(cartridge: dict[str, Any]) -> list[str]:
    """The files of a cartridge's `log_file_paths` property, split on `,` or `|`."""
    for prop in cartridge.get("property", []) or []:
        if isinstance(prop, dict) and prop.get("name") in LOG_FILE_PROPERTIES:
            return [p.strip() for p in str(prop.get("value") or "").replace("|", ",").split(",") if p.strip()]
    return []


def _count(value: Any, default: int) -> int:
    """A count as given (0 included: `cartridgeMin: 0` is honoured), or the default."""
    return default if value is None or value == "" else int(value)


def build_cluster_specs(
    application: dict[str, Any], application_policy_id: str, resolved: dict[str, dict[str, Any]]
) -> list[ClusterSpec]:
    """Resolve every subscription of `application`; raises ValueError naming what is wrong."""
    app_id = application["applicationId"]
    components = application.get("components") or {}
    policy = resolved.get(f"applicationPolicy/{application_policy_id}", {})
    allowed = list(policy.get("networkPartitions", []) or [])
    network_partitions = {k.split("/", 1)[1]: v for k, v in resolved.items() if k.startswith("networkPartition/")}
    subs = list(_subscriptions(components, None, None))
    by_alias = {
        c["subscribableInfo"]["alias"]: cluster_id_for(app_id, c["subscribableInfo"]["alias"], c["type"])
        for c, _, _ in subs
    }
    after: dict[str, list[str]] = {cid: [] for cid in by_alias.values()}
    dependents: dict[str, list[str]] = {cid: [] for cid in by_alias.values()}
    for deps, scope in _dependency_blocks(components, group_definitions(resolved)):
        for order in deps.get("startupOrders", []) or []:
            aliases = order.get("aliases", []) if isinstance(order, dict) else order
            for before, later in pairwise(aliases):
                for cid in _clusters_of(later, scope, by_alias):
                    after[cid] += _clusters_of(before, scope, by_alias)
        for group in deps.get("scalingDependents", []) or []:
            aliases = group.get("aliases", []) if isinstance(group, dict) else group
            members = [c for a in aliases for c in _clusters_of(a, scope, by_alias)]
            for cid in members:
                dependents[cid] += [m for m in members if m != cid]
    specs = []
    for cartridge, group_alias, group_policy in subs:
        info = cartridge["subscribableInfo"]
        alias = info["alias"]
        dp_id = info.get("deploymentPolicy") or group_policy
        as_id = info.get("autoscalingPolicy")
        if not dp_id:
            raise ValueError(f"subscription {alias!r} names no deploymentPolicy")
        if not as_id:
            raise ValueError(f"subscription {alias!r} names no autoscalingPolicy")
        cartridge_def = resolved[f"cartridge/{cartridge['type']}"]
        autoscaling = resolved[f"autoscalingPolicy/{as_id}"]
        algorithm, partitions = _partitions(
            resolved[f"deploymentPolicy/{dp_id}"], network_partitions, allowed, resolved
        )
        repo = info.get("artifactRepository") or {}
        cid = by_alias[alias]
        specs.append(
            ClusterSpec(
                cluster_id=cid,
                application_id=app_id,
                alias=alias,
                cartridge_type=cartridge["type"],
                category=cartridge_def.get("category"),
                group_alias=group_alias,
                min=_count(cartridge.get("cartridgeMin"), 1),
                max=max(_count(cartridge.get("cartridgeMax"), 1), 1),
                autoscaling_policy_id=as_id,
                deployment_policy_id=dp_id,
                partition_algorithm=algorithm,
                partitions=partitions,
                **scaling_settings(autoscaling),
                iaas={p.get("provider") or p.get("type"): p for p in cartridge_def.get("iaasProvider", []) or []},
                ports=list(cartridge_def.get("portMapping", []) or []),
                repo_url=repo.get("repoUrl"),
                repo_username=repo.get("repoUsername") or None,
                repo_password=repo.get("repoPassword") or None,
                scaling_dependents=sorted(set(dependents[cid])),
                startup_after=sorted(set(after[cid])),
                log_file_paths=log_file_paths(cartridge_def),
            )
        )
    return specs


def termination_scope(
    application: dict[str, Any], resolved: dict[str, dict[str, Any]], cluster_id: str
) -> tuple[str, list[str]]:
    """The terminationBehaviour of the innermost group (or the application) holding the
    cluster, and the cluster ids of that group, nested groups included."""
    app_id = application["applicationId"]
    found: tuple[str, list[str]] = ("terminate-none", [])
    size = None
    for deps, scope in _dependency_blocks(application.get("components") or {}, group_definitions(resolved)):
        members = [
            cluster_id_for(app_id, c["subscribableInfo"]["alias"], c["type"])
            for c, _, _ in _subscriptions(scope, None, None)
        ]
        if cluster_id in members and (size is None or len(members) < size):
            found, size = (deps.get("terminationBehaviour") or "terminate-none", members), len(members)
    return found


def dependents_of(clusters: dict[str, ClusterSpec], cluster_id: str) -> list[str]:
    """Clusters started after this one, directly or through others (startup order)."""
    found: list[str] = []
    frontier = [cluster_id]
    while frontier:
        current = frontier.pop()
        for spec in clusters.values():
            if current in spec.startup_after and spec.cluster_id not in found:
                found.append(spec.cluster_id)
                frontier.append(spec.cluster_id)
    return found


def clusters_ready_to_start(
    clusters: dict[str, ClusterSpec], status: dict[str, str], started: tuple[str, ...]
) -> list[ClusterSpec]:
    """Clusters not started yet whose predecessors in startup order are all Active.

    Siblings without an order between them start together (in parallel)."""
    return [
        spec
        for cid, spec in clusters.items()
        if cid not in started and all(status.get(p) == "Active" for p in spec.startup_after)
    ]
