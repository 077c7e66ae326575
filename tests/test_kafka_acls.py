"""The ACL plan of `stratos kafka-acls` as a pure rule: each principal gets exactly its topics,
every grant an exact topic name, and no tenant's clients or instances any grant on another
tenant's topics (nor on the events or notifier topics)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from infra.broker.acls import client_principal, instance_principal, plan
from infra.settings import Settings

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
