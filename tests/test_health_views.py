"""infra/health/views.py without a broker: the health worker's cluster views are the cluster
aggregates as the node folds them (Tracked.fold_commit over History), from raw log bytes.

(The layout rule, that streams/ imports no faust, Kafka client or infra, is tests/test_layering.py.)"""

from __future__ import annotations

from infra.health.views import ClusterViews
from infra.log.kafka import encode, envelope
from infra.settings import Settings
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import Claim, Commit, EventRecord, LogRecord
from streams.health_state import active_members, cluster_key
from tests.signed_history import history, signed

T = "carbon.super"
CID = "app.php1.php.domain"
KEY = cluster_key(T, CID)


def spec(cid: str = CID) -> ClusterSpec:
    return ClusterSpec(
        cluster_id=cid,
        application_id="app",
        alias="php1",
        cartridge_type="php",
        min=1,
        max=200,
        autoscaling_policy_id="a",
        deployment_policy_id="d",
        partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=200)],
        thresholds={"load_average": 25.0},
    )


def spawn(member: str, cid: str = CID) -> E.MemberSpawnRequested:
    return E.MemberSpawnRequested(
        member_id=member,
        cluster_id=cid,
        application_id="app",
        cartridge_type="php",
        network_partition_id="np1",
        partition_id="p1",
        provider="mock",
    )


class Log:
    """A cluster's commits as the node writes them: seq running on, one command id each."""

    def __init__(self, key: str = KEY, claim: str | None = None) -> None:
        self.key, self.claim, self.seq, self.n = key, claim, 1, 0

    def commit(self, *events, command_id: str | None = None) -> bytes:
        self.n += 1
        record = envelope(
            LogRecord,
            Commit(command_type="Test", outcome="accepted", events=list(events), claim=self.claim),
            self.key,
            tenant=T,
            aggregate_seq=self.seq,
            causation_id=command_id or f"{self.key}:{self.n}",
        )
        self.seq += len(events)
        return encode(record)


def fed(views: ClusterViews, *values, partition: int = 0) -> ClusterViews:
    for offset, value in enumerate(values):
        views.feed(signed(partition, offset, value))
    return views


def test_the_view_is_the_aggregate_folded_by_its_own_apply():
    log = Log()
    views = fed(
        ClusterViews(Settings(), history()),
        log.commit(E.ClusterCreated(spec=spec()), spawn("m1"), spawn("m2")),
        log.commit(E.MemberActivated(member_id="m1", cluster_id=CID)),
        log.commit(E.MemberActivated(member_id="m2", cluster_id=CID)),
        log.commit(E.MemberTerminationRequested(member_id="m2", cluster_id=CID, graceful=True, reason="ScaleDown")),
        log.commit(E.ClusterLimitsUpdated(min=2, max=7)),
    )
    view = views.clusters[KEY]
    assert active_members(view) == ["m1"] and set(view.members) == {"m1", "m2"}
    assert (view.min, view.max, view.tenant) == (2, 7, T)
    assert view.members is views.tracked[KEY].state.members  # derived, not a second fold


def test_a_terminated_cluster_leaves_the_views():
    log = Log()
    views = fed(
        ClusterViews(Settings(), history()),
        log.commit(E.ClusterCreated(spec=spec())),
        log.commit(
            E.ClusterTerminated(application_id="app"), E.ClusterStatusChanged(application_id="app", status="Terminated")
        ),
    )
    assert views.clusters == {}


def test_poison_records_are_skipped_and_the_next_commit_folded():
    log = Log()
    stray_event = encode(envelope(EventRecord, E.ClusterCreated(spec=spec()), KEY, tenant=T))
    views = fed(
        ClusterViews(Settings(), history()),
        log.commit(E.ClusterCreated(spec=spec()), spawn("m1")),
        b"{not json",
        None,
        b"\xff\xfe",
        stray_event,
        log.commit(E.MemberActivated(member_id="m1", cluster_id=CID)),
    )
    assert active_members(views.clusters[KEY]) == ["m1"]


def test_fenced_commits_and_repeated_commands_are_not_folded():
    claim = envelope(LogRecord, Claim(partition=0, writer="node-b"), "claim", tenant=T)
    live, fenced = Log(claim=claim.id), Log(claim="an-older-claim")
    views = fed(
        ClusterViews(Settings(), history()),
        encode(claim),
        live.commit(E.ClusterCreated(spec=spec()), spawn("m1")),
        fenced.commit(E.ClusterLimitsUpdated(min=3, max=9)),
        live.commit(E.MemberActivated(member_id="m1", cluster_id=CID), command_id="c1"),
    )
    live.seq -= 1  # the node re-appending the same command after a crash
    views.feed(signed(0, 4, live.commit(E.MemberActivated(member_id="m1", cluster_id=CID), command_id="c1")))
    view = views.clusters[KEY]
    assert (view.min, view.max) == (1, 200) and active_members(view) == ["m1"]


def test_other_aggregates_are_not_folded():
    key = f"{T}/application/app"
    record = envelope(LogRecord, Commit(command_type="X", outcome="rejected", reason="no"), key, tenant=T)
    views = fed(ClusterViews(Settings(), history()), encode(record))
    assert views.tracked == {} and views.clusters == {}


def test_folding_100_clusters_of_100_members_counts_every_active_member():
    """The bench/health.py shape (its timing is the bench's to measure, not a test's)."""
    records = []
    for c in range(100):
        cid = f"c{c}.php1.php.domain"
        log = Log(cluster_key(T, cid))
        records.append(log.commit(E.ClusterCreated(spec=spec(cid)), *(spawn(f"c{c}.m{m}", cid) for m in range(100))))
        records += [log.commit(E.MemberActivated(member_id=f"c{c}.m{m}", cluster_id=cid)) for m in range(100)]
    views = fed(ClusterViews(Settings(), history()), *records)
    assert len(views.clusters) == 100
    assert sum(len(active_members(v)) for v in views.clusters.values()) == 10_000
