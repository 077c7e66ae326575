"""Recovery stays exact once Kafka's log cleaner has compacted the snapshots topic: takeovers and
checkpoints by several nodes, then the cleaner, then a rebuild that must equal the rebuild from
the events alone. On a broker of its own whose cleaner runs every 200 ms; the rule itself is also
checked with hypothesis against a model of the cleaner (the last record of each key survives)."""

from __future__ import annotations

import logging
import uuid

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from infra.broker import EmbeddedBroker
from infra.log.bulk import iter_partition
from infra.log.kafka import Appender, ensure_topics, envelope
from infra.log.recovery import CHECKPOINT, CLAIM, COVERS, checkpoint_key, choose_snapshots, claim_key, recover_partition
from infra.replay.inspect_log import digest_of
from infra.settings import Settings
from schemas import commands as C
from schemas.records import Snapshot, SnapshotRecord
from schemas.status import CommandAccepted
from tests.conftest import RunningNode, wait_until
from tests.test_log_integrity import add_np, np_aggregate

pytestmark = pytest.mark.integration

QUICK_CLEANER = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0"}
FILLER = b"filler"
"""Key of the records appended while waiting for the cleaner: an append rolls the active
segment (past segment.ms), which the cleaner never touches."""


@pytest.fixture(scope="module")
def cleaning_broker():
    with EmbeddedBroker(overrides={"log.cleaner.backoff.ms": "200"}) as embedded:
        yield embedded


@pytest.fixture
def one_partition(cleaning_broker, tmp_path):
    """One partition (every aggregate on it), snapshots compacted as soon as a segment rolls."""
    made = Settings(
        kafka_bootstrap=cleaning_broker.bootstrap,
        topic_prefix=f"c{uuid.uuid4().hex[:8]}.",
        partitions=1,
        state_dir=tmp_path,
        snapshot_every=2,
        node_partitions=[0],
    )
    ensure_topics(made)
    admin = KafkaAdminClient(bootstrap_servers=made.kafka_bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, made.topic("snapshots"), configs=QUICK_CLEANER)])
    finally:
        admin.close()
    return made


def keys_on(settings) -> list[bytes]:
    return [key for _offset, key, _value in iter_partition(settings, "snapshots", 0)]


def compact(settings) -> None:
    """Until the cleaner has left one record of each key (but the filler's)."""
    appender = Appender(settings)

    def compacted() -> bool:
        appender.append(
            "snapshots",
            FILLER.decode(),
            envelope(
                SnapshotRecord,
                Snapshot(aggregate_type="filler", events_partition=0, events_offset=-1, state={}),
                FILLER.decode(),
            ),
            partition=0,
        )
        keys = [k for k in keys_on(settings) if k != FILLER]
        return len(keys) == len(set(keys))

    try:
        wait_until(compacted, timeout=90, interval=0.3, message="the cleaner compacting the snapshots")
    finally:
        appender.close()


def serve(settings, client, commands) -> None:
    """One node takes the partition, handles the commands (a checkpoint every two), leaves."""
    node = RunningNode(settings)
    try:
        for target, payload in commands:
            assert isinstance(client.call(target, payload, timeout=30), CommandAccepted)
    finally:
        node.stop()


def states(recovered) -> str:
    return digest_of(recovered.aggregates)


def test_after_takeovers_and_compaction_snapshots_of_earlier_owners_still_count(one_partition):
    from infra.log.commands_client import CommandClient

    settings = one_partition
    client = CommandClient(settings)
    try:
        serve(settings, client, [(np_aggregate(n), add_np(n)) for n in range(6)])
        serve(
            settings,
            client,
            [(np_aggregate(n), C.UpdateNetworkPartition(definition=add_np(n, "second").definition)) for n in (0, 1)],
        )
        compact(settings)
        offsets = [offset for offset, _key, _value in iter_partition(settings, "snapshots", 0)]
        assert len(offsets) < offsets[-1] + 1, "the cleaner removed records"
        keys = set(keys_on(settings))
        assert sum(k.startswith(f"{CLAIM}/0/".encode()) for k in keys) == 2, "every claim survives"

        rebuilt, cold = recover_partition(settings, 0), recover_partition(settings, 0, use_snapshots=False)
        assert states(rebuilt) == states(cold) and len(rebuilt.aggregates) == 6
        assert rebuilt.snapshots_loaded == 6, "the first owner's snapshots, vouched for by the second's checkpoint"
    finally:
        client.close()


def test_a_zombie_snapshot_newer_than_the_checkpoint_falls_back_to_the_events(one_partition, caplog):
    from infra.log.commands_client import CommandClient

    settings = one_partition
    client = CommandClient(settings)
    try:
        serve(settings, client, [(np_aggregate(n), add_np(n)) for n in range(4)])
        zombie = Appender(settings)  # a cut-off owner's late snapshot of np3 replaces the one vouched for
        zombie.append(
            "snapshots",
            np_aggregate(3),
            envelope(
                SnapshotRecord,
                Snapshot(
                    aggregate_type="networkPartition",
                    events_partition=0,
                    events_offset=10_000,
                    state={"not": "history"},
                    claim="zombie",
                ),
                np_aggregate(3),
            ),
            partition=0,
        )
        zombie.close()
        compact(settings)
        with caplog.at_level(logging.WARNING, logger="infra.log.recovery"):
            rebuilt = recover_partition(settings, 0)
        cold = recover_partition(settings, 0, use_snapshots=False)
        assert states(rebuilt) == states(cold) and rebuilt.snapshots_loaded == 0
        assert any(np_aggregate(3) in r.getMessage() and "partition 0" in r.getMessage() for r in caplog.records)
        assert set(rebuilt.dirty) == set(cold.aggregates), "the next checkpoint snapshots everything again"

        serve(settings, client, [(np_aggregate(n), add_np(n)) for n in (4, 5)])  # takes over, checkpoints
        again = recover_partition(settings, 0)
        assert states(again) == states(recover_partition(settings, 0, use_snapshots=False))
        assert again.snapshots_loaded == 6
    finally:
        client.close()


# --- the rule against a model of the cleaner -------------------------------------------------


def _record(key: str, aggregate_type: str, events_offset: int, state: dict, claim: str | None) -> tuple[str, bytes]:
    return key, envelope(
        SnapshotRecord,
        Snapshot(
            aggregate_type=aggregate_type, events_partition=0, events_offset=events_offset, state=state, claim=claim
        ),
        key,
    ).model_dump_json().encode()


class _Model:
    """Nodes taking one partition in turn as `infra.node.node` does (claim, rebuild from what
    `choose_snapshots` picks, commit, checkpoint), zombies and crashes mid-checkpoint; history
    is the offset of each aggregate's last commit. The cleaner keeps the last record per key."""

    def __init__(self) -> None:
        self.log: list[tuple[int, str, bytes]] = []
        self.next_position = 0
        self.history: dict[str, list[int]] = {}
        """aggregate -> the offsets of its commits"""
        self.events = 0
        self.claim: str | None = None
        self.covers: dict[str, int] = {}
        self.dirty: dict[str, int] = {}

    def write(self, key: str, aggregate_type: str, events_offset: int, state: dict, claim: str | None) -> None:
        self.log.append((self.next_position, *_record(key, aggregate_type, events_offset, state, claim)))
        self.next_position += 1

    def chosen(self):
        return choose_snapshots([(p, k.encode(), v) for p, k, v in self.log], 0)

    def take_over(self, n: int) -> None:
        claim = f"c{n}"
        self.write(claim_key(0, claim), CLAIM, -1, {}, claim)
        found = self.chosen()
        covered = {a: r.payload.events_offset for a, r in found.latest.items()}
        self.dirty = dict(found.exposed) | {a: at[-1] for a, at in self.history.items() if at[-1] >= found.replay_from}
        self.covers = {a: at for a, at in covered.items() if a not in self.dirty}
        self.claim = claim
        self.events += 1  # its Claim

    def commit(self, aggregate: str) -> None:
        self.history.setdefault(aggregate, []).append(self.events)
        self.dirty[aggregate] = self.events
        self.events += 1

    def snapshots(self) -> None:
        for aggregate, at in self.dirty.items():
            self.write(aggregate, "aggregate", at, {"at": at}, self.claim)

    def checkpoint(self) -> None:
        self.snapshots()
        self.covers |= self.dirty
        self.dirty = {}
        self.write(checkpoint_key(0, self.claim), CHECKPOINT, self.events - 1, {COVERS: dict(self.covers)}, self.claim)

    def zombie(self, aggregate: str) -> None:
        self.write(aggregate, "aggregate", self.events + 1000, {"at": -1}, "zombie")
        self.write(checkpoint_key(0, "zombie"), CHECKPOINT, self.events + 1000, {COVERS: {aggregate: -1}}, "zombie")

    def clean(self, upto: int) -> None:
        """The cleaner over the records before `upto` (the rest is the active segment)."""
        head = self.log[:upto]
        last = {key: position for position, key, _value in head}
        self.log = [r for r in head if last[r[1]] == r[0]] + self.log[upto:]


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.integers(0, 5)),
        st.tuples(st.just("checkpoint"), st.just(0)),
        st.tuples(st.just("crash-mid-checkpoint"), st.just(0)),
        st.tuples(st.just("take-over"), st.just(0)),
        st.tuples(st.just("zombie"), st.integers(0, 5)),
        st.tuples(st.just("clean"), st.integers(0, 100)),
    ),
    max_size=40,
)


@hypothesis_settings(max_examples=150)
@given(STEPS)
def test_the_chosen_snapshots_are_history_at_the_replay_point_whatever_the_cleaner_removed(steps):
    model = _Model()
    model.take_over(0)
    takeovers = 1
    for step, argument in steps:
        if step == "commit":
            model.commit(f"a{argument}")
        elif step == "checkpoint":
            model.checkpoint()
        elif step == "crash-mid-checkpoint":
            model.snapshots()
            model.take_over(takeovers)
            takeovers += 1
        elif step == "take-over":
            model.take_over(takeovers)
            takeovers += 1
        elif step == "zombie":
            model.zombie(f"a{argument}")
        else:
            model.clean(argument * len(model.log) // 100)
        found = model.chosen()
        replay_from = found.replay_from
        expected = {a: max(o for o in at if o < replay_from) for a, at in model.history.items() if at[0] < replay_from}
        assert {a: r.payload.events_offset for a, r in found.latest.items()} == expected
        assert all(r.payload.state == {"at": r.payload.events_offset} for r in found.latest.values())
