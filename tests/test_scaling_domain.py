"""Dependent scaling and termination behaviours as pure rules: given events, when a command,
then events (Stratos 4.1's dependent scaling and termination behaviours: docs/operators/autoscaler.md).
Each case says what would break without the rule."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from actors import application, cluster
from actors.base import Context
from actors.reactions import react
from actors.topology_plan import build_cluster_specs, dependents_of, termination_scope
from infra.log.kafka import envelope
from schemas import commands as C
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import EventRecord
from tests.conftest import sample
from tests.test_topology_plan import resolved_for_nested_app

T = "carbon.super"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
IDS = itertools.count(1)


def ctx() -> Context:
    """Member ids unique across every decision of the module's tests."""
    return Context(now=NOW, new_id=lambda: f"m{next(IDS)}")


def spec(cluster_id: str, min_count: int, max_count: int, dependents: list[str]) -> ClusterSpec:
    return ClusterSpec(
        cluster_id=cluster_id,
        application_id="app",
        alias=cluster_id.split(".")[1],
        cartridge_type="php",
        min=min_count,
        max=max_count,
        autoscaling_policy_id="as",
        deployment_policy_id="dp",
        partition_algorithm="round-robin",
        partitions=[PartitionSpec(id=p, network_partition_id="np", provider="mock", max=6) for p in ("p1", "p2")],
        scaling_dependents=dependents,
    )


def cluster_with(spec_: ClusterSpec, active: int) -> cluster.ClusterState:
    """A cluster whose `active` members are all Active."""
    state = cluster.initial(f"{T}/cluster/{spec_.cluster_id}")
    context = ctx()
    state = cluster.fold(state, cluster.decide(state, C.CreateCluster(spec=spec_), context), NOW)
    extra = active - spec_.min
    if extra > 0:
        events = cluster.decide(state, C.ScaleCluster(required=active, metric="load_average"), context)
        state = cluster.fold(state, [e for e in events if not isinstance(e, E.DependentScalingRequested)], NOW)
    for member in list(state.members):
        for command in (
            C.ReportNodeCreated(member_id=member, node_id=member),
            C.ReportInstanceStatus(member_id=member, status="Started"),
            C.ReportInstanceStatus(member_id=member, status="Activated"),
        ):
            state = cluster.fold(state, cluster.decide(state, command, context), NOW)
    assert state.active == active
    return state


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


PHP = "app.php1.php.domain"
TOMCAT = "app.tomcat1.tomcat.domain"


def test_own_requirement_is_announced_to_dependents_as_a_factor_of_min_2_of_1_is_2():
    state = cluster_with(spec(PHP, 1, 4, [TOMCAT]), active=1)
    events = cluster.decide(state, C.ScaleCluster(required=2, metric="load_average"), ctx())
    (announced,) = of(events, E.DependentScalingRequested)
    assert (announced.factor, announced.required, announced.min, announced.clusters) == (2.0, 2, 1, [TOMCAT])
    assert len(of(events, E.MemberSpawnRequested)) == 1  # and it scales itself


def test_the_same_factor_is_not_announced_again_each_hop():
    state = cluster_with(spec(PHP, 1, 4, [TOMCAT]), active=1)
    state = cluster.fold(state, cluster.decide(state, C.ScaleCluster(required=2, metric="load_average"), ctx()), NOW)
    again = cluster.decide(state, C.ScaleCluster(required=2, metric="load_average"), ctx())
    assert of(again, E.DependentScalingRequested) == []


def test_factor_counts_required_within_min_and_max_past_max_6_of_2_is_3():
    state = cluster_with(spec(PHP, 2, 6, [TOMCAT]), active=2)
    events = cluster.decide(state, C.ScaleCluster(required=9, metric="load_average"), ctx())
    assert of(events, E.DependentScalingRequested)[0].factor == 3.0


def test_a_cluster_without_dependents_announces_nothing():
    state = cluster_with(spec(PHP, 1, 4, []), active=1)
    events = cluster.decide(state, C.ScaleCluster(required=3, metric="load_average"), ctx())
    assert of(events, E.DependentScalingRequested) == []


def test_dependent_keeps_factor_times_its_min_factor_2_min_2_spawns_to_4():
    state = cluster_with(spec(TOMCAT, 2, 6, [PHP]), active=2)
    events = cluster.decide(state, C.ScaleAsDependent(source_cluster_id=PHP, factor=2.0), ctx())
    (floor,) = of(events, E.DependentFloorChanged)
    assert floor.required == 4
    assert len(of(events, E.MemberSpawnRequested)) == 2
    # a requirement that came from a dependent is not echoed back (it would ratchet up)
    assert of(events, E.DependentScalingRequested) == []


def test_dependent_floor_outvotes_its_own_lower_requirement():
    """Without the floor, the dependent's own health (load low) would scale it back down."""
    state = cluster_with(spec(TOMCAT, 2, 6, [PHP]), active=2)
    state = cluster.fold(
        state, cluster.decide(state, C.ScaleAsDependent(source_cluster_id=PHP, factor=2.0), ctx()), NOW
    )
    state = cluster_with_pending_activated(state)
    for _ in range(5):
        events = cluster.decide(state, C.ScaleCluster(required=1, metric="load_average"), ctx())
        assert of(events, E.MemberTerminationRequested) == []
        state = cluster.fold(state, events, NOW)
    assert state.active == 4


def test_dependent_floor_is_capped_at_max_factor_4_min_2_max_6_is_6():
    state = cluster_with(spec(TOMCAT, 2, 6, [PHP]), active=2)
    events = cluster.decide(state, C.ScaleAsDependent(source_cluster_id=PHP, factor=4.0), ctx())
    assert of(events, E.DependentFloorChanged)[0].required == 6


def cluster_with_pending_activated(state: cluster.ClusterState) -> cluster.ClusterState:
    context = ctx()
    for member in [m for m, s in state.members.items() if s.is_pending]:
        for command in (
            C.ReportNodeCreated(member_id=member, node_id=member),
            C.ReportInstanceStatus(member_id=member, status="Started"),
            C.ReportInstanceStatus(member_id=member, status="Activated"),
        ):
            state = cluster.fold(state, cluster.decide(state, command, context), NOW)
    return state


def test_reaction_sends_the_factor_to_every_dependent():
    record = envelope(
        EventRecord,
        E.DependentScalingRequested(factor=2.0, required=2, min=1, clusters=[TOMCAT, "app.x.php.domain"]),
        f"{T}/cluster/{PHP}",
        tenant=T,
    )
    assert react(record) == [
        (f"{T}/cluster/{TOMCAT}", C.ScaleAsDependent(source_cluster_id=PHP, factor=2.0)),
        (f"{T}/cluster/app.x.php.domain", C.ScaleAsDependent(source_cluster_id=PHP, factor=2.0)),
    ]


# --- termination behaviours --------------------------------------------------------------------

NESTED = "nested-group-app"


def nested(alias: str, cartridge: str) -> str:
    return f"{NESTED}.{alias}.{cartridge}.domain"


def test_innermost_group_gives_the_termination_behaviour_and_its_clusters():
    app, resolved = sample("application-nested-group.json"), resolved_for_nested_app()
    # app-group (terminate-all) holds php-app and tomcat-app
    assert termination_scope(app, resolved, nested("my-php-app", "php")) == (
        "terminate-all",
        [nested("my-tomcat-app", "tomcat"), nested("my-php-app", "php")],
    )
    # web-group (terminate-dependents) is the innermost group of php-web
    behaviour, scope = termination_scope(app, resolved, nested("my-php-web", "php"))
    assert behaviour == "terminate-dependents" and len(scope) == 3
    # the top-level tomcat is in the application's own block (terminate-all)
    assert termination_scope(app, resolved, nested("my-tomcat", "tomcat"))[0] == "terminate-all"


def test_dependents_follow_startup_order_transitively():
    specs = {
        s.cluster_id: s
        for s in build_cluster_specs(sample("application-nested-group.json"), "ap", resolved_for_nested_app())
    }
    # php-app -> tomcat-app -> php-web (app-group before php-web) -> tomcat (web-group before tomcat)
    assert sorted(dependents_of(specs, nested("my-tomcat-app", "tomcat"))) == sorted(
        [nested("my-php-web", "php"), nested("my-tomcat", "tomcat")]
    )
    assert dependents_of(specs, nested("my-tomcat", "tomcat")) == []


def deployed_nested_app() -> application.ApplicationState:
    """The nested application deployed, every cluster started and Active."""
    resolved = resolved_for_nested_app()
    specs = build_cluster_specs(sample("application-nested-group.json"), "ap", resolved)
    state = application.initial(f"{T}/application/{NESTED}")
    state = state.model_copy(
        update={
            "exists": True,
            "definition": sample("application-nested-group.json"),
            "resolved": resolved,
            "application_policy_id": "ap",
            "status": "Active",
            "clusters": {s.cluster_id: s for s in specs},
            "started": tuple(s.cluster_id for s in specs),
            "cluster_status": {s.cluster_id: "Active" for s in specs},
        }
    )
    return state


@pytest.mark.parametrize(
    "failed, behaviour, terminated",
    [
        (
            nested("my-php-app", "php"),
            "terminate-all",
            [nested("my-tomcat-app", "tomcat"), nested("my-php-app", "php")],
        ),
        (nested("my-php-web", "php"), "terminate-dependents", []),  # nothing in web-group starts after php-web
        (
            nested("my-tomcat-app", "tomcat"),
            "terminate-all",
            [nested("my-tomcat-app", "tomcat"), nested("my-php-app", "php")],
        ),
    ],
    ids=[
        "terminate-all-takes-the-whole-group",
        "terminate-dependents-without-dependents-takes-none",
        "terminate-all-from-either-member",
    ],
)
def test_an_inactive_cluster_applies_its_groups_termination_behaviour(failed, behaviour, terminated):
    state = deployed_nested_app()
    events = application.decide(state, C.RecordClusterStatus(cluster_id=failed, status="Inactive"), ctx())
    requested = of(events, E.GroupTerminationRequested)
    if not terminated:
        assert requested == []
        return
    (request,) = requested
    assert (request.cluster_id, request.behaviour, request.clusters) == (failed, behaviour, terminated)


def test_clusters_already_terminating_are_not_asked_again():
    state = deployed_nested_app()
    state = state.model_copy(
        update={"cluster_status": {**state.cluster_status, nested("my-tomcat-app", "tomcat"): "Terminating"}}
    )
    events = application.decide(
        state, C.RecordClusterStatus(cluster_id=nested("my-php-app", "php"), status="Inactive"), ctx()
    )
    assert of(events, E.GroupTerminationRequested)[0].clusters == [nested("my-php-app", "php")]


def test_an_inactive_cluster_in_a_terminate_none_application_terminates_nothing():
    state = deployed_nested_app()
    definition = sample("application-nested-group.json")
    definition["components"]["dependencies"]["terminationBehaviour"] = "terminate-none"
    state = state.model_copy(update={"definition": definition})
    events = application.decide(
        state, C.RecordClusterStatus(cluster_id=nested("my-tomcat", "tomcat"), status="Inactive"), ctx()
    )
    assert of(events, E.GroupTerminationRequested) == []


def test_reaction_terminates_each_cluster_of_the_request():
    record = envelope(
        EventRecord,
        E.GroupTerminationRequested(cluster_id="a", behaviour="terminate-all", clusters=["a", "b"]),
        f"{T}/application/{NESTED}",
        tenant=T,
    )
    assert react(record) == [
        (f"{T}/cluster/a", C.TerminateCluster(force=False)),
        (f"{T}/cluster/b", C.TerminateCluster(force=False)),
    ]
