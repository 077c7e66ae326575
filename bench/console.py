"""The web console's stream under load: 20 consoles follow a tenant with 1,000 members while
definitions are added; how long until every console shows each new event, and how big a
document is. Node and API run as their own processes, as deployed; this process only watches.
Prints p50/p99 and sizes, then one JSON line.

Aim: a change shows on every open console within a second (the stream looks every 0.5 s, the
chart samples every 1 s) with 1,000 members.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from api import PASSWORD, define_big_application, platform_env, start, wait_for
from common import bench_settings, finish, median, percentile

from infra.broker import free_port

CONSOLES = 20
PROBES = 10
PROBE_EVERY_SECONDS = 1.5
AIM_SECONDS = 1.0


async def console(url: str, token: str, seen: dict[str, list[float]], sizes: list[int], done: asyncio.Event) -> None:
    """One console: read documents, note when each probe's event first shows."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=120) as client,
        client.stream("GET", "/api/console/stream", headers=headers) as stream,
    ):
        mine: set[str] = set()
        async for line in stream.aiter_lines():
            if done.is_set():
                return
            if not line.startswith("data:"):
                continue
            sizes.append(len(line))
            for event in json.loads(line.removeprefix("data:"))["events"]:
                probe = event["aggregate"].removeprefix("autoscalingPolicy/")
                if probe.startswith("probe-") and probe not in mine:
                    mine.add(probe)
                    seen.setdefault(probe, []).append(time.monotonic())


async def run(url: str, token: str) -> tuple[list[float], list[int]]:
    seen: dict[str, list[float]] = {}
    sizes: list[int] = []
    done = asyncio.Event()
    consoles = [asyncio.create_task(console(url, token, seen, sizes, done)) for _ in range(CONSOLES)]
    await asyncio.sleep(3)  # every console has its first document
    sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=f"{url}/api", auth=("admin", PASSWORD), timeout=60) as api:
        for k in range(PROBES):
            probe = f"probe-{k}"
            sent[probe] = time.monotonic()
            reply = await api.post(
                "/autoscalingPolicies", json={"id": probe, "loadThresholds": {"loadAverage": {"threshold": 60}}}
            )
            reply.raise_for_status()
            await asyncio.sleep(PROBE_EVERY_SECONDS)
    await asyncio.sleep(3)
    done.set()
    for task in consoles:
        task.cancel()
    await asyncio.gather(*consoles, return_exceptions=True)
    missing = [p for p in sent if len(seen.get(p, [])) < CONSOLES]
    if missing:
        raise RuntimeError(f"probes not seen by every console: {missing}")
    return [(at - sent[p]) * 1000 for p, ats in seen.items() for at in ats], sizes


def main() -> None:
    with bench_settings() as settings:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = platform_env(settings, port)
        node = start(["node"], env)
        api_process = start(["api"], env)
        try:
            wait_for(url, api_process)
            with httpx.Client(base_url=f"{url}/api", auth=("admin", PASSWORD), timeout=120) as api:
                define_big_application(api)
                token = api.post("/token").json()["access_token"]
            latencies, sizes = asyncio.run(run(url, token))
        finally:
            for process in (api_process, node):
                process.terminate()
                process.wait(15)
    p50, p99 = median(latencies), percentile(latencies, 0.99)
    kib = median(sizes) / 1024
    print(
        f"{CONSOLES} consoles, 1,000 members: a new event shows after p50 {p50:.0f} ms, p99 {p99:.0f} ms "
        f"(aim {AIM_SECONDS * 1000:.0f} ms: p99 {p99 / 1000 / AIM_SECONDS:.2f}x); "
        f"documents {kib:.0f} KiB (median of {len(sizes)})"
    )
    finish(
        {
            "bench": "console",
            "consoles": CONSOLES,
            "members": 1000,
            "probes": PROBES,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "p99_vs_aim": round(p99 / 1000 / AIM_SECONDS, 2),
            "document_kib": round(kib, 1),
            "documents": len(sizes),
        }
    )


if __name__ == "__main__":
    main()
