"""REST API under load: 200 concurrent clients reading a runtime of 1,000 members, then adding
definitions. The node and the API run as their own processes (`stratos node`, `stratos api`),
as deployed; this process only generates load. Prints p50/p99 and errors, then one JSON line.

Aim (issue 6): p99 <= 50 ms for runtime reads with 1,000 members, no errors.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from common import bench_settings, finish, median, percentile

from infra.broker import free_port

CLIENTS = 200
READS_PER_CLIENT = 5
ADDS_PER_CLIENT = 2
MEMBERS = 1000
PASSWORD = "bench-admin"
ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "samples" / "stratos"


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "infra.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/api/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the API did not answer on {url}")


def define_big_application(api: httpx.Client) -> str:
    """A deployed application whose one cluster has MEMBERS members (min rule on deploy)."""
    import json

    def post(path: str, body: dict) -> None:
        reply = api.post(path, json=body)
        if reply.status_code != 201:
            raise RuntimeError(f"{path}: {reply.text}")

    for name in ("network-partition-1", "network-partition-2", "network-partition-3"):
        post("/networkPartitions", {**json.loads((SAMPLES / "network-partition.json").read_text()), "id": name})
    post("/cartridges", json.loads((SAMPLES / "php.json").read_text()))
    post("/autoscalingPolicies", json.loads((SAMPLES / "autoscaling-policy.json").read_text()))
    post("/deploymentPolicies", {"id": "big", "networkPartitions": [{
        "id": "network-partition-1", "partitionAlgo": "round-robin",
        "partitions": [{"id": "partition-1", "partitionMax": MEMBERS}, {"id": "partition-2", "partitionMax": MEMBERS}]}]})
    post("/applicationPolicies", json.loads((SAMPLES / "application-policy.json").read_text()))
    post("/applications", {"applicationId": "big", "components": {"cartridges": [{
        "type": "php", "cartridgeMin": MEMBERS, "cartridgeMax": MEMBERS,
        "subscribableInfo": {"alias": "php1", "autoscalingPolicy": "autoscaling-policy-1",
                             "deploymentPolicy": "big"}}]}})
    reply = api.post("/applications/big/deploy/application-policy-1")
    if reply.status_code != 202:
        raise RuntimeError(reply.text)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runtime = api.get("/applications/big/runtime").json()
        instances = runtime["applicationInstances"]
        if instances and len(instances[0]["clusterInstances"][0]["member"]) == MEMBERS:
            return "big"
        time.sleep(0.5)
    raise TimeoutError(f"the runtime did not show {MEMBERS} members")


async def load(url: str, token: str, requests_of_client) -> tuple[list[float], Counter, float]:
    """Run CLIENTS concurrent clients; returns latencies (ms), errors by kind and wall seconds."""
    latencies: list[float] = []
    errors: Counter = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=f"{url}/api", headers=headers, limits=limits, timeout=120) as client:
        async def one_client(n: int) -> None:
            for method, path, body, expected in requests_of_client(n):
                started = time.perf_counter()
                try:
                    reply = await client.request(method, path, json=body)
                    if reply.status_code != expected:
                        errors[f"HTTP {reply.status_code}"] += 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                latencies.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
        return latencies, errors, time.perf_counter() - started


def figures(latencies: list[float], errors: Counter, seconds: float) -> dict:
    return {"requests": len(latencies), "errors": sum(errors.values()), "error_kinds": dict(errors), "p50_ms": round(median(latencies), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1), "per_second": round(len(latencies) / seconds, 1)}


def main() -> None:
    with bench_settings() as settings:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
               "STRATOS_TOPIC_PREFIX": settings.topic_prefix, "STRATOS_PARTITIONS": str(settings.partitions),
               "STRATOS_ADMIN_PASSWORD": PASSWORD, "STRATOS_API_PORT": str(port), "STRATOS_LOG_LEVEL": "WARNING"}
        node = start(["node"], env)
        api_process = start(["api"], env)
        try:
            wait_for(url, api_process)
            with httpx.Client(base_url=f"{url}/api", auth=("admin", PASSWORD), timeout=120) as api:
                app_id = define_big_application(api)
                token = api.post("/token").json()["access_token"]
            reads = asyncio.run(load(url, token, lambda n: [
                ("GET", f"/applications/{app_id}/runtime", None, 200)] * READS_PER_CLIENT))
            adds = asyncio.run(load(url, token, lambda n: [
                ("POST", "/autoscalingPolicies", {"id": f"policy-{n}-{k}", "loadThresholds": {
                    "loadAverage": {"threshold": 50 + k}}}, 201) for k in range(ADDS_PER_CLIENT)]))
        finally:
            for process in (api_process, node):
                process.terminate()
                process.wait(15)
    read, add = figures(*reads), figures(*adds)
    print(f"runtime reads ({MEMBERS} members, {CLIENTS} clients): p50 {read['p50_ms']} ms, "
          f"p99 {read['p99_ms']} ms, {read['per_second']}/s, {read['errors']} errors "
          f"(aim p99 <= 50 ms: {read['p99_ms'] / 50:.1f}x)")
    print(f"definition adds ({CLIENTS} clients): p50 {add['p50_ms']} ms, p99 {add['p99_ms']} ms, "
          f"{add['per_second']}/s, {add['errors']} errors")
    finish({"bench": "api", "clients": CLIENTS, "members": MEMBERS, "runtime_reads": read,
            "definition_adds": add, "read_p99_vs_aim": round(read["p99_ms"] / 50, 2)})


if __name__ == "__main__":
    main()
