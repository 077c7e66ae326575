"""One runner for every read side of the events topic: restore from its own checkpoint, fold only
what follows, checkpoint again.

A read side (the API's read model, the LB's topology, the health views...) keeps its fold, the
aggregates' own `apply` through `Tracked`; the runner gives it what every read side needs alike:

- **Its own checkpoint**, on the compacted `<prefix>projections` topic under the read side's
  name: its state, the events offset it covers per partition and the claim in force there (so
  the fence resumes exactly), signed with the platform key like every record of the platform's
  own topics and verified before use (a forged or damaged checkpoint is dead-lettered or
  ignored: the read side then folds from offset 0). A state is written compressed, in parts of
  at most `PART_BYTES`, to the slot (a or b) the current manifest does not name, and the
  manifest last: a write cut short leaves the previous checkpoint whole.
- **Folding from there**: `seek` puts a group-less consumer at the checkpoint's offsets; `feed`
  folds a record as history (`infra.log.eventlog.History`: signature, fence) and counts it.
- **A rebuild that shows progress and can be interrupted**: `catch_up` reads to the end offsets
  of the start with a `rich` progress bar (records, rate, ETA; a log line every 10 s when the
  output is not a terminal), checkpointing every `projection_checkpoint_records` on the way (so
  a rebuild stopped halfway resumes from there) and where it ends. Read sides use no consumer group while they
  rebuild, so no group waits on them past its poll interval.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from actors.history import Fence
from actors.runtime import Tracked
from infra.auth.signing import Unauthenticated, Verifier
from infra.log.eventlog import History, Rejections
from infra.log.kafka import Appender, assigned_consumer, ensure_topics, partitions_of, poll_through_broker_loss
from infra.settings import Settings
from schemas.records import LogRecord

log = logging.getLogger(__name__)

TOPIC = "projections"
PART_BYTES = 512 * 1024
"""A checkpoint part's compressed bytes: well under the broker's 1 MB record limit."""
SLOTS = ("a", "b")
LOG_EVERY_SECONDS = 10.0


class ReadSide(Protocol):
    """What a read side gives the runner: its name, the version of its state's format, its fold
    of one commit that is history, and its state as JSON data and back."""

    name: str
    format_version: str

    def fold(self, commit: LogRecord, raw) -> None: ...

    def checkpoint_state(self) -> dict: ...

    def restore(self, state: dict) -> None: ...


@dataclass
class Checkpoint:
    offsets: dict[int, int]
    """partition -> the next events offset to read"""
    claims: dict[int, str | None]
    """partition -> the claim in force at that offset"""
    state: dict
    records: int = 0
    """records folded from offset 0 to get here (what a rebuild from 0 would read)"""
    written_at: str = ""


@dataclass
class Projection:
    """The runner of one read side (see the module's docstring). Use it from one thread."""

    settings: Settings
    side: ReadSide
    every_records: int | None = None
    every_seconds: float | None = None
    history: History | None = None
    """The history it reads through (default: the platform's keyring, forged records dead-lettered)."""
    positions: dict[int, int] = field(default_factory=dict)
    read: int = 0
    """Records read by this process (checkpoint restores not counted): what a start cost."""
    folded_total: int = 0
    restored_from: Checkpoint | None = None
    _since_checkpoint: int = 0
    _checkpointed_at: float = field(default_factory=time.monotonic)
    _slot: str | None = None

    def __post_init__(self) -> None:
        self.every_records = self.every_records or self.settings.projection_checkpoint_records
        self.every_seconds = self.every_seconds or self.settings.projection_checkpoint_seconds
        if self.history is None:
            self.history = History.of(self.settings)

    # --- start ------------------------------------------------------------------------------
    def restore(self) -> Checkpoint | None:
        """Load the read side's newest valid checkpoint into it (None: start from offset 0)."""
        found = load_checkpoint(self.settings, self.side.name, self.side.format_version)
        if found is None:
            return None
        checkpoint, self._slot = found
        ends = events_ends(self.settings)
        if beyond := {p: at for p, at in checkpoint.offsets.items() if at > ends.get(p, 0)}:
            log.warning(
                "%s: its checkpoint covers events offsets %s that the topic does not hold (ends %s: "
                "recreated?): folding from offset 0",
                self.side.name,
                beyond,
                ends,
            )
            return None
        try:
            self.side.restore(checkpoint.state)
        except Exception:  # noqa: BLE001 - a state this code cannot read: fold from 0 instead
            log.exception(
                "%s: checkpoint of %s not restored; folding from offset 0", self.side.name, checkpoint.written_at
            )
            return None
        claims = checkpoint.claims
        self.history = History.of(self.settings, lambda partition, offset: Fence(claims.get(partition)))
        self.positions = dict(checkpoint.offsets)
        self.folded_total = checkpoint.records
        self.restored_from = checkpoint
        log.info(
            "%s: restored its checkpoint of %s (%d records folded), reading on from %s",
            self.side.name,
            checkpoint.written_at,
            checkpoint.records,
            checkpoint.offsets,
        )
        return checkpoint

    def seek(self, consumer) -> None:
        """Put an assigned consumer at the restored offsets (partitions not covered: their start)."""
        for tp in consumer.assignment():
            if tp.partition in self.positions:
                consumer.seek(tp, self.positions[tp.partition])

    # --- folding ----------------------------------------------------------------------------
    def feed(self, raw) -> LogRecord | None:
        """Fold one events record if it is history; an invalid or forged one is skipped (and
        dead-lettered by the history). Returns the commit folded, if any."""
        self.skip(raw)
        try:
            commit = self.history.commit(raw)  # type: ignore[union-attr]
        except ValueError:
            return None
        if commit is not None:
            self.side.fold(commit, raw)
        return commit

    def skip(self, raw) -> None:
        """Count a record the read side does not want (its position still moves)."""
        self.positions[raw.partition] = raw.offset + 1
        self.read += 1
        self.folded_total += 1
        self._since_checkpoint += 1

    def due(self) -> bool:
        return bool(self._since_checkpoint) and (
            self._since_checkpoint >= (self.every_records or 0)
            or time.monotonic() - self._checkpointed_at >= (self.every_seconds or 0)
        )

    def checkpoint(self, appender: Appender) -> None:
        """Write the read side's checkpoint now (on the thread that folds: a consistent state)."""
        self.write(appender, self.capture())

    def capture(self) -> Checkpoint:
        """The read side's state and position now; call it where the read side folds."""
        claims = {p: fence.claim for p, fence in self.history.fences.items()}  # type: ignore[union-attr]
        if self.restored_from is not None:
            claims = {**self.restored_from.claims, **claims}
        self._since_checkpoint, self._checkpointed_at = 0, time.monotonic()
        return Checkpoint(
            dict(self.positions),
            {p: claims.get(p) for p in self.positions},
            self.side.checkpoint_state(),
            self.folded_total,
            datetime.now(UTC).isoformat(),
        )

    def write(self, appender: Appender, checkpoint: Checkpoint) -> None:
        """Send a captured checkpoint (may run on another thread than the fold); a failure is
        logged, never raised: the next start then folds a little more."""
        try:
            self._slot = write_checkpoint(appender, self.side.name, self.side.format_version, checkpoint, self._slot)
        except Exception:  # noqa: BLE001 - see above
            log.exception("%s: checkpoint not written", self.side.name)

    def catch_up(
        self, consumer, appender: Appender | None, stopping: Callable[[], bool], batch: Callable | None = None
    ) -> bool:
        """Read to the end offsets of now, folding (or `batch(partition, raws)` per batch) and
        checkpointing on the way; True once there, False if stopped first."""
        ends = {tp: end for tp, end in consumer.end_offsets(list(consumer.assignment())).items()}
        todo = sum(max(0, end - consumer.position(tp)) for tp, end in ends.items())
        shown = sys.stderr.isatty()
        with Progress(
            TextColumn(f"[bold]{self.side.name}[/] folding the log"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:,.0f}/s"),
            TimeRemainingColumn(),
            disable=not shown,
            transient=True,
        ) as progress:
            task = progress.add_task("rebuild", total=todo, rate=0.0)
            started = last_log = time.monotonic()
            done = 0
            while not all(consumer.position(tp) >= end for tp, end in ends.items()):
                if stopping():
                    return False
                for tp, raws in poll_through_broker_loss(consumer, 500, max_records=5000).items():
                    if batch is not None:
                        batch(tp.partition, raws)
                    else:
                        for raw in raws:
                            self.feed(raw)
                    done += len(raws)
                now = time.monotonic()
                rate = done / max(now - started, 1e-6)
                progress.update(task, completed=min(done, todo), rate=rate)
                if not shown and now - last_log >= LOG_EVERY_SECONDS:
                    log.info(
                        "%s: %d of %d records folded (%.0f/s, about %.0f s to go)",
                        self.side.name,
                        done,
                        todo,
                        rate,
                        (todo - done) / rate if rate else float("nan"),
                    )
                    last_log = now
                if appender is not None and self._since_checkpoint >= (self.every_records or 0):
                    self.checkpoint(appender)
        if appender is not None and self._since_checkpoint:
            self.checkpoint(appender)  # where the next start begins, even if this one is killed
        return True


def states_of(aggregates: dict[str, Tracked]) -> dict[str, dict]:
    """Aggregates as a read side's checkpoint keeps them: their states, without the dedup window
    the node keeps (a read side needs none: a repeated commit with events fails the sequence
    check of `Tracked.fold_commit`, one without events changes nothing), so that a checkpoint is
    as large as the platform is now, whatever the age of its log."""
    return {
        aggregate_id: {"state": tracked.state.model_dump(mode="json")} for aggregate_id, tracked in aggregates.items()
    }


def tracked_of(states: dict[str, dict]) -> dict[str, Tracked]:
    """`states_of` undone."""
    return {aggregate_id: Tracked.from_snapshot(aggregate_id, data) for aggregate_id, data in states.items()}


def events_ends(settings: Settings) -> dict[int, int]:
    """partition -> the end offset of the events topic now."""
    consumer = assigned_consumer(settings, "events", from_beginning=False)
    try:
        return {tp.partition: end for tp, end in consumer.end_offsets(list(consumer.assignment())).items()}
    finally:
        consumer.close()


# --- the checkpoint records -----------------------------------------------------------------------
def _part_key(name: str, slot: str, n: int) -> str:
    return f"{name}/{slot}/{n}"


def write_checkpoint(appender: Appender, name: str, version: str, checkpoint: Checkpoint, current: str | None) -> str:
    """Write the parts to the slot `current` does not name, then the manifest; returns the slot."""
    slot = SLOTS[1] if current == SLOTS[0] else SLOTS[0]
    generation = secrets.token_hex(8).encode()
    body = zlib.compress(json.dumps(checkpoint.state, separators=(",", ":")).encode(), 1)
    parts = [body[i : i + PART_BYTES] for i in range(0, len(body), PART_BYTES)] or [b""]
    topic, partition = appender.settings.topic(TOPIC), partition_of(appender.settings, name)
    sent = [
        appender.send_raw(topic, _part_key(name, slot, n).encode(), generation + b"\n" + part, partition)
        for n, part in enumerate(parts)
    ]
    for future in sent:
        future.get(timeout=30)
    manifest = {
        "version": version,
        "slot": slot,
        "generation": generation.decode(),
        "parts": len(parts),
        "sha256": hashlib.sha256(body).hexdigest(),
        "offsets": {str(p): o for p, o in checkpoint.offsets.items()},
        "claims": {str(p): c for p, c in checkpoint.claims.items()},
        "records": checkpoint.records,
        "writtenAt": checkpoint.written_at,
    }
    appender.send_raw(topic, name.encode(), json.dumps(manifest).encode(), partition).get(timeout=30)
    log.info("%s: checkpoint written (%d bytes compressed, %d parts, slot %s)", name, len(body), len(parts), slot)
    return slot


def partition_of(settings: Settings, name: str) -> int:
    """The projections partition that holds a read side's records: one partition per name, so
    that a start reads its own checkpoints only."""
    topic = (settings.kafka_bootstrap, settings.topic(TOPIC))
    if topic not in _PARTITIONS:
        _PARTITIONS[topic] = partitions_of(settings, TOPIC)
    return zlib.crc32(name.encode()) % _PARTITIONS[topic]


_PARTITIONS: dict[tuple[str | None, str], int] = {}


WINDOWS = (256, 4096, None)
"""Records read back from the end of a read side's partition to find its newest checkpoint
(its manifest is written last, its parts just before): widened when not found, then the whole
partition (until the cleaner compacts, the partition also holds older checkpoints)."""


def load_checkpoint(settings: Settings, name: str, version: str) -> tuple[Checkpoint, str] | None:
    """The read side's checkpoint (and its slot) if one is there, signed by the platform, whole
    and of this version; None otherwise (the reason logged)."""
    ensure_topics(settings, [TOPIC])
    partition = partition_of(settings, name)
    consumer = assigned_consumer(settings, TOPIC, partitions=[partition])
    try:
        tp = next(iter(consumer.assignment()))
        begin, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
        problem = "none written"
        for window in WINDOWS:
            start = begin if window is None else max(begin, end - window)
            latest = _latest(settings, consumer, tp, start, end, name)
            try:
                found = _assembled(latest, name, version)
            except ValueError as exc:
                problem = str(exc)
                found = None
            if found is not None or start == begin:
                break
    finally:
        consumer.close()
    if found is None and problem != "none written":
        log.warning("%s: checkpoint unusable (%s): folding from offset 0", name, problem)
    return found


def _latest(settings: Settings, consumer, tp, start: int, end: int, name: str) -> dict[bytes, bytes]:
    """key -> the newest value signed by the platform, of this read side's records in [start, end)."""
    verifier, rejected = Verifier.of(settings), Rejections.of(settings)
    prefix = f"{name}/".encode()
    latest: dict[bytes, bytes] = {}
    consumer.seek(tp, start)
    while consumer.position(tp) < end:
        for raw in poll_through_broker_loss(consumer, 500).get(tp, []):
            if raw.offset >= end or (raw.key != name.encode() and not (raw.key or b"").startswith(prefix)):
                continue
            try:
                verifier.platform(TOPIC, raw.key, raw.value, raw.headers)
            except Unauthenticated as exc:
                rejected(raw, exc)
                continue
            latest[raw.key] = raw.value
    return latest


def _assembled(latest: dict[bytes, bytes], name: str, version: str) -> tuple[Checkpoint, str] | None:
    """The checkpoint its manifest names, from these records; None without a manifest (or of
    another version); raises ValueError naming what is missing or wrong."""
    if name.encode() not in latest:
        return None
    try:
        manifest = json.loads(latest[name.encode()])
        if manifest["version"] != version:
            log.info(
                "%s: checkpoint of version %s, this code reads %s: folding from 0", name, manifest["version"], version
            )
            return None
        generation = manifest["generation"].encode() + b"\n"
        body = b""
        for n in range(manifest["parts"]):
            part = latest.get(_part_key(name, manifest["slot"], n).encode(), b"")
            if not part.startswith(generation):
                raise ValueError(f"part {n} of slot {manifest['slot']} missing or of another checkpoint")
            body += part[len(generation) :]
        if hashlib.sha256(body).hexdigest() != manifest["sha256"]:
            raise ValueError("the parts do not add up to the manifest's digest")
        state = json.loads(zlib.decompress(body))
        checkpoint = Checkpoint(
            {int(p): o for p, o in manifest["offsets"].items()},
            {int(p): c for p, c in manifest["claims"].items()},
            state,
            manifest.get("records", 0),
            manifest.get("writtenAt", ""),
        )
    except (KeyError, TypeError, zlib.error) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return checkpoint, manifest["slot"]
