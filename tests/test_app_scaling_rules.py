"""Live limits, redeploy, group instances and bursting as pure rules (actors/instances.py and
the cluster and application aggregates): given events, when a command, then events. Each case
says what would break without the rule."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import application, cluster
from actors import instances as I
from actors.base import Context, Rejection, evolve
from actors.partitions import PartitionState, choose_partitions_for_removal, choose_partitions_for_spawn
from actors.topology_plan import build_cluster_specs, group_definitions
from schemas import app_scaling as X
from schemas import commands as C
from schemas import events as E
from schemas.domain import ApplicationStatus, ClusterSpec, ClusterStatus, PartitionSpec
from tests.conftest import sample
from tests.test_topology_plan import resolved_for_nested_app

T = "carbon.super"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
IDS = itertools.count(1)


def ctx() -> Context:
    return Context(now=NOW, new_id=lambda: f"m{next(IDS)}")


def spec(min_count: int = 1, max_count: int = 2) -> ClusterSpec:
    parts = [
        PartitionSpec(id=p, network_partition_id=np, provider="mock", max=0)
        for p, np in (("p1", "np1"), ("p2", "np1"), ("q1", "np2"))
    ]
    return ClusterSpec(
        cluster_id="app.php1.php.domain",
        application_id="app",
        alias="php1",
        cartridge_type="php",
        min=min_count,
        max=max_count,
        autoscaling_policy_id="as",
        deployment_policy_id="dp",
        partition_algorithm="round-robin",
        partitions=parts,
    )


def run(state, command):
    events = cluster.decide(state, command, ctx())
    return cluster.fold(state, events, NOW), events


def activate_all(state):
    for member in [m for m, s in state.members.items() if s.is_pending]:
        for command in (
            C.ReportNodeCreated(member_id=member, node_id=member),
            C.ReportInstanceStatus(member_id=member, status="Started"),
            C.ReportInstanceStatus(member_id=member, status="Activated"),
        ):
            state, _ = run(state, command)
    return state


def created(spec_: ClusterSpec):
    state, _ = run(cluster.initial(f"{T}/cluster/{spec_.cluster_id}"), C.CreateCluster(spec=spec_))
    return activate_all(state)


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_raising_min_starts_the_difference_and_the_cluster_stays_active():
    """Without it a raised min would leave the cluster at its old size (or call it Inactive, as
    if members had failed, and set off the group's termination behaviour)."""
    state = created(spec(1, 4))
    assert state.status == ClusterStatus.ACTIVE
    state, events = run(state, C.UpdateClusterLimits(min=3, max=4))
    assert len(of(events, E.MemberSpawnRequested)) == 2
    assert not of(events, E.ClusterStatusChanged)
    state = activate_all(state)
    assert (state.active, state.status) == (3, ClusterStatus.ACTIVE)
    assert run(state, C.UpdateClusterLimits(min=3, max=4))[1] == []  # a repeat writes nothing


def test_new_scaling_dependents_reach_the_running_cluster_and_replay():
    """Without it a live change of `scalingDependents` would reach the definition only."""
    state = created(spec(1, 4))
    state, events = run(state, C.UpdateClusterLimits(min=1, max=4, scaling_dependents=["app.tomcat1.tomcat.domain"]))
    assert state.spec.scaling_dependents == ["app.tomcat1.tomcat.domain"]
    replayed = cluster.fold(created(spec(1, 4)), events, NOW)
    assert replayed.spec == state.spec and (replayed.min, replayed.max) == (1, 4)
    state, events = run(state, C.ScaleCluster(required=2, metric="load_average"))
    (announced,) = of(events, E.DependentScalingRequested)
    assert announced.clusters == ["app.tomcat1.tomcat.domain"]


def test_lowering_max_lets_the_surplus_go_gracefully():
    state = created(spec(1, 4))
    state, _ = run(state, C.ScaleCluster(required=4, metric="load_average"))
    state = activate_all(state)
    state, events = run(state, C.UpdateClusterLimits(min=1, max=2))
    leaving = of(events, E.MemberTerminationRequested)
    assert len(leaving) == 2 and all(m.graceful for m in leaving)
    assert {state.members[m.member_id].partition_id for m in leaving} == {"p1", "p2"}  # round-robin: balanced


def test_a_terminated_cluster_is_created_afresh_on_redeploy():
    """Stratos's redeploy: before, a cluster that existed once was never created again."""
    state = created(spec(2, 3))
    state, _ = run(state, C.TerminateCluster(force=True))
    for member in list(state.members):
        state, _ = run(state, C.ReportNodeDestroyed(member_id=member))
    assert state.status == ClusterStatus.TERMINATED
    old = set(state.members) | {"m"}
    state, events = run(state, C.CreateCluster(spec=spec(2, 3)))
    fresh = {e.member_id for e in of(events, E.MemberSpawnRequested)}
    assert len(fresh) == 2 and not fresh & old
    assert state.status == ClusterStatus.CREATED and state.scale_down_requests == 0


def test_cartridge_min_zero_is_honoured():
    specs = build_cluster_specs(*_single_app(cartridgeMin=0, cartridgeMax=2))
    assert (specs[0].min, specs[0].max) == (0, 2)
    state, events = run(cluster.initial(f"{T}/cluster/{specs[0].cluster_id}"), C.CreateCluster(spec=specs[0]))
    assert not of(events, E.MemberSpawnRequested) and state.status == ClusterStatus.ACTIVE


def _single_app(**limits):
    app = sample("application-single-cartridge.json")
    app["components"]["cartridges"][0].update(limits)
    resolved = {
        "cartridge/php": sample("php.json"),
        "autoscalingPolicy/autoscaling-policy-1": sample("autoscaling-policy.json"),
        "deploymentPolicy/deployment-policy-1": sample("deployment-policy.json"),
        "applicationPolicy/application-policy-1": sample("application-policy.json"),
        "networkPartition/network-partition-1": sample("network-partition.json"),
    }
    return app, "application-policy-1", resolved


def test_a_new_cluster_instance_in_a_second_network_partition_fills_it_and_leaves_it_first():
    state = created(spec(1, 2))
    state, _ = run(state, C.ScaleCluster(required=2, metric="load_average"))
    state = activate_all(state)
    state, events = run(state, C.ScaleCluster(required=3, metric="load_average"))
    (asked,) = of(events, X.ClusterInstancesWanted)
    assert (asked.wanted, asked.instances) == (2, 1)  # past its max: ask the application
    state, events = run(state, X.SetClusterInstances(network_partitions=["np1", "np2"]))
    assert [e.partition_id for e in of(events, E.MemberSpawnRequested)] == ["q1"]  # min of the new instance
    assert (state.min, state.max) == (2, 4)
    state = activate_all(state)
    state, events = run(state, X.SetClusterInstances(network_partitions=["np1"]))
    (leaving,) = of(events, E.MemberTerminationRequested)
    assert state.members[leaving.member_id].partition_id == "q1" and leaving.graceful


def test_fewer_instances_are_asked_for_only_after_scale_down_after_decisions_in_a_row():
    """Without the count one low figure would take a whole cluster instance away (flapping)."""
    state = created(spec(1, 2))
    state, _ = run(state, X.SetClusterInstances(network_partitions=["np1", "np2"]))
    state = activate_all(state)
    asks = []
    for _ in range(4):
        state, events = run(state, C.ScaleCluster(required=1, metric="load_average"))
        asks.append(of(events, X.ClusterInstancesWanted))
    assert [len(a) for a in asks] == [0, 0, 0, 1] and asks[-1][0].wanted == 1


def test_a_structural_change_of_a_running_application_is_refused_naming_the_field():
    app, _, _ = _single_app()
    changed = {
        **app,
        "components": {
            **app["components"],
            "cartridges": [
                {
                    **app["components"]["cartridges"][0],
                    "subscribableInfo": {**app["components"]["cartridges"][0]["subscribableInfo"], "alias": "other"},
                }
            ],
        },
    }
    assert application.structural_change(app, changed) == "components.cartridges[0].subscribableInfo.alias"
    limits = {
        **app,
        "components": {
            **app["components"],
            "cartridges": [{**app["components"]["cartridges"][0], "cartridgeMin": 3, "cartridgeMax": 5}],
        },
    }
    assert application.structural_change(app, limits) is None


def nested_topology() -> I.Topology:
    app = sample("application-nested-group.json")
    resolved = resolved_for_nested_app()
    specs = build_cluster_specs(app, "ap", resolved)
    return I.Topology(
        I.groups_of(app, group_definitions(resolved)), [["np1"], ["np2"]], {s.cluster_id: ["np1", "np2"] for s in specs}
    )


WEB_PHP = "nested-group-app.my-php-web.php.domain"
TOMCAT = "nested-group-app.my-tomcat.tomcat.domain"


def test_group_scaling_adds_an_instance_of_the_innermost_scalable_group_then_bursts():
    topology = nested_topology()
    assert topology.groups["my-web-group"].enabled and not topology.groups["my-app-group"].enabled
    up = I.plan_instances(topology, {}, 1, {WEB_PHP: 2}, WEB_PHP)
    assert up.group_instances["my-web-group"] == 2 and up.burst == 1
    held = topology.instances(up.group_instances, up.burst)
    assert len(held[WEB_PHP]) == len(held["nested-group-app.my-tomcat-app.tomcat.domain"]) == 2
    assert len(held[TOMCAT]) == 1  # outside the group
    burst = I.plan_instances(topology, up.group_instances, 1, {WEB_PHP: 3}, WEB_PHP)
    assert burst.burst == 2 and burst.group_instances == up.group_instances
    assert I.plan_instances(topology, {}, 1, {TOMCAT: 2}, TOMCAT).burst == 2  # no group: burst at once


@settings(max_examples=100)
@given(
    st.lists(
        st.tuples(st.sampled_from([WEB_PHP, TOMCAT, "nested-group-app.my-php-app.php.domain"]), st.integers(1, 6)),
        max_size=25,
    )
)
def test_instances_stay_within_group_limits_and_bursting_steps(asks):
    """Whatever the clusters ask, in any order: group instances within [max(1, min), max],
    bursting within the steps, and every cluster holds at least one instance."""
    topology = nested_topology()
    groups, burst, demands = {}, 1, {}
    for cid, wanted in asks:
        demands[cid] = wanted
        plan = I.plan_instances(topology, groups, burst, demands, cid)
        if plan is not None:
            groups, burst = plan.group_instances, plan.burst
            demands = {c: n for c, n in demands.items() if c == cid}
        for alias, g in topology.groups.items():
            assert g.floor <= topology.counts(groups)[alias] <= max(g.max, 1)
        assert 1 <= burst <= len(topology.steps)
        assert all(topology.instances(groups, burst).values())


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 1)), min_size=1, max_size=6),
    st.integers(0, 8),
)
def test_members_go_to_the_lowest_tier_with_room_and_leave_the_highest_first(rows, count):
    parts = [
        PartitionState(f"p{n}", max_, active=min(active, max_), tier=tier)
        for n, (max_, active, tier) in enumerate(rows)
    ]
    for algorithm in ("round-robin", "one-after-another"):
        spawned = choose_partitions_for_spawn(algorithm, parts, count)
        tier_of = {p.id: p.tier for p in parts}
        if spawned:
            open_tiers = [p.tier for p in parts if p.members < p.max]
            assert tier_of[spawned[0]] == min(open_tiers)
        removed = choose_partitions_for_removal(algorithm, parts, 1)
        used = [p.tier for p in parts if p.members > 0]
        assert (tier_of[removed[0]] == max(used)) if used else removed == []


def test_growing_then_shrinking_returns_to_the_start():
    topology = nested_topology()
    up = I.plan_instances(topology, {}, 1, {WEB_PHP: 2}, WEB_PHP)
    burst = I.plan_instances(topology, up.group_instances, 1, {WEB_PHP: 3}, WEB_PHP)
    # every cluster of the application content with one instance fewer: the burst goes first
    content = {cid: 1 for cid in topology.cluster_nps}
    back = I.plan_instances(topology, burst.group_instances, burst.burst, content, WEB_PHP)
    assert back.burst == 1 and back.group_instances == up.group_instances
    down = I.plan_instances(topology, back.group_instances, 1, content, WEB_PHP)
    assert down.group_instances["my-web-group"] == 1
    # one cluster of the group still needing two instances holds the group instance
    held = I.plan_instances(
        topology, back.group_instances, 1, {**content, "nested-group-app.my-php-app.php.domain": 2}, WEB_PHP
    )
    assert held is None


def test_an_update_of_a_running_application_reaches_its_running_clusters():
    app, policy, resolved = _single_app()
    state = application.initial(f"{T}/application/{app['applicationId']}")
    from schemas.definitions import Application

    definition = Application.model_validate(app)
    for event in [
        E.ApplicationAdded(definition=definition),
        E.ApplicationDeploymentRequested(application_policy_id=policy, needs=[]),
    ]:
        state = application.apply(state, event)
    state = application.apply(
        state, E.ApplicationDeployed(application_policy_id=policy, clusters=build_cluster_specs(app, policy, resolved))
    )
    state = application.apply(state, E.ClustersStartRequested(clusters=list(state.clusters.values())))
    state = evolve(state, {"resolved": resolved, "status": ApplicationStatus.ACTIVE})
    bigger = Application.model_validate(
        {
            **app,
            "components": {
                **app["components"],
                "cartridges": [{**app["components"]["cartridges"][0], "cartridgeMin": 3, "cartridgeMax": 5}],
            },
        }
    )
    events = application.decide(state, C.UpdateApplication(definition=bigger), ctx())
    (limits,) = of(events, X.ApplicationLimitsUpdated)
    assert [(s.min, s.max) for s in limits.clusters] == [(3, 5)] and limits.running == [limits.clusters[0].cluster_id]
    renamed = Application.model_validate(
        {
            **app,
            "components": {
                **app["components"],
                "cartridges": [{**app["components"]["cartridges"][0], "type": "tomcat"}],
            },
        }
    )
    try:
        application.decide(state, C.UpdateApplication(definition=renamed), ctx())
        raise AssertionError("a changed cartridge type must be refused")
    except Rejection as rejection:
        assert rejection.field == "components.cartridges[0].type" and rejection.code == 400


def test_the_simulator_bursts_and_scales_back_with_the_same_rules():
    """examples/scenarios/bursting.yaml through `stratos simulate`'s engine: the decisions are
    the aggregates' own (actors/instances.py), so the simulated log bursts as the live one does."""
    from pathlib import Path

    from infra.simulation.scenario import load_scenario
    from streams.simulation import Simulation

    scenario = load_scenario(Path(__file__).parent.parent / "examples" / "scenarios" / "bursting.yaml")
    result = Simulation(scenario.setup, keep_log=True).run()
    reasons = [e.payload.reason.split(":")[0] for e in result.log if e.type == "ApplicationInstancesChanged"]
    assert reasons == ["Burst", "BurstBack"]
    spawned = {e.payload.network_partition_id for e in result.log if e.type == "MemberSpawnRequested"}
    assert spawned == {"network-partition-1", "network-partition-2"}
    track = next(iter(result.clusters.values()))
    assert max(track.supply) == 4 and track.supply[-1] == 1  # 2 per cluster instance, then min


@settings(max_examples=100)
@given(
    st.lists(st.integers(0, 4), min_size=3, max_size=3),
    st.lists(st.sampled_from(["np1", "np2"]), min_size=1, max_size=4),
    st.integers(0, 2),
    st.integers(1, 3),
    st.lists(st.sampled_from(["p1", "p2", "q1"]), max_size=6),
)
def test_network_partitions_stay_within_min_and_max_per_cluster_instance(held, instances, base_min, base_max, asked):
    """Whatever the partition algorithm asks: a network partition never gets more members than
    max per cluster instance there, and a scale-down never takes it below min per instance."""
    np_of = {"p1": "np1", "p2": "np1", "q1": "np2"}
    parts = [PartitionState(pid, 3 * instances.count(np_of[pid]), active=n) for pid, n in zip(np_of, held, strict=True)]
    before = {np: sum(p.members for p in parts if np_of[p.id] == np) for np in ("np1", "np2")}

    def after(moved: list[str], sign: int) -> dict[str, int]:
        return {np: before[np] + sign * sum(1 for pid in moved if np_of[pid] == np) for np in before}

    placed = after(I.fit_maximums(parts, np_of, base_max, instances, asked), 1)
    for np in before:
        assert placed[np] <= max(before[np], base_max * instances.count(np))
    left = after(I.keep_minimums(parts, np_of, base_min, instances, asked), -1)
    floors = I.floors(base_min, instances)
    for np in before:
        assert left[np] >= min(before[np], floors.get(np, 0)) and left[np] >= 0
