"""Shared by the benchmarks: an embedded broker with fresh topics, and result printing."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CODE = Path(os.environ.get("STRATOS_BENCH_CODE") or ROOT)
"""The code a benchmark imports: its own tree, or a baseline's checkout (`baseline_checkout`) for
the same measurement of earlier code in the same run."""
sys.path.insert(0, str(CODE))

from infra.broker import EmbeddedBroker  # noqa: E402
from infra.log.kafka import ensure_topics  # noqa: E402
from infra.settings import Settings  # noqa: E402


@contextmanager
def bench_settings(partitions: int = 4):
    """Settings on an embedded broker (or STRATOS_KAFKA_BOOTSTRAP if set) with fresh topics."""
    base = Settings()
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    if base.kafka_bootstrap:
        made = Settings(kafka_bootstrap=base.kafka_bootstrap, topic_prefix=prefix, partitions=partitions)
        ensure_topics(made)
        yield made
        return
    with EmbeddedBroker() as broker:
        made = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, partitions=partitions)
        ensure_topics(made)
        yield made


@contextmanager
def baseline_checkout(ref: str):
    """The code of git `ref` in a temporary worktree (its path), removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", str(tree), ref], check=True, capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], check=True, capture_output=True)


def start_node(settings: Settings, log_path: Path) -> subprocess.Popen:
    """A `stratos node` process on these settings, sharing the command partitions with any other
    (its group), logging warnings to `log_path`; its state dir is the caller's (same secrets)."""
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_PARTITIONS": str(settings.partitions),
        "STRATOS_REPLICATION_FACTOR": str(settings.replication_factor),
        "STRATOS_STATE_DIR": str(Path(settings.state_dir).resolve()),
        "STRATOS_LOG_LEVEL": "WARNING",
    }
    env.pop("STRATOS_NODE_PARTITIONS", None)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "node"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )


def median(values):
    return statistics.median(values) if values else 0.0


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def finish(result: dict) -> None:
    """The last line of every benchmark: one JSON object with its figures."""
    print(json.dumps(result, sort_keys=False))
