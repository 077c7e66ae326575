"""HAProxy's configuration from the topology, as pure functions (no I/O).

`plan` turns topology entries into frontends (one per proxy port), backends (one per cluster and
proxy port) and servers (the Active members in service); it raises `InvalidEntry` naming the
cluster and the field when an entry cannot be served (a name HAProxy would not take, a proxy port
wanted as http by one cluster and tcp by another, a domain routed to two clusters of one port),
so the caller keeps its last good plan. `render` writes the plan as a configuration file; the
servers' lines are the arguments of the Runtime API's `add server` too (`server_args`), so a
file rewritten in step rebuilds on reload the state the Runtime API made.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from schemas.ids import parse_aggregate_id
from schemas.records import TopologyEntry

NAME = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
DOMAIN = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
HTTP = "http"
CHECK = "check inter 1s fall 2 rise 1"


class InvalidEntry(ValueError):
    """A topology entry that cannot be served; the message names the cluster and the field."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"topology entry {key}: {reason}")
        self.key = key


@dataclass(frozen=True, order=True)
class Server:
    name: str
    address: str
    port: int
    network_partition_id: str = field(compare=False)


@dataclass(frozen=True)
class Backend:
    name: str
    cluster_key: str
    mode: str
    servers: tuple[Server, ...] = ()


@dataclass(frozen=True)
class Frontend:
    port: int
    mode: str
    routes: tuple[tuple[str, str], ...] = ()
    """(domain name, backend name), by domain."""
    default_backend: str | None = None


@dataclass(frozen=True)
class Plan:
    frontends: tuple[Frontend, ...] = ()
    backends: tuple[Backend, ...] = ()

    def structure(self) -> Plan:
        """The plan without servers: what only a reload can change."""
        return replace(self, backends=tuple(replace(b, servers=()) for b in self.backends))

    def backend(self, name: str) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)


def mode_of(protocol: str) -> str:
    """http is proxied as HTTP (host routing, retries); anything else (https, tcp) as TCP."""
    return HTTP if protocol.lower() == HTTP else "tcp"


def backend_name(key: str, proxy_port: int) -> str:
    ref = parse_aggregate_id(key)
    return f"be_{ref.tenant}_{ref.id}_{proxy_port}"


def _networks(cidrs: Iterable[str]) -> list:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def _servers(key: str, entry: TopologyEntry, mapping, networks) -> tuple[Server, ...]:
    servers = []
    for member in entry.members:
        if not NAME.match(member.member_id):
            raise InvalidEntry(key, f"members.member_id {member.member_id!r}: not a name HAProxy takes")
        if member.status != "Active" or not member.in_service:
            continue
        address = member.private_ip or member.public_ip
        if not address:
            continue
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise InvalidEntry(key, f"members[{member.member_id}].private_ip {address!r}: not an IP address") from None
        if not any(ip in n for n in networks):
            continue  # not a network this load balancer may send to (STRATOS_LB_MEMBER_NETWORKS)
        if member.ports:  # the member says where it listens: a protocol it does not serve is skipped
            port = member.ports.get(mapping.name or "") or member.ports.get(mapping.protocol)
            if port is None:
                continue
        else:
            port = mapping.port
        if not 0 < port < 65536:
            raise InvalidEntry(key, f"members[{member.member_id}].ports: {port} is not a port")
        servers.append(Server(member.member_id, str(ip), port, member.network_partition_id))
    return tuple(sorted(servers))


def plan(entries: Mapping[str, TopologyEntry], member_networks: Iterable[str] = ("127.0.0.0/8",)) -> Plan:
    """Frontends, backends and servers for these entries (removed ones are left out)."""
    networks = _networks(member_networks)
    backends: list[Backend] = []
    ports: dict[int, dict] = {}
    for key in sorted(entries):
        entry = entries[key]
        if entry.removed:
            continue
        ref = parse_aggregate_id(key)
        for part, value in (("tenant", ref.tenant), ("cluster_id", ref.id)):
            if not NAME.match(value):
                raise InvalidEntry(key, f"{part} {value!r}: not a name HAProxy takes")
        for domain in entry.domain_mappings:
            if not DOMAIN.match(domain.domain_name):
                raise InvalidEntry(key, f"domain_mappings.domain_name {domain.domain_name!r}: not a host name")
        for mapping in entry.port_mappings:
            if not mapping.proxy_port:
                continue
            mode = mode_of(mapping.protocol)
            slot = ports.setdefault(mapping.proxy_port, {"mode": mode, "routes": {}, "plain": []})
            if slot["mode"] != mode:
                raise InvalidEntry(
                    key,
                    f"port_mappings.proxy_port {mapping.proxy_port}: wanted as "
                    f"{mode}, already {slot['mode']} for another cluster",
                )
            name = backend_name(key, mapping.proxy_port)
            if any(b.name == name for b in backends):
                raise InvalidEntry(key, f"port_mappings.proxy_port {mapping.proxy_port}: mapped twice")
            if mode != HTTP and (slot["plain"] or slot["routes"]):
                raise InvalidEntry(
                    key,
                    f"port_mappings.proxy_port {mapping.proxy_port}: a {mode} "
                    "port serves one cluster, and another has it",
                )
            backends.append(Backend(name, key, mode, _servers(key, entry, mapping, networks)))
            if mode == HTTP and entry.domain_mappings:
                for domain in entry.domain_mappings:
                    host = domain.domain_name.lower()
                    if host in slot["routes"]:
                        raise InvalidEntry(
                            key,
                            f"domain_mappings.domain_name {host!r}: routed on port "
                            f"{mapping.proxy_port} to another cluster already",
                        )
                    slot["routes"][host] = name
            else:
                slot["plain"].append(name)
    frontends = tuple(
        Frontend(
            port,
            slot["mode"],
            tuple(sorted(slot["routes"].items())),
            slot["plain"][0] if len(slot["plain"]) == 1 else None,
        )
        for port, slot in sorted(ports.items())
    )
    return Plan(frontends, tuple(backends))


def server_args(server: Server) -> str:
    """What follows `server <name>` in the file, and `add server <backend>/<name>` at runtime."""
    return f"{server.address}:{server.port} {CHECK}"


@dataclass(frozen=True)
class Paths:
    admin_socket: str
    bind: str = "127.0.0.1"


def render(plan_: Plan, paths: Paths) -> str:
    lines = [
        "# generated by `stratos lb` from the topology: edits are overwritten",
        "global",
        f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        "    hard-stop-after 60s",
        "",
        "defaults",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout queue 10s",
        "    retries 3",
        "    option redispatch 1",
        "",
    ]
    for fe in plan_.frontends:
        lines += [f"frontend fe_{fe.port}", f"    bind {paths.bind}:{fe.port}", f"    mode {fe.mode}"]
        if fe.mode == HTTP:
            lines.append("    option forwardfor")
        for domain, backend in fe.routes:
            lines.append(f"    use_backend {backend} if {{ req.hdr(host),field(1,:),lower -m str {domain} }}")
        if fe.default_backend:
            lines.append(f"    default_backend {fe.default_backend}")
        lines.append("")
    for be in plan_.backends:
        lines += [f"backend {be.name}", f"    mode {be.mode}", "    balance roundrobin"]
        if be.mode == HTTP:
            lines.append("    retry-on conn-failure empty-response response-timeout")
        lines += [f"    server {s.name} {server_args(s)}" for s in be.servers]
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class ServerChanges:
    """What the Runtime API does to move a running HAProxy from one plan to another of the
    same structure: (backend name, server) pairs."""

    add: tuple[tuple[str, Server], ...] = ()
    remove: tuple[tuple[str, Server], ...] = ()


def server_changes(old: Plan, new: Plan) -> ServerChanges:
    add, remove = [], []
    for be in new.backends:
        before = old.backend(be.name)
        had = {s.name: s for s in (before.servers if before else ())}
        has = {s.name: s for s in be.servers}
        for name, server in has.items():
            if had.get(name) != server:
                if name in had:
                    remove.append((be.name, had[name]))
                add.append((be.name, server))
        remove += [(be.name, s) for name, s in had.items() if name not in has]
    return ServerChanges(tuple(add), tuple(remove))
