"""From an application and its definitions to cluster specs: startup order, groups, policies."""

from __future__ import annotations

import pytest

from actors.topology_plan import build_cluster_specs, clusters_ready_to_start
from tests.conftest import sample

APP = "nested-group-app"


def resolved_for_nested_app() -> dict[str, dict]:
    dp1 = sample("deployment-policy.json")
    dp2 = {
        **dp1,
        "id": "deployment-policy-2",
        "networkPartitions": [{**dp1["networkPartitions"][0], "partitionAlgo": "one-after-another"}],
    }
    return {
        "applicationPolicy/ap": {
            "id": "ap",
            "algorithm": "one-after-another",
            "networkPartitions": ["network-partition-1"],
        },
        "cartridge/php": sample("php.json"),
        "cartridge/tomcat": sample("tomcat.json"),
        "cartridgeGroup/web-group": sample("cartridge-group-nested.json"),
        "autoscalingPolicy/autoscaling-policy-1": sample("autoscaling-policy.json"),
        "deploymentPolicy/deployment-policy-1": dp1,
        "deploymentPolicy/deployment-policy-2": dp2,
        "networkPartition/network-partition-1": sample("network-partition.json"),
    }


def cid(alias: str, cartridge: str) -> str:
    return f"{APP}.{alias}.{cartridge}.domain"


def test_every_subscription_becomes_a_cluster_with_its_policies_resolved():
    specs = {
        s.alias: s
        for s in build_cluster_specs(sample("application-nested-group.json"), "ap", resolved_for_nested_app())
    }
    assert set(specs) == {"my-tomcat", "my-php-web", "my-tomcat-app", "my-php-app"}
    tomcat = specs["my-tomcat"]
    assert (tomcat.cluster_id, tomcat.min, tomcat.max) == (cid("my-tomcat", "tomcat"), 2, 6)
    assert tomcat.deployment_policy_id == "deployment-policy-2"
    assert tomcat.partition_algorithm == "one-after-another"
    # a group's deployment policy is inherited by the subscriptions inside it, nested ones too
    assert specs["my-php-app"].deployment_policy_id == "deployment-policy-1"
    assert specs["my-php-app"].partition_algorithm == "round-robin"
    assert [p.max for p in tomcat.partitions] == [3, 3]
    assert tomcat.thresholds == {"requests_in_flight": 20.0, "memory_consumption": 70.0, "load_average": 70.0}
    assert tomcat.partitions[0].provider == "mock"


def test_startup_order_comes_from_the_group_definitions_and_the_application():
    specs = build_cluster_specs(sample("application-nested-group.json"), "ap", resolved_for_nested_app())
    clusters = {s.cluster_id: s for s in specs}
    status: dict[str, str] = {}
    started: tuple[str, ...] = ()
    waves = []
    while len(started) < len(clusters):
        wave = clusters_ready_to_start(clusters, status, started)
        assert wave, f"stuck after {started}"
        waves.append(sorted(s.alias for s in wave))
        started += tuple(s.cluster_id for s in wave)
        status.update({s.cluster_id: "Active" for s in wave})
    # app-group: php-app before tomcat-app; web-group: app-group before php-web; app: web-group before tomcat
    assert waves == [["my-php-app"], ["my-tomcat-app"], ["my-php-web"], ["my-tomcat"]]


def test_siblings_without_an_order_start_together():
    app = sample("application-single-cartridge.json")
    second = {
        **app["components"]["cartridges"][0],
        "subscribableInfo": {**app["components"]["cartridges"][0]["subscribableInfo"], "alias": "php2"},
    }
    app["components"]["cartridges"].append(second)
    resolved = {
        "applicationPolicy/ap": {"id": "ap", "networkPartitions": []},
        "cartridge/php": sample("php.json"),
        "autoscalingPolicy/autoscaling-policy-1": sample("autoscaling-policy.json"),
        "deploymentPolicy/deployment-policy-1": sample("deployment-policy.json"),
    }
    specs = {s.cluster_id: s for s in build_cluster_specs(app, "ap", resolved)}
    assert len(clusters_ready_to_start(specs, {}, ())) == 2


def test_a_policy_allowing_no_network_partition_of_the_deployment_policy_is_refused():
    resolved = resolved_for_nested_app()
    resolved["applicationPolicy/ap"]["networkPartitions"] = ["elsewhere"]
    with pytest.raises(ValueError, match="no network partition allowed by the application policy"):
        build_cluster_specs(sample("application-nested-group.json"), "ap", resolved)
