"""Three node processes share the command partitions of one broker; when one leaves (SIGTERM)
or dies (kill -9), its aggregates are served by the others, no command lost or decided twice.
The takeover times are printed (bench/takeover.py measures their medians)."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from infra.node.node import partition_for
from schemas import commands as C
from schemas.status import CommandAccepted
from tests.conftest import wait_until
from tests.processes import end, start_node
from tests.test_log_integrity import add_np, claims, command, commits_by_command, np_aggregate

pytestmark = pytest.mark.integration


def owners(settings) -> dict[int, str]:
    """partition -> writer of its latest claim."""
    latest = {}
    for partition, _claim, writer in claims(settings):
        latest[partition] = writer
    return latest


def one_per_partition(settings) -> dict[int, str]:
    found = {}
    for n in range(100):
        found.setdefault(partition_for(np_aggregate(n), settings.partitions), np_aggregate(n))
        if len(found) == settings.partitions:
            return found
    raise AssertionError("no aggregate id for every partition")


def test_three_nodes_share_the_partitions_and_take_over_a_stopped_or_killed_one(settings, client):
    nodes = {}
    for _ in range(3):
        process = start_node(settings)
        nodes[process.pid] = process
    try:
        wait_until(
            lambda: len(set(owners(settings).values())) == 3 and len(owners(settings)) == 4,
            timeout=60,
            message="three nodes owning the four partitions",
        )
        targets = one_per_partition(settings)
        sent = []
        for _partition, target in targets.items():
            record = command(add_np(int(target.rsplit("np", 1)[1])), target)
            client.appender.append("commands", target, record)
            sent.append(record)
        wait_until(lambda: all(r.id in client.replies for r in sent), timeout=30, message="every aggregate created")
        taken = {}
        for how, sig in (("SIGTERM", signal.SIGTERM), ("kill -9", signal.SIGKILL)):
            owner_of = owners(settings)
            victim_pid = next(pid for pid in nodes if any(w.split(":")[1] == str(pid) for w in owner_of.values()))
            victim_partitions = [p for p, w in owner_of.items() if w.split(":")[1] == str(victim_pid)]
            started = time.monotonic()
            os.kill(victim_pid, sig)
            nodes.pop(victim_pid).join(20)
            probes = []
            for partition in victim_partitions:
                target = targets[partition]
                description = f"after {how} {uuid.uuid4().hex[:4]}"
                probe = command(
                    C.UpdateNetworkPartition(definition=add_np(int(target.rsplit("np", 1)[1]), description).definition),
                    target,
                )
                client.appender.append("commands", target, probe)
                probes.append(probe)
                sent.append(probe)
            wait_until(
                lambda probes=probes: all(p.id in client.replies for p in probes),
                timeout=40,
                message=f"the victim's aggregates answered after {how}",
            )
            taken[how] = time.monotonic() - started
            assert all(isinstance(client.replies[p.id], CommandAccepted) for p in probes)
            assert all(w.split(":")[1] != str(victim_pid) for w in owners(settings).values())
        print("\ntakeover: " + ", ".join(f"{how} {seconds:.1f}s" for how, seconds in taken.items()))
    finally:
        for process in nodes.values():
            end(process)
    history = commits_by_command(settings)
    assert all(len(history[r.id]) == 1 for r in sent), "no command lost or decided twice"
