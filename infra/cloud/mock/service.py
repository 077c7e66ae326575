"""`stratos mock-iaas`: the mock IaaS as a cloud of its own, a supervised part of `stratos up`.

Its state (nodes, ids ever used, address cursors, health patterns, injected failures) is in
`<state dir>/mock-iaas/cloud.sqlite3`, so its nodes outlive any restart of the control plane,
and of itself. Its instances' agents live here too: simulated (they follow their member's
events and publish health from the patterns) or, in process mode, one `stratos agent` process
per node, started again for every node when the part starts (a rebooted host). It serves its
HTTP API on a loopback port (STRATOS_MOCK_API_PORT, default the API's port + 1), HTTPS with the
platform's certificate when STRATOS_API_TLS is set; callers hold the cloud's access key
(STRATOS_MOCK_IAAS_KEY, else `<state dir>/mock-iaas/access-key`, made owner-only on first use).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import uvicorn

from infra.api.server import QuietServer
from infra.auth.tls import tls_options, trusted_ca
from infra.cloud.iaas.mock_driver import MockEndpoint
from infra.cloud.mock.account import access_key, cloud_dir, mock_port
from infra.cloud.mock.api import mock_iaas_app
from infra.cloud.mock.cloud import MockCloud
from infra.settings import Settings

log = logging.getLogger(__name__)


class MockIaasService:
    """The cloud, its instances' agents and its HTTP API (on a thread; `run` blocks)."""

    def __init__(
        self,
        settings: Settings,
        cloud: MockCloud | None = None,
        port: int | None = None,
        patterns: Path | None = None,
        key: str | None = None,
    ) -> None:
        from infra.cloud.mock.processes import ProcessInstances
        from infra.cloud.mock.simulator import SimulatedAgents

        self.settings = settings
        self.cloud = cloud or MockCloud(cloud_dir(settings) / "cloud.sqlite3")
        if patterns:
            self.cloud.load_patterns(patterns)
        self.key = key or access_key(settings)
        self.port = port or mock_port(settings)
        if settings.mock_iaas_mode == "simulated":
            self.agents = SimulatedAgents(settings, self.cloud)
        else:
            self.agents = ProcessInstances(settings, self.cloud)  # type: ignore[assignment]
        tls = tls_options(settings)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        app = mock_iaas_app(lambda: self.cloud, self.key, settings.mock_iaas_mode)
        self.server = QuietServer(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=2,
                **tls,  # type: ignore[arg-type]
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="mock-iaas-api", daemon=True)

    @property
    def endpoint(self) -> MockEndpoint:
        ca = trusted_ca(self.settings) if self.settings.api_tls else None
        return MockEndpoint(self.url, self.key, str(ca) if ca else None)

    def start(self, timeout: float = 60.0) -> MockIaasService:
        self.agents.start()
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.agents.stop()
                raise RuntimeError(f"the mock IaaS did not start on {self.url} (port taken?)")
            time.sleep(0.02)
        log.info("mock IaaS on %s: %d node(s) kept from before", self.url, len(self.cloud.all()))
        return self

    def stop(self) -> None:
        self.server.exit()
        self.thread.join(15)
        self.agents.stop()
        self.cloud.close()
