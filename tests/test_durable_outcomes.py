"""Every handled command leaves one commit, so that a repeat answers its original outcome —
the retry sequence of issue 9, the deduplication window, and decisions too large to append
(pure runtime: handle and fold_commit)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from actors.base import Context
from actors.runtime import DEDUP_MIN_IDS, DEDUP_MIN_SECONDS, Tracked, handle
from infra.log.kafka import envelope
from schemas import commands as C
from schemas.definitions import NetworkPartition
from schemas.records import CommandRecord
from tests.examples import SPEC

NP = "carbon.super/networkPartition/np1"
START = datetime(2026, 1, 1, tzinfo=UTC)
IDS = itertools.count()


def ctx(at: datetime = START, **extra) -> Context:
    return Context(now=at, new_id=lambda: f"r{next(IDS)}", **extra)


def command(payload, target: str = NP, command_id: str | None = None):
    return envelope(CommandRecord, payload, target, record_id=command_id or f"c{next(IDS)}")


def add_np():
    return C.AddNetworkPartition(
        definition=NetworkPartition.model_validate({"id": "np1", "provider": "mock", "partitions": [{"id": "p1"}]})
    )


def rebuilt(log) -> Tracked:
    tracked = Tracked.new(NP)
    for commit in log:
        assert tracked.fold_commit(commit) is None
    return tracked


def test_a_retried_rejection_stays_rejected_even_after_a_rebuild():
    live, log = Tracked.new(NP), []

    def send(cmd):
        outcome = handle(live, cmd, ctx())
        if outcome.commit is not None:
            log.append(outcome.commit)
        return outcome

    assert send(command(add_np())).reply.type == "CommandAccepted"
    rejected = command(add_np(), command_id="client-retry-me")
    first = send(rejected)
    assert first.reply.type == "CommandRejected" and first.reply.code == 409
    assert first.commit.payload.outcome == "rejected" and first.commit.payload.events == []
    assert send(command(C.RemoveNetworkPartition(id="np1"))).reply.type == "CommandAccepted"
    for tracked in (live, rebuilt(log)):  # live, and after a rebuild from the log
        retry = handle(tracked, rejected, ctx())
        assert retry.commit is None, "a repeat writes nothing"
        assert retry.reply.type == "CommandRejected" and retry.reply.duplicate
        assert (retry.reply.reason, retry.reply.code) == (first.reply.reason, 409)
        assert not tracked.state.exists, "the network partition must stay removed"


def test_an_accepted_repeat_answers_its_event_types():
    tracked = Tracked.new(NP)
    first = handle(tracked, cmd := command(add_np()), ctx())
    again = handle(Tracked.from_snapshot(NP, rebuilt([first.commit]).snapshot()), cmd, ctx())
    assert again.reply.duplicate and again.reply.event_types == first.reply.event_types != []


def test_the_window_keeps_the_last_thousand_ids_and_the_last_fifteen_minutes():
    tracked = Tracked.new(NP)
    first = command(C.RemoveNetworkPartition(id="np1"), command_id="oldest")
    handle(tracked, first, ctx(START))
    for n in range(DEDUP_MIN_IDS + 50):  # many ids within 15 minutes: all remembered
        handle(tracked, command(C.RemoveNetworkPartition(id="np1")), ctx(START + timedelta(seconds=n * 0.1)))
    assert "oldest" in tracked.handled
    later = START + timedelta(seconds=DEDUP_MIN_SECONDS + 60)
    handle(tracked, command(C.RemoveNetworkPartition(id="np1")), ctx(later))
    assert "oldest" not in tracked.handled, "older than 15 minutes and beyond the last 1,000"
    assert len(tracked.handled) >= DEDUP_MIN_IDS


def test_a_decision_too_large_for_one_record_is_rejected_durably():
    tracked = Tracked.new("carbon.super/cluster/" + SPEC.cluster_id)
    target = tracked.state.aggregate_id
    outcome = handle(tracked, command(C.CreateCluster(spec=SPEC), target), ctx(max_record_bytes=1500))
    assert outcome.reply.type == "CommandRejected" and outcome.reply.code == 413
    assert "bytes in one decision" in outcome.reply.reason
    assert outcome.commit.payload.events == [] and len(outcome.encoded) <= 1500
    assert not tracked.state.exists


def test_a_command_for_another_kind_of_aggregate_is_rejected_not_raised():
    cluster = "carbon.super/cluster/" + SPEC.cluster_id
    outcome = handle(Tracked.new(cluster), command(add_np(), cluster), ctx())
    assert outcome.reply.type == "CommandRejected" and outcome.failure is None
    assert outcome.reply.code == 400 and "cluster" in outcome.reply.reason


@hsettings(max_examples=60, deadline=None)
@given(
    st.one_of(st.integers(0, 50), st.integers(DEDUP_MIN_IDS - 5, DEDUP_MIN_IDS + 300)),
    st.floats(min_value=0.5, max_value=3.0),
    st.lists(
        st.tuples(st.sampled_from(["ask old", "ask new", "ask later", "remember"]), st.integers(0, 10**6)),
        max_size=80,
    ),
)
def test_a_window_read_from_a_snapshot_answers_as_the_unpacked_one(size, spacing, steps):
    """A snapshot's window stays packed while folds only ask whether an id is in it (rebuilds,
    `replay --at`): every answer, what is forgotten as the window moves on, and what the next
    snapshot holds are those of the window unpacked at once."""
    at = START.timestamp()
    eager = Tracked.new(NP)
    for n in range(size):
        eager.remember(f"c{n:032x}", (at + n * spacing, "UpdateNetworkPartition", "accepted", ("Updated",)))
    lazy = Tracked.from_snapshot(NP, eager.snapshot())
    eager = Tracked.from_snapshot(NP, eager.snapshot())
    eager.handled  # noqa: B018 - unpacked now: the reference
    later: list[str] = []
    now = at + size * spacing
    for step, pick in steps:
        if step == "remember":
            now += pick % 400  # up to 400 s on: past 15 minutes within a few steps
            later.append(f"n{pick:032x}")
            for tracked in (eager, lazy):
                tracked.remember(later[-1], (now, "UpdateNetworkPartition", "accepted", ("Updated",)))
            continue
        if step == "ask old":  # the oldest first: those the window forgets as it moves on
            command_id = f"c{pick % min(max(size, 1), 64):032x}"
        elif step == "ask later" and later:
            command_id = later[pick % len(later)]
        else:
            command_id = f"x{pick:032x}"
        assert lazy.has_handled(command_id) == eager.has_handled(command_id), command_id
    assert lazy.snapshot() == eager.snapshot()
    assert list(lazy.handled.items()) == list(eager.handled.items())
