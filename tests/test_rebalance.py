"""Rebalances of the node group on Kafka: a partition that moves is claimed and rebuilt by its new
owner only (a node keeps the partitions it is assigned again), and a rebuild slower than
max.poll.interval.ms does not cost the node its membership. Every adoption writes a Claim, so the
Claims on the events topic count the rebuilds."""

from __future__ import annotations

from collections import Counter

import pytest
from kafka import KafkaAdminClient

from infra.log.kafka import GROUP_TIMINGS
from infra.node.node import NODE_GROUP
from tests.conftest import wait_until
from tests.processes import CONTEXT, end, start_node
from tests.test_log_integrity import add_np, claims, command, commits_by_command
from tests.test_scale_out import one_per_partition, owners

pytestmark = pytest.mark.integration

SLOW_REBUILD_SECONDS = GROUP_TIMINGS["max_poll_interval_ms"] / 1000 + 4


def _slow_node_main(settings_data: dict, delay: float) -> None:
    """A node whose every rebuild takes `delay` seconds more (the injected slowness)."""
    import time

    import infra.node.node
    from tests.processes import _node_main

    rebuild = infra.node.node.recover_partition

    def slow(*args, **kwargs):
        time.sleep(delay)
        return rebuild(*args, **kwargs)

    infra.node.node.recover_partition = slow
    _node_main(settings_data, None)


def writers_owning(settings) -> set[str]:
    found = owners(settings)
    return set(found.values()) if len(found) == settings.partitions else set()


def answer_everywhere(settings, client, round_: int) -> None:
    """A command to an aggregate of every partition, each answered (and decided) once."""
    sent = []
    for n, target in enumerate(one_per_partition(settings).values()):
        number = int(target.rsplit("np", 1)[1])
        record = command(add_np(number, f"round {round_}"), target, f"r{round_}.{n}")
        client.appender.append("commands", target, record)
        sent.append(record)
    for record in sent:
        assert client.wait(record.id, timeout=60) is not None, f"{record.aggregate_id} answered"
    decided = commits_by_command(settings)
    assert all(len(decided[r.id]) == 1 for r in sent)


def test_a_node_joining_or_leaving_makes_only_the_moved_partitions_rebuilt(settings, client):
    first, second = start_node(settings), start_node(settings)
    third = None
    try:
        wait_until(lambda: len(writers_owning(settings)) == 2, timeout=60, message="two nodes owning every partition")
        answer_everywhere(settings, client, 0)
        for change in ("join", "leave"):
            before, counted = owners(settings), Counter(p for p, _c, _w in claims(settings))
            if change == "join":
                third = start_node(settings)
                wait_until(
                    lambda: len(writers_owning(settings)) == 3, timeout=60, message="the third node's partitions"
                )
            else:
                end(third)
                wait_until(
                    lambda: len(writers_owning(settings)) == 2, timeout=60, message="the third node's partitions taken"
                )
            answer_everywhere(settings, client, 1 if change == "join" else 2)
            after, recounted = owners(settings), Counter(p for p, _c, _w in claims(settings))
            moved = {p for p in after if after[p] != before[p]}
            assert moved, f"the {change} moved a partition"
            for partition in after:
                assert recounted[partition] == counted[partition] + (partition in moved), (
                    f"{change}: partition {partition} claimed {recounted[partition] - counted[partition]} times"
                )
    finally:
        for process in (first, second, third):
            if process is not None:
                end(process)


def test_a_rebuild_slower_than_the_poll_interval_keeps_the_node_in_its_group(settings, client):
    fast = start_node(settings)
    slow = None
    try:
        wait_until(
            lambda: len(writers_owning(settings)) == 1, timeout=60, message="the first node owning every partition"
        )
        data = settings.model_dump(exclude={"fault", "admin_password"})
        slow = CONTEXT.Process(target=_slow_node_main, args=(data, SLOW_REBUILD_SECONDS), daemon=True)
        slow.start()
        wait_until(lambda: len(writers_owning(settings)) == 2, timeout=60, message="the slow node's claims")
        answer_everywhere(settings, client, 0)  # the slow node's partitions once rebuilt, late

        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            group = admin.describe_groups([settings.topic(NODE_GROUP)])[settings.topic(NODE_GROUP)]
        finally:
            admin.close()
        assert len(group["members"]) == 2 and group["group_state"] == "Stable", group
        per_writer = Counter((p, w) for p, _c, w in claims(settings))
        assert max(per_writer.values()) == 1, f"a partition claimed twice by one node (evicted?): {per_writer}"
        assert slow.is_alive()
    finally:
        end(fast)
        if slow is not None:
            end(slow)


def test_a_claim_that_fails_on_the_broker_is_made_again_and_the_node_serves(settings, client, monkeypatch):
    """A claim whose append times out (brokers lost or overloaded at a takeover) is made again:
    the node does not stop, and it answers for the partition once its claim is written."""
    from kafka.errors import KafkaTimeoutError

    from infra.node.node import Node
    from schemas.status import CommandAccepted
    from tests.conftest import RunningNode
    from tests.test_broker_faults import network_partition

    claim, failed = Node.claim, []

    def claim_failing_once(self, partitions, generation):
        if not failed:
            failed.append(partitions)
            raise KafkaTimeoutError("injected: the claim's append was not acknowledged in time")
        return claim(self, partitions, generation)

    monkeypatch.setattr(Node, "claim", claim_failing_once)
    running = RunningNode(settings)
    try:
        assert failed, "the injected failure was met"
        for n in range(settings.partitions * 2):  # aggregates on every partition, the failed one's too
            assert isinstance(client.call(*network_partition(n), timeout=30), CommandAccepted)
        assert running.node.stopping.is_set() is False and all(t.is_alive() for t in running.threads)
        assert set(running.node.owned) == set(range(settings.partitions))
    finally:
        running.stop()
