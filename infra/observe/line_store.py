"""The read side of the logging service: `<prefix>logs` followed into a bounded ring per member.

Every partition is read from its start without a group (like the API's read model). Each member
keeps its last `log_ring_lines` lines; a member shipping faster than twice the shipper's rate
(one not using our shipper) has its excess refused here too, counted, so that one flood never
holds the lines of the others back or fills the memory. Lines get a sequence number in the order
read (per member, the order they were written), used as the paging and follow cursor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC

from infra.auth.signing import Verifier
from infra.log.kafka import Appender, DeadLetters, validated
from infra.observe.follower import Follower
from infra.settings import Settings
from streams.logrules import TokenBucket, at_least

log = logging.getLogger(__name__)
MAX_MEMBERS = 20_000
"""Members whose rings are kept; past that, the member whose last line is oldest is forgotten."""


@dataclass(frozen=True)
class StoredLine:
    seq: int
    at: float
    level: str
    member: str
    cluster: str
    application: str
    tenant: str
    source: str
    message: str

    def as_json(self) -> dict:
        from datetime import datetime

        return {
            "seq": self.seq,
            "at": datetime.fromtimestamp(self.at, UTC).isoformat(),
            "level": self.level,
            "member": self.member,
            "cluster": self.cluster,
            "application": self.application,
            "source": self.source,
            "message": self.message,
        }


@dataclass
class _Member:
    member: str
    cluster: str
    application: str
    tenant: str
    lines: deque
    bucket: TokenBucket
    dropped_by_shipper: int = 0


class LogStore(Follower):
    topic_kind = "logs"
    name = "log-store"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.members: OrderedDict[tuple[str, str], _Member] = OrderedDict()
        """(tenant, member id) -> its ring, least recently written first: a member id shipped
        under another tenant is another member, never a way into someone else's ring"""
        self.seq = 0
        self.changed = threading.Condition()
        self.appender = Appender(settings)
        self.dead_letters = DeadLetters(self.appender)
        self.verifier = Verifier.of(settings)

    def on_records(self, raws) -> None:
        """Lines signed by the platform (its parts, simulated members) or by the member they
        are about (`Verifier.require_signed`): anything else is dead-lettered with why."""
        for delivered in validated(
            self.settings, "logs", raws, self.dead_letters, verifier=self.verifier, signed_only=True
        ):
            try:
                self.add(delivered.record, time.monotonic())
            except Exception as exc:  # noqa: BLE001 - one record must not stop the store
                self.dead_letters.handling_failed(delivered, delivered.record, exc)

    def closed(self) -> None:
        self.appender.close()

    def add(self, record, now: float) -> int:
        """Store one LogBatch record's lines; returns how many were kept."""
        batch = record.payload
        key = (record.tenant, batch.member_id)
        with self.changed:
            member = self.members.get(key)
            if member is None:
                member = self.members[key] = _Member(
                    batch.member_id,
                    batch.cluster_id,
                    batch.application_id,
                    record.tenant,
                    deque(maxlen=self.settings.log_ring_lines),
                    TokenBucket(self.settings.log_lines_per_second * 2, self.settings.log_burst_lines * 2),
                )
            self.members.move_to_end(key)
            while len(self.members) > MAX_MEMBERS:
                self.members.popitem(last=False)
            member.dropped_by_shipper += batch.dropped
            allowed = member.bucket.take(now, len(batch.lines))
            for line in batch.lines[:allowed]:
                self.seq += 1
                member.lines.append(
                    StoredLine(
                        self.seq,
                        line.at.timestamp(),
                        line.level,
                        batch.member_id,
                        member.cluster,
                        member.application,
                        record.tenant,
                        line.source,
                        line.message,
                    )
                )
            if allowed:
                self.changed.notify_all()
            return allowed

    def _matching(self, tenant: str, target: str | None) -> list[_Member]:
        return [
            m
            for (owner, mid), m in self.members.items()
            if owner == tenant and (target is None or target in (mid, m.cluster, m.application))
        ]

    def query(
        self,
        tenant: str,
        target: str | None = None,
        since: float | None = None,
        level: str | None = None,
        after: int = 0,
        before: int | None = None,
        limit: int = 200,
    ) -> list[StoredLine]:
        """The last `limit` lines of the tenant's members matching `target` (a member, cluster or
        application id), oldest first, with seq in (after, before)."""
        with self.changed:
            lines = [
                line
                for m in self._matching(tenant, target)
                for line in m.lines
                if line.seq > after
                and (before is None or line.seq < before)
                and (since is None or line.at >= since)
                and at_least(line.level, level)
            ]
        lines.sort(key=lambda line: line.seq)
        return lines[-limit:] if limit else lines

    def known(self, tenant: str, target: str) -> bool:
        with self.changed:
            return bool(self._matching(tenant, target))

    def dropped(self, tenant: str, target: str | None = None) -> dict[str, dict[str, int]]:
        """Per member: lines refused by its shipper and by this read side."""
        with self.changed:
            return {
                m.member: {"shipper": m.dropped_by_shipper, "readSide": m.bucket.refused}
                for m in self._matching(tenant, target)
                if m.dropped_by_shipper or m.bucket.refused
            }

    def wait_newer(self, seq: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.seq > seq, timeout)
