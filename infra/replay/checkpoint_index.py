"""The checkpoint index behind `stratos replay --at`: where each valid checkpoint of the
snapshots topic is, when it was written, and where each snapshot its manifest names lies, kept
in a SQLite file in the state directory and brought up to date on each use (only the records
added since the last use are read, as the causation index does).

Time travel then reads, per partition, only the snapshots of the newest checkpoint at or before
the instant (a range of the snapshots partition: the node snapshots every aggregate again about
every `FULL_CHECKPOINT_EVERY` checkpoints, `infra.log.recovery.write_checkpoint`) and the
commits after it (at most about `STRATOS_SNAPSHOT_EVERY`), instead of the whole snapshots
partition from its start. The rules are `choose_snapshots`' (a checkpoint counts only under the
claim in force, only signed records count); a checkpoint whose snapshots the cleaner removed
since they were indexed is passed over for the next older one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from infra.log.eventlog import signed_rows
from infra.log.kafka import decode, kafka_client_options, rejection_reason
from infra.log.recovery import CHECKPOINT, CLAIM, COVERS, Snapshots, snapshot_head
from infra.settings import Settings
from schemas.records import SnapshotRecord

INDEX_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS progress (part INTEGER PRIMARY KEY, next INTEGER, claim TEXT);
CREATE TABLE IF NOT EXISTS snap (part INTEGER, agg TEXT, eoff INTEGER, pos INTEGER, PRIMARY KEY (part, agg, eoff));
CREATE TABLE IF NOT EXISTS checkpoint (part INTEGER, pos INTEGER, eoff INTEGER, at REAL, claim TEXT,
    manifest TEXT, PRIMARY KEY (part, pos));
CREATE INDEX IF NOT EXISTS checkpoint_at ON checkpoint (part, at);
"""


def index_path(settings: Settings) -> Path:
    safe = settings.topic_prefix.strip(".") or "default"
    return settings.state_dir / "index" / f"checkpoints-{safe}.sqlite"


class CheckpointIndex:
    """Valid checkpoints per partition, by time and events offset, with their snapshots' places.

    One SQLite connection per call: partitions are rebuilt on several threads at once."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.settings = settings
        self.path = path or index_path(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] != INDEX_VERSION:
                db.executescript(
                    "DROP TABLE IF EXISTS progress; DROP TABLE IF EXISTS snap; DROP TABLE IF EXISTS checkpoint;"
                )
                db.execute(f"PRAGMA user_version = {INDEX_VERSION}")
            db.executescript(_SCHEMA)
        self.records_indexed = 0
        """Snapshots-topic records read to bring the index up to date (all calls)."""
        self.problems: list[str] = []

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def refresh(self, partition: int, end: int | None = None) -> int:
        """Index what the snapshots partition gained since the last refresh (up to its `end`
        offset, when the caller has just asked for it); returns how many records were read."""
        with self._db() as db:
            row = db.execute("SELECT next, claim FROM progress WHERE part = ?", (partition,)).fetchone()
            start, claim = row if row else (0, None)
            end = self.ends([partition])[partition] if end is None else end
            if end < start:  # emptied or made anew (a fresh broker under this prefix): start again
                for table in ("snap", "checkpoint", "progress"):
                    db.execute(f"DELETE FROM {table} WHERE part = ?", (partition,))  # noqa: S608 - our names
                start, claim = 0, None
            if end <= start:
                return 0
            snaps, checkpoints, read, next_offset = [], [], 0, start
            for position, key, value in signed_rows(self.settings, "snapshots", partition, start):
                read, next_offset = read + 1, position + 1
                head = snapshot_head(key, value)
                if head is not None:
                    snaps.append((partition, head[0], head[1], position))
                    continue
                try:
                    record = decode("snapshots", value)
                except ValueError:
                    continue  # a rebuild skips it too (choose_snapshots logs it)
                snapshot = record.payload
                if snapshot.aggregate_type == CLAIM:
                    claim = snapshot.claim
                elif snapshot.aggregate_type == CHECKPOINT:
                    manifest = snapshot.state.get(COVERS)
                    if snapshot.claim == claim and isinstance(manifest, dict):
                        checkpoints.append(
                            (
                                partition,
                                position,
                                snapshot.events_offset,
                                record.occurred_at.timestamp(),
                                claim,
                                json.dumps(manifest),
                            )
                        )
                elif key is not None and record.aggregate_id == key.decode("utf-8", "replace"):
                    snaps.append((partition, record.aggregate_id, snapshot.events_offset, position))
            db.executemany("INSERT OR REPLACE INTO snap VALUES (?,?,?,?)", snaps)
            db.executemany("INSERT OR REPLACE INTO checkpoint VALUES (?,?,?,?,?,?)", checkpoints)
            db.execute("INSERT OR REPLACE INTO progress VALUES (?,?,?)", (partition, max(end, next_offset), claim))
        self.records_indexed += read
        return read

    def ends(self, partitions: Iterable[int]) -> dict[int, int]:
        """The snapshots partitions' end offsets, with one client."""
        consumer = KafkaConsumer(**kafka_client_options(self.settings), group_id=None)
        try:
            tps = [TopicPartition(self.settings.topic("snapshots"), p) for p in partitions]
            return {tp.partition: end for tp, end in consumer.end_offsets(tps).items()}
        finally:
            consumer.close()

    def refresh_all(self, partitions: Iterable[int], ends: dict[int, int] | None = None) -> int:
        """`refresh` of several partitions, their ends asked together (unless the caller has
        just asked: a client costs a tenth of a second)."""
        ends = self.ends(partitions) if ends is None else ends
        return sum(self.refresh(partition, end) for partition, end in ends.items())

    def snapshots(
        self,
        partition: int,
        before: int | None = None,
        not_after: datetime | None = None,
        refresh: bool = True,
        keep: Callable[[str], bool] | None = None,
    ) -> Snapshots | None:
        """The snapshots of the newest indexed checkpoint whose events offset is below `before`
        and that was written at or before `not_after`, all of whose snapshots are still there;
        None when there is none (the caller falls back to `load_snapshots`). `refresh=False`:
        the caller has just brought the index up to date (`refresh_all`). `keep`: only the
        snapshots of the aggregates it accepts are read (and need to be there)."""
        if refresh:
            self.refresh(partition)
        query = "SELECT pos, eoff, claim, manifest FROM checkpoint WHERE part = ?"
        bounds: list = [partition]
        if before is not None:
            query, bounds = query + " AND eoff < ?", [*bounds, before]
        if not_after is not None:
            query, bounds = query + " AND at <= ?", [*bounds, not_after.timestamp()]
        with self._db() as db:
            candidates = db.execute(query + " ORDER BY pos DESC LIMIT 5", bounds).fetchall()
            for _position, events_offset, claim, manifest_json in candidates:
                manifest: dict[str, int] = json.loads(manifest_json)
                places = {}
                for aggregate_id, at in manifest.items():
                    if keep is not None and not keep(aggregate_id):
                        continue
                    row = db.execute(
                        "SELECT pos FROM snap WHERE part = ? AND agg = ? AND eoff = ?", (partition, aggregate_id, at)
                    ).fetchone()
                    if row is None:
                        break
                    places[row[0]] = aggregate_id
                else:
                    found = self._read(partition, places)
                    if found is not None:
                        return Snapshots(
                            latest=found[0], replay_from=events_offset + 1, claim=claim, records_read=found[1]
                        )
        return None

    def _read(self, partition: int, places: dict[int, str]) -> tuple[dict[str, SnapshotRecord], int] | None:
        """The snapshots at these positions (one read of the range they span), or None if one
        of them is gone or does not validate."""
        if not places:
            return {}, 0
        wanted, last = dict(places), max(places)
        found: dict[str, SnapshotRecord] = {}
        read = 0
        for position, _key, value in signed_rows(self.settings, "snapshots", partition, min(places), last + 1):
            read += 1
            if (aggregate_id := wanted.pop(position, None)) is not None:
                try:
                    record = decode("snapshots", value)
                except ValueError as exc:
                    self.problems.append(f"snapshots {partition}:{position}: {rejection_reason(exc)}")
                    return None
                if record.aggregate_id != aggregate_id:
                    return None
                found[aggregate_id] = record
            if position >= last:
                break
        return (found, read) if not wanted else None
