"""The load balancer's pure parts: the plan and file from topology entries, the Runtime API
changes between two plans, requests in flight from `show stat`, and the topology fold."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from actors.runtime import Tracked
from actors.topology import Topology
from infra.lb.config import InvalidEntry, Paths, plan, render, server_changes
from infra.lb.runtime import parse_csv
from infra.lb.stats import requests_in_flight
from schemas import events as E
from schemas.records import Commit, LogRecord, TopologyDomain, TopologyEntry, TopologyMember, TopologyPort
from tests.examples import SPEC

T = "carbon.super"


def member(
    mid: str, port: int, status: str = "Active", in_service: bool = True, ip: str = "127.0.0.1", np: str = "np1"
) -> TopologyMember:
    return TopologyMember(
        member_id=mid,
        status=status,
        in_service=in_service,
        network_partition_id=np,
        partition_id="p1",
        private_ip=ip,
        ports={"http": port},
    )


def entry(
    cluster: str, members=(), proxy_port: int = 8280, domains=(), protocol: str = "http", app: str = "app"
) -> TopologyEntry:
    return TopologyEntry(
        cluster_id=cluster,
        application_id=app,
        cartridge_type="php",
        status="Active",
        port_mappings=[TopologyPort(protocol=protocol, port=80, proxy_port=proxy_port)],
        domain_mappings=[TopologyDomain(domain_name=d) for d in domains],
        members=list(members),
    )


def key(cluster: str) -> str:
    return f"{T}/cluster/{cluster}"


def test_a_backend_per_cluster_with_its_active_members_in_service_only():
    made = plan(
        {
            key("c1"): entry(
                "c1",
                [
                    member("m1", 4001),
                    member("m2", 4002, status="Starting"),
                    member("m3", 4003, in_service=False),
                    member("m4", 4004, ip="10.11.0.7"),
                ],
            )
        }
    )
    (backend,) = made.backends
    # Starting: not yet; leaving: drained; outside the member networks: never sent to
    assert [(s.name, s.port) for s in backend.servers] == [("m1", 4001)]
    (frontend,) = made.frontends
    assert (frontend.port, frontend.mode, frontend.default_backend) == (8280, "http", backend.name)


def test_domain_mappings_route_by_host_and_the_only_unmapped_cluster_is_the_default():
    made = plan({key("c1"): entry("c1"), key("c2"): entry("c2", domains=["abc.com", "www.abc.com"])})
    (frontend,) = made.frontends
    assert dict(frontend.routes) == {"abc.com": f"be_{T}_c2_8280", "www.abc.com": f"be_{T}_c2_8280"}
    assert frontend.default_backend == f"be_{T}_c1_8280"
    text = render(made, Paths("/tmp/x.sock"))
    assert f"use_backend be_{T}_c2_8280 if {{ req.hdr(host),field(1,:),lower -m str abc.com }}" in text


@pytest.mark.parametrize(
    "entries, field",
    [
        ({key("c1"): entry("c1", domains=["bad host\n  bind :1"])}, "domain_mappings.domain_name"),
        ({key("c1"): entry("c1", [member("m 1", 4001)])}, "members.member_id"),
        ({key("c1"): entry("c1", [member("m1", 4001, ip="not-an-ip")])}, "private_ip"),
        ({key("c1"): entry("c1"), key("c2"): entry("c2", protocol="tcp")}, "proxy_port 8280: wanted as tcp"),
        ({key("c1"): entry("c1", protocol="tcp"), key("c2"): entry("c2", protocol="tcp")}, "a tcp port serves one"),
        ({key("c1"): entry("c1", domains=["abc.com"]), key("c2"): entry("c2", domains=["ABC.com"])}, "routed on port"),
    ],
    ids=[
        "config-injection-in-a-domain",
        "server-name",
        "address",
        "http-and-tcp-on-one-port",
        "two-clusters-on-a-tcp-port",
        "one-domain-two-clusters",
    ],
)
def test_an_entry_that_cannot_be_served_is_refused_naming_the_cluster_and_field(entries, field):
    """Without these checks the entry would reach HAProxy as a broken or ambiguous file."""
    with pytest.raises(InvalidEntry) as caught:
        plan(entries)
    assert field in str(caught.value) and "/cluster/c" in str(caught.value)


def test_member_changes_are_server_changes_and_structure_changes_are_not():
    two = plan({key("c1"): entry("c1", [member("m1", 4001), member("m2", 4002)])})
    three = plan({key("c1"): entry("c1", [member("m1", 4001), member("m2", 4002), member("m3", 4003)])})
    assert two.structure() == three.structure()
    changes = server_changes(two, three)
    assert [(s.name) for _, s in changes.add] == ["m3"] and not changes.remove
    back = server_changes(three, two)
    assert [s.name for _, s in back.remove] == ["m3"] and not back.add
    mapped = plan({key("c1"): entry("c1", [member("m1", 4001), member("m2", 4002)], domains=["abc.com"])})
    assert mapped.structure() != two.structure()


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed (make haproxy)")
def test_haproxy_accepts_the_generated_file(tmp_path):
    made = plan(
        {
            key("c1"): entry("c1", [member("m1", 4001)]),
            key("c2"): entry("c2", [member("m2", 4002)], domains=["abc.com"]),
            key("c3"): entry("c3", [member("m3", 4003)], proxy_port=8222, protocol="tcp"),
        }
    )
    path = tmp_path / "haproxy.cfg"
    path.write_text(render(made, Paths(str(tmp_path / "admin.sock"))))
    done = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


NAMES = st.text("abcdefghij0123456789.-", min_size=1, max_size=12).filter(lambda s: s[0].isalnum())


@hsettings(max_examples=60)
@given(before=st.sets(NAMES, max_size=6), after=st.sets(NAMES, max_size=6))
def test_server_changes_take_any_member_set_to_any_other(before, after):
    old = plan({key("c1"): entry("c1", [member(m, 4000 + n) for n, m in enumerate(sorted(before))])})
    new = plan({key("c1"): entry("c1", [member(m, 4000 + n) for n, m in enumerate(sorted(after))])})
    changes = server_changes(old, new)
    servers = {s.name: s for s in old.backends[0].servers}
    for _, s in changes.remove:
        servers.pop(s.name)
    for _, s in changes.add:
        servers[s.name] = s
    assert sorted(servers.values()) == sorted(new.backends[0].servers)


def test_requests_in_flight_by_column_name_per_cluster_and_network_partition():
    text = (
        "# pxname,svname,scur,qcur,smax\n"
        "fe_8280,FRONTEND,9,,9\n"
        "be_x,m1,3,1,4\nbe_x,m2,4,0,4\nbe_x,m3,2,0,2\nbe_x,BACKEND,9,1,9\nother,z,50,0,5\n"
    )
    where = {("be_x", "m1"): (key("c1"), "np1"), ("be_x", "m2"): (key("c1"), "np1"), ("be_x", "m3"): (key("c1"), "np2")}
    stats = requests_in_flight(parse_csv(text), where, now=1.7e9)
    assert [(k, s.network_partition_id, s.value, s.queued) for k, s in stats] == [
        (key("c1"), "np1", 7.0, 1.0),
        (key("c1"), "np2", 2.0, 0.0),
    ]
    assert all(s.metric == "requests_in_flight" and s.member_id is None for _, s in stats)


def _commit(aggregate: str, seq: int, *events, n: int = 0) -> LogRecord:
    return LogRecord(
        id=f"c{seq}.{n}",
        type="Commit",
        aggregate_id=aggregate,
        aggregate_seq=seq,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        causation_id=f"cmd{aggregate}{seq}",
        payload=Commit(command_type="X", outcome="accepted", events=list(events)),
    )


def test_the_topology_fold_uses_the_clusters_own_fold_and_the_applications_domain_mappings():
    cluster_key = f"{T}/cluster/{SPEC.cluster_id}"
    app_key = f"{T}/application/{SPEC.application_id}"
    topology = Topology()
    cid = SPEC.cluster_id
    changed, _ = topology.fold(
        _commit(
            cluster_key,
            1,
            E.ClusterCreated(
                spec=SPEC.model_copy(update={"ports": [{"protocol": "http", "port": "80", "proxyPort": "8280"}]})
            ),
            E.MemberSpawnRequested(
                member_id="m1",
                cluster_id=cid,
                application_id=SPEC.application_id,
                cartridge_type="php",
                network_partition_id="np1",
                partition_id="p1",
                provider="mock",
            ),
        )
    )
    assert changed == {cluster_key}
    topology.fold(
        _commit(
            cluster_key,
            3,
            E.MemberInitialized(
                member_id="m1", cluster_id=cid, node_id="m1", private_ip="127.0.0.1", ports={"http": 4001}
            ),
            E.MemberStarting(member_id="m1", cluster_id=cid),
            E.MemberActivated(member_id="m1", cluster_id=cid),
        )
    )
    changed, _ = topology.fold(
        _commit(
            app_key,
            1,
            E.DomainMappingsAdded(
                tenant=T, mappings=[{"domainName": "abc.com", "cartridgeAlias": SPEC.alias, "clusterId": cid}]
            ),
        )
    )
    assert changed == {cluster_key}
    got = topology.entry(cluster_key)
    assert (got.port_mappings[0].port, got.port_mappings[0].proxy_port) == (80, 8280)
    assert [(m.member_id, m.status, m.ports) for m in got.members] == [("m1", "Active", {"http": 4001})]
    assert [d.domain_name for d in got.domain_mappings] == ["abc.com"]
    assert isinstance(topology.clusters[cluster_key], Tracked)
