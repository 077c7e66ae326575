"""The causation index behind `stratos why`: every record id of the topics that carry causes,
with its cause, kept in a SQLite file in the state directory and brought up to date from the
log on each use (only the records added since the last use are read).

Events are indexed from the commits that are history (fenced, as every reader reads them);
commands, health statistics, instance status and notifications from their validated records
(an invalid one was dead-lettered and caused nothing). A topic partition found empty after it
was indexed (a fresh broker under the same prefix) is indexed again from its start; `stratos
why --reindex` starts the whole index again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from actors.history import event_id
from actors.timeline import figures
from infra.log.bulk import iter_records
from infra.log.eventlog import History
from infra.log.kafka import decode, kafka_client_options, rejection_reason
from infra.log.recovery import fence_before
from infra.settings import Settings
from schemas.records import Commit

log = logging.getLogger(__name__)

EXPLAINING = frozenset({"ScalingDecided"})
"""An event that explains its decision: the other events of its commit are indexed as caused
by it (member spawned <- ScalingDecided <- ScaleCluster), not only by the command."""
CAUSAL_TOPICS = ("events", "commands", "health", "instance-status", "instance-notifier")
INDEX_VERSION = 2
"""Bumped when the table changes: an index of another version is built again."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rec (id TEXT PRIMARY KEY, topic TEXT, part INTEGER, off INTEGER,
    type TEXT, aggregate TEXT, at TEXT, cause TEXT, command_type TEXT, outcome TEXT, commit_id TEXT,
    figures TEXT);
CREATE INDEX IF NOT EXISTS rec_cause ON rec (cause);
CREATE TABLE IF NOT EXISTS progress (topic TEXT, part INTEGER, next INTEGER, PRIMARY KEY (topic, part));
"""


def index_path(settings: Settings) -> Path:
    safe = settings.topic_prefix.strip(".") or "default"
    return settings.state_dir / "index" / f"causes-{safe}.sqlite"


class CausalIndex:
    """Record id -> where it is, what it is, what caused it; and the reverse."""

    def __init__(self, settings: Settings, path: Path | None = None, fresh: bool = False) -> None:
        self.settings = settings
        self.path = path or index_path(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        if fresh or self.db.execute("PRAGMA user_version").fetchone()[0] != INDEX_VERSION:
            self.db.close()
            self.path.unlink(missing_ok=True)
            self.db = sqlite3.connect(self.path)
            self.db.execute(f"PRAGMA user_version = {INDEX_VERSION}")
        self.db.executescript(_SCHEMA)
        self.problems: list[str] = []

    def close(self) -> None:
        self.db.close()

    # --- reading ------------------------------------------------------------------------------
    def lookup(self, record_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM rec WHERE id = ?", (record_id,)).fetchone()
        return _link(row) if row else None

    def children(self, record_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM rec WHERE cause = ? ORDER BY at, topic, part, off, id", (record_id,)
        ).fetchall()
        return [_link(r) for r in rows]

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM rec").fetchone()[0]

    # --- bringing it up to date ---------------------------------------------------------------
    def refresh(self) -> int:
        """Index what the topics gained since the last refresh; returns how many records."""
        ends = self._end_offsets()
        done = dict(((t, p), n) for t, p, n in self.db.execute("SELECT topic, part, next FROM progress"))
        added = 0
        for (kind, partition), end in sorted(ends.items()):
            start = done.get((kind, partition), 0)
            if end == 0 < start:  # emptied or made anew (a fresh broker): start again
                self.db.execute("DELETE FROM rec WHERE topic = ? AND part = ?", (kind, partition))
                start = 0
            if end <= start:
                continue
            rows, next_offset = self._rows(kind, partition, start)
            added += len(rows)
            self.db.executemany("INSERT OR REPLACE INTO rec VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self.db.execute("INSERT OR REPLACE INTO progress VALUES (?,?,?)", (kind, partition, next_offset))
            self.db.commit()
        return added

    def _end_offsets(self) -> dict[tuple[str, int], int]:
        consumer = KafkaConsumer(**kafka_client_options(self.settings), group_id=None)
        try:
            tps = {
                TopicPartition(self.settings.topic(kind), p): kind
                for kind in CAUSAL_TOPICS
                for p in consumer.partitions_for_topic(self.settings.topic(kind)) or ()
            }
            return {(tps[tp], tp.partition): end for tp, end in consumer.end_offsets(list(tps)).items()}
        finally:
            consumer.close()

    def _rows(self, kind: str, partition: int, start: int) -> tuple[list[tuple], int]:
        rows: list[tuple] = []
        next_offset = start
        history = History.of(self.settings, self._fence_at) if kind == "events" else None
        for raw in iter_records(self.settings, kind, partition, start):
            next_offset = raw.offset + 1
            try:
                rows += list(self._index_rows(kind, raw, history))
            except ValueError as exc:
                self.problems.append(f"{kind} {partition}:{raw.offset}: {rejection_reason(exc)}")
        return rows, next_offset

    def _fence_at(self, partition: int, offset: int):
        return fence_before(self.settings, partition, offset)

    def _index_rows(self, kind: str, raw, history: History | None) -> Iterator[tuple]:
        partition, offset = raw.partition, raw.offset
        if history is None:
            record = decode(kind, raw.value)
            yield (
                record.id,
                kind,
                partition,
                offset,
                record.type,
                record.aggregate_id,
                record.occurred_at.isoformat(),
                record.causation_id,
                None,
                None,
                None,
                json.dumps(figures(record.payload)),
            )
            return
        record = history.commit(raw)  # type: ignore[assignment]
        if record is None:
            return
        commit: Commit = record.payload  # type: ignore[assignment]
        at, where = record.occurred_at.isoformat(), (kind, partition, offset)
        decision = (commit.command_type, commit.outcome, record.id)
        if not commit.events:  # rejected, or accepted with nothing to say: the commit stands for it
            yield (
                record.id,
                *where,
                f"{commit.outcome} {commit.command_type}",
                record.aggregate_id,
                at,
                record.causation_id,
                *decision,
                json.dumps(
                    {
                        k: v
                        for k, v in (("reason", commit.reason), ("field", commit.field), ("code", commit.code))
                        if v is not None
                    }
                ),
            )
            return
        first = event_id(record.id, 0)
        explains = commit.events[0].type in EXPLAINING
        for n, event in enumerate(commit.events):
            yield (
                event_id(record.id, n),
                *where,
                event.type,
                record.aggregate_id,
                at,
                first if n and explains else record.causation_id,
                *decision,
                json.dumps(figures(event)),
            )


def _link(row: tuple) -> dict[str, Any]:
    record_id, topic, part, off, type_, aggregate, at, cause, command_type, outcome, commit, detail = row
    link = {
        "id": record_id,
        "topic": topic,
        "partition": part,
        "offset": off,
        "type": type_,
        "aggregate": aggregate,
        "at": at,
        "cause": cause,
        "figures": json.loads(detail),
    }
    if commit is not None:
        link.update(command_type=command_type, outcome=outcome, commit=commit)
    return link
