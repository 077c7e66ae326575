"""The mock IaaS's process mode: each node is a real local process running `stratos agent`.

A load-balancer cartridge's instance runs `stratos lb --application <its application>` (the
agent starts it, is Activated once it serves, and stops it on cleanup). Any other cartridge
with an http port gets a small HTTP server (the agent serves its checked-out
artifacts) on a free loopback port, and the node's private IP is 127.0.0.1, so a real load
balancer can route real requests to it. Destroying (or crashing) the node ends the process.
When the mock IaaS starts again, every node it kept gets its process back, on the same port
(a rebooted host): its agent finds its member Initialized and reports again (the cluster refuses
those steps back; the member stays Active).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

from actors.topology import LOAD_BALANCER
from infra.auth.tls import kafka_ca
from infra.broker import free_port, stop_process
from infra.cloud.mock.cloud import MockCloud, MockInstance
from infra.platform.child_env import minimal_env
from infra.settings import Settings

log = logging.getLogger(__name__)
HTTP_PROTOCOLS = {"http", "https"}


def stratos_command() -> list[str]:
    """The console script beside this interpreter (the venv's), else the module entry point."""
    script = Path(sys.executable).with_name("stratos")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from infra.cli.main import main; main()"]


class ProcessInstances:
    def __init__(self, settings: Settings, cloud: MockCloud) -> None:
        self.settings = settings
        self.cloud = cloud
        self.lock = threading.Lock()
        self.processes: dict[str, subprocess.Popen] = {}
        cloud.listeners.append(self.on_change)

    def start(self) -> ProcessInstances:
        """Boot the nodes the cloud kept from before (none on a fresh cloud)."""
        for instance in self.cloud.all():
            if instance.node_id not in self.processes:
                self.launch(instance)
                self.cloud.save(instance)
        return self

    def on_change(self, what: str, instance: MockInstance) -> None:
        if what == "created":
            self.launch(instance)
        elif what == "destroyed":
            self.end(instance.node_id)

    def launch(self, instance: MockInstance) -> None:
        meta = instance.metadata
        protocols = [p.partition(":")[0] for p in meta.get("ports", "").split(",") if p]
        instance.private_ip = "127.0.0.1"
        command = [
            *stratos_command(),
            "agent",
            "--member-id",
            instance.node_id,
            "--cluster-id",
            meta["clusterId"],
            "--tenant",
            meta["tenant"],
            "--network-partition-id",
            meta.get("networkPartitionId") or "default",
            "--workdir",
            str(self.settings.state_dir / "instances" / instance.node_id),
        ]
        if meta.get("category") == LOAD_BALANCER:  # a load-balancer cartridge: `stratos lb` for its application
            command += ["--load-balancer", meta["applicationId"]]
        elif HTTP_PROTOCOLS & set(protocols):
            port = instance.local_ports.get("http") or free_port()
            instance.local_ports["http"] = port
            command += ["--serve-http", str(port)]
        if meta.get("repoUrl"):
            command += ["--repo-url", meta["repoUrl"]]
        command += ["--application-id", meta.get("applicationId", "")]
        for path in filter(None, meta.get("logFilePaths", "").split(",")):
            command += ["--log-file", path]
        if meta.get("repoUsername"):
            command += ["--repo-username", meta["repoUsername"]]
        # an instance's environment: the basics and its payload, never the platform's secrets;
        # its own secrets by environment, not argv (which `ps` shows to every local user)
        env = minimal_env(
            {
                "STRATOS_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap or "",
                "STRATOS_TOPIC_PREFIX": self.settings.topic_prefix,
                "STRATOS_HEALTH_PUBLISH_SECONDS": str(self.settings.health_publish_seconds),
                **{
                    name: meta[key]
                    for name, key in (
                        ("STRATOS_AGENT_CARTRIDGE_KEY", "cartridgeKey"),
                        ("STRATOS_AGENT_REPO_PASSWORD", "repoPassword"),
                        ("STRATOS_AGENT_SIGNING_KEY", "signingKey"),
                    )
                    if meta.get(key)
                },
                **self._kafka_env(meta),
            }
        )
        log_path = self.settings.state_dir / "instances" / f"{instance.node_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, open(log_path, "ab") as output:
            self.processes[instance.node_id] = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        log.info("instance %s started as process %d", instance.node_id, self.processes[instance.node_id].pid)

    def _kafka_env(self, meta: dict[str, str]) -> dict[str, str]:
        """On a secure broker: the instance principal and password of the member's tenant that the
        cloud controller put in its payload (`infra.broker.acls`), and how to reach the broker."""
        if self.settings.kafka_security_protocol == "PLAINTEXT" or not meta.get("kafkaPassword"):
            return {}
        ca = kafka_ca(self.settings)
        return {
            "STRATOS_KAFKA_SECURITY_PROTOCOL": self.settings.kafka_security_protocol,
            "STRATOS_KAFKA_SASL_MECHANISM": self.settings.kafka_sasl_mechanism,
            "STRATOS_KAFKA_USERNAME": meta["kafkaUsername"],
            "STRATOS_KAFKA_PASSWORD": meta["kafkaPassword"],
            **({"STRATOS_KAFKA_CA": str(Path(ca).absolute())} if ca else {}),
        }

    def end(self, node_id: str) -> None:
        with self.lock:
            process = self.processes.pop(node_id, None)
        if process is not None:
            stop_process(process, 10)

    def stop(self) -> None:
        self.cloud.listeners.remove(self.on_change)
        for node_id in list(self.processes):
            self.end(node_id)
