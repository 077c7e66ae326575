"""A loop detector: the parts of an idle platform must not spin.

The parts run as `stratos up` runs them (the same `infra.platform.up.parts`, supervised child
processes) on the session broker, with the sample deployed and its members Active; then every
part's CPU time is measured over an idle window. The bound is far above what an idle part uses
(bench/idle.py: 0.02-0.14 of a core per part), so this is not a
timing test: a part that polls without waiting, or a timer that fires continuously, uses a
large share of a core even on a loaded machine, and fails it.
"""

from __future__ import annotations

import time

import psutil
import pytest
from rich.console import Console

from infra.broker import free_port
from infra.log.eventlog import read_events
from infra.platform.supervisor import Supervisor, child_env
from infra.platform.up import load_sample, parts
from schemas.events import MemberActivated
from tests.conftest import wait_until

IDLE_SECONDS = 20.0
BOUND = 0.35
"""Share of one core a part may use while idle: 7 times the aim for the whole platform
(0.05), 2.5 times what the busiest part (the API, two 20 ms readers) uses idle; a part that
spins takes most of a core, or its share of a loaded machine's two."""


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system
    except psutil.NoSuchProcess:
        return 0.0


@pytest.mark.integration
def test_no_part_of_an_idle_platform_spins(settings, tmp_path):
    port = free_port()
    env = child_env(
        settings.kafka_bootstrap,
        {
            "STRATOS_TOPIC_PREFIX": settings.topic_prefix,
            "STRATOS_PARTITIONS": str(settings.partitions),
            "STRATOS_STATE_DIR": str(tmp_path),
            "STRATOS_ADMIN_PASSWORD": "idle-test",
            # the mock IaaS's own free port: its default, the API's + 1, may be a client's port here
            "STRATOS_API_PORT": str(port),
            "STRATOS_MOCK_API_PORT": str(free_port()),
            "STRATOS_LOG_LEVEL": "WARNING",
        },
    )
    supervisor = Supervisor(env, tmp_path / "logs")
    for name, args in parts(port, demo=False).items():
        supervisor.add(name, *args)
    for child in supervisor.children:
        supervisor.start(child)
    try:
        load_sample(settings, Console(quiet=True))
        wait_until(
            lambda: sum(isinstance(e.payload, MemberActivated) for e in read_events(settings)) >= 2,
            timeout=120,
            interval=1.0,
            message="the sample's members Active",
        )
        processes = {child.name: psutil.Process(child.process.pid) for child in supervisor.children}
        before = {name: cpu_seconds(p) for name, p in processes.items()}
        started = time.monotonic()
        # measuring, not synchronising: the idle window itself
        time.sleep(IDLE_SECONDS)
        elapsed = time.monotonic() - started
        shares = {name: (cpu_seconds(p) - before[name]) / elapsed for name, p in processes.items()}
        exited = {c.name: c.process.returncode for c in supervisor.children if c.process.poll() is not None}
        assert not exited, f"parts exited while idle: {exited} (logs in {tmp_path / 'logs'})"
        spinning = {name: round(share, 3) for name, share in shares.items() if share > BOUND}
        assert not spinning, (
            f"parts busy while idle (share of a core over {IDLE_SECONDS:g} s, bound "
            f"{BOUND}): {spinning}; all: { {n: round(s, 3) for n, s in shares.items()} }"
        )
    finally:
        supervisor.stop()
