"""Send commands and wait for their replies: the path REST, CLI and tests write through."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from infra.auth.secrets import secret_box
from infra.auth.signing import Verifier
from infra.log.kafka import (
    IDLE_POLL_MS,
    Appender,
    assigned_consumer,
    decode,
    envelope,
    new_id,
    poll_through_broker_loss,
)
from infra.settings import Settings
from schemas.envelope import SUPER_TENANT
from schemas.records import CommandRecord

REPLIES_KEPT = 100_000
"""Replies nobody waited for yet, newest kept: the reader sees every client's replies."""
APPEND_TIMEOUT_SECONDS = 30.0

Wake = Callable[[], None]


async def settled(future):
    """Await a kafka-python future (resolved on its IO thread) from an asyncio task."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def resolve(outcome) -> None:
        if not done.done():
            (done.set_exception if isinstance(outcome, BaseException) else done.set_result)(outcome)

    future.add_both(lambda outcome: loop.call_soon_threadsafe(resolve, outcome))
    return await done


def waker(event: asyncio.Event) -> Wake:
    """Sets `event` on its own loop from any thread."""
    loop = asyncio.get_running_loop()
    return lambda: loop.call_soon_threadsafe(event.set)  # type: ignore[return-value]


class CommandClient:
    """Appends commands to `stratos.commands`; a background reader collects replies by id and
    wakes only the caller waiting for that id (hundreds of concurrent writers do not all wake
    on every reply)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.appender = Appender(settings, source="api")
        self.box = secret_box(settings)
        """Secrets are sealed before a command leaves: the commands topic never holds them clear."""
        self.verifier = Verifier.of(settings)
        self.replies: OrderedDict[str, BaseModel] = OrderedDict()
        self.waiters: dict[str, Wake] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.consumer = assigned_consumer(settings, "replies", from_beginning=False)
        for tp in self.consumer.assignment():
            self.consumer.position(tp)  # fix the start now, before any command is sent
        self.reader = threading.Thread(target=self._read, name="replies", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            for raws in poll_through_broker_loss(self.consumer, IDLE_POLL_MS).values():
                for raw in raws:
                    try:  # only the nodes' replies (signed by the platform): a forged one is no answer
                        if not self.verifier.sender("replies", raw.key, raw.value, raw.headers).trusted:
                            continue
                        record = decode("replies", raw.value)
                    except (ValidationError, ValueError):
                        continue
                    self._arrived(record.payload.command_id, record.payload)

    def _arrived(self, command_id: str, reply: BaseModel) -> None:
        with self.lock:
            self.replies[command_id] = reply
            self.replies.move_to_end(command_id)
            if len(self.replies) > REPLIES_KEPT:
                self.replies.popitem(last=False)
            wake = self.waiters.pop(command_id, None)
        if wake is not None:
            wake()

    def send(
        self, aggregate_id: str, command: BaseModel, tenant: str = SUPER_TENANT, correlation_id: str | None = None
    ) -> str:
        record = envelope(
            CommandRecord,
            self.box.seal_model(command),
            aggregate_id,
            tenant=tenant,
            correlation_id=correlation_id,
            record_id=new_id(),
        )
        self.appender.append("commands", aggregate_id, record)
        return record.id

    async def send_async(self, aggregate_id: str, command: BaseModel, tenant: str = SUPER_TENANT) -> str:
        """`send` for the API's event loop: awaits the broker's ack without holding a thread."""
        record = envelope(CommandRecord, self.box.seal_model(command), aggregate_id, tenant=tenant, record_id=new_id())
        await asyncio.wait_for(settled(self.appender.send("commands", aggregate_id, record)), APPEND_TIMEOUT_SECONDS)
        return record.id

    def _reply_or_waiting(self, command_id: str, wake: Wake) -> BaseModel | None:
        with self.lock:
            if command_id in self.replies:
                return self.replies.pop(command_id)
            self.waiters[command_id] = wake
            return None

    def _stop_waiting(self, command_id: str, wake: Wake) -> BaseModel | None:
        with self.lock:
            if self.waiters.get(command_id) is wake:
                del self.waiters[command_id]
            return self.replies.pop(command_id, None)

    def wait(self, command_id: str, timeout: float = 20.0) -> BaseModel | None:
        event = threading.Event()
        wake = event.set
        if (reply := self._reply_or_waiting(command_id, wake)) is not None:
            return reply
        event.wait(timeout)
        return self._stop_waiting(command_id, wake)

    async def wait_async(self, command_id: str, timeout: float = 20.0) -> BaseModel | None:
        event = asyncio.Event()
        wake = waker(event)
        if (reply := self._reply_or_waiting(command_id, wake)) is not None:
            return reply
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            reply = self._stop_waiting(command_id, wake)
        return reply

    def call(
        self, aggregate_id: str, command: BaseModel, tenant: str = SUPER_TENANT, timeout: float = 20.0
    ) -> BaseModel | None:
        return self.wait(self.send(aggregate_id, command, tenant), timeout)

    def close(self) -> None:
        self.stopping.set()
        self.reader.join(IDLE_POLL_MS / 1000 + 3)
        self.consumer.close()
        self.appender.close()
