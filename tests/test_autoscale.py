"""The cluster's scaling plan (actors/autoscale.py): given partitions and book-keeping, when a
ScaleCluster request arrives, then this plan. Each id says what breaks without the rule."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.autoscale import PartitionState as P
from actors.autoscale import ScalingPlan, ScalingPolicy, decide_scaling
from actors.partitions import ONE_AFTER_ANOTHER as OAA
from actors.partitions import ROUND_ROBIN as RR
from streams.scaling_rules import LOAD_AVERAGE, ScalingInputs, decide_required
from streams.windows import WindowFigures

RR26 = ScalingPolicy(min=2, max=6, algorithm=RR)
OAA26 = ScalingPolicy(min=2, max=6, algorithm=OAA)


def two(a: int = 0, b: int = 0, pa: int = 0, pb: int = 0, mx: int = 3) -> list[P]:
    return [P("a", mx, active=a, pending=pa), P("b", mx, active=b, pending=pb)]


CASES = [
    # min rule
    pytest.param(
        0,
        two(),
        RR26,
        {},
        ScalingPlan(spawn=("a", "b"), reason="MinRule"),
        id="min rule: no member, min 2 -> spawn 2, one per partition (self-healing)",
    ),
    pytest.param(
        2,
        two(a=1),
        RR26,
        {"scale_down_requests": 3},
        ScalingPlan(spawn=("b",), reason="MinRule"),
        id="min rule after a fault: 1 of 2 -> spawn 1, and the counter resets",
    ),
    pytest.param(
        2,
        two(a=1, pb=1),
        RR26,
        {},
        ScalingPlan(reason="ScaleUpInProgress"),
        id="min rule counts pending: 1 active + 1 pending = 2, no double spawn",
    ),
    # scale up
    pytest.param(
        5,
        two(a=1, b=1),
        RR26,
        {},
        ScalingPlan(spawn=("a", "b", "a"), reason="ScaleUp"),
        id="scale up 2 -> 5: spawn 5-2 = 3, alternating a, b, a",
    ),
    pytest.param(
        5,
        two(a=1, b=1, pa=1, pb=1),
        RR26,
        {},
        ScalingPlan(spawn=("a",), reason="ScaleUp"),
        id="pending compensated: 5 - (2 active + 2 pending) = 1, not 3 (overshoot)",
    ),
    pytest.param(
        5,
        two(a=1, b=1, pa=1, pb=1),
        replace(RR26, count_pending=False),
        {},
        ScalingPlan(spawn=("a", "b"), reason="ScaleUp"),
        id="count_pending off (Stratos): 5 - 2 active = 3, capped by room 6-4 = 2",
    ),
    pytest.param(
        5,
        two(a=1, b=1, pa=2, pb=1),
        RR26,
        {},
        ScalingPlan(reason="ScaleUpInProgress"),
        id="active 2 < 5 but 3 pending cover it: nothing more",
    ),
    pytest.param(
        9,
        two(a=1, b=1),
        RR26,
        {},
        ScalingPlan(spawn=("a", "b", "a", "b"), reason="ScaleUpLimitedByMax", past_max=3),
        id="required 9 past max 6: spawn 6-2 = 4, report 3 past max to the parent",
    ),
    pytest.param(
        9,
        two(a=3, b=3),
        RR26,
        {},
        ScalingPlan(reason="AboveMaxNotifyParent", past_max=3),
        id="at max 6, required 9: spawn nothing, tell the parent 3 past max",
    ),
    pytest.param(
        6,
        two(a=1, b=1, mx=2),
        RR26,
        {},
        ScalingPlan(spawn=("a", "b"), reason="ScaleUpLimitedByMax", past_max=2),
        id="partitions hold 2+2 = 4 < policy max 6: the effective max is 4",
    ),
    pytest.param(
        6,
        two(a=1, b=1),
        replace(RR26, max_scale_up_per_decision=2),
        {},
        ScalingPlan(spawn=("a", "b"), reason="ScaleUpLimitedByRate"),
        id="rate limit 2 per decision: 2 of the 4 wanted",
    ),
    pytest.param(
        4,
        two(a=1, b=1),
        OAA26,
        {},
        ScalingPlan(spawn=("a", "a"), reason="ScaleUp"),
        id="one-after-another: a to its max 3 first",
    ),
    # scale down
    pytest.param(
        2,
        two(a=2, b=2),
        RR26,
        {"scale_down_requests": 0},
        ScalingPlan(scale_down_requests=1, reason="ScaleDownPending"),
        id="1st scale-down request: counted, nothing terminated",
    ),
    pytest.param(
        2,
        two(a=2, b=2),
        RR26,
        {"scale_down_requests": 2},
        ScalingPlan(scale_down_requests=3, reason="ScaleDownPending"),
        id="3rd in a row: still counted only (Stratos: the 4th acts)",
    ),
    pytest.param(
        2,
        two(a=2, b=2),
        RR26,
        {"scale_down_requests": 3},
        ScalingPlan(terminate_from=("b",), reason="ScaleDown"),
        id="4th in a row: one member from the fullest (tie -> b), counter reset",
    ),
    pytest.param(
        1,
        two(a=3, b=1),
        OAA26,
        {"scale_down_requests": 3},
        ScalingPlan(terminate_from=("b",), reason="ScaleDown"),
        id="one-after-another removes from the last used partition, one per decision",
    ),
    pytest.param(
        2,
        two(a=2, b=2),
        replace(RR26, scale_down_after=1),
        {},
        ScalingPlan(terminate_from=("b",), reason="ScaleDown"),
        id="scale_down_after 1: acts on the first request",
    ),
    pytest.param(
        1,
        two(a=1, b=1),
        RR26,
        {"scale_down_requests": 3},
        ScalingPlan(reason="AtMin"),
        id="required 1 < active 2 = min: nothing, never below min, counter reset",
    ),
    pytest.param(
        2,
        two(a=2, b=2),
        replace(RR26, stabilisation_seconds=300),
        {"scale_down_requests": 3, "last_scale_up_at": 1000.0, "now": 1200.0},
        ScalingPlan(scale_down_requests=4, reason="ScaleDownStabilising"),
        id="200 s after a scale-up, window 300 s: hold (no flapping), keep the count",
    ),
    pytest.param(
        2,
        two(a=2, b=2),
        replace(RR26, stabilisation_seconds=300),
        {"scale_down_requests": 4, "last_scale_up_at": 1000.0, "now": 1300.0},
        ScalingPlan(terminate_from=("b",), reason="ScaleDown"),
        id="300 s after: the held scale-down goes ahead at once",
    ),
    pytest.param(
        0,
        [P("a", 3, active=1)],
        ScalingPolicy(min=0, max=3),
        {"scale_down_requests": 3},
        ScalingPlan(terminate_from=("a",), reason="ScaleDown"),
        id="min 0: down to zero is allowed when nothing is required",
    ),
    # stable, both at 1
    pytest.param(
        4,
        two(a=2, b=2),
        RR26,
        {"scale_down_requests": 3},
        ScalingPlan(reason="Stable"),
        id="required = active: Stable and the counter resets (Stratos kept counting, "
        "so the next dip terminated at once)",
    ),
    pytest.param(
        1,
        [P("a", 3, active=1)],
        ScalingPolicy(min=1, max=3),
        {"scale_down_requests": 3},
        ScalingPlan(reason="Stable"),
        id="both 1 (Stratos's 'or both are 1'): Stable, min 1 would refuse anyway",
    ),
    # max rule
    pytest.param(
        3,
        [P("a", 2, active=3), P("b", 3, active=1)],
        RR26,
        {},
        ScalingPlan(terminate_from=("a",), reason="MaxRule"),
        id="partition a holds 3 > its max 2: shed 1 from a",
    ),
    pytest.param(
        3,
        two(a=3, b=2),
        replace(RR26, max=3),
        {},
        ScalingPlan(terminate_from=("a", "b"), reason="MaxRule"),
        id="max lowered to 3 at runtime, 5 members: shed 2, fullest first",
    ),
]


@pytest.mark.parametrize("required, partitions, policy, memory, expected", CASES)
def test_decide_scaling(required, partitions, policy, memory, expected):
    assert decide_scaling(required, partitions, policy, **memory) == expected


def test_policy_validation():
    with pytest.raises(ValueError):
        ScalingPolicy(min=3, max=2)
    with pytest.raises(ValueError):
        ScalingPolicy(min=1, max=2, scale_down_after=0)
    with pytest.raises(ValueError):
        ScalingPolicy(min=1, max=2, max_scale_up_per_decision=0)


# --- a little simulator: the cluster applies its own plans ---------------------------------


def apply(partitions: list[P], plan: ScalingPlan, *, activate: bool = True) -> list[P]:
    """Spawned members become active (or stay pending); terminated ones leave."""
    by_id = {p.id: p for p in partitions}
    for pid in plan.spawn:
        p = by_id[pid]
        by_id[pid] = replace(p, active=p.active + 1) if activate else replace(p, pending=p.pending + 1)
    for pid in plan.terminate_from:
        p = by_id[pid]
        by_id[pid] = replace(p, active=p.active - 1) if p.active else replace(p, pending=p.pending - 1)
    return [by_id[p.id] for p in partitions]


def mark_terminating(partitions: list[P], plan: ScalingPlan) -> list[P]:
    by_id = {p.id: p for p in partitions}
    for pid in plan.terminate_from:
        p = by_id[pid]
        by_id[pid] = replace(p, active=p.active - 1, terminating=p.terminating + 1)
    return [by_id[p.id] for p in partitions]


def test_max_rule_does_not_loop_once_the_surplus_is_terminating():
    """Stratos counted members being terminated and shed them again, forever."""
    parts = [P("a", 2, active=3), P("b", 3, active=1)]
    plan = decide_scaling(3, parts, RR26)
    assert plan.reason == "MaxRule"
    again = decide_scaling(3, mark_terminating(parts, plan), RR26)
    assert again.reason != "MaxRule" and not again.terminate_from


def load_window(value: float, ts: float) -> WindowFigures:
    return WindowFigures(value, 0.0, 0.0, 4, ts - 45, ts)


def test_stratos_acceptance_single_cluster_load_60_then_10():
    """The autoscaler's worked example: min 2, max 6, two round-robin partitions; load 60 then 10 (threshold 25):
    up to ceil(2*60/25) = 5, then down one member per 4 requests to min 2, partitions
    alternating."""
    parts, counter, reasons, history = two(), 0, [], []
    for step in range(40):
        load = 60 if step < 5 else 10
        need = decide_required(
            ScalingInputs(
                min_count=2,
                max_count=6,
                thresholds={LOAD_AVERAGE: 25},
                figures={LOAD_AVERAGE: load_window(load, step * 15)},
            )
        )
        plan = decide_scaling(need.required, parts, RR26, scale_down_requests=counter, now=step * 15.0)
        parts, counter = apply(parts, plan), plan.scale_down_requests
        reasons.append(plan.reason)
        history.append(tuple(p.active for p in parts))
    assert history[0] == (3, 2), "first decision: min rule and scale-up together, 2 -> 5"
    assert max(sum(h) for h in history) == 5
    assert reasons[5:9] == ["ScaleDownPending"] * 3 + ["ScaleDown"]
    downs = [sum(h) for h in history[5:]]
    assert downs[0] == 5 and downs[3] == 4 and downs[7] == 3 and downs[11] == 2
    assert all(a - b in (0, 1) for a, b in zip(downs, downs[1:], strict=False)), "one member at a time"
    assert history[-1] == (1, 1) and reasons[-1] == "AtMin"


# --- properties ------------------------------------------------------------------------------


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 4))
    parts = []
    for i in range(n):
        mx = draw(st.integers(0, 5))
        active = draw(st.integers(0, 6))
        pending = draw(st.integers(0, 3))
        parts.append(P(f"p{i}", mx, active=active, pending=pending))
    lo = draw(st.integers(0, 5))
    policy = ScalingPolicy(
        min=lo,
        max=draw(st.integers(max(lo, 1), 10)),
        algorithm=draw(st.sampled_from([OAA, RR])),
        scale_down_after=draw(st.integers(1, 5)),
        stabilisation_seconds=draw(st.sampled_from([0.0, 60.0])),
        max_scale_up_per_decision=draw(st.none() | st.integers(1, 3)),
        count_pending=draw(st.booleans()),
    )
    memory = dict(
        scale_down_requests=draw(st.integers(0, 5)),
        last_scale_up_at=draw(st.none() | st.floats(0, 100)),
        last_scale_down_at=draw(st.none() | st.floats(0, 100)),
        now=100.0,
    )
    return draw(st.integers(0, 15)), parts, policy, memory


@given(scenarios())
def test_plans_respect_every_limit(scenario):
    required, parts, policy, memory = scenario
    plan = decide_scaling(required, parts, policy, **memory)
    assert not (plan.spawn and plan.terminate_from), "never both at once"
    members = sum(p.members for p in parts)
    if plan.reason == "MaxRule":
        after = apply(parts, plan)
        assert all(p.members <= p.max for p in after)
        assert sum(p.members for p in after) <= policy.max
        again = decide_scaling(required, mark_terminating(parts, plan), policy, **memory)
        assert again.reason != "MaxRule", "the max rule settles in one decision"
        return
    # no partition was over its max, so spawns keep every total within max
    assert members + len(plan.spawn) <= policy.max
    for p in parts:
        assert p.members + plan.spawn.count(p.id) <= p.max
    if plan.terminate_from:
        active = sum(p.active for p in parts)
        assert plan.reason == "ScaleDown" and len(plan.terminate_from) == 1
        assert active - 1 >= policy.min, "never below min"
        assert active - 1 >= required
        assert plan.scale_down_requests == 0, "counter resets after a termination"
    if plan.reason not in ("ScaleDownPending", "ScaleDownStabilising"):
        assert plan.scale_down_requests == 0, "any other decision resets the counter"


@given(scenarios(), st.integers(0, 15))
def test_repeated_decisions_converge_to_required_within_limits(scenario, required):
    """Whatever the start, applying plans settles at clamp(required, min, what fits)."""
    _, parts, policy, _ = scenario
    parts = [replace(p, pending=0) for p in parts]
    policy = replace(policy, stabilisation_seconds=0.0)
    counter = 0
    for _ in range(200):
        plan = decide_scaling(required, parts, policy, scale_down_requests=counter)
        parts, counter = apply(parts, plan), plan.scale_down_requests
    fits = min(policy.max, sum(p.max for p in parts))
    active = sum(p.active for p in parts)
    assert active == min(max(required, policy.min), fits)
