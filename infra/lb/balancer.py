"""`stratos lb`: Debian's HAProxy in master-worker mode, following the topology topic.

- Structure (a new cluster or proxy port, domain mappings) changes the file, which is checked
  with `haproxy -c` and loaded by a seamless reload through the master's socket (`-W -S`: the
  listening sockets pass to the new worker, the old one finishes its connections).
- Members change through the Runtime API on the worker's admin socket, with no reload, so the
  worker and its counters stay: `add server` + `enable health` + `enable server` for a member
  that became Active; for one that leaves, `set server … state drain`, its sessions waited for
  (or `STRATOS_LB_DRAIN_SECONDS`), then `state maint`, `shutdown sessions`, `del server`. The file
  is rewritten in step, so a reload rebuilds the same servers.
- An entry that cannot be served (`infra.lb.config.InvalidEntry`) or a file `haproxy -c` refuses
  never reaches HAProxy: the last good configuration stays, the error is logged and counted.
- Every `STRATOS_LB_STATS_SECONDS` it reads `show stat` and publishes `requests_in_flight` per
  cluster and network partition on the health topic, for the autoscaler.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from actors.topology import LOAD_BALANCER
from infra.lb import runtime
from infra.lb.config import InvalidEntry, Paths, Plan, plan, render, server_args, server_changes
from infra.lb.runtime import HaproxyError
from infra.lb.stats import requests_in_flight
from infra.lb.topology import TopologyFeed
from infra.log.kafka import Appender, DeadLetters, envelope
from infra.settings import Settings
from schemas.ids import parse_aggregate_id
from schemas.records import HealthRecord, TopologyEntry

log = logging.getLogger(__name__)

IDLE_CHECK_MS = 500
"""Idle, the loop wakes this often: topology changes return at once; HAProxy's liveness is checked
each time round."""


def haproxy_binary() -> str | None:
    return shutil.which("haproxy")


class Haproxy:
    """The HAProxy master process, its configuration file and its two sockets."""

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        self.binary = binary
        self.config = workdir / "haproxy.cfg"
        sockets = Path(tempfile.mkdtemp(prefix="stratos-lb-"))  # short: UNIX socket paths are limited
        self.admin = str(sockets / "admin.sock")
        self.master = str(sockets / "master.sock")
        self.process: subprocess.Popen | None = None

    def check(self, text: str) -> str | None:
        """Write `text` beside the file and ask `haproxy -c`; None when valid, else its words."""
        candidate = self.config.with_suffix(".new")
        candidate.write_text(text)
        done = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(candidate)], capture_output=True, text=True, timeout=30
        )
        return None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-2000:]

    def install(self) -> None:
        os.replace(self.config.with_suffix(".new"), self.config)

    def end_leftover(self) -> None:
        """A master this work directory started before (its `stratos lb` was killed) still holds
        the ports: end it, by its recorded PID, if it is that HAProxy."""
        import psutil

        pidfile = self.workdir / "haproxy.pid"
        try:
            leftover = psutil.Process(int(pidfile.read_text()))
            if str(self.config) in leftover.cmdline():
                leftover.terminate()
                leftover.wait(10)
        except (OSError, ValueError, psutil.Error):
            pass

    def start(self, timeout: float = 15.0) -> int:
        """Start the master on the installed file; returns the first worker's PID."""
        self.end_leftover()
        with open(self.workdir / "haproxy.log", "ab") as output:  # the master holds its own copy
            self.process = subprocess.Popen(
                [self.binary, "-W", "-S", f"{self.master},mode,600", "-f", str(self.config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (self.workdir / "haproxy.pid").write_text(str(self.process.pid))
        deadline = time.monotonic() + timeout
        while True:
            try:
                return runtime.worker_pid(self.admin)
            except HaproxyError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise HaproxyError(
                        f"haproxy did not start (exit {self.process.poll()}); see {self.workdir / 'haproxy.log'}"
                    ) from None
                time.sleep(0.05)

    @property
    def master_pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reload(self, timeout: float = 15.0) -> int:
        """Seamless reload through the master; returns the new worker's PID, raises if no new
        worker took over (a port another program holds, say): the old one still serves."""
        old = runtime.worker_pid(self.admin)
        runtime.fire(self.master, "reload")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid = runtime.worker_pid(self.admin)
                if pid != old:
                    return pid
            except HaproxyError:
                pass
            time.sleep(0.05)
        raise HaproxyError(f"haproxy reload: no new worker after {timeout:g}s; see {self.workdir / 'haproxy.log'}")

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()  # type: ignore[union-attr]
            try:
                self.process.wait(10)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                self.process.kill()  # type: ignore[union-attr]
                self.process.wait()  # type: ignore[union-attr]


@dataclass
class Draining:
    cluster_key: str
    network_partition_id: str
    deadline: float
    maint: bool = False


@dataclass
class Counters:
    reloads: int = 0
    runtime_changes: int = 0
    errors: int = 0
    last_error: str | None = None
    stats_published: int = 0
    restarts: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    log: deque[str] = field(default_factory=lambda: deque(maxlen=100))
    """The last errors, newest last."""


class LoadBalancer:
    def __init__(
        self, settings: Settings, application: str | None = None, workdir: Path | None = None, binary: str | None = None
    ) -> None:
        self.settings = settings
        self.application = application
        self.workdir = (workdir or settings.state_dir / "lb" / (application or "platform")).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        found = binary or haproxy_binary()
        if not found:
            raise HaproxyError("haproxy is not on PATH (Debian: apt-get install -y haproxy; `make haproxy`)")
        self.haproxy = Haproxy(self.workdir, found)
        self.paths = Paths(admin_socket=self.haproxy.admin, bind=settings.lb_bind)
        self.appender = Appender(settings, source="lb")
        self.dead_letters = DeadLetters(self.appender)
        self.feed: TopologyFeed | None = None
        self.accepted: dict[str, TopologyEntry] = {}
        self.refused: dict[str, TopologyEntry] = {}
        self.plan = Plan()
        self.draining: dict[tuple[str, str], Draining] = {}
        self.counters = Counters()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.first_worker: int | None = None
        self.actions: deque[tuple[str, str]] = deque(maxlen=500)
        """What was done to HAProxy, in order: (add | drain | remove | reload, server or pid)."""

    # --- what it serves -------------------------------------------------------------------------
    def wanted(self, entries: dict[str, TopologyEntry]) -> dict[str, TopologyEntry]:
        """The clusters this load balancer serves: its application's (`--application`), or, for
        the platform's, those of applications that have no load-balancer cartridge of their own.
        A load balancer's own cluster is never served."""
        own_lb = {e.application_id for e in entries.values() if e.category == LOAD_BALANCER and not e.removed}
        return {
            k: e
            for k, e in entries.items()
            if e.category != LOAD_BALANCER
            and not e.removed
            and (e.application_id == self.application if self.application else e.application_id not in own_lb)
        }

    def _error(self, message: str) -> None:
        self.counters.errors += 1
        self.counters.last_error = message
        self.counters.log.append(message)
        log.error("%s", message)

    def candidate(self, entries: dict[str, TopologyEntry]) -> dict[str, TopologyEntry]:
        """The accepted entries moved towards `entries`, one cluster at a time: an entry that
        cannot be served leaves its cluster's last good entry in place (or none)."""
        wanted = self.wanted(entries)
        chosen = {k: e for k, e in self.accepted.items() if k in wanted}
        for key in sorted(wanted):
            entry = wanted[key]
            if chosen.get(key) == entry or self.refused.get(key) == entry:
                continue
            try:
                plan({**chosen, key: entry}, self.settings.lb_member_networks)
            except InvalidEntry as exc:
                self.refused[key] = entry
                self.counters.rejected[key] = str(exc)
                self._error(f"{exc}; keeping its last good configuration")
                continue
            chosen[key] = entry
            self.refused.pop(key, None)
            self.counters.rejected.pop(key, None)
        return chosen

    # --- applying -------------------------------------------------------------------------------
    def update(self) -> None:
        assert self.feed is not None
        chosen = self.candidate(self.feed.entries)
        new = plan(chosen, self.settings.lb_member_networks)
        if new == self.plan:
            self.accepted = chosen
            return
        problem = self.haproxy.check(render(new, self.paths))
        if problem:
            self._error(f"haproxy -c refused the configuration; keeping the last good one: {problem}")
            return
        if new.structure() == self.plan.structure() and self.haproxy.alive():
            try:
                self.apply_servers(self.plan, new)
                self.haproxy.install()
            except HaproxyError as exc:
                self._error(f"runtime API: {exc}; reloading from the file instead")
                self.haproxy.install()
                self._reload()
        else:
            self.haproxy.install()
            self._reload()
        self.plan, self.accepted = new, chosen

    def _reload(self) -> None:
        try:
            pid = self.haproxy.reload()
            self.counters.reloads += 1
            self.draining.clear()  # the new worker has only the file's servers
            self.actions.append(("reload", str(pid)))
            log.info("haproxy reloaded: worker %d", pid)
        except HaproxyError as exc:
            self._error(str(exc))

    def apply_servers(self, old: Plan, new: Plan) -> None:
        changes = server_changes(old, new)
        added = {(be, s.name) for be, s in changes.add}
        sock = self.haproxy.admin
        for be, server in changes.remove:
            name = f"{be}/{server.name}"
            if (be, server.name) in added:  # same member, new address: out at once, then in again
                self._remove_now(be, server.name)
                continue
            runtime.command(sock, f"set server {name} state drain")
            self.draining[(be, server.name)] = Draining(
                new.backend(be).cluster_key if new.backend(be) else "",  # type: ignore[union-attr]
                server.network_partition_id,
                time.monotonic() + self.settings.lb_drain_seconds,
            )
            self.counters.runtime_changes += 1
            self.actions.append(("drain", name))
            log.info("draining %s", name)
        for be, server in changes.add:
            name = f"{be}/{server.name}"
            if (be, server.name) in self.draining:  # came back while draining
                self._remove_now(be, server.name)
                self.draining.pop((be, server.name), None)
            runtime.command(sock, f"add server {name} {server_args(server)}")
            runtime.command(sock, f"enable health {name}")
            runtime.command(sock, f"enable server {name}")
            self.counters.runtime_changes += 1
            self.actions.append(("add", name))
            log.info("added %s at %s:%d", name, server.address, server.port)

    def _remove_now(self, backend: str, server: str) -> None:
        name = f"{backend}/{server}"
        runtime.command(self.haproxy.admin, f"set server {name} state maint")
        runtime.command(self.haproxy.admin, f"shutdown sessions server {name}")
        runtime.command(self.haproxy.admin, f"del server {name}")
        self.actions.append(("remove", name))

    def drain_step(self, rows: list[dict[str, str]] | None = None) -> None:
        """Servers whose sessions have ended (or whose deadline passed) leave for good."""
        if not self.draining:
            return
        try:
            rows = rows if rows is not None else runtime.show_stat(self.haproxy.admin)
        except HaproxyError as exc:
            log.warning("drain: %s", exc)
            return
        sessions = {(r.get("pxname"), r.get("svname")): int(r.get("scur") or 0) for r in rows}
        now = time.monotonic()
        for (be, server), state in list(self.draining.items()):
            if (be, server) not in sessions:
                del self.draining[(be, server)]
                continue
            late = now > state.deadline
            if sessions[(be, server)] and not late:
                continue
            name = f"{be}/{server}"
            try:
                if not state.maint:
                    runtime.command(self.haproxy.admin, f"set server {name} state maint")
                    state.maint = True
                if sessions[(be, server)]:
                    runtime.command(self.haproxy.admin, f"shutdown sessions server {name}")
                runtime.command(self.haproxy.admin, f"del server {name}")
                del self.draining[(be, server)]
                self.actions.append(("remove", name))
                log.info("removed %s%s", name, " (drain deadline passed)" if late else "")
            except HaproxyError as exc:  # idle connections not closed yet: next step
                if now > state.deadline + 30:
                    del self.draining[(be, server)]
                    self._error(f"could not remove {name}: {exc}")

    # --- requests in flight ---------------------------------------------------------------------
    def where(self) -> dict[tuple[str, str], tuple[str, str]]:
        found = {
            (be.name, s.name): (be.cluster_key, s.network_partition_id) for be in self.plan.backends for s in be.servers
        }
        found.update({k: (d.cluster_key, d.network_partition_id) for k, d in self.draining.items() if d.cluster_key})
        return found

    def publish_stats(self, rows: list[dict[str, str]]) -> int:
        stats = requests_in_flight(rows, self.where(), time.time())  # type: ignore[arg-type]
        for key, stat in stats:
            tenant = parse_aggregate_id(key).tenant
            self.appender.send("health", key, envelope(HealthRecord, stat, key, tenant=tenant))
        self.appender.flush()
        self.counters.stats_published += len(stats)
        return len(stats)

    # --- the loop -------------------------------------------------------------------------------
    def start(self) -> None:
        """Read the topology to its end, write and check the first file, start HAProxy."""
        self.feed = TopologyFeed(self.settings, self.dead_letters)
        deadline = time.monotonic() + 30
        while not self.feed.caught_up() and time.monotonic() < deadline:
            self.feed.poll(200)
        chosen = self.candidate(self.feed.entries)
        first = plan(chosen, self.settings.lb_member_networks)
        problem = self.haproxy.check(render(first, self.paths))
        if problem:  # cannot happen for a plan; an empty one is the last resort
            self._error(f"haproxy -c refused the first configuration, starting empty: {problem}")
            first, chosen = Plan(), {}
            self.haproxy.check(render(first, self.paths))
        self.haproxy.install()
        self.first_worker = self.haproxy.start()
        self.plan, self.accepted = first, chosen
        self.write_status()
        self.ready.set()
        log.info(
            "haproxy master %s, worker %s: %d frontends, %d backends",
            self.haproxy.master_pid,
            self.first_worker,
            len(first.frontends),
            len(first.backends),
        )

    def run(self) -> None:
        try:
            if not self.ready.is_set():
                self.start()
            assert self.feed is not None
            next_stats = time.monotonic() + self.settings.lb_stats_seconds
            while not self.stopping.is_set():
                changed = self.feed.poll(50 if self.draining else IDLE_CHECK_MS)
                with self.lock:
                    if changed:
                        self.update()
                    if not self.haproxy.alive():
                        self.counters.restarts += 1
                        self._error(f"haproxy exited ({self.haproxy.process.returncode}); starting it again")  # type: ignore[union-attr]
                        self.haproxy.start()
                        self.draining.clear()
                    rows = None
                    if self.draining or time.monotonic() >= next_stats:
                        try:
                            rows = runtime.show_stat(self.haproxy.admin)
                        except HaproxyError as exc:
                            log.warning("show stat: %s", exc)
                    self.drain_step(rows)
                    if rows is not None and time.monotonic() >= next_stats:
                        self.publish_stats(rows)
                        next_stats = time.monotonic() + self.settings.lb_stats_seconds
                    if changed:
                        self.write_status()
        finally:
            self.haproxy.stop()
            if self.feed:
                self.feed.close()
            self.appender.close()

    def stop(self) -> None:
        self.stopping.set()

    # --- what it tells --------------------------------------------------------------------------
    def status(self) -> dict:
        c = self.counters
        return {
            "application": self.application,
            "config": str(self.haproxy.config),
            "admin_socket": self.haproxy.admin,
            "master_pid": self.haproxy.master_pid,
            "frontends": [
                {"port": f.port, "mode": f.mode, "routes": dict(f.routes), "default_backend": f.default_backend}
                for f in self.plan.frontends
            ],
            "backends": {b.name: [f"{s.name}@{s.address}:{s.port}" for s in b.servers] for b in self.plan.backends},
            "draining": [f"{be}/{s}" for be, s in self.draining],
            "reloads": c.reloads,
            "runtime_changes": c.runtime_changes,
            "errors": c.errors,
            "last_error": c.last_error,
            "rejected": dict(c.rejected),
            "invalid_records": self.feed.invalid if self.feed else 0,
            "stats_published": c.stats_published,
            "restarts": c.restarts,
        }

    def write_status(self) -> None:
        path = self.workdir / "status.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.status(), indent=2))
        os.replace(path.with_suffix(".tmp"), path)
