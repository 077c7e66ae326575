"""The topology topic: the projector that writes it and the feed every load balancer reads.

`TopologyProjector` (`stratos topology`, a supervised part of `stratos up`) folds the events
topic (no group: no rebalance pauses), through the log's fence (`infra.log.eventlog.History`) and
the aggregates' own fold (`actors.topology.Topology`), into one `TopologyEntry` per cluster on the
compacted `<prefix>topology` topic, key = the cluster's aggregate id. It starts from its own
checkpoint (`infra.log.projection`) and folds only the records after it. Before writing it reads
what the topic already holds, and once it has caught up with the log it writes only the entries
that differ: a restarted projector writes nothing that was already there.

`TopologyFeed` reads the topic from the beginning (the complete topology for a late joiner, as
Stratos's "complete topology" event) and then follows it, keeping the last valid entry per key
(the broker may not compact): a record that does not validate is dead-lettered and counted, and
the entry before it stays.
"""

from __future__ import annotations

import logging
import threading

from actors.topology import Topology
from infra.log.kafka import (
    IDLE_POLL_MS,
    Appender,
    DeadLetters,
    assigned_consumer,
    decode,
    decode_key,
    envelope,
    poll_through_broker_loss,
    read_to_end,
    rejection_reason,
)
from infra.log.projection import Projection, states_of, tracked_of
from infra.settings import Settings
from schemas.ids import parse_aggregate_id
from schemas.records import LogRecord, TopologyEntry, TopologyRecord

log = logging.getLogger(__name__)


def _caught_up(consumer, ends) -> bool:
    return all(consumer.position(tp) >= end for tp, end in ends.items())


class TopologyProjector:
    """The topology read side: starts from its own checkpoint (`infra.log.projection`)."""

    name = "lb-topology"
    format_version = "1"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topology = Topology()
        self.projection = Projection(settings, self)
        self.changed: set[str] = set()
        self.written: dict[str, dict] = {}
        """key -> the entry last on the topic (as JSON data)."""
        self.writes = 0
        self.stopping = threading.Event()
        self.ready = threading.Event()
        """Set once the log is folded up to where it ended at start and the differences written."""

    def read_written(self) -> None:
        for delivered in read_to_end(self.settings, "topology", wait_for_broker=True):
            self.written[delivered.key or delivered.record.aggregate_id] = delivered.record.payload.model_dump(
                mode="json"
            )

    def feed(self, raw) -> set[str]:
        """Fold one raw events record; an invalid one is logged and skipped (the reactor
        dead-letters it), and a fold that raises costs that commit, never the projector."""
        self.changed = set()
        try:
            decode_key(raw.key)
        except ValueError as exc:
            log.warning("skipping invalid event record %d@%d: %s", raw.partition, raw.offset, rejection_reason(exc))
            self.projection.skip(raw)
            return set()
        try:
            self.projection.feed(raw)
        except Exception:  # noqa: BLE001 - one commit must not stop the projection
            log.exception("folding the commit at %d@%d failed", raw.partition, raw.offset)
            return set()
        return self.changed

    def fold(self, commit: LogRecord, raw) -> None:
        self.changed, problem = self.topology.fold(commit)
        if problem:
            log.warning("%s", problem)

    def checkpoint_state(self) -> dict:
        return {"clusters": states_of(self.topology.clusters), "applications": states_of(self.topology.applications)}

    def restore(self, state: dict) -> None:
        self.topology.clusters = tracked_of(state["clusters"])
        self.topology.applications = tracked_of(state["applications"])

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
        if self.projection.restore() is not None:
            self.projection.seek(consumer)
        ends = consumer.end_offsets(list(consumer.assignment()))
        dirty: set[str] = set()
        try:
            if not self.projection.catch_up(consumer, appender, self.stopping.is_set, self._feed_batch):
                return
            while not self.stopping.is_set():
                for raws in poll_through_broker_loss(consumer, IDLE_POLL_MS, max_records=2000).values():
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
                if self.projection.due():
                    self.projection.checkpoint(appender)
        finally:
            try:
                if self.projection.due() or (self.stopping.is_set() and self.projection.read):
                    self.projection.checkpoint(appender)
            except Exception:  # noqa: BLE001 - the next start folds a little more
                log.exception("topology: the checkpoint at stop was not written")
            consumer.close()
            appender.close()

    def _feed_batch(self, _partition: int, raws) -> None:
        """A rebuild's batch: once it is done every cluster's entry is compared anyway."""
        for raw in raws:
            self.feed(raw)

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
        for raws in poll_through_broker_loss(self.consumer, timeout_ms).values():
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
