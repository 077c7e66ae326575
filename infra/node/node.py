"""`stratos node`: owns the aggregates of the command partitions it is assigned.

For each partition it takes, it first claims it (a claim marker on the snapshots partition,
then a Claim on the events partition: from there on, only its commits are history), rebuilds
the aggregates from snapshots and the log up to its own claim, then feeds commands to their
actors and appends each decision as one Commit (same partition). Claims and rebuilds run beside
the loop, the partition paused meanwhile, so that the loop keeps polling (a group member that
polls too late is evicted) and serving the partitions it has; a partition assigned to it again
with nothing appended since its own last record keeps its aggregates. Replies go out once the
commits are acknowledged, and only then are the command offsets committed; a commit that
failed to append is never committed as done: the partition is rebuilt from the log and its
commands are read again. Every `snapshot_every` commits of a partition it writes snapshots of
the aggregates that changed, then, once the broker has them all, a checkpoint marker naming the
snapshot of every aggregate of the partition (`infra.log.recovery`).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from thespian.actors import ActorExitRequest, ActorSystem

from actors.base import Context, Timeouts
from actors.runtime import (
    AggregateActor,
    Handle,
    Outcome,
    Rebuild,
    StartTicking,
    TakeSnapshot,
    Tick,
    TickerActor,
    Tracked,
    needs_timer,
    timeouts_command_id,
)
from infra.auth.gate import CommandGate
from infra.auth.secrets import secret_box
from infra.log.kafka import IDLE_POLL_MS, Appender, DeadLetters, envelope, group_consumer, new_id, validated
from infra.log.recovery import (
    CheckpointStats,
    HistoryGap,
    Recovered,
    claim_partitions,
    recover_partition,
    write_checkpoint,
)
from infra.node.faults import CrashPoints
from infra.settings import Settings
from schemas.commands import CheckTimeouts
from schemas.records import CommandRecord, ReplyRecord
from schemas.status import CommandRejected

log = logging.getLogger(__name__)

NODE_GROUP = "nodes"
TAKEOVER_FETCH_WAIT_MS = 500
"""The node's longest fetch wait (bench/takeover.py: a takeover after SIGTERM took 13.9 s with the
platform's 5 s wait, 2.8 s with 500 ms)."""
ADOPTING_POLL_MS = 50
"""The loop's poll while partitions are being rebuilt: a rebuilt one is installed that soon."""


def timeouts_from(settings: Settings) -> Timeouts:
    return Timeouts(
        settings.pending_timeout_seconds, settings.termination_timeout_seconds, settings.obsolete_timeout_seconds
    )


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
    """Hands each assignment to the node's loop, its partitions paused until adopted there.

    kafka-python runs these callbacks on the consumer's own loop: a rebuild here would hold up
    heartbeats and the next poll, and a poll later than max.poll.interval.ms evicts the node."""

    def __init__(self, node: Node, consumer) -> None:
        self.node, self.consumer = node, consumer

    def on_partitions_revoked(self, revoked):
        """Nothing yet: the eager protocol revokes every partition before each assignment, and
        the aggregates of the partitions assigned again may be kept (`Node.take_assignment`)."""

    def on_partitions_assigned(self, assigned):
        self.consumer.pause(*assigned)
        generation = getattr(getattr(self.consumer, "_coordinator", None), "_generation", None)
        self.node.assignments.put(({tp.partition for tp in assigned}, getattr(generation, "generation_id", -1)))


def partition_for(aggregate_id: str, partitions: int) -> int:
    """Where an aggregate's commands and commits live: Kafka's default (murmur2) partitioner,
    the one the Java client, kafka-python and aiokafka apply to a key."""
    return (murmur2(aggregate_id.encode()) & 0x7FFFFFFF) % partitions


class Node:
    def __init__(
        self, settings: Settings, base: str = "simpleSystemBase", timer_seconds: float = 30.0, clock=None
    ) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        # actors first: a thespian base that starts processes does so before any Kafka client runs threads
        self.host = ActorHost(base, timer_seconds)
        self.timer_seconds = timer_seconds
        self.poll_ms = int(min(IDLE_POLL_MS, timer_seconds * 200))
        """Timers fire between polls: at least five chances per timer period."""
        self.appender = Appender(settings, source="node")
        self.dead_letters = DeadLetters(self.appender)
        self.gate = CommandGate(settings)
        self.crash = CrashPoints(settings.fault)
        self.writer = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self.owned: dict[int, set[str]] = {}
        self.claims: dict[int, str] = {}
        self.dirty: dict[int, dict[str, int]] = defaultdict(dict)
        """Aggregates the next checkpoint snapshots, with the offset of their state."""
        self.covers: dict[int, dict[str, int]] = {}
        """Aggregates whose snapshot on the topic is current, with its events offset: with the
        dirty ones once written, the manifest of the next checkpoint."""
        self.assignments: queue.Queue[tuple[set[int], int]] = queue.Queue()
        """Assignments (partitions, generation) from the rebalance callback, for the loop."""
        self.adopting: dict[int, Future] = {}
        """Partitions being claimed and rebuilt beside the loop: Future of (claim, Recovered)."""
        self.adopter: ThreadPoolExecutor | None = None
        self.generation = -1
        self.since_checkpoint: dict[int, int] = defaultdict(int)
        self.checkpoint_stats = CheckpointStats()
        self.last_event_offset: dict[int, int] = {}
        self.rerouted = 0
        self.partition_count = settings.partitions
        """Of the commands topic, as the broker has it (set at start): routing follows it."""
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.timeouts = timeouts_from(settings)
        self.box = secret_box(settings)

    # --- ownership ------------------------------------------------------------------------
    def take_assignment(self, consumer) -> None:
        """Adopt the newest assignment the group handed over: partitions no longer assigned are
        released (a rebuild of one still running is discarded), partitions assigned again keep
        their aggregates if nothing was appended to them since this node's own last record, and
        the others are claimed and rebuilt beside the loop (several at once: reads wait on the
        broker, so a takeover is as fast as the slowest partition, not the sum)."""
        latest = None
        while not self.assignments.empty():
            latest = self.assignments.get_nowait()
        if latest is None:
            return
        partitions, self.generation = latest
        self.release([p for p in self.owned if p not in partitions])
        for partition in [p for p in self.adopting if p not in partitions]:
            del self.adopting[partition]
        held = sorted(partitions & set(self.owned))
        kept = self._untouched(consumer, held)
        self.release([p for p in held if p not in kept])
        if kept:
            consumer.resume(*(self._commands_partition(p) for p in kept))
            log.info("partitions %s kept (generation %d): nothing appended since", kept, self.generation)
        for partition in sorted(partitions - set(kept) - set(self.adopting)):
            self.adopting[partition] = self.adopter.submit(self._claim_and_rebuild, partition, self.generation)  # type: ignore[union-attr]
        if not self.adopting:
            self.ready.set()

    def _untouched(self, consumer, partitions: list[int]) -> list[int]:
        """The partitions whose events end right after this node's last record there: no other
        node claimed them meanwhile, so its aggregates are what the log says."""
        if not partitions:
            return []
        events = self.settings.topic("events")
        ends = consumer.end_offsets([TopicPartition(events, p) for p in partitions])
        return [p for p in partitions if ends[TopicPartition(events, p)] == self.last_event_offset.get(p, -2) + 1]

    def _commands_partition(self, partition: int) -> TopicPartition:
        return TopicPartition(self.settings.topic("commands"), partition)

    def _claim_and_rebuild(self, partition: int, generation: int) -> tuple[str, Recovered]:
        """On an adopter thread: never touches the actors (the loop's thread drives them)."""
        claim, offset = self.claim([partition], generation)[partition]
        return claim, recover_partition(self.settings, partition, until=offset)

    def install_adopted(self, consumer) -> None:
        """Install the partitions rebuilt meanwhile and resume them, unless another node claimed
        one after this node did (its rebuild would miss those records): that one is claimed
        again. A claim or rebuild that failed on the broker (a timeout while brokers are lost or
        overloaded) is tried again; deleted history (HistoryGap) stops the node."""
        done = [p for p, future in self.adopting.items() if future.done()]
        if not done:
            return
        results = {}
        for partition in done:
            future = self.adopting.pop(partition)
            try:
                results[partition] = future.result()
            except HistoryGap:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker's error: the claim is simply made again
                log.warning("partition %d: claim or rebuild failed (%s); trying again", partition, exc)
                self.adopting[partition] = self.adopter.submit(self._claim_and_rebuild, partition, self.generation)  # type: ignore[union-attr]
        if not results:
            return
        claimed_since = set(done) - set(self._untouched_since_claim(consumer, results))
        for partition, (claim, recovered) in results.items():
            if partition in claimed_since:
                log.warning("partition %d: claimed by another node while rebuilding; claiming it again", partition)
                self.adopting[partition] = self.adopter.submit(self._claim_and_rebuild, partition, self.generation)  # type: ignore[union-attr]
                continue
            self._install(partition, claim, recovered)
            consumer.resume(self._commands_partition(partition))
        if not self.adopting:
            self.ready.set()

    def _untouched_since_claim(self, consumer, results: dict[int, tuple[str, Recovered]]) -> list[int]:
        events = self.settings.topic("events")
        ends = consumer.end_offsets([TopicPartition(events, p) for p in results])
        return [
            p for p, (_claim, recovered) in results.items() if ends[TopicPartition(events, p)] == recovered.next_offset
        ]

    def _install(self, partition: int, claim: str, recovered: Recovered) -> None:
        for tracked in recovered.aggregates.values():
            self.host.install(tracked)
        self.owned[partition] = set(recovered.aggregates)
        self.dirty[partition] = dict(recovered.dirty)
        self.covers[partition] = dict(recovered.covers)
        self.claims[partition] = claim
        self.last_event_offset[partition] = recovered.next_offset - 1
        log.info(
            "partition %d claimed (generation %d): %d aggregates rebuilt (%d snapshots, "
            "%d events, %d fenced commits ignored)%s",
            partition,
            self.generation,
            len(recovered.aggregates),
            recovered.snapshots_loaded,
            recovered.events_replayed,
            recovered.commits_fenced,
            f", {len(recovered.problems)} problems" if recovered.problems else "",
        )

    def claim(self, partitions: list[int], generation: int) -> dict[int, tuple[str, int]]:
        """Take events partitions (`infra.log.recovery.claim_partitions`): each one's claim id
        and its Claim's offset."""
        return claim_partitions(self.appender, self.writer, partitions, generation)

    def release(self, partitions: list[int]) -> None:
        for partition in partitions:
            self.host.drop(self.owned.pop(partition, set()))
            for held in (self.claims, self.dirty, self.covers, self.since_checkpoint, self.last_event_offset):
                held.pop(partition, None)

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        # a partition resumed after its takeover is fetched only once the fetch in flight for the
        # others returns: a short wait keeps a takeover from waiting out an idle poll
        consumer = group_consumer(
            self.settings,
            NODE_GROUP,
            ["commands"],
            max_poll_records=500,
            fetch_max_wait_ms=min(self.settings.fetch_wait_ms, TAKEOVER_FETCH_WAIT_MS),
        )
        consumer.unsubscribe()
        topic = self.settings.topic("commands")
        self.partition_count = len(consumer.partitions_for_topic(topic) or ()) or self.settings.partitions
        self.adopter = ThreadPoolExecutor(self.partition_count, thread_name_prefix="adopt")
        if self.settings.node_partitions is not None:
            static = [self._commands_partition(p) for p in self.settings.node_partitions]
            consumer.assign(static)
            consumer.pause(*static)
            self.assignments.put((set(self.settings.node_partitions), -1))
            self.take_assignment(consumer)
        else:
            consumer.subscribe([topic], listener=_Rebalance(self, consumer))
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=ADOPTING_POLL_MS if self.adopting else self.poll_ms)
                self.take_assignment(consumer)
                if batch:
                    self._process(consumer, batch)
                self.install_adopted(consumer)
                self._fire_timers()
        finally:
            self.adopter.shutdown(wait=False, cancel_futures=True)
            consumer.close(autocommit=False)
            self.appender.flush()
            self.appender.close()
            self.gate.stop()
            self.host.shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def _process(self, consumer, batch) -> None:
        offsets, written = {}, []
        for tp, raws in batch.items():
            if tp.partition not in self.owned:  # fetched before it was paused: read again once adopted
                if tp in consumer.assignment():
                    consumer.seek(tp, raws[0].offset)
                continue
            for delivered in validated(self.settings, "commands", raws, self.dead_letters, self.gate.verifier):
                if (refused := self._refused(tp.partition, delivered)) is not None:
                    written.append((tp, raws[0].offset, delivered.record, refused, None))
                    continue
                if (moved := self._reroute(delivered, tp.partition)) is not None:
                    written.append((tp, raws[0].offset, delivered.record, None, moved))  # type: ignore[arg-type]
                    continue
                outcome = self._decide(tp.partition, delivered)
                future = None
                if outcome.commit is not None:
                    self.crash.passing("before-append")
                    future = self.appender.send_raw(
                        self.settings.topic("events"),
                        outcome.commit.aggregate_id.encode(),
                        outcome.encoded,  # type: ignore[arg-type]
                        partition=tp.partition,
                        record=outcome.commit,
                    )
                    self.crash.passing("after-send")
                written.append((tp, raws[0].offset, delivered.record, outcome, future))
            offsets[tp] = OffsetAndMetadata(raws[-1].offset + 1, "", -1)
        self.appender.flush()
        failed: dict[TopicPartition, int] = {}
        for tp, first_offset, command, outcome, future in written:
            if tp in failed:
                continue
            if future is not None:
                try:
                    offset = future.get(timeout=30).offset
                except Exception as exc:  # noqa: BLE001 - any failed append is handled the same way
                    log.error(
                        "append of %s's decision failed (%s); partition %d is rebuilt from "
                        "the log and its commands read again",
                        command.aggregate_id,
                        exc,
                        tp.partition,
                    )
                    failed[tp] = first_offset
                    continue
                if outcome is None:  # a moved command: nothing more to do here
                    continue
                self.crash.passing("after-append")
                self._appended(tp.partition, command.aggregate_id, offset, outcome)
            self._reply(tp.partition, command, outcome)  # type: ignore[arg-type]
        self.appender.flush()
        self.crash.passing("after-reply")
        for tp, first_offset in failed.items():
            offsets.pop(tp, None)
            self._rebuild_partition(tp.partition)
            consumer.seek(tp, first_offset)
        for partition in list(self.since_checkpoint):
            if self.since_checkpoint[partition] >= self.settings.snapshot_every:
                self.checkpoint(partition)
        if offsets:
            try:
                consumer.commit(offsets)
            except KafkaError as exc:
                # Out of the group (a slow batch, a rebalance) or the coordinator unreachable (a
                # broker lost): these commands are redelivered, where their ids make them
                # duplicates. Not fatal.
                log.warning("offset commit failed, commands will be redelivered: %s", exc)
            self.crash.passing("after-offset-commit")

    def _refused(self, partition: int, delivered) -> Outcome | None:
        """A command whose sender may not send it (`infra.auth.gate`): answered with 401/403
        and dead-lettered with the reason; its aggregate never sees it."""
        refused = self.gate.refused(delivered)
        if refused is None:
            return None
        code, reason = refused
        command = delivered.record
        self.dead_letters.send(
            self.settings.topic("commands"),
            partition,
            delivered.offset,
            (delivered.key or "").encode(),
            command.model_dump_json().encode(),
            f"refused ({code}): {reason}",
            "stratos.Unauthorized",
            delivered.sender.headers() if delivered.sender else None,
        )
        return Outcome(
            commit=None,
            encoded=None,
            reply=CommandRejected(command_id=command.id, command_type=command.type, reason=reason, code=code),
        )

    def _reroute(self, delivered, partition: int):
        """A command keyed by something else than its aggregate id, or on another partition than
        its aggregate's, is moved (same id, so it stays idempotent) to where it belongs: it
        never creates a second copy of its aggregate here. Returns the move's future, or None
        when the command is in its place."""
        command = delivered.record
        home = partition_for(command.aggregate_id, self.partition_count)
        if delivered.key == command.aggregate_id and partition == home:
            return None
        self.rerouted += 1
        log.warning(
            "command %s for %s arrived on partition %d with key %r: moved to partition %d",
            command.id,
            command.aggregate_id,
            partition,
            delivered.key,
            home,
        )
        return self.appender.send("commands", command.aggregate_id, command, partition=home)

    def _decide(self, partition: int, delivered) -> Outcome:
        command = self._sealed(delivered.record)
        ctx = Context(
            now=self.clock(),
            new_id=new_id,
            timeouts=self.timeouts,
            claim=self.claims.get(partition),
            writer=self.writer,
            max_record_bytes=self.settings.max_record_bytes,
        )
        try:
            outcome = self.host.handle(command, ctx)
        except Exception:  # noqa: BLE001 - the actor itself failed (not the domain)
            log.exception("actor of %s failed on %s; rebuilding it from the log", command.aggregate_id, command.id)
            self._rebuild_partition(partition)
            outcome = self.host.handle(command, ctx)  # a second failure is the node's, and fatal
        if outcome.failure:
            self.dead_letters.send(
                self.settings.topic("commands"),
                partition,
                delivered.offset,
                (delivered.key or "").encode(),
                command.model_dump_json().encode(),
                f"handling failed: {outcome.failure}",
                "stratos.HandlingFailed",
                delivered.sender.headers() if delivered.sender else None,
            )
        self.owned.setdefault(partition, set()).add(command.aggregate_id)
        return outcome

    def _sealed(self, command: CommandRecord) -> CommandRecord:
        """A raw client's clear secrets are sealed here, before a decision writes them to the
        events (the platform's own clients seal before they send: infra/log/commands_client.py)."""
        return self.box.seal_model(command)

    def _appended(self, partition: int, aggregate_id: str, offset: int, outcome: Outcome) -> None:
        self.last_event_offset[partition] = max(self.last_event_offset.get(partition, -1), offset)
        self.dirty[partition][aggregate_id] = offset
        self.since_checkpoint[partition] += 1

    def _reply(self, partition: int, command: CommandRecord, outcome: Outcome) -> None:
        reply = envelope(
            ReplyRecord,
            outcome.reply,
            command.aggregate_id,
            tenant=command.tenant,
            correlation_id=command.correlation_id or command.id,
            causation_id=command.id,
            trusted=True,
        )
        self.appender.send("replies", command.aggregate_id, reply, partition=partition)

    def _rebuild_partition(self, partition: int) -> None:
        """Back to what the log holds: a failed append left actors ahead of it."""
        recovered = recover_partition(self.settings, partition)
        self.host.drop(self.owned.get(partition, set()) - set(recovered.aggregates))
        for tracked in recovered.aggregates.values():
            self.host.install(tracked)
        self.owned[partition] = set(recovered.aggregates)
        self.dirty[partition] = {**recovered.dirty, **self.dirty.get(partition, {})}
        self.covers[partition] = dict(recovered.covers)
        self.last_event_offset[partition] = recovered.next_offset - 1

    def _fire_timers(self) -> None:
        """CheckTimeouts for aggregates with members in transition; the id names the aggregate
        and the timer period, so a resend after a crash in the same period is a duplicate."""
        due = self.host.due_for_timeouts()
        if not due:
            return
        period = int(self.clock().timestamp() // self.timer_seconds)
        for aggregate_id in due:
            command = envelope(
                CommandRecord, CheckTimeouts(), aggregate_id, record_id=timeouts_command_id(aggregate_id, period)
            )
            self.appender.send("commands", aggregate_id, command)

    def checkpoint(self, partition: int) -> None:
        """Snapshot every aggregate changed since the last checkpoint, then the marker
        (`infra.log.recovery.write_checkpoint`); a snapshot not written keeps them dirty (no
        marker: the next checkpoint tries again)."""
        dirty = self.dirty.pop(partition, {})
        written = write_checkpoint(
            self.appender,
            partition,
            self.claims.get(partition),
            dirty,
            self.covers.setdefault(partition, {}),
            self.last_event_offset.get(partition, -1),
            self.host.ask_snapshot,
            self.settings.max_record_bytes,
            stats=self.checkpoint_stats,
            before_marker=lambda: self.crash.passing("mid-checkpoint"),
        )
        if not written:
            self.dirty[partition] = {**dirty, **self.dirty.get(partition, {})}
            return
        self.since_checkpoint[partition] = 0
