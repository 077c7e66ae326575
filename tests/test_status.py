"""Platform status on the real broker: `stratos node` and `stratos reactor` as real processes
with their heartbeats, the API's `/api/health` and `stratos status`: a stopped part is named,
with the lag of its consumer group on the topics it reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.cli.main import app as stratos
from infra.log.commands_client import CommandClient
from schemas import commands as C
from schemas.definitions import DEFINITION_KINDS
from schemas.envelope import SUPER_TENANT
from schemas.ids import aggregate_id
from tests.conftest import sample, wait_until

pytestmark = pytest.mark.integration
PASSWORD = "status-pw"


def part(settings, name: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_HEARTBEAT_SECONDS": "0.5",
        "STRATOS_LOG_TO_KAFKA": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", name], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def status(url: str) -> dict:
    shown = CliRunner().invoke(stratos, ["status", "--json", "--url", url, "--password", PASSWORD])
    assert shown.exit_code in (0, 3), shown.output
    return {p["part"]: p for p in json.loads(shown.output)["parts"]}


def test_status_names_a_stopped_part_and_its_lag(settings, monkeypatch):
    own = settings.model_copy(update={"admin_password": SecretStr(PASSWORD), "password_hash_rounds": 4})
    server = ApiServer(create_app(own), port=free_port()).start()
    node, reactor = part(own, "node"), part(own, "reactor")
    client = CommandClient(own)
    partition = DEFINITION_KINDS["networkPartition"].model_validate(sample("network-partition.json"))
    try:
        wait_until(
            lambda: (
                status(server.url)["node"]["state"] == "running" and status(server.url)["reactor"]["state"] == "running"
            ),
            timeout=60,
            message="node and reactor running",
        )
        # the node handles one command (its group commits an offset), then stops
        key = aggregate_id(SUPER_TENANT, "networkPartition", "np-status")
        client.call(key, C.AddNetworkPartition(definition=partition.model_copy(update={"id": "np-status"})), timeout=60)
        node.send_signal(signal.SIGTERM)
        node.wait(30)
        for n in range(3):
            client.send(
                aggregate_id(SUPER_TENANT, "networkPartition", f"np-after-{n}"),
                C.AddNetworkPartition(definition=partition.model_copy(update={"id": f"np-after-{n}"})),
            )
        client.appender.flush()

        def stopped_with_lag():
            parts = status(server.url)
            return parts["node"]["state"] == "stopped" and parts["node"]["lag"].get("commands", 0) >= 3 and parts

        parts = wait_until(stopped_with_lag, timeout=30, message="the node stopped with 3 commands of lag")
        assert parts["node"]["groups"] == [own.topic("nodes")]
        assert parts["reactor"]["state"] == "running" and parts["broker"]["state"] == "running"
        assert parts["lb"]["state"] == "not seen"
        table = CliRunner().invoke(stratos, ["status", "--url", server.url, "--password", PASSWORD])
        assert table.exit_code == 3 and "NOT healthy" in table.output
        node_row = next(line for line in table.output.splitlines() if line.strip("│ ").startswith("node"))
        assert "stopped" in node_row and "commands 3" in node_row

        # with the API down, --direct reads the broker itself
        from infra.settings import get_settings

        monkeypatch.setenv("STRATOS_KAFKA_BOOTSTRAP", own.kafka_bootstrap)
        monkeypatch.setenv("STRATOS_TOPIC_PREFIX", own.topic_prefix)
        get_settings.cache_clear()
        try:
            direct = CliRunner().invoke(stratos, ["status", "--direct", "--json"])
        finally:
            get_settings.cache_clear()
        assert direct.exit_code == 3
        assert {p["part"]: p["state"] for p in json.loads(direct.output)["parts"]}["node"] == "stopped"

        # the parts' own lines went to the logs topic too (STRATOS_LOG_TO_KAFKA=1)
        def platform_lines():
            logs = CliRunner().invoke(
                stratos, ["logs", "platform", "--json", "--url", server.url, "--password", PASSWORD]
            )
            return logs.exit_code == 0 and logs.output

        members = {json.loads(line)["member"].split("@")[0] for line in wait_until(platform_lines).splitlines()}
        assert "node" in members
    finally:
        client.close()
        for process in (node, reactor):
            if process.poll() is None:
                process.terminate()
                process.wait(15)
        server.stop()


def test_the_platform_health_is_the_super_admins(settings):
    own = settings.model_copy(update={"admin_password": SecretStr(PASSWORD), "password_hash_rounds": 4})
    server = ApiServer(create_app(own), port=free_port()).start()
    try:
        import httpx

        assert httpx.get(f"{server.url}/api/health", timeout=30).status_code == 401
        shown = CliRunner().invoke(stratos, ["status", "--url", server.url, "--password", "wrong"])
        assert shown.exit_code == 1 and "wrong user name or password" in shown.output
    finally:
        server.stop()
