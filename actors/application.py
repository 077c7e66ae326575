"""The application aggregate: the definition (Created ⇄ Deployed) and its deployment.

Deploying is a conversation through `stratos.commands`: the application asks every definition
it uses to mark itself used (which also sends back its body), and once all have answered it
resolves the cluster specifications and asks for the clusters to be created, in startup order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from actors import definitions, metadata
from actors import instances as I
from actors.base import Context, Rejection, evolve, folded, not_found
from actors.topology_plan import (
    build_cluster_specs,
    clusters_ready_to_start,
    dependents_of,
    group_definitions,
    termination_scope,
)
from schemas import app_scaling as X
from schemas import commands as C
from schemas import events as E
from schemas.definitions import DEFINITION_KINDS
from schemas.domain import ApplicationStatus, ClusterSpec
from schemas.ids import parse_aggregate_id
from schemas.metadata import METADATA_COMMANDS, METADATA_EVENTS

DEFINITION_COMMANDS = tuple(c for c in C.DEFINITION_COMMANDS if c.__name__.endswith("Application"))


class ApplicationState(definitions.DefinitionState):
    status: ApplicationStatus = ApplicationStatus.CREATED
    application_policy_id: str | None = None
    needs: tuple[tuple[str, str], ...] = ()
    resolved: dict[str, dict[str, Any]] = {}
    clusters: dict[str, ClusterSpec] = {}
    cluster_status: dict[str, str] = {}
    started: tuple[str, ...] = ()
    force: bool = False
    signups: dict[str, dict[str, Any]] = {}
    """tenant -> its sign-up: `artifactRepositories` as given, `clusters` alias -> cluster id."""
    domain_mappings: dict[str, dict[str, Any]] = {}
    """domain name -> the mapping (cartridgeAlias, domainName, contextPath, clusterId, tenant)."""
    metadata: dict[str, dict[str, list[str]]] = {}
    """The metadata service's properties: scope ("" or a cartridge alias) -> key -> values."""
    group_instances: dict[str, int] = {}
    """group alias -> its group instances, once changed (else groupMinInstances)."""
    burst: int = 1
    """Bursting steps (network partition groups) in use."""
    demands: dict[str, int] = {}
    """cluster id -> the cluster instances it last asked for."""


def initial(aggregate_id: str) -> ApplicationState:
    return ApplicationState(aggregate_id=aggregate_id, kind="application")


def _key(kind: str, id: str) -> str:
    return f"{kind}/{id}"


def needed_by(kind: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """What a resolved dependency brings in: a deployment policy its network partitions, a
    Kubernetes network partition its cluster (the reactor asks for them; `outstanding` waits)."""
    if kind == "deploymentPolicy":
        return [("networkPartition", np["id"]) for np in body.get("networkPartitions", [])]
    if kind == "networkPartition":
        return DEFINITION_KINDS["networkPartition"].model_validate(body).references()
    return []


def outstanding(state: ApplicationState) -> list[tuple[str, str]]:
    """Dependencies not yet resolved, including those resolved definitions bring in."""
    needed = list(state.needs)
    for key, body in state.resolved.items():
        needed += needed_by(key.split("/", 1)[0], body)
    return [(k, i) for k, i in dict.fromkeys(needed) if _key(k, i) not in state.resolved]


def decide(state: ApplicationState, command: BaseModel, ctx: Context) -> list[BaseModel]:
    app_id = parse_aggregate_id(state.aggregate_id).id
    deployed = state.status not in (ApplicationStatus.CREATED,)
    if isinstance(command, C.UpdateApplication) and state.status in RUNNING:  # type: ignore[attr-defined]
        return decide_live_update(state, command, ctx)
    if isinstance(command, (*DEFINITION_COMMANDS, C.MarkDefinitionUsed, C.ReleaseDefinition)):
        if (
            deployed
            and not isinstance(command, (C.MarkDefinitionUsed, C.ReleaseDefinition))
            and not command.type.startswith("Add")  # type: ignore[attr-defined]
        ):
            raise Rejection(f"application {app_id!r} is {state.status.value}: undeploy it first", field=app_id)
        return definitions.decide(state, command, ctx)
    if not state.exists:
        raise not_found("application", app_id)
    if isinstance(command, C.DeployApplication):
        if deployed:
            raise Rejection(f"application {app_id!r} is already {state.status.value}", field=app_id, code=409)
        model = DEFINITION_KINDS["application"].model_validate(state.definition)
        needs = [("applicationPolicy", command.application_policy_id)] + list(model.references())
        return [
            E.ApplicationDeploymentRequested(
                application_policy_id=command.application_policy_id, needs=list(dict.fromkeys(needs))
            )
        ]
    if isinstance(command, C.RecordDependencyResolved):
        if state.status == ApplicationStatus.CREATED:  # late answer to a failed deployment
            return [E.ApplicationDependencyReleased(kind=command.kind, id=command.id)]
        if state.status != ApplicationStatus.DEPLOYING or _key(command.kind, command.id) in state.resolved:
            return []
        resolved = E.ApplicationDependencyResolved(kind=command.kind, id=command.id, definition=command.definition)
        after = apply(state, resolved)
        if outstanding(after):
            return [resolved]
        try:
            specs = build_cluster_specs(after.definition or {}, after.application_policy_id or "", after.resolved)
        except ValueError as exc:
            return [resolved, E.ApplicationDeploymentFailed(reason=str(exc), release=_used(after))]
        deployed_event = E.ApplicationDeployed(application_policy_id=after.application_policy_id or "", clusters=specs)
        return [resolved, deployed_event, *_start(apply(after, deployed_event))]
    if isinstance(command, C.RecordDependencyMissing):
        if state.status != ApplicationStatus.DEPLOYING:
            return []
        return [
            E.ApplicationDeploymentFailed(
                reason=f"cannot deploy application {app_id!r}: {command.reason}", release=_used(state)
            )
        ]
    if isinstance(command, C.RecordClusterStatus):
        return _cluster_status(state, command)
    if isinstance(command, SIGNUP_COMMANDS):
        return decide_signup(state, command)
    if isinstance(command, METADATA_COMMANDS):
        return metadata.decide(
            app_id, state.status, {s.alias for s in state.clusters.values()}, state.metadata, command
        )
    if isinstance(command, X.RecordClusterDemand):
        return decide_instances(state, command)
    if isinstance(command, C.UndeployApplication):
        if state.signups:
            raise Rejection(
                f"application {app_id!r} has sign-ups by {', '.join(sorted(state.signups))}: "
                f"remove them before undeploying",
                field=app_id,
            )
        if state.status in (ApplicationStatus.CREATED, ApplicationStatus.UNDEPLOYING):
            raise Rejection(f"application {app_id!r} is not deployed", field=app_id)
        if state.status == ApplicationStatus.DEPLOYING:
            return [E.ApplicationDeploymentFailed(reason="undeployed while deploying", release=_used(state))]
        # the clusters go away: so do the (single-tenant) domain mappings routed to them
        events: list[BaseModel] = [
            *_unmap(state, list(state.domain_mappings)),
            E.ApplicationUndeploying(force=command.force, clusters=list(state.started)),
        ]
        if not state.started:
            events.append(E.ApplicationUndeployed(release=_used(state)))
        return events
    raise Rejection(f"command {command.type} does not apply to an application")  # type: ignore[attr-defined]


SIGNUP_COMMANDS = (C.AddApplicationSignup, C.RemoveApplicationSignup, C.AddDomainMappings, C.RemoveDomainMappings)
RUNNING = (ApplicationStatus.DEPLOYED, ApplicationStatus.ACTIVE, ApplicationStatus.INACTIVE)


def decide_signup(state: ApplicationState, command: BaseModel) -> list[BaseModel]:
    """Sign-ups and domain mappings (Stratos 4.1's StratosApiV41Utils rules): a tenant signs up
    once for a deployed multi-tenant application; a mapping routes a domain, unique within the
    application, to the cluster of one of its cartridge aliases."""
    app_id = parse_aggregate_id(state.aggregate_id).id
    tenant: str = command.tenant  # type: ignore[attr-defined]
    aliases = {spec.alias: spec.cluster_id for spec in state.clusters.values()}
    if isinstance(command, C.RemoveApplicationSignup):
        if tenant not in state.signups:
            raise Rejection(f"tenant {tenant!r} has not signed up for application {app_id!r}", field=tenant, code=404)
        return [
            *_unmap(state, [d for d, m in state.domain_mappings.items() if m["tenant"] == tenant]),
            E.ApplicationSignupRemoved(tenant=tenant),
        ]
    if isinstance(command, C.RemoveDomainMappings):
        unknown = [d for d in command.domain_names if state.domain_mappings.get(d, {}).get("tenant") != tenant]
        if unknown:
            raise Rejection(
                f"domain mapping {unknown[0]!r} not found for application {app_id!r}", field=unknown[0], code=404
            )
        return _unmap(state, list(dict.fromkeys(command.domain_names)))
    if state.status not in RUNNING:
        raise Rejection(f"application {app_id!r} has not been deployed", field=app_id)
    multi_tenant = bool((state.definition or {}).get("multiTenant"))
    if isinstance(command, C.AddApplicationSignup):
        if not multi_tenant:
            raise Rejection(
                f"application {app_id!r} is single-tenant: sign-ups are for multi-tenant applications",
                field="multiTenant",
            )
        if tenant in state.signups:
            raise Rejection(
                f"tenant {tenant!r} has already signed up for application {app_id!r}", field=tenant, code=409
            )
        repositories = command.signup.artifactRepositories
        _known_aliases(app_id, aliases, [r.alias for r in repositories], "artifactRepositories.alias")
        return [
            E.ApplicationSignupAdded(
                tenant=tenant,
                clusters={r.alias: aliases[r.alias] for r in repositories},
                artifact_repositories=[r.model_dump(mode="json", by_alias=True) for r in repositories],
            )
        ]
    assert isinstance(command, C.AddDomainMappings)
    if multi_tenant and tenant not in state.signups:
        raise Rejection(
            f"tenant {tenant!r} has not signed up for application {app_id!r}: sign up before adding domain mappings",
            field=tenant,
        )
    mappings = command.mappings.domainMappings
    _known_aliases(app_id, aliases, [m.cartridgeAlias for m in mappings], "domainMappings.cartridgeAlias")
    names = [m.domainName for m in mappings]
    taken = [n for n in names if n in state.domain_mappings] + [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if taken:
        raise Rejection(
            f"domain name {taken[0]!r} is already mapped in application {app_id!r}", field=taken[0], code=409
        )
    return [
        E.DomainMappingsAdded(
            tenant=tenant,
            mappings=[
                {**m.model_dump(mode="json", by_alias=True, exclude_none=True), "clusterId": aliases[m.cartridgeAlias]}
                for m in mappings
            ],
        )
    ]


def _known_aliases(app_id: str, aliases: dict[str, str], wanted: list[str], field: str) -> None:
    unknown = [a for a in wanted if a not in aliases]
    if unknown:
        raise Rejection(
            f"{field} {unknown[0]!r} is not a cartridge alias of application {app_id!r} "
            f"(aliases: {', '.join(sorted(aliases)) or 'none'})",
            field=field,
        )


def _unmap(state: ApplicationState, domain_names: list[str]) -> list[BaseModel]:
    return [
        E.DomainMappingRemoved(
            tenant=state.domain_mappings[name]["tenant"],
            domain_name=name,
            cluster_id=state.domain_mappings[name]["clusterId"],
        )
        for name in domain_names
    ]


def _used(state: ApplicationState) -> list[tuple[str, str]]:
    return [tuple(key.split("/", 1)) for key in state.resolved]  # type: ignore[misc]


def _start(state: ApplicationState) -> list[BaseModel]:
    ready = clusters_ready_to_start(state.clusters, state.cluster_status, state.started)
    if not ready:
        return []
    held = _topology(state).instances(state.group_instances, state.burst)
    return [
        E.ClustersStartRequested(
            clusters=[spec.model_copy(update={"instances": held[spec.cluster_id]}) for spec in ready]
        )
    ]


# --- live updates, group scaling, bursting (docs/operators/applications.md; rules in actors.instances)

LIVE_FIELDS = {
    "cartridgeMin",
    "cartridgeMax",
    "groupMinInstances",
    "groupMaxInstances",
    "groupScalingEnabled",
    "scalingDependents",
}
"""What a live update of a deployed application may change (at any depth)."""
LIVE_TOP_FIELDS = {"name", "description", "property"}


def structural_change(old: Any, new: Any, path: str = "") -> str | None:
    """The first field (as a path into the application JSON) where `new` changes more than
    the limits and scaling settings a running application may change; None when it does not."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):
            if key in LIVE_FIELDS or (not path and key in LIVE_TOP_FIELDS):
                continue
            found = structural_change(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return path
        for n, (a, b) in enumerate(zip(old, new, strict=True)):
            if found := structural_change(a, b, f"{path}[{n}]"):
                return found
        return None
    return None if old == new or (not old and not new) else path


def _topology(state: ApplicationState) -> I.Topology:
    definition = state.definition or {}
    policy = state.resolved.get(f"applicationPolicy/{state.application_policy_id}", {})
    cluster_nps = {cid: I.network_partitions_of(spec.partitions) for cid, spec in state.clusters.items()}
    available = list(dict.fromkeys(np for nps in cluster_nps.values() for np in nps))
    return I.Topology(
        I.groups_of(definition, group_definitions(state.resolved)), I.burst_steps(policy, available), cluster_nps
    )


def _instances_changed(before: ApplicationState, after: ApplicationState, reason: str) -> list[BaseModel]:
    """The started clusters whose cluster instances differ between two states."""
    was = _topology(before).instances(before.group_instances, before.burst)
    now_topology = _topology(after)
    now = now_topology.instances(after.group_instances, after.burst)
    changed = {cid: nps for cid, nps in now.items() if cid in after.started and nps != was.get(cid)}
    counts = now_topology.counts(after.group_instances)
    if counts == _topology(before).counts(before.group_instances) and after.burst == before.burst:
        return []
    return [X.ApplicationInstancesChanged(group_instances=counts, burst=after.burst, clusters=changed, reason=reason)]


def decide_live_update(state: ApplicationState, command: BaseModel, ctx: Context) -> list[BaseModel]:
    """`PUT /api/applications` on a running application (Stratos's ApplicationUpdateTestCase):
    limits and scaling settings change and the running clusters converge; its structure
    (aliases, cartridge types, group nesting, policies) does not."""
    app_id = parse_aggregate_id(state.aggregate_id).id
    new = command.definition.model_dump(mode="json", by_alias=True)  # type: ignore[attr-defined]
    if field := structural_change(state.definition or {}, new):
        raise Rejection(
            f"application {app_id!r} is {state.status.value}: {field} cannot change on a "
            f"running application (only cartridgeMin, cartridgeMax, groupMinInstances, "
            f"groupMaxInstances, groupScalingEnabled and scalingDependents can); undeploy it "
            f"first",
            field=field,
        )
    updated = definitions.decide(state, command, ctx)
    after = apply(state, updated[0])
    try:
        specs = build_cluster_specs(new, state.application_policy_id or "", state.resolved)
    except ValueError as exc:
        raise Rejection(str(exc), field=app_id) from exc
    changed = [
        spec
        for spec in specs
        if (old := state.clusters.get(spec.cluster_id)) is not None
        and (old.min, old.max, old.scaling_dependents) != (spec.min, spec.max, spec.scaling_dependents)
    ]
    events: list[BaseModel] = list(updated)
    if changed:
        limits = X.ApplicationLimitsUpdated(
            clusters=changed, running=[s.cluster_id for s in changed if s.cluster_id in state.started]
        )
        events.append(limits)
        after = apply(after, limits)
    topology = _topology(after)
    counts = {
        alias: min(max(n, topology.groups[alias].floor), max(topology.groups[alias].max, 1))
        for alias, n in topology.counts(after.group_instances).items()
    }
    regrouped = evolve(after, {"group_instances": counts})
    return events + _instances_changed(after, regrouped, "ApplicationUpdated: group instance limits")


def decide_instances(state: ApplicationState, command: X.RecordClusterDemand) -> list[BaseModel]:
    """A cluster asked for more (or fewer) cluster instances: one group instance more or less,
    or one bursting step, by `actors.instances.plan_instances`."""
    if (
        state.status not in RUNNING
        or command.cluster_id not in state.clusters
        or state.demands.get(command.cluster_id) == command.wanted
    ):
        return []
    recorded = X.ApplicationClusterDemandRecorded(cluster_id=command.cluster_id, wanted=command.wanted)
    after = apply(state, recorded)
    plan = I.plan_instances(_topology(after), after.group_instances, after.burst, after.demands, command.cluster_id)
    if plan is None:
        return [recorded]
    return [
        recorded,
        *_instances_changed(
            after, evolve(after, {"group_instances": plan.group_instances, "burst": plan.burst}), plan.reason
        ),
    ]


def apply_scaling(state: ApplicationState, event: BaseModel) -> ApplicationState:
    if isinstance(event, X.ApplicationLimitsUpdated):
        return evolve(state, {"clusters": {**state.clusters, **{s.cluster_id: s for s in event.clusters}}})
    if isinstance(event, X.ApplicationClusterDemandRecorded):
        return evolve(state, {"demands": {**state.demands, event.cluster_id: event.wanted}})
    assert isinstance(event, X.ApplicationInstancesChanged)
    # the clusters changed ask again, relative to what they now hold
    return evolve(
        state,
        {
            "group_instances": dict(event.group_instances),
            "burst": event.burst,
            "demands": {c: n for c, n in state.demands.items() if c not in event.clusters},
        },
    )


def _cluster_status(state: ApplicationState, command: C.RecordClusterStatus) -> list[BaseModel]:
    if command.cluster_id not in state.clusters or state.cluster_status.get(command.cluster_id) == command.status:
        return []
    changed = E.ApplicationClusterStatusChanged(cluster_id=command.cluster_id, status=command.status)
    after = apply(state, changed)
    events: list[BaseModel] = [changed]
    statuses = [after.cluster_status.get(c) for c in after.clusters]
    if state.status == ApplicationStatus.UNDEPLOYING:
        if all(s == "Terminated" for s in (after.cluster_status.get(c) for c in after.started)):
            events.append(E.ApplicationUndeployed(release=_used(after)))
        return events
    if all(s == "Active" for s in statuses) and state.status != ApplicationStatus.ACTIVE:
        events.append(E.ApplicationStatusChanged(status=ApplicationStatus.ACTIVE.value))
    elif command.status == "Inactive" and state.status == ApplicationStatus.ACTIVE:
        events.append(E.ApplicationStatusChanged(status=ApplicationStatus.INACTIVE.value))
    if command.status == "Inactive":
        events += _terminations(after, command.cluster_id)
    return events + _start(after)


def _terminations(state: ApplicationState, cluster_id: str) -> list[BaseModel]:
    """The termination behaviour of the group the Inactive cluster belongs to: terminate-all
    takes every started cluster of the group, terminate-dependents those started after it."""
    behaviour, scope = termination_scope(state.definition or {}, state.resolved, cluster_id)
    if behaviour == "terminate-all":
        targets = scope
    elif behaviour == "terminate-dependents":
        targets = [c for c in dependents_of(state.clusters, cluster_id) if c in scope]
    else:
        return []
    targets = [
        c for c in targets if c in state.started and state.cluster_status.get(c) not in ("Terminating", "Terminated")
    ]
    if not targets:
        return []
    return [E.GroupTerminationRequested(cluster_id=cluster_id, behaviour=behaviour, clusters=targets)]


def apply(state: ApplicationState, event: BaseModel, at: datetime | None = None) -> ApplicationState:
    if isinstance(
        event, (X.ApplicationLimitsUpdated, X.ApplicationClusterDemandRecorded, X.ApplicationInstancesChanged)
    ):
        return apply_scaling(state, event)
    if isinstance(event, E.ApplicationDeploymentRequested):
        return evolve(
            state,
            {
                "status": ApplicationStatus.DEPLOYING,
                "application_policy_id": event.application_policy_id,
                "needs": tuple(tuple(n) for n in event.needs),
                "resolved": {},
                "clusters": {},
                "cluster_status": {},
                "started": (),
                "group_instances": {},
                "burst": 1,
                "demands": {},
            },
        )
    if isinstance(event, E.ApplicationDependencyResolved):
        return evolve(state, {"resolved": {**state.resolved, _key(event.kind, event.id): event.definition}})
    if isinstance(event, E.ApplicationDeploymentFailed):
        return evolve(
            state, {"status": ApplicationStatus.CREATED, "needs": (), "resolved": {}, "application_policy_id": None}
        )
    if isinstance(event, E.ApplicationDeployed):
        return evolve(
            state, {"status": ApplicationStatus.DEPLOYED, "clusters": {c.cluster_id: c for c in event.clusters}}
        )
    if isinstance(event, E.ClustersStartRequested):
        return evolve(state, {"started": state.started + tuple(c.cluster_id for c in event.clusters)})
    if isinstance(event, E.ApplicationClusterStatusChanged):
        return evolve(state, {"cluster_status": {**state.cluster_status, event.cluster_id: event.status}})
    if isinstance(event, E.ApplicationStatusChanged):
        return evolve(state, {"status": ApplicationStatus(event.status)})
    if isinstance(event, E.ApplicationUndeploying):
        return evolve(state, {"status": ApplicationStatus.UNDEPLOYING, "force": event.force})
    if isinstance(event, E.ApplicationSignupAdded):
        signup = {"artifactRepositories": event.artifact_repositories, "clusters": event.clusters}
        return evolve(state, {"signups": {**state.signups, event.tenant: signup}})
    if isinstance(event, E.ApplicationSignupRemoved):
        return evolve(state, {"signups": {t: s for t, s in state.signups.items() if t != event.tenant}})
    if isinstance(event, E.DomainMappingsAdded):
        added = {m["domainName"]: {**m, "tenant": event.tenant} for m in event.mappings}
        return evolve(state, {"domain_mappings": {**state.domain_mappings, **added}})
    if isinstance(event, E.DomainMappingRemoved):
        return evolve(
            state, {"domain_mappings": {d: m for d, m in state.domain_mappings.items() if d != event.domain_name}}
        )
    if isinstance(event, METADATA_EVENTS):
        return evolve(state, {"metadata": metadata.apply(state.metadata, event)})
    if isinstance(event, E.ApplicationUndeployed):  # undeploying removes the metadata too
        return evolve(
            state,
            {
                "metadata": {},
                "status": ApplicationStatus.CREATED,
                "needs": (),
                "resolved": {},
                "clusters": {},
                "cluster_status": {},
                "started": (),
                "application_policy_id": None,
                "force": False,
                "group_instances": {},
                "burst": 1,
                "demands": {},
            },
        )
    return definitions.apply(state, event)  # type: ignore[return-value]


def fold(
    state: ApplicationState, events: list[BaseModel], at: datetime | None, in_place: bool = False
) -> ApplicationState:
    """`state` after `events` (`in_place` is the cluster's saving; these states hold no large
    containers, so every fold here copies)."""
    return folded(apply, state, events, at)


def decide_and_fold(
    state: ApplicationState, command: BaseModel, ctx: Context
) -> tuple[list[BaseModel], ApplicationState]:
    events = decide(state, command, ctx)
    return events, fold(state, events, ctx.now)
