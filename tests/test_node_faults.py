"""What the node survives without deciding anything twice or losing an answer, on the real
broker: an append whose outcome is unknown (it timed out, and the record lands later), an actor
that raises on a command, a poll of its consumer that never returns, and a timer with nothing due
(it sends nothing at all)."""

from __future__ import annotations

import logging
import re

import pytest

from infra.log.kafka import read_to_end
from infra.log.recovery import recover_partition
from infra.node.node import partition_for
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.records import LogRecord
from schemas.status import CommandAccepted, CommandRejected
from tests.conftest import RunningNode, wait_until
from tests.examples import SPEC
from tests.processes import end, start_node
from tests.test_log_integrity import add_np, claims, command, commits_by_command, np_aggregate

pytestmark = pytest.mark.integration


def raw_commits(settings, partition: int) -> list[LogRecord]:
    """Every Commit record of an events partition, history or not (fenced ones too)."""
    found = []
    for raw in read_to_end(settings, "events", partitions=[partition], decode_records=False):
        if b'"Commit"' in raw.value:
            found.append(LogRecord.model_validate_json(raw.value))
    return found


def test_an_append_whose_outcome_is_unknown_never_decides_its_command_twice(settings, client):
    """The second commit's append times out and its record lands seconds later, after the node
    went on: the node claims the partition again before deciding anything more there, so the
    command has one commit that counts, whichever of the two the late record follows."""
    fast = settings.model_copy(update={"node_partitions": list(range(settings.partitions))})
    target = np_aggregate(1)
    home = partition_for(target, settings.partitions)
    process = start_node(fast, fault="append-timeout:2")
    try:
        assert isinstance(client.call(target, add_np(1), timeout=90), CommandAccepted)
        first_claim = [c for p, c, _w in claims(settings) if p == home][-1]
        unknown = command(C.UpdateNetworkPartition(definition=add_np(1, "v2").definition), target)
        late = (unknown.id, first_claim)
        client.appender.append("commands", target, unknown)
        answer = client.wait(unknown.id, timeout=60)
        assert isinstance(answer, CommandAccepted), answer
        after = client.call(target, C.UpdateNetworkPartition(definition=add_np(1, "v3").definition), timeout=60)
        assert isinstance(after, CommandAccepted) and not after.duplicate
        wait_until(
            lambda: [c for c in raw_commits(settings, home) if (c.causation_id, c.payload.claim) == late],
            timeout=60,
            message="the late record of the append that timed out",
        )
        assert process.is_alive(), "the node went on"
    finally:
        end(process)
    history = commits_by_command(settings)
    assert len(history[unknown.id]) == 1, "decided once, whatever the late record did"
    assert all(len(commits) == 1 for commits in history.values())
    assert len([p for p, _c, _w in claims(settings) if p == home]) >= 2, "the partition was claimed again"
    rebuilt = recover_partition(settings, home)
    assert not rebuilt.problems
    assert rebuilt.aggregates[target].state.definition["partitions"][0]["description"] == "v3"


def test_an_actor_that_raises_is_restarted_from_its_last_state_and_its_partition_goes_on(settings, client):
    """The actor raises on the second command it is given (each time it meets it): thespian
    tries the batch again, then hands it back; the node restarts the actor from the state
    before that batch and sends it again one command at a time. The poison command is rejected
    (500) and dead-lettered; the commands beside it and after it are decided on that state."""
    fast = settings.model_copy(update={"node_partitions": list(range(settings.partitions)), "fault": "actor-raises:2"})
    running = RunningNode(fast)
    try:
        target = np_aggregate(2)
        assert isinstance(client.call(target, add_np(2)), CommandAccepted)
        poison = command(C.UpdateNetworkPartition(definition=add_np(2, "poison").definition), target)
        beside = command(C.UpdateNetworkPartition(definition=add_np(2, "beside").definition), target)
        for record in (poison, beside):  # most likely one poll: one batch
            client.appender.send("commands", target, record)
        client.appender.flush()
        rejected = client.wait(poison.id, timeout=30)
        assert isinstance(rejected, CommandRejected) and rejected.code == 500
        assert "InjectedFault" in rejected.reason
        assert isinstance(client.wait(beside.id, timeout=30), CommandAccepted)
        after = client.call(target, C.UpdateNetworkPartition(definition=add_np(2, "after").definition))
        assert isinstance(after, CommandAccepted), "the aggregate goes on from its last state"
        other = np_aggregate(3)
        assert isinstance(client.call(other, add_np(3)), CommandAccepted), "and so does its partition"
        assert running.node.host.restarts == 1
        letters = wait_until(
            lambda: [d.record.payload for d in read_to_end(settings, "deadletter")], message="the dead letter"
        )
        assert any(poison.id in letter.original and "InjectedFault" in letter.reason for letter in letters)
    finally:
        running.stop()
    history = commits_by_command(settings)
    assert [c.payload.code for c in history[poison.id]] == [500]
    assert all(len(commits) == 1 for commits in history.values())
    rebuilt = recover_partition(settings, partition_for(target, settings.partitions))
    assert rebuilt.aggregates[target].state.definition["partitions"][0]["description"] == "after"


def test_a_timer_with_nothing_due_sends_no_command(settings, client):
    """A cluster whose members are pending, none near its timeout: the ticker fires again and
    again, and not one CheckTimeouts is written (one is, once a timeout is due: test_timers)."""
    running = RunningNode(settings, timer_seconds=0.2)
    try:
        cluster = aggregate_id("carbon.super", "cluster", SPEC.cluster_id)
        assert isinstance(client.call(cluster, C.CreateCluster(spec=SPEC), timeout=90), CommandAccepted)
        assert running.node.host.due, "the cluster's pending members have a timeout booked"
        checks = running.node.host.checks
        wait_until(lambda: running.node.host.checks >= checks + 5, timeout=30, message="five timer checks")
    finally:
        running.stop()
    commands = [d.record.type for d in read_to_end(settings, "commands")]
    assert "CheckTimeouts" not in commands, commands


def test_a_hung_poll_is_cut_and_the_node_serves_with_a_new_consumer(settings, client, caplog):
    """The node's 10th poll never returns (the fault waits until the consumer is closed, as a
    hung kafka-python poll does): its watchdog closes the consumer after `node_stall_seconds`,
    the node joins its group again with a new one, and a command sent meanwhile is answered once."""
    cut_then_served_once(settings, client, caplog, "poll-hangs:10", "has not returned from a poll")


def test_a_node_dropped_from_its_group_unawares_joins_again_and_serves(settings, client, caplog):
    """The node's consumer stops heartbeating at its 10th poll and goes on polling, as if it
    still held its partitions: the group drops it after its session timeout. The watchdog sees
    no heartbeat answered in two session timeouts, closes the consumer, the node joins again with
    a new one, and a command sent meanwhile is answered once."""
    cut_then_served_once(
        settings, client, caplog, "heartbeats-stop:10", "no heartbeat answered by its group|not completed joining"
    )


def cut_then_served_once(settings, client, caplog, fault: str, cut_says: str) -> None:
    """A node with `fault` (and a 2 s stall limit): its watchdog logs `cut_says` (a pattern) as it
    closes the consumer (kafka-python may or may not notice that its group dropped it: the cut
    then says the join never completed); a command sent after that is accepted, and every command has one commit."""
    caplog.set_level(logging.ERROR, logger="infra.node.node")
    running = RunningNode(settings.model_copy(update={"fault": fault, "node_stall_seconds": 2.0}), timer_seconds=0.2)
    try:
        wait_until(
            lambda: any(re.search(cut_says, r.getMessage()) for r in caplog.records),
            timeout=90,
            message=f"the watchdog closing the consumer ({cut_says})",
        )
        cluster = aggregate_id("carbon.super", "cluster", SPEC.cluster_id)
        reply = client.call(cluster, C.CreateCluster(spec=SPEC), timeout=60)
        assert isinstance(reply, CommandAccepted) and not reply.duplicate, reply
    finally:
        running.stop()
    history = commits_by_command(settings)
    assert len(history[reply.command_id]) == 1 and all(len(commits) == 1 for commits in history.values())
