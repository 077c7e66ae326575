"""Least privilege on the broker: who may read and write what (`stratos kafka-acls`).

Principals of a platform with topic prefix P (docs/security.md, ADR 0008):

- `stratos`, the platform's parts, and `broker`, the nodes: super users (`super.users`); they
  need no ACL. Nobody else writes events, snapshots, replies, the notifier or the topology.
- `instance.<tenant>`, the instances of one tenant's clusters: write `P instance-status`,
  `P health` and `P logs` (each record signed with the member's own key, checked by the
  platform); read `P instances.<tenant>` only, the copy of what that tenant's agents need: its
  notifier notices and its members' initialisations (`infra.broker.fanout`). Not the notifier,
  not the events, not another tenant's copy.
- `client.<tenant>`, one per tenant's outside Kafka clients: write `P commands` (each with a
  user's token, checked by the node) and read `P replies.<tenant>`, the copy of that tenant's
  replies (`infra.broker.fanout`). Not the shared replies topic, not another tenant's copy.

Every grant is LITERAL (an exact topic name): a prefixed grant on `P replies.a.org` would also
match a tenant named `a.org.example` (and one on `P instances.ten` a tenant `tenant2`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from infra.settings import Settings

INSTANCE = "instance."
CLIENT = "client."
TENANT_REPLIES = "replies."
"""Topic kind of a tenant's replies: `replies.<tenant domain>`."""
TENANT_INSTANCES = "instances."
"""Topic kind of what a tenant's instances read: `instances.<tenant domain>`."""
TENANT_TOPICS = (TENANT_REPLIES, TENANT_INSTANCES)
COPIED_FROM = "stratos-copied-from"
"""Header of a record on `instances.<tenant>`: the topic kind it was copied from."""

Operation = Literal["READ", "WRITE"]


def client_principal(tenant: str) -> str:
    return f"{CLIENT}{tenant}"


def instance_principal(tenant: str) -> str:
    return f"{INSTANCE}{tenant}"


def instance_credentials(settings: Settings, tenant: str) -> tuple[str, str]:
    """The principal and password the cloud controller hands a tenant's instances on a secure
    broker (the password made on first use; `apply` gives the principal that same password)."""
    from infra.broker.secure import password

    name = instance_principal(tenant)
    return name, password(settings, name)


def tenant_replies(tenant: str) -> str:
    """The topic kind (name without the prefix) of a tenant's copy of its replies."""
    return f"{TENANT_REPLIES}{tenant}"


def tenant_instances(tenant: str) -> str:
    """The topic kind of what a tenant's instances read (notices and member initialisations)."""
    return f"{TENANT_INSTANCES}{tenant}"


@dataclass(frozen=True)
class Grant:
    """One ALLOW ACL: `principal` may `operation` on the topic `topic` (LITERAL)."""

    principal: str
    operation: Operation
    topic: str

    def as_dict(self) -> dict[str, str]:
        return {**asdict(self), "resource": "TOPIC", "pattern": "LITERAL", "permission": "ALLOW"}

    def kafka_acl(self):
        from kafka.admin import (
            ACL,
            ACLOperation,
            ACLPermissionType,
            ACLResourcePatternType,
            ResourcePattern,
            ResourceType,
        )

        return ACL(
            principal=f"User:{self.principal}",
            host="*",
            operation=ACLOperation[self.operation],
            permission_type=ACLPermissionType.ALLOW,
            resource_pattern=ResourcePattern(ResourceType.TOPIC, self.topic, ACLResourcePatternType.LITERAL),
        )


def plan(settings: Settings, tenants: list[str]) -> list[Grant]:
    """Every ACL of the platform's outside principals, for these tenants."""
    topic = settings.topic
    grants = []
    for tenant in sorted(set(tenants)):
        instance = instance_principal(tenant)
        grants += [Grant(instance, "WRITE", topic(kind)) for kind in ("instance-status", "health", "logs")]
        grants += [
            Grant(instance, "READ", topic(tenant_instances(tenant))),
            Grant(client_principal(tenant), "WRITE", topic("commands")),
            Grant(client_principal(tenant), "READ", topic(tenant_replies(tenant))),
        ]
    return grants


def principals(grants: list[Grant]) -> list[str]:
    return sorted({grant.principal for grant in grants})


def apply(settings: Settings, grants: list[Grant]) -> dict[str, str]:
    """Create the tenants' reply and instance topics, a SCRAM-SHA-512 credential for each principal that has
    none yet (its password made into `<state dir>/kafka-tls/<principal>.password`) and the ACLs
    (creating one that exists changes nothing). Returns principal -> its password file."""
    from kafka import KafkaAdminClient
    from kafka.admin import UserScramCredentialUpsertion

    from infra.auth.tls import kafka_tls_dir
    from infra.broker.secure import password
    from infra.log.kafka import ensure_topics, kafka_client_options

    kinds = [kind for g in grants if (kind := g.topic.removeprefix(settings.topic_prefix)).startswith(TENANT_TOPICS)]
    ensure_topics(settings, kinds)
    admin = KafkaAdminClient(**kafka_client_options(settings), client_id="stratos-acls")
    try:
        names = principals(grants)
        known = admin.describe_user_scram_credentials(names)
        missing = [name for name in names if not (known.get(name) or {}).get("credential_infos")]
        if missing:
            failed = admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(name, "SCRAM-SHA-512", password(settings, name)) for name in missing]
            )
            if problems := {name: error for name, error in failed.items() if error}:
                raise RuntimeError(f"SCRAM credentials not made: {problems}")
        result = admin.create_acls([grant.kafka_acl() for grant in grants])
        if result.get("failed"):
            raise RuntimeError(f"ACLs not created: {result['failed']}")
    finally:
        admin.close()
    return {name: str(kafka_tls_dir(settings) / f"{name}.password") for name in names}


def known_tenants(settings: Settings) -> list[str]:
    """The tenants the log has defined, and the super tenant."""
    from infra.log.eventlog import read_events
    from schemas.envelope import SUPER_TENANT
    from schemas.ids import parse_aggregate_id

    found = {SUPER_TENANT}
    for event in read_events(settings):
        ref = parse_aggregate_id(event.aggregate_id)
        if ref.kind == "tenant":
            found.add(ref.id)
    return sorted(found)
