"""Pure rules of the replay tools: state diffs, record figures, causation walks, positions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.causality import MAX_DEPTH, causes, effects
from actors.timeline import diff, figures, one_line
from infra.replay.timetravel import PositionError, parse_position, parse_time
from schemas import commands as C

json_leaf = st.one_of(st.integers(), st.text(max_size=5), st.booleans())
documents = st.recursive(
    st.dictionaries(st.text("abc.", min_size=1, max_size=3), json_leaf, max_size=4),
    lambda inner: st.dictionaries(st.text("abc.", min_size=1, max_size=3), st.one_of(json_leaf, inner), max_size=4),
    max_leaves=12,
)


def patch(document: dict, changes) -> dict:
    """Apply changes to a copy: what `diff` says must turn `before` into `after`."""
    import copy

    out = copy.deepcopy(document)
    for change in sorted(changes, key=lambda c: len(c.path)):
        node = out
        for key in change.path[:-1]:
            node = node.setdefault(key, {})
        if change.after is None:
            node.pop(change.path[-1], None)
        else:
            node[change.path[-1]] = change.after
    return out


@given(documents, documents)
def test_diff_turns_one_state_into_the_other(before, after):
    changes = diff(before, after)
    assert patch(before, changes) == after
    assert (changes == []) == (before == after)


def test_diff_keeps_ids_with_dots_whole():
    before = {"members": {"php1.a.b": {"status": "Active"}}}
    after = {"members": {"php1.a.b": {"status": "Terminated"}, "php1.c": {"status": "Created"}}}
    changes = {c.path: c for c in diff(before, after)}
    assert changes[("members", "php1.a.b", "status")].kind == "changed"
    assert changes[("members", "php1.c")].kind == "added"


def test_figures_keep_scalars_and_flat_maps_and_drop_documents():
    command = C.ScaleCluster(
        required=3,
        metric="load_average",
        reason="AboveMax: …",
        figures={"load_average.predicted": 61.5},
        member_load={"m1": 40.0},
    )
    values = figures(command)
    assert values == {
        "required": 3,
        "metric": "load_average",
        "reason": "AboveMax: …",
        "figures": {"load_average.predicted": 61.5},
        "member_load": {"m1": 40.0},
    }
    assert "figures.load_average.predicted=61.5" in one_line(values)
    assert len(figures({"reason": "x" * 500})["reason"]) <= 120


def chain_of(n: int) -> dict[str, dict]:
    return {f"r{i}": {"id": f"r{i}", "cause": f"r{i - 1}" if i else None} for i in range(n)}


@given(st.integers(1, 40))
def test_causes_walk_back_to_the_root(n):
    records = chain_of(n)
    chain, missing = causes(records.get, f"r{n - 1}")
    assert [link["id"] for link in chain] == [f"r{i}" for i in reversed(range(n))]
    assert missing is None


def test_causes_name_a_cause_outside_the_log_and_survive_a_cycle():
    records = {"b": {"id": "b", "cause": "a"}}
    assert causes(records.get, "b") == ([records["b"]], "a")
    loop = {"x": {"id": "x", "cause": "y"}, "y": {"id": "y", "cause": "x"}}
    chain, _ = causes(loop.get, "x")
    assert [link["id"] for link in chain] == ["x", "y"]
    deep = chain_of(MAX_DEPTH + 10)
    assert len(causes(deep.get, f"r{MAX_DEPTH + 9}")[0]) == MAX_DEPTH


def test_effects_are_the_reverse_of_causes_and_bounded():
    records = {
        "cmd": {"id": "cmd", "cause": None},
        "e1": {"id": "e1", "cause": "cmd"},
        "e2": {"id": "e2", "cause": "cmd"},
        "r1": {"id": "r1", "cause": "e1"},
    }

    def children(record_id):
        return [r for r in records.values() if r["cause"] == record_id]

    tree = effects(children, "cmd")
    assert [n["id"] for n in tree["effects"]] == ["e1", "e2"]
    assert tree["effects"][0]["effects"][0]["id"] == "r1" and not tree["truncated"]
    assert effects(children, "cmd", max_records=2)["truncated"]


def test_positions_are_times_or_offset_vectors():
    assert parse_position("2026-12-01T09:30:00Z").time == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert parse_time("2026-12-01T10:30:00+01:00") == datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert parse_time("2026-12-01T09:30:00").tzinfo == UTC
    assert parse_position("0:120, 1:55").offsets == {0: 120, 1: 55}
    for bad in ("", "0:", "a:1", "yesterday", "2026-99-01T00:00:00Z"):
        with pytest.raises(PositionError):
            parse_position(bad)
