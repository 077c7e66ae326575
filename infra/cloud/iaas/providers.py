"""From a cartridge's `iaasProvider` entry to libcloud calls: which driver, which arguments.

One function per provider family maps Stratos's fields (imageId, the instanceType / keyPair /
securityGroups / region properties, networkInterfaces) to that driver's constructor and
`create_node` keywords. Credentials come from the definition and are handed to the driver only:
nothing here logs them, and `IaasTarget`'s repr hides them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from libcloud.compute.base import NodeDriver, NodeImage, NodeSize
from libcloud.compute.providers import get_driver

from infra.cloud.iaas.containers import ContainerConfigError, DockerNodes, KubernetesNodes, dns_name
from infra.cloud.iaas.mock_driver import MOCK_PROVIDER, MockEndpoint


class IaasConfigError(ValueError):
    """The iaasProvider entry lacks something the driver needs; the message names the field."""


@dataclass(frozen=True)
class IaasTarget:
    """Where and how to start a member's node, read from the MemberSpawnRequested event."""

    type: str
    image_id: str | None = None
    identity: str = field(default="", repr=False)
    credential: str = field(default="", repr=False)
    properties: dict[str, str] = field(default_factory=dict)
    network_ids: tuple[str, ...] = ()

    @classmethod
    def from_event(cls, provider: str, iaas: dict) -> IaasTarget:
        properties = {p["name"]: str(p.get("value", "")) for p in iaas.get("property") or [] if p.get("name")}
        networks = tuple(n["networkUuid"] for n in iaas.get("networkInterfaces") or [] if n.get("networkUuid"))
        return cls(
            type=(iaas.get("type") or provider).lower(),
            image_id=iaas.get("imageId"),
            identity=iaas.get("identity") or "",
            credential=iaas.get("credential") or "",
            properties=properties,
            network_ids=networks,
        )

    def required(self, name: str) -> str:
        value = self.properties.get(name)
        if not value:
            raise IaasConfigError(f"iaasProvider {self.type!r} needs the property {name!r}")
        return value

    @property
    def driver_key(self) -> tuple:
        """Targets with equal keys can share one driver (same account, endpoint and region)."""
        return (self.type, self.identity, tuple(sorted(self.properties.items())))


def _image(target: IaasTarget, driver: NodeDriver) -> NodeImage:
    if not target.image_id:
        raise IaasConfigError(f"iaasProvider {target.type!r} needs imageId")
    return NodeImage(id=target.image_id, name=None, driver=driver)  # type: ignore[arg-type]


def _size(target: IaasTarget, driver: NodeDriver) -> NodeSize:
    size = target.properties.get("instanceType") or target.properties.get("flavor")
    if not size:
        raise IaasConfigError(f"iaasProvider {target.type!r} needs the property 'instanceType'")
    return NodeSize(id=size, name=size, ram=0, disk=0, bandwidth=0, price=0, driver=driver)


def _groups(target: IaasTarget) -> list[str]:
    return [g.strip() for g in target.properties.get("securityGroups", "").split(",") if g.strip()]


def _mock_driver(target: IaasTarget, mock: MockEndpoint) -> NodeDriver:
    return mock.driver()


def _mock_node(target: IaasTarget, driver: NodeDriver, name: str, metadata: dict) -> dict:
    return dict(name=name, ex_metadata=metadata)


def _ec2_driver(target: IaasTarget, _mock: MockEndpoint) -> NodeDriver:
    return get_driver("ec2")(target.identity, target.credential, region=target.properties.get("region", "us-east-1"))


def _ec2_node(target: IaasTarget, driver: NodeDriver, name: str, metadata: dict) -> dict:
    from libcloud.compute.drivers.ec2 import EC2NetworkSubnet

    options = dict(
        name=name, image=_image(target, driver), size=_size(target, driver), ex_metadata=metadata, ex_clienttoken=name
    )  # EC2's own idempotency key
    if key_pair := target.properties.get("keyPair"):
        options["ex_keyname"] = key_pair
    if groups := _groups(target):
        options["ex_security_groups"] = groups
    if target.network_ids:
        options["ex_subnet"] = EC2NetworkSubnet(target.network_ids[0], name=None, state="available")
    return options


def _openstack_driver(target: IaasTarget, _mock: MockEndpoint) -> NodeDriver:
    return get_driver("openstack")(
        target.identity,
        target.credential,
        ex_force_auth_url=target.required("authUrl"),
        ex_force_auth_version=target.properties.get("authVersion", "3.x_password"),
        ex_tenant_name=target.properties.get("tenantName"),
        ex_force_service_region=target.properties.get("region"),
    )


def _openstack_node(target: IaasTarget, driver: NodeDriver, name: str, metadata: dict) -> dict:
    from libcloud.compute.drivers.openstack import OpenStackNetwork, OpenStackSecurityGroup

    options = dict(name=name, image=_image(target, driver), size=_size(target, driver), ex_metadata=metadata)
    if key_pair := target.properties.get("keyPair"):
        options["ex_keyname"] = key_pair
    if groups := _groups(target):
        options["ex_security_groups"] = [OpenStackSecurityGroup(None, None, g, "", driver=driver) for g in groups]
    if target.network_ids:
        options["networks"] = [OpenStackNetwork(n, None, None, driver) for n in target.network_ids]
    return options


def _gce_driver(target: IaasTarget, _mock: MockEndpoint) -> NodeDriver:
    return get_driver("gce")(
        target.identity,
        target.credential,
        project=target.required("projectId"),
        datacenter=target.properties.get("zone"),
    )


def _gce_node(target: IaasTarget, driver: NodeDriver, name: str, metadata: dict) -> dict:
    # GCE names are lower-case letters, digits and dashes: member ids contain dots
    options = dict(name=gce_name(name), image=target.image_id, size=_size(target, driver).id, ex_metadata=metadata)
    if target.network_ids:
        options["ex_network"] = target.network_ids[0]
    if groups := _groups(target):
        options["ex_tags"] = groups  # type: ignore[assignment]
    return options


def gce_name(member_id: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in member_id.lower())


def _cloudstack_driver(target: IaasTarget, _mock: MockEndpoint) -> NodeDriver:
    return get_driver("cloudstack")(target.identity, target.credential, url=target.required("endpoint"))


def _cloudstack_node(target: IaasTarget, driver: NodeDriver, name: str, metadata: dict) -> dict:
    from libcloud.compute.drivers.cloudstack import CloudStackNetwork

    options = dict(name=name, image=_image(target, driver), size=_size(target, driver))
    if key_pair := target.properties.get("keyPair"):
        options["ex_keyname"] = key_pair
    if groups := _groups(target):
        options["ex_security_groups"] = groups
    if target.network_ids:
        options["networks"] = [
            CloudStackNetwork(displaytext=None, name=None, networkofferingid=None, id=n, zoneid=None, driver=driver)
            for n in target.network_ids
        ]
    return options


def _container_driver(nodes: type) -> Callable[[IaasTarget, MockEndpoint], NodeDriver]:
    def build(target: IaasTarget, _mock: MockEndpoint) -> NodeDriver:
        try:
            return nodes(target.identity, target.credential, target.properties)
        except ContainerConfigError as exc:  # final: retrying cannot help
            raise IaasConfigError(str(exc)) from None

    return build


def _container_node(target: IaasTarget, driver: NodeDriver, name: str, metadata: dict) -> dict:
    return dict(name=name, image=_image(target, driver), ex_metadata=metadata)


Builder = tuple[Callable[[IaasTarget, MockEndpoint], NodeDriver], Callable[[IaasTarget, NodeDriver, str, dict], dict]]
PROVIDERS: dict[str, Builder] = {
    MOCK_PROVIDER: (_mock_driver, _mock_node),
    "ec2": (_ec2_driver, _ec2_node),
    "openstack": (_openstack_driver, _openstack_node),
    "gce": (_gce_driver, _gce_node),
    "cloudstack": (_cloudstack_driver, _cloudstack_node),
    "kubernetes": (_container_driver(KubernetesNodes), _container_node),
    "docker": (_container_driver(DockerNodes), _container_node),
}
"""Provider type -> (driver factory, create_node keywords); schemas.definitions lists the same names."""
CONTAINER_PROVIDERS = ("kubernetes", "docker")


def _builder(target: IaasTarget) -> Builder:
    try:
        return PROVIDERS[target.type]
    except KeyError:
        raise IaasConfigError(
            f"iaasProvider type {target.type!r} is not supported (supported: {', '.join(sorted(PROVIDERS))})"
        ) from None


def build_driver(target: IaasTarget, mock: MockEndpoint) -> NodeDriver:
    """The libcloud driver for a target; the mock one reaches the mock IaaS at `mock`."""
    return _builder(target)[0](target, mock)


def node_name(target: IaasTarget, member_id: str) -> str:
    """The node name that identifies a member's node on this provider (its idempotency key)."""
    if target.type == "gce":
        return gce_name(member_id)
    return dns_name(member_id) if target.type in CONTAINER_PROVIDERS else member_id


def create_options(target: IaasTarget, driver: NodeDriver, member_id: str, metadata: dict) -> dict:
    """Keyword arguments of `driver.create_node` for one member."""
    return _builder(target)[1](target, driver, member_id, metadata)
