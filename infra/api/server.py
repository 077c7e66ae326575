"""Serve the API with uvicorn: in the foreground (`stratos api`) or on a thread (platform, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import uvicorn
from fastapi import FastAPI

TICKS_PER_SECOND = 10
"""uvicorn's main loop ticks every 100 ms and refreshes its Date header every tenth tick."""


KEEP_ALIVE_SECONDS = 75
"""How long an idle client connection is kept open. Longer than clients keep theirs (httpx 5 s,
browsers up to 60 s): at uvicorn's 5 s, equal to httpx's, the server closed an idle connection
just as a client sent its next request on it, which the client saw as "server disconnected
without sending a response" (a test's PUT to the mock IaaS, once in a suite run)."""


class QuietServer(uvicorn.Server):
    """uvicorn's Server, whose main loop wakes once a second instead of every 100 ms (an idle
    API or mock IaaS woke 10 times a second for nothing); `exit` ends it at once, from any thread.
    Idle connections are kept `KEEP_ALIVE_SECONDS`, so that clients close them first."""

    _wake: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, config: uvicorn.Config) -> None:
        config.timeout_keep_alive = max(config.timeout_keep_alive, KEEP_ALIVE_SECONDS)
        super().__init__(config)

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + TICKS_PER_SECOND) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            should_exit = await self.on_tick(counter)

    def exit(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        self.exit()


def serve(app, **config) -> None:
    """Serve `app` in the foreground until a signal (`stratos api`)."""
    QuietServer(uvicorn.Config(app, **config)).run()


class ApiServer:
    """uvicorn on a background thread; `start` returns once it accepts connections."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 9443, **config) -> None:
        """`config`: more uvicorn options, e.g. infra.auth.tls.tls_options(settings) for HTTPS."""
        self.server = QuietServer(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, **config)
        )
        self.url = f"{'https' if config.get('ssl_certfile') else 'http'}://{host}:{port}"
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self, timeout: float = 60.0) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.exit()
        self.thread.join(15)
