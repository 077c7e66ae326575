"""The aggregate actor's rules, pure (no broker): a batch decides exactly what the same commands
one at a time decide; a batch that fails changes nothing; a gap in an aggregate's history stops
it; a CheckTimeouts changes a cluster exactly when its next timeout has passed."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.base import Timeouts
from actors.runtime import (
    DEDUP_MIN_IDS,
    AggregateActor,
    HandleBatch,
    InjectedFault,
    Tracked,
    handle,
    next_timeout,
    reply_for,
)
from infra.log.kafka import decode, encode, envelope
from infra.replay.inspect_log import digest_of
from schemas import commands as C
from schemas.definitions import NetworkPartition
from schemas.records import ReplyRecord
from tests.examples import SPEC
from tests.test_durable_outcomes import NP, START, add_np, command, ctx

CLUSTER = "carbon.super/cluster/" + SPEC.cluster_id


def np_command(kind: str, description: str, command_id: str):
    if kind == "add":
        payload = add_np()
    elif kind == "update":
        payload = C.UpdateNetworkPartition(
            definition=NetworkPartition.model_validate(
                {"id": "np1", "provider": "mock", "partitions": [{"id": "p1", "description": description}]}
            )
        )
    else:
        payload = C.RemoveNetworkPartition(id="np1")
    return command(payload, command_id=command_id)


commands_strategy = st.lists(
    st.tuples(st.sampled_from(["add", "update", "remove"]), st.sampled_from("abc"), st.integers(0, 12)),
    min_size=1,
    max_size=25,
)
"""Adds, updates and removes of one network partition; ids drawn from a small set, so that
repeats (a client's retries) come up often."""


def comparable(outcome) -> tuple:
    commit = outcome.commit
    return (
        outcome.reply.model_dump(),
        None if commit is None else (commit.aggregate_seq, commit.payload.model_dump(mode="json")),
        outcome.failure,
    )


@settings(max_examples=60)
@given(commands_strategy, st.integers(1, 6))
def test_a_batch_decides_what_the_same_commands_decide_one_at_a_time(drawn, batch_size):
    commands = [np_command(kind, text, f"c{n}") for kind, text, n in drawn]
    alone, batched = Tracked.new(NP), Tracked.new(NP)
    one_by_one = [comparable(handle(alone, c, ctx(START))) for c in commands]
    in_batches = []
    for start in range(0, len(commands), batch_size):
        message = HandleBatch(NP, commands[start : start + batch_size], ctx(START))
        in_batches += [comparable(o) for o in AggregateActor._batch(batched, message)]
    assert in_batches == one_by_one
    assert digest_of({NP: batched}) == digest_of({NP: alone})
    assert batched.handled.keys() == alone.handled.keys()
    for command_id in batched.handled:  # a reply is made, not validated: it reads back from its bytes as made
        reply = envelope(ReplyRecord, reply_for(command_id, batched.handled[command_id], True), NP, trusted=True)
        assert decode("replies", encode(reply)) == reply


def test_a_batch_that_raises_leaves_the_aggregate_as_it_was_even_its_forgotten_ids():
    tracked = Tracked.new(NP)
    for n in range(DEDUP_MIN_IDS):  # a full window: each new id forgets the oldest one
        handle(tracked, command(C.RemoveNetworkPartition(id="np1"), command_id=f"old{n}"), ctx(START))
    later = START + timedelta(hours=1)
    handle(tracked, command(add_np(), command_id="added"), ctx(later))
    state, handled = tracked.state, list(tracked.handled.items())
    batch = [np_command("update", "x", "u1"), np_command("remove", "", "r1"), np_command("add", "", "poison")]
    message = HandleBatch(NP, batch, ctx(later), poison=frozenset({"poison"}))
    try:
        AggregateActor._batch(tracked, message)
        raise AssertionError("the injected fault did not raise")
    except InjectedFault:
        pass
    assert tracked.state == state and list(tracked.handled.items()) == handled
    isolated = AggregateActor._batch(tracked, HandleBatch(NP, batch, ctx(later), isolate=True, poison=message.poison))
    assert [o.reply.type for o in isolated] == ["CommandAccepted", "CommandAccepted", "CommandRejected"]
    assert isolated[2].reply.code == 500 and isolated[2].failure.startswith("InjectedFault")
    again = AggregateActor._batch(tracked, HandleBatch(NP, batch, ctx(later), isolate=True, poison=message.poison))
    assert all(o.commit is None and o.reply.duplicate for o in again), "a poison command is decided once too"


def test_a_gap_in_an_aggregates_history_stops_it_with_a_clear_error():
    ids = itertools.count()
    log = []
    live = Tracked.new(NP)
    for kind in ("add", "update", "update"):
        log.append(handle(live, np_command(kind, "d", f"g{next(ids)}"), ctx()).commit)
    rebuilt = Tracked.new(NP)
    assert rebuilt.fold_commit(log[0]) is None
    problem = rebuilt.fold_commit(log[2])  # the second commit is missing
    assert "expected seq 2, found 3" in problem and "stopped" in problem
    assert rebuilt.fold_commit(log[1]) is not None, "nothing is folded after the gap"
    restored = Tracked.from_snapshot(NP, rebuilt.snapshot())
    for tracked in (rebuilt, restored):
        outcome = handle(tracked, np_command("update", "e", "after-the-gap"), ctx())
        assert outcome.commit is None, "a stopped aggregate decides nothing"
        assert outcome.reply.code == 503 and "history gap: expected seq 2, found 3" in outcome.reply.reason
        assert NP in outcome.reply.reason


def test_a_cluster_times_out_exactly_after_its_next_timeout():
    timeouts = Timeouts(pending_seconds=60)
    tracked = Tracked.new(CLUSTER)
    handle(tracked, command(C.CreateCluster(spec=SPEC), CLUSTER), ctx(START, timeouts=timeouts))
    due = next_timeout(tracked.state, timeouts)
    assert due == START + timedelta(seconds=60)
    before = handle(tracked, command(C.CheckTimeouts(), CLUSTER), ctx(due, timeouts=timeouts))
    assert before.commit.payload.events == [], "nothing is due at the deadline itself"
    after = handle(
        tracked, command(C.CheckTimeouts(), CLUSTER), ctx(due + timedelta(microseconds=1), timeouts=timeouts)
    )
    assert {e.type for e in after.commit.payload.events} >= {"MemberObsoleted"}
    later = next_timeout(tracked.state, timeouts)
    assert later is not None and later > due
