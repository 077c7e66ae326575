"""The embedded broker's long-poll gateway: fetches that wait for data and return on its arrival.

Apache Kafka holds an empty fetch until data arrives or `fetch_max_wait_ms` passes, so a reader
can wait seconds at no cost and still see a record the moment it is written. Tansu holds an empty
fetch for its whole wait even when a record arrives, which forces a choice between an idle
platform and a fast command path. This gateway gives the embedded broker Kafka's behaviour back:
every client connects to it (it is the advertised address) and it relays each connection to
Tansu byte for byte, except that

- a fetch is sent on with a wait of 0; an empty answer is held until a produce or a transaction
  end passes through the gateway (on any connection) or the client's own wait runs out, and the
  fetch is then asked again;
- after a produce or a transaction end is answered, the fetches held on its topics are woken
  (a produce without acks is asked with `acks=1`, so that it is stored before its readers wake).

Requests on one connection are answered in order, one at a time, as Kafka brokers do. A fetch is
woken only by writes to one of its topics (a transaction's topics when it ends), so a busy topic
does not make every idle reader fetch again.
Run as `python -m infra.longpoll LISTEN_PORT UPSTREAM_PORT` by `infra.broker.EmbeddedBroker`.
"""
from __future__ import annotations

import asyncio
import struct
import sys

from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.producer import EndTxnRequest, ProduceRequest

HOST = "127.0.0.1"
PRODUCE, FETCH, END_TXN = 0, 1, 26
FIRST_FLEXIBLE_FETCH = 12
FETCH_WITHOUT_REPLICA_ID = 15
"""From Fetch v15 the replica id moved into tagged fields: the wait is the body's first field."""
FIRST_TRANSACTIONAL_PRODUCE, FIRST_FLEXIBLE_PRODUCE = 3, 9
TANSU_SHORTEST_WAIT_MS = 1
"""Tansu answers a fetch with a wait of 0 before reading any partition: 1 ms is its shortest read."""
LONG_WAIT_MS = 100
LARGE_ANSWER = 64 * 1024
"""A fetch answer this big carries records: it is relayed without decoding."""


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def header_end(request: bytes, flexible: bool) -> int:
    """Where a request's body starts: after key, version, correlation id, client id (and the
    tagged fields of a flexible header)."""
    (client_id_len,) = struct.unpack_from(">h", request, 8)
    pos = 10 + max(client_id_len, 0)
    if flexible:
        count, pos = _uvarint(request, pos)
        for _ in range(count):
            _, pos = _uvarint(request, pos)
            size, pos = _uvarint(request, pos)
            pos += size
    return pos


def produce_acks_offset(request: bytes, version: int) -> int:
    """Where a produce request's `acks` field is."""
    pos = header_end(request, version >= FIRST_FLEXIBLE_PRODUCE)
    if version >= FIRST_FLEXIBLE_PRODUCE:
        length, pos = _uvarint(request, pos)
        pos += max(length - 1, 0)
    elif version >= FIRST_TRANSACTIONAL_PRODUCE:
        (length,) = struct.unpack_from(">h", request, pos)
        pos += 2 + max(length, 0)
    return pos


def produce_acks(request: bytes, version: int) -> int:
    return struct.unpack_from(">h", request, produce_acks_offset(request, version))[0]


def acknowledged(request: bytes, version: int) -> bytes:
    """A produce without acks asked with `acks=1`: its readers are woken once it is stored (the
    answer is then dropped; the client expects none)."""
    offset = produce_acks_offset(request, version)
    return request[:offset] + struct.pack(">h", 1) + request[offset + 2:]


def fetch_wait_offset(request: bytes, version: int) -> int:
    pos = header_end(request, version >= FIRST_FLEXIBLE_FETCH)
    return pos if version >= FETCH_WITHOUT_REPLICA_ID else pos + 4


def is_empty_fetch_answer(answer: bytes, version: int) -> bool:
    """True when a fetch answer carries no records and no error: the client would only ask again."""
    if len(answer) > LARGE_ANSWER:
        return False
    decoded = FetchResponse.decode(answer, version=version, header=True)
    if decoded.error_code:
        return False
    for topic in decoded.responses:
        for partition in topic.partitions:
            if partition.error_code or partition.records:
                return False
    return True


ANY_TOPIC = ""
"""What a produce or fetch is taken to touch when its topics cannot be read (topic ids, v13+)."""


def produced_topics(request: bytes, version: int) -> tuple[str | None, set[str]]:
    """The transactional id and the topics a produce request writes to."""
    try:
        decoded = ProduceRequest.decode(request, version=version, header=True)
        return decoded.transactional_id, {topic.name or ANY_TOPIC for topic in decoded.topic_data}
    except Exception:  # unreadable here is the broker's to judge: wake every reader
        return None, {ANY_TOPIC}


def fetched_topics(request: bytes, version: int) -> set[str]:
    try:
        decoded = FetchRequest.decode(request, version=version, header=True)
        return {topic.topic or ANY_TOPIC for topic in decoded.topics}
    except Exception:
        return {ANY_TOPIC}


def ended_transaction(request: bytes, version: int) -> str | None:
    try:
        return EndTxnRequest.decode(request, version=version, header=True).transactional_id
    except Exception:
        return None


class LongPollGateway:
    """Relays clients to the upstream broker and holds empty fetches until data arrives on one of
    their topics (a produce, or the end of a transaction that wrote to it)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._arrival = asyncio.Condition()
        self._all_writes = 0
        self._writes: dict[str, int] = {}
        """Topic -> how many writes to it passed; a held fetch wakes when one of its counts moves."""
        self._open_transactions: dict[str, set[str]] = {}
        """Transactional id -> topics it wrote to: their readers see the data at its end."""

    def _count(self, topics: set[str]) -> tuple[int, ...]:
        """What a fetch on `topics` has seen: the writes to them and to unknown topics (or every
        write, for a fetch whose topics are unknown)."""
        if ANY_TOPIC in topics:
            return (self._all_writes,)
        return tuple(self._writes.get(topic, 0) for topic in sorted(topics)) + (self._writes.get(ANY_TOPIC, 0),)

    async def _written(self, topics: set[str]) -> None:
        async with self._arrival:
            self._all_writes += 1
            for topic in topics:
                self._writes[topic] = self._writes.get(topic, 0) + 1
            self._arrival.notify_all()

    async def _after(self, api_key: int, request: bytes, version: int) -> None:
        """Record what a produce or a transaction end made readable, and wake its readers."""
        if api_key == PRODUCE:
            transaction, topics = produced_topics(request, version)
            if transaction:
                self._open_transactions.setdefault(transaction, set()).update(topics)
            await self._written(topics)
        elif api_key == END_TXN:
            transaction = ended_transaction(request, version)
            topics = self._open_transactions.pop(transaction, {ANY_TOPIC}) if transaction else {ANY_TOPIC}
            await self._written(topics)

    async def _until_written(self, topics: set[str], seen: tuple[int, ...], timeout: float) -> None:
        async with self._arrival:
            try:
                await asyncio.wait_for(self._arrival.wait_for(lambda: self._count(topics) != seen), timeout)
            except TimeoutError:
                pass

    async def relay(self, client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            client_writer.close()
            return
        try:
            while True:
                request = await _read_frame(client_reader)
                api_key, version = struct.unpack_from(">hh", request, 0)
                if api_key == FETCH and version <= FetchResponse.max_version and _waits_long(request, version):
                    answer = await self._fetch(request, version, upstream_reader, upstream_writer)
                else:
                    silent = api_key == PRODUCE and produce_acks(request, version) == 0
                    answer = await _exchange(acknowledged(request, version) if silent else request,
                                             upstream_reader, upstream_writer)
                    await self._after(api_key, request, version)
                    if silent:
                        continue
                client_writer.write(struct.pack(">i", len(answer)))
                client_writer.write(answer)
                await client_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, struct.error, IndexError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def _fetch(self, request: bytes, version: int, reader, writer) -> bytes:
        offset = fetch_wait_offset(request, version)
        (wait_ms,) = struct.unpack_from(">i", request, offset)
        immediate = request[:offset] + struct.pack(">i", TANSU_SHORTEST_WAIT_MS) + request[offset + 4:]
        topics = fetched_topics(request, version)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_ms, 0) / 1000
        while True:
            seen = self._count(topics)
            answer = await _exchange(immediate, reader, writer)
            remaining = deadline - loop.time()
            if remaining <= 0 or not _is_empty(answer, version):
                return answer
            await self._until_written(topics, seen, remaining)


def _waits_long(request: bytes, version: int) -> bool:
    """A fetch that may wait at least LONG_WAIT_MS is held here; a shorter one (a bulk read that
    wants what is there now) goes to the broker as it is."""
    return struct.unpack_from(">i", request, fetch_wait_offset(request, version))[0] >= LONG_WAIT_MS


def _is_empty(answer: bytes, version: int) -> bool:
    try:
        return is_empty_fetch_answer(answer, version)
    except Exception:  # an answer this gateway cannot read is the client's to read
        return False


async def _read_frame(reader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _exchange(request: bytes, reader, writer) -> bytes:
    writer.write(struct.pack(">i", len(request)))
    writer.write(request)
    await writer.drain()
    return await _read_frame(reader)


async def serve(listen_port: int, upstream_port: int) -> None:
    gateway = LongPollGateway(upstream_port)
    server = await asyncio.start_server(gateway.relay, HOST, listen_port)
    async with server:
        await server.serve_forever()


def main() -> None:
    listen_port, upstream_port = (int(arg) for arg in sys.argv[1:3])
    try:
        asyncio.run(serve(listen_port, upstream_port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
