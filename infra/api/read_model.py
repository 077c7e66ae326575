"""The API's read model: every aggregate folded from `<prefix>events`, kept current in memory.

It reads all partitions without a consumer group (no rebalance pauses) and folds each commit
that is history (`infra.log.eventlog.History`: fenced writers ignored) with `actors.runtime.Tracked`,
the same apply functions the node uses, so the API shows what the aggregates decided and
nothing else. Writers wait on it so that an answered write is
already visible to the next read. It starts from its own checkpoint and folds only what follows
(`infra.log.projection`), so its start costs the same at any age of the log.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, defaultdict

from pydantic import ValidationError

from actors.base import State
from actors.runtime import Tracked
from infra.log.commands_client import Wake, waker
from infra.log.kafka import IDLE_POLL_MS, Appender, assigned_consumer, poll_through_broker_loss, rejection_reason
from infra.log.projection import Projection, states_of, tracked_of
from infra.settings import Settings
from schemas.definitions import DEFINITION_KINDS
from schemas.ids import AggregateRef, parse_aggregate_id
from schemas.records import LogRecord

log = logging.getLogger(__name__)

CAUSES_REMEMBERED = 100_000
"""Command ids whose events are counted, so a writer can wait for its own command's effect."""


class ReadModel:
    """Aggregates by id and by (tenant, kind), with the offsets applied per partition."""

    format_version = "1"
    """Of the checkpoint's format (`infra.log.projection.states_of`)."""

    def __init__(self, settings: Settings, kinds: set[str] | None = None) -> None:
        self.settings = settings
        self.name = "api-read-model" if kinds is None else "api-read-model:" + ",".join(sorted(kinds))
        self.kinds = {k.encode() for k in kinds} if kinds is not None else None
        """Only these aggregate kinds are folded (a node's users and tenants); None = all."""
        self.changed = threading.Condition()
        self.aggregates: dict[str, Tracked] = {}
        self.by_kind: dict[tuple[str, str], dict[str, Tracked]] = defaultdict(dict)
        self.references: dict[str, list[tuple[str, str]]] = {}
        self.applied: dict[int, int] = {}
        self.version = 0
        """Counts applied batches: a view computed at one version stays right until it changes."""
        self.caused: OrderedDict[str, int] = OrderedDict()
        self.command_waiters: dict[str, list[tuple[int, Wake]]] = {}
        """Writers waiting for a command's events, woken one by one rather than all per batch."""
        self.projection = Projection(settings, self)
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="read-model", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> ReadModel:
        """Start following the log; returns once everything logged so far is applied."""
        self.thread.start()
        if not self.ready.wait(timeout):
            raise TimeoutError(
                f"read model did not catch up with the events log in {timeout}s: {self.failure or 'still reading'}"
            )
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    def _run(self) -> None:
        try:
            consumer = assigned_consumer(self.settings, "events")
        except Exception as exc:  # reported by start(); the API cannot serve without it
            self.failure = exc
            log.exception("read model could not open the events topic")
            return
        appender = Appender(self.settings, source="api")
        try:
            if self.projection.restore() is not None:
                self.applied = dict(self.projection.positions)
                self.projection.seek(consumer)
            if not self.projection.catch_up(consumer, appender, self.stopping.is_set, self._fold_batch):
                return
            self.ready.set()
            while not self.stopping.is_set():
                for tp, raws in poll_through_broker_loss(consumer, IDLE_POLL_MS).items():
                    self._fold_batch(tp.partition, raws)
                if self.projection.due():
                    self.projection.checkpoint(appender)
        except Exception as exc:
            self.failure = exc
            log.exception("read model stopped")
        finally:
            try:
                if self.projection.due() or (self.stopping.is_set() and self.projection.read):
                    self.projection.checkpoint(appender)
            except Exception:  # noqa: BLE001 - the next start folds a little more
                log.exception("read model: the checkpoint at stop was not written")
            consumer.close()
            appender.close()

    def _fold_batch(self, partition: int, raws) -> None:
        with self.changed:
            for raw in raws:
                if self.kinds is None or self._wanted(raw.key):
                    self._fold_one(raw)
                else:
                    self.projection.skip(raw)
                self.applied[partition] = raw.offset + 1
            self.version += 1
            self.changed.notify_all()

    def _wanted(self, key: bytes | None) -> bool:
        """A commit of a wanted kind, or a claim (the fences need every one)."""
        parts = (key or b"").split(b"/", 2)
        return len(parts) != 3 or parts[1] in self.kinds  # type: ignore[operator]

    def _fold_one(self, raw) -> None:
        """Apply one record; a record that does not validate or fold is logged and skipped
        (the reactor, which reads the same topic, sends it to the dead-letter topic)."""
        try:
            self.projection.feed(raw)
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            log.warning("read model skips %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, rejection_reason(exc))

    def fold(self, record: LogRecord, raw) -> None:
        """One commit that is history, by the aggregate's own apply (`Tracked.fold_commit`)."""
        tracked = self.aggregates.get(record.aggregate_id)
        if tracked is None:
            tracked = Tracked.new(record.aggregate_id)
        problem = tracked.fold_commit(record)
        if problem:
            log.warning("read model: %s", problem)
        ref = parse_aggregate_id(record.aggregate_id)
        self.aggregates[record.aggregate_id] = tracked
        self.by_kind[(ref.tenant, ref.kind)][ref.id] = tracked
        self._index_references(record.aggregate_id, ref, tracked.state)
        if record.causation_id:
            self.caused[record.causation_id] = len(record.payload.events)  # type: ignore[union-attr]
            self.caused.move_to_end(record.causation_id)
            if len(self.caused) > CAUSES_REMEMBERED:
                self.caused.popitem(last=False)
            if record.causation_id in self.command_waiters:
                self._wake_writers(record.causation_id)

    def _wake_writers(self, command_id: str) -> None:
        count = self.caused[command_id]
        waiting = []
        for needed, wake in self.command_waiters.pop(command_id):
            if count >= needed:
                wake()
            else:
                waiting.append((needed, wake))
        if waiting:
            self.command_waiters[command_id] = waiting

    def checkpoint_state(self) -> dict:
        return {"aggregates": states_of(self.aggregates)}

    def restore(self, state: dict) -> None:
        for aggregate_id, tracked in tracked_of(state["aggregates"]).items():
            self.aggregates[aggregate_id] = tracked
            ref = parse_aggregate_id(aggregate_id)
            self.by_kind[(ref.tenant, ref.kind)][ref.id] = tracked
            self._index_references(aggregate_id, ref, tracked.state)

    def _index_references(self, aggregate_id: str, ref: AggregateRef, state: State) -> None:
        model = DEFINITION_KINDS.get(ref.kind)
        body = getattr(state, "definition", None)
        if model is None or not state.exists or body is None:
            self.references.pop(aggregate_id, None)
            return
        try:
            self.references[aggregate_id] = model.model_validate(body).references()
        except ValidationError:
            self.references.pop(aggregate_id, None)

    # --- waiting for a write's effect -----------------------------------------------------
    async def wait_for_command(self, command_id: str, events: int, timeout: float) -> bool:
        """Wait (on the API's event loop) until `events` events caused by `command_id` are applied."""
        event = asyncio.Event()
        wake = waker(event)
        with self.changed:
            if self.caused.get(command_id, 0) >= events:
                return True
            self.command_waiters.setdefault(command_id, []).append((events, wake))
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self.changed:
                waiting = [w for w in self.command_waiters.pop(command_id, []) if w[1] is not wake]
                if waiting:
                    self.command_waiters[command_id] = waiting
                done = self.caused.get(command_id, 0) >= events
        return done

    def wait_for_offset(self, partition: int, offset: int, timeout: float) -> bool:
        """Wait until the event at `offset` of `partition` is applied."""
        with self.changed:
            return self.changed.wait_for(lambda: self.applied.get(partition, 0) > offset, timeout)

    # --- queries --------------------------------------------------------------------------
    def get(self, tenant: str, kind: str, id: str) -> State | None:
        """The state of an existing aggregate, or None."""
        with self.changed:
            tracked = self.by_kind.get((tenant, kind), {}).get(id)
        return tracked.state if tracked is not None and tracked.state.exists else None

    def all(self, tenant: str, kind: str) -> list[State]:
        """Existing aggregates of one kind in one tenant, by id."""
        with self.changed:
            found = list(self.by_kind.get((tenant, kind), {}).items())
        return [t.state for _, t in sorted(found, key=lambda item: item[0]) if t.state.exists]

    def tenants_with(self, kind: str) -> list[str]:
        with self.changed:
            return sorted({tenant for (tenant, k), found in self.by_kind.items() if k == kind and found})

    def referrers(self, tenant: str, kind: str, id: str) -> list[str]:
        """`kind id` of the definitions of `tenant` that use (kind, id)."""
        wanted = (kind, id)
        with self.changed:
            users = [aggregate for aggregate, refs in self.references.items() if wanted in refs]
        refs = [parse_aggregate_id(a) for a in users]
        return sorted(f"{r.kind} '{r.id}'" for r in refs if r.tenant == tenant)
