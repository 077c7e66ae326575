"""`stratos cloud`: the cloud controller, the one place that starts and stops IaaS nodes.

It follows `stratos.events` in the consumer group "<prefix>cloud" and turns member events into
libcloud calls; what happened comes back to the cluster aggregate as commands (ReportNodeCreated,
ReportNodeStartFailed, ReportNodeDestroyed) with ids derived from the event, so a redelivered
event yields duplicates the aggregate ignores. The member id is the node's name: before creating
a node it looks one up by that name, so a replay or a crash between "created" and "reported"
never starts a second node.

IaaS calls run on worker lanes (one thread each; a member always goes to the same lane, so its
calls keep their order) while the consumer keeps polling; a record's offset is committed only
once its work is done. No record stops it: one that does not decode, or whose handling raises,
is dead-lettered with the reason; work that could not reach the broker is read again. The
members it knows are folded, from the whole log on start, by the cluster aggregate's own
`apply` (the one fold of member status), so that a reconciler can list the nodes periodically
and report a member whose node vanished, and the min rule replaces it.
"""

from __future__ import annotations

import functools
import logging
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState
from pydantic import BaseModel

from actors.history import events_of
from actors.iaas_plan import CLEANUP, DESTROY, DESTROY_LEFTOVER, START, iaas_work, node_expected
from actors.member import MemberState
from actors.runtime import Tracked
from infra.api.metadata_token import MemberTokens
from infra.auth.secrets import SecretBox, SecretError, secret_box
from infra.auth.signing import Unauthenticated, member_credentials, platform_secret
from infra.broker.acls import instance_credentials
from infra.cloud.iaas.mock_driver import MockEndpoint
from infra.cloud.iaas.providers import IaasConfigError, IaasTarget, build_driver, create_options, node_name
from infra.cloud.mock.account import mock_endpoint
from infra.log.eventlog import History
from infra.log.kafka import (
    IDLE_POLL_MS,
    Appender,
    DeadLetters,
    assigned_consumer,
    decode_key,
    encode,
    envelope,
    group_consumer,
    poll_through_broker_loss,
    rejection_reason,
)
from infra.log.projection import Projection, states_of, tracked_of
from infra.log.recovery import fence_before
from infra.settings import Settings
from schemas import commands as C
from schemas import events as E
from schemas.ids import parse_aggregate_id
from schemas.records import CommandRecord, EventRecord, LogRecord, NotifierRecord
from schemas.status import InstanceCleanupMember

log = logging.getLogger(__name__)
CLOUD_GROUP = "cloud"


@dataclass(frozen=True)
class Spawn:
    """What a member's MemberSpawnRequested says that its cluster's state does not keep: where
    and how its node is started. Its status is the cluster fold's alone."""

    member_id: str
    cluster_id: str
    cluster_key: str
    tenant: str
    target: IaasTarget
    metadata: dict[str, str]


class MemberBook:
    """The controller's read model: cluster states folded by the cluster aggregate's own
    `apply`, and each member's spawn request."""

    def __init__(
        self,
        box: SecretBox,
        payload: dict[str, str] | None = None,
        tokens: MemberTokens | None = None,
        signing_secret: bytes | None = None,
        kafka_credentials: Callable[[str], tuple[str, str]] | None = None,
    ) -> None:
        self.payload = payload or {}
        """Payload parameters every member gets (the metadata service's URL...)."""
        self.tokens = tokens
        self.signing_secret = signing_secret
        """The platform secret, from which each member's signing key is derived (`infra.auth.signing`)."""
        self.kafka_credentials = kafka_credentials
        """On a secure broker: a tenant -> its instance principal and password (`infra.broker.acls`)."""
        self.lock = threading.Lock()
        self.clusters: dict[str, Tracked] = {}
        self.spawns: dict[str, Spawn] = {}
        self.requests: dict[str, tuple[E.MemberSpawnRequested, str, str]] = {}
        """member id -> its spawn request, tenant and cluster key: what a checkpoint keeps of a
        spawn (its payload, with keys and tokens, is derived again on restore, never stored)."""
        self.box = box

    def fold(self, commit: LogRecord) -> None:
        with self.lock:
            tracked = self.clusters.get(commit.aggregate_id) or Tracked.new(commit.aggregate_id)
            problem = tracked.fold_commit(commit)
            self.clusters[commit.aggregate_id] = tracked
            spec = getattr(tracked.state, "spec", None)
            for e in commit.payload.events:  # type: ignore[union-attr]
                if isinstance(e, E.MemberSpawnRequested) and e.member_id not in self.spawns:
                    self.spawns[e.member_id] = self._spawn(e, commit.tenant, commit.aggregate_id, spec)
                    self.requests[e.member_id] = (e, commit.tenant, commit.aggregate_id)
        if problem:
            log.debug("cloud read model: %s", problem)

    def checkpoint_state(self) -> dict:
        """The clusters, and the spawn requests of the members they still have."""
        with self.lock:
            return {
                "clusters": states_of(self.clusters),
                "spawns": [
                    {"event": event.model_dump(mode="json"), "tenant": tenant, "cluster": key}
                    for member_id, (event, tenant, key) in self.requests.items()
                    if member_id in getattr(self.clusters[key].state, "members", {})
                ],
            }

    def restore(self, state: dict) -> None:
        with self.lock:
            self.clusters = tracked_of(state["clusters"])
            for request in state["spawns"]:
                event = E.MemberSpawnRequested.model_validate(request["event"])
                tenant, key = request["tenant"], request["cluster"]
                spec = getattr(self.clusters[key].state, "spec", None)
                self.spawns[event.member_id] = self._spawn(event, tenant, key, spec)
                self.requests[event.member_id] = (event, tenant, key)

    def _spawn(self, event: E.MemberSpawnRequested, tenant: str, cluster_key: str, spec) -> Spawn:
        """The member event names its cluster; the account's secrets (sealed) come from the
        cluster's spec, and the payload gets the cluster's cartridge key, never the platform's."""
        iaas = _with_secrets(event.iaas, spec.iaas.get(event.provider) if spec is not None else None)
        metadata = _metadata(event, tenant)
        metadata["cartridgeKey"] = self.box.cartridge_key(cluster_key)
        if self.signing_secret is not None:  # its status and health are signed with it: a key of its own
            kafka = self.kafka_credentials(tenant) if self.kafka_credentials else None
            metadata.update(member_credentials(self.signing_secret, tenant, event.cluster_id, event.member_id, kafka))
        metadata.update(self._member_payload(event, tenant))
        if spec is not None:
            if spec.log_file_paths:
                metadata["logFilePaths"] = ",".join(spec.log_file_paths)
            if spec.repo_username:
                metadata["repoUsername"] = spec.repo_username
            if spec.repo_password:
                try:
                    metadata["repoPassword"] = self.box.for_instances(spec.repo_password, cluster_key) or ""
                except SecretError as exc:  # the member still starts; its checkout will say it cannot log in
                    log.error("member %s: repository password not passed on: %s", event.member_id, exc)
        return Spawn(
            member_id=event.member_id,
            cluster_id=event.cluster_id,
            cluster_key=cluster_key,
            tenant=tenant,
            target=IaasTarget.from_event(event.provider, iaas),
            metadata=metadata,
        )

    def _member_payload(self, event: E.MemberSpawnRequested, tenant: str) -> dict[str, str]:
        """Stratos's payload parameters for the cartridge agent's metadata client (mdsclient)."""
        payload = {
            **self.payload,
            "APPLICATION_ID": event.application_id,
            "CARTRIDGE_ALIAS": event.member_id.rpartition(".")[0] or event.cluster_id,
        }
        if self.tokens is not None:
            payload["TOKEN"] = self.tokens.token(tenant, event.application_id, event.member_id)
        return payload

    def spawn(self, member_id: str | None) -> Spawn | None:
        with self.lock:
            return self.spawns.get(member_id or "")

    def state(self, spawn: Spawn) -> MemberState | None:
        """The member as its cluster has it; None once it is terminated."""
        with self.lock:
            return self.clusters[spawn.cluster_key].state.members.get(spawn.member_id)  # type: ignore[attr-defined]

    def with_nodes(self) -> list[Spawn]:
        """Members in service that have a node: the ones whose node must still exist."""
        with self.lock:
            return [
                self.spawns[m.member_id]
                for tracked in self.clusters.values()
                for m in tracked.state.members.values()  # type: ignore[attr-defined]
                if node_expected(m)
            ]


def _with_secrets(member_iaas: dict, cluster_iaas: dict | None) -> dict:
    """The member's IaaS entry (its partition's properties applied, secrets left out) with the
    secrets put back, still sealed, from its cluster's definition."""
    if not cluster_iaas:
        return member_iaas
    secret_properties = {p.get("name"): p for p in cluster_iaas.get("property") or [] if "value" in p}
    properties = [
        p if "value" in p else secret_properties.get(p.get("name"), p) for p in member_iaas.get("property") or []
    ]
    return {**cluster_iaas, **member_iaas, "property": properties or cluster_iaas.get("property") or []}


def _metadata(event: E.MemberSpawnRequested, tenant: str) -> dict[str, str]:
    """Tags on the node: who it is for (the mock IaaS's agents read them too)."""
    tags = {
        "memberId": event.member_id,
        "clusterId": event.cluster_id,
        "tenant": tenant,
        "applicationId": event.application_id,
        "cartridgeType": event.cartridge_type,
        "category": event.category or "",
        "networkPartitionId": event.network_partition_id,
        "partitionId": event.partition_id,
        "ports": ",".join(f"{p.get('protocol', '')}:{p.get('port', '')}" for p in event.ports),
    }
    if event.repo_url:
        tags["repoUrl"] = event.repo_url
    return tags


def _local_ports(node: Node) -> dict[str, int]:
    """Ports a node listens on that are not its cartridge's (the mock IaaS's process mode)."""
    ports = (node.extra or {}).get("localPorts") or {}
    return {str(k): int(v) for k, v in ports.items()} if isinstance(ports, dict) else {}


def _first(addresses: list[str]) -> str | None:
    return addresses[0] if addresses else None


def _finished(future: Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _failed(future: Future) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


def _failure(exc: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(exc)
    return future


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, controller: CloudController, consumer) -> None:
        self.controller, self.consumer = controller, consumer

    def on_partitions_revoked(self, revoked):
        self.controller.release(self.consumer, revoked)

    def on_partitions_assigned(self, assigned):
        """Fences are learnt lazily, at the first record read of each partition."""


Work = tuple[int, list[Future]]
"""One record read: its offset and the futures of the work it asked for."""


class CloudController:
    def __init__(self, settings: Settings, mock: MockEndpoint | None = None) -> None:
        self.settings = settings
        self.mock = mock or mock_endpoint(settings)
        self.box = secret_box(settings)
        self.book = MemberBook(
            self.box,
            {"METADATA_SERVICE_URL": settings.metadata_url},
            MemberTokens.in_state_dir(settings.state_dir),
            platform_secret(settings),
            None
            if settings.kafka_security_protocol == "PLAINTEXT"
            else functools.partial(instance_credentials, settings),
        )
        self.history = History.of(settings, lambda partition, offset: fence_before(settings, partition, offset))
        self.projection = Projection(settings, self)
        self.appender = Appender(settings, source="cloud")
        self.dead_letters = DeadLetters(self.appender)
        self.lanes = [
            ThreadPoolExecutor(1, thread_name_prefix=f"cloud-lane-{n}") for n in range(settings.cloud_workers)
        ]
        self.folded_until: dict[int, int] = {}
        """Per events partition, the offset after the last commit folded into the book."""
        self.in_flight: dict[TopicPartition, deque[Work]] = {}
        self.local = threading.local()
        self.stopping = threading.Event()
        self.ready = threading.Event()

    # --- the loop -----------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Fold every commit so far into the read model (the log is the only state), from its
        own checkpoint on (`infra.log.projection`), and checkpoint where it ends: the next start
        folds only what was written after this one's rebuild."""
        consumer = assigned_consumer(self.settings, "events")
        try:
            if self.projection.restore() is not None:
                self.projection.seek(consumer)
            self.projection.catch_up(consumer, self.appender, self.stopping.is_set)
        finally:
            consumer.close()
        self.folded_until = dict(self.projection.positions)

    # --- the read side of the runner (infra.log.projection) ----------------------------------
    name = "cloud-controller"
    format_version = "1"

    def fold(self, commit: LogRecord, raw) -> None:
        try:
            if _is_cluster(commit):
                self.book.fold(commit)
        except Exception as exc:  # noqa: BLE001 - the group consumer dead-letters it
            log.warning("cannot fold %d@%d: %s", raw.partition, raw.offset, rejection_reason(exc))

    def checkpoint_state(self) -> dict:
        return self.book.checkpoint_state()

    def restore(self, state: dict) -> None:
        self.book.restore(state)

    def run(self) -> None:
        self.rebuild()
        consumer = group_consumer(self.settings, CLOUD_GROUP, ["events"])
        consumer.unsubscribe()
        consumer.subscribe([self.settings.topic("events")], listener=_Rebalance(self, consumer))
        reconciler = threading.Thread(target=self._reconcile_loop, name="cloud-reconciler", daemon=True)
        reconciler.start()
        try:
            while not self.stopping.is_set():
                batch = poll_through_broker_loss(consumer, IDLE_POLL_MS)
                if consumer.assignment():
                    self.ready.set()
                for tp, raws in batch.items():
                    queue = self.in_flight.setdefault(tp, deque())
                    queue.extend((raw.offset, self.take(raw)) for raw in raws)
                self._commit_done(consumer)
                self._read_failed_again(consumer)
        finally:
            for lane in self.lanes:
                lane.shutdown(wait=True, cancel_futures=True)
            self._commit_done(consumer)
            consumer.close(autocommit=False)
            reconciler.join(5)
            self.appender.close()

    def stop(self) -> None:
        self.stopping.set()

    def release(self, consumer, revoked) -> None:
        """Partitions taken away: commit what is done there, then forget them."""
        self._commit_done(consumer)
        for tp in revoked:
            self.in_flight.pop(tp, None)
        self.history.forget([tp.partition for tp in revoked])

    def _commit_done(self, consumer) -> None:
        """Commit, per partition, past the records whose work is finished (in offset order)."""
        offsets = {}
        for tp, queue in self.in_flight.items():
            done = None
            while queue and all(_finished(f) for f in queue[0][1]):
                done = queue.popleft()[0]
            if done is not None:
                offsets[tp] = OffsetAndMetadata(done + 1, "", -1)
        if offsets:
            self.appender.flush()
            try:
                consumer.commit(offsets)
            except CommitFailedError as exc:  # a rebalance: the new owner reads them again
                log.warning("offsets not committed: %s", exc)

    def _read_failed_again(self, consumer) -> None:
        """A record whose work could not reach the broker is not done: read from it again
        (its work is idempotent, and the book does not fold a commit twice)."""
        for tp, queue in self.in_flight.items():
            if queue and any(_failed(f) for f in queue[0][1]):
                offset = queue[0][0]
                log.error("events %s@%d: work failed, reading it again", tp, offset)
                queue.clear()
                self.history.forget([tp.partition])
                consumer.seek(tp, offset)

    def take(self, raw) -> list[Future]:
        """Fold one record of the events topic and queue the work its events ask for; a record
        that is not a valid log record, or whose handling raises, is dead-lettered."""
        work: list[Future] = []
        try:
            try:
                decode_key(raw.key)
                commit = self.history.commit(raw)
                if commit is not None and _is_cluster(commit):
                    self.handle(raw, commit, work)
            except KafkaError:
                raise
            except Exception as exc:  # noqa: BLE001 - a record is never allowed to stop the loop
                if not isinstance(exc, ValueError):
                    log.exception("cannot handle events %d@%d", raw.partition, raw.offset)
                if isinstance(exc, Unauthenticated):
                    return work  # dead-lettered by the history's rejections
                self.dead_letters.send(
                    raw.topic, raw.partition, raw.offset, raw.key, raw.value, rejection_reason(exc), exc
                )
        except KafkaError as exc:
            work.append(_failure(exc))
        return work

    def handle(self, raw, commit: LogRecord, work: list[Future]) -> None:
        if raw.offset >= self.folded_until.get(raw.partition, 0):
            self.book.fold(commit)
            self.folded_until[raw.partition] = raw.offset + 1
        for record in events_of(commit):
            if (future := self.dispatch(raw, record)) is not None:
                work.append(future)

    def dispatch(self, raw, record: EventRecord) -> Future | None:
        """Queue the IaaS work an event asks for, judged on its member's state after its commit."""
        event = record.payload
        spawn = self.book.spawn(getattr(event, "member_id", None))
        if spawn is None:
            return None
        plan = iaas_work(event, self.book.state(spawn))
        if plan is None:
            return None
        work = {
            START: (self.start_node, spawn, record),
            CLEANUP: (self.ask_cleanup, spawn, record),
            DESTROY: (self.destroy_and_report, spawn, record, plan.reason),
            DESTROY_LEFTOVER: (self.destroy_leftover, spawn),
        }[plan.action]
        lane = self.lanes[zlib.crc32(spawn.member_id.encode()) % len(self.lanes)]
        return lane.submit(self._guarded, raw, record, *work)

    def _guarded(self, raw, record: EventRecord, work, *args) -> None:
        """Run one piece of IaaS work; an unexpected failure dead-letters the event with why. A
        send the broker did not take fails the work: it is not done and will run again."""
        try:
            work(*args)
        except KafkaError:
            raise
        except Exception as exc:  # noqa: BLE001 - one event's failure must not stop its lane
            log.exception("cloud work for event %s failed", record.id)
            self.dead_letters.send(
                raw.topic,
                raw.partition,
                raw.offset,
                raw.key,
                encode(record),
                f"cloud work failed: {rejection_reason(exc)}",
                exc,
            )

    # --- IaaS work (on the member's lane) -------------------------------------------------------
    def driver(self, target: IaasTarget) -> NodeDriver:
        """One driver per thread and account: libcloud connections are not shared across threads."""
        cache = self.local.__dict__.setdefault("drivers", {})
        if target.driver_key not in cache:
            cache[target.driver_key] = build_driver(
                replace(  # the one place the account is opened
                    target,
                    identity=self.box.open(target.identity) or "",
                    credential=self.box.open(target.credential) or "",
                ),
                self.mock,
            )
        return cache[target.driver_key]

    def find_node(self, spawn: Spawn) -> Node | None:
        name = node_name(spawn.target, spawn.member_id)
        return next(
            (n for n in self.driver(spawn.target).list_nodes() if n.name == name and n.state != NodeState.TERMINATED),
            None,
        )

    def start_node(self, spawn: Spawn, record: EventRecord) -> None:
        attempts, delay = self.settings.cloud_start_attempts, self.settings.cloud_retry_seconds
        for attempt in range(1, attempts + 1):
            if self.book.state(spawn) is None or self.stopping.is_set():
                return
            try:
                driver = self.driver(spawn.target)
                node = self.find_node(spawn) or driver.create_node(
                    **create_options(spawn.target, driver, spawn.member_id, spawn.metadata)
                )
            except Exception as exc:  # every IaaS failure is reported on the member, with its reason
                final = attempt >= attempts or isinstance(exc, IaasConfigError)
                reason = str(getattr(exc, "value", None) or exc) or type(exc).__name__
                log.warning("member %s: start attempt %d failed: %s", spawn.member_id, attempt, reason)
                self.report(
                    spawn,
                    record,
                    f"failed.{attempt}",
                    C.ReportNodeStartFailed(member_id=spawn.member_id, reason=reason, attempt=attempt, final=final),
                )
                if final or self.stopping.wait(delay):
                    return
                delay *= 2
                continue
            self.report(
                spawn,
                record,
                "created",
                C.ReportNodeCreated(
                    member_id=spawn.member_id,
                    node_id=node.id,
                    private_ip=_first(node.private_ips),
                    public_ip=_first(node.public_ips),
                    ports=_local_ports(node),
                ),
            )
            return

    def ask_cleanup(self, spawn: Spawn, record: EventRecord) -> None:
        """Graceful termination: the instance cleans up, then says it is ready to shut down."""
        notice = InstanceCleanupMember(member_id=spawn.member_id, cluster_id=spawn.cluster_id)
        self.appender.append(
            "instance-notifier",
            spawn.cluster_key,
            envelope(
                NotifierRecord,
                notice,
                spawn.cluster_key,
                tenant=spawn.tenant,
                record_id=f"{record.id}.cleanup",
                causation_id=record.id,
                correlation_id=record.correlation_id or record.id,
            ),
        )

    def destroy_and_report(self, spawn: Spawn, record: EventRecord, reason: str) -> None:
        self.destroy_leftover(spawn)
        self.report(spawn, record, "destroyed", C.ReportNodeDestroyed(member_id=spawn.member_id, reason=reason))

    def destroy_leftover(self, spawn: Spawn) -> None:
        """A member terminated by the domain (timeout, failed start) must not keep a node."""
        if (node := self.find_node(spawn)) is not None:
            self.driver(spawn.target).destroy_node(node)

    def report(self, spawn: Spawn, cause: EventRecord | None, suffix: str, command: BaseModel) -> None:
        record_id = f"{cause.id}.{suffix}" if cause else f"{spawn.member_id}.{suffix}"
        self.appender.append(
            "commands",
            spawn.cluster_key,
            envelope(
                CommandRecord,
                command,
                spawn.cluster_key,
                tenant=spawn.tenant,
                record_id=record_id,
                causation_id=cause.id if cause else None,
                correlation_id=(cause.correlation_id or cause.id) if cause else None,
            ),
        )

    # --- reconciliation -----------------------------------------------------------------------
    def _reconcile_loop(self) -> None:
        while not self.stopping.wait(self.settings.cloud_reconcile_seconds):
            try:
                self.reconcile()
            except Exception:
                log.exception("reconciliation failed; trying again in %.0fs", self.settings.cloud_reconcile_seconds)

    def reconcile(self) -> list[str]:
        """Report members whose node is gone from the IaaS; returns their ids. A report repeated
        before its MemberTerminated is read has the same command id: the cluster ignores it."""
        by_account: dict[tuple, list[Spawn]] = {}
        for spawn in self.book.with_nodes():
            by_account.setdefault(spawn.target.driver_key, []).append(spawn)
        vanished = []
        for spawns in by_account.values():
            names = {n.name for n in self.driver(spawns[0].target).list_nodes() if n.state != NodeState.TERMINATED}
            for spawn in spawns:
                if node_name(spawn.target, spawn.member_id) not in names:
                    self.report(
                        spawn,
                        None,
                        "vanished",
                        C.ReportNodeDestroyed(member_id=spawn.member_id, reason="node vanished"),
                    )
                    vanished.append(spawn.member_id)
        if vanished:
            log.warning("nodes vanished: %s", ", ".join(vanished))
        return vanished


def _is_cluster(commit: LogRecord) -> bool:
    """Only clusters have members; raises ValueError on an aggregate id that names nothing."""
    return parse_aggregate_id(commit.aggregate_id).kind == "cluster"
