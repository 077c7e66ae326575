"""Time travel at any depth (issue 24, item 4), on real Kafka: `replay --at` starts from the
checkpoint nearest the instant, found with the checkpoint index rather than by reading the
snapshots partition from its start; full checkpoints bound what it reads; snapshots stay within
a record (the dedup window packed), a checkpoint marker follows only acknowledged snapshots, and
a forged snapshot is never chosen."""

from __future__ import annotations

import base64
import logging
import os
import zlib
from collections import OrderedDict
from datetime import timedelta
from functools import partial

import pytest
import zstandard
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from kafka import KafkaProducer

from actors.runtime import DEDUP_MAX_IDS, Tracked, pack_handled, unpack_handled
from infra.log.bulk import iter_partition
from infra.log.generate import generate_log
from infra.log.kafka import Appender, encode, envelope, read_to_end, topic_config
from infra.log.recovery import (
    CheckpointStats,
    claim_partitions,
    load_snapshots,
    recover_partition,
    write_checkpoint,
)
from infra.node.node import partition_for
from infra.replay.checkpoint_index import CheckpointIndex
from infra.replay.timetravel import Position, platform_at
from infra.settings import Settings
from schemas.records import Snapshot, SnapshotRecord
from tests.conftest import wait_until

EVERY = 250


def states(recovered) -> dict:
    return {a: (t.state, t.handled) for a, t in recovered.aggregates.items()}


@pytest.fixture
def history(settings):
    """Stamped over the last 40 minutes: the snapshots topic rolls its segments hourly (by record
    time) and compacts the closed ones, which keeps only each claim's newest checkpoint."""
    return generate_log(
        settings, 6000, clusters=40, tenants=2, span=timedelta(minutes=40), takeovers=1, snapshot_every=EVERY, workers=1
    )


def test_replay_at_an_instant_deep_in_the_history_reads_the_nearest_checkpoint_only(settings, history):
    at = history.first + (history.last - history.first) * 3 / 4
    index = CheckpointIndex(settings)
    for partition in range(settings.partitions):
        index.refresh(partition)
    total = {p: sum(1 for _ in iter_partition(settings, "snapshots", p)) for p in range(settings.partitions)}
    for partition in range(settings.partitions):
        indexed = recover_partition(settings, partition, until_time=at, find_snapshots=index.snapshots)
        scanned = recover_partition(settings, partition, until_time=at)
        cold = recover_partition(settings, partition, until_time=at, use_snapshots=False)
        assert states(indexed) == states(cold) == states(scanned)
        assert indexed.snapshots_loaded > 0
        # the chosen checkpoint's snapshots (one range), not the partition from its start
        assert scanned.snapshot_records_read > total[partition] / 2 > indexed.snapshot_records_read
        # and the commits after it, at most a checkpoint interval's worth
        assert indexed.commits_replayed <= EVERY < cold.commits_replayed
    assert index.refresh(0) == 0  # brought up to date once: a later query reads no index records
    whole = platform_at(settings, Position(time=at))
    assert len(whole) == sum(len(recover_partition(settings, p, until_time=at).aggregates) for p in range(4))


def test_an_instant_is_rebuilt_whole_whatever_the_record_times_say(settings, history):
    """Time travel reads the commits after its checkpoint up to where the records' Kafka times
    say the instant ends (`likely_end`), and on when the fold has not stopped there: a commit
    may reach Kafka later than it occurred. Hints too early, right, or past the end all give
    the cold rebuild's states."""
    at = history.first + (history.last - history.first) / 2
    index = CheckpointIndex(settings)
    for partition in range(settings.partitions):
        cold = states(recover_partition(settings, partition, until_time=at, use_snapshots=False))
        start = index.snapshots(partition, None, at).replay_from
        for likely_end in (start, start + 1, start + EVERY // 2, 10**9, None):
            hinted = recover_partition(
                settings, partition, until_time=at, find_snapshots=index.snapshots, likely_end=likely_end
            )
            assert states(hinted) == cold, (partition, likely_end)


def test_one_aggregate_or_one_tenant_alone_is_what_the_whole_rebuild_says(settings, history):
    """`replay --at --aggregate` and the API's replay of a tenant decode only what they show
    (the other aggregates' snapshots unread, their commits read as far as their envelope):
    each aggregate comes out as the whole platform's rebuild has it, at instants across the
    history, and a tenant's replay holds that tenant's aggregates only."""
    for share in (0.3, 0.6, 0.9):
        at = Position(time=history.first + (history.last - history.first) * share)
        whole = platform_at(settings, at)
        for aggregate in sorted(whole)[:: max(1, len(whole) // 6)]:
            alone = platform_at(settings, at, aggregate)
            assert list(alone) == [aggregate] and alone[aggregate] == whole[aggregate], (share, aggregate)
        tenant = sorted(whole)[0].split("/")[0]
        mine = platform_at(settings, at, only=[a for a in whole if a.startswith(f"{tenant}/")][:3])
        assert mine and all(a.startswith(f"{tenant}/") for a in mine)
        assert {a: t.state for a, t in mine.items()} == {a: whole[a].state for a in mine}
    index, one = CheckpointIndex(settings), sorted(whole)[0]
    partition = partition_for(one, settings.partitions)
    kept = recover_partition(
        settings,
        partition,
        until_time=history.last,
        find_snapshots=partial(index.snapshots, keep=one.__eq__),
        keep=one.__eq__,
    )
    full = recover_partition(settings, partition, until_time=history.last, find_snapshots=index.snapshots)
    assert list(kept.aggregates) == [one] and kept.snapshot_records_read == 1 < full.snapshot_records_read


def test_full_checkpoints_bound_the_range_a_checkpoint_reads(settings):
    """A hot aggregate changes between every checkpoint, cold ones never: without full
    checkpoints the newest manifest names the cold ones' first snapshots, at the start of the
    partition; with them, they are written again every few checkpoints."""
    appender = Appender(settings, source="node")
    cold = [f"carbon.super/cartridge/cold{i}" for i in range(5)]
    hot = "carbon.super/cartridge/hot"
    tracked = {a: Tracked.new(a) for a in [*cold, hot]}

    def checkpoints(partition: int, full_every: int) -> int:
        claim = claim_partitions(appender, "test-node", [partition], 1)[partition][0]
        covers: dict[str, int] = {}
        for n in range(30):
            dirty = {hot: n * 100} | ({a: 0 for a in cold} if n == 0 else {})
            assert write_checkpoint(
                appender,
                partition,
                claim,
                dirty,
                covers,
                n * 100,
                lambda a: tracked[a].snapshot(),
                settings.max_record_bytes,
                full_every=full_every,
            )
        found = CheckpointIndex(settings).snapshots(partition)
        assert found is not None and set(found.latest) == {*cold, hot}
        return found.records_read

    try:
        unbounded, bounded = checkpoints(0, full_every=0), checkpoints(1, full_every=500)
    finally:
        appender.close()
    assert unbounded > 30  # from the cold snapshots at the start, past every hot one since
    assert bounded <= 2 * 5 + 6  # the last full checkpoint (every 5 checkpoints here) onwards


def full_window(id_length: int) -> Tracked:
    tracked = Tracked.new("carbon.super/cartridge/busy")
    for n in range(DEDUP_MAX_IDS):
        command_id = (os.urandom(id_length // 2).hex() + f"{n:x}")[-id_length:]
        tracked.handled[command_id] = (1.7e9 + n / 10, "UpdateCartridge", "accepted", ("CartridgeUpdated",))
    return tracked


def test_a_full_dedup_window_stays_under_the_record_bound_and_a_larger_one_is_refused(settings, caplog):
    appender = Appender(settings, source="node")
    try:
        claim = claim_partitions(appender, "test-node", [0], 1)[0][0]
        stats = CheckpointStats()
        usual = full_window(32)  # the platform's ids: 32 hex digits
        assert write_checkpoint(
            appender,
            0,
            claim,
            {"carbon.super/cartridge/busy": 7},
            {},
            7,
            lambda _a: usual.snapshot(),
            settings.max_record_bytes,
            stats=stats,
        )
        assert stats.oversized == 0 and stats.snapshot_bytes[0] < settings.max_record_bytes / 3
        loaded = load_snapshots(settings, 0)
        assert (
            Tracked.from_snapshot(
                "carbon.super/cartridge/busy", loaded.latest["carbon.super/cartridge/busy"].payload.state
            ).handled
            == usual.handled
        )

        huge = full_window(400)  # a raw client's long random ids: 4 MB that do not deflate
        with caplog.at_level(logging.ERROR):
            assert not write_checkpoint(
                appender,
                1,
                None,
                {"carbon.super/cartridge/busy": 9},
                {},
                9,
                lambda _a: huge.snapshot(),
                settings.max_record_bytes,
                stats=stats,
            )
        assert stats.oversized == 1
        assert "carbon.super/cartridge/busy" in caplog.text and "STRATOS_MAX_RECORD_BYTES" in caplog.text
        assert all(b"checkpoint/" not in (k or b"") for _o, k, _v in iter_partition(settings, "snapshots", 1))
    finally:
        appender.close()


def test_no_checkpoint_marker_when_the_broker_refuses_a_snapshot(settings):
    """The broker refuses a record over its message.max.bytes (1 MB): the marker that would
    name that snapshot is not written, and a rebuild keeps the previous checkpoint."""
    appender = Appender(settings, source="node", max_request_size=8_000_000)  # the broker's limit is 1 MB
    try:
        claim = claim_partitions(appender, "test-node", [2], 1)[2][0]
        small, big = Tracked.new("carbon.super/cartridge/a"), full_window(400)
        covers: dict[str, int] = {}
        assert write_checkpoint(
            appender, 2, claim, {"carbon.super/cartridge/a": 3}, covers, 3, lambda _a: small.snapshot(), 900_000
        )
        assert not write_checkpoint(
            appender, 2, claim, {"carbon.super/cartridge/busy": 5}, covers, 5, lambda _a: big.snapshot(), 10_000_000
        )
        markers = [k for _o, k, _v in iter_partition(settings, "snapshots", 2) if k and k.startswith(b"checkpoint/")]
        assert len(markers) == 1
        assert load_snapshots(settings, 2).replay_from == 4  # the first checkpoint's
    finally:
        appender.close()


def test_a_forged_snapshot_is_never_chosen_and_is_dead_lettered(settings, history):
    """A raw client rewrites an aggregate's newest snapshot (same key, same events offset, so a
    manifest would name it) with a state of its own: a restart's rebuild and time travel show
    the real state, and the forgery is dead-lettered with its reason."""
    partition = 0
    real = load_snapshots(settings, partition)
    victim, record = next(iter(real.latest.items()))
    forged_state = dict(record.payload.state, dedup=pack_handled(OrderedDict()))
    forged_state["state"] = dict(forged_state["state"], seq=10_000)
    forged = envelope(SnapshotRecord, Snapshot(**{**record.payload.model_dump(), "state": forged_state}), victim)
    raw = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        at = (
            raw.send(settings.topic("snapshots"), key=victim.encode(), value=encode(forged), partition=partition)
            .get(10)
            .offset
        )
    finally:
        raw.close()
    before = states(recover_partition(settings, partition, use_snapshots=False))
    assert states(recover_partition(settings, partition)) == before  # a restart or takeover
    index = CheckpointIndex(settings)
    assert states(recover_partition(settings, partition, find_snapshots=index.snapshots)) == before
    assert platform_at(settings, Position(time=history.last), victim)[victim].state.seq < 10_000

    def letter():
        for delivered in read_to_end(settings, "deadletter"):
            letter = delivered.record.payload
            if letter.source_offset == at and letter.source_topic == settings.topic("snapshots"):
                return letter.reason
        return None

    assert "unsigned snapshots record" in wait_until(letter, timeout=30, message="the forged snapshot dead-lettered")


def test_the_time_travel_horizon_keeps_checkpoints_from_the_cleaner():
    assert "min.compaction.lag.ms" not in topic_config("snapshots", Settings(kafka_bootstrap="x"))
    horizon = Settings(kafka_bootstrap="x", time_travel_hours=24)
    assert topic_config("snapshots", horizon)["min.compaction.lag.ms"] == str(24 * 3_600_000)
    assert "min.compaction.lag.ms" not in topic_config("topology", horizon)


@hsettings(max_examples=100)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=60),
            st.floats(min_value=0, max_value=4e9, allow_nan=False),
            st.sampled_from(["ScaleCluster", "CreateCluster", "UpdateCartridge"]),
            st.one_of(
                st.tuples(
                    st.just("accepted"),
                    st.lists(st.sampled_from(["ScalingDecided", "MemberSpawnRequested"]), max_size=3),
                ),
                st.tuples(
                    st.just("rejected"),
                    st.tuples(
                        st.text(max_size=40),
                        st.one_of(st.none(), st.text(max_size=10)),
                        st.sampled_from([400, 404, 409, 500]),
                    ),
                ),
            ),
        ),
        max_size=60,
    )
)
def test_the_packed_dedup_window_round_trips(rows):
    window = OrderedDict()
    for command_id, at, command_type, (outcome, detail) in rows:
        window[command_id] = (at, command_type, outcome, tuple(detail))
    assert unpack_handled(pack_handled(window)) == window
    assert list(unpack_handled(pack_handled(window))) == list(window)  # the order: oldest first
    # a window packed before zstd (deflated) still reads: older snapshots stay usable
    deflated = zlib.compress(zstandard.decompress(base64.b64decode(pack_handled(window))), 1)
    assert unpack_handled(base64.b64encode(deflated).decode("ascii")) == window
