"""Deploy, undeploy, the runtime tree, clusters, git hooks and tenant isolation over REST."""

from __future__ import annotations

import pytest

from infra.log.commands_client import CommandClient
from infra.log.kafka import read_to_end
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted
from tests.conftest import wait_until
from tests.test_api_platform import define_samples, platform, tenant  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
APP = "single-cartridge-app"
CLUSTER = "single-cartridge-app.php1.php.domain"


def deployed(client) -> dict:
    """Define the samples, deploy, and wait until the runtime shows the cluster's members."""
    define_samples(client)
    reply = client.post(f"/applications/{APP}/deploy/application-policy-1")
    assert reply.status_code == 202, reply.text
    assert reply.json()["message"] == f"Application deployed successfully: [application] {APP}"

    def cluster_with_members():
        runtime = client.get(f"/applications/{APP}/runtime").json()
        instances = runtime["applicationInstances"]
        clusters = instances[0]["clusterInstances"] if instances else []
        return clusters[0] if clusters and clusters[0]["member"] else None

    return wait_until(cluster_with_members, message="the cluster and its members in the runtime")


def test_deploy_shows_the_cluster_with_cartridge_min_members(tenant):
    cluster = deployed(tenant)
    assert cluster["clusterId"] == CLUSTER and cluster["serviceName"] == "php"
    assert len(cluster["member"]) == 1  # cartridgeMin 1
    member = cluster["member"][0]
    assert member["status"] == "Created"
    assert member["partitionId"] == "partition-1" and member["networkPartitionId"] == "network-partition-1"
    assert tenant.get(f"/cluster/{CLUSTER}").json()["member"] == cluster["member"]
    assert tenant.get("/applications/" + APP).json()["status"] == "Deployed"


def test_runtime_follows_the_member_lifecycle_with_its_ips(platform, tenant):
    domain = tenant.get("/whoami").json()["tenant"]
    member = deployed(tenant)["member"][0]["memberId"]
    commands = CommandClient(platform.settings)
    try:
        target = aggregate_id(domain, "cluster", CLUSTER)
        for command in (
            C.ReportNodeCreated(member_id=member, node_id="node-1", private_ip="10.0.0.7", public_ip="192.0.2.7"),
            C.ReportInstanceStatus(member_id=member, status="Started"),
            C.ReportInstanceStatus(member_id=member, status="Activated"),
        ):
            assert isinstance(commands.call(target, command, tenant=domain), CommandAccepted)
    finally:
        commands.close()

    def active():
        runtime = tenant.get(f"/applications/{APP}/runtime").json()
        return runtime if runtime["status"] == "Active" else None

    runtime = wait_until(active, message="the application Active in the runtime")
    cluster = runtime["applicationInstances"][0]["clusterInstances"][0]
    assert cluster["status"] == "Active"
    assert (
        cluster["member"][0] | {"status": "Active", "defaultPrivateIP": "10.0.0.7", "defaultPublicIP": "192.0.2.7"}
        == cluster["member"][0]
    )


def test_used_definitions_cannot_be_removed_while_deployed_and_undeploy_answers_202(tenant):
    deployed(tenant)
    refused = tenant.delete("/autoscalingPolicies/autoscaling-policy-1")
    assert refused.status_code == 400 and APP in refused.json()["message"]
    assert tenant.delete(f"/applications/{APP}").status_code == 400  # deployed: undeploy first
    again = tenant.post(f"/applications/{APP}/deploy/application-policy-1")
    assert again.status_code == 409 and "already" in again.json()["message"]
    reply = tenant.post(f"/applications/{APP}/undeploy", params={"force": "true"})
    assert reply.status_code == 202, reply.text
    wait_until(
        lambda: tenant.get(f"/cluster/{CLUSTER}").json()["status"] == "Terminating", message="the cluster terminating"
    )
    member = tenant.get(f"/cluster/{CLUSTER}").json()["member"][0]
    assert member["terminating"] is True


@pytest.mark.parametrize("path", ["/applications/nope/deploy/application-policy-1", "/applications/nope/undeploy"])
def test_deploy_or_undeploy_of_an_unknown_application_is_404(tenant, path):
    reply = tenant.post(path)
    assert reply.status_code == 404 and "application 'nope'" in reply.json()["message"]


def test_deploy_with_an_unknown_policy_is_404_naming_it(tenant):
    define_samples(tenant)
    reply = tenant.post(f"/applications/{APP}/deploy/no-such-policy")
    assert reply.status_code == 404 and "no-such-policy" in reply.json()["message"]
    assert tenant.get(f"/applications/{APP}").json()["status"] == "Created"


def test_git_hook_publishes_artifact_updated_for_the_clusters_of_that_repository(platform, tenant):
    deployed(tenant)
    reply = tenant.post(
        "/repo/notify",
        json={
            "repository": {"url": "https://github.com/imesh/stratos-php-applications", "name": "x"},
            "after": "abc123",
        },
    )
    assert reply.status_code == 200 and CLUSTER in reply.json()["message"]
    notices = [
        d.record.payload
        for d in read_to_end(platform.settings, "instance-notifier")
        if d.record.payload.cluster_id == CLUSTER
    ]
    assert [(n.type, n.commit) for n in notices][-1] == ("ArtifactUpdated", "abc123")
    other = tenant.post("/repo/notify", json={"repository": {"url": "https://example.org/other.git"}})
    assert other.status_code == 200 and "[clusters] none" in other.json()["message"]


def test_iaas_providers_lists_the_configured_providers(tenant):
    assert tenant.get("/iaasProviders").json() == {"iaasProviders": ["mock"]}


def test_a_tenant_cannot_see_change_or_deploy_another_tenants_resources(platform, tenant):
    deployed(tenant)
    other = platform.new_tenant()
    with platform.client(f"admin@{other}", "tenant-pw") as intruder:
        assert intruder.get("/cartridges").json() == []
        assert intruder.get("/applications").json() == []
        for path in ("/cartridges/php", f"/applications/{APP}", f"/applications/{APP}/runtime", f"/cluster/{CLUSTER}"):
            reply = intruder.get(path)
            assert reply.status_code == 404, path
        assert intruder.delete("/cartridges/php").status_code == 404
        assert (
            intruder.put(
                "/autoscalingPolicies",
                json={"id": "autoscaling-policy-1", "loadThresholds": {"loadAverage": {"threshold": 1}}},
            ).status_code
            == 404
        )
        assert intruder.post(f"/applications/{APP}/deploy/application-policy-1").status_code == 404
        assert intruder.post(f"/applications/{APP}/undeploy").status_code == 404
    assert tenant.get("/cartridges/php").status_code == 200
    assert tenant.get("/autoscalingPolicies/autoscaling-policy-1").json()["loadThresholds"]["loadAverage"] != {
        "threshold": 1.0
    }
