"""Timers: an actor's wakeupAfter becomes a logged CheckTimeouts command, and a member that
stays pending past its timeout is made obsolete and replaced."""

from __future__ import annotations

import pytest

from infra.log.kafka import read_to_end
from schemas import commands as C
from schemas.ids import aggregate_id
from schemas.status import CommandAccepted
from tests.conftest import RunningNode, events_of, wait_until
from tests.examples import SPEC

pytestmark = pytest.mark.integration


def test_a_member_pending_past_its_timeout_is_obsoleted_and_replaced(settings, client):
    settings.pending_timeout_seconds = 1.0
    running = RunningNode(settings, timer_seconds=0.5)
    try:
        cluster = aggregate_id("carbon.super", "cluster", SPEC.cluster_id)
        # a node's first command waits for its group to settle and its partitions to be
        # claimed: on a busy machine that can take longer than the client's default 20 s, and a
        # join kafka-python never completes is cut by the node's watchdog after 65 s
        assert isinstance(client.call(cluster, C.CreateCluster(spec=SPEC), timeout=90), CommandAccepted)
        obsoleted = wait_until(
            lambda: [e for e in events_of(settings, cluster) if e.type == "MemberObsoleted"],
            timeout=30,
            message="a pending-timeout obsoletion",
        )
        assert obsoleted[0].payload.reason == "pending timeout"
        log = events_of(settings, cluster)
        cause = next(e for e in log if e.id == obsoleted[0].id).causation_id
        commands = [d.record for d in read_to_end(settings, "commands")]
        assert next(c for c in commands if c.id == cause).type == "CheckTimeouts"
        spawned = [e for e in log if e.type == "MemberSpawnRequested"]
        assert len(spawned) > SPEC.min  # the min rule replaced what timed out
    finally:
        running.stop()
