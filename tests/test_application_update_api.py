"""A live application update as a Stratos user makes it: `stratos update-application -p` and
`PUT /api/applications` against the served API on the real broker (a node, no cloud: the
cluster's limits are what is checked; tests/test_application_update.py runs the whole loop)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import sample, wait_until
from tests.test_api_platform import define_samples, platform  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration
APP = "single-cartridge-app"
CLUSTER = f"{APP}.php1.php.domain"


@pytest.fixture
def tenant(platform):
    domain = platform.new_tenant()
    with platform.client(f"admin@{domain}", "tenant-pw") as client:
        client.username = f"admin@{domain}"
        yield client


def test_update_application_changes_a_running_clusters_limits_and_refuses_structure(platform, tenant, tmp_path):
    define_samples(tenant)
    deployed = tenant.post(f"/applications/{APP}/deploy/application-policy-1")
    assert deployed.status_code == 202, deployed.text
    wait_until(lambda: tenant.get(f"/cluster/{CLUSTER}").status_code == 200, timeout=30, message="the cluster")

    raised = copy.deepcopy(sample("application-single-cartridge.json"))
    raised["components"]["cartridges"][0].update(cartridgeMin=3, cartridgeMax=5)
    path = tmp_path / "app.json"
    path.write_text(json.dumps(raised))
    env = {
        **os.environ,
        "STRATOS_URL": platform.url,
        "STRATOS_USERNAME": tenant.username,
        "STRATOS_PASSWORD": "tenant-pw",
    }
    updated = subprocess.run(
        [sys.executable, "-m", "infra.cli", "update-application", "-p", str(path), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["message"] == f"Application updated successfully: [applicationId] {APP}"
    wait_until(
        lambda: tenant.get(f"/cluster/{CLUSTER}").json()["minInstances"] == 3,
        timeout=30,
        message="the running cluster's min 3",
    )
    cluster = tenant.get(f"/cluster/{CLUSTER}").json()
    assert (cluster["maxInstances"], len(cluster["member"])) == (5, 3)  # two more members asked for

    renamed = copy.deepcopy(raised)
    renamed["components"]["cartridges"][0]["type"] = "tomcat"
    refused = tenant.put("/applications", json=renamed)
    assert refused.status_code == 400, refused.text
    assert refused.json()["status"] == "error"
    assert "components.cartridges[0].type cannot change on a running application" in refused.json()["message"]
    assert tenant.get(f"/applications/{APP}").json()["components"]["cartridges"][0]["type"] == "php"
