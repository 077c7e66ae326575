"""`make run` to API ready: on a fresh clone (nothing installed), warm (installed, first start of
the platform), and again on the same state (Kafka's log on disk: the restart). The figure is the
time from the command to the first answer of `GET /api/applications` listing the sample.

"Fresh" clones the repository into a temporary directory and runs `make run` there with an empty
Maven repository and pip's cache off, so Kafka's jars and the Python packages are downloaded as on
a new machine (pip still finds wheels in PIP_FIND_LINKS when the machine has them: say so when
quoting). The same-run baseline is the restart: the fastest a platform comes up here.
Usage: python bench/startup.py [--no-fresh]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, finish

from infra.broker import free_port


def time_to_api(cwd: Path, command: list[str], env: dict, port: int, timeout: float = 1800.0) -> float:
    """Start `command`, wait until the API lists the sample application, stop it with Ctrl-C."""
    started = time.monotonic()
    with open(cwd / f"startup-{port}.log", "ab") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with httpx.Client(timeout=2, auth=("admin", "admin")) as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{' '.join(command)} exited with {process.returncode} (log: {log.name})")
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"API not ready after {timeout}s (log: {log.name})")
                try:
                    answer = http.get(f"http://127.0.0.1:{port}/api/applications")
                    if answer.status_code == 200 and "single-cartridge-app" in answer.text:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-fresh", action="store_true", help="skip the fresh clone (minutes)")
    args = parser.parse_args()
    result: dict = {"benchmark": "startup"}
    with tempfile.TemporaryDirectory(prefix="stratos-startup-") as scratch:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATOS_")}
        if not args.no_fresh:
            clone = Path(scratch) / "clone"
            subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
            port = 9443  # `make run`'s own port
            env = {**base_env, "PIP_NO_CACHE_DIR": "1", "MAVEN_OPTS": f"-Dmaven.repo.local={Path(scratch) / 'm2'}"}
            fresh = time_to_api(clone, ["make", "run"], env, port)
            result["fresh_make_run_s"] = round(fresh, 1)
            print(f"fresh clone, `make run` to API ready: {fresh:.1f} s")
        state = Path(scratch) / "state"
        port = free_port()
        env = {**base_env, "STRATOS_API_PORT": str(port)}
        command = [str(ROOT / ".venv" / "bin" / "stratos"), "up", "--state-dir", str(state), "--api-port", str(port)]
        warm = time_to_api(Path(scratch), command, env, port)
        restart = time_to_api(Path(scratch), command, env, port)
        print(f"warm machine, first start to API ready: {warm:.1f} s")
        print(f"restart on the same state (baseline):  {restart:.1f} s")
        result.update(
            warm_first_start_s=round(warm, 1),
            restart_s=round(restart, 1),
            warm_ratio_to_restart=round(warm / restart, 2),
        )
        if "fresh_make_run_s" in result:
            result["fresh_ratio_to_restart"] = round(result["fresh_make_run_s"] / restart, 1)
    finish(result)


if __name__ == "__main__":
    main()
