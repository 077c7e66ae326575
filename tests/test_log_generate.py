"""`stratos log generate`: a history written as the node writes it, readable as the node reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from infra.auth.signing import PLATFORM, Verifier
from infra.log.bulk import iter_batches
from infra.log.generate import HistoryNotEmpty, generate_log
from infra.log.kafka import decode
from infra.log.recovery import recover_partition


@pytest.fixture
def generated(settings):
    return generate_log(
        settings, 4000, clusters=60, tenants=3, span=timedelta(hours=6), takeovers=2, snapshot_every=300, workers=2
    )


def test_the_generated_history_is_signed_stamped_in_the_past_and_rebuilds_alike(settings, generated):
    assert generated.commits >= 3900  # each worker's share of the clusters' commits, rounded
    assert generated.rejected > 0 and generated.duplicates > 0
    assert generated.claims == settings.partitions + 2
    assert generated.checkpoints > 0 and generated.snapshots.oversized == 0
    verifier = Verifier.of(settings)
    for partition in range(settings.partitions):
        rows = [
            row
            for batch in iter_batches(
                settings, "events", partition, row=lambda r: (r.key, r.value, r.headers, r.timestamp)
            )
            for row in batch
        ]
        for key, value, headers, timestamp in rows:
            assert verifier.sender("events", key, value, headers).kind == PLATFORM
            assert timestamp == int(decode("events", value).occurred_at.timestamp() * 1000)
        cold = recover_partition(settings, partition, use_snapshots=False)
        warm = recover_partition(settings, partition)
        assert cold.problems == [] and warm.problems == []
        assert warm.snapshots_loaded > 0
        assert {a: t.state for a, t in warm.aggregates.items()} == {a: t.state for a, t in cold.aggregates.items()}
        assert {a: t.handled for a, t in warm.aggregates.items()} == {a: t.handled for a, t in cold.aggregates.items()}
    assert generated.last - generated.first > timedelta(hours=5)


def test_a_topic_that_holds_a_history_is_refused(settings, generated):
    with pytest.raises(HistoryNotEmpty, match="already holds"):
        generate_log(settings, 10, clusters=2, workers=1)


def test_the_generate_verb_prints_its_summary_and_refuses_a_topic_with_a_history(settings):
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(settings.state_dir),
    }

    def generate(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "infra.cli", "log", "generate", "--records", "300", "--clusters", "5", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    done = generate("--workers", "1", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["commits"] == 300 and summary["claims"] == settings.partitions + 8
    refused = generate()
    assert refused.returncode == 2
    assert "already holds" in refused.stdout and "Traceback" not in refused.stderr
