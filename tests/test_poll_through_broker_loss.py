"""A reader's poll outlives a broker's loss: kafka-python 3 raises a coordinator lookup's
connection reset out of `poll` (a node process died of it when one of three brokers was
killed). Pure: a stand-in consumer raises what kafka-python raised; the three-broker kill
itself is tests/test_broker_faults.py."""

from __future__ import annotations

import pytest
from kafka.errors import IllegalStateError, KafkaConnectionError

from infra.log import kafka as kafka_log


class Consumer:
    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)

    def poll(self, timeout_ms: int, **_options):
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(kafka_log, "POLL_RETRY_PAUSE_SECONDS", 0.0)


def test_a_connection_reset_is_an_empty_batch_and_the_next_poll_reads_on(caplog):
    consumer = Consumer(KafkaConnectionError("[Errno 104] Connection reset by peer"), {"tp": ["record"]})
    assert kafka_log.poll_through_broker_loss(consumer, 500) == {}
    assert "Connection reset by peer" in caplog.text
    assert kafka_log.poll_through_broker_loss(consumer, 500) == {"tp": ["record"]}


def test_an_error_that_retrying_cannot_mend_is_raised():
    consumer = Consumer(IllegalStateError("consumer closed"))
    with pytest.raises(IllegalStateError):
        kafka_log.poll_through_broker_loss(consumer, 500)
