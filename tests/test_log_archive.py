"""`stratos log export / import`: a platform's history into a file and back into a fresh broker.

The format itself (checksummed blocks) is checked on files alone; the round trip runs a real
node on the broker, exports, imports under a fresh topic prefix and compares what every reader
rebuilds: the state digest, and a node-style recovery from the imported snapshots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition

from infra.log.archive import HISTORY_TOPICS, ImportRefused, export_log, import_log
from infra.log.archive_format import ArchiveCorrupt, ArchiveReader, ArchiveWriter, scan
from infra.log.kafka import Appender, ensure_topics, envelope, read_to_end
from infra.log.recovery import recover_partition
from infra.replay.inspect_log import digest_all, digest_of
from infra.settings import Settings
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.records import HealthRecord
from schemas.status import CommandAccepted, HealthStat
from tests.conftest import RunningNode, events_of, wait_until
from tests.test_runtime_flow import define_all

T = "carbon.super"


def rows(n: int, start: int = 0):
    return [
        (i, 1_700_000_000_000 + i, f"k{i}".encode(), json.dumps({"n": i}).encode(), [("ce_id", f"id{i}".encode())])
        for i in range(start, start + n)
    ]


def write_archive(path, blocks: int, per_block: int = 100) -> None:
    with path.open("wb") as out:
        writer = ArchiveWriter(out)
        for b in range(blocks):
            writer.write_rows("events", 0, rows(per_block, b * per_block))
        writer.write_end({"records": {"events": blocks * per_block}})


def test_blocks_read_back_exactly_and_a_flipped_byte_is_located(tmp_path):
    path = tmp_path / "a.archive"
    write_archive(path, 3)
    reader = ArchiveReader(path)
    read = [(*row[:4], [tuple(h) for h in row[4]]) for block in reader for row in block.rows]
    assert read == rows(300) and reader.complete and reader.records == 300
    data = bytearray(path.read_bytes())
    second = [block.byte_offset for block in ArchiveReader(path)][1]
    data[second + 60] ^= 0xFF  # inside the second block's payload
    path.write_bytes(bytes(data))
    reader, corrupt = scan(path)
    assert corrupt is not None and corrupt.block == 2 and corrupt.byte_offset == second
    assert "checksum mismatch" in corrupt.reason and corrupt.records_before == 100
    assert (corrupt.topic, corrupt.partition, corrupt.first_offset) == ("events", 0, 100)
    assert reader.valid_bytes == second


def test_a_truncated_archive_says_where_it_ends(tmp_path):
    path = tmp_path / "a.archive"
    write_archive(path, 4)
    offsets = [block.byte_offset for block in ArchiveReader(path)]
    path.write_bytes(path.read_bytes()[: offsets[2] + 20])  # cut inside block 3's header
    reader, corrupt = scan(path)
    assert corrupt.block == 3 and corrupt.byte_offset == offsets[2] and "truncated" in corrupt.reason
    assert reader.records == 200 and not reader.complete
    path.write_bytes(b'{"partition": 0}\n')
    with pytest.raises(ArchiveCorrupt, match="not a Stratos-ES log archive"):
        list(ArchiveReader(path))


def fresh(broker) -> Settings:
    made = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:8]}.", partitions=4)
    ensure_topics(made)
    return made


def raw_records(settings, kind):
    return sorted(
        (r.partition, r.offset, r.key, r.value, tuple(r.headers))
        for r in read_to_end(settings, kind, decode_records=False)
    )


@pytest.fixture
def history(settings, client):
    """A platform's history: definitions, a deployment (members spawned), snapshots every two
    commits, a health sample, a refused record."""
    settings = settings.model_copy(update={"snapshot_every": 2})
    running = RunningNode(settings)
    try:
        define_all(client)
        app = aggregate_id(T, "application", "single-cartridge-app")
        assert isinstance(
            client.call(app, C.DeployApplication(application_policy_id="application-policy-1")), CommandAccepted
        )
        cluster = aggregate_id(T, "cluster", "single-cartridge-app.php1.php.domain")
        wait_until(
            lambda: any(e.type == "MemberSpawnRequested" for e in events_of(settings, cluster)),
            timeout=30,
            message="the cluster's first members",
        )
        appender = Appender(settings)
        appender.send(
            "health",
            cluster,
            envelope(
                HealthRecord,
                HealthStat(cluster_id="c", network_partition_id="np", metric="load_average", value=1, timestamp=1e9),
                cluster,
            ),
        )
        appender.send_raw(settings.topic("commands"), b"x", b"not json")
        appender.flush()
        appender.close()
        wait_until(
            lambda: (
                read_to_end(settings, "deadletter", decode_records=False)
                and list(read_to_end(settings, "deadletter", decode_records=False))
            ),
            message="the dead letter",
        )
    finally:
        running.stop()
    return settings


@pytest.mark.integration
def test_export_then_import_into_a_fresh_prefix_rebuilds_the_same_state(history, broker, tmp_path):
    archive = tmp_path / "platform.archive"
    before, count = digest_all(history)
    assert count >= 7
    exported = export_log(history, archive)
    assert exported.records["events"] > 0 and exported.records["snapshots"] > 0
    assert exported.records["deadletter"] >= 1 and exported.records["health"] == 1
    assert exported.records["commands"] >= 8
    target = fresh(broker)
    imported = import_log(target, archive, reread=False)
    assert imported.complete and imported.corrupt is None and imported.offset_mismatches == 0
    assert imported.records == {kind: n for kind, n in exported.records.items() if n}
    assert digest_all(target) == (before, count)
    for kind in HISTORY_TOPICS:  # same partitions, offsets, keys, values and headers
        assert raw_records(target, kind) == raw_records(history, kind), kind
    headers = dict(raw_records(target, "events")[-1][4])
    assert headers["ce_specversion"] == b"1.0" and headers["ce_source"] == b"/stratos-es/node"
    # a node-style recovery from the imported snapshots gives the same aggregates
    recovered = [recover_partition(target, p) for p in range(4)]
    assert sum(r.snapshots_loaded for r in recovered) > 0
    assert digest_of({k: t for r in recovered for k, t in r.aggregates.items()}) == before
    # imported history is handled: the nodes' group starts after the imported commands
    consumer = KafkaConsumer(bootstrap_servers=target.kafka_bootstrap, group_id=target.topic("nodes"))
    ends = {p: n for (kind, p), n in imported.ends.items() if kind == "commands"}
    assert ends and {p: consumer.committed(TopicPartition(target.topic("commands"), p)) for p in ends} == ends
    consumer.close()
    with pytest.raises(ImportRefused, match="already holds records"):
        import_log(target, archive)


@pytest.mark.integration
def test_a_truncated_archive_imports_its_prefix_and_reports_the_position(history, broker, tmp_path):
    archive = tmp_path / "platform.archive"
    export_log(history, archive, topics=["events", "snapshots"])
    offsets = [(b.byte_offset, b.topic, len(b.rows)) for b in ArchiveReader(archive)]
    cut_block = len(offsets) // 2
    cut_at = offsets[cut_block][0] + 40
    archive.write_bytes(archive.read_bytes()[:cut_at])
    intact = offsets[:cut_block]
    target = fresh(broker)
    env = {**os.environ, "STRATOS_KAFKA_BOOTSTRAP": target.kafka_bootstrap, "STRATOS_TOPIC_PREFIX": target.topic_prefix}
    run = subprocess.run(
        [sys.executable, "-m", "infra.cli", "log", "import", str(archive), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    answer = json.loads(run.stdout)
    assert answer["corrupt"]["block"] == cut_block + 1 and answer["corrupt"]["byte_offset"] == offsets[cut_block][0]
    assert answer["total"] == answer["corrupt"]["records_before"] == sum(n for _, _, n in intact)
    for kind in ("events", "snapshots"):
        assert len(raw_records(target, kind)) == sum(n for _, t, n in intact if t == kind)
    plain = subprocess.run(
        [sys.executable, "-m", "infra.cli", "log", "import", str(archive)],
        env={**env, "STRATOS_TOPIC_PREFIX": fresh(broker).topic_prefix},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 1 and f"block {cut_block + 1} at byte {offsets[cut_block][0]}" in plain.stdout
    assert "intact" in plain.stdout
