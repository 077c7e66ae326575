"""`stratos node`: owns the aggregates of the command partitions it is assigned.

For each assigned partition it rebuilds the aggregates from snapshots and the log, then feeds
commands to their actors, appends the events they decide (same partition), sends the reply,
and only then commits the command offsets. Every `snapshot_every` events of a partition it
writes snapshots of the aggregates that changed, then a checkpoint marker.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone

from kafka import ConsumerRebalanceListener, OffsetAndMetadata
from kafka.errors import CommitFailedError
from thespian.actors import ActorExitRequest, ActorSystem

from actors.base import Context, Timeouts
from actors.runtime import (
    AggregateActor, Handle, Outcome, Rebuild, StartTicking, TakeSnapshot, Tick, TickerActor, Tracked,
    needs_timer,
)
from infra.kafka import Appender, DeadLetters, envelope, group_consumer, new_id, validated
from infra.recovery import CHECKPOINT, recover_partition
from infra.settings import Settings
from schemas.commands import CheckTimeouts
from schemas.status import CommandRejected
from schemas.records import CommandRecord, ReplyRecord, Snapshot, SnapshotRecord

log = logging.getLogger(__name__)
NODE_GROUP = "stratos-nodes"


def timeouts_from(settings: Settings) -> Timeouts:
    return Timeouts(settings.pending_timeout_seconds, settings.termination_timeout_seconds,
                    settings.obsolete_timeout_seconds)


class ActorHost:
    """The actors of one node, on a thespian system created before any Kafka client."""

    def __init__(self, base: str = "simpleSystemBase", timer_seconds: float = 30.0) -> None:
        self.system = ActorSystem(base, logDefs=False)
        self.actors: dict[str, object] = {}
        self.timed: set[str] = set()
        self.ticks = 0
        self.system.tell(self.system.createActor(TickerActor), StartTicking(timer_seconds))

    def install(self, tracked: Tracked) -> None:
        aggregate_id = tracked.state.aggregate_id
        address = self.actors.get(aggregate_id) or self.system.createActor(AggregateActor)
        self.actors[aggregate_id] = address
        self.system.tell(address, Rebuild(tracked))
        self._time(aggregate_id, needs_timer(tracked.state))

    def _time(self, aggregate_id: str, needed: bool) -> None:
        if needed:
            self.timed.add(aggregate_id)
        else:
            self.timed.discard(aggregate_id)

    def _ask(self, address, message):
        """Ask an actor; a Tick arriving meanwhile is counted, not taken for the answer."""
        reply = self.system.ask(address, message, 30)
        while isinstance(reply, Tick):
            self.ticks += 1
            reply = self.system.listen(30)
        return reply

    def handle(self, command: CommandRecord, ctx: Context) -> Outcome:
        if command.aggregate_id not in self.actors:
            self.install(Tracked.new(command.aggregate_id))
        reply = self._ask(self.actors[command.aggregate_id], Handle(command, ctx))
        if not isinstance(reply, Outcome):
            raise RuntimeError(f"actor for {command.aggregate_id} did not answer: {reply!r}")
        self._time(command.aggregate_id, reply.needs_timer)
        return reply

    def due_for_timeouts(self) -> set[str]:
        """Aggregates whose timeouts should be checked now (the ticker fired since last time).

        simpleSystemBase runs due wakeups only inside a listen with a timeout (listen(0) does
        not), hence the millisecond."""
        while (message := self.system.listen(0.001)) is not None:
            if isinstance(message, Tick):
                self.ticks += 1
        if not self.ticks:
            return set()
        self.ticks = 0
        return set(self.timed)

    def ask_snapshot(self, aggregate_id: str) -> dict:
        return self._ask(self.actors[aggregate_id], TakeSnapshot())

    def drop(self, aggregate_ids) -> None:
        for aggregate_id in aggregate_ids:
            address = self.actors.pop(aggregate_id, None)
            self.timed.discard(aggregate_id)
            if address is not None:
                self.system.tell(address, ActorExitRequest())

    def shutdown(self) -> None:
        self.system.shutdown()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, node: "Node") -> None:
        self.node = node

    def on_partitions_revoked(self, revoked):
        self.node.release([tp.partition for tp in revoked])

    def on_partitions_assigned(self, assigned):
        self.node.adopt([tp.partition for tp in assigned])


class Node:
    def __init__(self, settings: Settings, base: str = "simpleSystemBase",
                 timer_seconds: float = 30.0, clock=None) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.host = ActorHost(base, timer_seconds)  # actors first: see ARCHITECTURE.md
        self.appender = Appender(settings)
        self.dead_letters = DeadLetters(self.appender)
        self.owned: dict[int, set[str]] = {}
        self.dirty: dict[int, dict[str, int]] = defaultdict(dict)
        self.since_checkpoint: dict[int, int] = defaultdict(int)
        self.last_event_offset: dict[int, int] = {}
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.timeouts = timeouts_from(settings)

    # --- ownership ------------------------------------------------------------------------
    def adopt(self, partitions: list[int]) -> None:
        for partition in partitions:
            started = time.monotonic()
            recovered = recover_partition(self.settings, partition)
            for tracked in recovered.aggregates.values():
                self.host.install(tracked)
            self.owned[partition] = set(recovered.aggregates)
            self.last_event_offset[partition] = recovered.next_offset - 1
            log.info("partition %d: %d aggregates rebuilt (%d snapshots, %d events) in %.2fs%s",
                     partition, len(recovered.aggregates), recovered.snapshots_loaded,
                     recovered.events_replayed, time.monotonic() - started,
                     f", {len(recovered.problems)} problems" if recovered.problems else "")
        self.ready.set()

    def release(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.host.drop(self.owned.pop(partition, set()))
            self.dirty.pop(partition, None)
            self.since_checkpoint.pop(partition, None)

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        consumer = group_consumer(self.settings, NODE_GROUP, ["commands"], max_poll_records=500)
        consumer.unsubscribe()
        consumer.subscribe([self.settings.topic("commands")], listener=_Rebalance(self))
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=100)
                if batch:
                    self._process(consumer, batch)
                self._fire_timers()
        finally:
            consumer.close(autocommit=False)
            self.appender.flush()
            self.appender.close()
            self.host.shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def _process(self, consumer, batch) -> None:
        offsets, appended = {}, []
        for tp, raws in batch.items():
            if tp.partition not in self.owned:
                continue
            for delivered in validated(self.settings, "commands", raws, self.dead_letters):
                appended += self._handle(tp.partition, delivered.key or delivered.record.aggregate_id,
                                         delivered.record)
            offsets[tp] = OffsetAndMetadata(raws[-1].offset + 1, "", -1)
        self.appender.flush()
        for partition, aggregate_id, future in appended:
            try:
                offset = future.get(timeout=30).offset
            except Exception:
                log.exception("append failed for %s; rebuilding it from the log", aggregate_id)
                self._rebuild(partition, aggregate_id)
                raise
            self.last_event_offset[partition] = max(self.last_event_offset.get(partition, -1), offset)
            self.dirty[partition][aggregate_id] = offset
            self.since_checkpoint[partition] += 1
        for partition in list(self.since_checkpoint):
            if self.since_checkpoint[partition] >= self.settings.snapshot_every:
                self.checkpoint(partition)
        if offsets:
            try:
                consumer.commit(offsets)
            except CommitFailedError as exc:
                # Out of the group (a slow batch, a rebalance): the partitions are reassigned and
                # these commands redelivered, where their ids make them duplicates. Not fatal.
                log.warning("offset commit failed, commands will be redelivered: %s", exc)

    def _handle(self, partition: int, key: str, command: CommandRecord) -> list:
        """Run one command; send its events, then its reply. Returns the events' futures."""
        ctx = Context(now=self.clock(), new_id=new_id, timeouts=self.timeouts)
        try:
            outcome = self.host.handle(command, ctx)
        except Exception as exc:
            # A poison command (a bug it triggers): dead-letter it with the reason, answer it,
            # rebuild the aggregate from the log (its actor may hold a half-applied state).
            log.exception("command %s (%s) failed; rebuilding %s", command.id, command.type,
                          command.aggregate_id)
            self.dead_letters.send(self.settings.topic("commands"), partition, -1, key.encode(),
                                   command.model_dump_json().encode(), f"handling failed: {exc!r}")
            self._rebuild(partition, command.aggregate_id)
            outcome = Outcome([], CommandRejected(
                command_id=command.id, command_type=command.type, code=500,
                reason=f"internal error while handling {command.type}: {exc}"))
        self.owned.setdefault(partition, set()).add(command.aggregate_id)
        futures = [(partition, command.aggregate_id,
                    self.appender.send("events", key, event, partition=partition))
                   for event in outcome.events]
        reply = envelope(ReplyRecord, outcome.reply, command.aggregate_id, tenant=command.tenant,
                         correlation_id=command.correlation_id or command.id, causation_id=command.id,
                         trusted=True)
        self.appender.send("replies", key, reply, partition=partition)
        return futures

    def _rebuild(self, partition: int, aggregate_id: str) -> None:
        recovered = recover_partition(self.settings, partition)
        self.host.install(recovered.aggregates.get(aggregate_id) or Tracked.new(aggregate_id))

    def _fire_timers(self) -> None:
        for aggregate_id in self.host.due_for_timeouts():
            command = envelope(CommandRecord, CheckTimeouts(), aggregate_id)
            self.appender.send("commands", aggregate_id, command)

    def checkpoint(self, partition: int) -> None:
        """Snapshot every aggregate changed since the last checkpoint, then the marker."""
        dirty = self.dirty.pop(partition, {})
        for aggregate_id, offset in dirty.items():
            state = self.host.ask_snapshot(aggregate_id)
            snapshot = Snapshot(aggregate_type=state["state"].get("kind") or "aggregate",
                                events_partition=partition, events_offset=offset, state=state)
            self.appender.send("snapshots", aggregate_id,
                               envelope(SnapshotRecord, snapshot, aggregate_id), partition=partition)
        self.appender.flush()
        marker = Snapshot(aggregate_type=CHECKPOINT, events_partition=partition,
                          events_offset=self.last_event_offset.get(partition, -1), state={})
        self.appender.append("snapshots", f"{CHECKPOINT}/{partition}",
                             envelope(SnapshotRecord, marker, f"{CHECKPOINT}/{partition}"),
                             partition=partition)
        self.since_checkpoint[partition] = 0
