"""The mock IaaS's simulated mode: every mock node plays the cartridge agent (docs/operators/cloud.md).

It follows the member's own events, so it never says more than the lifecycle allows: Started
once the member is Initialized, Activated once it is Starting, MaintenanceMode on
InstanceCleanupMember, ReadyToShutdown once it is In_Maintenance. Active nodes publish health
from their cartridge's pattern every `health_publish_seconds`. A destroyed (crashed) node says
nothing more. It lives with the mock IaaS (`stratos mock-iaas`), whose nodes keep their agent's
last word across restarts, so an Active node goes on publishing health at once. Events are read
as history from the start, and each node says only what moves it forward (`agent_answer` with
its last word), so a node that was half-way through starting when the mock IaaS stopped carries
on after it starts again, and no word is said twice. Cleanup notices are read from where it
starts (an old cluster-wide cleanup must not reach a redeployed cluster's new nodes). A record
that does not decode, or whose handling raises, is dead-lettered.

Each simulated instance also writes the log lines its agent would (started, artifacts checked
out, activated, cleanup, ready to shut down) to `<prefix>logs`, through the same shipper.
"""

from __future__ import annotations

import logging
import threading
import time

from actors.iaas_plan import agent_answer, cleanup_answer
from infra.auth.signing import Signer
from infra.cloud.mock.cloud import MockCloud, MockInstance
from infra.log.eventlog import History, history_events
from infra.log.kafka import (
    IDLE_POLL_MS,
    Appender,
    DeadLetters,
    envelope,
    poll_through_broker_loss,
    topic_kind_of,
    topics_consumer,
    validated,
)
from infra.log.recovery import fence_before
from infra.observe.line_shipper import LogShipper, LogSource
from infra.settings import Settings
from schemas.ids import aggregate_id
from schemas.records import HealthRecord, InstanceStatusRecord
from schemas.status import HealthStat, InstanceCleanupCluster, InstanceCleanupMember, InstanceStatus

log = logging.getLogger(__name__)

AGENT_LINES = {
    "InstanceStarted": [
        ("INFO", "cartridge agent started: member {member} of cluster {cluster}"),
        ("INFO", "published InstanceStarted"),
    ],
    "InstanceActivated": [("INFO", "ports {ports} open"), ("INFO", "published InstanceActivated")],
    "InstanceMaintenanceMode": [
        ("INFO", "cleanup requested: entering maintenance mode"),
        ("INFO", "published InstanceMaintenanceMode"),
        ("INFO", "running the clean hook"),
    ],
    "InstanceReadyToShutdown": [("INFO", "clean hook done"), ("INFO", "published InstanceReadyToShutdown")],
}
"""What a simulated instance's agent writes when it says each status."""


def cluster_aggregate(instance: MockInstance) -> str:
    return aggregate_id(instance.metadata["tenant"], "cluster", instance.metadata["clusterId"])


class SimulatedAgents:
    """Runs on two threads: one follows events and the notifier, one publishes health."""

    def __init__(self, settings: Settings, cloud: MockCloud) -> None:
        self.settings = settings
        self.cloud = cloud
        self.appender = Appender(settings, source="mock-iaas")
        self.dead_letters = DeadLetters(self.appender)
        self.shipper = LogShipper(settings)
        self.history = History.of(settings, lambda partition, offset: fence_before(settings, partition, offset))
        self.stopping = threading.Event()
        self.consumer = topics_consumer(settings, {"events": True, "instance-notifier": False})
        self.threads = [
            threading.Thread(target=self._follow, name="mock-agents", daemon=True),
            threading.Thread(target=self._publish_health, name="mock-health", daemon=True),
        ]

    def start(self) -> SimulatedAgents:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)
        self.consumer.close()
        self.shipper.close()
        self.appender.close()

    # --- lifecycle ----------------------------------------------------------------------------
    def _follow(self) -> None:
        while not self.stopping.is_set():
            for tp, raws in poll_through_broker_loss(self.consumer, IDLE_POLL_MS).items():
                for record, source in self._records(topic_kind_of(self.settings, tp.topic), raws):
                    try:
                        self.on_record(record)
                    except Exception as exc:  # noqa: BLE001 - one record must not stop the agents
                        self.dead_letters.handling_failed(source, record, exc)
            self.appender.flush()

    def _records(self, kind: str, raws):
        if kind == "events":
            return history_events(self.history, raws, self.dead_letters)
        return ((d.record, d) for d in validated(self.settings, kind, raws, self.dead_letters))

    def on_record(self, record) -> None:
        """React as an agent would; what it says names the record it answers (`why` follows)."""
        payload = record.payload
        if agent_answer(payload) is not None:
            instance = self.cloud.get(payload.member_id)
            if instance is not None and (answer := agent_answer(payload, instance.agent_status)):
                self._say(instance, *answer, cause=record.id)
        elif isinstance(payload, InstanceCleanupMember):
            instance = self.cloud.get(payload.member_id)
            if instance is not None and (answer := cleanup_answer(instance.agent_status)):
                self._say(instance, *answer, cause=record.id)
        elif isinstance(payload, InstanceCleanupCluster):
            for instance in self.cloud.all():
                if instance.metadata.get("clusterId") == payload.cluster_id and (
                    answer := cleanup_answer(instance.agent_status)
                ):
                    self._say(instance, *answer, cause=record.id)

    def lines(self, instance: MockInstance, status_type: str) -> None:
        meta = instance.metadata
        source = LogSource(instance.node_id, meta["clusterId"], meta.get("applicationId", ""), meta["tenant"])
        say = [*AGENT_LINES[status_type]]
        if status_type == "InstanceStarted" and meta.get("repoUrl"):
            say += [("INFO", f"git clone {meta['repoUrl']}"), ("INFO", "artifacts checked out")]
        for level, text in say:
            self.shipper.emit(
                source,
                level,
                text.format(member=instance.node_id, cluster=meta["clusterId"], ports=meta.get("ports") or "none"),
                "agent",
            )

    def _say(self, instance: MockInstance, status_type: str, agent_status: str, cause: str | None = None) -> None:
        self.lines(instance, status_type)
        self.cloud.set_agent_status(instance, agent_status)
        status = InstanceStatus(
            type=status_type,
            member_id=instance.node_id,
            cluster_id=instance.metadata["clusterId"],
            network_partition_id=instance.metadata.get("networkPartitionId"),
        )
        key = cluster_aggregate(instance)
        self.appender.send(
            "instance-status",
            key,
            envelope(InstanceStatusRecord, status, key, tenant=instance.metadata["tenant"], causation_id=cause),
            signer=Signer.for_instance(instance.metadata),
        )

    # --- health -------------------------------------------------------------------------------
    def _publish_health(self) -> None:
        while not self.stopping.wait(self.settings.health_publish_seconds):
            self.publish_health_once()

    def publish_health_once(self) -> int:
        """One round of samples from every active node; returns how many were sent."""
        now, sent, clusters_done = time.time(), 0, set()
        for instance in self.cloud.all():
            if instance.agent_status != "Activated":
                continue
            values = self.cloud.patterns.values(instance.metadata.get("cartridgeType", ""))
            cluster = instance.metadata["clusterId"]
            for metric, value in values.items():
                per_cluster = metric == "requests_in_flight"
                if per_cluster and cluster in clusters_done:
                    continue
                stat = HealthStat(
                    cluster_id=cluster,
                    network_partition_id=instance.metadata.get("networkPartitionId") or "default",
                    member_id=None if per_cluster else instance.node_id,
                    metric=metric,
                    value=value,
                    timestamp=now,
                )
                key = cluster_aggregate(instance)
                self.appender.send(
                    "health",
                    key,
                    envelope(HealthRecord, stat, key, tenant=instance.metadata["tenant"]),
                    signer=None if per_cluster else Signer.for_instance(instance.metadata),
                )
                sent += 1
            clusters_done.add(cluster)
        self.appender.flush()
        return sent
