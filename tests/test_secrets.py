"""Sealing secrets: keys outside the log, key ids, rotation, the one walk that seals, opens and
masks, the instances' cartridge keys, and the environment of child processes."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.auth.secrets import (
    SecretBox,
    SecretError,
    key_id,
    load_or_create_keys,
    new_key,
    open_for_instance,
    rotate_key_file,
    secret_box,
)
from infra.platform.child_env import minimal_env, part_env
from infra.settings import Settings
from schemas import commands as C
from schemas.base import MASK, is_sealed, masked, without_clear_secrets, without_secrets
from schemas.definitions import Cartridge
from tests.conftest import sample

OLD, NEW = new_key(), new_key()
CLUSTER_A, CLUSTER_B = "carbon.super/cluster/a.domain", "carbon.super/cluster/b.domain"
secret_text = st.text(min_size=4, max_size=40).filter(lambda s: s.strip() == s and s.strip())


def cartridge(identity: str = "AKIDEXAMPLE", credential: str = "wJalrXUtnFEMI") -> Cartridge:
    body = sample("php.json")
    body["iaasProvider"] = [
        {
            "type": "ec2",
            "provider": "ec2",
            "imageId": "ami-1",
            "identity": identity,
            "credential": credential,
            "property": [
                {"name": "instanceType", "value": "m1.small"},
                {"name": "apiToken", "value": "t0ken-value", "secret": True},
            ],
        }
    ]
    return Cartridge.model_validate(body)


@given(secret_text)
def test_a_sealed_secret_opens_to_itself_and_never_shows_it(secret):
    box = SecretBox((OLD,), "test")
    sealed = box.seal(secret)
    assert is_sealed(sealed) and secret not in sealed.removeprefix("stratos:sealed:")
    assert box.seal(sealed) == sealed  # sealing twice changes nothing
    assert box.open(sealed) == secret
    assert box.sealed_with(sealed) == key_id(OLD)


def test_after_a_rotation_old_secrets_open_and_new_ones_use_the_new_key():
    before = SecretBox((OLD,), "test")
    old_record = before.seal("repo-pw")
    after = SecretBox((NEW, OLD), "test")  # STRATOS_SECRET_KEY="NEW,OLD"
    assert after.open(old_record) == "repo-pw"
    new_record = after.seal("repo-pw")
    assert after.sealed_with(new_record) == key_id(NEW) != before.sealed_with(old_record)
    with pytest.raises(SecretError, match=key_id(NEW)):  # the old key alone cannot open new records
        before.open(new_record)
    with pytest.raises(SecretError, match="keep old keys"):  # dropping the old key too early
        SecretBox((NEW,), "test").open(old_record)


def test_the_key_file_is_made_owner_only_and_rotation_keeps_the_old_keys(tmp_path):
    settings = Settings(state_dir=tmp_path)
    box = secret_box(settings)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = box.seal("s3cret")
    kid = rotate_key_file(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = load_or_create_keys(tmp_path)
    assert [key_id(k) for k in keys] == [kid, box.primary_id]
    rotated = SecretBox(tuple(keys), str(path))
    assert rotated.open(sealed) == "s3cret" and rotated.sealed_with(rotated.seal("x")) == kid


def test_a_bad_key_is_refused_naming_the_fix():
    with pytest.raises(SecretError, match="new-key"):
        secret_box(Settings(secret_key="not-a-key"))


def test_a_command_is_sealed_in_every_secret_field_and_masked_for_readers():
    box = SecretBox((OLD,), "test")
    command = box.seal_model(C.AddCartridge(definition=cartridge()))
    dumped = command.model_dump_json()
    for secret in ("AKIDEXAMPLE", "wJalrXUtnFEMI", "t0ken-value"):
        assert secret not in dumped
    iaas = command.definition.iaasProvider[0]
    assert box.open(iaas.identity) == "AKIDEXAMPLE" and box.open(iaas.credential) == "wJalrXUtnFEMI"
    assert box.open(iaas.properties[1].value) == "t0ken-value"
    assert iaas.properties[0].value == "m1.small"  # not a secret: left alone
    shown = masked(command.model_dump(mode="json", by_alias=True))
    assert shown["definition"]["iaasProvider"][0]["identity"] == MASK
    assert shown["definition"]["iaasProvider"][0]["property"][1]["value"] == MASK
    assert box.seal_model(command) is command  # nothing clear left: the same object


def test_member_events_carry_no_copy_of_the_definitions_secrets():
    iaas = cartridge().iaasProvider[0].model_dump(mode="json", by_alias=True)
    kept = without_secrets(iaas)
    assert "identity" not in kept and "credential" not in kept
    assert kept["imageId"] == "ami-1" and kept["property"][1] == {"name": "apiToken", "secret": True}


@given(secret_text.filter(lambda s: '"' not in s and "\\" not in s))
def test_a_dead_letter_keeps_sealed_secrets_and_masks_clear_ones(secret):
    sealed = SecretBox((OLD,), "test").seal("other")
    record = '{"definition": {"adminPassword": "%s", "credential": "%s", "tenantDomain": "x"'
    out = without_clear_secrets(record % (secret, sealed))  # even a record that is not valid JSON
    assert out == record % (MASK, sealed)  # the clear one masked, the sealed one and the rest kept


def test_an_instance_opens_only_what_is_sealed_for_its_cluster_even_after_a_rotation():
    before = SecretBox((OLD,), "test")
    member_a = before.cartridge_key(CLUSTER_A)  # given to a member of cluster A at its start
    rotated = SecretBox((NEW, OLD), "test")
    for box in (before, rotated):  # the notifier before and after a rotation
        notice = box.for_instances(box.seal("git-pw"), CLUSTER_A)
        assert "git-pw" not in notice
        assert open_for_instance(notice, member_a) == "git-pw"
        with pytest.raises(SecretError):
            open_for_instance(notice, box.cartridge_key(CLUSTER_B))
    # a member started after the rotation holds the new cartridge key
    assert (
        open_for_instance(rotated.for_instances(rotated.seal("git-pw"), CLUSTER_A), rotated.cartridge_key(CLUSTER_A))
        == "git-pw"
    )
    assert open_for_instance("clear-from-an-old-platform", None) == "clear-from-an-old-platform"


def test_children_get_the_basics_and_only_the_secrets_their_part_uses():
    source = {
        "PATH": "/bin",
        "HOME": "/root",
        "LC_ALL": "C",
        "AWS_SECRET_ACCESS_KEY": "x",
        "STRATOS_ADMIN_PASSWORD": "admin-pw",
        "STRATOS_SECRET_KEY": OLD,
        "STRATOS_TOPIC_PREFIX": "p.",
    }
    assert minimal_env({"A": "1"}, source=source) == {"PATH": "/bin", "HOME": "/root", "LC_ALL": "C", "A": "1"}
    assert "STRATOS_ADMIN_PASSWORD" in part_env("api", source)
    for part in ("node", "cloud", "reactor", "health", "lb", "topology"):
        assert "STRATOS_ADMIN_PASSWORD" not in part_env(part, source)
    assert "STRATOS_SECRET_KEY" in part_env("cloud", source)
    assert "STRATOS_SECRET_KEY" not in part_env("health", source)


def test_a_process_mode_instance_inherits_nothing_of_the_platform(monkeypatch, tmp_path):
    from infra.cloud.mock import processes
    from infra.cloud.mock.cloud import MockCloud

    started = {}

    class Popen:
        def __init__(self, command, env, **_):
            started.update(command=command, env=env)
            self.pid = 1

    monkeypatch.setattr(processes.subprocess, "Popen", Popen)
    monkeypatch.setenv("STRATOS_ADMIN_PASSWORD", "admin-pw")
    monkeypatch.setenv("STRATOS_SECRET_KEY", OLD)
    settings = Settings(kafka_bootstrap="127.0.0.1:1", state_dir=tmp_path)
    cloud = MockCloud()
    instances = processes.ProcessInstances(settings, cloud)
    box = secret_box(settings)
    cloud.create(
        "php1.m1",
        {
            "clusterId": "a.domain",
            "tenant": "carbon.super",
            "ports": "http:80",
            "cartridgeKey": box.cartridge_key(CLUSTER_A),
            "repoUrl": "http://git/x.git",
            "repoUsername": "u",
            "repoPassword": box.for_instances(box.seal("pw"), CLUSTER_A),
        },
    )
    instances.processes.clear()
    env, command = started["env"], " ".join(started["command"])
    assert "STRATOS_ADMIN_PASSWORD" not in env and "STRATOS_SECRET_KEY" not in env
    assert OLD not in " ".join(env.values()) + command
    assert env["STRATOS_AGENT_CARTRIDGE_KEY"] == box.cartridge_key(CLUSTER_A)
    assert "cartridge" not in command.lower() and "stratos:sealed" not in command  # not in argv (ps)
    assert open_for_instance(env["STRATOS_AGENT_REPO_PASSWORD"], env["STRATOS_AGENT_CARTRIDGE_KEY"]) == "pw"


@pytest.mark.parametrize(
    "command, holds",
    [
        (C.AddCartridge, True),
        (C.AddTenant, True),
        (C.AddApplicationSignup, True),
        (C.RecordDependencyResolved, True),
        (C.AddDeploymentPolicy, True),  # a property may be marked secret
        (C.ScaleCluster, False),
        (C.ReportInstanceStatus, False),
        (C.ReportNodeCreated, False),
        (C.AddAutoscalingPolicy, False),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_commands_that_cannot_hold_a_secret_skip_the_walk(command, holds):
    """The hot path (health-driven ScaleCluster, agents' reports) pays nothing for sealing."""
    from schemas.base import may_hold_secrets

    assert may_hold_secrets(command) is holds
