"""The example clients of docs/clients.md, run as documented (their own processes, nothing of
ours imported) against a running platform on the broker: a node with its reactor and a health
worker. The command clients create a cluster and report its first member's lifecycle (what the
cloud controller and the agent would say), the health clients send high load: the cluster
scales up. Their malformed records are in `stratos deadletter list` with the reason and Kafka
Connect's headers, and `stratos deadletter replay` re-sends a corrected one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.auth.signing import member_credentials, platform_secret
from infra.health.app import HealthWorkerThread
from infra.log.kafka import read_to_end
from schemas.domain import ClusterSpec, PartitionSpec
from tests.conftest import events_of, wait_until

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "clients"
T = "carbon.super"
CLUSTER = "clients.php1.php.domain"
KEY = f"{T}/cluster/{CLUSTER}"


@pytest.fixture
def loop_settings(settings, tmp_path):
    return settings.model_copy(
        update={
            "health_window_seconds": 3.0,
            "health_hop_seconds": 0.5,
            "member_fault_seconds": 30.0,
            "state_dir": tmp_path,
        }
    )


@pytest.fixture
def worker(loop_settings, running_node):
    running = HealthWorkerThread(loop_settings).start()
    yield running
    running.stop()


def command(settings, script: str, *args: str) -> list[str]:
    """How docs/clients.md runs an example: its own interpreter process, nothing of ours imported."""
    return [
        sys.executable,
        str(EXAMPLES / script),
        "--bootstrap",
        settings.kafka_bootstrap,
        "--prefix",
        settings.topic_prefix,
        *args,
    ]


def example(settings, script: str, *args: str, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    """The command clients play the cloud controller and the agent here: a trusted part that
    signs with the platform secret ($STRATOS_PLATFORM_SECRET, which the test session sets)."""
    return subprocess.run(
        command(settings, script, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or {**os.environ, "PYTHONPATH": ""},
    )


def stratos(settings, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "COLUMNS": "250",
    }
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True, timeout=120, input=stdin
    )


def commands_file(tmp_path, name: str, items: list) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(items))
    return str(path)


def spawned(settings) -> list[str]:
    return [e.payload.member_id for e in events_of(settings, KEY) if e.type == "MemberSpawnRequested"]


def test_example_clients_scale_a_cluster_and_their_bad_records_are_dead_letters(loop_settings, worker, tmp_path):
    spec = ClusterSpec(
        cluster_id=CLUSTER,
        application_id="clients",
        alias="php1",
        cartridge_type="php",
        min=1,
        max=4,
        autoscaling_policy_id="as-1",
        deployment_policy_id="dp-1",
        partition_algorithm="round-robin",
        thresholds={"load_average": 25},
        partitions=[PartitionSpec(id=p, network_partition_id="np1", provider="mock", max=2) for p in ("p1", "p2")],
    )
    create = commands_file(
        tmp_path,
        "create.json",
        [{"aggregate_id": KEY, "command": {"type": "CreateCluster", "spec": json.loads(spec.model_dump_json())}}],
    )
    created = example(loop_settings, "kafka_python_commands.py", create)
    assert created.returncode == 0, created.stdout + created.stderr
    assert "CreateCluster: accepted" in created.stdout and "MemberSpawnRequested" in created.stdout
    member = wait_until(lambda: spawned(loop_settings) and spawned(loop_settings)[0], message="the min rule's spawn")

    # what the cloud controller and the agent report, sent by the aiokafka client in CloudEvents binary mode
    lifecycle = commands_file(
        tmp_path,
        "lifecycle.json",
        [
            {"aggregate_id": KEY, "command": {"type": "ReportNodeCreated", "member_id": member, "node_id": member}},
            {
                "aggregate_id": KEY,
                "command": {"type": "ReportInstanceStatus", "member_id": member, "status": "Started"},
            },
            {
                "aggregate_id": KEY,
                "command": {"type": "ReportInstanceStatus", "member_id": member, "status": "Activated"},
            },
        ],
    )
    reported = example(loop_settings, "aiokafka_commands.py", lifecycle)
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert reported.stdout.count(": accepted") == 3 and "MemberActivated" in reported.stdout
    wait_until(
        lambda: (
            (view := worker.service.clusters.get(KEY)) is not None
            and view is not None
            and member in json.dumps(view.model_dump(mode="json") if hasattr(view, "model_dump") else str(view))
        ),
        timeout=30,
        message="the health worker's view of the member",
    )

    # load 90 against a threshold of 25: ceil(1 * 90 / 25) = 4 members, the cluster's max
    health = (
        "--cluster",
        CLUSTER,
        "--network-partition",
        "np1",
        "--member",
        member,
        "--value",
        "90",
        "--seconds",
        "4",
        "--interval",
        "0.25",
    )
    # signed as the member, with the key its payload carries (not the platform's secret)
    as_member = {
        **{k: v for k, v in os.environ.items() if k != "STRATOS_PLATFORM_SECRET"},
        "PYTHONPATH": "",
        "STRATOS_AGENT_SIGNING_KEY": member_credentials(platform_secret(loop_settings), T, CLUSTER, member)[
            "signingKey"
        ],
    }
    clients = [
        subprocess.Popen(command(loop_settings, script, *health), stdout=subprocess.PIPE, text=True, env=as_member)
        for script in ("kafka_python_health.py", "aiokafka_health.py")
    ]  # side by side
    outputs = [client.communicate(timeout=60)[0] for client in clients]
    assert all(c.returncode == 0 for c in clients) and all("health statistics for" in o for o in outputs), outputs
    wait_until(lambda: len(spawned(loop_settings)) == 4, timeout=40, message="scaled up to 4 members")
    decisions = [e for e in events_of(loop_settings, KEY) if e.type == "ScalingDecided"]
    assert any(d.payload.reason == "ScaleUp" for d in decisions)

    # malformed: a command with a wrong field, a negative health value
    bad = commands_file(
        tmp_path,
        "bad.json",
        [
            {
                "aggregate_id": KEY,
                "id": "bad-1",
                "command": {"type": "ReportInstanceStatus", "member_id": member, "status": "Sleeping"},
            }
        ],
    )
    refused = example(loop_settings, "kafka_python_commands.py", bad, "--timeout", "3")
    assert refused.returncode == 1 and "bad-1 ReportInstanceStatus: no reply within 3s" in refused.stdout
    negative = example(
        loop_settings,
        "aiokafka_health.py",
        "--cluster",
        CLUSTER,
        "--network-partition",
        "np1",
        "--member",
        member,
        "--value",
        "-5",
        "--seconds",
        "0",
        env=as_member,
    )
    assert negative.returncode == 0
    wait_until(
        lambda: len(list(read_to_end(loop_settings, "deadletter", decode_records=False))) >= 2,
        timeout=30,
        message="two dead letters",
    )

    listed = stratos(loop_settings, "deadletter", "list", "--json", "--since", "10m")
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    command_letter = next(letter for letter in letters if letter["source_topic"] == loop_settings.topic("commands"))
    assert "payload.ReportInstanceStatus.status" in command_letter["reason"]
    assert '"bad-1"' in command_letter["original"]
    headers = command_letter["headers"]
    assert headers["__connect.errors.topic"] == loop_settings.topic("commands")
    assert headers["__connect.errors.offset"] == str(command_letter["source_offset"])
    assert headers["__connect.errors.partition"] == str(command_letter["source_partition"])
    assert headers["__connect.errors.exception.class.name"].endswith("ValidationError")
    assert "status" in headers["__connect.errors.exception.message"]
    health_letter = next(letter for letter in letters if letter["source_topic"] == loop_settings.topic("health"))
    assert (
        "value" in health_letter["reason"]
        and health_letter["headers"]["ce_subject"]
        == f"{loop_settings.topic('health')}:{health_letter['source_partition']}:{health_letter['source_offset']}"
    )
    table = stratos(loop_settings, "deadletter", "list", "--topic", "commands")
    assert command_letter["id"] in table.stdout and "ValidationError" in table.stdout
    assert "1 dead letters" in table.stdout  # the health one is filtered out

    # replay: a correction that is still wrong is refused naming the field; a good one is handled
    original = json.loads(command_letter["original"])
    still_bad = {**original, "payload": {**original["payload"], "status": "Dormant"}}
    rejected = stratos(
        loop_settings, "deadletter", "replay", command_letter["id"], "--value", "-", stdin=json.dumps(still_bad)
    )
    assert rejected.returncode == 2 and "payload.ReportInstanceStatus.status" in rejected.stdout
    corrected = {**original, "payload": {**original["payload"], "status": "Activated"}}
    replayed = stratos(
        loop_settings,
        "deadletter",
        "replay",
        command_letter["id"],
        "--value",
        "-",
        "--sign",  # a status report is a fact only the platform sends: the operator vouches for it
        "--json",
        stdin=json.dumps(corrected),
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert json.loads(replayed.stdout)["record_id"] == "bad-1" and json.loads(replayed.stdout)["signed_by_platform"]
    wait_until(
        lambda: any(d.record.payload.command_id == "bad-1" for d in read_to_end(loop_settings, "replies")),
        timeout=30,
        message="the replayed command's reply",
    )
    # every record the platform wrote carries CloudEvents headers: the reply, the health worker's commands
    reply = next(raw for raw in read_to_end(loop_settings, "replies", decode_records=False) if b'"bad-1"' in raw.value)
    reply_headers = {name: value.decode() for name, value in reply.headers}
    assert reply_headers["ce_causationid"] == "bad-1" and reply_headers["ce_subject"] == KEY
    assert reply_headers["ce_source"] == "/stratos-es/node" and reply_headers["ce_type"] == "stratos.CommandAccepted"
    scale = next(
        raw for raw in read_to_end(loop_settings, "commands", decode_records=False) if b'"ScaleCluster"' in raw.value
    )
    assert dict(scale.headers)["ce_source"] == b"/stratos-es/health"
