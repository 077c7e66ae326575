"""Time travel on a large log: the whole platform at random past instants, and `why` on random
events.

The log is bench/replay.py's (1,000 clusters' lives by the real decide path, interleaved, one
Claim per partition); checkpoints are then written along it as a node writes them (every
`--snapshot-every` events of a partition: a snapshot of each aggregate changed since the last
checkpoint, then the marker, stamped with the time of the last commit it covers). Timed in the
same run:
- baseline: a cold rebuild of the whole log (what a replay without snapshots costs);
- `platform_at` at `--instants` random past instants (snapshots plus the log's tail);
- the causation index brought up to date from nothing (records/s), then `causes` on
  `--whys` random event ids.
Usage: python bench/replay_at.py [--events 1000000] [--instants 20] [--whys 100]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from common import bench_settings, finish, median, percentile
from replay import START, append_all, template_history

from actors.causality import causes
from actors.history import events_of
from actors.runtime import Tracked
from infra.auth.signing import Signer
from infra.log.bulk import iter_records
from infra.log.eventlog import History
from infra.log.kafka import envelope
from infra.log.recovery import CHECKPOINT, CLAIM, recover_partition
from infra.replay.causation_index import CausalIndex
from infra.replay.timetravel import Position, platform_at
from schemas.records import Snapshot, SnapshotRecord


async def write_checkpoints(settings, every: int) -> tuple[int, list[str]]:
    """Fold each partition once, writing checkpoints along it; returns how many, and a sample
    of event ids (for the `why` queries)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    topic, signer = settings.topic("snapshots"), Signer.platform(settings)
    written, event_ids = 0, []
    rng = random.Random(7)

    async def send(key: str, snapshot: Snapshot, partition: int, at) -> None:
        record = envelope(SnapshotRecord, snapshot, key, occurred_at=at)
        value = record.model_dump_json().encode()
        headers = signer.headers("snapshots", key.encode(), value)
        await producer.send(topic, value, key=key.encode(), partition=partition, headers=headers)

    try:
        for partition in range(settings.partitions):
            history, aggregates, changed = History.of(settings), {}, set()
            since, last_at, claim = 0, None, None
            for raw in iter_records(settings, "events", partition):
                offset = raw.offset
                commit = history.commit(raw)
                if claim is None and history.fences[partition].claim:
                    claim = history.fences[partition].claim
                    await send(
                        f"{CLAIM}/{partition}",
                        Snapshot(
                            aggregate_type=CLAIM,
                            events_partition=partition,
                            events_offset=-1,
                            state={"writer": "bench-node"},
                            claim=claim,
                        ),
                        partition,
                        START,
                    )
                if commit is None:
                    continue
                tracked = aggregates.get(commit.aggregate_id)
                if tracked is None:
                    tracked = aggregates[commit.aggregate_id] = Tracked.new(commit.aggregate_id)
                tracked.fold_commit(commit)
                changed.add(commit.aggregate_id)
                events = events_of(commit)
                since += len(events)
                last_at = commit.occurred_at
                if events and rng.random() < 0.01:
                    event_ids.append(rng.choice(events).id)
                if since >= every:
                    for aggregate_id in changed:
                        await send(
                            aggregate_id,
                            Snapshot(
                                aggregate_type="cluster",
                                events_partition=partition,
                                events_offset=offset,
                                state=aggregates[aggregate_id].snapshot(),
                                claim=claim,
                            ),
                            partition,
                            last_at,
                        )
                    await send(
                        f"{CHECKPOINT}/{partition}",
                        Snapshot(
                            aggregate_type=CHECKPOINT,
                            events_partition=partition,
                            events_offset=offset,
                            state={},
                            claim=claim,
                        ),
                        partition,
                        last_at,
                    )
                    written, since = written + 1, 0
                    changed.clear()
        await producer.flush()
    finally:
        await producer.stop()
    return written, event_ids


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--snapshot-every", type=int, default=5000, help="as STRATOS_SNAPSHOT_EVERY")
    parser.add_argument("--instants", type=int, default=20)
    parser.add_argument("--whys", type=int, default=100)
    args = parser.parse_args()
    _, events_each = template_history(args.rounds)
    clusters = max(1, math.ceil(args.events / events_each))
    with bench_settings() as settings, tempfile.TemporaryDirectory() as state_dir:
        settings = settings.model_copy(update={"state_dir": Path(state_dir)})
        commits, total = asyncio.run(append_all(settings, clusters, args.rounds))
        checkpoints, event_ids = asyncio.run(write_checkpoints(settings, args.snapshot_every))
        print(
            f"log: {clusters:,} clusters, {commits:,} commits, {total:,} events, "
            f"{checkpoints} checkpoints (every {args.snapshot_every:,} events of a partition)"
        )
        cold, cold_s = timed(
            lambda: sum(
                len(recover_partition(settings, p, use_snapshots=False).aggregates) for p in range(settings.partitions)
            )
        )
        print(f"baseline, cold rebuild of everything: {cold:,} aggregates in {cold_s:.2f}s")

        span = commits // clusters * 5  # the template's commits are 5 ms apart
        rng = random.Random(11)
        at_times = []
        for _ in range(args.instants):
            at = START + timedelta(milliseconds=rng.uniform(0, span))
            found, seconds = timed(lambda at=at: platform_at(settings, Position(time=at)))
            at_times.append(seconds)
        print(
            f"platform at {args.instants} random instants: p50 {median(at_times):.3f}s, "
            f"p95 {percentile(at_times, 0.95):.3f}s (aim <= 1 s; {len(found):,} aggregates at the last)"
        )

        index = CausalIndex(settings)
        indexed, index_s = timed(index.refresh)
        print(f"causation index from nothing: {indexed:,} records in {index_s:.1f}s = {indexed / index_s:,.0f}/s")
        why_times = []
        for event_id in rng.sample(event_ids, min(args.whys, len(event_ids))):
            (chain, _missing), seconds = timed(lambda event_id=event_id: causes(index.lookup, event_id))
            assert chain and chain[0]["id"] == event_id
            why_times.append(seconds)
        refresh_s = timed(index.refresh)[1]
        index.close()
        print(
            f"why on {len(why_times)} random events: p50 {median(why_times) * 1000:.2f} ms, "
            f"p95 {percentile(why_times, 0.95) * 1000:.2f} ms (aim <= 200 ms); "
            f"an up-to-date index refreshes in {refresh_s * 1000:.0f} ms"
        )
    finish(
        {
            "bench": "replay_at",
            "events": total,
            "commits": commits,
            "checkpoints": checkpoints,
            "cold_rebuild_s": round(cold_s, 3),
            "replay_at_p50_s": round(median(at_times), 3),
            "replay_at_p95_s": round(percentile(at_times, 0.95), 3),
            "replay_at_p95_to_cold_ratio": round(percentile(at_times, 0.95) / cold_s, 3),
            "index_records_per_s": round(indexed / index_s),
            "why_p50_ms": round(median(why_times) * 1000, 2),
            "why_p95_ms": round(percentile(why_times, 0.95) * 1000, 2),
            "index_refresh_ms": round(refresh_s * 1000),
        }
    )


if __name__ == "__main__":
    main()
