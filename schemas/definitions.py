"""Stratos 4.1 definitions: the JSON documents users write, as pydantic models.

Field names are Stratos's own (camelCase), so a Stratos 4.1 user's files load unchanged. The one
exception in Python is a Stratos ``property`` list, exposed as ``properties`` (a field named
``property`` would shadow the builtin in the class body); it still reads and writes ``"property"``,
with or without ``by_alias=True``.

Lenient where Stratos was (ports and booleans written as strings, missing or null lists, unknown
keys), strict where it validated (enumerations, min/max, thresholds, ids, aliases). Every rule that
needs only the document itself is checked here, once, at parse time, so the rest of the code can
trust a parsed definition. Rules that need other definitions (does that cartridge exist? is that
policy in use?) belong to the registry, which reads :meth:`RegisteredDefinition.references`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar, cast

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from schemas.base import Definition

T = TypeVar("T")

# A list that may be missing or null (Stratos's Java beans serialise an unset list as null).
ListOf = Annotated[list[T], BeforeValidator(lambda value: [] if value is None else value)]
Id = Annotated[str, Field(min_length=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
Secret = Annotated[str, Field(repr=False)]
Reference = tuple[str, str]

CartridgeCategory = Literal["framework", "data", "application", "load-balancer"]
TerminationBehaviour = Literal["terminate-none", "terminate-dependents", "terminate-all"]
PartitionAlgorithm = Literal["one-after-another", "round-robin"]
ApplicationAlgorithm = Literal["one-after-another", "all-at-once"]

NETWORK_PARTITION_GROUPS = "networkPartitionGroups"


def _alias_ref(ref: str) -> str:
    """Dependencies name members as ``cartridge.<alias>`` or ``group.<alias>``; nothing else resolves."""
    prefix, _, alias = ref.partition(".")
    if prefix not in ("cartridge", "group") or not alias:
        raise ValueError(f"alias '{ref}' must be written 'cartridge.<alias>' or 'group.<alias>'")
    return ref


AliasRef = Annotated[str, AfterValidator(_alias_ref)]


def _duplicates(names: Iterable[str]) -> list[str]:
    return [name for name, count in Counter(names).items() if count > 1]


def _reject_duplicates(names: Iterable[str], what: str) -> None:
    if dups := _duplicates(names):
        raise ValueError(f"duplicate {what} " + ", ".join(f"'{name}'" for name in dups))


def _not_below(min_field: str, value: int, info: ValidationInfo) -> int:
    """Validates a max against the min declared before it (skipped when the min itself was invalid)."""
    low = info.data.get(min_field)
    if low is not None and value < low:
        raise ValueError(f"{min_field} {low} > {info.field_name} {value}")
    return value


def _unique(refs: Iterable[Reference]) -> list[Reference]:
    return list(dict.fromkeys(refs))


class _StratosJson(Definition):
    """Dumps use Stratos's names even without ``by_alias=True``: stored bodies read like the user's JSON."""

    model_config = ConfigDict(serialize_by_alias=True)


class Property(_StratosJson):
    name: Id
    value: str = Field("", coerce_numbers_to_str=True)
    secret: bool = Field(
        False,
        description="true: the value is a secret, sealed in the log and masked for readers (written only when true)",
    )

    @model_serializer(mode="wrap")
    def _secret_only_when_true(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not self.secret:
            data.pop("secret", None)
        return data


class RegisteredDefinition(_StratosJson):
    """A definition the registry stores under an id; it may use other definitions."""

    _id_field: ClassVar[str]

    @property
    def definition_id(self) -> str:
        return cast(str, getattr(self, self._id_field))

    def references(self) -> list[Reference]:
        """(kind, id) of the definitions this one uses: they must exist, and stay while it does."""
        return []


# --- Cartridge ---------------------------------------------------------------------------------


class PortMapping(_StratosJson):
    name: str | None = None
    protocol: str
    port: Port
    proxyPort: int | None = Field(None, ge=0, le=65535)  # 0: not exposed through the load balancer
    kubernetesPortType: str | None = None


class FloatingNetwork(_StratosJson):
    name: str | None = None
    networkUuid: str | None = None
    floatingIP: str | None = None


class NetworkInterface(_StratosJson):
    networkUuid: str | None = None
    fixedIp: str | None = None
    portUuid: str | None = None
    floatingNetworks: ListOf[FloatingNetwork] = []


KNOWN_IAAS_PROVIDERS = ("mock", "ec2", "openstack", "gce", "cloudstack", "kubernetes", "docker")
"""IaaS types the cloud controller can drive (libcloud provider names; "mock" is the platform's own)."""
NO_ACCOUNT_PROVIDERS = ("mock", "kubernetes", "docker")
"""Types whose API may be used without an account (Stratos 4.1 drove Kubernetes' plain-HTTP API)."""


class IaasProvider(_StratosJson):
    type: Id
    name: str | None = None
    className: str | None = None
    imageId: str | None = None
    provider: str | None = None
    identity: Secret = Field("", validate_default=True)
    credential: Secret = Field("", validate_default=True)
    properties: ListOf[Property] = Field([], alias="property")
    networkInterfaces: ListOf[NetworkInterface] = []

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value.lower() not in KNOWN_IAAS_PROVIDERS:
            raise ValueError(f"unknown IaaS provider '{value}' (known: {', '.join(KNOWN_IAAS_PROVIDERS)})")
        return value

    @field_validator("identity", "credential")
    @classmethod
    def _account_for_real_clouds(cls, value: str, info: ValidationInfo) -> str:
        """A real cloud needs an account: fail at definition time, not at the first start."""
        kind = info.data.get("type")
        if kind and kind.lower() not in NO_ACCOUNT_PROVIDERS and not value:
            raise ValueError(f"iaasProvider '{kind}' needs {info.field_name}")
        return value


class Volume(_StratosJson):
    id: str | None = None
    size: int | None = Field(None, ge=1)
    device: str | None = None
    mappingPath: str | None = None
    snapshotId: str | None = None
    volumeId: str | None = None
    removeOnTermination: bool = False


class Persistence(_StratosJson):
    isRequired: bool = False
    volumes: ListOf[Volume] = []


class CartridgeDeployment(_StratosJson):
    baseDir: str | None = None
    dir: ListOf[str] = []


class Cartridge(RegisteredDefinition):
    _id_field = "type"

    type: Id
    provider: str | None = None
    category: CartridgeCategory
    host: str | None = None
    displayName: str | None = None
    description: str | None = None
    version: str | None = Field(None, coerce_numbers_to_str=True)
    multiTenant: bool = False
    deployment: CartridgeDeployment | None = None
    portMapping: ListOf[PortMapping] = []
    metadataKeys: ListOf[str] = []
    loadBalancingIPType: str | None = None
    iaasProvider: ListOf[IaasProvider] = []
    persistence: Persistence | None = None
    properties: ListOf[Property] = Field([], alias="property")


# --- Dependencies and cartridge groups -------------------------------------------------------


class StartupOrder(_StratosJson):
    """Members started one after the other, in this order."""

    aliases: ListOf[AliasRef] = []

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: object) -> object:
        """Stratos's early samples wrote an order as one string: ``"group.g1,cartridge.php"``."""
        if isinstance(data, str):
            return {"aliases": [part.strip() for part in data.split(",") if part.strip()]}
        return data


class ScalingDependents(StartupOrder):
    """Members that scale together, by the same factor."""


class Dependencies(_StratosJson):
    startupOrders: ListOf[StartupOrder] = []
    scalingDependents: ListOf[ScalingDependents] = []
    terminationBehaviour: TerminationBehaviour = "terminate-none"

    def unknown_aliases(self, known: set[str]) -> list[tuple[str, str]]:
        """(field, alias) for every alias outside ``known``, in document order."""
        return [
            (field, ref)
            for field, entries in (("startupOrders", self.startupOrders), ("scalingDependents", self.scalingDependents))
            for entry in entries
            for ref in entry.aliases
            if ref not in known
        ]


class CartridgeGroup(RegisteredDefinition):
    """A reusable group of cartridges; nested groups are defined inline, as in Stratos.

    Its dependencies name the aliases an application gives to the group's members (Stratos 4.1
    samples: ``cartridge.my-c1-group1``), which are unknown until an application uses the group:
    here only their form is checked; :meth:`Application.group_dependency_errors` resolves them.
    """

    _id_field = "name"

    name: Id
    cartridges: ListOf[Id] = []
    groups: ListOf[CartridgeGroup] = []
    dependencies: Dependencies | None = None
    groupScalingEnabled: bool = False

    @field_validator("cartridges")
    @classmethod
    def _distinct_cartridges(cls, cartridges: list[str]) -> list[str]:
        _reject_duplicates(cartridges, "cartridge")
        return cartridges

    @field_validator("groups")
    @classmethod
    def _distinct_groups(cls, groups: list[CartridgeGroup], info: ValidationInfo) -> list[CartridgeGroup]:
        """A group name may appear once in the whole tree (Stratos: no duplicates, no cycles)."""
        names = [info.data.get("name", "")] + [g.name for top in groups for g in top.walk()]
        _reject_duplicates(names, "group")
        return groups

    def walk(self) -> Iterator[CartridgeGroup]:
        """This group, then its nested groups, depth first."""
        yield self
        for group in self.groups:
            yield from group.walk()

    def nested(self, name: str) -> CartridgeGroup | None:
        return next((group for group in self.groups if group.name == name), None)

    def references(self) -> list[Reference]:
        """Cartridges only: nested groups are defined inline (Stratos registers them nowhere)."""
        return _unique(("cartridge", cartridge) for group in self.walk() for cartridge in group.cartridges)


# --- Application -------------------------------------------------------------------------------


class ArtifactRepository(_StratosJson):
    privateRepo: bool = False
    repoUrl: str | None = None
    repoUsername: str = ""
    repoPassword: Secret = ""


class SubscribableInfo(_StratosJson):
    alias: Id
    autoscalingPolicy: str | None = None
    deploymentPolicy: str | None = None
    artifactRepository: ArtifactRepository | None = None
    properties: ListOf[Property] = Field([], alias="property")
    dependencyAliases: ListOf[str] = []


class CartridgeSubscription(_StratosJson):
    """A cartridge used in an application: one cluster per subscription."""

    type: Id
    cartridgeMin: int = Field(ge=0)
    cartridgeMax: int
    subscribableInfo: SubscribableInfo

    @field_validator("cartridgeMax")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        return _not_below("cartridgeMin", value, info)

    @property
    def alias(self) -> str:
        return self.subscribableInfo.alias


class GroupSubscription(_StratosJson):
    """A cartridge group used in an application, by name, under an alias of the application."""

    name: Id
    alias: Id
    groupMinInstances: int = Field(1, ge=0)
    groupMaxInstances: int = 1
    groupScalingEnabled: bool = False
    deploymentPolicy: str | None = None
    cartridges: ListOf[CartridgeSubscription] = []
    groups: ListOf[GroupSubscription] = []

    @field_validator("groupMaxInstances")
    @classmethod
    def _max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        return _not_below("groupMinInstances", value, info)


def _walk(groups: list[GroupSubscription]) -> Iterator[GroupSubscription]:
    for group in groups:
        yield group
        yield from _walk(group.groups)


def _member_refs(cartridges: list[CartridgeSubscription], groups: list[GroupSubscription]) -> set[str]:
    return {f"cartridge.{c.alias}" for c in cartridges} | {f"group.{g.alias}" for g in groups}


class Components(_StratosJson):
    cartridges: ListOf[CartridgeSubscription] = []
    groups: ListOf[GroupSubscription] = []
    dependencies: Dependencies | None = None


class Application(RegisteredDefinition):
    _id_field = "applicationId"

    applicationId: Id
    alias: str | None = None
    name: str | None = None
    description: str | None = None
    multiTenant: bool = False
    properties: ListOf[Property] = Field([], alias="property")
    components: Components = Field(default_factory=Components)

    @field_validator("components")
    @classmethod
    def _aliases_resolve(cls, components: Components, info: ValidationInfo) -> Components:
        """Aliases are unique (they name clusters and group instances) and dependencies name them.

        The application's dependencies order its direct members, as Stratos's dependency builder does.
        """
        app = info.data.get("applicationId", "")
        subscriptions = components.cartridges + [c for g in _walk(components.groups) for c in g.cartridges]
        problems = [f"duplicate cartridge alias '{a}'" for a in _duplicates(c.alias for c in subscriptions)]
        problems += [f"duplicate group alias '{a}'" for a in _duplicates(g.alias for g in _walk(components.groups))]
        if components.dependencies:
            known = _member_refs(components.cartridges, components.groups)
            problems += [
                f"unknown alias '{ref}' in {field}" for field, ref in components.dependencies.unknown_aliases(known)
            ]
        if problems:
            raise ValueError("; ".join(f"application '{app}': {problem}" for problem in problems))
        return components

    def cartridge_subscriptions(self) -> Iterator[CartridgeSubscription]:
        """Every cartridge subscription, the application's own first, then those inside groups."""
        yield from self.components.cartridges
        for group in self.group_subscriptions():
            yield from group.cartridges

    def group_subscriptions(self) -> Iterator[GroupSubscription]:
        """Every group subscription, nested ones included, depth first."""
        return _walk(self.components.groups)

    def cluster_ids(self) -> dict[str, str]:
        """{subscription alias: cluster id}, the id Stratos gives each subscription's cluster."""
        return {s.alias: f"{self.applicationId}.{s.alias}.{s.type}.domain" for s in self.cartridge_subscriptions()}

    def references(self) -> list[Reference]:
        subscriptions = list(self.cartridge_subscriptions())
        groups = list(self.group_subscriptions())
        deployment_policies = [g.deploymentPolicy for g in groups] + [
            s.subscribableInfo.deploymentPolicy for s in subscriptions
        ]
        return _unique(
            [("cartridge", s.type) for s in subscriptions]
            + [("cartridgeGroup", g.name) for g in self.components.groups]  # nested: inline in these
            + [("autoscalingPolicy", p) for s in subscriptions if (p := s.subscribableInfo.autoscalingPolicy)]
            + [("deploymentPolicy", p) for p in deployment_policies if p]
        )

    def group_dependency_errors(self, groups: Mapping[str, CartridgeGroup]) -> list[str]:
        """Aliases in the used cartridge groups' dependencies that name none of the group's members.

        ``groups`` maps names to definitions. A nested group subscription is resolved in its parent's
        definition first (Stratos defines nested groups inline), then in ``groups``; a group found in
        neither is skipped (a missing top-level group is the registry's business, via references()).
        A member may be named by its alias in this application or, as older samples do, by its
        cartridge type or group name.
        """
        problems: list[str] = []

        def check(group: GroupSubscription, definition: CartridgeGroup | None) -> None:
            if definition is None:
                return
            if definition.dependencies:
                known = _member_refs(group.cartridges, group.groups)
                known |= {f"cartridge.{c.type}" for c in group.cartridges} | {f"group.{g.name}" for g in group.groups}
                problems.extend(
                    f"application '{self.applicationId}': unknown alias '{ref}' in {field} "
                    f"of cartridge group '{definition.name}' (group alias '{group.alias}')"
                    for field, ref in definition.dependencies.unknown_aliases(known)
                )
            for child in group.groups:
                check(child, definition.nested(child.name) or groups.get(child.name))

        for group in self.components.groups:
            check(group, groups.get(group.name))
        return problems


# --- Policies and network partitions ---------------------------------------------------------


class Threshold(_StratosJson):
    threshold: float = Field(gt=0)


class MemoryThreshold(_StratosJson):
    threshold: float = Field(gt=0, le=100)  # percent of the member's memory


class LoadThresholds(_StratosJson):
    """A missing metric plays no part in scaling decisions."""

    requestsInFlight: Threshold | None = None
    memoryConsumption: MemoryThreshold | None = None
    loadAverage: Threshold | None = None


FORECAST_MODES = ("forecast-only", "forecast-and-scale")


class PredictiveScaling(_StratosJson):
    """Opt-in predictive scaling (not in Stratos 4.1): a forecast of the cluster's requests in
    flight from its recorded history (docs/predictive-scaling.md)."""

    mode: Literal["forecast-only", "forecast-and-scale"] = Field(
        description="forecast-only: show what the forecast would do; forecast-and-scale: also scale out ahead of it"
    )
    horizonSeconds: float = Field(
        3600.0, gt=0, description="how far each forecast reaches; a new one is fitted when it runs out"
    )
    schedulingBufferSeconds: float = Field(
        300.0, ge=0, description="members are asked for this long before the forecast load (their start-up time)"
    )
    seasonSeconds: float = Field(86400.0, gt=0, description="the load's cycle (a day)")
    bucketSeconds: float = Field(300.0, gt=0, description="the history's resolution")

    @model_validator(mode="after")
    def _fits(self) -> PredictiveScaling:
        if self.schedulingBufferSeconds > self.horizonSeconds:
            raise ValueError(
                f"schedulingBufferSeconds {self.schedulingBufferSeconds:g} "
                f"is past horizonSeconds {self.horizonSeconds:g}"
            )
        if self.seasonSeconds < 2 * self.bucketSeconds:
            raise ValueError(f"seasonSeconds {self.seasonSeconds:g} must hold two buckets of {self.bucketSeconds:g}")
        return self


class AutoscalingPolicy(RegisteredDefinition):
    _id_field = "id"

    id: Id
    displayName: str | None = None
    description: str | None = None
    loadThresholds: LoadThresholds
    # Optional, not in Stratos 4.1 (its files load unchanged): what Kubernetes' HPA learnt.
    tolerance: float | None = Field(
        None,
        ge=0,
        lt=1,
        description=(
            "HPA's tolerance band: a metric within this fraction of its threshold keeps the current "
            "count (0.1 = 10 %); unset = Stratos's rules exactly"
        ),
    )
    scaleDownStabilisationSeconds: float | None = Field(
        None,
        ge=0,
        description=(
            "no scale-down within this many seconds of the cluster's last scaling action (HPA: 300); unset = none"
        ),
    )
    scaleDownAfter: int | None = Field(
        None, ge=1, description=("scale down only on this many consecutive scale-down requests; unset = Stratos's 4")
    )
    predictive: PredictiveScaling | None = Field(
        None, description="a forecast of the load, shown or acted on ahead of time; unset = none"
    )


class DeploymentPartition(_StratosJson):
    id: Id
    partitionMax: int = Field(ge=0)
    description: str | None = None
    properties: ListOf[Property] = Field([], alias="property")


class DeploymentNetworkPartition(_StratosJson):
    id: Id
    partitionAlgo: PartitionAlgorithm
    partitions: ListOf[DeploymentPartition] = Field(min_length=1)

    @field_validator("partitions")
    @classmethod
    def _distinct_partitions(cls, partitions: list[DeploymentPartition]) -> list[DeploymentPartition]:
        """Unique within a network partition; Stratos's samples reuse ``partition-1`` across them."""
        _reject_duplicates((p.id for p in partitions), "partition id")
        return partitions


class DeploymentPolicy(RegisteredDefinition):
    _id_field = "id"

    id: Id
    networkPartitions: ListOf[DeploymentNetworkPartition] = Field(min_length=1)

    @field_validator("networkPartitions")
    @classmethod
    def _distinct_network_partitions(
        cls, network_partitions: list[DeploymentNetworkPartition]
    ) -> list[DeploymentNetworkPartition]:
        _reject_duplicates((np.id for np in network_partitions), "network partition id")
        return network_partitions

    def references(self) -> list[Reference]:
        return _unique(("networkPartition", np.id) for np in self.networkPartitions)


def _split_groups(value: str | None) -> list[list[str]]:
    """``"np1|np2, np3"`` -> ``[["np1", "np2"], ["np3"]]`` (Stratos's separators)."""
    if value is None:
        return []
    groups = [[np.strip() for np in group.split("|")] for group in value.split(",")]
    if any(not np for group in groups for np in group):
        raise ValueError(f"{NETWORK_PARTITION_GROUPS} '{value}' has an empty network partition id")
    return groups


class ApplicationPolicy(RegisteredDefinition):
    _id_field = "id"

    id: Id
    algorithm: ApplicationAlgorithm
    networkPartitions: ListOf[Id] = Field(min_length=1)
    properties: ListOf[Property] = []

    @field_validator("properties")
    @classmethod
    def _groups_parse(cls, properties: list[Property]) -> list[Property]:
        for prop in properties:
            if prop.name == NETWORK_PARTITION_GROUPS:
                _split_groups(prop.value)
        return properties

    def network_partition_groups(self) -> list[list[str]]:
        """The network partitions grouped for bursting, from property ``networkPartitionGroups``.

        Empty when the property is not set.
        """
        value = next((p.value for p in self.properties if p.name == NETWORK_PARTITION_GROUPS), None)
        return _split_groups(value)

    def references(self) -> list[Reference]:
        grouped = [np for group in self.network_partition_groups() for np in group]
        return _unique(("networkPartition", np) for np in self.networkPartitions + grouped)


class NetworkPartitionPartition(_StratosJson):
    id: Id
    description: str | None = None
    properties: ListOf[Property] = Field([], alias="property")


KUBERNETES_CLUSTER_PROPERTY = "cluster"
"""The partition property naming the registered kubernetesCluster its members run on (Stratos 4.1's)."""


class NetworkPartition(RegisteredDefinition):
    _id_field = "id"

    id: Id
    provider: str | None = None
    partitions: ListOf[NetworkPartitionPartition] = []
    properties: ListOf[Property] = []

    @field_validator("partitions")
    @classmethod
    def _distinct_partitions(cls, partitions: list[NetworkPartitionPartition]) -> list[NetworkPartitionPartition]:
        _reject_duplicates((p.id for p in partitions), "partition id")
        return partitions

    def references(self) -> list[Reference]:
        """A Kubernetes network partition's partitions name their cluster (Stratos's property `cluster`)."""
        if (self.provider or "").lower() != "kubernetes":
            return []
        return _unique(
            ("kubernetesCluster", p.value)
            for part in self.partitions
            for p in part.properties
            if p.name == KUBERNETES_CLUSTER_PROPERTY and p.value
        )


# --- Kubernetes, tenants, users ----------------------------------------------------------------


class KubernetesHost(_StratosJson):
    hostId: Id
    hostname: str | None = None
    privateIPAddress: str | None = None
    publicIPAddress: str | None = None
    properties: ListOf[Property] = Field([], alias="property")


class KubernetesMaster(KubernetesHost):
    """The master node: same shape as a host."""


class PortRange(_StratosJson):
    lower: Port
    upper: Port

    @field_validator("upper")
    @classmethod
    def _upper_not_below_lower(cls, value: int, info: ValidationInfo) -> int:
        return _not_below("lower", value, info)


class KubernetesCluster(RegisteredDefinition):
    _id_field = "clusterId"

    clusterId: Id
    description: str | None = None
    kubernetesMaster: KubernetesMaster
    kubernetesHosts: ListOf[KubernetesHost] = []
    portRange: PortRange | None = None
    properties: ListOf[Property] = Field([], alias="property")


class Tenant(RegisteredDefinition):
    _id_field = "tenantDomain"

    tenantDomain: Id
    admin: Id
    adminPassword: Secret = ""
    firstName: str | None = None
    lastName: str | None = None
    email: str | None = None
    active: bool = True


class User(RegisteredDefinition):
    _id_field = "userName"

    userName: Id
    credential: Secret = ""
    role: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    email: str | None = None


# --- Per-application documents (stored with their application, not in the registry) ------------


class SignupRepository(ArtifactRepository):
    alias: Id


class ApplicationSignup(_StratosJson):
    applicationId: str | None = None
    artifactRepositories: ListOf[SignupRepository] = []


class DomainMapping(_StratosJson):
    cartridgeAlias: Id
    domainName: Id
    contextPath: str | None = None


class DomainMappings(_StratosJson):
    domainMappings: ListOf[DomainMapping] = []

    @model_validator(mode="before")
    @classmethod
    def _single_mapping(cls, data: object) -> object:
        """Stratos's sample ``domain-mappings.json`` is one bare mapping."""
        if isinstance(data, dict) and "cartridgeAlias" in data and "domainMappings" not in data:
            return {"domainMappings": [data]}
        return data


DEFINITION_KINDS: dict[str, type[RegisteredDefinition]] = {
    "cartridge": Cartridge,
    "cartridgeGroup": CartridgeGroup,
    "networkPartition": NetworkPartition,
    "deploymentPolicy": DeploymentPolicy,
    "autoscalingPolicy": AutoscalingPolicy,
    "applicationPolicy": ApplicationPolicy,
    "application": Application,
    "kubernetesCluster": KubernetesCluster,
    "tenant": Tenant,
    "user": User,
}
