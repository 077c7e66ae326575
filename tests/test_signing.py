"""The pure rules of who sent a record and what a user may send: signatures, member keys,
tokens and their revocation, the command rule, the login throttle, the secret file."""

from __future__ import annotations

import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.api.identity import LoginThrottle
from infra.auth.access import Principal, TokenRefused, Tokens, command_denied
from infra.auth.signing import (
    PLATFORM,
    Signer,
    Unauthenticated,
    Verifier,
    _read_or_create,
    key_id,
    member_credentials,
    platform_secret,
    platform_secrets,
)
from infra.log.kafka import encode, envelope
from infra.settings import Settings
from schemas import commands as C
from schemas.definitions import DEFINITION_KINDS
from schemas.envelope import SUPER_TENANT
from schemas.ids import parse_aggregate_id
from schemas.records import InstanceStatusRecord
from schemas.status import InstanceStatus

SECRET = b"s" * 32
text = st.text(min_size=1, max_size=20)


@given(
    kind=st.sampled_from(["commands", "health", "instance-status"]),
    key=st.binary(max_size=40),
    value=st.binary(max_size=200),
    flip=st.integers(min_value=0, max_value=2),
)
def test_a_signature_verifies_only_for_its_own_topic_key_and_value(kind, key, value, flip):
    verifier = Verifier(SECRET)
    headers = Signer(PLATFORM, SECRET).headers(kind, key, value)
    assert verifier.sender(kind, key, value, headers).kind == PLATFORM
    changed = [("other", key, value), (kind, key + b"x", value), (kind, key, value + b"x")][flip]
    with pytest.raises(Unauthenticated, match="does not verify"):
        verifier.sender(*changed, headers)


OLD, NEW = b"o" * 32, b"n" * 32


def test_history_signed_before_a_rotation_verifies_while_its_secret_is_in_the_keyring():
    old = Signer(PLATFORM, OLD, key_id(OLD)).headers("events", b"k", b"v")
    before_key_ids = Signer(PLATFORM, OLD).headers("events", b"k", b"v")
    rotated = Verifier(NEW, [OLD])
    rotated.platform("events", b"k", b"v", old)
    rotated.platform("events", b"k", b"v", before_key_ids)
    rotated.platform("events", b"k", b"v", Signer(PLATFORM, NEW, key_id(NEW)).headers("events", b"k", b"v"))
    with pytest.raises(Unauthenticated, match=f"platform key '{key_id(OLD)}', which is not in this part's keyring"):
        Verifier(NEW).platform("events", b"k", b"v", old)
    with pytest.raises(Unauthenticated, match="does not verify"):
        Verifier(NEW).platform("events", b"k", b"v", before_key_ids)


def test_only_the_platform_signature_counts_on_its_own_topics():
    member = Signer.member("t", "c", "m1", member_credentials(SECRET, "t", "c", "m1")["signingKey"])
    with pytest.raises(Unauthenticated, match="signed by member 'm1' of cluster 'c': only the platform's"):
        Verifier(SECRET).platform("events", b"k", b"v", member.headers("events", b"k", b"v"))
    with pytest.raises(Unauthenticated, match="unsigned snapshots record"):
        Verifier(SECRET).platform("snapshots", b"k", b"v", [])


def test_the_keyring_is_the_current_secret_then_the_previous_ones(tmp_path):
    from pydantic import SecretStr

    (tmp_path / "platform.secret").write_text(f"{NEW.decode()}\n{OLD.decode()}\n")
    os.chmod(tmp_path / "platform.secret", 0o600)
    from_file = Settings(state_dir=tmp_path, platform_secret=None, platform_secret_previous=None)
    assert platform_secrets(from_file) == [NEW, OLD] and platform_secret(from_file) == NEW
    from_env = Settings(
        platform_secret=SecretStr(NEW.decode()), platform_secret_previous=SecretStr(f"{OLD.decode()}, ")
    )
    assert platform_secrets(from_env) == [NEW, OLD]


@given(tenant=text, cluster=text, member=text)
def test_a_member_key_signs_as_exactly_that_member(tenant, cluster, member):
    key = member_credentials(SECRET, tenant, cluster, member)["signingKey"]
    signer = Signer.member(tenant, cluster, member, key)
    sender = Verifier(SECRET).sender("health", b"k", b"v", signer.headers("health", b"k", b"v"))
    assert (sender.tenant, sender.cluster_id, sender.member_id) == (tenant, cluster, member)
    # the same key under another member's name is another member's forgery
    other = Signer.member(tenant, cluster, member + "x", key)
    with pytest.raises(Unauthenticated):
        Verifier(SECRET).sender("health", b"k", b"v", other.headers("health", b"k", b"v"))


def status(member: str, cluster: str = "c1", tenant: str = "t.org", kind: str = "InstanceActivated"):
    return envelope(
        InstanceStatusRecord,
        InstanceStatus(type=kind, member_id=member, cluster_id=cluster),
        f"{tenant}/cluster/{cluster}",
        tenant=tenant,
    )


@pytest.mark.parametrize(
    "record, wrong",
    [
        (status("m1"), None),
        (status("m2"), "member 'm2' (signed by 'm1')"),  # another member
        (status("m1", cluster="c2"), "cluster 'c2' (signed by 'c1')"),  # another cluster
        (status("m1", tenant="u.org"), "tenant 'u.org' (signed by 't.org')"),  # another tenant
    ],
    ids=["own", "other-member", "other-cluster", "other-tenant"],
)
def test_a_member_may_speak_only_of_itself(record, wrong):
    signer = Signer.member("t.org", "c1", "m1", member_credentials(SECRET, "t.org", "c1", "m1")["signingKey"])
    value = encode(record)
    sender = Verifier(SECRET).sender(
        "instance-status",
        record.aggregate_id.encode(),
        value,
        signer.headers("instance-status", record.aggregate_id.encode(), value),
    )
    if wrong is None:
        Verifier.require_signed("instance-status", sender, record)
    else:
        with pytest.raises(Unauthenticated, match=re.escape(wrong)):
            Verifier.require_signed("instance-status", sender, record)


def test_unsigned_and_half_signed_records_are_refused():
    record = status("m1")
    anonymous = Verifier(SECRET).sender("instance-status", b"k", b"v", [])
    with pytest.raises(Unauthenticated, match="unsigned instance-status record"):
        Verifier.require_signed("instance-status", anonymous, record)
    with pytest.raises(Unauthenticated, match="has stratos-signer but not stratos-signature"):
        Verifier(SECRET).sender("instance-status", b"k", b"v", [("stratos-signer", b"platform")])


# --- tokens ----------------------------------------------------------------------------------
class Users:
    """A read model of one tenant with one user, changed as the tests need."""

    def __init__(self) -> None:
        self.tenant = {"tenantDomain": "t.org", "admin": "boss", "adminPassword": "$2b$boss", "active": True}
        self.user: dict | None = {"userName": "carol", "credential": "$2b$first", "role": "admin"}

    def get(self, tenant, kind, id):
        if (tenant, kind, id) == (SUPER_TENANT, "tenant", "t.org"):
            return SimpleNamespace(definition=self.tenant)
        if (tenant, kind, id) == ("t.org", "user", "carol") and self.user is not None:
            return SimpleNamespace(definition=self.user)
        return None


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda u: setattr(u, "user", None), "was removed or its tenant deactivated"),
        (lambda u: u.user.update(credential="$2b$second"), "password of 'carol@t.org' changed"),
        (lambda u: u.user.update(role="user"), "role of 'carol@t.org' changed"),
        (lambda u: u.tenant.update(active=False), "was removed or its tenant deactivated"),
    ],
    ids=["removed", "password", "role", "tenant-deactivated"],
)
def test_a_token_lasts_as_long_as_the_user_it_was_issued_to(change, reason):
    users = Users()
    tokens = Tokens(SECRET, users, "admin", "admin-pw", 60.0)
    token = tokens.issue(Principal(username="carol@t.org", tenant="t.org", role="admin"), "$2b$first")
    assert tokens.principal(token).username == "carol@t.org"
    change(users)
    with pytest.raises(TokenRefused, match=reason):
        tokens.principal(token)


def test_a_token_expires_and_a_forged_one_is_refused():
    now = [1000.0]
    tokens = Tokens(SECRET, Users(), "admin", "admin-pw", 60.0, clock=lambda: now[0])
    token = tokens.issue(Principal(username="admin", tenant=SUPER_TENANT, role="admin"), "")
    assert tokens.principal(token).is_super_admin
    with pytest.raises(TokenRefused, match="not one this platform issued"):
        Tokens(b"t" * 32, Users(), "admin", "admin-pw", 60.0, clock=lambda: now[0]).principal(token)
    with pytest.raises(TokenRefused, match="password of 'admin' changed"):
        Tokens(SECRET, Users(), "admin", "new-pw", 60.0, clock=lambda: now[0]).principal(token)
    now[0] += 61
    with pytest.raises(TokenRefused, match="has expired"):
        tokens.principal(token)


# --- what a user may send --------------------------------------------------------------------
def add_user(credential: str = "$2b$" + "x" * 56):
    return C.AddUser(
        definition=DEFINITION_KINDS["user"].model_validate(
            {"userName": "u", "credential": credential, "role": "user", "email": "u@example.org"}
        )
    )


ADMIN = Principal(username="admin", tenant=SUPER_TENANT, role="admin")
BOSS = Principal(username="boss@t.org", tenant="t.org", role="admin")
READER = Principal(username="r@t.org", tenant="t.org", role="user")


@pytest.mark.parametrize(
    "principal, target, command, code, reason",
    [
        (ADMIN, "carbon.super/user/u", add_user(), None, None),
        (BOSS, "t.org/user/u", add_user(), None, None),
        (BOSS, "carbon.super/user/u", add_user(), 403, "may not change the resources of tenant 'carbon.super'"),
        (READER, "t.org/user/u", add_user(), 403, "may read but not change"),
        (BOSS, "carbon.super/tenant/x", C.RemoveTenant(id="x"), 403, "only the super tenant's admin manages tenants"),
        (ADMIN, "carbon.super/user/u", add_user("plain"), 400, "definition.credential: a bcrypt hash is expected"),
        (ADMIN, "carbon.super/cluster/c", C.ReportNodeDestroyed(member_id="m"), 403, "platform's own parts only"),
        (BOSS, "carbon.super/application/a", C.RemoveApplicationSignup(tenant="u.org"), 403, "only its own tenant"),
    ],
    ids=[
        "super-admin-adds-user",
        "tenant-admin-own-tenant",
        "tenant-admin-super-tenant",
        "reader-writes",
        "tenant-admin-tenants",
        "plain-password",
        "platform-fact",
        "signup-for-another-tenant",
    ],
)
def test_a_command_is_allowed_as_its_rest_call_would_be(principal, target, command, code, reason):
    denied = command_denied(principal, parse_aggregate_id(target), command)
    if code is None:
        assert denied is None
    else:
        assert denied[0] == code and reason in denied[1]


def test_failed_logins_are_counted_per_user_from_an_address_and_per_address_over_a_window():
    now = [0.0]
    throttle = LoginThrottle(3, 10.0, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.retry_after("carol", "10.0.0.1") is None
        throttle.failed("carol", "10.0.0.1")
    assert throttle.retry_after("carol", "10.0.0.1") == pytest.approx(10.0)
    assert throttle.retry_after("dave", "10.0.0.1") == pytest.approx(10.0)  # the address, for anyone
    assert throttle.retry_after("carol", "10.0.0.9") is None  # failing carol's logins does not lock her out
    assert throttle.retry_after("dave", "10.0.0.2") is None
    now[0] = 10.01
    assert throttle.retry_after("carol", "10.0.0.1") is None


def test_failures_spread_over_addresses_never_lock_a_user_out_of_another():
    now = [0.0]
    throttle = LoginThrottle(3, 60.0, clock=lambda: now[0])
    for attacker in range(50):
        for _ in range(3):
            throttle.failed("carol", f"198.51.100.{attacker}")
    assert throttle.retry_after("carol", "10.0.0.7") is None
    assert throttle.retry_after("carol", "198.51.100.3") is not None


def test_the_platform_secret_file_is_created_once_owner_only(tmp_path):
    path = tmp_path / "state" / "platform.secret"
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: tuple(_read_or_create(path)), range(8)))
    assert len(secrets) == 1 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert platform_secret(Settings(state_dir=tmp_path / "state", platform_secret=None)) == secrets.pop()[0]
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        _read_or_create(path)


def test_member_key_prints_the_key_the_cloud_controller_gives_that_member():
    import typer
    from typer.testing import CliRunner

    from infra.auth.cli import register
    from infra.settings import get_settings

    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)  # two verbs: typer then dispatches by name, as `stratos` does

    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(
            app, ["member-key", "--tenant", "t.org", "--cluster", "c1", "--member", "m1", "--json"]
        )
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    printed = json.loads(done.output)
    secret = platform_secret(Settings())
    assert printed == {
        "signer": "member/t.org/c1/m1",
        "signingKey": member_credentials(secret, "t.org", "c1", "m1")["signingKey"],
    }


@given(
    key=st.binary(min_size=1, max_size=100),
    topic=st.sampled_from(["health", "commands"]),
    record_key=st.binary(max_size=50),
    value=st.binary(max_size=300),
)
def test_the_signature_is_standard_hmac_sha256_so_any_language_can_make_it(key, topic, record_key, value):
    import hashlib
    import hmac
    import struct

    from infra.auth.signing import signature

    message = topic.encode() + struct.pack(">I", len(record_key)) + record_key + value
    assert signature(key, topic, record_key, value) == hmac.new(key, message, hashlib.sha256).hexdigest().encode()
