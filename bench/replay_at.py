"""Time travel on an old log: the whole platform at random past instants, against a cold rebuild
of everything in the same run; snapshot sizes per aggregate; `why` on random events.

The log is `stratos log generate`'s (infra/log/generate.py: a simulated platform's commands
decided by the node's `handle`, appended and checkpointed as the node does it, stamped over the
past week), written in this run, or an existing one (`--bootstrap` and `--prefix`, e.g. a log
generated once with `stratos log generate --records 2000000`). Timed in the same run:
- the checkpoint index brought up to date from nothing (`infra/replay/checkpoint_index.py`,
  once per log; a later query reads only what was added);
- `platform_at` at `--instants` random past instants (the index, the nearest checkpoint's
  snapshots, the commits after it), with the records each read; then one random aggregate
  alone at each of them (`replay --at … --aggregate`: only its snapshot and commits decoded);
- the previous way at `--scans` of those instants: the snapshots partitions read from their
  start to the instant (`load_snapshots`);
- baseline: a cold rebuild of the whole log without snapshots;
- with `--whys`, the causation index from nothing and `causes` on random event ids.
Snapshot bytes per aggregate: each aggregate's newest snapshot record, largest and median.
The snapshots topic is compacted once its hourly segments close (by record time): on an older
history only each claim's newest checkpoint survives and instants before it replay from offset
0 (docs/replay.md); the generated history spans `--hours` (45 minutes) so that none is.
Usage: python bench/replay_at.py [--commits 200000 [--hours 0.75] [--snapshot-every 5000]
       | --bootstrap HOST:PORT --prefix aged. --state-dir DIR]
       [--instants 20] [--scans 3] [--whys 0]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import bench_settings, finish, median, percentile
from kafka import KafkaConsumer, TopicPartition

from actors.causality import causes
from infra.log.bulk import iter_partition
from infra.log.generate import generate_log
from infra.log.kafka import kafka_client_options, partitions_of
from infra.log.recovery import recover_partition, snapshot_head
from infra.replay.causation_index import CausalIndex
from infra.replay.checkpoint_index import CheckpointIndex, index_path
from infra.replay.timetravel import Position, platform_at
from infra.settings import Settings


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


@contextmanager
def log_settings(args):
    """Settings on the given log, or on a fresh one generated here."""
    with tempfile.TemporaryDirectory() as state_dir:
        if args.bootstrap:
            # the generator's state dir: its platform secret signed the log
            settings = Settings(kafka_bootstrap=args.bootstrap, topic_prefix=args.prefix, state_dir=args.state_dir)
            index_path(settings).unlink(missing_ok=True)  # a cache: the run builds it from nothing
            yield settings.model_copy(update={"partitions": partitions_of(settings, "events")})
            return
        with bench_settings() as settings:
            settings = settings.model_copy(update={"state_dir": Path(state_dir)})
            started = time.perf_counter()
            done = generate_log(
                settings,
                args.commits,
                span=timedelta(hours=args.hours),
                workers=args.workers,
                snapshot_every=args.snapshot_every,
            )
            print(f"log generated: {done.commits:,} commits in {time.perf_counter() - started:.0f}s")
            yield settings


def times_of(settings: Settings) -> tuple[datetime, datetime]:
    """The log's first and last record times (their Kafka timestamps: the generator stamps each
    record with its time)."""
    consumer = KafkaConsumer(**kafka_client_options(settings), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(settings.topic("events"), p) for p in range(settings.partitions)]
        starts, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        stamps = []
        for tp in tps:
            for offset in {starts[tp], ends[tp] - 1}:
                consumer.assign([tp])
                consumer.seek(tp, offset)
                stamps += [r.timestamp for r in consumer.poll(timeout_ms=5000, max_records=1).get(tp, [])]
        return (datetime.fromtimestamp(min(stamps) / 1000, UTC), datetime.fromtimestamp(max(stamps) / 1000, UTC))
    finally:
        consumer.close()


def snapshot_sizes(settings: Settings) -> list[int]:
    """Each aggregate's newest snapshot record, in bytes."""
    newest: dict[str, int] = {}
    for partition in range(settings.partitions):
        for _offset, key, value in iter_partition(settings, "snapshots", partition):
            if (head := snapshot_head(key, value)) is not None:
                newest[head[0]] = len(value)
    return sorted(newest.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commits", type=int, default=200_000, help="the log to generate (without --bootstrap)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--hours", type=float, default=0.75, help="the generated history's span (under an hour: no segment compacted)"
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        help="commits of a partition between the generated log's checkpoints (STRATOS_SNAPSHOT_EVERY): "
        "at most that many are replayed after the checkpoint",
    )
    parser.add_argument("--bootstrap", help="an existing log's broker")
    parser.add_argument("--prefix", default="aged.", help="an existing log's STRATOS_TOPIC_PREFIX")
    parser.add_argument("--state-dir", type=Path, help="an existing log's state dir (its platform secret)")
    parser.add_argument("--instants", type=int, default=20)
    parser.add_argument("--scans", type=int, default=3, help="instants also timed the previous way")
    parser.add_argument("--whys", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(11)
    with log_settings(args) as settings:
        partitions = range(settings.partitions)
        cold_runs, cold_s = timed(lambda: [recover_partition(settings, p, use_snapshots=False) for p in partitions])
        commits = sum(r.commits_replayed for r in cold_runs)
        events = sum(r.events_replayed for r in cold_runs)
        aggregates = sum(len(r.aggregates) for r in cold_runs)
        del cold_runs
        print(
            f"baseline, cold rebuild of everything: {aggregates:,} aggregates, {commits:,} commits, "
            f"{events:,} events in {cold_s:.1f}s"
        )
        first, last = times_of(settings)
        index = CheckpointIndex(settings)
        indexed, index_s = timed(lambda: sum(index.refresh(p) for p in partitions))
        print(f"checkpoint index from nothing: {indexed:,} snapshots records in {index_s:.1f}s (once per log)")

        instants = [first + (last - first) * rng.uniform(0.05, 1.0) for _ in range(args.instants)]
        at_times = []
        for at in instants:
            found, seconds = timed(lambda at=at: platform_at(settings, Position(time=at)))
            at_times.append(seconds)
        names = sorted(found)
        one_times = []
        for at in instants:  # `replay --at … --aggregate`: one aggregate, decoded alone
            _one, seconds = timed(lambda at=at: platform_at(settings, Position(time=at), rng.choice(names)))
            one_times.append(seconds)
        print(
            f"one aggregate at the same instants: p50 {median(one_times):.3f}s, p95 {percentile(one_times, 0.95):.3f}s"
        )
        reads = [  # what the timed calls read, at three of the instants
            sum(
                recover_partition(settings, p, until_time=at, find_snapshots=index.snapshots).snapshot_records_read
                for p in partitions
            )
            for at in instants[:3]
        ]
        print(
            f"platform at {args.instants} random instants: p50 {median(at_times):.3f}s, "
            f"p95 {percentile(at_times, 0.95):.3f}s (aim <= 1 s; {len(found):,} aggregates at the last; "
            f"snapshots records read per instant {', '.join(f'{r:,}' for r in reads)}); "
            f"p95 / cold rebuild {percentile(at_times, 0.95) / cold_s:.3f}"
        )
        scan_times, scan_reads = [], []
        for at in instants[: args.scans]:
            runs, seconds = timed(lambda at=at: [recover_partition(settings, p, until_time=at) for p in partitions])
            scan_times.append(seconds)
            scan_reads.append(sum(r.snapshot_records_read for r in runs))
        if scan_times:
            print(
                f"the previous way (snapshots read from their start) at {len(scan_times)} of them: median "
                f"{median(scan_times):.3f}s, snapshots records read {', '.join(f'{r:,}' for r in scan_reads)}"
            )
        sizes = snapshot_sizes(settings)
        print(
            f"snapshot bytes per aggregate (its newest): median {median(sizes):,.0f}, largest {sizes[-1]:,} "
            f"({len(sizes):,} aggregates)"
        )
        result = {
            "bench": "replay_at",
            "commits": commits,
            "events": events,
            "aggregates": aggregates,
            "cold_rebuild_s": round(cold_s, 3),
            "checkpoint_index_build_s": round(index_s, 3),
            "replay_at_p50_s": round(median(at_times), 3),
            "replay_at_p95_s": round(percentile(at_times, 0.95), 3),
            "replay_at_p95_to_cold_ratio": round(percentile(at_times, 0.95) / cold_s, 4),
            "one_aggregate_p50_s": round(median(one_times), 3),
            "one_aggregate_p95_s": round(percentile(one_times, 0.95), 3),
            "snapshot_records_read_per_instant": reads,
            "scan_median_s": round(median(scan_times), 3) if scan_times else None,
            "scan_snapshot_records_read": scan_reads,
            "snapshot_bytes_median": int(median(sizes)),
            "snapshot_bytes_largest": sizes[-1],
        }
        if args.whys:
            causal = CausalIndex(settings)
            indexed_records, causal_s = timed(causal.refresh)
            ids = [
                row[0]
                for row in causal.db.execute(
                    "SELECT id FROM rec WHERE topic = 'events' ORDER BY random() LIMIT ?", (args.whys,)
                )
            ]
            why_times = [timed(lambda i=i: causes(causal.lookup, i))[1] for i in ids]
            causal.close()
            print(
                f"why on {len(why_times)} random events: p50 {median(why_times) * 1000:.2f} ms, p95 "
                f"{percentile(why_times, 0.95) * 1000:.2f} ms (index from nothing: {indexed_records:,} "
                f"records in {causal_s:.0f}s)"
            )
            result |= {
                "why_p50_ms": round(median(why_times) * 1000, 2),
                "why_p95_ms": round(percentile(why_times, 0.95) * 1000, 2),
            }
    finish(result)


if __name__ == "__main__":
    main()
