"""Serve the API with uvicorn: in the foreground (`stratos api`) or on a thread (platform, tests)."""
from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI


class ApiServer:
    """uvicorn on a background thread; `start` returns once it accepts connections."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 9443, **config) -> None:
        """`config`: more uvicorn options, e.g. infra.tls.tls_options(settings) for HTTPS."""
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    access_log=False, **config))
        self.url = f"{'https' if config.get('ssl_certfile') else 'http'}://{host}:{port}"
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self, timeout: float = 60.0) -> "ApiServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
