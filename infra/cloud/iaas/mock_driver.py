"""The libcloud `mock` driver: a `NodeDriver` that reaches the mock IaaS over its HTTP API, the
way every libcloud driver reaches its cloud (a `ConnectionKey` whose key is the cloud's access
key, sent as a bearer token; `JsonResponse` bodies; errors raised with the cloud's message).

The driver keeps nothing: the nodes are the mock IaaS's (`stratos mock-iaas`, infra/cloud/mock/service.py).
libcloud's own `dummy` driver reuses ids after a destroy, so the platform registers this one
with `set_driver` (guarded against registering it twice).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from libcloud.common.base import ConnectionKey, JsonResponse
from libcloud.common.types import InvalidCredsError, LibcloudError
from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver, set_driver
from libcloud.compute.types import NodeState

MOCK_PROVIDER = "mock"
API_PATH = "/mock-iaas/api"


class MockIaasHttpError(LibcloudError):
    """The mock IaaS refused a call; `value` is its message, `status` the HTTP code."""

    def __init__(self, value: str, status: int) -> None:
        super().__init__(value, driver=MockNodeDriver)  # type: ignore[arg-type]
        self.status = status


class MockIaasResponse(JsonResponse):
    def success(self) -> bool:
        return 200 <= self.status < 300

    def parse_error(self):
        try:
            body = json.loads(self.body) if self.body else {}
        except ValueError:
            body = {}
        message = (body.get("message") if isinstance(body, dict) else None) or self.body or self.error
        if self.status == 401:
            raise InvalidCredsError(message)  # type: ignore[arg-type]
        raise MockIaasHttpError(str(message), self.status)


class MockIaasConnection(ConnectionKey):
    responseCls = MockIaasResponse

    def __init__(self, key, *args, ca_cert: str | None = None, **kwargs) -> None:
        super().__init__(key, *args, **kwargs)
        self.ca_cert = ca_cert
        """The certificate to trust when the mock IaaS serves HTTPS with a self-signed one."""

    def add_default_headers(self, headers: dict) -> dict:
        headers["Authorization"] = f"Bearer {self.key}"
        headers["Accept"] = "application/json"
        return headers

    def encode_data(self, data):
        return json.dumps(data) if isinstance(data, (dict, list)) else data

    def connect(self, host=None, port=None, base_url=None, **kwargs):
        super().connect(host=host, port=port, base_url=base_url, **kwargs)
        if self.ca_cert and self.secure:
            self.connection.ca_cert = self.ca_cert  # type: ignore[union-attr]


class MockNodeDriver(NodeDriver):
    """libcloud driver of the mock IaaS; `key` is the cloud's access key, host/port its API."""

    type = MOCK_PROVIDER
    name = "Stratos-ES mock IaaS"
    website = "https://stratos.apache.org/"
    connectionCls = MockIaasConnection
    features = {"create_node": []}

    def __init__(
        self,
        key: str,
        secret: str | None = None,
        secure: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
        ca_cert: str | None = None,
        timeout: float = 30.0,
        **kwargs,
    ) -> None:
        self._timeout, self._ca_cert = timeout, ca_cert
        super().__init__(key, secret, secure=secure, host=host, port=port or (443 if secure else 80), **kwargs)

    def _ex_connection_class_kwargs(self) -> dict:
        return {"timeout": self._timeout, "ca_cert": self._ca_cert}

    def _call(self, method: str, path: str, body: dict | None = None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return self.connection.request(f"{API_PATH}{path}", method=method, data=body, headers=headers).object

    def _node(self, view: dict) -> Node:
        metadata = dict(view.get("metadata") or {})
        return Node(
            id=view["id"],
            name=view["id"],
            state=NodeState.RUNNING,
            public_ips=[view["publicIp"]] if view.get("publicIp") else [],
            private_ips=[view["privateIp"]] if view.get("privateIp") else [],
            driver=self,
            created_at=None,
            extra={
                **metadata,
                "localPorts": dict(view.get("localPorts") or {}),
                "agentStatus": view.get("agentStatus"),
            },
        )

    def list_nodes(self) -> list[Node]:
        return [self._node(view) for view in self._call("GET", "/instances")]

    def create_node(
        self,
        name: str,
        size: NodeSize | None = None,
        image: NodeImage | None = None,
        location: NodeLocation | None = None,
        auth=None,
        ex_metadata: dict[str, str] | None = None,
        **kwargs,
    ) -> Node:
        return self._node(self._call("POST", "/instances", {"name": name, "metadata": ex_metadata or {}}))

    def _on_node(self, method: str, node: Node) -> bool:
        """A call on one node; False when the cloud does not have it (404)."""
        try:
            self._call(method, f"/instances/{quote(node.id, safe='')}")  # type: ignore[arg-type]
        except MockIaasHttpError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def destroy_node(self, node: Node) -> bool:
        return self._on_node("DELETE", node)

    def reboot_node(self, node: Node) -> bool:
        """A mock node has nothing to reboot: True while it exists."""
        return self._on_node("GET", node)

    def ex_status(self) -> dict:
        """`GET /mock-iaas/api/status`: how many nodes, the mode, pending start failures."""
        return self._call("GET", "/status")

    def list_sizes(self, location: NodeLocation | None = None) -> list[NodeSize]:
        return [NodeSize("mock.small", "mock small", 1024, 10, 0, 0.0, driver=self)]

    def list_images(self, location: NodeLocation | None = None, ex_only_active: bool = True) -> list[NodeImage]:
        return [NodeImage("mock-image", "mock image", driver=self)]

    def list_locations(self) -> list[NodeLocation]:
        return [NodeLocation("mock-zone", "mock zone", "ZZ", driver=self)]


@dataclass(frozen=True)
class MockEndpoint:
    """Where the mock IaaS answers and the key it asks for (the cloud controller's account)."""

    url: str
    key: str = field(repr=False)
    ca_cert: str | None = None

    def driver(self) -> MockNodeDriver:
        register_mock_driver()
        parts = urlsplit(self.url)
        secure = parts.scheme == "https"
        return get_driver(MOCK_PROVIDER)(  # type: ignore[return-value]
            self.key,
            secure=secure,
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (443 if secure else 80),
            ca_cert=self.ca_cert,
        )


def register_mock_driver() -> None:
    """Make `get_driver("mock")` return the mock driver; safe to call any number of times."""
    try:
        if get_driver(MOCK_PROVIDER) is MockNodeDriver:
            return
    except AttributeError:
        pass  # not registered yet
    set_driver(MOCK_PROVIDER, __name__, MockNodeDriver.__name__)  # type: ignore[arg-type]
