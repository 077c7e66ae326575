"""What the mock IaaS's own process costs the cloud controller: node create / list / destroy
through the libcloud `mock` driver over HTTP to the durable cloud (SQLite file, what `stratos
mock-iaas` serves), against the same calls on an in-memory cloud in this process (what the
controller did before the mock IaaS became its own part: the baseline of the same run).

    python bench/mock_iaas.py [NODES]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import finish  # noqa: E402

from infra.api.server import ApiServer  # noqa: E402
from infra.broker import free_port  # noqa: E402
from infra.cloud.iaas.mock_driver import MockEndpoint  # noqa: E402
from infra.cloud.mock.api import mock_iaas_app  # noqa: E402
from infra.cloud.mock.cloud import MockCloud  # noqa: E402

KEY = "bench-key"


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def over_http(nodes: int) -> dict[str, list[float]]:
    cloud = MockCloud(Path(tempfile.mkdtemp(prefix="bench-mock-")) / "cloud.sqlite3")
    server = ApiServer(mock_iaas_app(lambda: cloud, KEY), port=free_port()).start()
    try:
        driver = MockEndpoint(server.url, KEY).driver()
        created = [
            timed(lambda n=n: driver.create_node(name=f"m{n}", ex_metadata={"tenant": "t"})) for n in range(nodes)
        ]
        listed = [timed(driver.list_nodes) for _ in range(20)]
        all_nodes = driver.list_nodes()
        destroyed = [timed(lambda node=node: driver.destroy_node(node)) for node in all_nodes]
    finally:
        server.stop()
        cloud.close()
    return {"create": created, "list": listed, "destroy": destroyed}


def in_process(nodes: int) -> dict[str, list[float]]:
    cloud = MockCloud()
    created = [timed(lambda n=n: cloud.create(f"m{n}", {"tenant": "t"})) for n in range(nodes)]
    listed = [timed(lambda: [i.view() for i in cloud.all()]) for _ in range(20)]
    destroyed = [timed(lambda n=n: cloud.destroy(f"m{n}")) for n in range(nodes)]
    return {"create": created, "list": listed, "destroy": destroyed}


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    http, local = over_http(nodes), in_process(nodes)
    result = {"bench": "mock_iaas", "nodes": nodes}
    for call in ("create", "list", "destroy"):
        ours, base = statistics.median(http[call]), statistics.median(local[call])
        print(
            f"{call:>8}: {ours:7.2f} ms median over HTTP to the durable cloud vs {base:6.3f} ms in process "
            f"(x{ours / base:.0f}; p95 {sorted(http[call])[int(len(http[call]) * 0.95) - 1]:.2f} ms)"
        )
        result[f"{call}_ms_http"] = round(ours, 3)
        result[f"{call}_ms_in_process"] = round(base, 4)
        result[f"{call}_ratio"] = round(ours / base, 1)
    print(f"a list of {nodes} nodes is what the reconciler asks every STRATOS_CLOUD_RECONCILE_SECONDS")
    finish(result)


if __name__ == "__main__":
    main()
