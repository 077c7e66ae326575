"""The mock IaaS's cloud: its nodes, address pools, ids ever used, injected start failures and
health patterns, kept in SQLite so that the cloud outlives any restart of the platform.

Node id = node name = member id; IPs are drawn from pools (an address is handed out again only
once no live node holds it); a destroyed id never comes back. `stratos mock-iaas` keeps the
cloud in `<state dir>/mock-iaas/cloud.sqlite3` and serves it over HTTP (infra/cloud/mock/api.py);
the libcloud `mock` driver (infra/cloud/iaas/mock_driver.py) reaches it there. `MockCloud()` without a
path keeps the same tables in memory (unit tests, the simulator's throw-away clouds).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from libcloud.common.types import LibcloudError

from infra.auth.signing import public_metadata
from infra.cloud.iaas.mock_driver import MOCK_PROVIDER, MockNodeDriver, register_mock_driver  # noqa: F401 - re-exported
from infra.cloud.mock.patterns import CartridgePatterns, HealthPatterns
from schemas.base import masked

PRIVATE_POOL = "10.11.0.0/16"
PUBLIC_POOL = "192.0.2.0/24"
"""Address pools handed out to nodes; nothing is ever sent to them (TEST-NET-1 for public)."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS used_ids (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS failures (n INTEGER PRIMARY KEY AUTOINCREMENT, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patterns (cartridge_type TEXT PRIMARY KEY, body TEXT NOT NULL, started REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (pool TEXT PRIMARY KEY, next INTEGER NOT NULL);
"""


class MockIaasError(LibcloudError):
    """A refusal of the mock cloud (ids reused, an injected failure, pools exhausted)."""

    def __init__(self, value: str, status: int = 400) -> None:
        super().__init__(value, driver=MockNodeDriver)  # type: ignore[arg-type]
        self.status = status


@dataclass
class MockInstance:
    """One node of the mock cloud and what it was started for (from `ex_metadata`)."""

    node_id: str
    private_ip: str
    public_ip: str
    metadata: dict[str, str]
    created_at: float = field(default_factory=time.time)
    agent_status: str = "Created"
    """What the simulated agent has said last (Started, Activated, MaintenanceMode, ...)."""
    local_ports: dict[str, int] = field(default_factory=dict)
    """Process mode: protocol -> loopback port the instance's server listens on."""

    @property
    def tenant(self) -> str:
        return self.metadata.get("tenant", "")

    def view(self) -> dict:
        """The JSON of an instance: Stratos's MockInstanceMetadata fields (instanceId,
        defaultPrivateIp, defaultPublicIp), ours, and the tags it was started with (flat and under
        `metadata`), its payload's secrets masked and its signing key left out."""
        return masked(
            {
                "instanceId": self.node_id,
                "defaultPrivateIp": self.private_ip,
                "defaultPublicIp": self.public_ip,
                "id": self.node_id,
                "privateIp": self.private_ip,
                "publicIp": self.public_ip,
                "createdAt": self.created_at,
                "agentStatus": self.agent_status,
                "localPorts": self.local_ports,
                **public_metadata(self.metadata),
                "metadata": public_metadata(self.metadata),
            }
        )


class MockCloud:
    """The mock IaaS's state, in SQLite (a file, or memory when `path` is None); every change is
    one transaction, so a crash leaves the cloud as it was before or after it."""

    def __init__(
        self, path: Path | None = None, private_pool: str = PRIVATE_POOL, public_pool: str = PUBLIC_POOL
    ) -> None:
        self.path = path
        if path is not None:  # owner-only: nodes carry their payload (tokens, keys) as a cloud's user data does
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, isolation_level=None)
        if path is not None:
            os.chmod(path, 0o600)
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.pools = {"private": ipaddress.ip_network(private_pool), "public": ipaddress.ip_network(public_pool)}
        self.instances: dict[str, MockInstance] = {
            row[0]: MockInstance(**json.loads(row[1])) for row in self.db.execute("SELECT id, body FROM instances")
        }
        self.patterns = HealthPatterns()
        for cartridge_type, body, started in self.db.execute("SELECT cartridge_type, body, started FROM patterns"):
            self.patterns.replace(cartridge_type, CartridgePatterns.model_validate_json(body), started=started)
        self.listeners: list[Callable[[str, MockInstance], None]] = []
        """Called with ("created" | "destroyed", instance): the process mode hooks in here."""

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # --- writes (each one transaction) ----------------------------------------------------------
    def _write(self, *statements: tuple[str, tuple]) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self.db.execute(sql, args)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @staticmethod
    def _row(instance: MockInstance) -> tuple[str, tuple]:
        return "INSERT OR REPLACE INTO instances (id, body) VALUES (?, ?)", (
            instance.node_id,
            json.dumps(asdict(instance)),
        )

    def fail_next_starts(self, count: int, reason: str) -> None:
        """The next `count` create calls fail with `reason` (quota, image missing, ...)."""
        self._write(*[("INSERT INTO failures (reason) VALUES (?)", (reason,))] * count)

    def create(self, name: str, metadata: dict[str, str]) -> MockInstance:
        with self.lock:
            failure = self.db.execute("SELECT n, reason FROM failures ORDER BY n LIMIT 1").fetchone()
            if failure is not None:
                self._write(("DELETE FROM failures WHERE n = ?", (failure[0],)))
                raise MockIaasError(failure[1], status=503)
            if self.db.execute("SELECT 1 FROM used_ids WHERE id = ?", (name,)).fetchone():
                raise MockIaasError(f"node id {name!r} was used before; ids are never reused", status=409)
            private, private_next = self._address("private")
            public, public_next = self._address("public")
            instance = MockInstance(name, private, public, {str(k): str(v) for k, v in metadata.items()})
            self._write(
                ("INSERT INTO used_ids (id) VALUES (?)", (name,)),
                self._row(instance),
                ("INSERT OR REPLACE INTO cursors (pool, next) VALUES ('private', ?)", (private_next,)),
                ("INSERT OR REPLACE INTO cursors (pool, next) VALUES ('public', ?)", (public_next,)),
            )
            self.instances[name] = instance
        self._notify("created", instance)
        return instance

    def _address(self, pool: str) -> tuple[str, int]:
        """The next address of a pool that no live node holds, and the cursor after it."""
        network = self.pools[pool]
        hosts = network.num_addresses - 2 if network.num_addresses > 2 else network.num_addresses
        row = self.db.execute("SELECT next FROM cursors WHERE pool = ?", (pool,)).fetchone()
        start = row[0] if row else 0
        taken = {getattr(i, f"{pool}_ip") for i in self.instances.values()}
        for step in range(hosts):
            index = (start + step) % hosts
            address = str(network[index + 1 if network.num_addresses > 2 else index])
            if address not in taken:
                return address, index + 1
        raise MockIaasError(f"the {pool} address pool {network} is exhausted", status=503)

    def destroy(self, node_id: str) -> bool:
        """Remove a node (a destroy, or a crash from the REST view); False if it is not there."""
        with self.lock:
            instance = self.instances.pop(node_id, None)
            if instance is None:
                return False
            self._write(("DELETE FROM instances WHERE id = ?", (node_id,)))
        self._notify("destroyed", instance)
        return True

    def save(self, instance: MockInstance) -> None:
        """Keep what changed on a live node (its agent's status, process-mode address and ports)."""
        with self.lock:
            if self.instances.get(instance.node_id) is instance:
                self._write(self._row(instance))

    def set_agent_status(self, instance: MockInstance, status: str) -> None:
        instance.agent_status = status
        self.save(instance)

    def replace_patterns(self, cartridge_type: str, patterns: CartridgePatterns) -> None:
        with self.lock:
            self.patterns.replace(cartridge_type, patterns)
            self._write(
                (
                    "INSERT OR REPLACE INTO patterns (cartridge_type, body, started) VALUES (?, ?, ?)",
                    (cartridge_type, patterns.model_dump_json(), self.patterns.started[cartridge_type]),
                )
            )

    def load_patterns(self, path: Path) -> list[str]:
        """Take the patterns of a YAML/JSON file for the cartridge types this cloud has none for
        (patterns replaced at run time survive a restart); returns the types taken."""
        taken = []
        for cartridge_type, patterns in HealthPatterns.read(path).items():
            if self.patterns.of(cartridge_type) is None:
                self.replace_patterns(cartridge_type, patterns)
                taken.append(cartridge_type)
        return taken

    # --- reads --------------------------------------------------------------------------------
    def get(self, node_id: str) -> MockInstance | None:
        with self.lock:
            return self.instances.get(node_id)

    def all(self) -> list[MockInstance]:
        with self.lock:
            return list(self.instances.values())

    def pending_failures(self) -> int:
        with self.lock:
            return self.db.execute("SELECT COUNT(*) FROM failures").fetchone()[0]

    def _notify(self, what: str, instance: MockInstance) -> None:
        for listener in list(self.listeners):
            listener(what, instance)
        if what == "created":
            self.save(instance)  # what a listener changed (process mode: address, ports)
