"""The load balancer's cost and agility, measured on real HAProxy and real member processes.

- requests/s and p99 through HAProxy to 3 members against the same requests straight to one
  member (the ratio is the proxy's cost; the members are Python's threaded HTTP server);
- time from a member's MemberActivated event (its commit's timestamp) to the first request
  HAProxy hands it (aim <= 1 s), over 5 scale-outs;
- failed requests of a request loop running through 10 scale changes (5 out, 5 in: drained,
  then removed), aim 0, and whether HAProxy's worker was replaced meanwhile (it must not be).

Run: `python bench/lb.py` (needs Debian's haproxy). Ends with one JSON line.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from common import bench_settings, finish, percentile  # noqa: E402

from infra.broker import free_port  # noqa: E402
from infra.lb import runtime  # noqa: E402
from infra.lb.balancer import LoadBalancer  # noqa: E402
from infra.lb.config import backend_name  # noqa: E402
from infra.lb.topology import TopologyProjector  # noqa: E402
from infra.log.commands_client import CommandClient  # noqa: E402
from schemas import commands as C  # noqa: E402
from schemas.ids import aggregate_id  # noqa: E402
from tests.conftest import RunningNode, events_of, sample, wait_until  # noqa: E402
from tests.test_cloud_controller import RunningCloud  # noqa: E402
from tests.test_lb import application, cartridge, deploy  # noqa: E402
from tests.test_runtime_flow import add  # noqa: E402

T = "carbon.super"
CLUSTER = aggregate_id(T, "cluster", "bench-app.php1.php.domain")
REQUESTS, CONCURRENCY = 3000, 8


def load(url: str, count: int, concurrency: int) -> tuple[float, float, int]:
    """(requests/s, p99 seconds, failures) of `count` GETs from `concurrency` clients."""
    latencies: list[float] = []
    failures = [0]

    def client(n: int) -> None:
        with httpx.Client(timeout=10) as http:
            for _ in range(n):
                start = time.perf_counter()
                try:
                    if http.get(url).status_code != 200:
                        failures[0] += 1
                except httpx.HTTPError:
                    failures[0] += 1
                latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, [count // concurrency] * concurrency))
    return len(latencies) / (time.perf_counter() - began), percentile(latencies, 0.99), failures[0]


def active(settings) -> dict[str, float]:
    """Active member -> when its MemberActivated commit was written (epoch seconds)."""
    found: dict[str, float] = {}
    for event in events_of(settings, CLUSTER):
        if event.type == "MemberActivated":
            found[event.payload.member_id] = event.occurred_at.timestamp()
        elif event.type in ("MemberTerminationRequested", "MemberTerminated", "MemberObsoleted"):
            found.pop(event.payload.member_id, None)
    return found


class Loop:
    """Requests through the proxy on 4 clients until stopped (bounded to 200,000), noting when
    each member answered first and every failure."""

    def __init__(self, url: str) -> None:
        self.url, self.first, self.failures, self.count = url, {}, [], 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(4)]
        for thread in self.threads:
            thread.start()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            for _ in range(50_000):
                if self.stopping.is_set():
                    return
                try:
                    answer = http.get(self.url)
                    member = answer.headers.get("X-Stratos-Member")
                    with self.lock:
                        self.count += 1
                        self.first.setdefault(member, time.time())
                        if answer.status_code != 200:
                            self.failures.append(answer.status_code)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.failures.append(repr(exc))

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(20)


def main() -> None:
    with bench_settings() as base:
        settings = base.model_copy(
            update={
                "state_dir": Path(tempfile.mkdtemp(prefix="bench-lb-")),
                "mock_iaas_mode": "process",
                "cloud_reconcile_seconds": 1.0,
                "health_publish_seconds": 5.0,
                "lb_drain_seconds": 10.0,
            }
        )
        node, cloud = RunningNode(settings), RunningCloud(settings)
        projector, lb = TopologyProjector(settings), LoadBalancer(settings, workdir=settings.state_dir / "lb")
        threads = [threading.Thread(target=projector.run, daemon=True), threading.Thread(target=lb.run, daemon=True)]
        for thread in threads:
            thread.start()
        client = CommandClient(settings)
        try:
            wait_until(lb.ready.is_set, timeout=30, message="the load balancer")
            port = free_port()
            for kind, body in [
                ("networkPartition", sample("network-partition.json")),
                ("cartridge", cartridge("php", port)),
                (
                    "autoscalingPolicy",
                    {"id": "rif-policy", "loadThresholds": {"requestsInFlight": {"threshold": 1000}}},
                ),
                ("deploymentPolicy", sample("deployment-policy.json")),
                ("applicationPolicy", sample("application-policy.json")),
            ]:
                add(client, kind, body)
            deploy(client, application("bench-app", [("php", "php1", 3, 6)]))
            members = wait_until(
                lambda: len(active(settings)) == 3 and active(settings), timeout=90, message="three Active members"
            )
            servers = lambda: {s.name for b in lb.plan.backends for s in b.servers}  # noqa: E731
            wait_until(lambda: servers() == set(members), timeout=30, message="three servers")
            proxy = f"http://127.0.0.1:{port}/"
            one = cloud.cloud.get(sorted(members)[0]).local_ports["http"]
            direct_rps, direct_p99, direct_failed = load(f"http://127.0.0.1:{one}/", REQUESTS, CONCURRENCY)
            proxy_rps, proxy_p99, proxy_failed = load(proxy, REQUESTS, CONCURRENCY)
            print(f"direct to one member: {direct_rps:7.0f} req/s, p99 {direct_p99 * 1000:6.1f} ms")
            print(
                f"through HAProxy to 3: {proxy_rps:7.0f} req/s, p99 {proxy_p99 * 1000:6.1f} ms "
                f"(ratio {proxy_rps / direct_rps:.2f})"
            )

            worker, reloads = runtime.worker_pid(lb.haproxy.admin), lb.counters.reloads
            loop = Loop(proxy)
            to_first: list[float] = []
            changes = 0
            try:
                for _ in range(5):
                    before = active(settings)
                    client.call(CLUSTER, C.UpdateClusterLimits(min=4, max=6))
                    (new,) = wait_until(
                        lambda before=before: (set(active(settings)) - set(before)) or None,
                        timeout=60,
                        message="a fourth Active member",
                    )
                    activated = active(settings)[new]
                    wait_until(lambda new=new: new in loop.first, timeout=20, message="its first proxied request")
                    to_first.append(loop.first[new] - activated)
                    changes += 1
                    client.call(CLUSTER, C.UpdateClusterLimits(min=3, max=6))
                    client.call(CLUSTER, C.TerminateMember(member_id=new, graceful=True))
                    name = f"{backend_name(CLUSTER, port)}/{new}"
                    wait_until(
                        lambda name=name: ("remove", name) in lb.actions, timeout=60, message="drained and removed"
                    )
                    changes += 1
            finally:
                loop.stop()
            same_worker = runtime.worker_pid(lb.haproxy.admin) == worker and lb.counters.reloads == reloads
            print(
                f"active -> first proxied request over {len(to_first)} scale-outs: median "
                f"{sorted(to_first)[len(to_first) // 2]:.3f} s, max {max(to_first):.3f} s (aim <= 1 s)"
            )
            print(
                f"{changes} scale changes: {len(loop.failures)} failed of {loop.count} requests (aim 0); "
                f"HAProxy worker kept: {same_worker}"
            )
            finish(
                {
                    "bench": "lb",
                    "direct_rps": round(direct_rps),
                    "proxy_rps": round(proxy_rps),
                    "rps_ratio": round(proxy_rps / direct_rps, 3),
                    "direct_p99_ms": round(direct_p99 * 1000, 1),
                    "proxy_p99_ms": round(proxy_p99 * 1000, 1),
                    "failed_in_load": direct_failed + proxy_failed,
                    "active_to_first_request_s": {
                        "median": round(sorted(to_first)[len(to_first) // 2], 3),
                        "max": round(max(to_first), 3),
                    },
                    "scale_changes": changes,
                    "failed_requests_during_changes": len(loop.failures),
                    "requests_during_changes": loop.count,
                    "worker_kept": same_worker,
                }
            )
        finally:
            client.close()
            lb.stop()
            projector.stop()
            for thread in threads:
                thread.join(20)
            cloud.stop()
            node.stop()


if __name__ == "__main__":
    main()
