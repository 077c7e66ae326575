"""The idle platform: `stratos up` with the sample; once its members are Active, the CPU seconds
of every process of the platform (the `stratos up` process, the embedded Kafka's JVM, node,
reactor, cloud controller, health worker, API) over IDLE_SECONDS, per part and in total, as a
share of one core. Then the time of a definition add through the API (median of ADDS, one
client), so that quiet and fast are measured together. The same again with every reader's fetch
waiting 20 ms (the baseline, same run): what the platform's long fetch waits save, Kafka
answering a waiting fetch as soon as a record arrives. One JSON line at the end.

The sample's simulated instances still publish health every STRATOS_HEALTH_PUBLISH_SECONDS
(15 s) and the cluster scales with its load wave: that is the platform's real idle work.

Aim (issue 11): total <= 0.05 of a core; a definition add as fast as before (~30 ms).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from common import finish

from infra.broker import free_port
from infra.settings import Settings

IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", 60))
ADDS = 15
BASELINE_WAIT_MS = 20
"""The baseline: every reader at the short wait a command path would need if the broker held a
waiting fetch to its end (Kafka answers it as soon as a record arrives)."""
PASSWORD = "bench-admin"
ROOT = Path(__file__).resolve().parent.parent
APP = "single-cartridge-app"


def part_of(process: psutil.Process, root_pid: int) -> str:
    """The platform part a process is: `up` (the root), `broker` (Kafka's JVM: its CPU is the
    platform's too), or the `stratos <part>` verb."""
    if process.pid == root_pid:
        return "up"
    try:
        argv = process.cmdline()
    except psutil.Error:
        return "?"
    if "infra.cli" in argv:
        return argv[argv.index("infra.cli") + 1]
    return "broker" if "kafka.Kafka" in argv else Path(argv[0]).name


def platform_processes(root: psutil.Process) -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = {}
    for process in [root, *root.children(recursive=True)]:
        found.setdefault(part_of(process, root.pid), []).append(process)
    return found


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def wait_active(http: httpx.Client, up: subprocess.Popen, timeout: float = 180) -> int:
    """Wait until the sample's members are all Active; returns how many there are."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.poll() is not None:
            raise RuntimeError(f"`stratos up` exited with {up.returncode}")
        try:
            reply = http.get(f"/applications/{APP}/runtime")
            if reply.status_code == 200:
                instances = reply.json().get("applicationInstances") or []
                members = [m for i in instances for c in i.get("clusterInstances", []) for m in c["member"]]
                if len(members) >= 2 and all(m["status"] == "Active" for m in members):
                    return len(members)
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the sample's members did not become Active")


def definition_add_ms(http: httpx.Client) -> list[float]:
    times = []
    for n in range(ADDS):
        body = {"id": f"idle-policy-{n}-{time.monotonic_ns()}", "loadThresholds": {"loadAverage": {"threshold": 50}}}
        started = time.perf_counter()
        reply = http.post("/autoscalingPolicies", json=body)
        times.append((time.perf_counter() - started) * 1000)
        if reply.status_code != 201:
            raise RuntimeError(f"definition add: HTTP {reply.status_code} {reply.text}")
        time.sleep(0.2)
    return times


def measure(extra_env: dict[str, str]) -> tuple[dict[str, float], float, int, list[float]]:
    """One `stratos up` in a fresh state directory: CPU seconds per part over the idle window,
    the window's length, the members Active, and the definition add times."""
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("STRATOS_KAFKA_BOOTSTRAP", "STRATOS_FETCH_WAIT_MS")
    }
    env.update(
        STRATOS_ADMIN_PASSWORD=PASSWORD,
        STRATOS_LOG_LEVEL="WARNING",
        STRATOS_MOCK_API_PORT=str(free_port()),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        **extra_env,
    )
    with tempfile.TemporaryDirectory(prefix="stratos-idle-") as state:
        up = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "up", "--api-port", str(port), "--state-dir", state],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/api", auth=("admin", PASSWORD), timeout=30) as http:
                members = wait_active(http, up)
                time.sleep(5)  # let the start-up work (reads from the beginning) settle
                root = psutil.Process(up.pid)
                processes = platform_processes(root)
                before = {part: cpu_seconds(group) for part, group in processes.items()}
                started = time.monotonic()
                time.sleep(IDLE_SECONDS)
                seconds = time.monotonic() - started
                used = {part: cpu_seconds(group) - before[part] for part, group in processes.items()}
                adds = definition_add_ms(http)
        finally:
            up.terminate()
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                up.kill()
    return used, seconds, members, adds


def report(label: str, used: dict[str, float], seconds: float, members: int, adds: list[float]) -> dict:
    shares = {part: round(cpu / seconds, 4) for part, cpu in sorted(used.items(), key=lambda kv: -kv[1])}
    total = sum(used.values()) / seconds
    print(f"--- {label}")
    for part, share in shares.items():
        print(f"{part:>14}: {used[part]:6.2f} CPU s in {seconds:.0f} s = {share:.3f} of a core")
    add_ms = statistics.median(adds)
    print(f"         total: {total:.3f} of a core (aim <= 0.05: {total / 0.05:.1f}x the aim); {members} members Active")
    print(
        f"definition add through the API: median {add_ms:.1f} ms of {ADDS} (min {min(adds):.1f}, max {max(adds):.1f})"
    )
    return {
        "cpu_share_total": round(total, 4),
        "cpu_share_by_part": shares,
        "members": members,
        "definition_add_ms_median": round(add_ms, 1),
        "definition_add_ms_max": round(max(adds), 1),
    }


def main() -> None:
    shipped = report(
        f"as shipped: fetches waiting up to {Settings.model_fields['fetch_wait_ms'].default} ms", *measure({})
    )
    baseline = report(
        f"baseline, same run: every fetch waiting {BASELINE_WAIT_MS} ms",
        *measure({"STRATOS_FETCH_WAIT_MS": str(BASELINE_WAIT_MS)}),
    )
    ratio = shipped["cpu_share_total"] / baseline["cpu_share_total"]
    add_ratio = shipped["definition_add_ms_median"] / baseline["definition_add_ms_median"]
    print(f"idle CPU vs baseline: {ratio:.2f}; definition add vs baseline: {add_ratio:.2f}")
    finish(
        {
            "bench": "idle",
            "idle_seconds": IDLE_SECONDS,
            **shipped,
            "total_vs_aim": round(shipped["cpu_share_total"] / 0.05, 2),
            "baseline": baseline,
            "cpu_vs_baseline": round(ratio, 3),
            "definition_add_vs_baseline": round(add_ratio, 3),
        }
    )


if __name__ == "__main__":
    main()
