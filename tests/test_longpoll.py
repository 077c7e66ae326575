"""The embedded broker's long-poll gateway: a reader waiting long still sees each record as it is
written (plain, transactional, from kafka-python and aiokafka), requests are read correctly at
every header shape and produce version, frames are relayed exactly however they are cut, a bulk
read (pipelined, answers of megabytes) arrives as it does from Tansu itself, and a client sending
garbage loses only its own connection."""
from __future__ import annotations

import asyncio
import contextlib
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
from infra.longpoll import (ANY_TOPIC, BEHIND, DATA, DROP, EMPTY, END, KEEP, RELAY, WRITE, FrameRelay, acknowledged,
                            fetch_answer_state, fetch_wait_offset, header_end, produce_acks, read_produce)

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


topic_names = st.text(alphabet="abcxyz.-_0123", max_size=30)
produce_topics = st.lists(st.tuples(topic_names, st.lists(st.tuples(
    st.integers(0, 2**31 - 1), st.one_of(st.none(), st.binary(max_size=300))), max_size=4)), max_size=4)


def _kafka_python_produce(version, client_id, transactional_id, acks, topics) -> bytes:
    from kafka.protocol.producer import ProduceRequest

    topic, partition = ProduceRequest.TopicProduceData, ProduceRequest.TopicProduceData.PartitionProduceData
    request = ProduceRequest(transactional_id=transactional_id if version >= 3 else None, acks=acks, timeout_ms=1000,
                             topic_data=[topic(name=name, partition_data=[partition(index=index, records=records)
                                                                          for index, records in parts])
                                         for name, parts in topics])
    request.with_header(correlation_id=7, client_id=client_id)
    return request.encode(version=version, header=True)


def _aiokafka_produce(version, client_id, transactional_id, acks, topics) -> bytes:
    from aiokafka.protocol import produce

    struct_class = getattr(produce, f"ProduceRequest_v{version}")
    fields = (acks, 1000, [(name, [(index, records) for index, records in parts]) for name, parts in topics])
    body = struct_class(transactional_id, *fields) if version >= 3 else struct_class(*fields)
    return body.build_request_header(correlation_id=7, client_id=client_id).encode() + body.encode()


PRODUCE_ENCODINGS = [(_kafka_python_produce, v) for v in range(14)] + [(_aiokafka_produce, v) for v in range(8)]
"""Every version kafka-python can send (Tansu takes 0-11) and every one aiokafka sends."""


@given(st.text(alphabet="abcxyz-.0123", max_size=40), st.one_of(st.none(), st.text(max_size=30)),
       st.sampled_from([0, 1, -1]), produce_topics)
def test_a_produce_request_is_read_as_the_full_decode_reads_it(client_id, transactional_id, acks, topics):
    """kafka-python's and aiokafka's produce requests, every version they send: the transactional
    id, acks and topics read past the records equal what decoding everything gives (topic ids,
    from v13, count as every topic), and `acks=0` is rewritten to `acks=1` and nothing else."""
    from kafka.protocol.producer import ProduceRequest

    for encode, version in PRODUCE_ENCODINGS:
        request = encode(version, client_id, transactional_id, acks, topics)
        decoded = ProduceRequest.decode(request, version=version, header=True)
        assert read_produce(request, version) == (decoded.transactional_id if version >= 3 else None,
                                                  {topic.name or ANY_TOPIC for topic in decoded.topic_data})
        assert produce_acks(request, version) == decoded.acks == acks
        rewritten = ProduceRequest.decode(acknowledged(request, version), version=version, header=True)
        assert rewritten.acks == 1
        assert rewritten.to_dict() | {"acks": acks} == decoded.to_dict()


def test_a_produce_request_that_does_not_add_up_is_refused():
    request = _kafka_python_produce(9, "c", None, 1, [("topic", [(0, b"records")])])
    for broken in (request[:-3], request + b"\x00", request[:-12]):
        with pytest.raises((ValueError, IndexError, struct.error, UnicodeDecodeError)):
            read_produce(broken, 9)


@given(st.lists(st.tuples(st.binary(max_size=200), st.sampled_from([RELAY, DROP, KEEP])), max_size=12), st.data())
def test_frames_are_relayed_exactly_however_the_stream_is_cut(frames, data):
    """Any cutting of a stream of frames into chunks: the bytes written are exactly the relayed
    frames, length prefixes included, each frame's end is reported after its bytes are written
    and before the next frame's, and kept frames are handed on whole."""
    stream = b"".join(struct.pack(">i", len(body)) + body for body, _ in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)])]
    modes = iter([mode for _, mode in frames])
    sizes, written, ends = [], bytearray(), []

    def decide(size):
        sizes.append(size)
        return next(modes)

    relay = FrameRelay()
    for chunk in chunks:
        for kind, value in relay.feed(chunk, decide):
            if kind == WRITE:
                written += value
            else:
                assert kind == END
                ends.append((bytes(written), value))
    expected, expected_ends = b"", []
    for body, mode in frames:
        frame = struct.pack(">i", len(body)) + body
        expected += frame if mode == RELAY else b""
        expected_ends.append((expected, frame if mode == KEEP else None))
    assert bytes(written) == expected
    assert ends == expected_ends
    assert sizes == [len(body) for body, _ in frames]


def _fetch(correlation_id: int, version: int, topic: str, offsets: dict[int, int], wait_ms: int,
           partition_bytes: int) -> bytes:
    from kafka.protocol.consumer.fetch import FetchRequest

    fetch_topic = FetchRequest.FetchTopic
    request = FetchRequest(replica_id=-1, max_wait_ms=wait_ms, min_bytes=1, max_bytes=64 << 20, isolation_level=0,
                           topics=[fetch_topic(topic=topic, partitions=[fetch_topic.FetchPartition(
                               partition=p, fetch_offset=o, partition_max_bytes=partition_bytes)
                               for p, o in offsets.items()])])
    request.with_header(correlation_id=correlation_id, client_id="pipelined")
    return request.encode(version=version, header=True, framed=True)


def _api_versions(correlation_id: int) -> bytes:
    from kafka.protocol.metadata import ApiVersionsRequest

    request = ApiVersionsRequest(client_software_name="test", client_software_version="1")
    request.with_header(correlation_id=correlation_id, client_id="pipelined")
    return request.encode(version=3, header=True, framed=True)


def _pipelined(port: int, requests: list[bytes], answers: int) -> list[bytes]:
    """Send every request at once on one connection; the first `answers` frames it gets back."""
    frames, stream, pos = [], bytearray(), 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"".join(requests))
        while len(frames) < answers:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(frames)} answers"
            stream += chunk
            while len(stream) - pos >= 4 and len(stream) - pos - 4 >= struct.unpack_from(">i", stream, pos)[0]:
                size = struct.unpack_from(">i", stream, pos)[0]
                frames.append(bytes(stream[pos + 4:pos + 4 + size]))
                pos += 4 + size
    return frames


BULK_PARTITIONS, BULK_PER_PARTITION = 4, 3000


def _bulk_values(partition: int) -> list[bytes]:
    return [b"%d:%06d:" % (partition, n) + bytes([65 + n % 26]) * 1000 for n in range(BULK_PER_PARTITION)]


def _write_bulk(broker) -> str:
    topic = _topic(broker, BULK_PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, batch_size=256 * 1024)
    for partition in range(BULK_PARTITIONS):
        for n, value in enumerate(_bulk_values(partition)):
            producer.send(topic, key=b"k%d" % n, value=value, partition=partition)
    producer.flush(60)
    producer.close()
    return topic


@pytest.fixture(scope="module")
def bulk_topic(gateway_broker):
    """12 MB on 4 partitions of the gateway's Tansu."""
    return _write_bulk(gateway_broker)


@pytest.mark.integration
def test_pipelined_requests_get_the_answers_tansu_itself_gives(gateway_broker, bulk_topic):
    """One connection, every request sent at once: fetches of megabytes (flexible and not, with
    short waits and a long one) and an ApiVersions: through the gateway, the very bytes Tansu
    answers when asked directly, in order."""
    every = {p: 0 for p in range(BULK_PARTITIONS)}
    requests = [_api_versions(1),
                _fetch(2, 4, bulk_topic, every, 5, 4 << 20),
                _fetch(3, 12, bulk_topic, {p: 1000 for p in every}, 50, 4 << 20),
                _fetch(4, 4, bulk_topic, {1: 2000}, LONG_WAIT_MS, 40_000),  # held, answered at once: it has records
                _fetch(5, 11, bulk_topic, {3: 500}, LONG_WAIT_MS, 1 << 20),  # held, relayed in chunks
                _fetch(6, 12, bulk_topic, {p: 2500 for p in every}, 20, 4 << 20)]
    direct = _pipelined(gateway_broker.tansu_port, requests, len(requests))
    relayed = _pipelined(gateway_broker.port, requests, len(requests))
    assert [struct.unpack_from(">i", answer)[0] for answer in relayed] == [1, 2, 3, 4, 5, 6]
    assert sum(map(len, relayed)) > 10 << 20  # answers of megabytes
    assert relayed == direct


@pytest.mark.integration
def test_a_request_sent_after_a_waiting_fetch_is_answered_after_it(gateway_broker):
    topic = _topic(gateway_broker)
    host, port = gateway_broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(_fetch(1, 4, topic, {0: 0}, LONG_WAIT_MS, 1 << 20) + _api_versions(2))
        producer = KafkaProducer(bootstrap_servers=gateway_broker.bootstrap)
        producer.send(topic, b"wakes-the-fetch", partition=0).get(10)
        producer.close()
        stream = b""
        while len(stream) < 8 or b"wakes-the-fetch" not in stream or len(_frames(stream)) < 2:
            chunk = sock.recv(1 << 16)
            assert chunk
            stream += chunk
    fetch_answer, versions_answer = _frames(stream)
    assert struct.unpack_from(">i", fetch_answer)[0] == 1 and b"wakes-the-fetch" in fetch_answer
    assert struct.unpack_from(">i", versions_answer)[0] == 2


def _frames(stream: bytes) -> list[bytes]:
    frames, pos = [], 0
    while len(stream) - pos >= 4 and len(stream) - pos - 4 >= struct.unpack_from(">i", stream, pos)[0]:
        size = struct.unpack_from(">i", stream, pos)[0]
        frames.append(stream[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames


def _read_all_kafka_python(broker, topic: str) -> list[tuple]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_bytes=64 << 20,
                             max_partition_fetch_bytes=16 << 20, max_poll_records=100_000)
    tps = [TopicPartition(topic, p) for p in range(BULK_PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records: list[tuple] = []
    try:
        while len(records) < BULK_PARTITIONS * BULK_PER_PARTITION:
            polled = consumer.poll(timeout_ms=POLL_MS)
            assert polled, f"nothing more after {len(records)} records"
            records += [(r.partition, r.offset, r.key, r.value) for rs in polled.values() for r in rs]
    finally:
        consumer.close()
    return sorted(records)


async def _read_all_aiokafka(broker, topic: str) -> list[tuple]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_bytes=64 << 20,
                                max_partition_fetch_bytes=16 << 20)
    await consumer.start()
    tps = [AioTopicPartition(topic, p) for p in range(BULK_PARTITIONS)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    records: list[tuple] = []
    try:
        while len(records) < BULK_PARTITIONS * BULK_PER_PARTITION:
            batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=100_000)
            assert batch, f"nothing more after {len(records)} records"
            records += [(r.partition, r.offset, r.key, r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return sorted(records)


@pytest.mark.integration
def test_a_bulk_read_through_the_gateway_gets_what_a_bare_tansu_gives(gateway_broker, bulk_topic):
    """The same 12 MB on a bare Tansu and behind the gateway, read whole by kafka-python and by
    aiokafka at their default fetch waits (fetches the gateway holds, answered in megabytes)."""
    expected = sorted((p, n, b"k%d" % n, value) for p in range(BULK_PARTITIONS)
                      for n, value in enumerate(_bulk_values(p)))
    with EmbeddedBroker(long_poll=False) as bare:
        bare_topic = _write_bulk(bare)
        assert _read_all_kafka_python(bare, bare_topic) == expected
    assert _read_all_kafka_python(gateway_broker, bulk_topic) == expected
    assert asyncio.run(_read_all_aiokafka(gateway_broker, bulk_topic)) == expected


class _Relay:
    """A relay in front of Tansu that answers as a broker misbehaving now and then would;
    `answer` forwards a request (`ask`) or makes its answer up."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port

    async def answer(self, request: bytes, ask) -> bytes:
        return await ask(request)

    async def connection(self, client_reader, client_writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def ask(request: bytes) -> bytes:
            upstream_writer.write(struct.pack(">i", len(request)) + request)
            return await _read_frame(upstream_reader)

        try:
            while True:
                answer = await self.answer(await _read_frame(client_reader), ask)
                client_writer.write(struct.pack(">i", len(answer)) + answer)
                await client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            client_writer.close()
            upstream_writer.close()


class _StaleAfterWrites(_Relay):
    """Like Tansu now and then on a loaded machine: the first fetch asked after each produce gets
    the empty answer Tansu gave before (the record is stored, the fetch does not show it yet)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.stale: bytes | None = None
        """The first (empty) fetch answer, without its correlation id."""
        self.holding = asyncio.Event()
        """Set once Tansu has answered the first fetch: the gateway now holds it."""
        self.lagging = False
        self.stale_answers = 0

    async def answer(self, request: bytes, ask) -> bytes:
        api_key = struct.unpack_from(">h", request)[0]
        if api_key == 1 and self.lagging and self.stale is not None:
            self.lagging, self.stale_answers = False, self.stale_answers + 1
            return request[4:8] + self.stale
        answer = await ask(request)
        if api_key == 1 and self.stale is None:
            self.stale = answer[4:]
            self.holding.set()
        self.lagging = self.lagging or api_key == 0
        return answer


class _EmptyOnce(_Relay):
    """Like Tansu when its short wait runs out before its read: the first fetch answer that has
    records comes without them (their high watermark kept)."""

    def __init__(self, upstream_port: int, topic: str) -> None:
        super().__init__(upstream_port)
        self.topic = topic
        self.emptied = 0

    async def answer(self, request: bytes, ask) -> bytes:
        from kafka.protocol.consumer.fetch import FetchResponse

        api_key, version = struct.unpack_from(">hh", request)
        answer = await ask(request)
        if api_key != 1 or self.emptied:
            return answer
        decoded = FetchResponse.decode(answer, version=version, header=True)
        found = [(p.partition_index, p.high_watermark, p.last_stable_offset, False)
                 for t in decoded.responses for p in t.partitions if p.records]
        if not found:
            return answer
        self.emptied += 1
        return request[4:8] + _fetch_answer(version, found, self.topic)[4:]


@contextlib.asynccontextmanager
async def _gateway_in_front_of(relay: _Relay):
    """An in-process gateway whose upstream is `relay`; yields the gateway's port."""
    from infra.longpoll import LongPollGateway

    upstream = await asyncio.start_server(relay.connection, "127.0.0.1", 0)
    gateway = LongPollGateway(upstream.sockets[0].getsockname()[1])
    front = await asyncio.get_running_loop().create_server(gateway.connection, "127.0.0.1", 0)
    try:
        yield front.sockets[0].getsockname()[1]
    finally:
        front.close()
        upstream.close()


async def _read_frame(reader) -> bytes:
    return await reader.readexactly(struct.unpack(">i", await reader.readexactly(4))[0])


def _produce_one(correlation_id: int, topic: str, value: bytes) -> bytes:
    from kafka.protocol.producer import ProduceRequest
    from kafka.record.memory_records import MemoryRecordsBuilder

    batch = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 16)
    batch.append(timestamp=None, key=None, value=value)
    batch.close()
    topic_data, partition_data = ProduceRequest.TopicProduceData, ProduceRequest.TopicProduceData.PartitionProduceData
    request = ProduceRequest(transactional_id=None, acks=1, timeout_ms=10_000, topic_data=[
        topic_data(name=topic, partition_data=[partition_data(index=0, records=batch.buffer())])])
    request.with_header(correlation_id=correlation_id, client_id="stale-test")
    return request.encode(version=7, header=True, framed=True)


@pytest.mark.integration
def test_a_fetch_answered_empty_just_after_a_write_is_asked_again(gateway_broker):
    """The broker answers the woken fetch as if the record were not there yet: the gateway asks
    again a moment later and the reader gets the record within 15 s, not at the end of its 20 s
    wait (the 4.8 s definition add seen once after an idle minute)."""
    topic = _topic(gateway_broker)

    async def scenario() -> tuple[bytes, int]:
        stale = _StaleAfterWrites(gateway_broker.tansu_port)
        async with _gateway_in_front_of(stale) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_fetch(1, 4, topic, {0: 0}, 20_000, 1 << 20))
            await writer.drain()
            await asyncio.wait_for(stale.holding.wait(), 15)  # Tansu answered it empty: it is held
            producer_reader, producer_writer = await asyncio.open_connection("127.0.0.1", port)
            producer_writer.write(_produce_one(2, topic, b"written"))
            await _read_frame(producer_reader)
            answer = await asyncio.wait_for(_read_frame(reader), 15)
            for closing in (writer, producer_writer):
                closing.close()
        return answer, stale.stale_answers

    answer, stale_answers = asyncio.run(scenario())
    assert stale_answers == 1  # the woken fetch was answered empty once
    assert struct.unpack_from(">i", answer)[0] == 1 and b"written" in answer


def _fetch_answer(version: int, partitions: list[tuple[int, int, int, bool]], name: str = "t") -> bytes:
    """A fetch answer on topic `name`: (partition, high watermark, last stable offset, records?)."""
    from kafka.protocol.consumer.fetch import FetchResponse

    topic, partition = FetchResponse.FetchableTopicResponse, FetchResponse.FetchableTopicResponse.PartitionData
    answer = FetchResponse(throttle_time_ms=0, error_code=0, session_id=0, responses=[topic(topic=name, partitions=[
        partition(partition_index=index, error_code=0, high_watermark=end, last_stable_offset=stable,
                  log_start_offset=0, aborted_transactions=None, preferred_read_replica=-1,
                  records=b"r" * 70 if records else None)
        for index, end, stable, records in partitions])])
    return struct.pack(">i", 3) + (b"\x00" if version >= 12 else b"") + answer.encode(version=version, header=False)


@given(st.sampled_from([4, 7, 11, 12]), st.booleans(), st.dictionaries(
    st.integers(0, 7), st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100), st.booleans()),
    min_size=1, max_size=5))
def test_a_held_fetch_answer_is_data_empty_or_behind(version, committed, partitions):
    """Records for the client; no records with every asked partition at its end (its last stable
    offset for a committed reader): held until a write; no records though a partition has more
    past the asked offset: asked again at once (Tansu's short wait ran out before its read)."""
    answer = _fetch_answer(version, [(index, end, stable, records)
                                     for index, (_asked, end, stable, records) in partitions.items()])
    positions = {("t", index): asked for index, (asked, *_rest) in partitions.items()}
    ends = {index: stable if committed and version >= 4 else end
            for index, (_asked, end, stable, _records) in partitions.items()}
    if any(records for *_rest, records in partitions.values()):
        expected = DATA
    elif any(ends[index] > asked for index, (asked, *_rest) in partitions.items()):
        expected = BEHIND
    else:
        expected = EMPTY
    assert fetch_answer_state(answer, version, positions, committed) == expected


@pytest.mark.integration
def test_a_fetch_answered_empty_though_records_lie_past_it_is_asked_again(gateway_broker):
    """Records are there, the broker's short fetch came back without them: the gateway asks
    again at once (with a longer wait for the broker's read), not when the client's 20 s wait
    runs out (a backlog read through the gateway ran at a twelfth of a bare Tansu's speed)."""
    topic = _topic(gateway_broker)
    producer = KafkaProducer(bootstrap_servers=gateway_broker.bootstrap)
    for n in range(3):
        producer.send(topic, b"backlog-%d" % n, partition=0)
    producer.flush(10)
    producer.close()

    async def scenario() -> tuple[bytes, int]:
        relay = _EmptyOnce(gateway_broker.tansu_port, topic)
        async with _gateway_in_front_of(relay) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_fetch(1, 11, topic, {0: 0}, 20_000, 1 << 20))
            await writer.drain()
            answer = await asyncio.wait_for(_read_frame(reader), 15)
            writer.close()
        return answer, relay.emptied

    answer, emptied = asyncio.run(scenario())
    assert emptied == 1
    assert struct.unpack_from(">i", answer)[0] == 1 and b"backlog-2" in answer
