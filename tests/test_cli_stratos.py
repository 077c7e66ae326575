"""The Stratos CLI verbs end to end: the `stratos` console script against the served API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import SAMPLES, wait_until
from tests.test_api_platform import platform  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def stratos(platform):
    """Run `stratos ARGS` as a tenant admin of a fresh tenant (credentials from the environment)."""
    domain = platform.new_tenant()
    env = {
        **os.environ,
        "STRATOS_URL": platform.url,
        "STRATOS_USERNAME": f"admin@{domain}",
        "STRATOS_PASSWORD": "tenant-pw",
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True, timeout=120
        )

    return run


def test_add_list_describe_remove_with_json_output(stratos):
    added = stratos("add-cartridge", "-p", str(SAMPLES / "php.json"), "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["message"] == "Cartridge added successfully: [cartridgeType] php"
    listed = stratos("list-cartridges", "--json")
    assert [c["type"] for c in json.loads(listed.stdout)] == ["php"]
    described = stratos("describe-cartridge", "php", "--json")
    assert json.loads(described.stdout)["portMapping"][0]["proxyPort"] == 8280
    removed = stratos("remove-cartridge", "php", "--json")
    assert removed.returncode == 0 and json.loads(removed.stdout)["status"] == "success"
    assert json.loads(stratos("list-cartridges", "--json").stdout) == []


def test_tables_by_default(stratos):
    stratos("add-cartridge", "-p", str(SAMPLES / "tomcat.json"))
    shown = stratos("list-cartridges")
    assert shown.returncode == 0 and "tomcat" in shown.stdout and "application" in shown.stdout


def test_errors_print_the_servers_message_and_no_traceback(stratos, tmp_path):
    missing = stratos("describe-cartridge", "nope")
    assert missing.returncode == 1
    assert "cartridge 'nope' not found (HTTP 404)" in missing.stderr and "Traceback" not in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": ')
    invalid = stratos("add-cartridge", "-p", str(broken))
    assert invalid.returncode == 1 and "is not valid JSON" in invalid.stderr
    absent = stratos("add-cartridge", "-p", str(tmp_path / "absent.json"))
    assert absent.returncode == 1 and "cannot read" in absent.stderr
    refused = stratos("list-cartridges", "--url", "http://127.0.0.1:9")
    assert refused.returncode == 1 and "cannot reach the Stratos API" in refused.stderr
    assert "Traceback" not in invalid.stderr + absent.stderr + refused.stderr


def test_deploy_and_describe_the_runtime(stratos, tmp_path):
    for extra in ("network-partition-2", "network-partition-3"):
        path = tmp_path / f"{extra}.json"
        path.write_text(json.dumps({**json.loads((SAMPLES / "network-partition.json").read_text()), "id": extra}))
        assert stratos("add-network-partition", "-p", str(path)).returncode == 0
    for verb, name in (
        ("add-network-partition", "network-partition.json"),
        ("add-cartridge", "php.json"),
        ("add-autoscaling-policy", "autoscaling-policy.json"),
        ("add-deployment-policy", "deployment-policy.json"),
        ("add-application-policy", "application-policy.json"),
        ("add-application", "application-single-cartridge.json"),
    ):
        result = stratos(verb, "-p", str(SAMPLES / name))
        assert result.returncode == 0, f"{verb}: {result.stderr}"
    deployed = stratos("deploy-application", "-a", "single-cartridge-app", "-ap", "application-policy-1", "--json")
    assert deployed.returncode == 0, deployed.stderr

    def runtime_with_members():
        runtime = json.loads(stratos("describe-application-runtime", "single-cartridge-app", "--json").stdout)
        instances = runtime["applicationInstances"]
        return runtime if instances and instances[0]["clusterInstances"][0]["member"] else None

    runtime = wait_until(runtime_with_members, message="the deployed cluster's members")
    assert runtime["status"] == "Deployed"
    tree = stratos("describe-application-runtime", "single-cartridge-app")
    assert "single-cartridge-app.php1.php.domain" in tree.stdout
    undeployed = stratos("undeploy-application", "single-cartridge-app", "--force")
    assert undeployed.returncode == 0 and "undeployed successfully" in undeployed.stdout
