"""streams/health_state.py as pure functions: the cluster view, windows, verdicts and faults.

Worked examples by hand; each case says what would go wrong without the rule.
"""
from __future__ import annotations

import pytest

from infra.kafka import envelope
from schemas import events as E
from schemas.domain import ClusterSpec, PartitionSpec
from schemas.records import EventRecord, HealthRecord
from schemas.status import HealthStat, MemberFault
from streams.health_state import HealthBook, Rejected, active_members, apply_event, cluster_key

T = "carbon.super"
CID = "app.php1.php.domain"
KEY = cluster_key(T, CID)


def event(payload) -> EventRecord:
    return envelope(EventRecord, payload, KEY, tenant=T)


def view(min_count=1, max_count=5, thresholds=None, active=("m1", "m2"), starting=()) -> dict:
    spec = ClusterSpec(cluster_id=CID, application_id="app", alias="php1", cartridge_type="php",
                       min=min_count, max=max_count, autoscaling_policy_id="a", deployment_policy_id="d",
                       partitions=[PartitionSpec(id="p1", network_partition_id="np1", provider="mock", max=5)],
                       thresholds=thresholds if thresholds is not None else {"load_average": 25.0})
    folded = apply_event(None, event(E.ClusterCreated(spec=spec)))
    for member in (*active, *starting):
        folded = apply_event(folded, event(E.MemberSpawnRequested(
            member_id=member, cluster_id=CID, application_id="app", cartridge_type="php",
            network_partition_id="np1", partition_id="p1", provider="mock")))
    for member in active:
        folded = apply_event(folded, event(E.MemberActivated(member_id=member, cluster_id=CID)))
    return folded


def stat(member, value, ts, metric="load_average", np="np1", cluster=CID) -> HealthRecord:
    return envelope(HealthRecord, HealthStat(cluster_id=cluster, network_partition_id=np, member_id=member,
                                             metric=metric, value=value, timestamp=1000.0 + ts), KEY, tenant=T)


def book_with(views, records, received_at=0.0, window=60.0) -> HealthBook:
    book = HealthBook(window_seconds=window, fault_seconds=60.0)
    for record in records:
        book.ingest(record, views, partition=0, received_at=received_at)
    return book


# --- the cluster view ------------------------------------------------------------------------

def test_view_counts_only_active_members_not_leaving_ones():
    folded = view(active=("m1", "m2", "m3"), starting=("m4",))
    folded = apply_event(folded, event(E.MemberTerminationRequested(
        member_id="m2", cluster_id=CID, graceful=True, reason="ScaleDown")))
    folded = apply_event(folded, event(E.MemberTerminated(member_id="m3", cluster_id=CID)))
    # m4 is Starting (not ready), m2 is leaving, m3 is gone
    assert active_members(folded) == ["m1"]
    assert set(folded["members"]) == {"m1", "m2", "m4"}


def test_view_follows_limit_updates_and_ends_with_the_cluster():
    folded = apply_event(view(), event(E.ClusterLimitsUpdated(min=2, max=7)))
    assert (folded["min"], folded["max"]) == (2, 7)
    assert apply_event(folded, event(E.ClusterTerminated(application_id="app"))) is None


def test_status_event_of_an_unknown_member_is_ignored():
    folded = view(active=())
    assert apply_event(folded, event(E.MemberActivated(member_id="ghost", cluster_id=CID))) == folded


# --- ingest: what is refused -----------------------------------------------------------------

@pytest.mark.parametrize("record, named", [
    pytest.param(stat("nobody", 10, 1.0), "unknown member 'nobody'", id="unknown member named"),
    pytest.param(stat("m1", 10, 1.0, cluster="other.domain"), "unknown cluster 'other.domain'",
                 id="unknown cluster named"),
    pytest.param(stat(None, 10, 1.0), "payload.member_id: required for load_average",
                 id="member metric without a member: the field named"),
])
def test_records_that_do_not_match_the_platform_are_rejected_and_leave_windows_alone(record, named):
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 40, 1.0)])
    with pytest.raises(Rejected, match=named):
        book.ingest(record, views, partition=0, received_at=0.0)
    assert book.decide(views)[0].command.figures["load_average.average"] == 40.0


def test_member_faults_on_the_health_topic_are_not_samples():
    views = {KEY: view()}
    book = book_with(views, [envelope(HealthRecord, MemberFault(cluster_id=CID, member_id="m1",
                                                                silent_seconds=61), KEY)])
    assert book.decide(views) == []


# --- decide ----------------------------------------------------------------------------------

def test_two_members_60_and_40_against_load_25_need_2_members():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 60, 1.0), stat("m2", 40, 1.0)])
    [decision] = book.decide(views)
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
    assert book.decide(views)[0].command.required == 1


def test_nothing_fresh_means_no_command_the_reset_rule():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 60, 1.0)])
    assert len(book.decide(views)) == 1
    # Stratos kept deciding on the same figures until new data came
    assert book.decide(views) == []
    book.ingest(stat("m1", 60, 2.0), views, partition=0, received_at=0.0)
    assert len(book.decide(views)) == 1


def test_a_metric_without_news_does_not_vote_and_says_stale():
    views = {KEY: view(thresholds={"load_average": 25.0, "memory_consumption": 50.0})}
    book = book_with(views, [stat("m1", 90, 1.0, metric="memory_consumption"), stat("m1", 10, 1.0)])
    book.decide(views)
    book.ingest(stat("m1", 10, 2.0), views, partition=0, received_at=0.0)  # only load is new
    [decision] = book.decide(views)
    assert decision.requirement.ignored["memory_consumption"] == "Stale"
    assert decision.command.metric == "load_average"


def test_requests_in_flight_of_two_network_partitions_add_up():
    views = {KEY: view(thresholds={"requests_in_flight": 20.0})}
    book = book_with(views, [stat(None, 30, 1.0, metric="requests_in_flight", np="np1"),
                             stat(None, 25, 1.0, metric="requests_in_flight", np="np2")])
    command = book.decide(views)[0].command
    # 55 requests in flight in total: ceil(55 / 20) = 3 (averaging the partitions would say 2)
    assert command.required == 3 and command.figures["requests_in_flight.average"] == 55.0
    assert command.network_partition_id is None


def test_figures_come_from_record_timestamps_whatever_the_arrival_order():
    records = [stat("m1", v, ts) for ts, v in [(0, 10), (15, 20), (30, 30), (45, 40), (60, 50)]]
    in_order = book_with({KEY: view(active=("m1",))}, records).decide({KEY: view(active=("m1",))})
    shuffled = [records[i] for i in (3, 0, 4, 2, 1)]
    replayed = book_with({KEY: view(active=("m1",))}, shuffled).decide({KEY: view(active=("m1",))})
    # avg 30, gradient (50-10)/60 on event time: replay gives the same verdict
    assert in_order[0].command.figures == replayed[0].command.figures
    assert in_order[0].command.figures["load_average.gradient"] == pytest.approx(40 / 60)


def test_a_silent_member_leaves_the_average_once_its_samples_age_out():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 90, 0.0), stat("m2", 10, 0.0), stat("m2", 10, 61.0)], window=60)
    # m1's only sample is 61 s older than the cluster's newest: out of the 60 s window
    command = book.decide(views)[0].command
    assert command.figures["load_average.average"] == 10.0 and set(command.member_load) == {"m2"}


def test_a_terminated_cluster_is_forgotten():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 60, 1.0)])
    assert book.decide({}) == [] and book.clusters == {}


# --- faults ----------------------------------------------------------------------------------

def test_fault_only_after_heard_once_and_once_per_silence():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 10, 1.0)], received_at=100.0)
    assert book.faults(views, now=160.0) == []  # 60 s is not longer than 60 s
    [fault] = book.faults(views, now=161.0)
    # m2 was never heard: no alarm at start-up (Stratos's rule)
    assert (fault.key, fault.fault.member_id, fault.fault.silent_seconds) == (KEY, "m1", 61.0)
    assert book.faults(views, now=300.0) == []  # one fault per silence
    book.ingest(stat("m1", 10, 2.0), views, partition=0, received_at=400.0)
    assert [f.fault.member_id for f in book.faults(views, now=461.0)] == ["m1"]


def test_a_leaving_member_is_not_faulted():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 10, 1.0)], received_at=0.0)
    views[KEY] = apply_event(views[KEY], event(E.MemberTerminationRequested(
        member_id="m1", cluster_id=CID, graceful=True, reason="ScaleDown")))
    assert book.faults(views, now=1000.0) == []


def test_clusters_of_lost_partitions_are_forgotten_so_their_members_never_look_silent():
    views = {KEY: view()}
    book = book_with(views, [stat("m1", 10, 1.0)], received_at=0.0)
    book.keep_partitions({1, 2})
    assert book.faults(views, now=1000.0) == [] and book.decide(views) == []
