"""The mock IaaS: a real libcloud `NodeDriver` over an in-process cloud of fake nodes.

libcloud's own `dummy` driver reuses ids after a destroy, so the platform has its own: node id =
node name = member id, IPs drawn from pools, a destroyed id never comes back. The cloud's state
lives in `MockCloud` objects named by the driver's `key`, so every driver instance built with
the same key (the cloud controller's, the REST view's, a test's) sees the same nodes.
"""
from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from libcloud.common.types import LibcloudError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver, set_driver
from libcloud.compute.types import NodeState

from infra.auth.signing import public_metadata
from infra.iaas.patterns import HealthPatterns
from schemas.base import masked

MOCK_PROVIDER = "mock"
PRIVATE_POOL = "10.11.0.0/16"
PUBLIC_POOL = "192.0.2.0/24"
"""Address pools handed out to nodes; nothing is ever sent to them (TEST-NET-1 for public)."""


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

    def view(self) -> dict:
        """The instance as the mock IaaS's API shows it: its payload's secrets masked."""
        return masked({"id": self.node_id, "privateIp": self.private_ip, "publicIp": self.public_ip,
                       "createdAt": self.created_at, "agentStatus": self.agent_status,
                       "localPorts": self.local_ports, **public_metadata(self.metadata)})


class MockCloud:
    """The mock IaaS's state: nodes, address pools, ids ever used, injected start failures, and
    the health patterns its simulated instances report."""

    _clouds: dict[str, "MockCloud"] = {}
    _clouds_lock = threading.Lock()

    def __init__(self, name: str, private_pool: str = PRIVATE_POOL, public_pool: str = PUBLIC_POOL) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.instances: dict[str, MockInstance] = {}
        self.used_ids: set[str] = set()
        self._private = _addresses(private_pool)
        self._public = _addresses(public_pool)
        self._failures: list[str] = []
        self.patterns = HealthPatterns()
        self.listeners: list[Callable[[str, MockInstance], None]] = []
        """Called with ("created" | "destroyed", instance): the process mode hooks in here."""

    @classmethod
    def named(cls, name: str) -> "MockCloud":
        with cls._clouds_lock:
            if name not in cls._clouds:
                cls._clouds[name] = cls(name)
            return cls._clouds[name]

    def fail_next_starts(self, count: int, reason: str) -> None:
        """The next `count` create calls fail with `reason` (quota, image missing, ...)."""
        with self.lock:
            self._failures.extend([reason] * count)

    def create(self, name: str, metadata: dict[str, str]) -> MockInstance:
        with self.lock:
            if self._failures:
                raise LibcloudError(self._failures.pop(0), driver=MockNodeDriver)
            if name in self.used_ids:
                raise LibcloudError(f"node id {name!r} was used before; ids are never reused",
                                    driver=MockNodeDriver)
            instance = MockInstance(name, next(self._private), next(self._public), dict(metadata))
            self.used_ids.add(name)
            self.instances[name] = instance
        self._notify("created", instance)
        return instance

    def destroy(self, node_id: str) -> bool:
        """Remove a node (a destroy, or a crash from the REST view); False if it is not there."""
        with self.lock:
            instance = self.instances.pop(node_id, None)
        if instance is None:
            return False
        self._notify("destroyed", instance)
        return True

    def get(self, node_id: str) -> MockInstance | None:
        with self.lock:
            return self.instances.get(node_id)

    def all(self) -> list[MockInstance]:
        with self.lock:
            return list(self.instances.values())

    def _notify(self, what: str, instance: MockInstance) -> None:
        for listener in list(self.listeners):
            listener(what, instance)


def _addresses(cidr: str) -> Iterator[str]:
    for address in ipaddress.ip_network(cidr).hosts():
        yield str(address)


class MockNodeDriver(NodeDriver):
    """libcloud driver of the mock IaaS; `key` names the `MockCloud` it works on."""

    type = MOCK_PROVIDER
    name = "Stratos-ES mock IaaS"
    website = "https://stratos.apache.org/"
    features = {"create_node": []}

    def __init__(self, key: str = "default", secret: str | None = None, secure: bool = False,
                 host: str | None = None, port: int | None = None, **kwargs) -> None:
        super().__init__(key, secret, secure=secure, host=host, port=port)
        self.cloud = MockCloud.named(key)

    def _node(self, instance: MockInstance) -> Node:
        return Node(id=instance.node_id, name=instance.node_id, state=NodeState.RUNNING,
                    public_ips=[instance.public_ip], private_ips=[instance.private_ip],
                    driver=self, extra={**instance.metadata, "localPorts": dict(instance.local_ports)})

    def list_nodes(self) -> list[Node]:
        return [self._node(instance) for instance in self.cloud.all()]

    def create_node(self, name: str, size: NodeSize | None = None, image: NodeImage | None = None,
                    location: NodeLocation | None = None, auth=None,
                    ex_metadata: dict[str, str] | None = None, **kwargs) -> Node:
        return self._node(self.cloud.create(name, ex_metadata or {}))

    def destroy_node(self, node: Node) -> bool:
        return self.cloud.destroy(node.id)

    def reboot_node(self, node: Node) -> bool:
        return self.cloud.get(node.id) is not None

    def list_sizes(self, location: NodeLocation | None = None) -> list[NodeSize]:
        return [NodeSize("mock.small", "mock small", 1024, 10, 0, 0.0, driver=self)]

    def list_images(self, location: NodeLocation | None = None, ex_only_active: bool = True) -> list[NodeImage]:
        return [NodeImage("mock-image", "mock image", driver=self)]

    def list_locations(self) -> list[NodeLocation]:
        return [NodeLocation("mock-zone", "mock zone", "ZZ", driver=self)]


def register_mock_driver() -> None:
    """Make `get_driver("mock")` return the mock driver; safe to call any number of times."""
    try:
        if get_driver(MOCK_PROVIDER) is MockNodeDriver:
            return
    except AttributeError:
        pass  # not registered yet
    set_driver(MOCK_PROVIDER, __name__, MockNodeDriver.__name__)
