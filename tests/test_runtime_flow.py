"""The runtime on the real broker: definitions, in-use rules, deployment, member lifecycle."""

from __future__ import annotations

import pytest

from schemas import commands as C
from schemas.definitions import DEFINITION_KINDS
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted, CommandRejected
from tests.conftest import events_of, sample, wait_until

pytestmark = pytest.mark.integration
T = "carbon.super"

DEFINITIONS = [
    ("networkPartition", "network-partition.json"),
    ("cartridge", "php.json"),
    ("autoscalingPolicy", "autoscaling-policy.json"),
    ("deploymentPolicy", "deployment-policy.json"),
    ("applicationPolicy", "application-policy.json"),
    ("application", "application-single-cartridge.json"),
]


def add(client, kind: str, body: dict):
    model = DEFINITION_KINDS[kind].model_validate(body)
    command = getattr(C, f"Add{kind[0].upper()}{kind[1:]}")(definition=model)
    return client.call(aggregate_id(T, kind, model.definition_id), command)


def define_all(client) -> None:
    for kind, name in DEFINITIONS:
        reply = add(client, kind, sample(name))
        assert isinstance(reply, CommandAccepted), reply


def test_duplicate_add_is_rejected_with_409_and_state_kept(settings, running_node, client):
    first = add(client, "cartridge", sample("php.json"))
    again = add(client, "cartridge", sample("php.json"))
    assert isinstance(first, CommandAccepted) and first.event_types == ["CartridgeAdded"]
    assert isinstance(again, CommandRejected) and again.code == 409 and "php" in again.reason
    assert [e.type for e in events_of(settings, aggregate_id(T, "cartridge", "php"))] == ["CartridgeAdded"]


def test_unknown_id_is_rejected_with_404_naming_it(running_node, client):
    reply = client.call(aggregate_id(T, "cartridge", "nope"), C.RemoveCartridge(id="nope"))
    assert isinstance(reply, CommandRejected) and reply.code == 404 and "'nope'" in reply.reason


def test_repeated_command_id_takes_effect_once(settings, running_node, client):
    from infra.log.kafka import envelope
    from schemas.records import CommandRecord

    model = DEFINITION_KINDS["cartridge"].model_validate(sample("php.json"))
    target = aggregate_id(T, "cartridge", "php")
    record = envelope(CommandRecord, C.AddCartridge(definition=model), target, record_id="fixed-id-1")
    client.appender.append("commands", target, record)
    assert isinstance(client.wait("fixed-id-1"), CommandAccepted)
    client.appender.append("commands", target, record)
    again = client.wait("fixed-id-1")
    # answered with the original outcome, and nothing written again
    assert isinstance(again, CommandAccepted) and again.duplicate and again.event_types == ["CartridgeAdded"]
    assert len(events_of(settings, target)) == 1


def test_deploy_marks_definitions_used_and_creates_the_cluster_at_min(settings, running_node, client):
    define_all(client)
    app = aggregate_id(T, "application", "single-cartridge-app")
    assert isinstance(
        client.call(app, C.DeployApplication(application_policy_id="application-policy-1")), CommandAccepted
    )
    cluster = aggregate_id(T, "cluster", "single-cartridge-app.php1.php.domain")
    spawned = wait_until(
        lambda: [e for e in events_of(settings, cluster) if e.type == "MemberSpawnRequested"],
        message="the min rule's spawn request",
    )
    assert len(spawned) == 1  # cartridgeMin 1
    assert spawned[0].payload.partition_id == "partition-1"
    # in use: the autoscaling policy cannot be removed now
    reply = client.call(
        aggregate_id(T, "autoscalingPolicy", "autoscaling-policy-1"),
        C.RemoveAutoscalingPolicy(id="autoscaling-policy-1"),
    )
    assert isinstance(reply, CommandRejected) and "in use" in reply.reason
    assert "single-cartridge-app" in reply.reason

    member = spawned[0].payload.member_id
    for command in (
        C.ReportNodeCreated(member_id=member, node_id=member, private_ip="10.0.0.2"),
        C.ReportInstanceStatus(member_id=member, status="Started"),
        C.ReportInstanceStatus(member_id=member, status="Activated"),
    ):
        assert isinstance(client.call(cluster, command), CommandAccepted)
    wait_until(
        lambda: any(
            e.type == "ApplicationStatusChanged" and e.payload.status == "Active" for e in events_of(settings, app)
        ),
        message="application Active",
    )


def test_illegal_member_transition_is_rejected_and_changes_nothing(settings, running_node, client):
    define_all(client)
    app = aggregate_id(T, "application", "single-cartridge-app")
    client.call(app, C.DeployApplication(application_policy_id="application-policy-1"))
    cluster = aggregate_id(T, "cluster", "single-cartridge-app.php1.php.domain")
    spawned = wait_until(lambda: [e for e in events_of(settings, cluster) if e.type == "MemberSpawnRequested"])
    before = len(events_of(settings, cluster))
    reply = client.call(
        cluster, C.ReportInstanceStatus(member_id=spawned[0].payload.member_id, status="ReadyToShutdown")
    )
    assert isinstance(reply, CommandRejected) and "Created to ReadyToShutDown" in reply.reason
    assert len(events_of(settings, cluster)) == before


def test_deploy_with_unknown_policy_fails_naming_it_and_releases(settings, running_node, client):
    define_all(client)
    app = aggregate_id(T, "application", "single-cartridge-app")
    client.call(app, C.DeployApplication(application_policy_id="no-such-policy"))
    failed = wait_until(
        lambda: [e for e in events_of(settings, app) if e.type == "ApplicationDeploymentFailed"],
        message="deployment failure",
    )
    assert "no-such-policy" in failed[0].payload.reason
    # everything it had marked is released again, so the cartridge can be removed
    wait_until(
        lambda: isinstance(
            client.call(
                aggregate_id(T, "application", "single-cartridge-app"), C.RemoveApplication(id="single-cartridge-app")
            ),
            CommandAccepted,
        )
    )
    wait_until(
        lambda: isinstance(
            client.call(aggregate_id(T, "cartridge", "php"), C.RemoveCartridge(id="php")), CommandAccepted
        ),
        message="php removable after release",
    )


def test_a_command_that_does_not_validate_is_dead_lettered_and_the_node_goes_on(settings, running_node, client):
    import json

    from infra.log.kafka import envelope, read_to_end
    from schemas.records import CommandRecord

    good = envelope(CommandRecord, C.RemoveCartridge(id="php"), aggregate_id(T, "cartridge", "php"))
    bad = json.loads(good.model_dump_json())
    bad["aggregate_id"] = "carbon.super/widget/php"
    client.appender.producer.send(settings.topic("commands"), key=b"x", value=json.dumps(bad).encode())
    client.appender.producer.send(settings.topic("commands"), key=b"y", value=b"not json at all")
    reply = client.call(aggregate_id(T, "cartridge", "php"), C.RemoveCartridge(id="php"))
    assert isinstance(reply, CommandRejected) and reply.code == 404  # the node is still answering
    letters = wait_until(
        lambda: (
            len(list(read_to_end(settings, "deadletter"))) >= 2
            and [d.record.payload for d in read_to_end(settings, "deadletter")]
        )
    )
    reasons = " | ".join(letter.reason for letter in letters)
    assert "unknown kind 'widget'" in reasons and "Invalid JSON" in reasons
