"""Stratos 4.1 definitions: samples load and round-trip, broken documents are refused with the field named."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.base import Definition
from schemas.definitions import (
    DEFINITION_KINDS,
    Application,
    ApplicationPolicy,
    ApplicationSignup,
    AutoscalingPolicy,
    Cartridge,
    CartridgeGroup,
    CartridgeSubscription,
    DeploymentPolicy,
    DomainMappings,
    GroupSubscription,
    KubernetesCluster,
    NetworkPartition,
    Tenant,
    User,
)

SAMPLES = Path(__file__).parent / "samples" / "stratos"


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text())


LOADS = [
    ("php", Cartridge, "cartridge", "php"),
    ("tomcat", Cartridge, "cartridge", "tomcat"),
    ("cartridge-group-nested", CartridgeGroup, "cartridgeGroup", "web-group"),
    ("application-single-cartridge", Application, "application", "single-cartridge-app"),
    ("application-nested-group", Application, "application", "nested-group-app"),
    ("autoscaling-policy", AutoscalingPolicy, "autoscalingPolicy", "autoscaling-policy-1"),
    ("deployment-policy", DeploymentPolicy, "deploymentPolicy", "deployment-policy-1"),
    ("application-policy", ApplicationPolicy, "applicationPolicy", "application-policy-1"),
    ("network-partition", NetworkPartition, "networkPartition", "network-partition-1"),
    ("kubernetes-cluster", KubernetesCluster, "kubernetesCluster", "kubernetes-cluster-1"),
    ("tenant", Tenant, "tenant", "example.org"),
    ("user", User, "user", "deployer"),
]
PER_APPLICATION = [("application-signup", ApplicationSignup), ("domain-mappings", DomainMappings)]


@pytest.mark.parametrize(("name", "model", "kind", "definition_id"), LOADS, ids=[row[0] for row in LOADS])
def test_sample_loads_under_its_kind_and_id(name: str, model: type, kind: str, definition_id: str) -> None:
    definition = DEFINITION_KINDS[kind].model_validate(sample(name))
    assert isinstance(definition, model)
    assert definition.definition_id == definition_id


@pytest.mark.parametrize(
    ("name", "model"),
    [(row[0], row[1]) for row in LOADS] + PER_APPLICATION,
    ids=[row[0] for row in LOADS] + [row[0] for row in PER_APPLICATION],
)
def test_sample_round_trips_with_stratos_names(name: str, model: type[Definition]) -> None:
    original = model.model_validate(sample(name))
    dumped = original.model_dump(by_alias=True)
    assert model.model_validate(dumped) == original
    assert model.model_validate_json(original.model_dump_json(by_alias=True)) == original
    # Every key of the Stratos document comes back under its Stratos name ("property", not "properties").
    assert set(sample(name)) - {"groupScalingEnabled"} <= set(dumped)


def test_plain_dumps_use_stratos_names_too() -> None:
    """Stored bodies are read back as plain dicts by Stratos name (e.g. a partition's "property")."""
    policy = DeploymentPolicy.model_validate(sample("deployment-policy")).model_dump()
    assert policy["networkPartitions"][0]["partitions"][1]["property"] == [{"name": "zone", "value": "b"}]
    assert "property" in json.loads(Cartridge.model_validate(sample("php")).model_dump_json())


def test_registry_names_every_kind_once() -> None:
    assert set(DEFINITION_KINDS) == {
        "cartridge",
        "cartridgeGroup",
        "networkPartition",
        "deploymentPolicy",
        "autoscalingPolicy",
        "applicationPolicy",
        "application",
        "kubernetesCluster",
        "tenant",
        "user",
    }
    assert all(issubclass(model, Definition) for model in DEFINITION_KINDS.values())


# --- Lenient like Stratos ----------------------------------------------------------------------


def test_ports_and_booleans_written_as_strings_are_typed() -> None:
    php = Cartridge.model_validate(sample("php"))
    assert [(p.port, p.proxyPort) for p in php.portMapping] == [(80, 8280), (22, 8222)]
    assert php.multiTenant is False
    assert php.properties[0].value == "61616"  # a number where Stratos expects a string
    tomcat = Cartridge.model_validate(sample("tomcat"))
    assert tomcat.version == "7"
    assert tomcat.persistence is not None and tomcat.persistence.isRequired is True
    assert tomcat.persistence.volumes[0].size == 10
    cluster = KubernetesCluster.model_validate(sample("kubernetes-cluster"))
    assert cluster.portRange is not None and (cluster.portRange.lower, cluster.portRange.upper) == (30000, 32767)
    assert cluster.kubernetesHosts[0].properties == []  # "property": null
    assert Tenant.model_validate(sample("tenant")).active is True


def test_missing_lists_default_to_empty_and_unknown_keys_are_ignored() -> None:
    cartridge = Cartridge.model_validate({"type": "c1", "category": "data", "isPublic": True})
    assert cartridge.portMapping == cartridge.iaasProvider == cartridge.properties == cartridge.metadataKeys == []
    assert "isPublic" not in cartridge.model_dump(by_alias=True)
    group = CartridgeGroup.model_validate(sample("cartridge-group-nested"))
    assert group.groupScalingEnabled is True  # read by group scaling (actors/instances.py)
    assert not group.groups[0].groupScalingEnabled


def test_early_stratos_startup_order_string_is_read_as_aliases() -> None:
    doc = sample("application-nested-group")
    doc["components"]["dependencies"]["startupOrders"] = ["group.my-web-group, cartridge.my-tomcat"]
    app = Application.model_validate(doc)
    assert app.components.dependencies is not None
    assert app.components.dependencies.startupOrders[0].aliases == ["group.my-web-group", "cartridge.my-tomcat"]


def test_a_bare_domain_mapping_is_read_as_a_list_of_one() -> None:
    mappings = DomainMappings.model_validate({"cartridgeAlias": "php1", "domainName": "abc.com", "contextPath": "/abc"})
    assert [(m.cartridgeAlias, m.domainName) for m in mappings.domainMappings] == [("php1", "abc.com")]


def test_secrets_stay_out_of_repr_but_are_kept() -> None:
    tomcat = Cartridge.model_validate(sample("tomcat"))
    app = Application.model_validate(sample("application-nested-group"))
    others = [(Tenant, "tenant"), (User, "user"), (ApplicationSignup, "application-signup")]
    texts = [repr(tomcat), repr(app)] + [repr(model.model_validate(sample(name))) for model, name in others]
    for secret in ("mock-identity", "mock-credential", "s3cret-token", "admin123", "deployer123"):
        assert not any(secret in text for text in texts), secret
    assert tomcat.iaasProvider[0].credential == "mock-credential"


# --- Strict where Stratos is -------------------------------------------------------------------


def at(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting the value at a dotted path (numbers index lists)."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        target: Any = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


NESTED_APP = "application-nested-group"
DUPLICATE_TOMCAT = {"type": "tomcat", "cartridgeMin": 1, "cartridgeMax": 1, "subscribableInfo": {"alias": "my-tomcat"}}

BROKEN = [
    # (id, sample, model, mutation, loc fragment, message fragment)
    (
        "unknown-partition-algo",
        "deployment-policy",
        DeploymentPolicy,
        at("networkPartitions.0.partitionAlgo", "random"),
        ("networkPartitions", 0, "partitionAlgo"),
        "round-robin",
    ),
    (
        "unknown-application-algorithm",
        "application-policy",
        ApplicationPolicy,
        at("algorithm", "best-effort"),
        ("algorithm",),
        "all-at-once",
    ),
    (
        "unknown-termination-behaviour",
        "cartridge-group-nested",
        CartridgeGroup,
        at("dependencies.terminationBehaviour", "terminate-some"),
        ("dependencies", "terminationBehaviour"),
        "terminate-all",
    ),
    ("unknown-category", "php", Cartridge, at("category", "database"), ("category",), "load-balancer"),
    (
        "cartridge-min-above-max",
        NESTED_APP,
        Application,
        at("components.cartridges.0.cartridgeMin", 7),
        ("components", "cartridges", 0, "cartridgeMax"),
        "cartridgeMin 7 > cartridgeMax 6",
    ),
    (
        "group-min-above-max",
        NESTED_APP,
        Application,
        at("components.groups.0.groupMinInstances", 3),
        ("components", "groups", 0, "groupMaxInstances"),
        "groupMinInstances 3 > groupMaxInstances 2",
    ),
    (
        "negative-cartridge-min",
        NESTED_APP,
        Application,
        at("components.groups.0.groups.0.cartridges.0.cartridgeMin", -1),
        ("components", "groups", 0, "groups", 0, "cartridges", 0, "cartridgeMin"),
        "greater than or equal to 0",
    ),
    (
        "negative-group-min",
        NESTED_APP,
        Application,
        at("components.groups.0.groupMinInstances", -1),
        ("components", "groups", 0, "groupMinInstances"),
        "greater than or equal to 0",
    ),
    (
        "zero-requests-threshold",
        "autoscaling-policy",
        AutoscalingPolicy,
        at("loadThresholds.requestsInFlight.threshold", 0),
        ("loadThresholds", "requestsInFlight", "threshold"),
        "greater than 0",
    ),
    (
        "negative-load-threshold",
        "autoscaling-policy",
        AutoscalingPolicy,
        at("loadThresholds.loadAverage.threshold", -5),
        ("loadThresholds", "loadAverage", "threshold"),
        "greater than 0",
    ),
    (
        "memory-threshold-above-100",
        "autoscaling-policy",
        AutoscalingPolicy,
        at("loadThresholds.memoryConsumption.threshold", 101),
        ("loadThresholds", "memoryConsumption", "threshold"),
        "100",
    ),
    ("empty-policy-id", "autoscaling-policy", AutoscalingPolicy, at("id", ""), ("id",), "at least 1 character"),
    ("blank-cartridge-type", "php", Cartridge, at("type", "   "), ("type",), "at least 1 character"),
    (
        "empty-application-id",
        NESTED_APP,
        Application,
        at("applicationId", ""),
        ("applicationId",),
        "at least 1 character",
    ),
    (
        "empty-subscription-alias",
        NESTED_APP,
        Application,
        at("components.cartridges.0.subscribableInfo.alias", ""),
        ("components", "cartridges", 0, "subscribableInfo", "alias"),
        "at least 1 character",
    ),
    ("empty-user-name", "user", User, at("userName", ""), ("userName",), "at least 1 character"),
    ("missing-tenant-domain", "tenant", Tenant, lambda doc: doc.pop("tenantDomain"), ("tenantDomain",), "required"),
    (
        "duplicate-partition-id",
        "deployment-policy",
        DeploymentPolicy,
        at("networkPartitions.0.partitions.1.id", "partition-1"),
        ("networkPartitions", 0, "partitions"),
        "duplicate partition id 'partition-1'",
    ),
    (
        "duplicate-network-partition-id",
        "deployment-policy",
        DeploymentPolicy,
        lambda doc: doc["networkPartitions"].append(copy.deepcopy(doc["networkPartitions"][0])),
        ("networkPartitions",),
        "duplicate network partition id 'network-partition-1'",
    ),
    (
        "negative-partition-max",
        "deployment-policy",
        DeploymentPolicy,
        at("networkPartitions.0.partitions.0.partitionMax", -1),
        ("networkPartitions", 0, "partitions", 0, "partitionMax"),
        "greater than or equal to 0",
    ),
    (
        "deployment-policy-without-partitions",
        "deployment-policy",
        DeploymentPolicy,
        at("networkPartitions.0.partitions", []),
        ("networkPartitions", 0, "partitions"),
        "at least 1",
    ),
    (
        "duplicate-network-partition-partition",
        "network-partition",
        NetworkPartition,
        at("partitions.1.id", "partition-1"),
        ("partitions",),
        "duplicate partition id 'partition-1'",
    ),
    (
        "duplicate-cartridge-alias-in-nested-group",
        NESTED_APP,
        Application,
        lambda doc: doc["components"]["groups"][0]["groups"][0]["cartridges"].append(DUPLICATE_TOMCAT),
        ("components",),
        "application 'nested-group-app': duplicate cartridge alias 'my-tomcat'",
    ),
    (
        "duplicate-group-alias",
        NESTED_APP,
        Application,
        at("components.groups.0.groups.0.alias", "my-web-group"),
        ("components",),
        "application 'nested-group-app': duplicate group alias 'my-web-group'",
    ),
    (
        "unknown-startup-order-alias",
        NESTED_APP,
        Application,
        at("components.dependencies.startupOrders.0.aliases.1", "cartridge.foo"),
        ("components",),
        "application 'nested-group-app': unknown alias 'cartridge.foo' in startupOrders",
    ),
    (
        "startup-order-names-a-nested-member",
        NESTED_APP,
        Application,
        at("components.dependencies.startupOrders.0.aliases.0", "group.my-app-group"),
        ("components",),
        "application 'nested-group-app': unknown alias 'group.my-app-group' in startupOrders",
    ),
    (
        "unknown-scaling-dependent-alias",
        NESTED_APP,
        Application,
        at("components.dependencies.scalingDependents.0.aliases.0", "group.nope"),
        ("components",),
        "application 'nested-group-app': unknown alias 'group.nope' in scalingDependents",
    ),
    (
        "alias-without-prefix",
        NESTED_APP,
        Application,
        at("components.dependencies.startupOrders.0.aliases.1", "my-tomcat"),
        ("components", "dependencies", "startupOrders", 0, "aliases", 1),
        "'cartridge.<alias>' or 'group.<alias>'",
    ),
    (
        "group-alias-without-prefix",
        "cartridge-group-nested",
        CartridgeGroup,
        at("groups.0.dependencies.startupOrders.0.aliases.0", "service.my-php-app"),
        ("groups", 0, "dependencies", "startupOrders", 0, "aliases", 0),
        "'cartridge.<alias>' or 'group.<alias>'",
    ),
    (
        "nested-group-name-repeated",
        "cartridge-group-nested",
        CartridgeGroup,
        at("groups.0.name", "web-group"),
        ("groups",),
        "duplicate group 'web-group'",
    ),
    (
        "cartridge-listed-twice-in-group",
        "cartridge-group-nested",
        CartridgeGroup,
        at("cartridges", ["php", "php"]),
        ("cartridges",),
        "duplicate cartridge 'php'",
    ),
    ("port-not-a-number", "php", Cartridge, at("portMapping.0.port", "http"), ("portMapping", 0, "port"), "integer"),
    ("port-out-of-range", "php", Cartridge, at("portMapping.1.port", 70000), ("portMapping", 1, "port"), "65535"),
    ("multi-tenant-not-a-boolean", "php", Cartridge, at("multiTenant", "perhaps"), ("multiTenant",), "boolean"),
    (
        "application-policy-without-network-partitions",
        "application-policy",
        ApplicationPolicy,
        at("networkPartitions", []),
        ("networkPartitions",),
        "at least 1",
    ),
    (
        "empty-network-partition-in-groups",
        "application-policy",
        ApplicationPolicy,
        at("properties.0.value", "network-partition-1||network-partition-2"),
        ("properties",),
        "empty network partition id",
    ),
    (
        "port-range-reversed",
        "kubernetes-cluster",
        KubernetesCluster,
        at("portRange.lower", "40000"),
        ("portRange", "upper"),
        "lower 40000 > upper 32767",
    ),
    (
        "missing-kubernetes-master",
        "kubernetes-cluster",
        KubernetesCluster,
        lambda doc: doc.pop("kubernetesMaster"),
        ("kubernetesMaster",),
        "required",
    ),
]


@pytest.mark.parametrize(
    ("name", "model", "mutate", "loc", "message"), [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN]
)
def test_broken_definition_is_refused_naming_the_field(
    name: str, model: type[Definition], mutate: Callable[[dict[str, Any]], Any], loc: tuple, message: str
) -> None:
    doc = sample(name)
    mutate(doc)
    with pytest.raises(ValidationError) as raised:
        model.model_validate(doc)
    matching = [e for e in raised.value.errors() if e["loc"] == loc]
    assert matching, f"no error at {loc}: {raised.value.errors()}"
    assert any(message in e["msg"] for e in matching), matching


# --- References and cluster ids ----------------------------------------------------------------


def test_application_references_cartridges_top_level_groups_and_policies_nested_too() -> None:
    """Nested groups are defined inline in their parent group (as in Stratos): not referenced."""
    app = Application.model_validate(sample(NESTED_APP))
    assert app.references() == [
        ("cartridge", "tomcat"),
        ("cartridge", "php"),
        ("cartridgeGroup", "web-group"),
        ("autoscalingPolicy", "autoscaling-policy-1"),
        ("deploymentPolicy", "deployment-policy-1"),
        ("deploymentPolicy", "deployment-policy-2"),
    ]
    single = Application.model_validate(sample("application-single-cartridge"))
    assert single.references() == [
        ("cartridge", "php"),
        ("autoscalingPolicy", "autoscaling-policy-1"),
        ("deploymentPolicy", "deployment-policy-1"),
    ]


def test_cluster_ids_cover_every_subscription_inside_groups() -> None:
    app = Application.model_validate(sample(NESTED_APP))
    assert app.cluster_ids() == {
        "my-tomcat": "nested-group-app.my-tomcat.tomcat.domain",
        "my-php-web": "nested-group-app.my-php-web.php.domain",
        "my-tomcat-app": "nested-group-app.my-tomcat-app.tomcat.domain",
        "my-php-app": "nested-group-app.my-php-app.php.domain",
    }


def test_cartridge_group_references_its_cartridges_nested_groups_being_inline() -> None:
    group = CartridgeGroup.model_validate(sample("cartridge-group-nested"))
    assert group.references() == [("cartridge", "php"), ("cartridge", "tomcat")]


def test_policies_reference_their_network_partitions() -> None:
    assert DeploymentPolicy.model_validate(sample("deployment-policy")).references() == [
        ("networkPartition", "network-partition-1")
    ]
    assert ApplicationPolicy.model_validate(sample("application-policy")).references() == [
        ("networkPartition", "network-partition-1"),
        ("networkPartition", "network-partition-2"),
        ("networkPartition", "network-partition-3"),
    ]


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("php", Cartridge),
        ("autoscaling-policy", AutoscalingPolicy),
        ("network-partition", NetworkPartition),
        ("kubernetes-cluster", KubernetesCluster),
        ("tenant", Tenant),
        ("user", User),
    ],
    ids=["cartridge", "autoscaling-policy", "network-partition", "kubernetes-cluster", "tenant", "user"],
)
def test_leaf_definitions_use_nothing(name: str, model: type) -> None:
    assert model.model_validate(sample(name)).references() == []


def test_network_partition_groups_split_groups_then_partitions() -> None:
    policy = ApplicationPolicy.model_validate(sample("application-policy"))
    assert policy.network_partition_groups() == [
        ["network-partition-1", "network-partition-2"],
        ["network-partition-3"],
    ]
    unset = ApplicationPolicy(id="p", algorithm="all-at-once", networkPartitions=["np1"])
    assert unset.network_partition_groups() == []


# --- Group dependencies, resolved against an application -------------------------------------


def test_group_dependencies_resolve_against_the_applications_aliases() -> None:
    app = Application.model_validate(sample(NESTED_APP))
    group = CartridgeGroup.model_validate(sample("cartridge-group-nested"))
    assert app.group_dependency_errors({"web-group": group}) == []


def test_group_dependencies_may_name_members_by_type_or_group_name() -> None:
    doc = sample("cartridge-group-nested")
    doc["dependencies"]["startupOrders"] = [{"aliases": ["group.app-group", "cartridge.php"]}]
    group = CartridgeGroup.model_validate(doc)
    app = Application.model_validate(sample(NESTED_APP))
    assert app.group_dependency_errors({"web-group": group}) == []


def test_group_dependency_naming_no_member_is_reported_with_application_and_alias() -> None:
    doc = sample("cartridge-group-nested")
    doc["groups"][0]["dependencies"]["startupOrders"][0]["aliases"][1] = "cartridge.my-tomcat"  # not in app-group
    group = CartridgeGroup.model_validate(doc)  # the group alone cannot tell
    app = Application.model_validate(sample(NESTED_APP))
    assert app.group_dependency_errors({"web-group": group}) == [
        "application 'nested-group-app': unknown alias 'cartridge.my-tomcat' in startupOrders "
        "of cartridge group 'app-group' (group alias 'my-app-group')"
    ]


def test_group_dependencies_of_an_unknown_group_are_left_to_the_registry() -> None:
    app = Application.model_validate(sample(NESTED_APP))
    assert app.group_dependency_errors({}) == []


# --- Properties --------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=1000)


def subscription(low: int, high: int) -> dict[str, Any]:
    return {"type": "php", "cartridgeMin": low, "cartridgeMax": high, "subscribableInfo": {"alias": "php1"}}


@given(counts, counts)
def test_any_min_not_above_max_is_accepted_and_any_other_refused(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert CartridgeSubscription.model_validate(subscription(low, high)).cartridgeMax == high
    group = GroupSubscription(name="g", alias="g1", groupMinInstances=low, groupMaxInstances=high)
    assert group.groupMaxInstances == high
    if low < high:
        with pytest.raises(ValidationError, match="cartridgeMax"):
            CartridgeSubscription.model_validate(subscription(high, low))
        with pytest.raises(ValidationError, match="groupMaxInstances"):
            GroupSubscription(name="g", alias="g1", groupMinInstances=high, groupMaxInstances=low)


ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(st.lists(st.lists(ids, min_size=1, max_size=4), min_size=1, max_size=4))
def test_network_partition_groups_read_back_what_was_written(groups: list[list[str]]) -> None:
    value = ", ".join(" | ".join(group) for group in groups)
    policy = ApplicationPolicy(
        id="p",
        algorithm="one-after-another",
        networkPartitions=[np for group in groups for np in group],
        properties=[{"name": "networkPartitionGroups", "value": value}],
    )
    assert policy.network_partition_groups() == groups
