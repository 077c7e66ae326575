"""Sign-ups and domain mappings over REST and the CLI, on the real broker with a running node:
the super tenant offers a deployed multi-tenant application, tenants sign up and map domains,
and no tenant sees or changes another's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from infra.log.kafka import read_to_end
from schemas.status import ArtifactUpdated
from tests.conftest import sample, wait_until
from tests.test_api_platform import define_samples, platform, tenant  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
APP = "single-cartridge-app"
CLUSTER = "single-cartridge-app.php1.php.domain"
REPO = {
    "alias": "php1",
    "repoUrl": "https://git.example.org/shop.git",
    "repoUsername": "deployer",
    "repoPassword": "s3cret",
}


@pytest.fixture(scope="module")
def offered(platform):  # noqa: F811
    """The sample application, made multi-tenant, deployed by the super tenant's admin."""
    with platform.client() as admin:
        define_samples(admin)
        reply = admin.put("/applications", json={**sample("application-single-cartridge.json"), "multiTenant": True})
        assert reply.status_code == 200, reply.text
        reply = admin.post(f"/applications/{APP}/deploy/application-policy-1")
        assert reply.status_code == 202, reply.text
        wait_until(
            lambda: admin.get(f"/applications/{APP}").json()["status"] == "Deployed",
            message="the offered application Deployed",
        )
    return APP


def second_tenant(platform):  # noqa: F811
    domain = platform.new_tenant()
    return domain, platform.client(f"admin@{domain}", "tenant-pw")


def test_signup_add_describe_duplicate_remove(offered, tenant):
    reply = tenant.post(f"/applications/{offered}/signup", json={"artifactRepositories": [REPO]})
    assert reply.status_code == 201, reply.text
    assert reply.json() == {
        "status": "success",
        "commandId": reply.json()["commandId"],
        "message": f"Successfully added application signup: [application-id] {APP}",
    }
    bean = tenant.get(f"/applications/{offered}/signup").json()
    assert bean["applicationId"] == APP and bean["clusterIds"] == [CLUSTER]
    # the repository password is kept for the instances, never shown back
    assert bean["artifactRepositories"] == [
        {k: v for k, v in REPO.items() if k != "repoPassword"} | {"privateRepo": False}
    ]
    again = tenant.post(f"/applications/{offered}/signup", json={"artifactRepositories": [REPO]})
    assert again.status_code == 409 and "already signed up" in again.json()["message"]
    removed = tenant.delete(f"/applications/{offered}/signup")
    assert removed.status_code == 200 and removed.json()["status"] == "success"
    assert tenant.get(f"/applications/{offered}/signup").status_code == 404
    gone = tenant.delete(f"/applications/{offered}/signup")
    assert gone.status_code == 404 and "has not signed up" in gone.json()["message"]


def test_signup_sends_artifact_updated_to_the_cluster_for_the_tenant(platform, offered, tenant):  # noqa: F811
    domain = tenant.get("/whoami").json()["tenant"]
    assert tenant.post(f"/applications/{offered}/signup", json={"artifactRepositories": [REPO]}).status_code == 201

    def notice():
        found = [d.record.payload for d in read_to_end(platform.settings, "instance-notifier")]
        return next((n for n in found if isinstance(n, ArtifactUpdated) and n.tenant == domain), None)

    sent = wait_until(notice, message="ArtifactUpdated for the signed-up tenant")
    assert (sent.cluster_id, sent.repo_url, sent.repo_username) == (CLUSTER, REPO["repoUrl"], "deployer")


@pytest.mark.parametrize(
    "path, body, code, words",
    [
        ("/applications/nope/signup", {"artifactRepositories": []}, 404, "application 'nope' not found"),
        (
            f"/applications/{APP}/signup",
            {"artifactRepositories": [{**REPO, "alias": "tomcat9"}]},
            400,
            "'tomcat9' is not a cartridge alias",
        ),
        (
            f"/applications/{APP}/signup",
            {"artifactRepositories": [{"repoUrl": "x"}]},
            400,
            "artifactRepositories.0.alias: Field required",
        ),
        (
            f"/applications/{APP}/domainMappings",
            {"domainMappings": [{"cartridgeAlias": "php1", "domainName": "x.com"}]},
            400,
            "has not signed up",
        ),
        (
            f"/applications/{APP}/domainMappings",
            {"domainMappings": [{"domainName": "x.com"}]},
            400,
            "domainMappings.0.cartridgeAlias: Field required",
        ),
    ],
    ids=[
        "unknown application",
        "repository for an unknown alias",
        "repository without alias",
        "mapping before signing up",
        "mapping without alias",
    ],
)
def test_bad_requests_name_the_field_or_id(offered, tenant, path, body, code, words):
    reply = tenant.post(path, json=body)
    assert reply.status_code == code, reply.text
    assert reply.json()["status"] == "error" and words in reply.json()["message"]


def test_domain_mappings_are_per_tenant_and_unique_per_application(platform, offered, tenant):  # noqa: F811
    _, other = second_tenant(platform)
    with other:
        for client in (tenant, other):
            assert (
                client.post(f"/applications/{offered}/signup", json={"artifactRepositories": [REPO]}).status_code == 201
            )
        reply = tenant.post(f"/applications/{offered}/domainMappings", json=sample("domain-mappings.json"))
        assert reply.status_code == 201, reply.text
        assert reply.json()["message"] == f"Domain mappings added successfully: [application-id] {APP}"
        mine = tenant.get(f"/applications/{offered}/domainMappings").json()
        assert [(m["domainName"], m["clusterId"]) for m in mine] == [("abc.com", CLUSTER), ("www.abc.com", CLUSTER)]

        # tenant B sees none of A's, cannot remove them, and cannot take A's domain
        assert other.get(f"/applications/{offered}/domainMappings").json() == []
        assert other.delete(f"/applications/{offered}/domainMappings/abc.com").status_code == 404
        taken = other.post(
            f"/applications/{offered}/domainMappings", json={"cartridgeAlias": "php1", "domainName": "abc.com"}
        )
        assert taken.status_code == 409 and "'abc.com' is already mapped" in taken.json()["message"]
        assert (
            other.post(
                f"/applications/{offered}/domainMappings", json={"cartridgeAlias": "php1", "domainName": "b.org"}
            ).status_code
            == 201
        )
        assert [m["domainName"] for m in other.get(f"/applications/{offered}/domainMappings").json()] == ["b.org"]
        # B's sign-up is B's: removing it leaves A's sign-up and mappings alone
        assert other.delete(f"/applications/{offered}/signup").status_code == 200
        assert other.get(f"/applications/{offered}/signup").status_code == 404
        assert other.get(f"/applications/{offered}/domainMappings").json() == []
        assert tenant.get(f"/applications/{offered}/signup").status_code == 200
        assert len(tenant.get(f"/applications/{offered}/domainMappings").json()) == 2

    removed = tenant.request(
        "DELETE", f"/applications/{offered}/domainMappings", json={"domainMappings": [{"domainName": "www.abc.com"}]}
    )
    assert removed.status_code == 200, removed.text
    assert [m["domainName"] for m in tenant.get(f"/applications/{offered}/domainMappings").json()] == ["abc.com"]
    assert tenant.delete(f"/applications/{offered}/signup").status_code == 200


def test_a_tenants_own_single_tenant_application_is_invisible_to_others(platform, tenant):  # noqa: F811
    define_samples(tenant)
    private = {**sample("application-single-cartridge.json"), "applicationId": "private-app"}
    assert tenant.post("/applications", json=private).status_code == 201
    refused = tenant.post("/applications/private-app/signup", json={"artifactRepositories": [REPO]})
    assert refused.status_code == 400 and "has not been deployed" in refused.json()["message"]
    _, other = second_tenant(platform)
    with other:  # neither offered nor visible to another tenant: 404, as for any unknown id
        for reply in (
            other.post("/applications/private-app/signup", json={"artifactRepositories": []}),
            other.get("/applications/private-app/domainMappings"),
            other.delete("/applications/private-app/signup"),
        ):
            assert reply.status_code == 404 and "'private-app' not found" in reply.json()["message"]


def test_cli_signup_and_domain_mappings_with_json(platform, offered, tmp_path):  # noqa: F811
    domain = platform.new_tenant()
    env = {
        **os.environ,
        "STRATOS_URL": platform.url,
        "STRATOS_USERNAME": f"admin@{domain}",
        "STRATOS_PASSWORD": "tenant-pw",
    }
    signup_file = tmp_path / "signup.json"
    signup_file.write_text(json.dumps({"artifactRepositories": [REPO]}))
    mappings_file = tmp_path / "mappings.json"
    mappings_file.write_text(json.dumps({"domainMappings": [{"cartridgeAlias": "php1", "domainName": "cli.org"}]}))

    def run(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", *words, "--json"], env=env, capture_output=True, text=True, timeout=120
        )

    def stratos(*words: str):
        done = run(*words)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert stratos("add-application-signup", APP, "-p", str(signup_file))["status"] == "success"
    assert stratos("describe-application-signup", APP)["clusterIds"] == [CLUSTER]
    assert stratos("add-domain-mappings", APP, "-p", str(mappings_file))["status"] == "success"
    assert [m["domainName"] for m in stratos("list-domain-mappings", APP)] == ["cli.org"]
    assert stratos("remove-domain-mappings", APP, "-d", "cli.org")["status"] == "success"
    assert stratos("list-domain-mappings", APP) == []
    assert stratos("remove-application-signup", APP)["status"] == "success"
    failed = run("describe-application-signup", APP)
    assert failed.returncode == 1 and "(HTTP 404)" in failed.stderr and "Traceback" not in failed.stderr
