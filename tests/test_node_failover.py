"""Real node processes: kill -9 while commands flow, and two nodes sharing the partitions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from infra.replay.inspect_log import digest_all
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted, CommandRejected
from tests.conftest import events_of, wait_until
from tests.examples import definition

pytestmark = pytest.mark.integration
T = "carbon.super"


def start_node(settings, tmp_path, name: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_SNAPSHOT_EVERY": "40",
    }
    with open(tmp_path / f"{name}.log", "ab") as log:  # the node holds its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "node"], env=env, stdout=log, stderr=subprocess.STDOUT
        )


def cartridge_command(n: int):
    body = definition("cartridge").model_copy(update={"type": f"php{n}"})
    return aggregate_id(T, "cartridge", f"php{n}"), C.AddCartridge(definition=body)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(15)


def test_kill_9_while_commands_flow_loses_nothing_and_applies_nothing_twice(settings, client, tmp_path):
    first = start_node(settings, tmp_path, "first")
    second = None
    try:
        sent = [client.send(*cartridge_command(n)) for n in range(300)]
        wait_until(lambda: len(client.replies) >= 60, timeout=60, message="the first node answering")
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start_node(settings, tmp_path, "second")
        wait_until(lambda: all(c in client.replies for c in sent), timeout=90, message="a reply to every command")
        added = Counter(e.payload.definition.type for e in events_of(settings) if e.type == "CartridgeAdded")
        assert sorted(added) == sorted(f"php{n}" for n in range(300))  # none lost
        assert set(added.values()) == {1}  # none twice
        # the new node rebuilt the same state the log says: every cartridge exists there
        digest, count = digest_all(settings)
        assert count == 300
        again = client.call(*cartridge_command(7))
        assert isinstance(again, CommandRejected) and again.code == 409
        assert digest_all(settings) == (digest, count)  # a rejected command changes nothing
    finally:
        for process in (first, second):
            if process:
                stop(process)


def test_two_nodes_share_partitions_and_the_survivor_takes_over(settings, client, tmp_path):
    nodes = [start_node(settings, tmp_path, "a"), start_node(settings, tmp_path, "b")]
    try:
        targets = [cartridge_command(n) for n in range(40)]
        replies = [client.call(*t, timeout=60) for t in targets]
        assert all(isinstance(r, CommandAccepted) for r in replies)
        logs = [(tmp_path / f"{n}.log").read_text() for n in "ab"]
        assert all("rebuilt" in log for log in logs), "both nodes own partitions"
        stop(nodes[0])
        # aggregates of the stopped node's partitions are rebuilt by the survivor: all answer 409
        for target in targets:
            reply = client.call(*target, timeout=60)
            assert isinstance(reply, CommandRejected) and reply.code == 409, target[0]
        removed = client.call(aggregate_id(T, "cartridge", "php3"), C.RemoveCartridge(id="php3"), timeout=60)
        assert isinstance(removed, CommandAccepted)
    finally:
        for process in nodes:
            stop(process)
