"""The log keeps its promises, on the real broker with real node processes: a retried
rejection stays rejected across restarts, commands are routed to their aggregate's partition,
poison never stops the node, a paused node's late writes are not history, and a node killed at
random points of its write path never leaves half a decision, a gap, a repeat or a lost command.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from infra.log.eventlog import History, read_history
from infra.log.kafka import Appender, ensure_topics, envelope, read_to_end
from infra.log.recovery import fence_before, recover_partition
from infra.node.faults import POINTS
from infra.node.node import partition_for
from infra.replay.inspect_log import digest_all
from infra.settings import Settings
from schemas import commands as C
from schemas.definitions import NetworkPartition
from schemas.ids import aggregate_id
from schemas.records import CommandRecord, LogRecord
from schemas.status import CommandAccepted, CommandRejected
from tests.conftest import RunningNode, wait_until
from tests.processes import end, is_stopped, start_node

pytestmark = pytest.mark.integration
T = "carbon.super"


def np_aggregate(n: int) -> str:
    return aggregate_id(T, "networkPartition", f"np{n}")


def add_np(n: int, description: str = "") -> C.AddNetworkPartition:
    return C.AddNetworkPartition(
        definition=NetworkPartition.model_validate(
            {"id": f"np{n}", "provider": "mock", "partitions": [{"id": "p1", "description": description}]}
        )
    )


def command(payload, target: str, command_id: str | None = None) -> CommandRecord:
    return envelope(CommandRecord, payload, target, record_id=command_id or uuid.uuid4().hex)


def commits_by_command(settings) -> dict[str, list[LogRecord]]:
    found: dict[str, list[LogRecord]] = {}
    for _partition, _offset, commit in read_history(settings):
        found.setdefault(commit.causation_id, []).append(commit)
    return found


# --- the retry sequence ---------------------------------------------------------------------


@pytest.mark.parametrize("restart_between", [False, True])
def test_a_retried_rejected_command_leaves_the_definition_absent(settings, client, restart_between):
    settings = settings.model_copy(update={"node_partitions": list(range(settings.partitions))})  # no group joins
    node = RunningNode(settings)
    target = np_aggregate(1)
    retried = command(add_np(1), target, "client-chosen-id")
    try:
        assert isinstance(client.call(target, add_np(1)), CommandAccepted)
        client.appender.append("commands", target, retried)
        assert isinstance(first := client.wait(retried.id), CommandRejected) and first.code == 409
        if restart_between:
            node.stop()
            node = RunningNode(settings)
        assert isinstance(client.call(target, C.RemoveNetworkPartition(id="np1")), CommandAccepted)
        if restart_between:
            node.stop()
            node = RunningNode(settings)
        client.appender.append("commands", target, retried)  # the client retries with its own id
        again = client.wait(retried.id)
    finally:
        node.stop()
    assert isinstance(again, CommandRejected) and again.duplicate and again.code == 409
    history = commits_by_command(settings)
    assert len(history[retried.id]) == 1 and history[retried.id][0].payload.outcome == "rejected"
    rebuilt = recover_partition(settings, partition_for(target, settings.partitions)).aggregates[target]
    assert not rebuilt.state.exists


# --- routing ----------------------------------------------------------------------------------


def test_commands_without_their_key_or_off_their_partition_reach_their_aggregate_once(settings, running_node, client):
    target = np_aggregate(2)
    home = partition_for(target, settings.partitions)
    away = (home + 1) % settings.partitions
    keyless = command(add_np(2), target)
    misplaced = command(C.UpdateNetworkPartition(definition=add_np(2, "moved").definition), target)
    wrong_key = command(C.UpdateNetworkPartition(definition=add_np(2, "rekeyed").definition), target)
    topic = settings.topic("commands")
    send = client.appender.send_raw  # signed as the platform's parts sign, on the partition given
    send(topic, None, keyless.model_dump_json().encode(), partition=away)
    client.wait(keyless.id)
    send(topic, target.encode(), misplaced.model_dump_json().encode(), partition=away)
    client.wait(misplaced.id)
    send(topic, b"someone-else", wrong_key.model_dump_json().encode(), partition=home)
    assert isinstance(client.wait(wrong_key.id), CommandAccepted)
    history = commits_by_command(settings)
    placed = {(p, c.causation_id) for p, _o, c in read_history(settings) if c.aggregate_id == target}
    assert placed == {(home, keyless.id), (home, misplaced.id), (home, wrong_key.id)}
    assert all(len(history[c.id]) == 1 for c in (keyless, misplaced, wrong_key))
    assert running_node.node.rerouted == 3


# --- poison -----------------------------------------------------------------------------------


def test_poison_on_the_commands_topic_is_dead_lettered_and_the_node_process_goes_on(settings, client):
    process = start_node(settings.model_copy(update={"node_partitions": list(range(settings.partitions))}))
    try:
        target = np_aggregate(3)
        home = partition_for(target, settings.partitions)
        wait_until(lambda: client.call(target, add_np(3)), timeout=30, message="the node answering")
        topic = settings.topic("commands")
        send = client.appender.send_raw  # signed: each is refused for its own fault, not for being unsigned
        cluster = aggregate_id(T, "cluster", "nowhere.domain")
        poison = [
            (b"\xff\xfe-not-utf8", command(C.RemoveNetworkPartition(id="np3"), target).model_dump_json().encode()),
            (target.encode(), None),
            (target.encode(), b"{not json"),
            (
                target.encode(),
                b'{"id": "x", "type": "Nonsense", "aggregate_id": "a/b/c", "occurred_at": '
                b'"2026-01-01T00:00:00Z", "payload": {"type": "Nonsense"}}',
            ),
            (target.encode(), b'{"id": "' + b"x" * 950_000),  # near the broker's limit: its letter must fit
        ]
        for key, value in poison:
            send(topic, key, value, partition=home)
        wrong_kind = command(add_np(3), cluster)  # a definition command sent to a cluster
        send(
            topic,
            cluster.encode(),
            wrong_kind.model_dump_json().encode(),
            partition=partition_for(cluster, settings.partitions),
        )
        after = client.call(target, C.UpdateNetworkPartition(definition=add_np(3, "after").definition))
        assert isinstance(after, CommandAccepted), "the next good command is handled"
        rejected = client.wait(wrong_kind.id)
        assert isinstance(rejected, CommandRejected) and "not a command for a cluster" in rejected.reason
        assert process.is_alive() and process.exitcode is None, "the same node process"

        def letters():
            return [
                d.record.payload for d in read_to_end(settings, "deadletter") if d.record.payload.source_topic == topic
            ]

        found = wait_until(lambda: (found := letters()) and len(found) >= 5 and found, message="dead letters")
        reasons = " | ".join(letter.reason for letter in found)
        assert "key: not UTF-8" in reasons and "null value" in reasons and "Invalid JSON" in reasons
        assert "first 256000 kept" in reasons
        assert any("payload" in letter.reason and "Nonsense" in letter.original for letter in found)
    finally:
        end(process)


# --- fencing ----------------------------------------------------------------------------------


def claims(settings) -> list[tuple[int, str, str]]:
    """(partition, claim id, writer) of every Claim, in log order per partition."""
    found = []
    for raw in read_to_end(settings, "events", decode_records=False):
        if b'"Claim"' in raw.value:
            record = LogRecord.model_validate_json(raw.value)
            found.append((raw.partition, record.id, record.payload.writer))
    return found


def test_a_node_paused_past_its_session_timeout_writes_nothing_any_reader_accepts(settings, client):
    import os
    import signal

    target = np_aggregate(4)
    home = partition_for(target, settings.partitions)
    zombie = start_node(settings, fault="before-append:1:stop")
    survivor = None
    try:
        wait_until(lambda: len(claims(settings)) >= settings.partitions, timeout=40, message="the first node's claims")
        zombie_writer = claims(settings)[-1][2]
        sent = command(add_np(4), target)
        client.appender.append("commands", target, sent)
        wait_until(lambda: is_stopped(zombie), timeout=30, message="the node pausing before its append")
        survivor = start_node(settings)  # joins; the paused member is evicted after its session timeout
        assert isinstance(client.wait(sent.id, timeout=60), CommandAccepted), "the survivor took over"
        new_claim = [c for p, c, w in claims(settings) if p == home][-1]
        os.kill(zombie.pid, signal.SIGCONT)  # the zombie wakes up and appends its decision

        def zombie_commit():
            for raw in read_to_end(settings, "events", partitions=[home], decode_records=False):
                record = LogRecord.model_validate_json(raw.value)
                if record.causation_id == sent.id and record.payload.writer == zombie_writer:
                    return raw.offset

        late = wait_until(zombie_commit, timeout=30, message="the zombie's late commit")
    finally:
        end(zombie)
        if survivor is not None:
            end(survivor)
    history = commits_by_command(settings)[sent.id]
    assert len(history) == 1 and history[0].payload.writer != zombie_writer
    assert history[0].payload.claim == new_claim
    rebuilt = recover_partition(settings, home)
    assert rebuilt.commits_fenced >= 1 and not rebuilt.problems
    resumed = History.of(settings, lambda p, o: fence_before(settings, p, o))  # a group reader resuming there
    raw = next(r for r in read_to_end(settings, "events", partitions=[home], decode_records=False) if r.offset == late)
    assert resumed.commit(raw) is None


# --- the crash-point suite --------------------------------------------------------------------


def wave(n: int) -> list[CommandRecord]:
    """Commands of one wave, each with a fixed id: adds, a rejected re-add, updates, a remove,
    usage marks, and a repeat of an earlier wave's command (a client retry)."""
    made = []
    for k in range(3):
        target = np_aggregate(10 * n + k)
        made += [
            command(add_np(10 * n + k), target, f"w{n}.{k}.add"),
            command(add_np(10 * n + k), target, f"w{n}.{k}.readd"),
            command(
                C.UpdateNetworkPartition(definition=add_np(10 * n + k, f"v{n}").definition), target, f"w{n}.{k}.update"
            ),
            command(
                C.MarkDefinitionUsed(
                    kind="networkPartition", id=f"np{10 * n + k}", by=aggregate_id(T, "application", "a")
                ),
                target,
                f"w{n}.{k}.use",
            ),
        ]
    made.append(command(C.RemoveNetworkPartition(id=f"np{10 * n + 2}"), np_aggregate(10 * n + 2), f"w{n}.remove"))
    if n:
        made.append(command(add_np(10 * (n - 1)), np_aggregate(10 * (n - 1)), f"w{n - 1}.0.readd"))
    return made


def _answered(client, commands) -> bool:
    return all(c.id in client.replies for c in commands)


def test_a_node_killed_anywhere_in_its_write_path_leaves_exactly_the_crash_free_history(broker):
    from infra.log.commands_client import CommandClient

    waves, crashes, runs, rng = 0, 0, 0, random.Random(9)
    # two partitions and no group: a restart costs a process and two claims, not a group join
    settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"crash{uuid.uuid4().hex[:6]}.", partitions=2)
    ensure_topics(settings)
    client = CommandClient(settings)
    fast = settings.model_copy(update={"snapshot_every": 4, "node_partitions": list(range(settings.partitions))})
    sent: list[CommandRecord] = []
    while crashes < 50 and runs < 90:
        runs += 1
        batch = wave(waves)
        waves += 1
        sent += batch
        for record in batch:
            client.appender.send("commands", record.aggregate_id, record)
        client.appender.flush()
        point = rng.choice(POINTS)
        process = start_node(fast, fault=f"{point}:{rng.randint(1, 3)}")
        wait_until(
            lambda process=process, sent=sent: not process.is_alive() or _answered(client, sent),
            timeout=60,
            message="the node crashing or answering everything",
        )
        if process.is_alive():
            end(process)
        else:
            crashes += process.exitcode == -9
    final = start_node(fast)
    try:
        wait_until(lambda: _answered(client, sent), timeout=60, message="every command answered after the crashes")
    finally:
        end(final)
        client.close()
    print(f"\ncrash-point suite: {crashes} kills in {runs} runs, {len(sent)} commands")
    assert crashes >= 50

    reference = Settings(
        kafka_bootstrap=broker.bootstrap, topic_prefix=f"ref{uuid.uuid4().hex[:6]}.", partitions=settings.partitions
    )
    ensure_topics(reference)
    appender = Appender(reference)
    for record in sent:
        appender.send("commands", record.aggregate_id, record)
    appender.flush()
    appender.close()
    calm = start_node(reference.model_copy(update={"node_partitions": list(range(reference.partitions))}))
    try:
        wait_until(
            lambda: {d.record.payload.command_id for d in read_to_end(reference, "replies")} >= {c.id for c in sent},
            timeout=60,
            message="the crash-free run",
        )
    finally:
        end(calm)

    crashed, calm_history = commits_by_command(settings), commits_by_command(reference)
    assert set(crashed) == set(calm_history) == {c.id for c in sent}
    for command_id, commits in crashed.items():
        assert len(commits) == 1, f"{command_id} decided {len(commits)} times: " + "; ".join(
            f"{c.id} seq {c.aggregate_seq} claim {c.payload.claim} by {c.payload.writer}" for c in commits
        )
        mine, theirs = commits[0].payload, calm_history[command_id][0].payload
        assert (mine.outcome, [e.type for e in mine.events]) == (theirs.outcome, [e.type for e in theirs.events])
    assert digest_all(settings) == digest_all(reference)
    for partition in range(settings.partitions):
        with_snapshots = recover_partition(settings, partition)
        cold = recover_partition(settings, partition, use_snapshots=False)
        assert with_snapshots.problems == [] and cold.problems == [], "no gap, no repeat"
        assert {k: t.state for k, t in with_snapshots.aggregates.items()} == {
            k: t.state for k, t in cold.aggregates.items()
        }
    seqs = Counter()
    for _p, _o, commit in read_history(settings):
        for n, _event in enumerate(commit.payload.events):
            seqs[(commit.aggregate_id, commit.aggregate_seq + n)] += 1
    assert max(seqs.values()) == 1


def test_poison_on_the_reactors_inputs_and_the_events_topic_stops_neither_reactor_nor_read_model(
    settings, running_node, client
):
    from infra.api.read_model import ReadModel

    read_model = ReadModel(settings).start()
    appender = client.appender  # signed: each is refused for its own fault, not for being unsigned
    empty_cluster = (
        b'{"id": "s1", "type": "InstanceStarted", "aggregate_id": "carbon.super/cluster/x", '
        b'"occurred_at": "2026-01-01T00:00:00Z", "payload": {"type": "InstanceStarted", '
        b'"member_id": "m", "cluster_id": "", "network_partition_id": "np"}}'
    )
    poison = {
        "events": [b"{not json", None],
        "replies": [b"{not json"],
        "instance-status": [empty_cluster, None],
        "health": [b'{"MemberFault": 1'],
    }
    for kind, values in poison.items():
        for value in values:
            for partition in range(settings.partitions):
                appender.send_raw(settings.topic(kind), b"\xff\xfe", value, partition=partition)
    appender.flush()
    try:
        target = np_aggregate(5)
        assert isinstance(client.call(target, add_np(5)), CommandAccepted)
        used = command(
            C.MarkDefinitionUsed(kind="networkPartition", id="np5", by=aggregate_id(T, "application", "nowhere")),
            target,
        )
        client.appender.append("commands", target, used)
        client.wait(used.id)
        commit = commits_by_command(settings)[used.id][0]
        reaction = f"{commit.id}.0.0"  # DefinitionUsed -> RecordDependencyResolved to the application
        assert isinstance(client.wait(reaction, timeout=30), CommandRejected), "the reactor still reacts"
        wait_until(lambda: read_model.get(T, "networkPartition", "np5"), message="the read model following")
        assert all(thread.is_alive() for thread in running_node.threads)
        assert read_model.thread.is_alive()

        def every_poison_dead_lettered() -> bool:
            letters = [d.record.payload for d in read_to_end(settings, "deadletter")]
            by_topic = Counter(letter.source_topic.removeprefix(settings.topic_prefix) for letter in letters)
            return all(by_topic[kind] >= len(values) * settings.partitions for kind, values in poison.items())

        wait_until(
            every_poison_dead_lettered,
            timeout=30,
            interval=0.5,
            message="every poison record dead-lettered with its reason",
        )
    finally:
        read_model.stop()
