"""`stratos up` stopped and started again on the same state directory: the mock IaaS is a cloud
of its own, so the same members are Active on the same nodes afterwards (nothing replaced,
nothing duplicated), and a member crashed after the restart is still replaced.

The platform runs as a user runs it: `stratos up` (embedded broker, its log on disk in the state
directory, every part supervised), driven only through the API's port and read from its broker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from infra.broker import free_port
from infra.log.eventlog import read_events
from infra.log.kafka import read_to_end
from infra.settings import Settings
from tests.conftest import stop_stratos_up, wait_until

pytestmark = pytest.mark.integration
PASSWORD = "restart-secret"
APP = "single-cartridge-app"
CLUSTER = f"carbon.super/cluster/{APP}.php1.php.domain"
FLAT = {
    "load-average": {"sampleValues": [10], "sampleDuration": 60, "mode": "continue"},
    "memory-consumption": {"sampleValues": [10], "sampleDuration": 60, "mode": "continue"},
}
"""Health that asks for no more than the sample's min (2): every change of members is a fault."""


class Up:
    """One run of `stratos up`; `stop` is Ctrl-C."""

    def __init__(self, state_dir: Path, api_port: int, mock_port: int) -> None:
        env = {
            **os.environ,
            "STRATOS_ADMIN_PASSWORD": PASSWORD,
            "STRATOS_PASSWORD_HASH_ROUNDS": "4",
            "STRATOS_MOCK_API_PORT": str(mock_port),
            "STRATOS_CLOUD_RECONCILE_SECONDS": "0.5",
            "STRATOS_HEALTH_PUBLISH_SECONDS": "0.5",
            "STRATOS_LOG_LEVEL": "WARNING",
            "COLUMNS": "300",
        }
        self.output = state_dir.parent / f"up-{time.monotonic_ns()}.txt"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "up", "--api-port", str(api_port), "--state-dir", str(state_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{api_port}"
        bootstrap = wait_until(self._bootstrap, timeout=60, interval=0.2, message="`stratos up` on its broker")
        self.settings = Settings(kafka_bootstrap=bootstrap)
        self.http = httpx.Client(base_url=self.url, auth=("admin", PASSWORD), timeout=30)

    def _bootstrap(self) -> str | None:
        assert self.process.poll() is None, self.output.read_text()
        found = re.search(r"on Kafka (\S+)", self.output.read_text())
        return found.group(1) if found else None

    def get(self, path: str):
        try:
            reply = self.http.get(path)
        except httpx.HTTPError:
            return None  # not serving yet
        return reply.json() if reply.status_code == 200 else None

    def active(self) -> dict[str, str]:
        """Active member -> its private IP, as the API's runtime shows them."""
        runtime = self.get(f"/api/applications/{APP}/runtime") or {}
        return {
            m["memberId"]: m["defaultPrivateIP"]
            for instance in runtime.get("applicationInstances") or []
            for cluster in instance["clusterInstances"]
            for m in cluster["member"]
            if m["status"] == "Active"
        }

    def nodes(self) -> dict[str, str]:
        return {i["instanceId"]: i["defaultPrivateIp"] for i in self.get("/mock-iaas/api/instances") or []}

    def publishing(self) -> set[str]:
        """Members whose health samples are on this run's broker (its health topic starts empty)."""
        return {d.record.payload.member_id for d in read_to_end(self.settings, "health")} - {None}

    def events(self, type_: str) -> list:
        return [e for e in read_events(self.settings) if e.type == type_ and e.aggregate_id == CLUSTER]

    def stop(self) -> None:
        self.http.close()
        stop_stratos_up(self.process)


def test_members_survive_a_restart_on_their_nodes_and_a_crash_after_it_is_replaced(tmp_path):
    state_dir, api_port, mock_port = tmp_path / "state", free_port(), free_port()
    first = Up(state_dir, api_port, mock_port)
    try:
        members = wait_until(
            lambda: len(m := first.active()) == 2 and m,
            timeout=120,
            interval=0.5,
            message="the sample's two members Active",
        )
        assert first.http.put("/mock-iaas/api/health-patterns/php", json=FLAT).status_code == 200
        assert first.nodes() == members
    finally:
        first.stop()
    assert first.process.returncode == 0

    second = Up(state_dir, api_port, mock_port)
    try:
        wait_until(
            lambda: second.publishing() == set(members),
            timeout=90,
            interval=0.5,
            message="health from both kept members after the restart",
        )  # their agents' word kept
        wait_until(
            lambda: ((second.get("/mock-iaas/api/status") or {}).get("listings") or {}).get("count", 0) >= 2,
            timeout=30,
            interval=0.2,
            message="the cloud controller listing the kept nodes",
        )
        assert second.active() == members and second.nodes() == members  # same members, same nodes
        assert len(second.events("MemberSpawnRequested")) == 2 and not second.events("MemberTerminated")
        assert second.get("/mock-iaas/api/health-patterns/php") == {
            factor: {**pattern, "sampleValues": [10.0], "sampleDuration": 60.0} for factor, pattern in FLAT.items()
        }

        victim = sorted(members)[0]
        assert second.http.delete(f"/mock-iaas/api/instances/{victim}").status_code == 200
        now = wait_until(
            lambda: len(m := second.active()) == 2 and victim not in m and m,
            timeout=60,
            interval=0.5,
            message="the crashed member replaced",
        )
        assert set(now) - set(members) and set(second.nodes()) == set(now)
        (gone,) = second.events("MemberTerminated")
        assert (gone.payload.member_id, gone.payload.reason) == (victim, "node vanished")
    finally:
        second.stop()
