"""What the outer wall costs: `stratos up --secure` (SASL_SSL with SCRAM-SHA-512, ACLs, the
tenant-replies part) against `stratos up` (plaintext), in one run, each in a fresh state dir
with the sample deployed. Per mode: the CPU of every process of the platform (Kafka's JVM
included) over BENCH_IDLE_SECONDS once the sample's members are Active, as a share of one
core; then COMMANDS definition adds through the REST API one after another (each a command
to the node and its reply back to the API: the command path), p50 and p99. Prints both and the
ratios secure / plaintext; one JSON line at the end.
Usage: python bench/secure.py   (BENCH_IDLE_SECONDS=30, BENCH_COMMANDS=60 by default)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import httpx
import psutil
from common import ROOT, finish, median, percentile
from idle import cpu_seconds, platform_processes, wait_active

from infra.broker import free_port

IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", 30))
COMMANDS = int(os.environ.get("BENCH_COMMANDS", 60))
PASSWORD = "bench-admin"


def command_ms(http: httpx.Client) -> list[float]:
    times = []
    for n in range(COMMANDS):
        body = {"id": f"secure-bench-{n}-{time.monotonic_ns()}", "loadThresholds": {"loadAverage": {"threshold": 50}}}
        started = time.perf_counter()
        reply = http.post("/autoscalingPolicies", json=body)
        times.append((time.perf_counter() - started) * 1000)
        if reply.status_code != 201:
            raise RuntimeError(f"definition add: HTTP {reply.status_code} {reply.text}")
    return times


def measure(secure: bool) -> dict:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("STRATOS_")}
    env.update(
        STRATOS_ADMIN_PASSWORD=PASSWORD,
        STRATOS_LOG_LEVEL="WARNING",
        STRATOS_MOCK_API_PORT=str(free_port()),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    with tempfile.TemporaryDirectory(prefix="stratos-secure-") as state:
        up = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "up", "--api-port", str(port), "--state-dir", state]
            + (["--secure"] if secure else []),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", auth=("admin", PASSWORD), timeout=60) as http:
                members = wait_active(http, up, timeout=300)
                time.sleep(5)  # the start-up reads settle
                processes = platform_processes(psutil.Process(up.pid))
                before = {part: cpu_seconds(group) for part, group in processes.items()}
                started = time.monotonic()
                time.sleep(IDLE_SECONDS)
                seconds = time.monotonic() - started
                used = {part: cpu_seconds(group) - before[part] for part, group in processes.items()}
                latencies = command_ms(http)
        finally:
            up.terminate()
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                up.kill()
    figures = {
        "members": members,
        "idle_cpu_share": round(sum(used.values()) / seconds, 4),
        "idle_cpu_share_broker": round(used.get("broker", 0.0) / seconds, 4),
        "command_ms_p50": round(median(latencies), 1),
        "command_ms_p99": round(percentile(latencies, 0.99), 1),
    }
    label = "--secure (SASL_SSL, SCRAM-SHA-512, ACLs)" if secure else "plaintext (baseline)"
    print(
        f"{label}: idle {figures['idle_cpu_share']:.3f} of a core (broker {figures['idle_cpu_share_broker']:.3f}); "
        f"{COMMANDS} commands p50 {figures['command_ms_p50']} ms, p99 {figures['command_ms_p99']} ms"
    )
    return figures


def main() -> None:
    plain = measure(secure=False)
    secure = measure(secure=True)
    ratios = {
        "idle_cpu_vs_plaintext": round(secure["idle_cpu_share"] / plain["idle_cpu_share"], 3),
        "command_p50_vs_plaintext": round(secure["command_ms_p50"] / plain["command_ms_p50"], 3),
        "command_p99_vs_plaintext": round(secure["command_ms_p99"] / plain["command_ms_p99"], 3),
    }
    print(
        f"secure / plaintext, same run: idle CPU {ratios['idle_cpu_vs_plaintext']:.2f}, "
        f"command p50 {ratios['command_p50_vs_plaintext']:.2f}, p99 {ratios['command_p99_vs_plaintext']:.2f}"
    )
    finish(
        {
            "bench": "secure",
            "idle_seconds": IDLE_SECONDS,
            "commands": COMMANDS,
            "secure": secure,
            "baseline_plaintext": plain,
            **ratios,
        }
    )


if __name__ == "__main__":
    main()
