"""The load balancer on the real broker with real HAProxy and real member processes.

One platform for the module: a node and reactor, the cloud controller with the mock IaaS in
process mode (every member a `stratos agent` process serving HTTP with `X-Stratos-Member`), the
topology projector, the health worker (short windows) and `stratos lb`'s LoadBalancer. Proxy
ports are free ports, so the tests never meet another platform on this machine.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter

import httpx
import pytest

from infra.broker import free_port
from infra.lb import runtime
from infra.lb.balancer import LoadBalancer, haproxy_binary
from infra.lb.config import backend_name
from infra.lb.topology import TopologyProjector
from infra.log.commands_client import CommandClient
from infra.log.kafka import Appender, encode, ensure_topics, envelope, read_to_end
from infra.observe.follower import stop_together
from infra.settings import Settings
from schemas import commands as C
from schemas.definitions import DomainMappings
from schemas.ids import aggregate_id
from schemas.records import TopologyDomain, TopologyRecord
from schemas.status import CommandAccepted
from tests.conftest import RunningNode, events_of, sample, wait_until
from tests.test_runtime_flow import add

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not haproxy_binary(), reason="haproxy is not installed (make haproxy)"),
]
T = "carbon.super"
NP = "network-partition-1"


def cluster_key(app: str, alias: str, cartridge: str = "php") -> str:
    return aggregate_id(T, "cluster", f"{app}.{alias}.{cartridge}.domain")


APP1 = cluster_key("lb-app1", "php1")
APP2 = cluster_key("lb-app2", "php2")


def cartridge(type_: str, proxy_port: int, category: str = "framework") -> dict:
    body = sample("php.json")
    body.update(type=type_, category=category)
    body["portMapping"] = [{"name": "http-80", "protocol": "http", "port": "80", "proxyPort": str(proxy_port)}]
    return body


def application(app_id: str, subscriptions: list[tuple[str, str, int, int]]) -> dict:
    return {
        "applicationId": app_id,
        "alias": app_id,
        "multiTenant": False,
        "components": {
            "cartridges": [
                {
                    "type": ctype,
                    "cartridgeMin": low,
                    "cartridgeMax": high,
                    "subscribableInfo": {
                        "alias": alias,
                        "autoscalingPolicy": "rif-policy",
                        "deploymentPolicy": "deployment-policy-1",
                    },
                }
                for ctype, alias, low, high in subscriptions
            ]
        },
    }


def deploy(client, app: dict) -> None:
    assert isinstance(add(client, "application", app), CommandAccepted)
    reply = client.call(
        aggregate_id(T, "application", app["applicationId"]),
        C.DeployApplication(application_policy_id="application-policy-1"),
    )
    assert isinstance(reply, CommandAccepted), reply


class Platform:
    def __init__(self, settings: Settings) -> None:
        from infra.health.app import HealthWorkerThread
        from tests.test_cloud_controller import RunningCloud

        self.settings = settings
        self.node = RunningNode(settings)
        self.cloud = RunningCloud(settings)
        self.projector = TopologyProjector(settings)
        self.lb = LoadBalancer(settings, workdir=settings.state_dir / "lb")
        self.threads = [
            threading.Thread(target=self.projector.run, daemon=True),
            threading.Thread(target=self.lb.run, daemon=True),
        ]
        for thread in self.threads:
            thread.start()
        self.health = HealthWorkerThread(settings).start()
        self.client = CommandClient(settings)
        wait_until(self.lb.ready.is_set, timeout=30, message="the load balancer's start")
        self.port = free_port()
        for kind, body in [
            ("networkPartition", sample("network-partition.json")),
            ("cartridge", cartridge("php", self.port)),
            ("autoscalingPolicy", {"id": "rif-policy", "loadThresholds": {"requestsInFlight": {"threshold": 5}}}),
            ("deploymentPolicy", sample("deployment-policy.json")),
            ("applicationPolicy", sample("application-policy.json")),
        ]:
            assert isinstance(add(self.client, kind, body), CommandAccepted), kind
        deploy(self.client, application("lb-app1", [("php", "php1", 2, 6)]))

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def active(self, key: str = APP1) -> set[str]:
        active: set[str] = set()
        for event in events_of(self.settings, key):
            if event.type == "MemberActivated":
                active.add(event.payload.member_id)
            elif event.type in ("MemberTerminated", "MemberTerminationRequested", "MemberObsoleted"):
                active.discard(event.payload.member_id)
        return active

    def servers(self) -> set[str]:
        return {s.name for b in self.lb.plan.backends for s in b.servers}

    def stop(self) -> None:
        self.client.close()
        stop_together(self.health.stop, self.lb.stop, self.projector.stop)
        for thread in self.threads:
            thread.join(20)
        stop_together(self.cloud.stop, self.node.stop)


@pytest.fixture(scope="module")
def platform(broker, tmp_path_factory):
    settings = Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        partitions=4,
        state_dir=tmp_path_factory.mktemp("lb"),
        mock_iaas_mode="process",
        cloud_reconcile_seconds=0.3,
        cloud_retry_seconds=0.1,
        health_publish_seconds=0.5,
        health_window_seconds=3.0,
        health_hop_seconds=0.5,
        member_fault_seconds=60.0,
        lb_stats_seconds=0.5,
        lb_drain_seconds=10.0,
    )
    ensure_topics(settings)
    running = Platform(settings)
    yield running
    running.stop()


def members_answering(url: str, count: int, host: str | None = None) -> Counter:
    headers = {"Host": host} if host else {}
    with httpx.Client(timeout=5) as http:
        return Counter(http.get(url, headers=headers).headers.get("X-Stratos-Member") for _ in range(count))


def test_requests_through_the_proxy_port_reach_every_active_member(platform):
    members = wait_until(
        lambda: len(platform.active()) == 2 and platform.active(), timeout=60, message="two Active members"
    )
    seen = wait_until(
        lambda: set(members_answering(platform.url(), 12)) == members and True,
        timeout=20,
        message="answers from every Active member",
    )
    assert seen


class RequestLoop:
    """A bounded request loop through the proxy (at most `limit` requests), counting failures."""

    def __init__(self, url: str, limit: int = 4000) -> None:
        self.url, self.limit = url, limit
        self.seen: Counter = Counter()
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            for _ in range(self.limit):
                if self.stopping.is_set():
                    return
                try:
                    answer = http.get(self.url)
                    if answer.status_code != 200:
                        self.failures.append(f"HTTP {answer.status_code}")
                    self.seen[answer.headers.get("X-Stratos-Member")] += 1
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.stopping.wait(0.01)  # paces the requests; a stop ends the wait

    def stop(self) -> int:
        self.stopping.set()
        self.thread.join(20)
        return sum(self.seen.values())


def test_scale_out_and_in_follow_the_members_without_a_failed_request_or_a_reload(platform):
    lb, admin = platform.lb, platform.lb.haproxy.admin
    before = wait_until(  # the deployment's two members, whether or not an earlier test waited for them
        lambda: len(platform.active()) == 2 and platform.active(), timeout=60, message="two Active members"
    )
    wait_until(lambda: platform.servers() == before, timeout=20, message="the servers of the Active members")
    worker, master, reloads = runtime.worker_pid(admin), lb.haproxy.master_pid, lb.counters.reloads
    loop = RequestLoop(platform.url())
    try:
        platform.client.call(APP1, C.UpdateClusterLimits(min=3, max=6))
        (third,) = wait_until(
            lambda: len(platform.active()) == 3 and platform.active() - before,
            timeout=60,
            message="a third Active member",
        )
        wait_until(lambda: loop.seen[third] > 0, timeout=20, message="traffic to the third member")
        platform.client.call(APP1, C.UpdateClusterLimits(min=2, max=6))
        leaving = wait_until(
            lambda: {
                e.payload.member_id
                for e in events_of(platform.settings, APP1)
                if e.type == "MemberTerminationRequested"
            },
            timeout=60,
            message="the autoscaler's scale-down",
        )
        (gone,) = leaving
        name = f"{backend_name(APP1, platform.port)}/{gone}"
        wait_until(lambda: ("remove", name) in lb.actions, timeout=40, message="the leaving member removed")
        after = loop.seen.total()
        wait_until(lambda: loop.seen.total() > after + 50, timeout=20, message="requests after the scale-down")
    finally:
        total = loop.stop()
    actions = list(lb.actions)
    assert actions.index(("drain", name)) < actions.index(("remove", name))
    assert loop.failures == [], loop.failures[:5]
    assert total > 50
    assert (runtime.worker_pid(admin), lb.haproxy.master_pid, lb.counters.reloads) == (worker, master, reloads)
    assert gone not in platform.servers()


def test_a_crashed_member_leaves_the_rotation_and_its_replacement_joins(platform):
    members = wait_until(
        lambda: len(platform.active()) == 2 and platform.active(), timeout=60, message="two Active members"
    )
    victim = sorted(members)[0]
    platform.cloud.crash(victim)  # DELETE /mock-iaas/api/instances/{id}
    wait_until(lambda: victim not in platform.servers(), timeout=30, message="the crashed member out of rotation")
    replacement = wait_until(
        lambda: (now := platform.active() - members) and now, timeout=60, message="a replacement Active member"
    )
    (new,) = replacement
    seen = wait_until(
        lambda: (c := members_answering(platform.url(), 12))[new] and c,
        timeout=20,
        message="traffic to the replacement",
    )
    assert victim not in seen


def test_domain_mappings_route_by_host_header(platform):
    deploy(platform.client, application("lb-app2", [("php", "php2", 1, 1)]))
    (member2,) = wait_until(lambda: platform.active(APP2), timeout=60, message="lb-app2's Active member")
    mapping = C.AddDomainMappings(
        tenant=T, mappings=DomainMappings(domainMappings=[{"cartridgeAlias": "php2", "domainName": "abc.com"}])
    )
    app2 = aggregate_id(T, "application", "lb-app2")
    wait_until(
        lambda: isinstance(platform.client.call(app2, mapping), CommandAccepted),
        timeout=20,
        message="the mapping accepted once lb-app2 is deployed",
    )
    wait_until(
        lambda: set(members_answering(platform.url(), 3, host="abc.com:80")) == {member2},
        timeout=20,
        message="abc.com routed to lb-app2",
    )
    plain = members_answering(platform.url(), 10)
    assert member2 not in plain and set(plain) <= platform.active()


def test_a_restarted_projector_rebuilds_from_the_log_and_writes_nothing_unchanged(platform):
    wait_until(lambda: platform.active(APP2) and len(platform.active()) == 2, timeout=60, message="a quiet platform")
    projector = TopologyProjector(platform.settings)
    thread = threading.Thread(target=projector.run, daemon=True)
    thread.start()
    try:
        wait_until(projector.ready.is_set, timeout=30, message="the rebuild")
        written = {d.key: d.record.payload for d in read_to_end(platform.settings, "topology")}
        entries = projector.topology.entries()
        assert APP1 in entries and APP2 in entries
        assert entries == {k: e for k, e in written.items() if not e.removed or k in entries}
        assert projector.writes == 0  # the topic held every entry already: nothing written again
    finally:
        projector.stop()
        thread.join(10)


def test_requests_in_flight_reach_the_health_topic_and_a_sustained_load_adds_members(platform):
    before = len(platform.active())
    stopping = threading.Event()

    def worker() -> None:
        with httpx.Client(timeout=15) as http:
            for _ in range(200):  # bounded: 200 requests of 0.4 s each at most
                if stopping.is_set():
                    return
                with contextlib.suppress(httpx.HTTPError):
                    http.get(platform.url("/_stratos/work/0.4"))

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(24)]
    for thread in workers:
        thread.start()
    try:
        wait_until(
            lambda: any(
                e.type == "ScalingDecided" and e.payload.metric == "requests_in_flight" and e.payload.spawn > 0
                for e in events_of(platform.settings, APP1)
            ),
            timeout=45,
            message="a scale-out on requests in flight",
        )
    finally:
        stopping.set()
        for thread in workers:
            thread.join(20)
    stats = [
        d.record.payload
        for d in read_to_end(platform.settings, "health")
        if d.record.payload.type == "HealthStat" and d.record.payload.metric == "requests_in_flight"
    ]
    mine = [s for s in stats if s.cluster_id == APP1.split("/")[-1]]
    assert mine and all(s.network_partition_id == NP and s.member_id is None for s in mine)
    # requests counted across the 24 clients, above the policy's threshold of 5 (how many are in
    # flight at a sample depends on the machine's load: 9 to 20 seen)
    assert max(s.value for s in mine) > 5
    assert {s.cluster_id for s in stats} >= {APP2.split("/")[-1]}
    spawned = [e for e in events_of(platform.settings, APP1) if e.type == "MemberSpawnRequested"]
    assert len(spawned) > before


def test_an_invalid_topology_record_keeps_the_last_good_configuration(platform):
    lb = platform.lb
    wait_until(lambda: platform.servers(), timeout=20, message="servers")
    config = lb.haproxy.config.read_text()
    errors, invalid = lb.counters.errors, lb.feed.invalid
    good = lb.accepted[APP1]
    assert good.members
    bad = good.model_copy(update={"domain_mappings": [TopologyDomain(domain_name="x.com }\n  bind :1")]})
    appender = Appender(platform.settings)
    try:
        appender.append("topology", APP1, envelope(TopologyRecord, bad, APP1, tenant=T))
        appender.producer.send(platform.settings.topic("topology"), key=APP1.encode(), value=b"{not json")
        appender.flush()
    finally:
        appender.close()
    wait_until(
        lambda: lb.counters.errors > errors and lb.feed.invalid > invalid,
        timeout=20,
        message="the refused entry and the invalid record counted",
    )
    assert "x.com" not in lb.haproxy.config.read_text() and "x.com" not in config
    assert lb.accepted[APP1] != bad and not lb.accepted[APP1].domain_mappings
    assert any(APP1 in line and "domain_mappings.domain_name" in line for line in lb.counters.log)
    assert set(members_answering(platform.url(), 6)) <= platform.active()
    assert any(
        d.record.payload.source_topic == platform.settings.topic("topology")
        for d in read_to_end(platform.settings, "deadletter")
    )
    assert encode(bad)  # the refused entry is a valid record: only the load balancer refused it


def test_a_load_balancer_cartridge_runs_stratos_lb_for_its_application(platform):
    port = free_port()
    for kind, body in [
        ("cartridge", cartridge("php3", port)),
        ("cartridge", cartridge("lb", free_port(), category="load-balancer")),
    ]:
        assert isinstance(add(platform.client, kind, body), CommandAccepted)
    deploy(platform.client, application("lb-app3", [("lb", "lb1", 1, 1), ("php3", "php3", 1, 1)]))
    (lb_member,) = wait_until(
        lambda: platform.active(cluster_key("lb-app3", "lb1", "lb")),
        timeout=60,
        message="the load-balancer member Active (its `stratos lb` serving)",
    )
    (php3,) = wait_until(
        lambda: platform.active(cluster_key("lb-app3", "php3", "php3")),
        timeout=60,
        message="lb-app3's php3 member Active",
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until(
        lambda: set(members_answering(url, 3)) == {php3},
        timeout=30,
        message="requests through the cartridge's load balancer",
    )
    assert not any("lb-app3" in b.name for b in platform.lb.plan.backends)  # the platform's does not serve it
    assert platform.cloud.agents.processes[lb_member].poll() is None
