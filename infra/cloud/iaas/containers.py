"""Containers as an IaaS: members as Kubernetes pods or Docker containers, behind the same
libcloud `NodeDriver` calls the cloud controller makes for VMs (`list_nodes`, `create_node`,
`destroy_node`), so that it never knows which kind of cloud it drives.

Kubernetes (Stratos 4.1's KubernetesIaas): one pod per member, named after the member (the
idempotency key), carrying the member's payload as environment variables (Stratos's way), and
one Service per cluster selecting its pods by label, with the cartridge's ports; the Service is
made with the cluster's first pod and removed with its last. Everything goes through libcloud's
`KubernetesContainerDriver` and its Connection (authentication, TLS, error mapping);
libcloud's `deploy_container` sends neither labels nor environment and has no Services, so pods
and Services are posted through that connection.

Docker: one container per member through libcloud's `DockerContainerDriver`, with the payload as
environment and the member and cluster as labels (plain Docker has no Service; its load balancer
follows the topology as for VMs).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from dataclasses import dataclass

from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.base import Node, NodeDriver, NodeImage
from libcloud.compute.types import NodeState
from libcloud.container.base import ContainerImage
from libcloud.container.drivers.docker import DockerContainerDriver, DockerException
from libcloud.container.drivers.kubernetes import KubernetesContainerDriver
from libcloud.container.types import ContainerState

MANAGED_BY = "app.kubernetes.io/managed-by"
CLUSTER_LABEL = "stratos.apache.org/cluster"
MEMBER_LABEL = "stratos.apache.org/member"
MEMBER_ANNOTATION = "stratos.apache.org/member-id"
CLUSTER_ANNOTATION = "stratos.apache.org/cluster-id"
PAYLOAD_PREFIX = "payload_parameter."
"""Properties of a Kubernetes cluster (and of a partition) passed to its pods (Stratos's)."""
MASTER_PORT = "8080"
"""Stratos 4.1's KUBERNETES_MASTER_PORT default: the master's plain-HTTP API port."""


class ContainerConfigError(ValueError):
    """A container target lacks something; the message names the property."""


def dns_name(text: str, limit: int = 253) -> str:
    """A Kubernetes object name (RFC 1123 subdomain) for `text`; long ones end with a hash."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip(".-") or "x"
    if len(name) > limit:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        name = f"{name[: limit - 11].rstrip('.-')}-{digest}"
    return name


def service_name(cluster_id: str) -> str:
    """A Service name (RFC 1035 label: 63 characters, a letter first) for a cluster id."""
    name = dns_name(cluster_id.replace(".", "-"), 61)
    return name if name[0].isalpha() else f"s-{name}"[:63]


def label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9._-]); long ones end with a hash."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("._-")
    if len(value) > 63:
        value = f"{value[:52].rstrip('._-')}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
    return value


def env_name(key: str) -> str:
    """Payload keys as Stratos's environment names: memberId -> MEMBER_ID, TOKEN stays TOKEN."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    return re.sub(r"[^A-Za-z0-9_]", "_", snake).upper()


def payload_env(metadata: dict[str, str], properties: dict[str, str]) -> dict[str, str]:
    env = {env_name(k): str(v) for k, v in metadata.items()}
    env.update({k[len(PAYLOAD_PREFIX) :]: v for k, v in properties.items() if k.startswith(PAYLOAD_PREFIX)})
    return env


def cartridge_ports(metadata: dict[str, str]) -> list[tuple[str, int]]:
    """The cartridge's (protocol, port) pairs, from the payload's `ports` ("http:80,tcp:22")."""
    ports = []
    for item in filter(None, metadata.get("ports", "").split(",")):
        protocol, _, port = item.partition(":")
        if port.isdigit():
            ports.append((protocol or "tcp", int(port)))
    return ports


def _transport(protocol: str) -> str:
    return "UDP" if protocol.lower() == "udp" else "TCP"


def _status_message(body: object) -> str:
    """The `message` of a Kubernetes Status body, else the start of whatever came back."""
    try:
        return str(json.loads(body).get("message"))[:300]  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError):
        return " ".join(str(body).split())[:120]


def _missing(error: BaseHTTPError) -> bool:
    return getattr(error, "code", None) == 404


@dataclass(frozen=True)
class KubernetesEndpoint:
    host: str
    port: int
    secure: bool
    ca_cert: str | None
    namespace: str
    service_type: str
    start_seconds: float

    @classmethod
    def of(cls, properties: dict[str, str]) -> KubernetesEndpoint:
        host = properties.get("kubernetesMasterHost")
        if not host:
            raise ContainerConfigError(
                "iaasProvider 'kubernetes' needs its partition's property 'cluster' to name a "
                "registered kubernetesCluster (the master's address comes from it)"
            )
        port = properties.get("kubernetesMasterPort") or MASTER_PORT
        if not port.isdigit():
            raise ContainerConfigError(f"KUBERNETES_MASTER_PORT {port!r} is not a port number")
        protocol = (properties.get("kubernetesMasterProtocol") or "http").lower()
        if protocol not in ("http", "https"):
            raise ContainerConfigError(f"KUBERNETES_MASTER_PROTOCOL {protocol!r}: http or https")
        ca_cert = properties.get("kubernetesMasterCaCert") or None
        if protocol == "https" and not ca_cert:
            raise ContainerConfigError(
                "KUBERNETES_MASTER_PROTOCOL https needs KUBERNETES_MASTER_CA_CERT (the "
                "path of the cluster's CA certificate): without it libcloud would not "
                "verify the master's certificate"
            )
        return cls(
            host=host,
            port=int(port),
            secure=protocol == "https",
            ca_cert=ca_cert,
            namespace=properties.get("namespace") or "default",
            service_type=properties.get("serviceType") or "ClusterIP",
            start_seconds=float(properties.get("podStartSeconds") or 60),
        )


class KubernetesNodes(NodeDriver):
    """Members as pods of one Kubernetes cluster (see the module's docstring)."""

    type = "kubernetes"
    name = "Stratos-ES members on Kubernetes"
    website = "https://kubernetes.io/"
    features = {"create_node": []}

    def __init__(self, identity: str, credential: str, properties: dict[str, str]) -> None:
        self.endpoint = KubernetesEndpoint.of(properties)
        self.properties = properties
        token_only = bool(credential) and not identity
        if token_only and not self.endpoint.secure:
            raise ContainerConfigError(
                "a Kubernetes bearer token (iaasProvider credential without identity) "
                "is sent over https only: set KUBERNETES_MASTER_PROTOCOL https"
            )
        with warnings.catch_warnings():  # "no CA: verification disabled" is about https; plain http has none
            warnings.simplefilter("ignore" if not self.endpoint.secure else "default")
            # secret "" rather than None: libcloud drops a None secret from the connection's
            # positional arguments, which shifts host and port (to "https://<port>")
            self.k8s = KubernetesContainerDriver(
                key=credential if token_only else identity,
                secret=None if token_only else credential,
                secure=self.endpoint.secure,
                host=self.endpoint.host,
                port=self.endpoint.port,
                ca_cert=self.endpoint.ca_cert,
                ex_token_bearer_auth=token_only,
            )
        self.connection = self.k8s.connection

    def _path(self, kind: str, name: str = "") -> str:
        return f"/api/v1/namespaces/{self.endpoint.namespace}/{kind}" + (f"/{name}" if name else "")

    def _request(self, path: str, method: str = "GET", body: dict | None = None, params=None) -> dict:
        data = json.dumps(body) if body is not None else None
        try:
            return self.connection.request(path, method=method, data=data, params=params).object or {}
        except BaseHTTPError as exc:  # the reason the member's start failed: short and readable
            raise BaseHTTPError(
                exc.code, f"Kubernetes API {method} {path}: {exc.code} {_status_message(exc.message)}"
            ) from None

    # --- the NodeDriver calls the cloud controller makes -------------------------------------------
    def list_nodes(self) -> list[Node]:
        found = self._request(self._path("pods"), params={"labelSelector": f"{MANAGED_BY}=stratos"})
        return [self._node(pod) for pod in found.get("items") or []]

    def create_node(self, name: str, image: NodeImage, ex_metadata: dict[str, str] | None = None, **_kwargs) -> Node:  # type: ignore[override]
        metadata = ex_metadata or {}
        cluster_id = metadata.get("clusterId") or name
        ports = cartridge_ports(metadata)
        if ports:
            self._ensure_service(cluster_id, ports)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": {
                    MANAGED_BY: "stratos",
                    CLUSTER_LABEL: label_value(cluster_id),
                    MEMBER_LABEL: label_value(metadata.get("memberId", name)),
                },
                "annotations": {MEMBER_ANNOTATION: metadata.get("memberId", name), CLUSTER_ANNOTATION: cluster_id},
            },
            "spec": {
                "restartPolicy": "Always",
                "containers": [
                    {
                        "name": "cartridge",
                        "image": image.id,
                        "env": [{"name": k, "value": v} for k, v in payload_env(metadata, self.properties).items()],
                        "ports": [
                            {"containerPort": port, "protocol": _transport(protocol)} for protocol, port in ports
                        ],
                    }
                ],
            },
        }
        created = self._request(self._path("pods"), "POST", pod)
        return self._node(self._scheduled(name) or created)

    def destroy_node(self, node: Node) -> bool:
        try:
            self.k8s.ex_destroy_pod(self.endpoint.namespace, node.name)
        except BaseHTTPError as exc:
            if not _missing(exc):
                raise
        cluster = (node.extra.get("labels") or {}).get(CLUSTER_LABEL)
        cluster_id = (node.extra.get("annotations") or {}).get(CLUSTER_ANNOTATION)
        if (
            cluster
            and cluster_id
            and not any(
                n.name != node.name and (n.extra.get("labels") or {}).get(CLUSTER_LABEL) == cluster
                for n in self.list_nodes()
                if n.state != NodeState.TERMINATED
            )
        ):
            self._remove_service(cluster_id)  # the cluster's last member: its Service goes too
        return True

    # --- pods and Services ---------------------------------------------------------------------
    def _scheduled(self, name: str) -> dict | None:
        """The pod once it has an address (Running), or None after the start wait."""
        deadline = time.monotonic() + self.endpoint.start_seconds
        while True:
            try:
                pod = self._request(self._path("pods", name))
            except BaseHTTPError as exc:
                if not _missing(exc):
                    raise
                pod = None
            if pod and (pod.get("status") or {}).get("podIP"):
                return pod
            if time.monotonic() >= deadline:
                return pod
            time.sleep(1.0)

    def _ensure_service(self, cluster_id: str, ports: list[tuple[str, int]]) -> None:
        name = service_name(cluster_id)
        try:
            self._request(self._path("services", name))
            return
        except BaseHTTPError as exc:
            if not _missing(exc):
                raise
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "labels": {MANAGED_BY: "stratos", CLUSTER_LABEL: label_value(cluster_id)},
                "annotations": {CLUSTER_ANNOTATION: cluster_id},
            },
            "spec": {
                "type": self.endpoint.service_type,
                "selector": {CLUSTER_LABEL: label_value(cluster_id)},
                "ports": [
                    {
                        "name": f"{protocol.lower()}-{port}",
                        "protocol": _transport(protocol),
                        "port": port,
                        "targetPort": port,
                    }
                    for protocol, port in ports
                ],
            },
        }
        try:
            self._request(self._path("services"), "POST", service)
        except BaseHTTPError as exc:
            if getattr(exc, "code", None) != 409:  # another lane made it first
                raise

    def _remove_service(self, cluster_id: str) -> None:
        try:
            self._request(self._path("services", service_name(cluster_id)), "DELETE")
        except BaseHTTPError as exc:
            if not _missing(exc):
                raise

    def _node(self, pod: dict) -> Node:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        phase = status.get("phase") or "Pending"
        if meta.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
            state = NodeState.TERMINATED
        else:
            state = NodeState.RUNNING if phase == "Running" else NodeState.PENDING
        ip = status.get("podIP")
        return Node(
            id=meta.get("uid") or meta.get("name"),  # type: ignore[arg-type]
            name=meta.get("name"),  # type: ignore[arg-type]
            state=state,
            public_ips=[],
            private_ips=[ip] if ip else [],
            driver=self,
            extra={
                "namespace": meta.get("namespace"),
                "phase": phase,
                "hostIP": status.get("hostIP"),
                "labels": meta.get("labels") or {},
                "annotations": meta.get("annotations") or {},
            },
        )


class DockerNodes(NodeDriver):
    """Members as containers of one Docker engine (see the module's docstring)."""

    type = "docker"
    name = "Stratos-ES members on Docker"
    website = "https://www.docker.com/"
    features = {"create_node": []}

    def __init__(self, identity: str, credential: str, properties: dict[str, str]) -> None:
        endpoint = properties.get("endpoint") or "http://127.0.0.1:2375"
        scheme, _, rest = endpoint.rpartition("://")
        host, _, port = rest.partition(":")
        if not host or (port and not port.isdigit()):
            raise ContainerConfigError(
                f"iaasProvider 'docker' property 'endpoint' {endpoint!r}: expected http(s)://host:port"
            )
        self.properties = properties
        self.docker = DockerContainerDriver(
            key=identity, secret=credential, secure=scheme == "https", host=host, port=int(port or 2375)
        )
        self.connection = self.docker.connection

    def list_nodes(self) -> list[Node]:
        return [self._node(c) for c in self.docker.list_containers(all=True)]

    def create_node(self, name: str, image: NodeImage, ex_metadata: dict[str, str] | None = None, **_kwargs) -> Node:  # type: ignore[override]
        metadata = ex_metadata or {}
        ports = cartridge_ports(metadata)
        options = dict(
            environment=[f"{k}={v}" for k, v in payload_env(metadata, self.properties).items()],
            labels={
                MANAGED_BY: "stratos",
                MEMBER_ANNOTATION: metadata.get("memberId", name),
                CLUSTER_ANNOTATION: metadata.get("clusterId", ""),
            },
            ports={f"{port}/{_transport(protocol).lower()}": {} for protocol, port in ports},
        )
        container_image = ContainerImage(id=None, name=image.id, path=image.id, version=None, driver=self.docker)  # type: ignore[arg-type]
        try:
            container = self.docker.deploy_container(name, container_image, **options)
        except DockerException as exc:
            if "No such image" not in str(exc):
                raise
            self.docker.install_image(image.id)
            container = self.docker.deploy_container(name, container_image, **options)
        return self._node(container, self._address(container.id))

    def destroy_node(self, node: Node) -> bool:
        container = self.docker.get_container(node.id)
        if container.state == ContainerState.RUNNING:
            self.docker.stop_container(container)
        return self.docker.destroy_container(container)

    def _address(self, container_id: str) -> str | None:
        """The container's address on its network (libcloud's Container does not keep it)."""
        inspected = self.connection.request(f"/v{self.docker.version}/containers/{container_id}/json").object
        return ((inspected or {}).get("NetworkSettings") or {}).get("IPAddress") or None

    def _node(self, container, address: str | None = None) -> Node:
        # an exited container is a crashed member: STOPPED (it still exists, so it is destroyed)
        state = NodeState.RUNNING if container.state == ContainerState.RUNNING else NodeState.STOPPED
        return Node(
            id=container.id,
            name=container.name,
            state=state,
            public_ips=[],
            private_ips=[address] if address else [],
            driver=self,
            extra={"image": container.image.name, "status": (container.extra or {}).get("status")},
        )
