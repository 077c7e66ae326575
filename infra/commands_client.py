"""Send commands and wait for their replies: the path REST, CLI and tests write through."""
from __future__ import annotations

import threading
from collections import OrderedDict

from pydantic import BaseModel, ValidationError

from infra.kafka import Appender, assigned_consumer, decode, envelope, new_id
from infra.settings import Settings
from schemas.envelope import SUPER_TENANT
from schemas.records import CommandRecord

REPLIES_KEPT = 100_000
"""Replies nobody waited for yet, newest kept: the reader sees every client's replies."""
FETCH_WAIT_MS = 20
"""How long the broker may hold an empty fetch: a reply is delivered within about this."""


class CommandClient:
    """Appends commands to `stratos.commands`; a background reader collects replies by id and
    wakes only the caller waiting for that id (hundreds of concurrent writers do not all wake
    on every reply)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.appender = Appender(settings)
        self.replies: OrderedDict[str, BaseModel] = OrderedDict()
        self.waiters: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.consumer = assigned_consumer(settings, "replies", from_beginning=False,
                                          fetch_max_wait_ms=FETCH_WAIT_MS)
        for tp in self.consumer.assignment():
            self.consumer.position(tp)  # fix the start now, before any command is sent
        self.reader = threading.Thread(target=self._read, name="replies", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.stopping.is_set():
            for raws in self.consumer.poll(timeout_ms=100).values():
                for raw in raws:
                    try:
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
            waiter = self.waiters.pop(command_id, None)
        if waiter is not None:
            waiter.set()

    def send(self, aggregate_id: str, command: BaseModel, tenant: str = SUPER_TENANT,
             correlation_id: str | None = None) -> str:
        record = envelope(CommandRecord, command, aggregate_id, tenant=tenant,
                          correlation_id=correlation_id, record_id=new_id())
        self.appender.append("commands", aggregate_id, record)
        return record.id

    def wait(self, command_id: str, timeout: float = 20.0) -> BaseModel | None:
        with self.lock:
            if command_id in self.replies:
                return self.replies.pop(command_id)
            waiter = self.waiters.setdefault(command_id, threading.Event())
        waiter.wait(timeout)
        with self.lock:
            if self.waiters.get(command_id) is waiter:
                del self.waiters[command_id]
            return self.replies.pop(command_id, None)

    def call(self, aggregate_id: str, command: BaseModel, tenant: str = SUPER_TENANT,
             timeout: float = 20.0) -> BaseModel | None:
        return self.wait(self.send(aggregate_id, command, tenant), timeout)

    def close(self) -> None:
        self.stopping.set()
        self.reader.join(2)
        self.consumer.close()
        self.appender.close()
