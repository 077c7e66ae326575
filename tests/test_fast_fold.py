"""The fast fold equals the validated fold (pure runtime, property-based).

The live path builds events without validating them (`actors.base.made`) and applies each
decision once (`decide_and_fold`); a rebuild folds in place (`Tracked.fold_commit(in_place=True)`).
Over generated histories of one cluster (every cluster and member event, rejections, timeouts,
a cluster terminated and created afresh), each commit is written as the node writes it and read
back as the log is read (`decode_log`, validated), then folded both ways: the live state, the
validated copy-on-write fold and the in-place fold must agree, field for field and snapshot for
snapshot, and the O(1) timer flag must say what a scan of the members says; and no decision
may write into the state it read (the state before a command is left as it was).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from actors.base import Context
from actors.cluster import tally_of, timed
from actors.runtime import Tracked, handle, needs_timer
from infra.log.eventlog import decode_log
from infra.log.kafka import envelope
from schemas import app_scaling as X
from schemas import commands as C
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import CommandRecord
from tests.test_runtime_replay import advance

SPEC = ClusterSpec(
    cluster_id="app.php1.php.domain",
    application_id="app",
    alias="php1",
    cartridge_type="php",
    min=2,
    max=6,
    autoscaling_policy_id="as",
    deployment_policy_id="dp",
    partition_algorithm="round-robin",
    partitions=[
        PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=3, properties={"zone": "a"}),
        PartitionSpec(id="p2", network_partition_id="np2", provider="mock", max=3),
    ],
    iaas={"mock": {"type": "mock", "property": [{"name": "x", "value": "1"}]}},
    ports=[{"name": "http", "port": 80}],
    scaling_dependents=["app.db.db.domain"],
    scale_down_after=2,
)
CLUSTER = "carbon.super/cluster/" + SPEC.cluster_id
START = datetime(2026, 1, 1, tzinfo=UTC)

member_ref = st.integers(0, 7)
steps = st.one_of(
    st.tuples(st.just("scale"), st.integers(0, 9)),
    st.tuples(st.just("advance"), member_ref),
    st.tuples(st.just("advance"), member_ref),
    st.tuples(st.just("advance"), member_ref),
    st.tuples(st.sampled_from(["Started", "Activated", "MaintenanceMode", "ReadyToShutdown"]), member_ref),
    st.tuples(st.just("destroyed"), member_ref),
    st.tuples(st.just("start_failed"), st.integers(1, 3)),
    st.tuples(st.just("fault"), member_ref),
    st.tuples(st.just("terminate"), member_ref),
    st.tuples(st.just("timeouts"), st.integers(0, 3)),
    st.tuples(st.just("limits"), st.integers(0, 4)),
    st.tuples(st.just("dependent"), st.integers(1, 4)),
    st.tuples(st.just("instances"), st.integers(0, 3)),
    st.tuples(st.just("terminate_cluster"), st.integers(0, 1)),
    st.tuples(st.just("create"), st.integers(0, 1)),
    st.tuples(st.just("nobody"), st.integers(0, 1)),
)
"""(verb, n): what happens next to the cluster, `n` picking a member or a figure."""


def command_for(tracked: Tracked, verb: str, n: int):
    members = sorted(tracked.state.members)
    member = members[n % len(members)] if members else "nobody"
    return {
        "scale": lambda: C.ScaleCluster(required=n, metric="load_average", figures={"load_average.average": n * 1.5}),
        "advance": lambda: advance(tracked.state.members[member]) if members else C.CheckTimeouts(),
        "destroyed": lambda: C.ReportNodeDestroyed(member_id=member),
        "start_failed": lambda: C.ReportNodeStartFailed(member_id=member, reason="quota", attempt=n),
        "fault": lambda: C.ReportMemberFault(member_id=member, reason="silent"),
        "terminate": lambda: C.TerminateMember(member_id=member, graceful=bool(n % 2)),
        "timeouts": lambda: C.CheckTimeouts(),
        "limits": lambda: C.UpdateClusterLimits(min=n, max=n + 2 - n % 2),
        "dependent": lambda: C.ScaleAsDependent(source_cluster_id="app.web.web.domain", factor=n / 2),
        "instances": lambda: X.SetClusterInstances(
            network_partitions=[["np1"], ["np1", "np2"], ["np2", "np2"], ["np9"]][n], reason="burst"
        ),
        "terminate_cluster": lambda: C.TerminateCluster(force=bool(n)),
        "create": lambda: C.CreateCluster(spec=SPEC if n else SPEC.model_copy(update={"max": 5})),
        "nobody": lambda: C.TerminateMember(member_id="nobody"),
    }.get(verb, lambda: C.ReportInstanceStatus(member_id=member, status=verb))()


def run_live(history: list[tuple[str, int, int]]) -> tuple[Tracked, list[bytes]]:
    """One cluster driven by `history` ((verb, n, seconds to wait)) through `handle`: the live
    aggregate and its commits as the node appends them."""
    ids = itertools.count()
    tracked, log, clock = Tracked.new(CLUSTER), [], START

    def send(command) -> None:
        before = tracked.state
        as_it_was = before.model_dump()
        outcome = handle(
            tracked,
            envelope(CommandRecord, command, CLUSTER, record_id=f"cmd{next(ids)}"),
            Context(now=clock, new_id=lambda: f"{next(ids):032x}"),
        )
        assert before.model_dump() == as_it_was  # a decision never writes into the state it read
        assert outcome.encoded is not None and outcome.commit is not None
        # what a rule built unvalidated is what validation makes of its bytes
        assert decode_log(outcome.encoded).payload.events == outcome.commit.payload.events
        log.append(outcome.encoded)

    send(C.CreateCluster(spec=SPEC))
    for verb, n, wait in history:
        clock += timedelta(seconds=wait)
        send(command_for(tracked, verb, n))
    return tracked, log


def rebuilt(log: list[bytes], in_place: bool) -> Tracked:
    tracked = Tracked.new(CLUSTER)
    for value in log:
        assert tracked.fold_commit(decode_log(value), in_place=in_place) is None
    return tracked


histories = st.lists(st.tuples(steps, st.sampled_from([0, 5, 400, 2000, 90000])), max_size=45).map(
    lambda items: [(verb, n, wait) for (verb, n), wait in items]
)


@hsettings(max_examples=150)
@given(histories)
def test_the_live_fold_and_the_in_place_rebuild_equal_the_validated_fold(history):
    live, log = run_live(history)
    validated = rebuilt(log, in_place=False)
    fast = rebuilt(log, in_place=True)
    for tracked in (live, fast):
        assert tracked.state == validated.state
        assert tracked.handled == validated.handled
        assert tracked.snapshot() == validated.snapshot()
    members = validated.state.members
    assert needs_timer(fast.state) == needs_timer(live.state) == any(timed(m) for m in members.values())
    scanned = tuple(sum(column) for column in zip((0, 0, 0), *(tally_of(m) for m in members.values()), strict=False))
    assert fast.state.tally == live.state.tally == scanned
    assert Tracked.from_snapshot(CLUSTER, fast.snapshot()).state == validated.state


def test_events_a_rule_builds_unvalidated_read_back_equal_from_the_log():
    """A history with every cluster event type (so that the check in `run_live`, events built
    unvalidated equal their bytes read back validated, sees each) folds the same every way."""
    history = [
        ("scale", 4, 5),
        *[("advance", m, 5) for m in range(4) for _ in range(3)],
        ("scale", 6, 5),
        ("dependent", 4, 5),
        ("scale", 0, 5),
        ("scale", 0, 5),
        ("instances", 1, 5),
        ("limits", 1, 5),
        ("start_failed", 1, 5),
        ("fault", 0, 5),
        ("terminate", 1, 5),
        ("MaintenanceMode", 0, 5),
        ("ReadyToShutdown", 0, 5),
        ("timeouts", 0, 90000),
        ("timeouts", 0, 90000),
        ("terminate_cluster", 0, 5),
        *[("destroyed", m, 5) for m in range(8)],
        ("create", 1, 5),
    ]
    live, log = run_live([(verb, n, wait) for verb, n, wait in history])
    seen: set[str] = set()
    for value in log:
        record = decode_log(value)
        seen.update(e.type for e in record.payload.events)
    assert rebuilt(log, in_place=True).state == rebuilt(log, in_place=False).state == live.state
    cluster_events = {
        cls.model_fields["type"].default
        for cls in (
            E.ClusterCreated,
            E.ClusterStatusChanged,
            E.ClusterLimitsUpdated,
            E.ScalingDecided,
            E.DependentScalingRequested,
            E.DependentFloorChanged,
            E.ClusterTerminating,
            E.ClusterTerminated,
            X.ClusterInstancesChanged,
            X.ClusterInstancesWanted,
            *E.MEMBER_EVENTS,
        )
    }
    assert cluster_events <= seen, cluster_events - seen
