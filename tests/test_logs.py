"""The logging service on the real broker: shippers (the agent's, a flood), the read side in the
API, `stratos logs` (the real CLI, `--follow` as a process), tenant scoping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from infra.agent.agent import CartridgeAgent
from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.cli.main import app as stratos
from infra.log.kafka import Appender, envelope, read_to_end
from infra.observe.line_shipper import LogShipper, LogSource
from schemas.ids import aggregate_id
from schemas.records import NotifierRecord
from schemas.status import InstanceCleanupMember
from tests.conftest import signed_payload, wait_until
from tests.test_agent import commit, git

pytestmark = pytest.mark.integration
PASSWORD = "logs-pw"
CLUSTER = "app.php1.php.domain"
FLOOD_BOUND_SECONDS = 10.0
"""How late another member's line may be while one member floods (shipper batch 0.2 s here)."""


@pytest.fixture
def log_settings(settings):
    return settings.model_copy(
        update={
            "admin_password": SecretStr(PASSWORD),
            "password_hash_rounds": 4,
            "log_lines_per_second": 100.0,
            "log_burst_lines": 300,
            "log_batch_seconds": 0.2,
            "log_ring_lines": 500,
        }
    )


@pytest.fixture
def api(log_settings):
    server = ApiServer(create_app(log_settings), port=free_port()).start()
    yield server.url
    server.stop()


def lines(url: str, target: str, **params) -> list[dict]:
    reply = httpx.get(f"{url}/api/logs", params={"target": target, **params}, auth=("admin", PASSWORD), timeout=30)
    return reply.json()["lines"] if reply.status_code == 200 else []


def cli(url: str, *args: str):
    return CliRunner().invoke(stratos, [*args, "--url", url, "--password", PASSWORD])


def test_logs_in_order_follow_streams_new_lines_and_a_flood_does_not_hold_others_back(log_settings, api):
    shipper = LogShipper(log_settings)
    quiet = LogSource("php1.quiet", CLUSTER, "app")
    noisy = LogSource("php1.noisy", CLUSTER, "app")
    try:
        for n in range(20):
            shipper.emit(quiet, "WARNING" if n % 5 == 0 else "INFO", f"line {n}")
        wait_until(lambda: len(lines(api, "php1.quiet")) == 20, message="the quiet member's 20 lines")

        shown = cli(api, "logs", "php1.quiet")
        assert shown.exit_code == 0, shown.output
        numbers = [int(row.rsplit("line ", 1)[1]) for row in shown.output.splitlines() if "line " in row]
        assert numbers == list(range(20))
        warned = cli(api, "logs", "php1.quiet", "--level", "WARN", "--json")
        assert [json.loads(row)["message"] for row in warned.output.splitlines()] == [
            "line 0",
            "line 5",
            "line 10",
            "line 15",
        ]
        assert cli(api, "logs", "php1.quiet", "--since", "soon").exit_code == 1

        follow = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infra.cli",
                "logs",
                "php1.quiet",
                "--follow",
                "--json",
                "--limit",
                "1",
                "--url",
                api,
                "--password",
                PASSWORD,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        try:
            assert json.loads(follow.stdout.readline())["message"] == "line 19"
            shipper.emit(quiet, "INFO", "a new line")
            assert json.loads(follow.stdout.readline())["message"] == "a new line"

            flooding = threading.Event()

            def flood():
                while not flooding.is_set():
                    for n in range(1000):
                        shipper.emit(noisy, "INFO", f"flood {n}")

            threading.Thread(target=flood, daemon=True).start()
            wait_until(lambda: shipper.refused("php1.noisy") > 10_000, message="the flood refused by the rate limit")
            shipper.emit(quiet, "INFO", "during the flood")
            wait_until(
                lambda: any(line["message"] == "during the flood" for line in lines(api, "php1.quiet", limit=5)),
                timeout=FLOOD_BOUND_SECONDS,
                message="the quiet member's line while the other floods",
            )
            assert json.loads(follow.stdout.readline())["message"] == "during the flood"
            flooding.set()
        finally:
            follow.terminate()
            follow.wait(10)

        def reported():
            body = httpx.get(
                f"{api}/api/logs", params={"target": CLUSTER, "limit": 5000}, auth=("admin", PASSWORD), timeout=30
            ).json()
            warnings = [
                line
                for line in body["lines"]
                if line["member"] == "php1.noisy" and "dropped by the rate limit" in line["message"]
            ]
            return warnings and body["dropped"].get("php1.noisy", {}).get("shipper", 0) > 10_000 and body

        body = wait_until(reported, message="the flood's dropped lines reported")
        kept = [line for line in body["lines"] if line["member"] == "php1.noisy"]
        assert len(kept) <= log_settings.log_ring_lines  # the ring bounds what the read side keeps
        assert "php1.quiet" not in body["dropped"]
    finally:
        shipper.close()


def test_a_tenant_sees_only_its_own_lines_and_poison_is_dead_lettered(log_settings, api):
    shipper = LogShipper(log_settings)
    poison = Appender(log_settings)
    poison.send_raw(log_settings.topic("logs"), b"php1.mine", b"{not json")
    poison.send_raw(log_settings.topic("logs"), b"\xff\xfe", b"{}")
    poison.flush()
    poison.close()
    try:
        shipper.emit(LogSource("php1.theirs", "their.cluster", "theirapp", tenant="other.org"), "INFO", "secret")
        shipper.emit(LogSource("php1.mine", CLUSTER, "app"), "INFO", "mine")
        wait_until(lambda: lines(api, "php1.mine"), message="the super tenant's line")
        shipper.emit(LogSource("php1.mine", CLUSTER, "app", tenant="other.org"), "INFO", "an intruder's line")
        shipper.emit(LogSource("php1.mine", CLUSTER, "app"), "INFO", "mine again")
        wait_until(lambda: len(lines(api, "php1.mine")) == 2, message="the second line")
    finally:
        shipper.close()
    reply = httpx.get(f"{api}/api/logs", params={"target": "php1.theirs"}, auth=("admin", PASSWORD), timeout=30)
    assert reply.status_code == 404 and "php1.theirs" in reply.json()["message"]
    everything = httpx.get(f"{api}/api/logs", auth=("admin", PASSWORD), timeout=30).json()["lines"]
    assert [line["message"] for line in everything] == [
        "mine",
        "mine again",
    ]  # the same member id elsewhere is not ours
    refused = cli(api, "logs", "php1.theirs")
    assert refused.exit_code == 1 and "no log lines" in refused.output
    assert httpx.get(f"{api}/api/logs", timeout=30).status_code == 401
    bad = httpx.get(f"{api}/api/logs", params={"level": "LOUD"}, auth=("admin", PASSWORD), timeout=30)
    assert bad.status_code == 400 and "level 'LOUD'" in bad.json()["message"]
    for params in ({"level": "LOUD"}, {"since": "\u00d3yesterday"}):  # refused before the stream starts
        bad_stream = httpx.get(f"{api}/api/logs/stream", params=params, auth=("admin", PASSWORD), timeout=30)
        assert bad_stream.status_code == 400 and list(params)[0] in bad_stream.json()["message"]
    letters = wait_until(
        lambda: (
            [
                d.record.payload
                for d in read_to_end(log_settings, "deadletter")
                if d.record.payload.source_topic == log_settings.topic("logs")
            ]
            or None
        ),
        message="the poison records dead-lettered",
    )
    assert len(letters) == 2 and any("key: not UTF-8" in letter.reason for letter in letters)


def test_the_agent_ships_its_own_git_clean_hook_and_log_file_lines(log_settings, api, tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    commit(origin, "v1")
    app_log = tmp_path / "app.log"
    app_log.write_text("app says hello\n")
    agent = CartridgeAgent(
        log_settings,
        signed_payload(
            log_settings,
            member_id="php1.agent",
            cluster_id=CLUSTER,
            application_id="app",
            repo_url=str(origin),
            log_file_paths=[app_log],
        ),
        tmp_path / "work",
        clean_hook="echo cleaning up; echo hook warning >&2",
        wait_initialized=False,
    )
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: any("InstanceActivated" in line["message"] for line in lines(api, "php1.agent")),
            message="the agent's own line about activation",
        )
        with app_log.open("a") as file:
            file.write("app says more\n")
        key = aggregate_id("carbon.super", "cluster", CLUSTER)
        appender = Appender(log_settings)
        appender.append(
            "instance-notifier",
            key,
            envelope(NotifierRecord, InstanceCleanupMember(member_id="php1.agent", cluster_id=CLUSTER), key),
        )
        appender.close()

        def shipped():
            found = lines(api, "app")
            return (
                any("InstanceReadyToShutdown" in line["message"] for line in found)
                and any(line["message"] == "app says more" for line in found)
                and found
            )

        found = wait_until(shipped, message="cleanup and the appended file line shipped")
    finally:
        agent.stop()
        thread.join(10)
    by_source = {}
    for line in found:
        by_source.setdefault(line["source"], []).append(line["message"])
    assert by_source[str(app_log)] == ["app says hello", "app says more"]
    assert by_source["clean-hook"] == ["cleaning up", "hook warning"]
    assert any(m.startswith("git clone") for m in by_source["git"])
    assert [m for m in by_source["agent"] if m.startswith("published")] == [
        "published InstanceStarted",
        "published InstanceActivated",
        "published InstanceMaintenanceMode",
        "published InstanceReadyToShutdown",
    ]
    assert any(m.startswith("artifacts checked out at revision") for m in by_source["agent"])
    assert {line["member"] for line in found} == {"php1.agent"} and {line["cluster"] for line in found} == {CLUSTER}


def test_a_member_that_bypasses_the_shipper_is_bounded_by_the_read_side(log_settings, api):
    """Batches written straight to the topic (no shipper, no rate limit): the read side refuses
    what is above twice the shipper's rate, counts it, and keeps at most its ring."""
    from datetime import datetime

    from schemas.observability import LogBatch, LogBatchRecord, LogLine

    rogue = Appender(log_settings)
    now = datetime.now(UTC)
    batch = LogBatch(
        member_id="php1.rogue",
        cluster_id=CLUSTER,
        application_id="app",
        lines=[LogLine(at=now, message=f"rogue {n}") for n in range(5000)],
    )
    for _ in range(4):
        rogue.send("logs", "php1.rogue", envelope(LogBatchRecord, batch, "php1.rogue"))
    rogue.flush()
    rogue.close()
    shipper = LogShipper(log_settings)
    try:
        shipper.emit(LogSource("php1.quiet", CLUSTER, "app"), "INFO", "still heard")
        wait_until(lambda: lines(api, "php1.quiet"), timeout=FLOOD_BOUND_SECONDS, message="the quiet member's line")
    finally:
        shipper.close()
    body = httpx.get(
        f"{api}/api/logs", params={"target": "php1.rogue", "limit": 5000}, auth=("admin", PASSWORD), timeout=30
    ).json()
    assert len(body["lines"]) <= log_settings.log_ring_lines
    assert body["dropped"]["php1.rogue"]["readSide"] >= 10_000  # of 20,000, at 200 lines/s with a burst of 600
