"""Send commands and wait for their replies: the path REST, CLI and tests write through."""
from __future__ import annotations

import threading
import time

from pydantic import BaseModel, ValidationError

from infra.kafka import Appender, assigned_consumer, decode, envelope, new_id
from infra.settings import Settings
from schemas.envelope import SUPER_TENANT
from schemas.records import CommandRecord


class CommandClient:
    """Appends commands to `stratos.commands`; a background reader collects replies by id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.appender = Appender(settings)
        self.replies: dict[str, BaseModel] = {}
        self.arrived = threading.Condition()
        self.stopping = threading.Event()
        self.consumer = assigned_consumer(settings, "replies", from_beginning=False)
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
                    with self.arrived:
                        self.replies[record.payload.command_id] = record.payload
                        self.arrived.notify_all()

    def send(self, aggregate_id: str, command: BaseModel, tenant: str = SUPER_TENANT,
             correlation_id: str | None = None) -> str:
        record = envelope(CommandRecord, command, aggregate_id, tenant=tenant,
                          correlation_id=correlation_id, record_id=new_id())
        self.appender.append("commands", aggregate_id, record)
        return record.id

    def wait(self, command_id: str, timeout: float = 20.0) -> BaseModel | None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while command_id not in self.replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.arrived.wait(remaining)
            return self.replies.pop(command_id)

    def call(self, aggregate_id: str, command: BaseModel, tenant: str = SUPER_TENANT,
             timeout: float = 20.0) -> BaseModel | None:
        return self.wait(self.send(aggregate_id, command, tenant), timeout)

    def close(self) -> None:
        self.stopping.set()
        self.reader.join(2)
        self.consumer.close()
        self.appender.close()
