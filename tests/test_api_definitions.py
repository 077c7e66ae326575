"""CRUD of every Stratos definition through the REST API: codes, messages, in-use rules."""

from __future__ import annotations

import pytest

from tests.conftest import sample, wait_until
from tests.test_api_platform import SAMPLES, define_samples, platform, tenant  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration

ID_FIELD = {
    "networkPartitions": "id",
    "cartridges": "type",
    "cartridgeGroups": "name",
    "autoscalingPolicies": "id",
    "deploymentPolicies": "id",
    "applicationPolicies": "id",
    "applications": "applicationId",
    "kubernetesClusters": "clusterId",
    "users": "userName",
}


def test_stratos_samples_are_accepted_unchanged_and_read_back(tenant):
    define_samples(tenant)
    for path, name in SAMPLES:
        body = sample(name)
        id = body[ID_FIELD[path]]
        listed = tenant.get(f"/{path}")
        assert listed.status_code == 200 and id in [x[ID_FIELD[path]] for x in listed.json()], name
        one = tenant.get(f"/{path}/{id}")
        assert one.status_code == 200 and one.json()[ID_FIELD[path]] == id, name
    php = tenant.get("/cartridges/php").json()
    assert php["portMapping"][0]["port"] == 80 and php["property"]  # Stratos names, typed values
    assert tenant.get("/applications/single-cartridge-app").json()["status"] == "Created"
    assert "credential" not in tenant.get("/users/deployer").json()


def test_add_answers_201_with_a_stratos_message_and_location(tenant):
    reply = tenant.post("/cartridges", json=sample("php.json"))
    assert reply.status_code == 201
    assert reply.json()["status"] == "success"
    assert reply.json()["message"] == "Cartridge added successfully: [cartridgeType] php"
    assert reply.headers["Location"] == "/api/cartridges/php"


def test_duplicate_is_409_and_the_first_is_kept(tenant):
    assert tenant.post("/cartridges", json=sample("php.json")).status_code == 201
    again = tenant.post("/cartridges", json={**sample("php.json"), "displayName": "other"})
    assert again.status_code == 409
    assert again.json() == {"status": "error", "message": "cartridge 'php' already exists"}
    assert tenant.get("/cartridges/php").json()["displayName"] == "php"


@pytest.mark.parametrize("method", ["get", "delete"])
def test_unknown_id_is_404_naming_it(tenant, method):
    reply = getattr(tenant, method)("/autoscalingPolicies/no-such-policy")
    assert reply.status_code == 404
    assert reply.json() == {"status": "error", "message": "autoscalingPolicy 'no-such-policy' not found"}


def test_update_of_unknown_id_is_404(tenant):
    reply = tenant.put("/autoscalingPolicies", json=sample("autoscaling-policy.json"))
    assert reply.status_code == 404 and "autoscaling-policy-1" in reply.json()["message"]


def test_update_changes_what_is_read(tenant):
    policy = sample("autoscaling-policy.json")
    assert tenant.post("/autoscalingPolicies", json=policy).status_code == 201
    policy["loadThresholds"]["loadAverage"]["threshold"] = 42
    reply = tenant.put("/autoscalingPolicies", json=policy)
    assert reply.status_code == 200 and reply.json()["status"] == "success"
    assert tenant.get("/autoscalingPolicies/autoscaling-policy-1").json()["loadThresholds"]["loadAverage"] == {
        "threshold": 42.0
    }


def test_invalid_json_is_400(tenant):
    reply = tenant.post("/cartridges", content=b'{"type": "php",', headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["status"] == "error"
    assert "JSON" in reply.json()["message"]


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/cartridges", {**sample("php.json"), "category": "toaster"}, "category"),
        ("/cartridges", {"category": "framework"}, "type"),
        (
            "/applications",
            {
                **sample("application-single-cartridge.json"),
                "components": {
                    "cartridges": [
                        {"type": "php", "cartridgeMin": 3, "cartridgeMax": 1, "subscribableInfo": {"alias": "a"}}
                    ]
                },
            },
            "components.cartridges.0.cartridgeMax",
        ),
        (
            "/deploymentPolicies",
            {
                "id": "d",
                "networkPartitions": [
                    {"id": "np", "partitionAlgo": "random", "partitions": [{"id": "p", "partitionMax": 1}]}
                ],
            },
            "networkPartitions.0.partitionAlgo",
        ),
    ],
    ids=["enum", "missing-id", "max-below-min", "nested-enum"],
)
def test_invalid_body_is_400_naming_the_field_path(tenant, path, body, field):
    reply = tenant.post(path, json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"].startswith(f"{field}:"), reply.json()
    assert tenant.get(path).json() == []


def test_a_password_longer_than_bcrypt_reads_is_400_naming_the_field_and_nothing_is_stored(tenant):
    forty_characters_eighty_bytes = "é" * 40
    reply = tenant.post("/users", json={"userName": "longpass", "credential": forty_characters_eighty_bytes})
    assert reply.status_code == 400, reply.text
    assert reply.json()["message"].startswith("credential: at most 72 bytes"), reply.json()
    assert tenant.get("/users/longpass").status_code == 404
    assert tenant.post("/users", json={"userName": "longpass", "credential": "é" * 36}).status_code == 201


def test_a_reference_to_an_unknown_definition_is_400_naming_it(tenant):
    define_samples(tenant)
    reply = tenant.post("/applications", json=sample("application-nested-group.json"))
    assert reply.status_code == 400
    assert "deploymentPolicy 'deployment-policy-2'" in reply.json()["message"]
    group = tenant.post("/cartridgeGroups", json={"name": "g2", "cartridges": ["php", "mysql"]})
    assert group.status_code == 400 and "cartridge 'mysql'" in group.json()["message"]


def test_a_definition_another_uses_cannot_be_removed_until_that_one_is(tenant):
    define_samples(tenant)
    reply = tenant.delete("/cartridges/php")
    assert reply.status_code == 400
    assert "in use by" in reply.json()["message"] and "application 'single-cartridge-app'" in reply.json()["message"]
    assert tenant.get("/cartridges/php").status_code == 200
    assert tenant.delete("/applications/single-cartridge-app").status_code == 200
    assert tenant.delete("/cartridgeGroups/web-group").status_code == 200
    removed = tenant.delete("/cartridges/php")
    assert (
        removed.status_code == 200
        and removed.json()["message"] == "Cartridge removed successfully: [cartridgeType] php"
    )
    assert tenant.get("/cartridges/php").status_code == 404


def test_wait_false_answers_202_with_the_command_id_and_the_write_follows(tenant):
    reply = tenant.post("/kubernetesClusters", params={"wait": "false"}, json=sample("kubernetes-cluster.json"))
    assert reply.status_code == 202 and len(reply.json()["commandId"]) == 32
    wait_until(
        lambda: tenant.get("/kubernetesClusters/kubernetes-cluster-1").status_code == 200,
        message="the cluster definition in the read model",
    )
