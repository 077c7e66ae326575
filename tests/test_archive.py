"""Embedded mode survives a restart: the archive written from one broker restores into the next."""
from __future__ import annotations

import threading

import pytest

from infra.archive import Archiver, restore
from infra.broker import EmbeddedBroker
from infra.inspect_log import digest_all
from infra.logarchive import scan
from infra.kafka import Appender, ensure_topics, envelope
from infra.settings import Settings
from schemas.events import ClusterCreated, MemberActivated
from schemas.records import Commit, LogRecord
from tests.conftest import wait_until
from tests.examples import SPEC

pytestmark = pytest.mark.integration


def test_events_archived_from_one_broker_restore_into_a_fresh_one(tmp_path):
    archive = tmp_path / "events.archive"
    first_settings = None
    with EmbeddedBroker() as first:
        first_settings = Settings(kafka_bootstrap=first.bootstrap)
        ensure_topics(first_settings)
        archiver = Archiver(first_settings, archive, restore(first_settings, archive))
        thread = threading.Thread(target=archiver.run, daemon=True)
        thread.start()
        appender = Appender(first_settings)
        for n in range(30):
            aggregate = f"carbon.super/cluster/c{n}"
            appender.send("events", aggregate, commit(aggregate, 1, ClusterCreated(spec=SPEC)))
        appender.flush()
        wait_until(lambda: archived(archive) == 30,
                   message="30 archived events")
        before = digest_all(first_settings)
        assert before[1] == 30, "every archived commit is history"
        archiver.stop()
        thread.join(5)
        appender.close()
    with EmbeddedBroker() as second:
        settings = Settings(kafka_bootstrap=second.bootstrap)
        ensure_topics(settings)
        restored = restore(settings, archive)
        assert sum(restored.values()) == 30
        assert digest_all(settings) == before
        # new events after the restore are archived once, after the old ones
        archiver = Archiver(settings, archive, restored)
        thread = threading.Thread(target=archiver.run, daemon=True)
        thread.start()
        appender = Appender(settings)
        appender.send("events", "carbon.super/cluster/c0",
                      commit("carbon.super/cluster/c0", 2, MemberActivated(member_id="m", cluster_id="c0")))
        appender.flush()
        wait_until(lambda: archived(archive) == 31, message="one more archived event")
        archiver.stop()
        thread.join(5)
        appender.close()


def archived(path) -> int:
    """Records in the archive's intact blocks (the archiver may be mid-write)."""
    return scan(path)[0].records if path.exists() else 0


def commit(aggregate: str, seq: int, event) -> LogRecord:
    return envelope(LogRecord, Commit(command_type="X", outcome="accepted", events=[event]), aggregate,
                    aggregate_seq=seq)
