"""The topology topic: the projector that writes it and the feed every load balancer reads.

`TopologyProjector` (`stratos topology`, a supervised part of `stratos up`) folds the events
topic from offset 0 of every partition (no group: no rebalance pauses), through the log's fence
(`infra.log.eventlog.History`) and the aggregates' own fold (`actors.topology.Topology`), into one
`TopologyEntry` per cluster on the compacted `<prefix>topology` topic, key = the cluster's
aggregate id. Before writing it reads what the topic already holds, and once it has caught up
with the log it writes only the entries that differ: a restarted projector rebuilds everything
from the log and writes nothing that was already there.

`TopologyFeed` reads the topic from the beginning (the complete topology for a late joiner, as
Stratos's "complete topology" event) and then follows it, keeping the last valid entry per key
(the broker may not compact): a record that does not validate is dead-lettered and counted, and
the entry before it stays.
"""

from __future__ import annotations

import logging
import threading

from actors.topology import Topology
from infra.log.eventlog import History
from infra.log.kafka import (
    IDLE_POLL_MS,
    Appender,
    DeadLetters,
    assigned_consumer,
    decode,
    decode_key,
    envelope,
    read_to_end,
    rejection_reason,
)
from infra.settings import Settings
from schemas.ids import parse_aggregate_id
from schemas.records import TopologyEntry, TopologyRecord

log = logging.getLogger(__name__)


def _caught_up(consumer, ends) -> bool:
    return all(consumer.position(tp) >= end for tp, end in ends.items())


class TopologyProjector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topology = Topology()
        self.history = History.of(settings)
        self.written: dict[str, dict] = {}
        """key -> the entry last on the topic (as JSON data)."""
        self.writes = 0
        self.stopping = threading.Event()
        self.ready = threading.Event()
        """Set once the log is folded up to where it ended at start and the differences written."""

    def read_written(self) -> None:
        for delivered in read_to_end(self.settings, "topology"):
            self.written[delivered.key or delivered.record.aggregate_id] = delivered.record.payload.model_dump(
                mode="json"
            )

    def feed(self, raw) -> set[str]:
        """Fold one raw events record; an invalid one is logged and skipped (the reactor
        dead-letters it), and a fold that raises costs that commit, never the projector."""
        try:
            decode_key(raw.key)
            commit = self.history.commit(raw)
        except ValueError as exc:
            log.warning("skipping invalid event record %d@%d: %s", raw.partition, raw.offset, rejection_reason(exc))
            return set()
        if commit is None:
            return set()
        try:
            changed, problem = self.topology.fold(commit)
        except Exception:  # noqa: BLE001 - one commit must not stop the projection
            log.exception("folding commit %s of %s failed", commit.id, commit.aggregate_id)
            return set()
        if problem:
            log.warning("%s", problem)
        return changed

    def publish(self, appender: Appender, keys: set[str]) -> int:
        sent = 0
        for key in sorted(keys):
            entry = self.topology.entry(key)
            if entry is None:
                continue
            data = entry.model_dump(mode="json")
            if self.written.get(key) == data:
                continue
            appender.send("topology", key, envelope(TopologyRecord, entry, key, tenant=parse_aggregate_id(key).tenant))
            self.written[key] = data
            sent += 1
        if sent:
            appender.flush()
            self.writes += sent
        return sent

    def run(self) -> None:
        self.read_written()
        appender = Appender(self.settings, source="topology")
        consumer = assigned_consumer(self.settings, "events")
        ends = consumer.end_offsets(list(consumer.assignment()))
        dirty: set[str] = set()
        try:
            while not self.stopping.is_set():
                for raws in consumer.poll(timeout_ms=IDLE_POLL_MS, max_records=2000).values():
                    for raw in raws:
                        dirty |= self.feed(raw)
                if not self.ready.is_set():
                    if not _caught_up(consumer, ends):
                        continue
                    dirty |= set(self.topology.clusters)  # after a restart: whatever differs
                if dirty:
                    self.publish(appender, dirty)
                    dirty = set()
                if not self.ready.is_set():
                    log.info(
                        "topology rebuilt from the log: %d clusters, %d entries written",
                        len(self.topology.clusters),
                        self.writes,
                    )
                    self.ready.set()
        finally:
            consumer.close()
            appender.close()

    def stop(self) -> None:
        self.stopping.set()


class TopologyFeed:
    """The topology topic as a dict of the last valid entry per cluster key."""

    def __init__(self, settings: Settings, dead_letters: DeadLetters) -> None:
        self.settings = settings
        self.dead_letters = dead_letters
        self.consumer = assigned_consumer(settings, "topology")
        self.ends = self.consumer.end_offsets(list(self.consumer.assignment()))
        self.entries: dict[str, TopologyEntry] = {}
        self.invalid = 0

    def caught_up(self) -> bool:
        return _caught_up(self.consumer, self.ends)

    def poll(self, timeout_ms: int = 100) -> set[str]:
        """Read what arrived; returns the keys whose entry changed."""
        changed = set()
        for raws in self.consumer.poll(timeout_ms=timeout_ms).values():
            for raw in raws:
                try:
                    key = decode_key(raw.key)
                    record = decode("topology", raw.value)
                    if not key:
                        raise ValueError("key: missing (the key of a topology record is its cluster's aggregate id)")
                except ValueError as exc:
                    self.invalid += 1
                    self.dead_letters.send(
                        raw.topic, raw.partition, raw.offset, raw.key, raw.value, rejection_reason(exc)
                    )
                    continue
                if self.entries.get(key) != record.payload:
                    self.entries[key] = record.payload
                    changed.add(key)
        return changed

    def close(self) -> None:
        self.consumer.close()
