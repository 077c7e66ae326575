"""Shared by the benchmarks: an embedded broker with fresh topics, and result printing."""
from __future__ import annotations

import json
import statistics
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.broker import EmbeddedBroker  # noqa: E402
from infra.kafka import ensure_topics  # noqa: E402
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
