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

import heapq
import logging
import os
import queue
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any

from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from thespian.actors import ActorExitRequest, ActorSystem, PoisonMessage

from actors.base import Context, Timeouts
from actors.runtime import (
    AggregateActor,
    Decided,
    HandleBatch,
    Outcome,
    Rebuild,
    StartTicking,
    Surrender,
    TakeSnapshot,
    Tick,
    TickerActor,
    Tracked,
    next_timeout,
    timeouts_command_id,
)
from infra.auth.gate import CommandGate
from infra.auth.secrets import secret_box
from infra.log.kafka import (
    GROUP_TIMINGS,
    IDLE_POLL_MS,
    POLL_RETRY_PAUSE_SECONDS,
    Appender,
    DeadLetters,
    Delivered,
    envelope,
    group_consumer,
    new_id,
    poll_through_broker_loss,
    validated,
)
from infra.log.recovery import (
    FULL_CHECKPOINT_EVERY,
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
from schemas.envelope import Envelope
from schemas.records import CommandRecord, ReplyRecord
from schemas.status import CommandRejected

log = logging.getLogger(__name__)

NODE_GROUP = "nodes"
TAKEOVER_FETCH_WAIT_MS = 500
"""The node's longest fetch wait (bench/takeover.py: a takeover after SIGTERM took 13.9 s with the
platform's 5 s wait, 2.8 s with 500 ms)."""
APPEND_WAIT_SECONDS = 30.0
"""How long the node waits for the broker's answer to an append before it takes the outcome
for unknown (the producer's delivery timeout is shorter: `Appender`)."""
ADOPTING_POLL_MS = 50
"""The loop's poll while partitions are being rebuilt: a rebuilt one is installed that soon."""
OUTBOX_LINGER_MS = 1000
OUTBOX_BATCH_BYTES = 512 * 1024
"""The outbox's producer holds a poll's commits and replies until the node flushes them: one
batch per partition and poll. With the platform's 2 ms linger and 16 KB batches, the producer's
thread took a few records at a time while the loop was still sending, and woke for each new
batch: a wake-up (a socket write and a thread switch) per 1.3 commands."""


ACTOR_PROCESS_LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
"""Logging of actors in processes of their own (thespian's multiproc bases need a dict)."""


def timeouts_from(settings: Settings) -> Timeouts:
    return Timeouts(
        settings.pending_timeout_seconds, settings.termination_timeout_seconds, settings.obsolete_timeout_seconds
    )


class ActorHost:
    """The actors of one node, on a thespian system created before any Kafka client.

    Each aggregate is an actor that takes a poll's commands for it in one message; the host
    keeps, per aggregate, when its timeouts are next due (a heap: the ticker's check is O(1)
    when nothing is due)."""

    ANSWER_SECONDS = 30.0

    def __init__(self, base: str = "simpleSystemBase", timer_seconds: float = 30.0) -> None:
        self.system = ActorSystem(base, logDefs=False if base == "simpleSystemBase" else ACTOR_PROCESS_LOGGING)
        self.actors: dict[str, object] = {}
        self.due: dict[str, datetime] = {}
        self.due_heap: list[tuple[datetime, str]] = []
        self.ticks = 0
        self.checks = 0
        """Timer checks made (the ticker fired), whether or not a timeout was due."""
        self.restarts = 0
        """Actors restarted after a failed batch."""
        self.poison: set[str] = set()
        """Command ids whose handling raises (fault injection: `actor-raises`)."""
        self.system.tell(self.system.createActor(TickerActor), StartTicking(timer_seconds))

    def install(self, tracked: Tracked, timeouts: Timeouts) -> None:
        aggregate_id = tracked.state.aggregate_id
        address = self.actors.get(aggregate_id) or self.system.createActor(AggregateActor)
        self.actors[aggregate_id] = address
        self.system.tell(address, Rebuild(tracked))
        self._time(aggregate_id, next_timeout(tracked.state, timeouts))

    def _time(self, aggregate_id: str, due: datetime | None) -> None:
        if due is None:
            self.due.pop(aggregate_id, None)
        elif self.due.get(aggregate_id) != due:
            self.due[aggregate_id] = due
            heapq.heappush(self.due_heap, (due, aggregate_id))

    def _ask(self, address, message):
        """Ask an actor; a Tick arriving meanwhile is counted, not taken for the answer."""
        reply = self.system.ask(address, message, self.ANSWER_SECONDS)
        while isinstance(reply, Tick):
            self.ticks += 1
            reply = self.system.listen(self.ANSWER_SECONDS)
        return reply

    def _answer(self):
        """The next message for the node. simpleSystemBase runs an actor inside `tell`, so its
        answer is there at once (and a listen with a timeout would wait all of it out when
        nothing more is pending); other bases answer from other processes, later."""
        return self.system.listen(0) or self.system.listen(self.ANSWER_SECONDS)

    def handle(self, batches: dict[str, tuple[list[Envelope], Context]], timeouts: Timeouts):
        """Every aggregate's commands of one poll, one message to each actor (all sent before
        any answer is awaited: actors in other processes decide side by side). Returns the
        outcomes per aggregate, in the order of its commands. An actor whose batch failed (a
        PoisonMessage from thespian, after its own retry) is restarted from its last state and
        given the batch again, isolated."""
        for aggregate_id, (commands, ctx) in batches.items():
            if aggregate_id not in self.actors:
                self.install(Tracked.new(aggregate_id), timeouts)
            poison = frozenset(c.id for c in commands if c.id in self.poison)
            self.system.tell(self.actors[aggregate_id], HandleBatch(aggregate_id, commands, ctx, poison=poison))
        decided: dict[str, list[Outcome]] = {}
        while len(decided) < len(batches):
            message = self._answer()
            if isinstance(message, Decided):
                decided[message.aggregate_id] = message.outcomes
                self._time(message.aggregate_id, message.next_timeout)
            elif isinstance(message, PoisonMessage) and isinstance(message.poisonMessage, HandleBatch):
                batch = message.poisonMessage
                log.error(
                    "actor of %s failed twice on a batch of %d commands; restarted from its last state: %s",
                    batch.aggregate_id,
                    len(batch.commands),
                    (message.details or "").strip().splitlines()[-1:],
                )
                self.restart(batch.aggregate_id, timeouts)
                self.system.tell(self.actors[batch.aggregate_id], replace(batch, isolate=True))
            elif isinstance(message, Tick):
                self.ticks += 1
            elif message is None:
                missing = sorted(set(batches) - set(decided))
                raise RuntimeError(f"no answer within {self.ANSWER_SECONDS}s from the actors of {missing[:5]}")
        return decided

    def restart(self, aggregate_id: str, timeouts: Timeouts) -> None:
        """A new actor for the aggregate, from the state its failed one kept (a failed batch
        changes nothing: `Tracked.all_or_nothing`)."""
        old = self.actors.pop(aggregate_id)
        tracked = self._ask(old, Surrender())
        if not isinstance(tracked, Tracked):
            raise RuntimeError(f"the failed actor of {aggregate_id} gave no state back: {tracked!r}")
        self.system.tell(old, ActorExitRequest())
        self.restarts += 1
        self.install(tracked, timeouts)

    def due_for_timeouts(self, now: datetime) -> list[str]:
        """Aggregates whose next timeout has passed, once the ticker fired: each is taken off
        the book (the decision of its CheckTimeouts books its next one).

        simpleSystemBase runs due wakeups only inside a listen with a timeout (listen(0) does
        not), hence the millisecond."""
        while (message := self.system.listen(0.001)) is not None:
            if isinstance(message, Tick):
                self.ticks += 1
        if not self.ticks:
            return []
        self.ticks = 0
        self.checks += 1
        found = []
        while self.due_heap and self.due_heap[0][0] < now:
            due, aggregate_id = heapq.heappop(self.due_heap)
            if self.due.get(aggregate_id) == due:
                del self.due[aggregate_id]
                found.append(aggregate_id)
        return found

    def ask_snapshot(self, aggregate_id: str) -> dict:
        return self._ask(self.actors[aggregate_id], TakeSnapshot())

    def drop(self, aggregate_ids) -> None:
        for aggregate_id in aggregate_ids:
            address = self.actors.pop(aggregate_id, None)
            self.due.pop(aggregate_id, None)
            if address is not None:
                self.system.tell(address, ActorExitRequest())

    def shutdown(self) -> None:
        self.system.shutdown()


@dataclass
class _Item:
    """One command of a poll on its way through `Node._process`: its outcome (decided, or
    refused at the gate) and the future of its append (its commit, or its move elsewhere)."""

    delivered: Delivered
    command: Envelope | None = None
    """The command as its actor got it (sealed); None when refused or moved."""
    outcome: Outcome | None = None
    future: Any = None


class PollCut(RuntimeError):
    """The watchdog closed the consumer a poll was waiting on."""


class PollWatchdog:
    """Closes the node's consumer when it stops being a working member of the nodes' group, and
    the node then joins again with a new consumer instead of serving nothing:
    - one of its polls has waited `limit` seconds (the node's polls return within IDLE_POLL_MS,
      so such a poll is hung, not slow; kafka-python 3.0's consumer has been seen to wait for
      ever for its group coordinator on a loaded machine, its IO thread idle);
    - the group has answered none of its heartbeats in two session timeouts while it believes it
      holds its partitions (on a loaded machine the group was seen Empty, the node dropped from
      it, while the consumer's polls returned nothing and raised nothing);
    - it has been joining for longer than the rebalance timeout allows."""

    def __init__(self, consumer, limit: float, crash: CrashPoints) -> None:
        self.consumer, self.limit, self.crash = consumer, limit, crash
        self.silence_limit = max(limit, 2 * GROUP_TIMINGS["session_timeout_ms"] / 1000)
        """Past two session timeouts without a heartbeat answered, the group has dropped it."""
        self.join_limit = limit + GROUP_TIMINGS["max_poll_interval_ms"] / 1000
        """A join waits at most the rebalance timeout for the group's other members."""
        self.since: float | None = None
        self.unstable_since: float | None = None
        self.closed = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="poll-watchdog", daemon=True)
        self.thread.start()

    def poll(self, timeout_ms: int):
        """A poll that outlives a broker's loss (`poll_through_broker_loss`), but not the
        watchdog: once it has closed the consumer, the node must join again."""
        self.since = time.monotonic()
        try:
            if self.crash.fires("poll-hangs"):
                self.closed.wait()
            if self.crash.fires("heartbeats-stop"):
                self.consumer._coordinator._disable_heartbeat()
            batch = poll_through_broker_loss(self.consumer, timeout_ms)
        finally:
            self.since = None
        if self.closed.is_set():
            raise PollCut("the watchdog closed the node's consumer")
        return batch

    def _watch(self) -> None:
        while not self.done.wait(min(1.0, self.limit / 4)):
            since, now = self.since, time.monotonic()
            if since is not None and now - since > self.limit:
                self._cut(f"has not returned from a poll in {now - since:.0f} s")
                return
            silent = self._unanswered_seconds()
            if silent > self.silence_limit:
                self._cut(f"has had no heartbeat answered by its group in {silent:.0f} s")
                return
            if self._stable():
                self.unstable_since = None
            elif self.unstable_since is None:
                self.unstable_since = now
            elif now - self.unstable_since > self.join_limit:
                self._cut(f"has not completed joining its group in {now - self.unstable_since:.0f} s")
                return

    def _cut(self, what: str) -> None:
        log.error("the node's Kafka consumer %s: closing it and joining the group again with a new one", what)
        self.closed.set()
        self.consumer.close(autocommit=False, timeout_ms=5000)

    def _group_coordinator(self):
        """kafka-python's coordinator of the consumer's group; None when there is no group (a
        node given its partitions by STRATOS_NODE_PARTITIONS)."""
        if not self.consumer._subscription.partitions_auto_assigned():
            return None
        return getattr(self.consumer, "_coordinator", None)

    def _stable(self) -> bool:
        """Whether the consumer holds a generation of its group (True when there is no group)."""
        coordinator = self._group_coordinator()
        return coordinator is None or coordinator.stable()

    def _unanswered_seconds(self) -> float:
        """How long the group has answered none of the consumer's heartbeats while it believes it
        is a member with partitions (0 when it is joining, or has no group). The group drops a
        member after its session timeout (6 s): past the limit, the partitions this node still
        serves are another node's, or no one's."""
        coordinator = self._group_coordinator()
        if coordinator is None or not coordinator.stable():
            return 0.0
        heartbeat = coordinator.heartbeat
        return time.monotonic() - max(heartbeat.last_receive, heartbeat.last_reset)

    def stop(self) -> None:
        self.done.set()


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
        partitions, generation_id = {tp.partition for tp in assigned}, getattr(generation, "generation_id", -1)
        log.info("assigned command partitions %s (group generation %d)", sorted(partitions), generation_id)
        self.node.assignments.put((partitions, generation_id))


@lru_cache(maxsize=100_000)
def partition_for(aggregate_id: str, partitions: int) -> int:
    """Where an aggregate's commands and commits live: Kafka's default (murmur2) partitioner,
    the one the Java client, kafka-python and aiokafka apply to a key. Remembered: the node asks
    for every command, and murmur2 in Python costs some 15 µs."""
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
        """Claims, checkpoints, dead letters and timers: sent at once."""
        self.outbox = Appender(settings, source="node", linger_ms=OUTBOX_LINGER_MS, batch_size=OUTBOX_BATCH_BYTES)
        """A poll's commits, replies and moved commands: sent when `_process` flushes."""
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
            self.host.install(tracked, self.timeouts)
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
        first = True
        try:
            while not self.stopping.is_set():
                consumer = self._join() if first else self._join_again()
                first = False
                watchdog = PollWatchdog(consumer, self.settings.node_stall_seconds, self.crash)
                try:
                    self._serve(consumer, watchdog)
                except Exception:
                    if not watchdog.closed.is_set():
                        raise
                    self._leave_everything()
                finally:
                    watchdog.stop()
                    consumer.close(autocommit=False)
        finally:
            if self.adopter is not None:
                self.adopter.shutdown(wait=False, cancel_futures=True)
            for appender in (self.outbox, self.appender):
                appender.flush()
                appender.close()
            self.gate.stop()
            self.host.shutdown()

    def _join_again(self):
        """`_join` after the watchdog cut a consumer: a broker that cannot be reached meanwhile
        is waited out (the node's first join, at start, fails with its error instead)."""
        while True:
            try:
                return self._join()
            except KafkaError as exc:
                if self.stopping.is_set() or not exc.retriable:
                    raise
                log.warning("joining the nodes' group again failed (%s); trying again", exc)
                self.stopping.wait(POLL_RETRY_PAUSE_SECONDS)

    def _join(self):
        """A consumer of the commands topic, in the nodes' group (or on the partitions the
        settings name); partitions come through `assignments` and are adopted by the loop."""
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
        if self.adopter is None:
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
        return consumer

    def _serve(self, consumer, watchdog: PollWatchdog) -> None:
        while not self.stopping.is_set():
            batch = watchdog.poll(ADOPTING_POLL_MS if self.adopting else self.poll_ms)
            self.take_assignment(consumer)
            if batch:
                self._process(consumer, batch)
            self.install_adopted(consumer)
            self._fire_timers()

    def _leave_everything(self) -> None:
        """After a hung consumer: what it was assigned is given up (the new consumer's
        assignment claims and rebuilds it again, as after any takeover)."""
        while not self.assignments.empty():
            self.assignments.get_nowait()
        self.adopting.clear()
        self.release(list(self.owned))

    def stop(self) -> None:
        self.stopping.set()

    def _process(self, consumer, batch) -> None:
        """One poll's commands: each aggregate's handed to its actor in one message, every
        commit sent, then one flush and every append confirmed; only then the replies, and
        the command offsets once the replies are sent. A partition where an append's outcome
        is unknown (a timeout: the record may still land) answers nothing more: it is given
        up and adopted again (`_appended_unknown`), its commands read again."""
        offsets, handled = {}, defaultdict(list)
        batches: dict[str, tuple[list[Envelope], Context]] = {}
        for tp, raws in batch.items():
            if tp.partition not in self.owned:  # fetched before it was paused: read again once adopted
                if tp in consumer.assignment():
                    consumer.seek(tp, raws[0].offset)
                continue
            ctx = self._context(tp.partition)
            for delivered in validated(self.settings, "commands", raws, self.dead_letters, self.gate.verifier):
                item = _Item(delivered)
                handled[tp].append(item)
                if (refused := self._refused(tp.partition, delivered)) is not None:
                    item.outcome = refused
                elif (moved := self._reroute(delivered, tp.partition)) is not None:
                    item.future = moved
                else:
                    item.command = self._sealed(delivered.record)
                    if self.crash.fires("actor-raises"):
                        self.host.poison.add(item.command.id)
                    batches.setdefault(item.command.aggregate_id, ([], ctx))[0].append(item.command)
            offsets[tp] = (raws[0].offset, OffsetAndMetadata(raws[-1].offset + 1, "", -1))
        decided = {a: iter(o) for a, o in (self.host.handle(batches, self.timeouts) if batches else {}).items()}
        for tp, items in handled.items():
            for item in items:
                if item.command is not None:
                    item.outcome = next(decided[item.command.aggregate_id])
                    self._decided(tp.partition, item)
        self.outbox.flush()
        unknown = {tp for tp, items in handled.items() if not self._confirmed(tp, items)}
        for tp, items in handled.items():
            if tp not in unknown:
                for item in items:
                    if item.outcome is not None:
                        self._reply(tp.partition, item.delivered.record, item.outcome)
        self.outbox.flush()
        self.crash.passing("after-reply")
        for tp in unknown:
            first_offset, _ = offsets.pop(tp)
            self._appended_unknown(consumer, tp, first_offset)
        for partition in list(self.since_checkpoint):
            if self.since_checkpoint[partition] >= self.settings.snapshot_every:
                self.checkpoint(partition)
        if offsets:
            try:
                consumer.commit({tp: offset for tp, (_first, offset) in offsets.items()})
            except KafkaError as exc:
                # Out of the group (a slow batch, a rebalance) or the coordinator unreachable (a
                # broker lost): these commands are redelivered, where their ids make them
                # duplicates. Not fatal.
                log.warning("offset commit failed, commands will be redelivered: %s", exc)
            self.crash.passing("after-offset-commit")

    def _context(self, partition: int) -> Context:
        return Context(
            now=self.clock(),
            new_id=new_id,
            timeouts=self.timeouts,
            claim=self.claims.get(partition),
            writer=self.writer,
            max_record_bytes=self.settings.max_record_bytes,
        )

    def _decided(self, partition: int, item: _Item) -> None:
        """A decision made: a poison command dead-lettered, a commit sent (not yet confirmed)."""
        outcome, command = item.outcome, item.command
        assert outcome is not None and command is not None
        if outcome.failure:
            self.dead_letters.send(
                self.settings.topic("commands"),
                partition,
                item.delivered.offset,
                (item.delivered.key or "").encode(),
                command.model_dump_json().encode(),
                f"handling failed: {outcome.failure}",
                "stratos.HandlingFailed",
                item.delivered.sender.headers() if item.delivered.sender else None,
            )
        self.owned.setdefault(partition, set()).add(command.aggregate_id)
        if outcome.commit is None:
            return
        self.crash.passing("before-append")
        send = partial(
            self.outbox.send_raw,
            self.settings.topic("events"),
            outcome.commit.aggregate_id.encode(),
            outcome.encoded,  # type: ignore[arg-type]  # set with every commit
            partition=partition,
            record=outcome.commit,
        )
        item.future = self.crash.late(send) if self.crash.fires("append-timeout") else send()
        self.crash.passing("after-send")

    def _confirmed(self, tp: TopicPartition, items: list[_Item]) -> bool:
        """Wait for the broker's answer to every append of one partition; False at the first
        that did not come (a failure or a timeout: the record may still land)."""
        for item in items:
            if item.future is None:
                continue
            try:
                offset = item.future.get(timeout=APPEND_WAIT_SECONDS).offset
            except Exception as exc:  # noqa: BLE001 - failed or timed out: the outcome is unknown either way
                log.error(
                    "append of %s's decision on partition %d did not confirm (%s): its outcome is "
                    "unknown; the partition is claimed again and rebuilt up to that claim before "
                    "anything more is decided there",
                    item.delivered.record.aggregate_id,
                    tp.partition,
                    exc,
                )
                return False
            if item.command is not None:  # not a moved command
                self.crash.passing("after-append")
                self._appended(tp.partition, item.command.aggregate_id, offset)
        return True

    def _appended_unknown(self, consumer, tp: TopicPartition, first_offset: int) -> None:
        """Give the partition up and adopt it again: a new claim goes to the events partition
        after every append this node sent there, so the rebuild up to that claim holds the
        record if it landed before it, and the fence makes it no commit if it lands later.
        Either way the command is decided once. Its commands are read again from the first of
        this poll (those answered are duplicates by then)."""
        consumer.pause(tp)
        consumer.seek(tp, first_offset)
        self.release([tp.partition])
        self.adopting[tp.partition] = self.adopter.submit(self._claim_and_rebuild, tp.partition, self.generation)  # type: ignore[union-attr]

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
        return self.outbox.send("commands", command.aggregate_id, command, partition=home)

    def _sealed(self, command: Envelope) -> Envelope:
        """A raw client's clear secrets are sealed here, before a decision writes them to the
        events (the platform's own clients seal before they send: infra/log/commands_client.py)."""
        return self.box.seal_model(command)

    def _appended(self, partition: int, aggregate_id: str, offset: int) -> None:
        self.last_event_offset[partition] = max(self.last_event_offset.get(partition, -1), offset)
        self.dirty[partition][aggregate_id] = offset
        self.since_checkpoint[partition] += 1

    def _reply(self, partition: int, command: Envelope, outcome: Outcome) -> None:
        reply = envelope(
            ReplyRecord,
            outcome.reply,
            command.aggregate_id,
            tenant=command.tenant,
            correlation_id=command.correlation_id or command.id,
            causation_id=command.id,
            trusted=True,
        )
        self.outbox.send("replies", command.aggregate_id, reply, partition=partition)

    def _fire_timers(self) -> None:
        """CheckTimeouts for the aggregates whose next timeout has passed, and for no other (a
        check with nothing due would decide nothing); the id names the aggregate and the timer
        period, so a resend after a crash in the same period is a duplicate."""
        now = self.clock()
        due = self.host.due_for_timeouts(now)
        if not due:
            return
        period = int(now.timestamp() // self.timer_seconds)
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
            full_every=FULL_CHECKPOINT_EVERY * self.settings.snapshot_every,
        )
        if not written:
            self.dirty[partition] = {**dirty, **self.dirty.get(partition, {})}
            return
        self.since_checkpoint[partition] = 0
