"""Fixtures: one real embedded broker per test session; each test gets its own topic prefix."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from infra.broker import EmbeddedBroker
from infra.kafka import ensure_topics
from infra.settings import Settings


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as embedded:
        yield embedded


@pytest.fixture
def settings(broker) -> Settings:
    """Settings on the session broker with fresh topics, so tests never see each other's records."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    made = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix=prefix, partitions=4)
    ensure_topics(made)
    return made


def wait_until(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
