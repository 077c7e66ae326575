"""Partition algorithms and the choice of member to remove (actors/partitions.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.partitions import (
    ONE_AFTER_ANOTHER as OAA,
)
from actors.partitions import (
    ROUND_ROBIN as RR,
)
from actors.partitions import (
    PartitionState as P,
)
from actors.partitions import (
    choose_member_to_remove,
    choose_partitions_for_removal,
    choose_partitions_for_spawn,
)


@pytest.mark.parametrize(
    "algorithm, partitions, count, expected",
    [
        pytest.param(
            OAA, [P("a", 2), P("b", 3)], 4, ["a", "a", "b", "b"], id="one-after-another fills a to its max 2 before b"
        ),
        pytest.param(
            OAA,
            [P("a", 2, active=1, pending=1), P("b", 3)],
            1,
            ["b"],
            id="a pending member holds its slot: a is full at 1+1, so b",
        ),
        pytest.param(
            OAA,
            [P("a", 2, active=1, terminating=1), P("b", 3)],
            1,
            ["a"],
            id="a terminating member frees its slot: a has 1 of 2",
        ),
        pytest.param(RR, [P("a", 5), P("b", 5)], 3, ["a", "b", "a"], id="round-robin alternates from empty: a, b, a"),
        pytest.param(
            RR,
            [P("a", 5, active=2), P("b", 5)],
            3,
            ["b", "b", "a"],
            id="round-robin goes to the fewest first: b catches up to 2, then a",
        ),
        pytest.param(
            RR,
            [P("a", 1, active=1), P("b", 5, active=2)],
            2,
            ["b", "b"],
            id="a has fewest but is full: b (Stratos gave up here, spawning nothing)",
        ),
        pytest.param(
            RR,
            [P("a", 1, active=1), P("b", 2, active=2)],
            3,
            [],
            id="every partition full: nothing, never past a partition max",
        ),
        pytest.param(
            OAA, [P("a", 1), P("b", 1)], 5, ["a", "b"], id="asked 5 with room for 2: 2, the caller sees the shortfall"
        ),
    ],
)
def test_spawn(algorithm, partitions, count, expected):
    assert choose_partitions_for_spawn(algorithm, partitions, count) == expected


@pytest.mark.parametrize(
    "algorithm, partitions, count, expected",
    [
        pytest.param(
            OAA,
            [P("a", 5, active=2), P("b", 5, active=1)],
            2,
            ["b", "a"],
            id="one-after-another empties the last used partition first",
        ),
        pytest.param(
            OAA,
            [P("a", 5, active=2), P("b", 5)],
            1,
            ["a"],
            id="skips an empty last partition instead of removing from nothing",
        ),
        pytest.param(
            RR,
            [P("a", 5, active=3), P("b", 5, active=1)],
            2,
            ["a", "a"],
            id="round-robin removes from the fullest: 3 -> 2 -> 1",
        ),
        pytest.param(
            RR,
            [P("a", 5, active=2), P("b", 5, active=2)],
            1,
            ["b"],
            id="tie: the later partition, keeping the preferred first one",
        ),
        pytest.param(
            RR, [P("a", 5, active=1, pending=2), P("b", 5, active=2)], 1, ["a"], id="pending members count: a holds 3"
        ),
        pytest.param(RR, [P("a", 5), P("b", 5)], 1, [], id="nothing to remove: empty list"),
    ],
)
def test_removal(algorithm, partitions, count, expected):
    assert choose_partitions_for_removal(algorithm, partitions, count) == expected


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError):
        choose_partitions_for_spawn("random", [P("a", 1)], 1)
    with pytest.raises(ValueError):
        choose_partitions_for_removal("random", [P("a", 1, active=1)], 1)


@pytest.mark.parametrize(
    "candidates, expected",
    [
        pytest.param([("m1", 40, 60), ("m2", 30, 50)], "m2", id="lowest (load+memory)/2: m2 (30+50)/2=40 < m1 50"),
        pytest.param(
            [("m1", 40, 60), ("m2", 30, 50), ("m3", None, None)],
            "m3",
            id="no figures counts as 0: the silent or newest member goes first",
        ),
        pytest.param([("m1", 10, None), ("m2", 6, 6)], "m1", id="one figure missing counts 0: m1 (10+0)/2=5 < m2 6"),
        pytest.param(
            [("m2", 20, 20), ("m1", 30, 10)], "m1", id="tie 20 = 20: smallest member id, so replays choose alike"
        ),
        pytest.param(
            [("m1", -5, 10), ("m2", 0, 10)], "m1", id="a falling prediction below 0 is still compared, not clipped"
        ),
    ],
)
def test_choose_member_to_remove(candidates, expected):
    assert choose_member_to_remove(candidates) == expected


def test_choose_member_needs_a_candidate():
    with pytest.raises(ValueError):
        choose_member_to_remove([])


# --- properties ------------------------------------------------------------------------------

partition_lists = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 3)),
    min_size=1,
    max_size=5,
).map(
    lambda rows: [
        P(f"p{i}", mx, active=min(a, mx), pending=min(pe, mx - min(a, mx))) for i, (mx, a, pe) in enumerate(rows)
    ]
)
algorithms = st.sampled_from([OAA, RR])


@given(algorithms, partition_lists, st.integers(0, 30))
def test_spawn_never_exceeds_a_partition_max_and_fills_all_room(algorithm, partitions, count):
    chosen = choose_partitions_for_spawn(algorithm, partitions, count)
    room = sum(p.max - p.members for p in partitions)
    assert len(chosen) == min(count, room), "stops only when every partition is full"
    for p in partitions:
        assert p.members + chosen.count(p.id) <= p.max


@given(algorithms, partition_lists, st.integers(0, 30))
def test_removal_only_from_partitions_with_members(algorithm, partitions, count):
    chosen = choose_partitions_for_removal(algorithm, partitions, count)
    assert len(chosen) == min(count, sum(p.members for p in partitions))
    for p in partitions:
        assert chosen.count(p.id) <= p.members


@given(st.integers(1, 6), st.integers(0, 40))
def test_round_robin_from_empty_stays_balanced_within_one(n_partitions, count):
    partitions = [P(f"p{i}", 100) for i in range(n_partitions)]
    chosen = choose_partitions_for_spawn(RR, partitions, count)
    sizes = [chosen.count(p.id) for p in partitions]
    assert max(sizes) - min(sizes) <= 1


@given(st.lists(st.integers(0, 10), min_size=1, max_size=6), st.integers(0, 40))
def test_round_robin_never_widens_the_spread_when_room_exists(start, count):
    partitions = [P(f"p{i}", 100, active=n) for i, n in enumerate(start)]
    chosen = choose_partitions_for_spawn(RR, partitions, count)
    after = [p.members + chosen.count(p.id) for p in partitions]
    assert max(after) - min(after) <= max(max(start) - min(start), 1)
    removed = choose_partitions_for_removal(RR, partitions, count)
    after = [p.members - removed.count(p.id) for p in partitions]
    assert max(after) - min(after) <= max(max(start) - min(start), 1)


@given(partition_lists, st.integers(0, 30))
def test_one_after_another_fills_in_policy_order(partitions, count):
    order = {p.id: i for i, p in enumerate(partitions)}
    chosen = [order[c] for c in choose_partitions_for_spawn(OAA, partitions, count)]
    assert chosen == sorted(chosen)
    removed = [order[c] for c in choose_partitions_for_removal(OAA, partitions, count)]
    assert removed == sorted(removed, reverse=True)
