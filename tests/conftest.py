"""Fixtures: one real embedded broker per test session; each test gets its own topic prefix."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import settings as hypothesis_settings

from infra.broker import EmbeddedBroker
from infra.log.eventlog import Rejections
from infra.log.kafka import ensure_topics
from infra.settings import Settings

T = TypeVar("T")
_EXIT_STATUS = {"code": 0}

# No property test has a deadline: a time limit per example is a timing assertion, and three
# workers on two cores (beside brokers and browsers) made a 200 ms deadline fail a correct fold
hypothesis_settings.register_profile("suite", deadline=None)
hypothesis_settings.load_profile("suite")

# The platform's own INFO lines (a node's assignments, claims, rebuilds) are kept with a failing
# test's report; the libraries' stay at pytest's default, warnings and up.
logging.getLogger("infra").setLevel(logging.INFO)

# One platform secret for every part a test starts, in this process or a child (they inherit
# it): parts whose settings name another state directory still sign and verify alike.
os.environ.setdefault("STRATOS_PLATFORM_SECRET", secrets.token_hex(32))


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave at once with pytest's own status once everything is reported.

    Client threads of components stopped mid-poll (kafka-python's IO threads, faust workers
    on their own loops) can outlive the session broker and keep the interpreter alive, which
    would hang `make test` in CI after a green run."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS["code"])


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def settings(broker, tmp_path):
    """Settings on the session broker with fresh topics, so tests never see each other's records,
    and the test's own state directory (its secret key: the node that seals and the cloud
    controller that opens share it). The test's topics are deleted after it, so that a worker's
    broker holds only a few tests' partitions at a time."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    made = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, partitions=4, state_dir=tmp_path)
    ensure_topics(made)
    yield made
    delete_topics(broker.bootstrap, prefix)


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic (faust's own too) under a test's prefix, after closing the worker's
    shared dead-letter producer for it; best effort."""
    from kafka import KafkaAdminClient

    Rejections.close(Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix))
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stratos-test-cleanup")
        try:
            names = [t for t in admin.list_topics() if t.startswith(prefix)]
            if names:
                admin.delete_topics(names)
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - cleanup must never fail a test
        pass


def thread_stacks() -> str:
    """Every thread of this process with its name and stack."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(
        f"--- thread {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame))
        for ident, frame in sys._current_frames().items()
    )


def stop_stratos_up(process) -> int:
    """Ctrl-C to a `stratos up` process; past 60 s, SIGKILL to it and to every part it started
    (each part runs in a session of its own, so a killed `up` would leave them running)."""
    import psutil

    if process.poll() is None:
        parts = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for part in parts:
            if part.is_running():
                part.kill()
    return process.returncode


@contextmanager
def stratos_broker(
    tmp_path: Path, prefix: str, *args: str, printed: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen, dict[str, str], Path]]:
    """`stratos broker` as an operator runs it: a process of its own, with only this test's
    STRATOS_* settings. Yields (process, its environment, its output file) once it has printed
    its bootstrap line (and each of `printed`); Ctrl-C at the end must stop it with code 0."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STRATOS_")},
        "PYTHONPATH": os.getcwd(),
        "STRATOS_STATE_DIR": str(tmp_path / "state"),
        "STRATOS_TOPIC_PREFIX": prefix,
        "COLUMNS": "400",
    }
    output = tmp_path / "broker.txt"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "broker", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: (
                (process.poll() is None or pytest.fail(output.read_text()))
                and all(line in output.read_text() for line in ("STRATOS_KAFKA_BOOTSTRAP=", *printed))
            ),
            timeout=120,
            interval=0.2,
            message="the broker's settings",
        )
        yield process, env, output
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    assert process.returncode == 0, output.read_text()[-2000:]


def nodes_group_view(settings) -> str:
    """What the broker says of the nodes' group (its members and their partitions, its committed
    offsets) and of the commands topic's ends: where an unanswered command stands."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    from infra.node.node import NODE_GROUP

    group = settings.topic(NODE_GROUP)
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="stratos-test-diagnosis")
        try:
            described = admin.describe_groups([group])
            committed = admin.list_group_offsets(group)
        finally:
            admin.close()
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        try:
            commands = [TopicPartition(settings.topic("commands"), p) for p in range(settings.partitions)]
            ends = consumer.end_offsets(commands)
        finally:
            consumer.close()
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure it explains
        return f"(no view of the nodes' group {group}: {exc})"
    return f"nodes' group {group}: {described}\ncommitted: {committed}\ncommands topic ends: {ends}"


def wait_until(
    condition: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
    seen: Callable[[], object] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds, with
    every thread's stack on stderr: the parts run on this process's threads, and where one of
    them waits is what a timeout in CI needs to be understood. `seen`, when given, says what the
    condition last looked at, for the failure's message."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            print(thread_stacks(), file=sys.stderr)
            last = f"; last seen: {seen()}" if seen else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{last}")
        time.sleep(interval)


SAMPLES = __import__("pathlib").Path(__file__).parent / "samples" / "stratos"


def sample(name: str) -> dict:
    import json

    return json.loads((SAMPLES / name).read_text())


class RunningNode:
    """A node and a reactor on threads of this process, on the test's own topics."""

    def __init__(self, settings, timer_seconds: float = 30.0) -> None:
        import threading

        from infra.node.node import Node
        from infra.reactor.reactor import Reactor

        self.node = Node(settings, timer_seconds=timer_seconds)
        self.reactor = Reactor(settings)
        self.threads = [
            threading.Thread(target=self.node.run, daemon=True),
            threading.Thread(target=self.reactor.run, daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        wait_until(self.node.ready.is_set, timeout=30, message="the node's partition assignment")

    def stop(self) -> None:
        self.node.stop()
        self.reactor.stop()
        for thread in self.threads:
            thread.join(15)


@pytest.fixture
def running_node(settings):
    running = RunningNode(settings)
    yield running
    running.stop()


@pytest.fixture
def client(settings):
    """The platform's command client; a command left unanswered prints every thread's stack,
    as a wait that times out does."""
    from infra.log.commands_client import CommandClient

    class StackOnTimeout(CommandClient):
        def wait(self, command_id, timeout=20.0):
            reply = super().wait(command_id, timeout)
            if reply is None:
                print(
                    f"no reply to {command_id} in {timeout}s\n{nodes_group_view(settings)}\n{thread_stacks()}",
                    file=sys.stderr,
                )
            return reply

    made = StackOnTimeout(settings)
    yield made
    made.close()


def events_of(settings, aggregate_id: str | None = None) -> list:
    """Every event on the test's events topic (optionally of one aggregate), in log order."""
    from infra.log.eventlog import read_events

    return [r for r in read_events(settings) if aggregate_id is None or r.aggregate_id == aggregate_id]


def signed_payload(settings, **fields):
    """An agent's payload with the signing key the cloud controller would give that member."""
    from pydantic import SecretStr

    from infra.agent.agent import AgentPayload
    from infra.auth.signing import member_credentials, platform_secret

    payload = AgentPayload(**fields)
    key = member_credentials(platform_secret(settings), payload.tenant, payload.cluster_id, payload.member_id)
    return payload.model_copy(update={"signing_key": SecretStr(key["signingKey"])})
