"""streams/health_state.py as pure functions: the cluster view, windows, verdicts and faults.

Worked examples by hand; each case says what would go wrong without the rule.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from actors import cluster
from infra.log.kafka import envelope
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import HealthRecord
from schemas.status import HealthStat, MemberFault, MemberHealth
from streams.health_state import HealthBook, Rejected, active_members, cluster_key, verdict_now, view_of

T = "carbon.super"
CID = "app.php1.php.domain"
KEY = cluster_key(T, CID)
NOW = 1100.0
"""The worker's wall clock in these tests: samples are stamped 1000 + ts."""


def spec(cid=CID, min_count=1, max_count=5, thresholds=None) -> ClusterSpec:
    return ClusterSpec(
        cluster_id=cid,
        application_id="app",
        alias="php1",
        cartridge_type="php",
        min=min_count,
        max=max_count,
        autoscaling_policy_id="a",
        deployment_policy_id="d",
        partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=5)],
        thresholds=thresholds if thresholds is not None else {"load_average": 25.0},
    )


def state(min_count=1, max_count=5, thresholds=None, active=("m1", "m2"), starting=(), cid=CID):
    """The cluster aggregate's state, folded by the cluster's own apply (the one fold)."""
    events = [E.ClusterCreated(spec=spec(cid, min_count, max_count, thresholds))]
    events += [
        E.MemberSpawnRequested(
            member_id=m,
            cluster_id=cid,
            application_id="app",
            cartridge_type="php",
            network_partition_id="np1",
            partition_id="p1",
            provider="mock",
        )
        for m in (*active, *starting)
    ]
    events += [E.MemberActivated(member_id=m, cluster_id=cid) for m in active]
    return cluster.fold(cluster.initial(cluster_key(T, cid)), events, None)


def view(*args, **kwargs):
    return view_of(state(*args, **kwargs))


def then(before, *events):
    return cluster.fold(before, list(events), None)


def stat(member, value, ts, metric="load_average", np="np1", cluster=CID) -> HealthRecord:
    return envelope(
        HealthRecord,
        HealthStat(
            cluster_id=cluster,
            network_partition_id=np,
            member_id=member,
            metric=metric,
            value=value,
            timestamp=1000.0 + ts,
        ),
        cluster_key(T, cluster),
        tenant=T,
    )


def book_with(views, records, received_at=0.0, window=60.0) -> HealthBook:
    book = HealthBook(window_seconds=window, fault_seconds=60.0, max_skew=30.0, max_age=300.0)
    for record in records:
        book.ingest(record, views, partition=0, received_at=received_at, now=NOW)
    return book


# --- the cluster view: derived from the aggregate's state ------------------------------------


def test_view_counts_only_active_members_not_leaving_ones():
    folded = then(
        state(active=("m1", "m2", "m3"), starting=("m4",)),
        E.MemberTerminationRequested(member_id="m2", cluster_id=CID, graceful=True, reason="ScaleDown"),
        E.MemberTerminated(member_id="m3", cluster_id=CID),
    )
    # m4 is Starting (not ready), m2 is leaving, m3 is gone
    assert active_members(view_of(folded)) == ["m1"]
    assert set(view_of(folded).members) == {"m1", "m2", "m4"}


def test_view_follows_limit_updates_and_ends_with_the_cluster():
    folded = then(state(), E.ClusterLimitsUpdated(min=2, max=7))
    assert (view_of(folded).min, view_of(folded).max) == (2, 7)
    assert view_of(folded).tenant == T and view_of(folded).cluster_id == CID
    # the cluster's commit that ends it: ClusterTerminated and its status
    gone = then(
        folded,
        E.ClusterTerminated(application_id="app"),
        E.ClusterStatusChanged(application_id="app", status="Terminated"),
    )
    assert view_of(gone) is None
    assert view_of(cluster.initial(KEY)) is None  # never created


def test_status_event_of_an_unknown_member_is_ignored():
    folded = state(active=())
    assert then(folded, E.MemberActivated(member_id="ghost", cluster_id=CID)) == folded


def test_an_obsolete_member_is_not_active():
    folded = then(state(), E.MemberObsoleted(member_id="m1", cluster_id=CID, reason="fault"))
    assert active_members(view_of(folded)) == ["m2"]


# --- ingest: what is refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    "record, named",
    [
        pytest.param(stat("nobody", 10, 1.0), "unknown member 'nobody'", id="unknown member named"),
        pytest.param(
            stat("m1", 10, 1.0, cluster="other.domain"), "unknown cluster 'other.domain'", id="unknown cluster named"
        ),
        pytest.param(
            stat(None, 10, 1.0),
            "payload.member_id: required for load_average",
            id="member metric without a member: the field named",
        ),
    ],
)
def test_records_that_do_not_match_the_platform_are_rejected_and_leave_windows_alone(record, named):
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 40, 1.0)])
    with pytest.raises(Rejected, match=named):
        book.ingest(record, views, partition=0, received_at=0.0, now=NOW)
    assert book.assess(views, NOW)[0].command.figures["load_average.average"] == 40.0


def test_member_faults_on_the_health_topic_are_not_samples():
    views = {KEY: view()}
    book = book_with(
        views, [envelope(HealthRecord, MemberFault(cluster_id=CID, member_id="m1", silent_seconds=61), KEY)]
    )
    assert book.assess(views, NOW) == []


# --- decide ----------------------------------------------------------------------------------


def test_two_members_60_and_40_against_load_25_need_2_members():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 60, 1.0), stat("m2", 40, 1.0)])
    [decision] = book.assess(views, NOW)
    command = decision.command
    # mean of the members' predictions 50; ceil(min 1 * 50 / 25) = 2
    assert (command.required, command.metric) == (2, "load_average")
    assert command.reason == "WithinRange: load_average predicted 50 against threshold 25 needs 2 members"
    assert command.figures["load_average.average"] == 50.0
    assert command.figures["load_average.windows"] == 2 and command.figures["active_members"] == 2
    assert command.member_load == {"m1": 60.0, "m2": 40.0}
    assert command.network_partition_id == "np1"
    assert decision.key == KEY and decision.tenant == T
    assert decision.causation_id is not None


def test_a_member_not_yet_active_stays_out_of_the_average():
    views = {KEY: view(active=("m1",), starting=("m2",))}
    book = book_with(views, [stat("m1", 20, 1.0), stat("m2", 100, 1.0)])
    # with m2 counted the mean would be 60 -> 3 members; without it 20 -> 1
    assert book.assess(views, NOW)[0].command.required == 1


def test_nothing_fresh_means_no_command_the_reset_rule():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 60, 1.0)])
    assert len(book.assess(views, NOW)) == 1
    # Stratos kept deciding on the same figures until new data came
    assert book.assess(views, NOW) == []
    book.ingest(stat("m1", 60, 2.0), views, partition=0, received_at=0.0, now=NOW)
    assert len(book.assess(views, NOW)) == 1


def test_a_metric_without_news_does_not_vote_and_says_stale():
    views = {KEY: view(thresholds={"load_average": 25.0, "memory_consumption": 50.0})}
    book = book_with(views, [stat("m1", 90, 1.0, metric="memory_consumption"), stat("m1", 10, 1.0)])
    book.assess(views, NOW)
    book.ingest(stat("m1", 10, 2.0), views, partition=0, received_at=0.0, now=NOW)  # only load is new
    [decision] = book.assess(views, NOW)
    assert decision.requirement.ignored["memory_consumption"] == "Stale"
    assert decision.command.metric == "load_average"


def test_requests_in_flight_of_two_network_partitions_add_up():
    views = {KEY: view(thresholds={"requests_in_flight": 20.0})}
    book = book_with(
        views,
        [
            stat(None, 30, 1.0, metric="requests_in_flight", np="np1"),
            stat(None, 25, 1.0, metric="requests_in_flight", np="np2"),
        ],
    )
    command = book.assess(views, NOW)[0].command
    # 55 requests in flight in total: ceil(55 / 20) = 3 (averaging the partitions would say 2)
    assert command.required == 3 and command.figures["requests_in_flight.average"] == 55.0
    assert command.network_partition_id is None


def test_figures_come_from_record_timestamps_whatever_the_arrival_order():
    records = [stat("m1", v, ts) for ts, v in [(0, 10), (15, 20), (30, 30), (45, 40), (60, 50)]]
    in_order = book_with({KEY: view(active=("m1",))}, records).assess({KEY: view(active=("m1",))}, NOW)
    shuffled = [records[i] for i in (3, 0, 4, 2, 1)]
    replayed = book_with({KEY: view(active=("m1",))}, shuffled).assess({KEY: view(active=("m1",))}, NOW)
    # avg 30, gradient (50-10)/60 on event time: replay gives the same verdict
    assert in_order[0].command.figures == replayed[0].command.figures
    assert in_order[0].command.figures["load_average.gradient"] == pytest.approx(40 / 60)


def test_a_silent_member_leaves_the_average_once_its_samples_age_out():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 90, 0.0), stat("m2", 10, 0.0), stat("m2", 10, 61.0)], window=60)
    # m1's only sample is 61 s older than the cluster's newest: out of the 60 s window
    command = book.assess(views, NOW)[0].command
    assert command.figures["load_average.average"] == 10.0 and set(command.member_load) == {"m2"}


def test_a_terminated_cluster_is_forgotten():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 60, 1.0)])
    assert book.assess({}, NOW) == [] and book.clusters == {}


# --- faults ----------------------------------------------------------------------------------


def test_fault_only_after_heard_once_and_once_per_silence():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 10, 1.0)], received_at=100.0)
    assert book.faults(views, now=160.0) == []  # 60 s is not longer than 60 s
    [fault] = book.faults(views, now=161.0)
    # m2 was never heard: no alarm at start-up (Stratos's rule)
    assert (fault.key, fault.fault.member_id, fault.fault.silent_seconds) == (KEY, "m1", 61.0)
    assert book.faults(views, now=300.0) == []  # one fault per silence
    book.ingest(stat("m1", 10, 2.0), views, partition=0, received_at=400.0, now=NOW)
    assert [f.fault.member_id for f in book.faults(views, now=461.0)] == ["m1"]


def test_a_leaving_member_is_not_faulted():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 10, 1.0)], received_at=0.0)
    views[KEY] = view_of(
        then(state(), E.MemberTerminationRequested(member_id="m1", cluster_id=CID, graceful=True, reason="ScaleDown"))
    )
    assert book.faults(views, now=1000.0) == []


def test_clusters_of_lost_partitions_are_forgotten_so_their_members_never_look_silent():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 10, 1.0)], received_at=0.0)
    book.keep_partitions({1, 2})
    assert book.faults(views, now=1000.0) == [] and book.assess(views, NOW) == []


# --- bounded input: the timestamp against the worker's clock ---------------------------------


@pytest.mark.parametrize(
    "ts, named",
    [
        pytest.param(
            NOW - 1000.0 + 31.0,
            "payload.timestamp: 1131.000 is 31 s ahead of the worker's clock "
            "(1100.000), more than the 30 s skew allowed",
            id="31 s ahead: past the 30 s skew",
        ),
        pytest.param(1e9, "payload.timestamp: 1000001000.000 is", id="far future"),
        pytest.param(
            NOW - 1000.0 - 301.0,
            "payload.timestamp: 799.000 is 301 s old (worker clock 1100.000), older than the 300 s max age",
            id="301 s old: past the 300 s max age",
        ),
    ],
)
def test_a_sample_stamped_out_of_bounds_is_rejected_naming_its_timestamp(ts, named):
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 40, 99.0)])
    with pytest.raises(Rejected, match=named.replace("(", r"\(").replace(")", r"\)")):
        book.ingest(stat("m1", 90, ts), views, partition=0, received_at=0.0, now=NOW)
    assert book.assess(views, NOW)[0].command.figures["load_average.average"] == 40.0


def test_samples_within_the_skew_and_the_max_age_count():
    views = {KEY: view(active=("m1",))}
    book = book_with(views, [stat("m1", 40, NOW - 1000.0 - 300.0), stat("m1", 60, NOW - 1000.0 + 30.0)], window=400.0)
    assert book.assess(views, NOW)[0].command.figures["load_average.average"] == 50.0


def test_one_far_future_sample_never_evicts_the_windows():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 40, 99.0), stat("m2", 60, 99.0)])
    with pytest.raises(Rejected):
        book.ingest(stat("m1", 10, 1e7), views, partition=0, received_at=0.0, now=NOW)
    # had it been taken, every sample would be one window older than it and evicted
    command = book.assess(views, NOW)[0].command
    assert command.figures["load_average.windows"] == 2 and command.figures["load_average.average"] == 50.0


# --- isolation: one cluster's failure is its own ---------------------------------------------

OTHER = "app.php2.php.domain"
OTHER_KEY = cluster_key(T, OTHER)


def test_a_cluster_whose_decision_raises_is_logged_counted_and_the_others_decided(caplog):
    # a threshold of 0 reaches the rule only around the policy's validation; the rule refuses it
    views = {KEY: view(thresholds={"load_average": 0.0}), OTHER_KEY: view(cid=OTHER)}
    book = book_with(views, [stat("m1", 60, 1.0), stat("m1", 60, 1.0, cluster=OTHER)])
    with caplog.at_level(logging.ERROR, logger="streams.health_state"):
        decisions = book.assess(views, NOW)
    assert [d.key for d in decisions] == [OTHER_KEY] and decisions[0].command.required == 3
    assert book.failures == {KEY: 1}
    assert f"decision of cluster {KEY} failed" in caplog.text
    book.ingest(stat("m1", 60, 2.0, cluster=OTHER), views, partition=0, received_at=0.0, now=NOW)
    assert [d.key for d in book.assess(views, NOW)] == [OTHER_KEY]  # and on the next hop too
    assert book.failures == {KEY: 2}


def test_a_cluster_whose_fault_check_raises_does_not_hide_another_silence(monkeypatch):
    views = {KEY: view(), OTHER_KEY: view(cid=OTHER)}
    book = book_with(views, [stat("m1", 10, 1.0), stat("m1", 10, 1.0, cluster=OTHER)])
    broken = book.clusters[KEY]
    broken.members = None  # stands for any bug in one cluster's state
    assert [f.key for f in book.faults(views, now=100.0)] == [OTHER_KEY]
    assert book.failures == {KEY: 1}


def test_an_infinite_threshold_which_a_policy_accepts_scales_on_and_sends_no_infinity():
    views = {KEY: view(thresholds={"load_average": float("inf"), "memory_consumption": 80.0})}
    book = book_with(views, [stat("m1", 60, 1.0), stat("m1", 90, 1.0, metric="memory_consumption")])
    command = book.assess(views, NOW)[0].command
    assert command.figures["load_average.required"] == 0 and "load_average.threshold" not in command.figures
    assert type(command).model_validate_json(command.model_dump_json()) == command


# --- verdicts that change nothing are not sent -------------------------------------------------


def one_member(min_count=1):
    """One Active member (m1) of a cluster with min ``min_count``, load threshold 25."""
    return {KEY: view(min_count=min_count, active=("m1",))}


def next_hop(book, views, ts, value=1.0, member="m1"):
    book.ingest(stat(member, value, ts), views, partition=0, received_at=0.0, now=NOW)
    return book.decide(views, NOW)


def test_a_steady_cluster_at_its_min_sends_nothing_hop_after_hop_yet_keeps_its_verdict():
    views = one_member()
    book = book_with(views, [])
    for ts in range(1, 30):
        # load 1 against 25 asks for no member: the cluster would answer AtMin and record nothing
        assert next_hop(book, views, float(ts)) == []
    latest = book.latest[KEY]
    assert (latest.send, latest.command.required) == (False, 1) and latest.command.figures["load_average.average"] == 1
    assert latest.command.reason.startswith("WithinRange: load_average predicted 1")


def test_a_change_of_load_is_sent_on_the_next_hop():
    views = one_member()
    book = book_with(views, [])
    assert next_hop(book, views, 1.0) == []
    [decision] = next_hop(book, views, 2.0, value=200.0)
    # mean 100.5 and gradient 199/s: predicted 299.5 against 25 asks for 12 members
    assert decision.command.required == 12 and decision.send


def test_the_first_quiet_verdict_after_one_that_acted_is_sent_to_reset_the_count():
    views = {KEY: view(min_count=1, active=("m1", "m2"))}
    book = book_with(views, [stat("m2", 1.0, 1.0)])
    # load 1 on two members: one is enough, a scale-down request (the cluster counts 1)
    assert [d.command.required for d in next_hop(book, views, 1.0)] == [1]
    # 99 s later (the window is 60 s) the load is 40 on each: two members, Stable. The view has
    # not folded the count and says Stable changes nothing; the verdict is sent all the same, so
    # the cluster's count goes back to 0 and a later scale-down waits its scale_down_after requests
    book.ingest(stat("m2", 40.0, 100.0), views, partition=0, received_at=0.0, now=NOW)
    [decision] = next_hop(book, views, 100.0, value=40.0)
    assert decision.command.required == 2 and decision.send
    book.ingest(stat("m2", 40.0, 101.0), views, partition=0, received_at=0.0, now=NOW)
    assert next_hop(book, views, 101.0, value=40.0) == []  # settled: nothing more to say
    assert book.latest[KEY].command.required == 2


def test_a_scale_down_count_the_view_has_seen_is_reset_by_a_sent_verdict():
    before = state(min_count=1, active=("m1", "m2"))
    counted = then(
        before,
        E.ScalingDecided(
            required=1, active=2, pending=0, spawn=0, terminate=0, scale_down_requests=2, reason="ScaleDownPending"
        ),
    )
    views = {KEY: view_of(counted)}
    book = book_with(views, [stat("m1", 40.0, 1.0), stat("m2", 40.0, 1.0)])
    # two members needed: Stable, but the cluster counts 2 scale-down requests in a row to reset
    [decision] = book.decide(views, NOW)
    assert decision.command.required == 2
    assert cluster.scaling_changes(counted, decision.command, datetime.fromtimestamp(NOW, UTC))


# --- one record per member publish ---------------------------------------------------------------


def member_health(member, ts, **metrics) -> HealthRecord:
    sample = MemberHealth(
        cluster_id=CID, network_partition_id="np1", member_id=member, metrics=metrics, timestamp=1000.0 + ts
    )
    return envelope(HealthRecord, sample, KEY, tenant=T)


def test_a_member_publish_in_one_record_gives_the_figures_of_one_record_per_metric():
    views = {KEY: view(thresholds={"load_average": 25.0, "memory_consumption": 50.0})}
    per_metric = [stat("m1", 60, 1.0), stat("m1", 70, 1.0, metric="memory_consumption"), stat("m2", 40, 2.0)]
    batched = [
        member_health("m1", 1.0, load_average=60, memory_consumption=70),
        member_health("m2", 2.0, load_average=40),
    ]
    [old] = book_with(views, per_metric).assess(views, NOW)
    [new] = book_with(views, batched).assess(views, NOW)
    assert new.command == old.command and new.command.figures["memory_consumption.average"] == 70.0


def test_a_member_publish_about_an_unknown_member_is_rejected_whole():
    views = {KEY: view()}
    book = book_with(views, [])
    with pytest.raises(Rejected, match="unknown member 'm9'"):
        book.ingest(member_health("m9", 1.0, load_average=60), views, partition=0, received_at=0.0, now=NOW)
    assert book.clusters[KEY].members == {} and book.assess(views, NOW) == []


def test_verdict_now_is_the_worker_s_verdict_from_the_log_alone():
    folded = state(active=("m1",))
    samples = [member_health("m1", ts, load_average=1.0) for ts in (1.0, 50.0, 90.0)]
    # the one at 1.0 is older than the window (60 s before NOW): it no longer counts
    shown, verdict = verdict_now(folded, samples, 60.0, NOW)
    assert shown.min == 1 and verdict is not None
    assert verdict.command.figures["load_average.samples"] == 2 and not verdict.send
    with pytest.raises(ValueError, match="does not exist"):
        verdict_now(cluster.initial(KEY), samples, 60.0, NOW)
