"""How long a revoked token still works on another API process.

A node, one API in this process and a second `stratos api` process, on one broker. For each of
--users users: a token is issued by the second process, the user's password is changed through
the first (the write answers once the first process has applied it), and the second process is
polled every 5 ms until it refuses the token. The figure is the time from the write's answer to
the refusal; the baseline is the write itself (its round trip through the node and the first
read model). Prints p50/p99/max and the ratio to the write's p50; one JSON line.
Usage: python bench/revocation.py [--users 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx
from common import bench_settings, finish, percentile

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port

PASSWORD = "bench-admin-pw"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    with bench_settings() as base:
        from pydantic import SecretStr

        from tests.conftest import RunningNode

        settings = base.model_copy(update={"admin_password": SecretStr(PASSWORD), "password_hash_rounds": 4})
        node = RunningNode(settings)
        first = ApiServer(create_app(settings), port=free_port()).start()
        port = free_port()
        second = subprocess.Popen(
            [sys.executable, "-m", "infra.cli", "api", "--port", str(port)],
            env={
                **os.environ,
                "PYTHONPATH": os.getcwd(),
                "STRATOS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
                "STRATOS_ADMIN_PASSWORD": PASSWORD,
                "STRATOS_PASSWORD_HASH_ROUNDS": "4",
                "STRATOS_PLATFORM_SECRET": settings.platform_secret.get_secret_value()
                if settings.platform_secret
                else (settings.state_dir / "platform.secret").read_text().strip(),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        other = f"http://127.0.0.1:{port}/api"
        admin = httpx.Client(base_url=f"{first.url}/api", auth=("admin", PASSWORD), timeout=60)
        probe = httpx.Client(timeout=60)
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if probe.get(f"{other}/whoami", auth=("admin", PASSWORD)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the second API process did not start")
                time.sleep(0.2)
            lags, writes = [], []
            for n in range(args.users):
                user = {"userName": f"u{n}", "credential": "first-pw", "role": "user", "email": f"u{n}@example.org"}
                admin.post("/users", json=user).raise_for_status()
                while probe.get(f"{other}/users/u{n}", auth=("admin", PASSWORD)).status_code != 200:
                    time.sleep(0.005)  # the second process has read the new user
                issued = probe.post(f"{other}/token", json={"username": f"u{n}", "password": "first-pw"})
                issued.raise_for_status()
                bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
                while probe.get(f"{other}/whoami", headers=bearer).status_code != 200:
                    time.sleep(0.005)
                started = time.monotonic()
                admin.put("/users", json={**user, "credential": "second-pw"}).raise_for_status()
                answered = time.monotonic()
                while probe.get(f"{other}/whoami", headers=bearer).status_code != 401:
                    time.sleep(0.005)
                lags.append(time.monotonic() - answered)
                writes.append(answered - started)
        finally:
            admin.close()
            probe.close()
            second.terminate()
            second.wait(20)
            first.stop()
            node.stop()
    p50, p99, worst = (percentile(lags, q) * 1000 for q in (0.5, 0.99, 1.0))
    write_p50 = percentile(writes, 0.5) * 1000
    print(
        f"revoked on the second API process after the write's answer: p50 {p50:.0f} ms, "
        f"p99 {p99:.0f} ms, max {worst:.0f} ms ({len(lags)} users)"
    )
    print(f"the password change itself (REST write, node, first read model): p50 {write_p50:.0f} ms")
    print(f"ratio (revocation p50 / write p50): {p50 / write_p50:.2f}")
    finish(
        {
            "bench": "revocation",
            "users": len(lags),
            "lag_p50_ms": round(p50, 1),
            "lag_p99_ms": round(p99, 1),
            "lag_max_ms": round(worst, 1),
            "write_p50_ms": round(write_p50, 1),
            "ratio_lag_to_write": round(p50 / write_p50, 3),
        }
    )


if __name__ == "__main__":
    main()
