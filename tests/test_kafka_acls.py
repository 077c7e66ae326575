"""The ACL plan of `stratos kafka-acls` as a pure rule: each principal gets exactly its topics,
every grant an exact topic name, and no tenant's clients or instances any grant on another
tenant's topics (nor on the events or notifier topics)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from infra.auth.secrets import secret_box
from infra.auth.signing import public_metadata
from infra.broker.acls import client_principal, instance_principal, plan
from infra.cloud.controller import MemberBook
from infra.log.kafka import envelope
from infra.settings import Settings
from schemas import events as E
from schemas.ids import aggregate_id
from schemas.records import Commit, LogRecord

SETTINGS = Settings(kafka_bootstrap="x", topic_prefix="stratos.")
domains = st.from_regex(r"[a-z][a-z0-9-]{0,8}(\.[a-z][a-z0-9-]{0,8}){1,2}", fullmatch=True)


def grants_of(grants, principal: str) -> set[tuple[str, str]]:
    return {(g.operation, g.topic) for g in grants if g.principal == principal}


def test_instances_and_clients_get_exactly_their_topics():
    grants = plan(SETTINGS, ["a.org"])
    assert grants_of(grants, instance_principal("a.org")) == {
        ("WRITE", "stratos.instance-status"),
        ("WRITE", "stratos.health"),
        ("WRITE", "stratos.logs"),
        ("READ", "stratos.instances.a.org"),
    }
    assert grants_of(grants, client_principal("a.org")) == {
        ("WRITE", "stratos.commands"),
        ("READ", "stratos.replies.a.org"),
    }
    written = {g.topic for g in grants if g.operation == "WRITE"}
    assert not written & {"stratos.events", "stratos.snapshots", "stratos.replies", "stratos.topology"}
    assert all(g.as_dict()["pattern"] == "LITERAL" for g in grants)


@given(st.lists(domains, min_size=2, max_size=5, unique=True))
def test_no_tenants_clients_or_instances_reach_another_tenants_topics(tenants):
    grants = plan(SETTINGS, [*tenants, *tenants])  # named twice: granted once
    assert len(grants) == len(set(grants)) == 6 * len(tenants)
    for tenant in tenants:
        for principal, topic in (
            (client_principal(tenant), f"stratos.replies.{tenant}"),
            (instance_principal(tenant), f"stratos.instances.{tenant}"),
        ):
            reads = {name for operation, name in grants_of(grants, principal) if operation == "READ"}
            assert reads == {topic}


def test_the_cloud_controller_hands_each_member_its_tenants_instance_credentials(tmp_path):
    """On a secure broker a member's payload carries its tenant's instance principal and password
    (what its agent connects with); the password, like the signing key, is in no node listing."""
    settings = Settings(state_dir=tmp_path)
    secure_book = MemberBook(
        secret_box(settings), signing_secret=b"s" * 32, kafka_credentials=lambda tenant: (f"instance.{tenant}", "pw")
    )
    plain_book = MemberBook(secret_box(settings), signing_secret=b"s" * 32)
    spawn = E.MemberSpawnRequested(
        member_id="m1",
        cluster_id="app.php.php.domain",
        application_id="app",
        cartridge_type="php",
        network_partition_id="np1",
        partition_id="p1",
        provider="mock",
    )
    commit = envelope(
        LogRecord,
        Commit(command_type="Test", outcome="accepted", events=[spawn]),
        aggregate_id("a.org", "cluster", "app.php.php.domain"),
        tenant="a.org",
        aggregate_seq=1,
    )
    secure_book.fold(commit)
    plain_book.fold(commit)
    metadata = secure_book.spawns["m1"].metadata
    assert (metadata["kafkaUsername"], metadata["kafkaPassword"]) == ("instance.a.org", "pw")
    assert "kafkaPassword" not in public_metadata(metadata) and "signingKey" not in public_metadata(metadata)
    assert not {"kafkaUsername", "kafkaPassword"} & set(plain_book.spawns["m1"].metadata)
