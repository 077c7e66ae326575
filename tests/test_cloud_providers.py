"""From a cartridge's iaasProvider entry to real libcloud driver calls, checked with libcloud's
own test HTTP classes (recorded responses of each cloud's API), never with stubs of our code."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlparse

import pytest
from libcloud.compute.drivers.cloudstack import CloudStackNodeDriver
from libcloud.compute.drivers.ec2 import EC2NodeDriver
from libcloud.compute.providers import get_driver
from libcloud.container.providers import get_driver as get_container_driver
from libcloud.test import MockHttp
from libcloud.test.compute.test_cloudstack import CloudStackMockHttp
from libcloud.test.file_fixtures import ComputeFileFixtures
from libcloud.utils.py3 import httplib

from infra.cloud.iaas.providers import (
    CONTAINER_PROVIDERS,
    PROVIDERS,
    IaasConfigError,
    IaasTarget,
    build_driver,
    create_options,
)
from infra.cloud.mock.cloud import register_mock_driver
from schemas.definitions import KNOWN_IAAS_PROVIDERS, Cartridge
from tests.conftest import sample

METADATA = {"memberId": "php1.abc", "clusterId": "app.php1.php.domain"}


def iaas_entry(type_: str, **properties: str) -> dict:
    """The sample php cartridge's iaasProvider entry, moved to another cloud, as the event has it."""
    body = sample("php.json")
    entry = body["iaasProvider"][0]
    entry.update(type=type_, provider=type_, identity="AKID-TEST", credential="s3cr3t-key")
    entry["property"] += [{"name": k, "value": v} for k, v in properties.items()]
    return Cartridge.model_validate(body).iaasProvider[0].model_dump()


def test_every_provider_the_definitions_accept_resolves_in_libcloud_and_has_a_mapping():
    register_mock_driver()
    assert set(KNOWN_IAAS_PROVIDERS) == set(PROVIDERS)
    for name in KNOWN_IAAS_PROVIDERS:  # members as containers drive libcloud's container drivers
        found = get_container_driver(name) if name in CONTAINER_PROVIDERS else get_driver(name)
        assert found is not None, name


class RecordingEC2(MockHttp):
    """libcloud's test HTTP class answering with libcloud's recorded EC2 responses
    (libcloud's own EC2MockHttp needs a secrets module its wheel does not ship)."""

    fixtures = ComputeFileFixtures("ec2")
    use_param = "Action"
    calls: list[dict] = []

    def _RunInstances(self, method, url, body, headers):
        RecordingEC2.calls.append(dict(parse_qsl(urlparse(url).query)))
        return httplib.OK, self.fixtures.load("run_instances.xml"), {}, httplib.responses[httplib.OK]


def test_ec2_entry_maps_to_run_instances_with_image_type_key_groups_subnet_and_client_token(monkeypatch):
    monkeypatch.setattr(EC2NodeDriver.connectionCls, "conn_class", RecordingEC2)
    RecordingEC2.calls = []
    target = IaasTarget.from_event("ec2", iaas_entry("ec2", region="eu-west-1"))
    driver = build_driver(target, "unused")
    assert isinstance(driver, EC2NodeDriver) and driver.region_name == "eu-west-1"
    node = driver.create_node(**create_options(target, driver, "php1.abc", METADATA))
    (call,) = RecordingEC2.calls
    assert call["ImageId"] == "RegionOne/b4ca55e3-58ab-4937-82ce-817ebd10240e"
    assert call["InstanceType"] == "RegionOne/aa5f45a2-c6d6-419d-917a-9dd2e3888594"
    assert call["KeyName"] == "stratos-key" and call["SecurityGroup.1"] == "default"
    assert call["SubnetId"] == "b55f009a-1cc6-4b17-924f-4ae0ee18db5e"
    assert call["ClientToken"] == "php1.abc"  # EC2 itself refuses a second node for a repeat
    tags = {call[k]: call[k.replace(".Key", ".Value")] for k in call if k.endswith(".Key")}
    assert tags["memberId"] == "php1.abc" and tags["Name"] == "php1.abc"
    assert node.id  # the recorded response's instance
    assert "s3cr3t-key" not in repr(target) and "AKID-TEST" not in repr(target)


class RecordingCloudStack(CloudStackMockHttp):
    calls: list[dict] = []

    def _test_path(self, method, url, body, headers):
        query = dict(parse_qsl(urlparse(url).query))
        if query.get("command") == "deployVirtualMachine":
            RecordingCloudStack.calls.append(query)
        return super()._test_path(method, url, body, headers)


def test_cloudstack_entry_maps_to_deploy_virtual_machine(monkeypatch):
    monkeypatch.setattr(CloudStackNodeDriver.connectionCls, "conn_class", RecordingCloudStack)
    monkeypatch.setattr(RecordingCloudStack, "fixture_tag", "default")
    RecordingCloudStack.calls = []
    target = IaasTarget.from_event("cloudstack", iaas_entry("cloudstack", endpoint="http://api.dummy.com/test/path"))
    driver = build_driver(target, "unused")
    driver.connection.poll_interval = 0.0
    node = driver.create_node(**create_options(target, driver, "php1.abc", METADATA))
    (call,) = RecordingCloudStack.calls
    assert call["templateid"] == "RegionOne/b4ca55e3-58ab-4937-82ce-817ebd10240e"
    assert call["serviceofferingid"] == "RegionOne/aa5f45a2-c6d6-419d-917a-9dd2e3888594"
    assert call["keypair"] == "stratos-key" and call["securitygroupnames"] == "default"
    assert call["networkids"] == "b55f009a-1cc6-4b17-924f-4ae0ee18db5e"
    assert call["name"] == "php1.abc" and node.name


@pytest.mark.parametrize("type_, missing", [("openstack", "authUrl"), ("gce", "projectId"), ("cloudstack", "endpoint")])
def test_a_missing_provider_property_is_named(type_, missing):
    target = IaasTarget.from_event(type_, iaas_entry(type_))
    with pytest.raises(IaasConfigError, match=f"'{missing}'"):
        build_driver(target, "unused")


def test_a_missing_image_is_named_before_any_call(monkeypatch):
    entry = iaas_entry("ec2")
    entry["imageId"] = None
    target = IaasTarget.from_event("ec2", entry)
    driver = build_driver(target, "unused")
    with pytest.raises(IaasConfigError, match="imageId"):
        create_options(target, driver, "php1.abc", METADATA)
