"""The cartridge agent on the real broker, with a git repository made in the test."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from infra.agent.agent import CartridgeAgent, serve_directory
from infra.broker import free_port
from infra.log.kafka import Appender, envelope, read_to_end
from schemas.ids import aggregate_id
from schemas.records import NotifierRecord
from schemas.status import ArtifactUpdated, InstanceCleanupMember
from tests.conftest import signed_payload, wait_until

pytestmark = pytest.mark.integration
CLUSTER = "app.php1.php.domain"
KEY = aggregate_id("carbon.super", "cluster", CLUSTER)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit(repo: Path, text: str) -> str:
    (repo / "index.html").write_text(text)
    git(repo, "add", "index.html")
    git(repo, "commit", "-q", "-m", text)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "origin"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


class RunningAgent:
    def __init__(self, settings, workdir: Path, **payload) -> None:
        self.settings = settings
        self.agent = CartridgeAgent(
            settings,
            signed_payload(settings, member_id="php1.m1", cluster_id=CLUSTER, **payload),
            workdir,
            clean_hook=f"touch {workdir.parent / 'cleaned'}",
            wait_initialized=False,
        )
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def statuses(self) -> list[tuple[str, str | None]]:
        return [(d.record.type, d.record.payload.revision) for d in read_to_end(self.settings, "instance-status")]

    def notify(self, notice) -> None:
        appender = Appender(self.settings)
        appender.append("instance-notifier", KEY, envelope(NotifierRecord, notice, KEY))
        appender.close()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(10)


@pytest.fixture
def started(settings, tmp_path, repo):
    first = commit(repo, "version one")
    running = RunningAgent(settings, tmp_path / "app", repo_url=str(repo))
    yield running, repo, first
    running.stop()


def test_agent_checks_out_the_repository_and_reports_its_revision_on_every_update(started, tmp_path):
    agent, repo, first = started
    wait_until(lambda: ("InstanceActivated", first) in agent.statuses(), message="activated at the first commit")
    assert agent.statuses()[0] == ("InstanceStarted", None)
    second = commit(repo, "version two")
    agent.notify(ArtifactUpdated(cluster_id=CLUSTER, repo_url=str(repo)))
    wait_until(lambda: ("InstanceActivated", second) in agent.statuses(), message="the new revision reported")
    assert (tmp_path / "app" / "index.html").read_text() == "version two"
    # an update naming a commit checks out that commit, even an older one
    agent.notify(ArtifactUpdated(cluster_id=CLUSTER, repo_url=str(repo), commit=first))
    wait_until(lambda: agent.statuses()[-1] == ("InstanceActivated", first), message="pinned commit")
    assert (tmp_path / "app" / "index.html").read_text() == "version one"
    # another cluster's update is not ours
    agent.notify(ArtifactUpdated(cluster_id="other.domain", repo_url=str(repo)))
    agent.notify(InstanceCleanupMember(member_id="php1.m1", cluster_id=CLUSTER))
    wait_until(lambda: agent.statuses()[-1][0] == "InstanceReadyToShutdown", message="shutdown")
    assert (tmp_path / "app" / "index.html").read_text() == "version one"


def test_cleanup_publishes_maintenance_runs_the_hook_then_ready_to_shutdown(started, tmp_path):
    agent, _, first = started
    wait_until(lambda: ("InstanceActivated", first) in agent.statuses(), message="activated")
    assert not (tmp_path / "cleaned").exists()
    agent.notify(InstanceCleanupMember(member_id="another-member", cluster_id=CLUSTER))
    agent.notify(InstanceCleanupMember(member_id="php1.m1", cluster_id=CLUSTER))
    wait_until(lambda: agent.statuses()[-1][0] == "InstanceReadyToShutdown", message="ready to shut down")
    assert [s for s, _ in agent.statuses()] == [
        "InstanceStarted",
        "InstanceActivated",
        "InstanceMaintenanceMode",
        "InstanceReadyToShutdown",
    ]
    assert (tmp_path / "cleaned").exists()


def test_agent_is_activated_only_once_its_port_answers_then_publishes_host_health(settings, tmp_path):
    port = free_port()
    running = RunningAgent(settings, tmp_path / "app", ports=[port])
    try:
        wait_until(lambda: running.statuses(), message="InstanceStarted")
        assert running.statuses() == [("InstanceStarted", None)] and not running.agent.activated
        server = serve_directory(tmp_path / "app", port)
        try:
            wait_until(lambda: ("InstanceActivated", None) in running.statuses(), message="activated")
            published = wait_until(
                lambda: [d.record.payload for d in read_to_end(settings, "health")], message="health published"
            )
        finally:
            server.shutdown()
    finally:
        running.stop()
    # one record per publish carries every metric of the host
    sample = published[0]
    assert sample.type == "MemberHealth" and set(sample.metrics) == {"memory_consumption", "load_average"}
    assert 0 < sample.metrics["memory_consumption"] <= 100
    assert sample.member_id == "php1.m1" and sample.cluster_id == CLUSTER
