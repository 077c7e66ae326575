"""REST API under load: 200 concurrent clients reading a runtime of 1,000 members, then adding
definitions. The node and the API run as their own processes (`stratos node`, `stratos api`),
as deployed; this process only generates load (one asyncio loop, aiohttp with one pooled
connection per client: httpx spent about 16 ms of CPU per 340 KB answer, more than the server).
Prints p50/p99, errors and the CPU each side used, then one JSON line.

Reads are measured twice. Saturated: every client asks again as soon as it has its answer, so
by Little's law latency = clients / throughput (200 clients at 2,000 answers/s would still wait
100 ms). Polling: every client asks once per POLL_SECONDS, as a console or a CLI watching a
deployment does; this is the latency a user sees.

Aim (issue 6): p99 <= 50 ms for runtime reads with 1,000 members, no errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import psutil
from common import bench_settings, finish, median, percentile

from infra.broker import free_port

CLIENTS = 200
READS_PER_CLIENT = 5
POLLS_PER_CLIENT = 10
POLL_SECONDS = 1.0
ADDS_PER_CLIENT = 2
ROUNDS = 3
MEMBERS = 1000
PASSWORD = "bench-admin"
ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "samples" / "stratos"


def platform_env(settings, port: int) -> dict[str, str]:
    """The environment of the node and API processes a benchmark starts on its own topics."""
    return {
        **os.environ,
        "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
        "STRATOS_PARTITIONS": str(settings.partitions),
        "STRATOS_ADMIN_PASSWORD": PASSWORD,
        "STRATOS_API_PORT": str(port),
        "STRATOS_LOG_LEVEL": "WARNING",
    }


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "infra.cli", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


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

    def post(path: str, body: dict) -> None:
        reply = api.post(path, json=body)
        if reply.status_code != 201:
            raise RuntimeError(f"{path}: {reply.text}")

    for name in ("network-partition-1", "network-partition-2", "network-partition-3"):
        post("/networkPartitions", {**json.loads((SAMPLES / "network-partition.json").read_text()), "id": name})
    post("/cartridges", json.loads((SAMPLES / "php.json").read_text()))
    post("/autoscalingPolicies", json.loads((SAMPLES / "autoscaling-policy.json").read_text()))
    post(
        "/deploymentPolicies",
        {
            "id": "big",
            "networkPartitions": [
                {
                    "id": "network-partition-1",
                    "partitionAlgo": "round-robin",
                    "partitions": [
                        {"id": "partition-1", "partitionMax": MEMBERS},
                        {"id": "partition-2", "partitionMax": MEMBERS},
                    ],
                }
            ],
        },
    )
    post("/applicationPolicies", json.loads((SAMPLES / "application-policy.json").read_text()))
    post(
        "/applications",
        {
            "applicationId": "big",
            "components": {
                "cartridges": [
                    {
                        "type": "php",
                        "cartridgeMin": MEMBERS,
                        "cartridgeMax": MEMBERS,
                        "subscribableInfo": {
                            "alias": "php1",
                            "autoscalingPolicy": "autoscaling-policy-1",
                            "deploymentPolicy": "big",
                        },
                    }
                ]
            },
        },
    )
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


async def load(
    url: str, token: str, requests_of_client, pause: float = 0.0, clients: int = CLIENTS
) -> tuple[list[float], Counter, float]:
    """Run `clients` concurrent clients, each `pause` seconds between its requests (first one at
    a random point of that interval); returns latencies (ms), errors by kind and wall seconds."""
    latencies: list[float] = []
    errors: Counter = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(f"{url}/api/", headers=headers, connector=connector, timeout=timeout) as client:

        async def one_client(n: int) -> None:
            if pause:
                await asyncio.sleep(random.uniform(0, pause))
            for method, path, body, expected in requests_of_client(n):
                started = time.perf_counter()
                try:
                    async with client.request(method, path, json=body) as reply:
                        await reply.read()
                        if reply.status != expected:
                            errors[f"HTTP {reply.status}"] += 1
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors[type(exc).__name__] += 1
                latencies.append((time.perf_counter() - started) * 1000)
                if pause:
                    await asyncio.sleep(max(0.0, pause - (time.perf_counter() - started)))

        started = time.perf_counter()
        await asyncio.gather(*(one_client(n) for n in range(clients)))
        return latencies, errors, time.perf_counter() - started


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measured(
    api: psutil.Process, url: str, token: str, requests_of_client, pause: float = 0.0, clients: int = CLIENTS
) -> dict:
    """ROUNDS runs of one load; the median round's figures, with each side's CPU share."""
    rounds = []
    for _ in range(ROUNDS):
        me, server = psutil.Process(), cpu_seconds(api)
        mine = cpu_seconds(me)
        latencies, errors, seconds = asyncio.run(load(url, token, requests_of_client, pause, clients))
        rounds.append(
            {
                "requests": len(latencies),
                "errors": sum(errors.values()),
                "error_kinds": dict(errors),
                "p50_ms": round(median(latencies), 1),
                "p99_ms": round(percentile(latencies, 0.99), 1),
                "per_second": round(len(latencies) / seconds, 1),
                "api_cpu_ms_per_request": round((cpu_seconds(api) - server) * 1000 / len(latencies), 2),
                "api_cpu_share": round((cpu_seconds(api) - server) / seconds, 2),
                "loadgen_cpu_share": round((cpu_seconds(me) - mine) / seconds, 2),
            }
        )
    rounds.sort(key=lambda r: r["p99_ms"])
    return {
        **rounds[len(rounds) // 2],
        "p99_ms_rounds": [r["p99_ms"] for r in rounds],
        "errors": sum(r["errors"] for r in rounds),
    }


def main() -> None:
    with bench_settings() as settings:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = platform_env(settings, port)
        node = start(["node"], env)
        api = start(["api"], env)
        try:
            wait_for(url, api)
            with httpx.Client(base_url=f"{url}/api", auth=("admin", PASSWORD), timeout=120) as http:
                app_id = define_big_application(http)
                token = http.post("/token").json()["access_token"]
            api_process = psutil.Process(api.pid)
            runtime = [("GET", f"applications/{app_id}/runtime", None, 200)]
            reads = measured(api_process, url, token, lambda n: runtime * READS_PER_CLIENT)
            polls = measured(api_process, url, token, lambda n: runtime * POLLS_PER_CLIENT, POLL_SECONDS)

            def adding(count: int):
                return lambda n: [
                    (
                        "POST",
                        "autoscalingPolicies",
                        {
                            "id": f"policy-{n}-{k}-{time.monotonic_ns()}",
                            "loadThresholds": {"loadAverage": {"threshold": 50 + k}},
                        },
                        201,
                    )
                    for k in range(count)
                ]

            single_read = measured(api_process, url, token, lambda n: runtime * 20, clients=1)
            single_add = measured(api_process, url, token, adding(20), clients=1)
            adds = measured(api_process, url, token, adding(ADDS_PER_CLIENT))
        finally:
            for process in (api, node):
                process.terminate()
                process.wait(15)
    for name, clients, result in (
        ("runtime reads, one client", 1, single_read),
        ("runtime reads, saturated", CLIENTS, reads),
        (f"runtime reads, polled every {POLL_SECONDS:g} s", CLIENTS, polls),
        ("definition adds, one client", 1, single_add),
        ("definition adds, saturated", CLIENTS, adds),
    ):
        print(
            f"{name} ({clients} clients, {MEMBERS} members): p50 {result['p50_ms']} ms, "
            f"p99 {result['p99_ms']} ms (rounds {result['p99_ms_rounds']}), {result['per_second']}/s, "
            f"{result['errors']} errors; API {result['api_cpu_ms_per_request']} ms CPU per request, "
            f"CPU share API {result['api_cpu_share']} / load generator {result['loadgen_cpu_share']}"
        )
    print(f"aim p99 <= 50 ms: saturated {reads['p99_ms'] / 50:.1f}x, polled {polls['p99_ms'] / 50:.1f}x")
    finish(
        {
            "bench": "api",
            "clients": CLIENTS,
            "members": MEMBERS,
            "rounds": ROUNDS,
            "runtime_read_one_client": single_read,
            "runtime_reads": reads,
            "runtime_polls": polls,
            "definition_add_one_client": single_add,
            "definition_adds": adds,
            "read_p99_vs_aim": round(reads["p99_ms"] / 50, 2),
            "poll_p99_vs_aim": round(polls["p99_ms"] / 50, 2),
        }
    )


if __name__ == "__main__":
    main()
