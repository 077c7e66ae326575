"""The metering fold (actors/metering.py) as a pure function of cluster histories: property tests
on generated member lifecycles (given events, then usage)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from actors.metering import Meter, periods, usage
from schemas import events as E
from schemas.records import Commit, LogRecord
from tests.examples import SPEC

TENANTS = ("acme.org", "other.org")
IAAS = {"mock": {"type": "mock", "property": [{"name": "instanceType", "value": "m1.small"}]}}


def cluster_key(tenant: str) -> str:
    return f"{tenant}/cluster/{SPEC.cluster_id}"


def commit(tenant: str, seq: int, at: float, events: list, n: int) -> LogRecord:
    return LogRecord(
        id=f"c{tenant}{n}",
        type="Commit",
        aggregate_id=cluster_key(tenant),
        aggregate_seq=seq,
        occurred_at=datetime.fromtimestamp(at, UTC),
        tenant=tenant,
        causation_id=f"cmd-{tenant}-{n}",
        payload=Commit(command_type="Test", outcome="accepted", events=events),
    )


member_life = st.tuples(
    st.sampled_from(TENANTS),
    st.sampled_from(["p1", "p2"]),
    st.integers(0, 1000),  # spawned at
    st.one_of(st.none(), st.integers(1, 500)),  # pending for (None: never active)
    st.one_of(st.none(), st.integers(1, 2000)),  # then terminated after (None: still there)
)


def history(lives) -> list[LogRecord]:
    """Commits of both tenants' clusters, in time order, each cluster's seq consecutive."""
    spec = SPEC.model_copy(update={"iaas": IAAS})
    timeline = [(-1.0, t, [E.ClusterCreated(spec=spec)]) for t in TENANTS]
    for n, (tenant, partition, spawned, pending, running) in enumerate(lives):
        mid = f"php1.m{n}"
        ids = dict(member_id=mid, cluster_id=SPEC.cluster_id)
        timeline.append(
            (
                spawned,
                tenant,
                [
                    E.MemberSpawnRequested(
                        **ids,
                        application_id="app",
                        cartridge_type="php",
                        network_partition_id="np1",
                        partition_id=partition,
                        provider="mock",
                    )
                ],
            )
        )
        if pending is None:
            if running is not None:
                timeline.append((spawned + running, tenant, [E.MemberTerminated(**ids)]))
            continue
        up = spawned + pending
        timeline.append((up - 0.5, tenant, [E.MemberInitialized(**ids, node_id=mid), E.MemberStarting(**ids)]))
        timeline.append((up, tenant, [E.MemberActivated(**ids)]))
        if running is not None:
            timeline.append((up + running, tenant, [E.MemberTerminated(**ids)]))
    timeline.sort(key=lambda item: item[0])
    seqs = dict.fromkeys(TENANTS, 1)
    out = []
    for n, (at, tenant, events) in enumerate(timeline):
        out.append(commit(tenant, seqs[tenant], 1_000_000 + at, events, n))
        seqs[tenant] += len(events)
    return out


def folded(commits) -> Meter:
    meter = Meter()
    for record in commits:
        meter.fold(record)
    return meter


def active_seconds(lives, tenant: str, start: float, end: float) -> float:
    """The expectation, from the lifecycles themselves: Activated to Terminated, clipped."""
    total = 0.0
    for who, _p, spawned, pending, running in lives:
        if who != tenant or pending is None:
            continue
        up = 1_000_000 + spawned + pending
        down = up + running if running is not None else end
        total += max(0.0, min(down, end) - max(up, start))
    return total


def total(rows, name="member_seconds") -> float:
    return sum(r[name] for r in rows)


@hsettings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(member_life, max_size=12), st.floats(0, 4000), st.floats(0, 4000))
def test_member_seconds_are_the_active_intervals_and_tenants_apart(lives, a, b):
    meter = folded(history(lives))
    start, end = 1_000_000 + min(a, b), 1_000_000 + max(a, b)
    for tenant in TENANTS:
        assert abs(total(usage(meter, tenant, start, end)) - active_seconds(lives, tenant, start, end)) < 0.01


@hsettings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(member_life, max_size=12), st.floats(0, 1), st.floats(0, 1))
def test_usage_is_additive_over_a_split_of_time(lives, x, y):
    meter = folded(history(lives))
    start, end = 1_000_000.0, 1_004_000.0
    cut = start + (end - start) * x
    for name in ("member_seconds", "pending_seconds"):
        whole = total(usage(meter, "acme.org", start, end), name)
        parts = total(usage(meter, "acme.org", start, cut), name) + total(usage(meter, "acme.org", cut, end), name)
        assert abs(whole - parts) < 0.01
    by_partition = usage(meter, "acme.org", start, end)
    for row in by_partition:
        assert abs(sum(row["by_partition"].values()) - row["member_seconds"]) < 0.01
        assert abs(sum(row["by_instance_type"].values()) - row["member_seconds"]) < 0.01
        assert set(row["by_instance_type"]) <= {"m1.small"}


@hsettings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(member_life, max_size=12), st.floats(0, 4000))
def test_usage_at_a_past_instant_is_the_fold_of_the_log_up_to_then(lives, t):
    commits = history(lives)
    instant = 1_000_000 + t
    early = folded([c for c in commits if c.occurred_at.timestamp() <= instant])
    late = folded(commits)
    for tenant in TENANTS:
        for group_by in ("application", "cluster", "cartridge"):
            assert usage(early, tenant, 0, instant, group_by) == usage(late, tenant, 0, instant, group_by)


def test_pending_time_is_counted_apart_and_a_repeated_commit_counts_once():
    lives = [("acme.org", "p1", 0, 100, 50)]
    commits = history(lives)
    meter = folded(commits + commits[-1:])  # the termination delivered twice
    [row] = usage(meter, "acme.org", 0, 2_000_000)
    assert (row["member_seconds"], row["pending_seconds"]) == (50.0, 100.0)
    assert row["by_partition"] == {"p1": 50.0} and row["requests_served"] is None
    assert usage(meter, "other.org", 0, 2_000_000) == []


def test_scaling_actions_count_decisions_that_spawned_or_terminated():
    spec = SPEC.model_copy(update={"iaas": IAAS})
    decided = dict(required=3, active=1, pending=0, scale_down_requests=0, reason="AboveThreshold", metric="load")
    commits = [
        commit("acme.org", 1, 10, [E.ClusterCreated(spec=spec)], 0),
        commit("acme.org", 2, 20, [E.ScalingDecided(**decided, spawn=2, terminate=0)], 1),
        commit("acme.org", 3, 30, [E.ScalingDecided(**decided, spawn=0, terminate=0)], 2),
    ]
    [row] = usage(folded(commits), "acme.org", 0, 100, "application")
    assert row == {**row, "application": "app", "scaling_actions": 1, "member_seconds": 0.0}


def test_periods_are_whole_and_aligned():
    assert periods(3599, 10900, 3600) == [(0, 3600), (3600, 7200), (7200, 10800)]
    assert periods(3600, 7199, 3600) == []
