"""Replay debugging as an engineer runs it: the `stratos` CLI against a log the whole loop wrote.

One scaling run (node, reactor, cloud controller with simulated instances, faust health
worker; short windows) takes a cluster 1 -> 2 -> 4 -> 1; then `replay --at` each phase,
`history`, `diff`, `why` on a terminated member, `why --effects` on the deploy command, and
`replay --what-if` with a higher threshold are run as separate processes, as a user would.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from infra.cli.main import app
from infra.settings import get_settings
from tests.conftest import wait_until
from tests.test_scaling_acceptance import (  # noqa: F401
    APP,
    CALM_FAULT_SECONDS,
    CLUSTER,
    LEAVING,
    active,
    cluster_events,
    deploy,
    mock_iaas,
    platform,
    put_pattern,
    short_loop_settings,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def loop_settings(settings, tmp_path):
    """The acceptance tests' short loop, without member faults: the run's decisions are all the autoscaler's."""
    return short_loop_settings(settings, tmp_path, CALM_FAULT_SECONDS)


def stratos(settings, *args: str, expect: int = 0, process: bool = False):
    """Run a `stratos` verb: in this process through the same typer app (quick), or as the
    console script in its own process (`process=True`, as a user's shell runs it)."""
    env = {
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_STATE_DIR": str(settings.state_dir),
        "STRATOS_HEALTH_WINDOW_SECONDS": str(settings.health_window_seconds),
        "COLUMNS": "250",
    }
    if process:
        done = subprocess.run(
            [sys.executable, "-m", "infra.cli", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == expect, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done.stdout
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == expect, (args, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


def members_at(settings, at: str) -> dict[str, dict]:
    view = json.loads(stratos(settings, "replay", "--at", at, "--json"))
    return view["clusters"][CLUSTER]["members"]


def in_service(settings) -> set[str]:
    """Members requested and not yet leaving, whatever their status."""
    members: set[str] = set()
    for event in cluster_events(settings, "MemberSpawnRequested", *LEAVING):
        (members.add if event.type == "MemberSpawnRequested" else members.discard)(event.payload.member_id)
    return members


def now() -> str:
    return datetime.now(UTC).isoformat()


def test_replay_history_why_and_what_if_on_a_cluster_scaled_1_2_4_1(loop_settings, platform, mock_iaas, client):
    settings = loop_settings
    # load: ceil(min 1 * load / 25) members (memory stays under its threshold); 76 rather than a
    # round 100 so that the prediction's overshoot on the rising window still asks for 4
    put_pattern(mock_iaas, load=10, memory=5)
    deploy(client, min_count=1, max_count=6)
    phases = []
    for load, count in ((10, 1), (30, 2), (76, 4)):
        put_pattern(mock_iaas, load=load, memory=5)
        # settled: `count` Active and no other member in service. On a rising window the
        # prediction can overshoot (a step to 76 on bunched samples may ask for 5), and the
        # cluster then passes through `count` Active with one more still starting.
        wait_until(
            lambda count=count: len(active(settings)) == len(in_service(settings)) == count,
            timeout=90,
            message=f"{count} Active and no other member in service",
        )
        phases.append((now(), count))
    put_pattern(mock_iaas, load=10, memory=5)
    wait_until(
        lambda: (
            len(active(settings)) == 1
            and len(cluster_events(settings, "MemberTerminated"))
            == len(cluster_events(settings, "MemberSpawnRequested")) - 1
        ),
        timeout=90,
        message="back to 1",
    )
    phases.append((now(), 1))

    # replay --at: each phase's members in service, all Active (a member found silent on this
    # busy machine may be leaving beside them: it is shown, marked leaving)
    for at, count in phases:
        serving = [m for m in members_at(settings, at).values() if not m["leaving"]]
        assert len(serving) == count, (at, serving)
        assert {m["status"] for m in serving} == {"Active"}
    # ... and by offset vector: after the cluster's first commit (created with its min member)
    # that member is only requested
    first = json.loads(stratos(settings, "history", CLUSTER, "--json"))[0]
    assert first["type"] == "ClusterCreated"
    by_offset = json.loads(
        stratos(settings, "replay", "--at", f"{first['partition']}:{first['offset']}", "--aggregate", CLUSTER, "--json")
    )
    assert [m["status"] for m in by_offset["state"]["members"].values()] == ["Created"]

    # history: one line per event, with the command that caused it
    timeline = json.loads(stratos(settings, "history", CLUSTER, "--json"))
    types = [e["type"] for e in timeline]
    assert types.count("MemberSpawnRequested") >= 4
    assert types.count("MemberTerminated") == types.count("MemberSpawnRequested") - 1
    scale_ups = [e for e in timeline if e["type"] == "ScalingDecided" and e["figures"]["spawn"]]
    assert scale_ups[0]["figures"]["required"] == 2 and max(e["figures"]["required"] for e in scale_ups) >= 4
    assert all(e["command"]["type"] == "ScaleCluster" for e in scale_ups)
    assert "MemberTerminated" in stratos(settings, "history", CLUSTER)

    # diff between the 4-member phase and the end: three members gone
    changes = json.loads(stratos(settings, "diff", CLUSTER, "--from", phases[2][0], "--to", phases[3][0], "--json"))[
        "changes"
    ]
    removed = {c["path"][1] for c in changes if c["path"][0] == "members" and c["kind"] == "removed"}
    assert len(removed) == len(members_at(settings, phases[2][0])) - 1

    # why: the terminated member's chain goes down to the health sample that fed the window
    scaled_in = {
        e["figures"]["member_id"]
        for e in timeline
        if e["type"] == "MemberTerminationRequested" and e["command"]["type"] == "ScaleCluster"
    }
    terminated = next(e for e in timeline if e["type"] == "MemberTerminated" and e["figures"]["member_id"] in scaled_in)
    chain = json.loads(stratos(settings, "why", terminated["id"], "--json"))["chain"]
    kinds = [link["type"] for link in chain]
    assert kinds[0] == "MemberTerminated"
    assert kinds.index("MemberTerminationRequested") + 1 == kinds.index("ScalingDecided")
    assert kinds.index("ScalingDecided") + 1 == kinds.index("ScaleCluster")
    scale = chain[kinds.index("ScaleCluster")]
    # the verdict asked for the members its predicted load needs (one per 25 of load; the load
    # may still have been falling, so it may have asked for 2 before 1)
    predicted = scale["figures"]["figures"]["load_average.predicted"]
    assert scale["topic"] == "commands"
    assert scale["figures"]["required"] == max(1, math.ceil(predicted / 25)), scale["figures"]
    assert chain[-1]["topic"] == "health" and chain[-1]["type"] == "HealthStat"
    decided = chain[kinds.index("ScalingDecided")]
    assert decided["figures"]["reason"] == "ScaleDown"
    printed = stratos(settings, "why", terminated["id"], process=True)
    assert "ScaleCluster" in printed and "HealthStat" in printed

    # why --effects on the deploy command reaches the cluster's members
    deploy_command = next(
        e
        for e in json.loads(stratos(settings, "history", APP, "--json"))
        if e["command"]["type"] == "DeployApplication" and e["command"]["outcome"] == "accepted"
    )
    tree = json.loads(stratos(settings, "why", deploy_command["command"]["id"], "--effects", "--json"))
    reached: set[str] = set()

    def walk(nodes):
        for node in nodes:
            reached.add(node["link"]["type"])
            walk(node["effects"])

    walk(tree["effects"])
    assert {"ClusterCreated", "MemberSpawnRequested", "MemberActivated"} <= reached

    # what-if: a higher load threshold on the same recorded period makes fewer scale-ups
    policy = settings.state_dir / "lenient.json"
    policy.write_text(
        json.dumps(
            {
                "id": "lenient",
                "loadThresholds": {"memoryConsumption": {"threshold": 30}, "loadAverage": {"threshold": 100}},
            }
        )
    )
    result = json.loads(stratos(settings, "replay", "--what-if", str(policy), "--aggregate", CLUSTER, "--json"))
    totals = result["totals"]
    assert totals["recorded_scale_ups"] == len(scale_ups)
    assert totals["what_if_scale_ups"] < totals["recorded_scale_ups"]
    assert f"scale-ups recorded {len(scale_ups)}" in stratos(
        settings, "replay", "--what-if", str(policy), "--aggregate", CLUSTER
    )


def test_bad_positions_and_unknown_ids_get_one_clear_line(settings, tmp_path):
    settings = settings.model_copy(update={"state_dir": tmp_path})
    assert "not an ISO 8601 time" in stratos(settings, "replay", "--at", "2026-13-45T00:00Z", expect=2)
    assert "not PARTITION:OFFSET" in stratos(settings, "replay", "--at", "0:x", expect=2)
    assert "partitions 0-3" in stratos(settings, "replay", "--at", "9:1", expect=2)
    assert "no record 'nope'" in stratos(settings, "why", "nope", expect=1)
    assert "is not of the form" in stratos(settings, "history", "bad-id", expect=2)
    policy = tmp_path / "p.json"
    policy.write_text("{not json")
    assert "not JSON" in stratos(settings, "replay", "--what-if", str(policy), "--aggregate", CLUSTER, expect=2)


def test_an_invalid_chosen_snapshot_costs_only_itself(settings):
    """Snapshots are decoded only once chosen; a chosen one that does not validate makes the
    reader decode every record again, so the aggregate's previous valid snapshot is used."""
    from infra.log.kafka import Appender, envelope
    from infra.log.recovery import CHECKPOINT, CLAIM, load_snapshots
    from schemas.records import Snapshot, SnapshotRecord

    aggregate = "carbon.super/cartridge/php"
    appender = Appender(settings)

    def send(key: str, snapshot: Snapshot) -> None:
        appender.append("snapshots", key, envelope(SnapshotRecord, snapshot, key), partition=0)

    send(f"{CLAIM}/0", Snapshot(aggregate_type=CLAIM, events_partition=0, events_offset=-1, state={}, claim="c1"))
    send(
        aggregate,
        Snapshot(aggregate_type="cartridge", events_partition=0, events_offset=3, state={"version": 1}, claim="c1"),
    )
    send(
        f"{CHECKPOINT}/0",
        Snapshot(aggregate_type=CHECKPOINT, events_partition=0, events_offset=3, state={}, claim="c1"),
    )
    good = envelope(
        SnapshotRecord,
        Snapshot(aggregate_type="cartridge", events_partition=0, events_offset=9, state={"version": 2}, claim="c1"),
        aggregate,
    ).model_dump_json()
    broken = good.replace('"events_offset":9', '"events_offset":"nine"')  # its tail still looks right
    appender.send_raw(settings.topic("snapshots"), aggregate.encode(), broken.encode(), partition=0)
    send(
        f"{CHECKPOINT}/0",
        Snapshot(aggregate_type=CHECKPOINT, events_partition=0, events_offset=9, state={}, claim="c1"),
    )
    appender.flush()
    appender.close()

    lazy, eager = load_snapshots(settings, 0), load_snapshots(settings, 0, lazy=False)
    assert lazy.latest[aggregate].payload.state == {"version": 1}
    assert (lazy.latest, lazy.replay_from, lazy.claim) == (eager.latest, eager.replay_from, eager.claim)
    assert lazy.replay_from == 10
