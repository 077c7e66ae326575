"""Replay is the recovery path: the state rebuilt from the log equals the live state, and a
snapshot plus the tail equals a full replay (pure runtime, property-based)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from actors.base import Context
from actors.runtime import Tracked, handle
from infra.log.kafka import envelope
from schemas import commands as C
from schemas.base import Message
from schemas.records import CommandRecord
from tests.examples import SPEC

CLUSTER = "carbon.super/cluster/" + SPEC.cluster_id
START = datetime(2026, 1, 1, tzinfo=UTC)

member_ref = st.integers(0, 7)
command_specs = st.one_of(
    st.tuples(st.just("scale"), st.integers(0, 8)),
    st.tuples(st.just("created"), member_ref),
    st.tuples(st.just("advance"), member_ref),
    st.tuples(st.just("advance"), member_ref),
    st.tuples(st.sampled_from(["Started", "Activated", "MaintenanceMode", "ReadyToShutdown"]), member_ref),
    st.tuples(st.just("destroyed"), member_ref),
    st.tuples(st.just("fault"), member_ref),
    st.tuples(st.just("terminate"), member_ref),
    st.tuples(st.just("timeouts"), st.integers(0, 3)),
    st.tuples(st.just("limits"), st.integers(0, 4)),
)


NEXT_STEP = {
    "Created": None,
    "Initialized": "Started",
    "Starting": "Activated",
    "Active": "MaintenanceMode",
    "In_Maintenance": "ReadyToShutdown",
}


def advance(member_state) -> Message:
    """The command that moves a member one step along its lifecycle, as the IaaS or agent would."""
    step = NEXT_STEP.get(member_state.status.value)
    if member_state.status.value == "Created":
        return C.ReportNodeCreated(member_id=member_state.member_id, node_id=member_state.member_id)
    if step is None or (step == "MaintenanceMode" and member_state.termination_requested_at is None):
        return C.ReportNodeDestroyed(member_id=member_state.member_id)
    return C.ReportInstanceStatus(member_id=member_state.member_id, status=step)


def run_live(specs):
    """Drive one cluster aggregate with commands built from `specs`; returns it and its log."""
    counter = itertools.count()
    tracked = Tracked.new(CLUSTER)
    log = []
    clock = [START]

    def ctx():
        clock[0] += timedelta(seconds=400)
        return Context(now=clock[0], new_id=lambda: f"{next(counter):032d}")

    def send(command):
        outcome = handle(tracked, envelope(CommandRecord, command, CLUSTER, record_id=f"cmd{next(counter)}"), ctx())
        if outcome.commit is not None:
            log.append(outcome.commit)

    send(C.CreateCluster(spec=SPEC))
    for verb, n in specs:
        send(command_for(tracked, verb, n))
    return tracked, log


def command_for(tracked, verb: str, n: int):
    """The command `verb` names, for the member `n` picks among the cluster's (else "nobody")."""
    members = sorted(tracked.state.members)
    member = members[n % len(members)] if members else "nobody"
    return {
        "scale": lambda: C.ScaleCluster(required=n),
        "created": lambda: C.ReportNodeCreated(member_id=member, node_id=member),
        "destroyed": lambda: C.ReportNodeDestroyed(member_id=member),
        "fault": lambda: C.ReportMemberFault(member_id=member),
        "terminate": lambda: C.TerminateMember(member_id=member),
        "timeouts": lambda: C.CheckTimeouts(),
        "limits": lambda: C.UpdateClusterLimits(min=n, max=n + 3),
        "advance": lambda: advance(tracked.state.members[member]) if members else C.CheckTimeouts(),
    }.get(verb, lambda: C.ReportInstanceStatus(member_id=member, status=verb))()


def replay(log, start: Tracked | None = None):
    tracked = start or Tracked.new(CLUSTER)
    problems = [p for p in (tracked.fold_commit(record) for record in log) if p]
    return tracked, problems


@hsettings(max_examples=60)
@given(st.lists(command_specs, max_size=40))
def test_state_rebuilt_from_the_log_equals_the_live_state(specs):
    live, log = run_live(specs)
    rebuilt, problems = replay(log)
    assert problems == []
    assert rebuilt.state == live.state
    assert rebuilt.handled == live.handled  # accepted and rejected ids, with their outcomes


@hsettings(max_examples=60)
@given(st.lists(command_specs, max_size=40), st.floats(0, 1))
def test_snapshot_plus_tail_equals_full_replay(specs, cut):
    live, log = run_live(specs)
    at = int(len(log) * cut)
    head, _ = replay(log[:at])
    restored = Tracked.from_snapshot(CLUSTER, head.snapshot())
    from_snapshot, problems = replay(log[at:], restored)
    assert problems == []
    assert from_snapshot.state == live.state
    assert from_snapshot.handled == live.handled


def test_a_repeated_command_writes_nothing():
    tracked = Tracked.new(CLUSTER)
    command = envelope(CommandRecord, C.CreateCluster(spec=SPEC), CLUSTER, record_id="once")
    ctx = Context(now=START, new_id=lambda: "00000000000000000000000000000001")
    first = handle(tracked, command, ctx)
    again = handle(tracked, command, ctx)
    assert first.commit.payload.events and again.commit is None and again.reply.duplicate


def test_replay_reports_a_gap_and_skips_a_repeat():
    _, log = run_live([("created", 0), ("Started", 0)])
    rebuilt, problems = replay([log[0], log[0], *log[2:]])
    assert any("handled twice: repeat skipped" in p for p in problems)
    assert any("expected seq" in p for p in problems)


def test_a_rejection_echoes_the_command_without_its_secrets():
    from schemas.definitions import Tenant

    tenant = Tenant(
        tenantDomain="a.com", admin="boss", adminPassword="s3cret", firstName="A", lastName="B", email="boss@a.com"
    )
    target = "carbon.super/tenant/b.com"  # the id does not match the body: rejected
    outcome = handle(
        Tracked.new(target),
        envelope(CommandRecord, C.AddTenant(definition=tenant), target),
        Context(now=START, new_id=lambda: "1" * 32),
    )
    assert outcome.reply.type == "CommandRejected"
    assert outcome.reply.command["definition"]["adminPassword"] == "********"
    assert "s3cret" not in outcome.reply.model_dump_json()
