"""Containers as an IaaS: a deployment on a registered kubernetesCluster gets its members as pods
(and its cluster as a Service) through libcloud's Kubernetes driver, and a Docker target gets
containers through libcloud's Docker driver, both checked on recorded API conversations
(tests/recorded_http.py) with libcloud's own test HTTP class, never with stubs of our code."""

from __future__ import annotations

import threading
import uuid

import pytest
from libcloud.container.drivers.docker import DockerContainerDriver
from libcloud.container.drivers.kubernetes import KubernetesContainerDriver

from actors.application import ApplicationState, outstanding
from actors.cluster import with_partition
from actors.topology_plan import build_cluster_specs
from infra.api.metadata_token import MemberTokens
from infra.cloud.controller import CloudController
from infra.cloud.iaas.containers import dns_name, label_value, service_name
from infra.cloud.iaas.providers import IaasConfigError, IaasTarget, build_driver, create_options, node_name
from infra.log.kafka import ensure_topics
from schemas import commands as C
from schemas import events as E
from schemas.definitions import Cartridge, NetworkPartition
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted
from tests.conftest import RunningNode, events_of, sample, wait_until
from tests.recorded_http import Cassette, replaying
from tests.test_runtime_flow import add

T = "carbon.super"
K8S = {
    "networkPartition": "kubernetes/network-partition.json",
    "cartridge": "kubernetes/php.json",
    "deploymentPolicy": "kubernetes/deployment-policy.json",
    "applicationPolicy": "kubernetes/application-policy.json",
    "application": "kubernetes/application.json",
}
CLUSTER_ID = "k8s-app.php1.php-k8s.domain"
PODS = "/api/v1/namespaces/default/pods"


def resolved() -> dict[str, dict]:
    """What a deployment of the Kubernetes sample resolves (every definition it uses)."""
    found = {
        f"{kind}/{body.get('id') or body.get('type') or body.get('applicationId')}": body
        for kind, body in ((k, sample(n)) for k, n in K8S.items())
        if kind != "application"
    }
    found["autoscalingPolicy/autoscaling-policy-1"] = sample("autoscaling-policy.json")
    found["kubernetesCluster/kubernetes-cluster-1"] = sample("kubernetes-cluster.json")
    return found


def test_a_kubernetes_network_partition_uses_its_cluster_and_a_deployment_resolves_it():
    partition = NetworkPartition.model_validate(sample(K8S["networkPartition"]))
    assert partition.references() == [("kubernetesCluster", "kubernetes-cluster-1")]  # in use while it is
    assert NetworkPartition.model_validate(sample("network-partition.json")).references() == []
    state = ApplicationState(
        aggregate_id=f"{T}/application/k8s-app",
        kind="application",
        resolved={"networkPartition/network-partition-k8s": sample(K8S["networkPartition"])},
    )
    assert ("kubernetesCluster", "kubernetes-cluster-1") in outstanding(state)


def test_members_of_a_kubernetes_partition_are_started_with_the_clusters_master_and_payload():
    (spec,) = build_cluster_specs(sample(K8S["application"]), "application-policy-k8s", resolved())
    part = spec.partitions[0]
    assert part.provider == "kubernetes" and part.properties == {
        "cluster": "kubernetes-cluster-1",
        "kubernetesMasterHost": "172.17.8.101",
        "kubernetesMasterPort": "8080",
        "kubernetesMasterProtocol": "http",
        "payload_parameter.MB_IP": "172.17.8.1",
        "payload_parameter.MB_PORT": "1883",
    }
    target = IaasTarget.from_event(part.provider, with_partition(spec.iaas["kubernetes"], part))
    assert target.type == "kubernetes" and target.image_id == "stratos/php:4.1.5"
    assert target.properties["kubernetesMasterHost"] == "172.17.8.101"


def test_partition_properties_override_the_cartridges_as_in_stratos():
    entry = Cartridge.model_validate(sample("php.json")).iaasProvider[0].model_dump()
    (spec,) = build_cluster_specs(
        sample("application-single-cartridge.json"),
        "application-policy-1",
        {
            "cartridge/php": sample("php.json"),
            "autoscalingPolicy/autoscaling-policy-1": sample("autoscaling-policy.json"),
            "deploymentPolicy/deployment-policy-1": sample("deployment-policy.json"),
            "applicationPolicy/application-policy-1": sample("application-policy.json"),
            "networkPartition/network-partition-1": sample("network-partition.json"),
        },
    )
    zone_b = next(p for p in spec.partitions if p.id == "partition-2")
    properties = {p["name"]: p["value"] for p in with_partition(entry, zone_b)["property"]}
    assert properties["zone"] == "b" and properties["region"] == "default"
    assert properties["instanceType"] == "RegionOne/aa5f45a2-c6d6-419d-917a-9dd2e3888594"


@pytest.mark.parametrize(
    "properties, words",
    [
        ({}, "partition's property 'cluster' to name a registered kubernetesCluster"),
        ({"kubernetesMasterHost": "10.0.0.1", "kubernetesMasterProtocol": "https"}, "needs KUBERNETES_MASTER_CA_CERT"),
        ({"kubernetesMasterHost": "10.0.0.1", "kubernetesMasterPort": "api"}, "'api' is not a port number"),
    ],
    ids=["no cluster", "https without a CA", "bad port"],
)
def test_a_kubernetes_target_that_cannot_work_is_named_before_any_call(properties, words):
    with pytest.raises(IaasConfigError, match=words):
        build_driver(IaasTarget(type="kubernetes", image_id="stratos/php:4.1.5", properties=properties), "unused")


@pytest.mark.parametrize(
    "text, name",
    [("php1.1c1191347", "php1.1c1191347"), ("My_Alias.AB", "my-alias.ab"), ("x" * 300, None)],
    ids=["member id", "upper case", "too long"],
)
def test_kubernetes_names(text, name):
    made = dns_name(text)
    assert len(made) <= 253 and made == (name or made) and made[0].isalnum() and made[-1].isalnum()
    assert len(service_name(text)) <= 63 and service_name(text)[0].isalpha()
    assert len(label_value(text)) <= 63


@pytest.mark.integration
def test_container_members_are_created_and_destroyed_through_the_recorded_kubernetes_api(broker, tmp_path, monkeypatch):
    """The whole path on the broker: deploy on the registered cluster, the cloud controller makes
    the cluster's Service and the member's pod, the member is Initialized with the pod's address;
    undeploying deletes the pod, then the Service with the cluster's last member."""
    cassette = Cassette(
        "kubernetes/member-lifecycle.json", bind={("POST", PODS): lambda pod: {"member": pod["metadata"]["name"]}}
    )
    monkeypatch.setattr(KubernetesContainerDriver.connectionCls, "conn_class", replaying(cassette))
    from infra.settings import Settings

    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        state_dir=tmp_path,
        cloud_reconcile_seconds=3600,
        api_port=9555,
    )
    ensure_topics(settings)
    node = RunningNode(settings)
    controller = CloudController(settings)
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    from infra.log.commands_client import CommandClient

    client = CommandClient(settings)
    try:
        wait_until(controller.ready.is_set, timeout=30, message="the cloud controller's assignment")
        add(client, "kubernetesCluster", sample("kubernetes-cluster.json"))
        add(client, "autoscalingPolicy", sample("autoscaling-policy.json"))
        for kind, name in K8S.items():
            assert isinstance(add(client, kind, sample(name)), CommandAccepted), name
        app = aggregate_id(T, "application", "k8s-app")
        reply = client.call(app, C.DeployApplication(application_policy_id="application-policy-k8s"))
        assert isinstance(reply, CommandAccepted), reply
        cluster = aggregate_id(T, "cluster", CLUSTER_ID)

        def initialized():
            return next(
                (e.payload for e in events_of(settings, cluster) if isinstance(e.payload, E.MemberInitialized)), None
            )

        member = wait_until(initialized, timeout=60, message="the member Initialized on its pod")
        assert cassette.unexpected == []
        assert cassette.endpoints == {("172.17.8.101", 8080, False)}  # the registered master, plain HTTP
        assert (member.node_id, member.private_ip) == ("6a1f3c2e-7d4b-4c1a-9e55-2b8f0d6c9a41", "10.244.1.7")
        assert member.member_id.startswith("php1.") and cassette.values["member"] == node_name(
            IaasTarget(type="kubernetes"), member.member_id
        )

        (service,) = cassette.sent("POST", "/api/v1/namespaces/default/services")
        assert service["spec"]["selector"] == {"stratos.apache.org/cluster": CLUSTER_ID}
        assert service["spec"]["ports"] == [{"name": "http-80", "protocol": "TCP", "port": 80, "targetPort": 80}]
        (pod,) = cassette.sent("POST", PODS)
        assert pod["metadata"]["labels"]["stratos.apache.org/cluster"] == CLUSTER_ID
        (container,) = pod["spec"]["containers"]
        assert container["image"] == "stratos/php:4.1.5" and container["ports"] == [
            {"containerPort": 80, "protocol": "TCP"}
        ]
        env = {v["name"]: v["value"] for v in container["env"]}
        assert env["MEMBER_ID"] == member.member_id and env["CLUSTER_ID"] == CLUSTER_ID
        assert env["MB_IP"] == "172.17.8.1" and env["CARTRIDGE_ALIAS"] == "php1"  # Stratos's payload
        assert env["METADATA_SERVICE_URL"] == "http://127.0.0.1:9555"
        claim = MemberTokens.in_state_dir(tmp_path).check(env["TOKEN"])
        assert (claim.tenant, claim.application_id, claim.member_id) == (T, "k8s-app", member.member_id)

        assert isinstance(client.call(app, C.UndeployApplication()), CommandAccepted)
        wait_until(
            lambda: any(isinstance(e.payload, E.MemberTerminated) for e in events_of(settings, cluster)),
            timeout=60,
            message="the member terminated",
        )
        wait_until(lambda: cassette.finished, timeout=30, message="the recorded conversation to its end")
        assert cassette.unexpected == []
    finally:
        client.close()
        controller.stop()
        thread.join(20)
        node.stop()
    assert cassette.unexpected == []


def test_docker_members_are_containers_with_the_payload_through_the_recorded_engine_api(monkeypatch):
    cassette = Cassette(
        "docker/member-lifecycle.json",
        bind={("POST", "/v1.21/containers/create"): lambda _body: {"member": "php1.abc"}},
    )
    monkeypatch.setattr(DockerContainerDriver.connectionCls, "conn_class", replaying(cassette))
    target = IaasTarget(
        type="docker",
        image_id="stratos/php:4.1.5",
        properties={"endpoint": "http://10.0.0.2:2375", "payload_parameter.LOG_LEVEL": "DEBUG"},
    )
    cassette.values["member"] = "php1.abc"
    driver = build_driver(target, "unused")
    node = driver.create_node(
        **create_options(
            target,
            driver,
            "php1.abc",
            {"memberId": "php1.abc", "clusterId": "app.php1.php.domain", "ports": "http:80", "TOKEN": "stm1.x.y"},
        )
    )
    assert (node.name, node.private_ips) == ("php1.abc", ["172.17.0.5"])
    assert cassette.endpoints == {("10.0.0.2", 2375, False)}
    (created,) = cassette.sent("POST", "/v1.21/containers/create")
    assert created["Image"] == "stratos/php:4.1.5" and created["ExposedPorts"] == {"80/tcp": {}}
    assert {"MEMBER_ID=php1.abc", "CLUSTER_ID=app.php1.php.domain", "TOKEN=stm1.x.y", "LOG_LEVEL=DEBUG"} <= set(
        created["Env"]
    )
    assert created["Labels"]["stratos.apache.org/member-id"] == "php1.abc"
    assert driver.destroy_node(node) is True
    assert cassette.finished and cassette.unexpected == []
