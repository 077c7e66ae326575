"""The embedded broker: Apache Kafka in KRaft mode (combined broker and controller), on loopback.

`make install` copies a pinned Kafka and its dependencies from Maven Central into
`.venv/kafka/libs` (`infra/broker/pom.xml`); this module formats the storage on first start and
runs one `kafka.Kafka` JVM per node. Data lives on disk (`data_dir`), so a restart finds the log
where it was. `brokers=3` gives a three-node cluster (every node a voter), the test bed for the
loss of a broker or of the active controller. Why each setting: docs/kafka.md.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KAFKA_VERSION = "4.4.0"
HERE = Path(__file__).parent
LOG4J_CONFIG = HERE / "log4j2.properties"


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """Ask a child to stop; kill it if it has not within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kafka_libs() -> Path:
    """Where `make install` put Kafka's jars: `STRATOS_KAFKA_LIBS`, else `<venv>/kafka/libs`."""
    configured = os.environ.get("STRATOS_KAFKA_LIBS")
    return Path(configured) if configured else Path(sys.prefix) / "kafka" / "libs"


def java_binary() -> str:
    """A Java 17 or newer (`JAVA_HOME` first, then PATH); BrokerError naming what is missing."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if not java:
        raise BrokerError(
            "java is not installed: the embedded Kafka needs Java 17 or newer "
            "(Debian: apt-get install -y openjdk-17-jre-headless)"
        )
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', version)
    if not match or int(match.group(1)) < 17:
        raise BrokerError(f"{java} is not Java 17 or newer ({version.splitlines()[0] if version else '?'})")
    return java


def classpath() -> str:
    libs = kafka_libs()
    if not any(libs.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise BrokerError(
            f"Kafka {KAFKA_VERSION} is not in {libs}: run `make install` (it needs Maven: apt-get install -y maven)"
        )
    return f"{libs}/*"


JVM_OPTIONS = [
    "-XX:+UseSerialGC",  # one GC thread: two cores are shared with the whole platform
    "-XX:TieredStopAtLevel=1",  # C1 only: starts in half the time, idles on less CPU
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
]


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as `random-uuid`)."""
    return base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")


def _failure_in(log_path: Path | None) -> str:
    """The lines of a Kafka log that say why it stopped (ERROR and what follows), else its tail."""
    if not log_path or not log_path.exists():
        return "(no log)"
    lines = log_path.read_text(errors="replace").splitlines()
    errors = [i for i, line in enumerate(lines) if "ERROR" in line]
    chosen = lines[errors[0] : errors[0] + 3] if errors else lines[-5:]
    return " | ".join(line.strip() for line in chosen)[:1200] + f" (log: {log_path})"


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    restarts: int = 0
    """Times `EmbeddedBroker.revive` started it again after its JVM exited."""
    revive_after: float = 0.0
    """When `revive` may start it again (monotonic): later after each restart, up to a minute."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


BROKER_PRINCIPAL = "broker"
"""The nodes' own principal (between brokers, and to the controllers): a super user."""
SECURE_MARKER = "secure"
"""A file in the data dir of a broker formatted with `--secure` (its SCRAM users are in its
metadata from the start): a data dir is started the way it was formatted."""


@dataclass(frozen=True)
class BrokerSecurity:
    """What `stratos broker --secure` runs with: every client listener is SASL_SSL with
    SCRAM-SHA-512 (plaintext is refused), the controller listener SASL_SSL with PLAIN for the
    nodes' own principal, and the StandardAuthorizer with `super_users` (nothing is allowed to
    anyone else without an ACL). `users` (name -> password) get SCRAM-SHA-512 credentials when
    the storage is formatted (`kafka-storage format --add-scram`)."""

    cert: Path
    key: Path
    broker_password: str = field(repr=False)
    users: dict[str, str] = field(repr=False)
    super_users: tuple[str, ...]

    def keystore(self, directory: Path) -> Path:
        """Kafka's PEM keystore: the key, then the certificate, in one owner-only file."""
        path = directory / "keystore.pem"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(self.key.read_text() + self.cert.read_text())
        return path

    def properties(self, node: KafkaNode) -> dict[str, str]:
        scram = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_PRINCIPAL}" password="{self.broker_password}";'
        )
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{BROKER_PRINCIPAL}" password="{self.broker_password}" '
            f'user_{BROKER_PRINCIPAL}="{self.broker_password}";'
        )
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{node.port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
            # SCRAM credentials live in the metadata log, which a controller has not read when
            # the nodes first reach it: the controller listener uses PLAIN (over TLS) instead
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": plain,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore(node.directory)),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.cert),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": ";".join(f"User:{name}" for name in (BROKER_PRINCIPAL, *self.super_users)),
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_arguments(self) -> list[str]:
        users = {BROKER_PRINCIPAL: self.broker_password, **self.users}
        return [
            argument
            for name, password in users.items()
            for argument in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]

    def client_options(self) -> dict[str, Any]:
        """kafka-python options of the nodes' own principal (the readiness checks)."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": BROKER_PRINCIPAL,
            "sasl_plain_password": self.broker_password,
            "ssl_cafile": str(self.cert),
        }


class EmbeddedBroker:
    """Apache Kafka on 127.0.0.1, one JVM per node; a context manager that stops it on exit.

    `data_dir` keeps the log across starts (None: a temporary directory removed at stop).
    `overrides` are extra broker settings (tests that need the log cleaner at work);
    `security` makes every listener authenticate over TLS (`stratos broker --secure`)."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        brokers: int = 1,
        log_path: Path | None = None,
        heap_mb: int | None = None,
        overrides: dict[str, str] | None = None,
        security: BrokerSecurity | None = None,
    ) -> None:
        if brokers < 1:
            raise BrokerError("--brokers must be 1 or more")
        self.security = security
        self._temporary = data_dir is None
        self._lock = None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="stratos-kafka-"))
        self.log_path = log_path
        self.heap_mb = heap_mb or (512 if brokers == 1 else 320)
        self.overrides = overrides or {}
        ports = self._ports(port, brokers)
        self.nodes = [KafkaNode(i + 1, *ports[i], self.data_dir / f"node-{i + 1}") for i in range(brokers)]

    def _ports(self, port: int | None, brokers: int) -> list[tuple[int, int]]:
        """(client, controller) port of each node: those of the last start on this data dir
        when they are free (members and clients started then still know the address), else new."""
        saved = self.data_dir / "ports.json"
        ports: list[tuple[int, int]] = []
        if saved.exists():
            known = [tuple(pair) for pair in json.loads(saved.read_text())]
            if (
                len(known) == brokers
                and (port is None or known[0][0] == port)
                and not any(port_is_open("127.0.0.1", p) for pair in known for p in pair)
            ):
                ports = known
        return ports or [(port or free_port() if i == 0 else free_port(), free_port()) for i in range(brokers)]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    # --- configuration --------------------------------------------------------------------
    def properties(self, node: KafkaNode) -> dict[str, str]:
        """The server.properties of one node (docs/kafka.md says why each is set)."""
        count = len(self.nodes)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas, min_isr = str(min(count, 3)), str(min(count, 2))
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            # the platform creates its topics with explicit settings (infra.log.kafka.ensure_topics)
            "auto.create.topics.enable": "false",
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            # internal topics: replicated on up to three nodes, few partitions on a small machine
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # groups form at once (the platform's parts join one by one anyway)
            "group.initial.rebalance.delay.ms": "0",
            # two cores: fewer threads than the defaults (3 network, 8 I/O, 10 background)
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.replica.fetchers": "1",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(16 << 20),
            # the active controller appends a no-op to the metadata log every 500 ms by default:
            # a third of an idle broker's CPU here
            "metadata.max.idle.interval.ms": "5000",
            # a dead node is fenced after 4 s without heartbeats (default 9 s): writes with
            # acks=all stall that long when a broker of three dies
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
            **(self.security.properties(node) if self.security else {}),
            **self.overrides,
        }

    def _write_config(self, node: KafkaNode) -> Path:
        node.directory.mkdir(parents=True, exist_ok=True)
        path = node.directory / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties(node).items()))
        return path

    def _format(self, java: str, cp: str) -> None:
        """Format the nodes that have no storage yet (first start only), side by side."""
        id_file = self.data_dir / "cluster.id"
        if not id_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(new_cluster_id())
        cluster_id = id_file.read_text().strip()
        formatting = []
        for node in self.nodes:
            config = self._write_config(node)
            if (node.directory / "data" / "meta.properties").exists():
                continue
            formatting.append(
                (
                    node,
                    subprocess.Popen(
                        [
                            java,
                            *JVM_OPTIONS,
                            "-Xmx256m",
                            "-cp",
                            cp,
                            "kafka.tools.StorageTool",
                            "format",
                            f"--cluster-id={cluster_id}",
                            "-c",
                            str(config),
                            *(self.security.format_arguments() if self.security else []),
                        ],  # an id may start with '-'
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    ),
                )
            )
        for node, process in formatting:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                output = output.replace(self.security.broker_password, "********") if self.security else output
                raise BrokerError(f"formatting Kafka storage of node {node.node_id} failed: {output.strip()[-800:]}")
        if formatting and self.security:
            (self.data_dir / SECURE_MARKER).write_text("formatted with SASL_SSL and SCRAM users\n")

    def _check_secure_marker(self) -> None:
        """A data dir runs the way it was formatted: its SCRAM users exist only if it was."""
        formatted = any((n.directory / "data" / "meta.properties").exists() for n in self.nodes)
        marked = (self.data_dir / SECURE_MARKER).exists()
        if formatted and marked != bool(self.security):
            raise BrokerError(
                f"{self.data_dir} was formatted {'with' if marked else 'without'} --secure: "
                f"start it {'with' if marked else 'without'} --secure, or use another --data"
            )

    # --- life -----------------------------------------------------------------------------
    def _lock_data_dir(self) -> None:
        """Hold `<data_dir>/.stratos-lock` while running: a second Kafka on the same data would
        join the running one's KRaft quorum from the same files before failing on its log lock."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.data_dir / ".stratos-lock", "a+")  # type: ignore[assignment]  # noqa: SIM115 - held (locked) while running
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
        except BlockingIOError:
            self._lock.seek(0)  # type: ignore[attr-defined]
            holder = self._lock.read().strip() or "?"  # type: ignore[attr-defined]
            self._lock.close()  # type: ignore[attr-defined]
            self._lock = None
            raise BrokerError(
                f"{self.data_dir} is in use by another embedded Kafka (pid {holder}): "
                "stop it first, or give another --data / --state-dir"
            ) from None
        self._lock.seek(0)  # type: ignore[attr-defined]
        self._lock.truncate()  # type: ignore[attr-defined]
        self._lock.write(str(os.getpid()))  # type: ignore[attr-defined]
        self._lock.flush()  # type: ignore[attr-defined]

    def start(self, timeout: float = 90.0) -> EmbeddedBroker:
        self._check_secure_marker()
        self._lock_data_dir()
        for node in self.nodes:
            if port_is_open("127.0.0.1", node.port):
                self.stop()
                raise BrokerError(f"port {node.port} on 127.0.0.1 is already taken")
        (self.data_dir / "ports.json").write_text(json.dumps([(n.port, n.controller_port) for n in self.nodes]))
        java, cp = java_binary(), classpath()
        self._format(java, cp)
        for node in self.nodes:
            self._launch(node, java, cp)
        self.wait_ready(timeout)
        return self

    def _launch(self, node: KafkaNode, java: str | None = None, cp: str | None = None) -> None:
        java, cp = java or java_binary(), cp or classpath()
        config = self._write_config(node)  # ports may differ from the last start
        node.log_path = (
            self.log_path
            if len(self.nodes) == 1 and self.log_path
            else (
                self.log_path.with_name(f"{self.log_path.stem}-{node.node_id}{self.log_path.suffix}")
                if self.log_path
                else node.directory / "kafka.log"
            )
        )
        node.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap_mb}m",
                    f"-Xms{min(self.heap_mb, 128)}m",
                    *JVM_OPTIONS,
                    "-cp",
                    cp,
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # Ctrl-C stops the platform's parts first, then the broker

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every running node's listener answers and the cluster metadata names them all."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is None:
                continue
            while not port_is_open("127.0.0.1", node.port):
                if (code := node.process.poll()) is not None:
                    self.stop()
                    raise BrokerError(
                        f"Kafka node {node.node_id} exited at start with code {code}: {_failure_in(node.log_path)}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(f"Kafka did not answer on {node.address} in {timeout:.0f}s")
                time.sleep(0.05)
        self._await_brokers(sum(n.running for n in self.nodes), deadline)

    def _ask_running_nodes(self, question: Callable[[Any], Any]) -> Any:
        """`question(admin)` on an admin client of the running nodes, closed afterwards."""
        from kafka import KafkaAdminClient

        running = ",".join(n.address for n in self.nodes if n.running)
        admin = KafkaAdminClient(
            bootstrap_servers=running,
            client_id="stratos-broker-check",
            request_timeout_ms=5000,
            **(self.security.client_options() if self.security else {}),
        )
        try:
            return question(admin)
        finally:
            admin.close()

    def _await_brokers(self, count: int, deadline: float) -> None:
        while True:
            try:
                brokers = self._ask_running_nodes(lambda admin: admin.describe_cluster()["brokers"])
                if sum(not b.get("is_fenced", False) for b in brokers) >= count:
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet: try again until the deadline
                if time.monotonic() > deadline:
                    raise BrokerError(f"Kafka's cluster did not form: {exc}") from exc
            if time.monotonic() > deadline:
                raise BrokerError(f"Kafka's cluster did not register {count} brokers in time")
            time.sleep(0.2)

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Signal one node (kill -9 by default), for fault-injection tests and benchmarks."""
        node = self.nodes[node_id - 1]
        if node.process and node.process.poll() is None:
            node.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                node.process.wait(60)

    def restart(self, node_id: int, timeout: float = 90.0) -> None:
        """Start one node again (after `kill`), on its data, and wait until it is back."""
        node = self.nodes[node_id - 1]
        if node.running:
            return
        self._launch(node)
        self.wait_ready(timeout)

    def revive(self) -> list[str]:
        """Start again, on its data, each node whose JVM exited by itself (its OutOfMemoryError
        ends it: -XX:+ExitOnOutOfMemoryError; a kill): a long-running `stratos broker` or `stratos
        up` outlives it instead of serving nothing. A node that keeps exiting is started again
        after 2, 4, 8 ... up to 60 s, never in a tight loop. Called from the loop that waits for
        Ctrl-C, which also calls `stop` (a node stopped there is not started again). Returns one
        line per node started, for the caller to print."""
        started = []
        for node in self.nodes:
            if node.process is None or node.process.poll() is None or time.monotonic() < node.revive_after:
                continue
            code, why = node.process.returncode, _failure_in(node.log_path)
            node.restarts += 1
            node.revive_after = time.monotonic() + min(60.0, 2.0 ** min(node.restarts, 6))
            self._launch(node)
            started.append(
                f"Kafka node {node.node_id} exited with code {code}; started again on its data "
                f"(restart #{node.restarts}): {why}"
            )
        return started

    def active_controller(self) -> int | None:
        """The node that leads the KRaft quorum (DescribeQuorum), or None when none answers."""
        from kafka.errors import KafkaError

        if not any(n.running for n in self.nodes):
            return None
        try:
            quorum = self._ask_running_nodes(lambda admin: admin.describe_metadata_quorum())
        except KafkaError:  # a node just killed is still in the metadata until it is fenced
            return None
        leader = quorum["topics"][0]["partitions"][0]["leader_id"]
        return leader if leader >= 0 else None

    def stop(self) -> None:
        for node in self.nodes:
            if node.process and node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            if node.process:
                try:
                    node.process.wait(30)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
            node.process = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._temporary:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
