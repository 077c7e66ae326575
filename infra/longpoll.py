"""The embedded broker's long-poll gateway: fetches that wait for data and return on its arrival.

Apache Kafka holds an empty fetch until data arrives or `fetch_max_wait_ms` passes, so a reader
can wait seconds at no cost and still see a record the moment it is written. Tansu holds an empty
fetch for its whole wait even when a record arrives, which forces a choice between an idle
platform and a fast command path. This gateway gives the embedded broker Kafka's behaviour back:
every client connects to it (it is the advertised address) and it relays each connection to
Tansu byte for byte, except that

- a fetch that may wait (>= LONG_WAIT_MS) is sent on with Tansu's shortest wait; an empty answer
  is held until a produce or a transaction end passes through the gateway (on any connection)
  or the client's own wait runs out, and the fetch is then asked again;
- after a produce or a transaction end is answered, the fetches held on its topics are woken
  (a produce without acks is asked with `acks=1`, so that it is stored before its readers wake);
- Tansu's short fetch can come back without records that are there (its wait ran out before its
  read): an empty answer whose high watermark lies past the asked offset is asked again at once
  with a longer wait (BEHIND_WAIT_MS), and one just after a write a few times more
  (SETTLING_PAUSES) before it is held.

The relay costs a bulk read almost nothing: requests go on to Tansu as soon as they are whole
(pipelined, as the client sent them), and answers are relayed in chunks as they arrive, read
only for their 4-byte length, except a waiting fetch's small answer, which is read whole to see
whether it is empty. A produce request is read only for its transactional id, acks and topic
names: its record batches are skipped by their lengths, never decoded. Answers go back in
request order (Tansu answers a connection's requests in order, and requests that come after a
waiting fetch are sent on only once it is answered). A fetch is woken only by writes to one of
its topics (a transaction's topics when it ends), so a busy topic does not make every idle
reader fetch again.
Run as `python -m infra.longpoll LISTEN_PORT UPSTREAM_PORT` by `infra.broker.EmbeddedBroker`.
"""
from __future__ import annotations

import asyncio
import struct
import sys
from collections import deque
from collections.abc import Iterator

from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.producer import EndTxnRequest

HOST = "127.0.0.1"
PRODUCE, FETCH, END_TXN = 0, 1, 26
FIRST_FLEXIBLE_FETCH = 12
FETCH_WITHOUT_REPLICA_ID = 15
"""From Fetch v15 the replica id moved into tagged fields: the wait is the body's first field."""
FIRST_TRANSACTIONAL_PRODUCE, FIRST_FLEXIBLE_PRODUCE = 3, 9
FIRST_PRODUCE_BY_TOPIC_ID = 13
"""From Produce v13 topics are named by id: a write to one of them wakes every reader."""
TANSU_SHORTEST_WAIT_MS = 2
"""Tansu answers a fetch with a wait of 0 before reading any partition, and with 1 ms it cuts a
large answer short (2.6-4.9 of the 5.3 MB it gives at longer waits, measured): 2 ms is its
shortest full read. An empty fetch costs that wait; one with records is answered at once."""
LONG_WAIT_MS = 100
BEHIND_WAIT_MS = 100
"""The wait a held fetch is asked again with when Tansu answered it empty although records lay
past its offsets: Tansu answers as soon as it has read them, so only its read is waited for (a
backlog read through the gateway ran at a twelfth of a bare Tansu's speed, each fetch held to
its client's 500 ms wait)."""
SETTLING_PAUSES = (0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128)
"""After a write wakes a held fetch, Tansu may still answer it empty for a moment (seen once in
~500 writes on a loaded machine: a fetch asked 6 ms after the produce's answer came back empty,
and the record waited for the client's whole 5 s wait). So an empty answer after a write is asked
again after each of these pauses (~250 ms in all) before the fetch waits for the next write."""
LARGE_ANSWER = 64 * 1024
"""A fetch answer this big carries records: it is relayed without decoding."""
MAX_FETCH_VERSION = FetchResponse.max_version
"""A fetch of a later version passes unread: its answer could not be read here."""
QUEUED_LIMIT = 1 << 20
"""Bytes of requests queued behind a held fetch before the client's socket is no longer read."""


def _uvarint(data, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _skip_tags(data, pos: int) -> int:
    count, pos = _uvarint(data, pos)
    for _ in range(count):
        _, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
    return pos


def header_end(request, flexible: bool) -> int:
    """Where a request's body starts: after key, version, correlation id, client id (and the
    tagged fields of a flexible header)."""
    (client_id_len,) = struct.unpack_from(">h", request, 8)
    pos = 10 + max(client_id_len, 0)
    return _skip_tags(request, pos) if flexible else pos


def _length(request, pos: int, flexible: bool, fixed: str = ">i") -> tuple[int, int]:
    """A length (of a string, bytes or an array; -1 for null): in a flexible version a uvarint of
    length + 1, else a signed int of the `fixed` format."""
    if flexible:
        length, pos = _uvarint(request, pos)
        return length - 1, pos
    (length,) = struct.unpack_from(fixed, request, pos)
    return length, pos + struct.calcsize(fixed)


def _string(request, pos: int, flexible: bool) -> tuple[str | None, int]:
    """A (nullable) string at `pos`; an error when it runs past the request."""
    length, pos = _length(request, pos, flexible, ">h")
    if length < 0:
        return None, pos
    end = pos + length
    if end > len(request):
        raise ValueError("a string runs past the end of the request")
    return bytes(request[pos:end]).decode(), end


def produce_acks_offset(request, version: int) -> int:
    """Where a produce request's `acks` field is (after its transactional id, from v3)."""
    pos = header_end(request, version >= FIRST_FLEXIBLE_PRODUCE)
    if version >= FIRST_TRANSACTIONAL_PRODUCE:
        length, pos = _length(request, pos, version >= FIRST_FLEXIBLE_PRODUCE, ">h")
        pos += max(length, 0)
    return pos


def produce_acks(request, version: int) -> int:
    return struct.unpack_from(">h", request, produce_acks_offset(request, version))[0]


def acknowledged(request, version: int) -> bytes:
    """A produce without acks asked with `acks=1`: its readers are woken once it is stored (the
    answer is then dropped; the client expects none)."""
    offset = produce_acks_offset(request, version)
    return bytes(request[:offset]) + struct.pack(">h", 1) + bytes(request[offset + 2:])


def fetch_wait_offset(request, version: int) -> int:
    pos = header_end(request, version >= FIRST_FLEXIBLE_FETCH)
    return pos if version >= FETCH_WITHOUT_REPLICA_ID else pos + 4


DATA, EMPTY, BEHIND = "data", "empty", "behind"
"""A held fetch's answer: for the client; empty with nothing more to read (held until a write);
empty although a partition holds records past the asked offset (Tansu's short wait ran out before
it read them: asked again at once, with a longer wait)."""

Positions = dict[tuple, int]
"""(topic name or id, partition) -> the offset a fetch asks from."""


def fetch_positions(request, version: int) -> tuple[Positions, bool]:
    """The offsets a fetch asks from, and whether it reads committed records only."""
    decoded = FetchRequest.decode(request, version=version, header=True)
    positions = {(topic.topic or topic.topic_id, partition.partition): partition.fetch_offset
                 for topic in decoded.topics for partition in topic.partitions}
    return positions, bool(getattr(decoded, "isolation_level", 0))


def fetch_answer_state(answer, version: int, positions: Positions, committed: bool) -> str:
    """DATA when a fetch answer carries records or an error (the client's to read), EMPTY when
    it carries neither and every partition is read to its end, BEHIND when it carries neither
    though some partition's end (its last stable offset, for a committed reader) lies past the
    asked offset."""
    if len(answer) > LARGE_ANSWER:
        return DATA
    decoded = FetchResponse.decode(answer, version=version, header=True)
    if decoded.error_code:
        return DATA
    state = EMPTY
    for topic in decoded.responses:
        for partition in topic.partitions:
            if partition.error_code or partition.records:
                return DATA
            end = partition.high_watermark
            if committed and partition.last_stable_offset >= 0:
                end = partition.last_stable_offset
            asked = positions.get((topic.topic or topic.topic_id, partition.partition_index))
            if asked is not None and end > asked:
                state = BEHIND
    return state


ANY_TOPIC = ""
"""What a produce or fetch is taken to touch when its topics cannot be read (topic ids, v13+)."""


def read_produce(request, version: int) -> tuple[str | None, set[str]]:
    """The transactional id and the topics of a produce request, its records skipped by their
    lengths (never decoded); an error when the request does not read as one."""
    flexible = version >= FIRST_FLEXIBLE_PRODUCE
    pos = header_end(request, flexible)
    transaction = None
    if version >= FIRST_TRANSACTIONAL_PRODUCE:
        transaction, pos = _string(request, pos, flexible)
    pos += 6  # acks, timeout
    topics: set[str] = set()
    count, pos = _length(request, pos, flexible)
    for _ in range(max(count, 0)):
        if version >= FIRST_PRODUCE_BY_TOPIC_ID:
            name, pos = ANY_TOPIC, pos + 16
        else:
            name, pos = _string(request, pos, flexible)
        topics.add(name or ANY_TOPIC)
        partitions, pos = _length(request, pos, flexible)
        for _ in range(max(partitions, 0)):
            size, pos = _length(request, pos + 4, flexible)  # after the partition index: the records
            pos += max(size, 0)
            if flexible:
                pos = _skip_tags(request, pos)
        if flexible:
            pos = _skip_tags(request, pos)
    if flexible:
        pos = _skip_tags(request, pos)
    if pos != len(request):
        raise ValueError(f"a produce request of {len(request)} bytes read as {pos}")
    return transaction, topics


def produced_topics(request, version: int) -> tuple[str | None, set[str]]:
    """The transactional id and the topics a produce request writes to."""
    try:
        return read_produce(request, version)
    except Exception:  # unreadable here is the broker's to judge: wake every reader
        return None, {ANY_TOPIC}


def fetched_topics(request, version: int) -> tuple[set[str], Positions, bool]:
    """The topics a fetch reads (every topic when unreadable), its positions and isolation."""
    try:
        positions, committed = fetch_positions(request, version)
    except Exception:
        return {ANY_TOPIC}, {}, False
    return {topic if isinstance(topic, str) and topic else ANY_TOPIC for topic, _ in positions}, positions, committed


def ended_transaction(request, version: int) -> str | None:
    try:
        return EndTxnRequest.decode(request, version=version, header=True).transactional_id
    except Exception:
        return None


def waits_long(request, version: int) -> bool:
    """A fetch that may wait at least LONG_WAIT_MS is held here; a shorter one (a bulk read that
    wants what is there now) goes to the broker as it is."""
    return struct.unpack_from(">i", request, fetch_wait_offset(request, version))[0] >= LONG_WAIT_MS


def _answer_state(answer, held: "_HeldFetch") -> str:
    try:
        return fetch_answer_state(answer, held.version, held.positions, held.committed)
    except Exception:  # an answer this gateway cannot read is the client's to read
        return DATA


RELAY, DROP, KEEP = "relay", "drop", "keep"
"""What becomes of an answer: relayed to the client as it arrives, dropped (a produce without
acks), or kept whole to be read (a waiting fetch's small answer)."""
WRITE, END = "write", "end"


class FrameRelay:
    """Cuts a byte stream that arrives in arbitrary chunks into Kafka frames (a 4-byte signed
    big-endian length, then that many bytes) and hands them on without copying what it relays.

    `feed(chunk, decide)` calls `decide(size)` as each frame's length is known, for RELAY, DROP
    or KEEP, and yields, in stream order, (WRITE, piece) for the bytes to relay (the frame's
    4-byte length included; the contiguous relayed bytes of one chunk in one piece) and
    (END, frame) as each frame is whole (frame: the whole frame, length included, if it was
    kept; else None)."""

    def __init__(self) -> None:
        self._prefix = bytearray()
        self._left = -1
        """Body bytes of the current frame still to come; -1 between frames."""
        self._mode = RELAY
        self._kept: bytearray | None = None

    def feed(self, chunk, decide):
        view = memoryview(chunk)
        pos, end = 0, len(view)
        run = 0 if self._left >= 0 and self._mode == RELAY else None
        """Where the relayed (or, for a frame kept whole within this chunk, kept) bytes of this
        chunk not yet handed on start."""
        while True:
            if self._left < 0:
                if pos == end:
                    break
                if not self._prefix and end - pos >= 4:
                    prefix, carried = view[pos:pos + 4], None
                    pos += 4
                else:  # a length that straddles chunks
                    take = view[pos:pos + 4 - len(self._prefix)]
                    self._prefix += take
                    pos += len(take)
                    if len(self._prefix) < 4:
                        break
                    prefix = carried = bytes(self._prefix)
                    self._prefix.clear()
                (size,) = struct.unpack(">i", prefix)
                if size < 0:
                    raise ValueError(f"a frame of negative length {size}")
                self._left, self._mode = size, decide(size)
                if self._mode == RELAY:
                    if carried is not None:
                        yield WRITE, carried
                        run = pos
                    elif run is None:
                        run = pos - 4
                elif self._mode == KEEP:
                    if carried is None and end - pos >= size:  # whole in this chunk
                        pos += size
                        self._left = -1
                        whole = view[pos - 4 - size:pos]
                        yield END, chunk if len(whole) == len(chunk) else bytes(whole)
                        continue
                    self._kept = bytearray(prefix)
            take = min(self._left, end - pos)
            if take and self._kept is not None:
                self._kept += view[pos:pos + take]
            pos += take
            self._left -= take
            if self._left:
                break
            if run is not None:
                if pos > run:
                    yield WRITE, view[run:pos]
                run = None
            kept, self._kept, self._left = self._kept, None, -1
            yield END, None if kept is None else bytes(kept)
        if run is not None and pos > run:
            yield WRITE, view[run:pos]


def _keep(size: int) -> str:
    return KEEP


class _Exchange:
    """One request sent upstream whose answer is awaited, in the connection's order."""

    __slots__ = ("api_key", "version", "request", "relay", "fetch")

    def __init__(self, api_key: int, version: int, request, relay: bool, fetch: "_HeldFetch | None" = None):
        self.api_key, self.version, self.request, self.relay, self.fetch = api_key, version, request, relay, fetch


class _HeldFetch:
    """A fetch that may wait: asked with Tansu's shortest wait until its answer is not empty,
    a write to one of its topics has passed, or the client's wait has run out."""

    __slots__ = ("version", "immediate", "patient", "topics", "positions", "committed", "deadline", "seen",
                 "timer", "settling")

    def __init__(self, version: int, immediate: bytes, patient: bytes, fetched: tuple[set[str], Positions, bool],
                 deadline: float) -> None:
        self.version, self.immediate, self.patient, self.deadline = version, immediate, patient, deadline
        """`immediate`: the fetch with Tansu's shortest wait; `patient`: with BEHIND_WAIT_MS."""
        self.topics, self.positions, self.committed = fetched
        self.seen: tuple[int, ...] = ()
        self.timer: asyncio.TimerHandle | None = None
        self.settling: Iterator[float] = iter(())
        """The pauses left before an empty answer after a write is held again (SETTLING_PAUSES)."""


class _Upstream(asyncio.Protocol):
    """The Tansu side of one client connection."""

    def __init__(self, connection: "_Connection") -> None:
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        self.connection.answer_received(data)

    def connection_lost(self, exc) -> None:
        self.connection.close()

    def pause_writing(self) -> None:
        self.connection.pause_client("upstream busy")

    def resume_writing(self) -> None:
        self.connection.resume_client("upstream busy")


class _Connection(asyncio.Protocol):
    """One client connection and its own connection to Tansu."""

    def __init__(self, gateway: "LongPollGateway") -> None:
        self.gateway = gateway
        self.loop = asyncio.get_running_loop()
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self._requests = FrameRelay()
        self._exchanges: deque[_Exchange] = deque()
        self._held: _HeldFetch | None = None
        """The waiting fetch of this connection, from its first asking until it is answered:
        requests after it wait in `_queued` (Tansu must answer them after it)."""
        self._queued: deque[bytes] = deque()
        self._queued_bytes = 0
        self._answers = FrameRelay()
        self._client_pauses: set[str] = set()
        self._eof = False
        self._closed = False

    # the client side

    def connection_made(self, transport) -> None:
        self.client = transport
        self.pause_client("connecting")
        self._connecting = self.loop.create_task(self._connect())  # held: the loop keeps only weak references

    async def _connect(self) -> None:
        try:
            upstream, _ = await self.loop.create_connection(lambda: _Upstream(self), HOST, self.gateway.upstream_port)
        except OSError:
            self.close()
            return
        if self._closed:
            upstream.close()
            return
        self.upstream = upstream
        self._send_queued()
        self.resume_client("connecting")
        self._close_if_done()

    def data_received(self, data: bytes) -> None:
        try:
            for _, frame in self._requests.feed(data, _keep):
                if self._closed:
                    return
                if self.upstream is None or self._held is not None:
                    self._queue(frame)
                else:
                    self._request(frame)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError):
            self.close()  # garbage: this connection ends, nothing answered

    def eof_received(self) -> bool:
        self._eof = True
        self._close_if_done()
        return True  # answers already asked for are still relayed

    def connection_lost(self, exc) -> None:
        self.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self._closed:
            self.upstream.resume_reading()

    def pause_client(self, reason: str) -> None:
        if not self._client_pauses and not self._closed:
            self.client.pause_reading()
        self._client_pauses.add(reason)

    def resume_client(self, reason: str) -> None:
        self._client_pauses.discard(reason)
        if not self._client_pauses and not self._closed:
            self.client.resume_reading()

    def _queue(self, frame: bytes) -> None:
        self._queued.append(frame)
        self._queued_bytes += len(frame)
        if self._queued_bytes > QUEUED_LIMIT:
            self.pause_client("queued")

    # requests

    def _request(self, frame: bytes) -> None:
        """Send one whole request (its 4-byte length included) upstream."""
        request = memoryview(frame)[4:]
        api_key, version = struct.unpack_from(">hh", request, 0)
        if api_key == FETCH and version <= MAX_FETCH_VERSION and waits_long(request, version):
            self._hold(bytes(request), version)
            return
        relay = True
        if api_key == PRODUCE and produce_acks(request, version) == 0:
            relay = False
            rewritten = acknowledged(request, version)
            frame = struct.pack(">i", len(rewritten)) + rewritten
        kept = request if api_key in (PRODUCE, END_TXN) else None  # read once answered
        self._exchanges.append(_Exchange(api_key, version, kept, relay))
        self.upstream.write(frame)

    def _hold(self, request: bytes, version: int) -> None:
        offset = fetch_wait_offset(request, version)
        (wait_ms,) = struct.unpack_from(">i", request, offset)
        def waiting(ms: int) -> bytes:
            rewritten = request[:offset] + struct.pack(">i", ms) + request[offset + 4:]
            return struct.pack(">i", len(rewritten)) + rewritten

        deadline = self.loop.time() + max(wait_ms, 0) / 1000
        self._held = _HeldFetch(version, waiting(TANSU_SHORTEST_WAIT_MS), waiting(min(wait_ms, BEHIND_WAIT_MS)),
                                fetched_topics(request, version), deadline)
        self.ask_again()

    def ask_again(self, patient: bool = False) -> None:
        """Ask Tansu for the held fetch (again), noting which writes it has seen."""
        held = self._held
        if self._closed or held is None:
            return
        held.timer = None
        held.seen = self.gateway.count(held.topics)
        self._exchanges.append(_Exchange(FETCH, held.version, None, True, held))
        self.upstream.write(held.patient if patient else held.immediate)

    def _release(self) -> None:
        """The held fetch is answered: send the requests that came after it."""
        self._held = None
        self._send_queued()
        self._close_if_done()

    def _send_queued(self) -> None:
        while self._queued and self._held is None and not self._closed:
            frame = self._queued.popleft()
            self._queued_bytes -= len(frame)
            try:
                self._request(frame)
            except (struct.error, IndexError, ValueError, UnicodeDecodeError):
                self.close()
                return
        if self._queued_bytes <= QUEUED_LIMIT:
            self.resume_client("queued")

    # answers

    def answer_received(self, data: bytes) -> None:
        try:
            for kind, value in self._answers.feed(data, self._decide):
                if self._closed:
                    return
                if kind == WRITE:
                    self.client.write(value)
                else:
                    self._answered(self._exchanges.popleft(), value)
        except (struct.error, IndexError, ValueError):
            self.close()  # upstream answered what was not asked, or garbage

    def _decide(self, size: int) -> str:
        if not self._exchanges:
            raise ValueError("an answer no request asked for")
        exchange = self._exchanges[0]
        if exchange.fetch is not None and size <= LARGE_ANSWER:
            return KEEP
        return RELAY if exchange.relay else DROP

    def _answered(self, exchange: _Exchange, answer: bytes | None) -> None:
        """A whole answer has come (`answer`: a held fetch's small one, read whole, its length
        included): a held fetch's is relayed, or held while empty; a write wakes its readers."""
        if exchange.fetch is not None:
            held = exchange.fetch
            if answer is not None:
                now = self.loop.time()
                state = _answer_state(memoryview(answer)[4:], held) if now < held.deadline else DATA
                if state == BEHIND:
                    self.ask_again(patient=True)
                    return
                if state == EMPTY:
                    pause = next(held.settling, None)
                    if pause is None:
                        self.gateway.wait(self, held)
                    else:
                        held.timer = self.loop.call_later(min(pause, held.deadline - now), self.ask_again)
                    return
                self.client.write(answer)
            self._release()
            return
        if exchange.api_key == PRODUCE:
            transaction, topics = produced_topics(exchange.request, exchange.version)
            self.gateway.produced(transaction, topics)
        elif exchange.api_key == END_TXN:
            self.gateway.ended(ended_transaction(exchange.request, exchange.version))
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self._eof and not self._exchanges and self._held is None and not self._queued:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queued.clear()
        if self._held is not None:
            self.gateway.forget(self, self._held)
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.close()


class LongPollGateway:
    """Relays clients to the upstream broker and holds empty fetches until data arrives on one of
    their topics (a produce, or the end of a transaction that wrote to it)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._all_writes = 0
        self._writes: dict[str, int] = {}
        """Topic -> how many writes to it passed; a held fetch wakes when one of its counts moves."""
        self._open_transactions: dict[str, set[str]] = {}
        """Transactional id -> topics it wrote to: their readers see the data at its end."""
        self._waiting: dict[_Connection, _HeldFetch] = {}

    def connection(self) -> _Connection:
        return _Connection(self)

    def count(self, topics: set[str]) -> tuple[int, ...]:
        """What a fetch on `topics` has seen: the writes to them and to unknown topics (or every
        write, for a fetch whose topics are unknown)."""
        if ANY_TOPIC in topics:
            return (self._all_writes,)
        return tuple(self._writes.get(topic, 0) for topic in sorted(topics)) + (self._writes.get(ANY_TOPIC, 0),)

    def produced(self, transaction: str | None, topics: set[str]) -> None:
        if transaction:
            self._open_transactions.setdefault(transaction, set()).update(topics)
        self._written(topics)

    def ended(self, transaction: str | None) -> None:
        topics = self._open_transactions.pop(transaction, {ANY_TOPIC}) if transaction else {ANY_TOPIC}
        self._written(topics)

    def _written(self, topics: set[str]) -> None:
        """Record what a produce or a transaction end made readable, and wake its readers."""
        self._all_writes += 1
        for topic in topics:
            self._writes[topic] = self._writes.get(topic, 0) + 1
        woken = [(connection, held) for connection, held in self._waiting.items() if self.count(held.topics) != held.seen]
        for connection, held in woken:
            held.settling = iter(SETTLING_PAUSES)
            self._wake(connection, held)

    def wait(self, connection: _Connection, held: _HeldFetch) -> None:
        """Hold an empty answer until a write to the fetch's topics (one may have passed while it
        was asked) or its deadline; then ask again."""
        if self.count(held.topics) != held.seen:
            held.settling = iter(SETTLING_PAUSES)
            connection.ask_again()
            return
        self._waiting[connection] = held
        loop = connection.loop
        held.timer = loop.call_at(held.deadline, self._wake, connection, held)

    def _wake(self, connection: _Connection, held: _HeldFetch) -> None:
        if self._waiting.pop(connection, None) is None:
            return
        if held.timer is not None:
            held.timer.cancel()
        connection.ask_again()

    def forget(self, connection: _Connection, held: _HeldFetch) -> None:
        self._waiting.pop(connection, None)
        if held.timer is not None:
            held.timer.cancel()


def _event_loop_policy() -> None:
    """uvloop (uvicorn[standard] brings it) when it is there: a cheaper relay."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(listen_port: int, upstream_port: int) -> None:
    gateway = LongPollGateway(upstream_port)
    server = await asyncio.get_running_loop().create_server(gateway.connection, HOST, listen_port)
    async with server:
        await server.serve_forever()


def main() -> None:
    listen_port, upstream_port = (int(arg) for arg in sys.argv[1:3])
    _event_loop_policy()
    try:
        asyncio.run(serve(listen_port, upstream_port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
