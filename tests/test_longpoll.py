"""The embedded broker's long-poll gateway: a reader waiting long still sees each record as it is
written (plain, transactional, from kafka-python and aiokafka), requests are read correctly at
every header shape, and a client sending garbage loses only its own connection."""
from __future__ import annotations

import asyncio
import socket
import struct
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from hypothesis import given
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from infra.broker import EmbeddedBroker
from infra.longpoll import fetch_wait_offset, header_end, produce_acks

LONG_WAIT_MS = 30_000
"""Longer than each poll below: on a broker that holds an empty fetch for its whole wait, the
poll would end empty."""
POLL_MS = 15_000


def _header(api_key: int, version: int, client_id: str | None, tags: list[bytes] | None) -> bytes:
    client = b"\xff\xff" if client_id is None else struct.pack(">h", len(client_id)) + client_id.encode()
    head = struct.pack(">hhi", api_key, version, 7) + client
    if tags is not None:
        head += bytes([len(tags)]) + b"".join(bytes([n, len(tag)]) + tag for n, tag in enumerate(tags))
    return head


client_ids = st.one_of(st.none(), st.text(alphabet="abcxyz-.0123", max_size=40))
tag_lists = st.lists(st.binary(max_size=20), max_size=3)


@given(client_ids, tag_lists, st.integers(0, 18), st.integers(0, 2**31 - 1))
def test_the_fetch_wait_is_found_after_any_header(client_id, tags, version, wait):
    flexible = version >= 12
    body = (b"" if version >= 15 else struct.pack(">i", -1)) + struct.pack(">i", wait) + b"rest"
    request = _header(1, version, client_id, tags if flexible else None) + body
    assert struct.unpack_from(">i", request, fetch_wait_offset(request, version))[0] == wait


@given(client_ids, tag_lists, st.integers(0, 11), st.one_of(st.none(), st.text(max_size=30)),
       st.sampled_from([0, 1, -1]))
def test_produce_acks_are_read_at_every_version(client_id, tags, version, transactional_id, acks):
    flexible = version >= 9
    body = b""
    if version >= 9:
        body += bytes([0 if transactional_id is None else len(transactional_id.encode()) + 1])
        body += (transactional_id or "").encode()
    elif version >= 3:
        body += b"\xff\xff" if transactional_id is None else (
            struct.pack(">h", len(transactional_id.encode())) + transactional_id.encode())
    body += struct.pack(">hi", acks, 1000)
    request = _header(0, version, client_id, tags if flexible else None) + body
    assert header_end(request, flexible) == len(request) - len(body)
    assert produce_acks(request, version) == acks


@pytest.fixture(scope="module")
def gateway_broker():
    with EmbeddedBroker(long_poll=True) as embedded:
        yield embedded


def _topic(broker, partitions: int = 1) -> str:
    name = f"lp-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.close()
    return name


def _waiting_reader(broker, topic: str, **options) -> KafkaConsumer:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=LONG_WAIT_MS,
                             request_timeout_ms=LONG_WAIT_MS + 10_000, **options)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_end(tp)
    consumer.position(tp)
    assert consumer.poll(timeout_ms=200) == {}  # a fetch is now held at the broker
    return consumer


def _poll_values(consumer: KafkaConsumer) -> list[bytes]:
    return [record.value for records in consumer.poll(timeout_ms=POLL_MS).values() for record in records]


@pytest.mark.integration
def test_a_long_waiting_reader_gets_each_record_as_it_is_written(gateway_broker):
    topic = _topic(gateway_broker)
    consumer = _waiting_reader(gateway_broker, topic)
    producer = KafkaProducer(bootstrap_servers=gateway_broker.bootstrap)
    try:
        for n in range(3):
            producer.send(topic, f"record-{n}".encode()).get(10)
            assert _poll_values(consumer) == [f"record-{n}".encode()]
    finally:
        producer.close()
        consumer.close()


@pytest.mark.integration
def test_a_transaction_is_seen_by_a_waiting_committed_reader_when_it_ends(gateway_broker):
    topic = _topic(gateway_broker)
    consumer = _waiting_reader(gateway_broker, topic, isolation_level="read_committed")
    producer = KafkaProducer(bootstrap_servers=gateway_broker.bootstrap, transactional_id=f"lp-{uuid.uuid4()}")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"in-transaction")
        producer.commit_transaction()
        assert _poll_values(consumer) == [b"in-transaction"]
    finally:
        producer.close()
        consumer.close()


@pytest.mark.integration
def test_records_written_without_acks_wake_readers_too(gateway_broker):
    topic = _topic(gateway_broker)
    consumer = _waiting_reader(gateway_broker, topic)
    producer = KafkaProducer(bootstrap_servers=gateway_broker.bootstrap, acks=0)
    try:
        producer.send(topic, b"fire-and-forget")
        producer.flush()
        assert _poll_values(consumer) == [b"fire-and-forget"]
    finally:
        producer.close()
        consumer.close()


@pytest.mark.integration
def test_an_aiokafka_reader_waiting_long_gets_a_record_as_it_is_written(gateway_broker):
    topic = _topic(gateway_broker)

    async def read_one() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=gateway_broker.bootstrap, fetch_max_wait_ms=LONG_WAIT_MS,
                                    request_timeout_ms=LONG_WAIT_MS + 10_000)
        await consumer.start()
        try:
            tp = AioTopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
            assert await consumer.getmany(timeout_ms=200) == {}
            producer = KafkaProducer(bootstrap_servers=gateway_broker.bootstrap)
            await asyncio.to_thread(lambda: producer.send(topic, b"for-aiokafka").get(10))
            producer.close()
            batch = await consumer.getmany(timeout_ms=POLL_MS)
            return [record.value for records in batch.values() for record in records]
        finally:
            await consumer.stop()

    assert asyncio.run(read_one()) == [b"for-aiokafka"]


@pytest.mark.integration
def test_garbage_costs_only_its_own_connection(gateway_broker):
    topic = _topic(gateway_broker)
    host, port = gateway_broker.bootstrap.split(":")
    for garbage in (b"\x00\x00\x00\x03ab", b"\x00\x00\x00\x02\xff", struct.pack(">i", 12) + b"\x00\x01" * 6):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(64) == b""  # closed, nothing answered
    producer = KafkaProducer(bootstrap_servers=gateway_broker.bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=gateway_broker.bootstrap, auto_offset_reset="earliest")
    try:
        producer.send(topic, b"still-served").get(10)
        consumer.assign([TopicPartition(topic, 0)])
        assert _poll_values(consumer) == [b"still-served"]
    finally:
        producer.close()
        consumer.close()
    assert gateway_broker.gateway.poll() is None
