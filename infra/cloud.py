"""`stratos cloud`: the cloud controller, the one place that starts and stops IaaS nodes.

It follows `stratos.events` in the consumer group "stratos-cloud" and turns member events into
libcloud calls; what happened comes back to the cluster aggregate as commands (ReportNodeCreated,
ReportNodeStartFailed, ReportNodeDestroyed) with ids derived from the event, so a redelivered
event yields duplicates the aggregate ignores. The member id is the node's name: before creating
a node it looks one up by that name, so a replay or a crash between "created" and "reported"
never starts a second node.

IaaS calls run on worker lanes (one thread each; a member always goes to the same lane, so its
calls keep their order) while the consumer keeps polling; an event's offset is committed only
once its work is done. A small read model of the members it knows (rebuilt from the events
topic on start) lets a reconciler list the nodes periodically and report a member whose node
vanished, so the min rule replaces it.
"""
from __future__ import annotations

import logging
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kafka import OffsetAndMetadata, TopicPartition
from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState
from pydantic import BaseModel

from infra.iaas.providers import IaasConfigError, IaasTarget, build_driver, create_options, node_name
from infra.kafka import (Appender, DeadLetters, Delivered, encode, envelope, group_consumer,
                         read_to_end, validated)
from infra.settings import Settings
from schemas import commands as C
from schemas import events as E
from schemas.records import CommandRecord, EventRecord, NotifierRecord
from schemas.status import InstanceCleanupMember

log = logging.getLogger(__name__)
CLOUD_GROUP = "stratos-cloud"


@dataclass
class KnownMember:
    """What the controller knows of a member from the events it has read."""

    member_id: str
    cluster_id: str
    cluster_key: str
    tenant: str
    target: IaasTarget
    metadata: dict[str, str]
    node_id: str | None = None
    leaving: bool = False
    gone: bool = False


class MemberBook:
    """The controller's read model: members by id, folded from member events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.members: dict[str, KnownMember] = {}

    def apply(self, record: EventRecord) -> None:
        event = record.payload
        with self.lock:
            if isinstance(event, E.MemberSpawnRequested):
                self.members.setdefault(event.member_id, KnownMember(
                    member_id=event.member_id, cluster_id=event.cluster_id,
                    cluster_key=record.aggregate_id, tenant=record.tenant,
                    target=IaasTarget.from_event(event.provider, event.iaas),
                    metadata=_metadata(event, record.tenant)))
                return
            member = self.members.get(getattr(event, "member_id", ""))
            if member is None:
                return
            if isinstance(event, E.MemberInitialized):
                member.node_id = event.node_id
            elif isinstance(event, (E.MemberTerminationRequested, E.MemberObsoleted)):
                member.leaving = True
            elif isinstance(event, E.MemberTerminated):
                member.gone = True

    def get(self, member_id: str | None) -> KnownMember | None:
        with self.lock:
            return self.members.get(member_id or "")

    def with_nodes(self) -> list[KnownMember]:
        """Members in service that have a node: the ones whose node must still exist."""
        with self.lock:
            return [m for m in self.members.values() if m.node_id and not (m.leaving or m.gone)]


def _metadata(event: E.MemberSpawnRequested, tenant: str) -> dict[str, str]:
    """Tags on the node: who it is for (the mock IaaS's agents read them too)."""
    tags = {"memberId": event.member_id, "clusterId": event.cluster_id, "tenant": tenant,
            "applicationId": event.application_id, "cartridgeType": event.cartridge_type,
            "networkPartitionId": event.network_partition_id, "partitionId": event.partition_id,
            "ports": ",".join(f"{p.get('protocol', '')}:{p.get('port', '')}" for p in event.ports)}
    if event.repo_url:
        tags["repoUrl"] = event.repo_url
    return tags


def _first(addresses: list[str]) -> str | None:
    return addresses[0] if addresses else None


class CloudController:
    def __init__(self, settings: Settings, mock_cloud: str | None = None) -> None:
        self.settings = settings
        self.mock_cloud = mock_cloud or settings.mock_cloud or settings.topic_prefix
        self.book = MemberBook()
        self.appender = Appender(settings)
        self.dead_letters = DeadLetters(self.appender)
        self.lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"cloud-lane-{n}")
                      for n in range(settings.cloud_workers)]
        self.rebuilt_until: dict[int, int] = {}
        self.local = threading.local()
        self.stopping = threading.Event()
        self.ready = threading.Event()

    # --- the loop -----------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Fold every member event so far into the read model (the log is the only state)."""
        for delivered in read_to_end(self.settings, "events"):
            self.book.apply(delivered.record)
            self.rebuilt_until[delivered.partition] = delivered.offset + 1

    def run(self) -> None:
        self.rebuild()
        consumer = group_consumer(self.settings, CLOUD_GROUP, ["events"])
        reconciler = threading.Thread(target=self._reconcile_loop, name="cloud-reconciler", daemon=True)
        reconciler.start()
        in_flight: dict[TopicPartition, deque[tuple[int, Future | None]]] = {}
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=100)
                if consumer.assignment():
                    self.ready.set()
                for tp, raws in batch.items():
                    queue = in_flight.setdefault(tp, deque())
                    for delivered in validated(self.settings, "events", raws, self.dead_letters):
                        queue.append((delivered.offset, self.dispatch(delivered)))
                    queue.append((raws[-1].offset, None))  # records that were dead-lettered
                self._commit_done(consumer, in_flight)
        finally:
            for lane in self.lanes:
                lane.shutdown(wait=True, cancel_futures=True)
            self._commit_done(consumer, in_flight)
            consumer.close(autocommit=False)
            reconciler.join(5)
            self.appender.close()

    def stop(self) -> None:
        self.stopping.set()

    def _commit_done(self, consumer, in_flight) -> None:
        """Commit, per partition, past the events whose work is finished (in offset order)."""
        offsets = {}
        for tp, queue in in_flight.items():
            done = None
            while queue and (queue[0][1] is None or (queue[0][1].done() and not queue[0][1].cancelled())):
                done = queue.popleft()[0]
            if done is not None:
                offsets[tp] = OffsetAndMetadata(done + 1, "", -1)
        if offsets:
            self.appender.flush()
            consumer.commit(offsets)

    def dispatch(self, delivered: Delivered) -> Future | None:
        """Update the read model with a new event and queue the IaaS work it asks for."""
        record = delivered.record
        if delivered.offset >= self.rebuilt_until.get(delivered.partition, 0):
            self.book.apply(record)
        event = record.payload
        member = self.book.get(getattr(event, "member_id", None))
        if member is None or member.gone and not isinstance(event, E.MemberTerminated):
            return None
        if isinstance(event, E.MemberSpawnRequested):
            work = (self.start_node, member, record) if member.node_id is None else None
        elif isinstance(event, E.MemberTerminationRequested):
            work = (self.ask_cleanup, member, record) if event.graceful else \
                (self.destroy_and_report, member, record, event.reason or "terminated")
        elif isinstance(event, E.MemberReadyToShutdown):
            work = (self.destroy_and_report, member, record, "terminated after graceful shutdown")
        elif isinstance(event, E.MemberTerminated):
            work = (self.destroy_leftover, member)
        else:
            work = None
        if work is None:
            return None
        lane = self.lanes[zlib.crc32(member.member_id.encode()) % len(self.lanes)]
        return lane.submit(self._guarded, delivered, *work)

    def _guarded(self, delivered: Delivered, work, *args) -> None:
        """Run one piece of IaaS work; an unexpected failure dead-letters the event with why."""
        try:
            work(*args)
        except Exception as exc:
            log.exception("cloud work for event %s failed", delivered.record.id)
            self.dead_letters.send(delivered.topic, delivered.partition, delivered.offset,
                                   delivered.key.encode() if delivered.key else None,
                                   encode(delivered.record), f"{type(exc).__name__}: {exc}")

    # --- IaaS work (on the member's lane) -------------------------------------------------------
    def driver(self, target: IaasTarget) -> NodeDriver:
        """One driver per thread and account: libcloud connections are not shared across threads."""
        cache = self.local.__dict__.setdefault("drivers", {})
        if target.driver_key not in cache:
            cache[target.driver_key] = build_driver(target, self.mock_cloud)
        return cache[target.driver_key]

    def find_node(self, member: KnownMember) -> Node | None:
        name = node_name(member.target, member.member_id)
        return next((n for n in self.driver(member.target).list_nodes()
                     if n.name == name and n.state != NodeState.TERMINATED), None)

    def start_node(self, member: KnownMember, record: EventRecord) -> None:
        attempts, delay = self.settings.cloud_start_attempts, self.settings.cloud_retry_seconds
        for attempt in range(1, attempts + 1):
            if member.gone or self.stopping.is_set():
                return
            try:
                driver = self.driver(member.target)
                node = self.find_node(member) or driver.create_node(
                    **create_options(member.target, driver, member.member_id, member.metadata))
            except Exception as exc:  # every IaaS failure is reported on the member, with its reason
                final = attempt >= attempts or isinstance(exc, IaasConfigError)
                reason = str(getattr(exc, "value", None) or exc) or type(exc).__name__
                log.warning("member %s: start attempt %d failed: %s", member.member_id, attempt, reason)
                self.report(member, record, f"failed.{attempt}", C.ReportNodeStartFailed(
                    member_id=member.member_id, reason=reason, attempt=attempt, final=final))
                if final or self.stopping.wait(delay):
                    return
                delay *= 2
                continue
            member.node_id = node.id
            self.report(member, record, "created", C.ReportNodeCreated(
                member_id=member.member_id, node_id=node.id, private_ip=_first(node.private_ips),
                public_ip=_first(node.public_ips)))
            return

    def ask_cleanup(self, member: KnownMember, record: EventRecord) -> None:
        """Graceful termination: the instance cleans up, then says it is ready to shut down."""
        notice = InstanceCleanupMember(member_id=member.member_id, cluster_id=member.cluster_id)
        self.appender.append("instance-notifier", member.cluster_key, envelope(
            NotifierRecord, notice, member.cluster_key, tenant=member.tenant,
            record_id=f"{record.id}.cleanup", causation_id=record.id,
            correlation_id=record.correlation_id or record.id))

    def destroy_and_report(self, member: KnownMember, record: EventRecord, reason: str) -> None:
        member.leaving = True
        if (node := self.find_node(member)) is not None:
            self.driver(member.target).destroy_node(node)
        self.report(member, record, "destroyed", C.ReportNodeDestroyed(member_id=member.member_id,
                                                                       reason=reason))

    def destroy_leftover(self, member: KnownMember) -> None:
        """A member terminated by the domain (timeout, failed start) must not keep a node."""
        if (node := self.find_node(member)) is not None:
            self.driver(member.target).destroy_node(node)

    def report(self, member: KnownMember, cause: EventRecord | None, suffix: str, command: BaseModel) -> None:
        record_id = f"{cause.id}.{suffix}" if cause else f"{member.member_id}.{suffix}"
        self.appender.append("commands", member.cluster_key, envelope(
            CommandRecord, command, member.cluster_key, tenant=member.tenant, record_id=record_id,
            causation_id=cause.id if cause else None,
            correlation_id=(cause.correlation_id or cause.id) if cause else None))

    # --- reconciliation -----------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        while not self.stopping.wait(self.settings.cloud_reconcile_seconds):
            try:
                self.reconcile()
            except Exception:
                log.exception("reconciliation failed; trying again in %.0fs",
                              self.settings.cloud_reconcile_seconds)

    def reconcile(self) -> list[str]:
        """Report members whose node is gone from the IaaS; returns their ids."""
        by_account: dict[tuple, list[KnownMember]] = {}
        for member in self.book.with_nodes():
            by_account.setdefault(member.target.driver_key, []).append(member)
        vanished = []
        for members in by_account.values():
            names = {n.name for n in self.driver(members[0].target).list_nodes()
                     if n.state != NodeState.TERMINATED}
            for member in members:
                if node_name(member.target, member.member_id) not in names and not member.leaving:
                    member.leaving = True
                    self.report(member, None, "vanished", C.ReportNodeDestroyed(
                        member_id=member.member_id, reason="node vanished"))
                    vanished.append(member.member_id)
        if vanished:
            log.warning("nodes vanished: %s", ", ".join(vanished))
        return vanished
