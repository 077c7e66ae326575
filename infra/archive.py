"""The event archive of embedded mode: the memory broker forgets its log when it stops.

A reader mirrors every record of `stratos.events` to an append-only JSON-lines file (partition,
offset, key, value); on the next start the archive is written back, partition by partition,
into the fresh broker before any node starts, so state survives a restart of `stratos up`.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
from pathlib import Path

from kafka import KafkaProducer

from infra.kafka import assigned_consumer
from infra.settings import Settings

log = logging.getLogger(__name__)


def restore(settings: Settings, path: Path) -> dict[int, int]:
    """Write the archived events back into the (empty) events topic; returns how many went
    into each partition (so the archiver knows where the new records begin)."""
    restored: dict[int, int] = {}
    if not path.exists():
        return restored
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             enable_idempotence=True, linger_ms=5)
    with path.open() as lines:
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                log.warning("archive %s: skipping a torn line (the previous run stopped mid-write)", path)
                continue
            key = base64.b64decode(row["key"]) if row.get("key") else None
            value = base64.b64decode(row["value"]) if row.get("value") is not None else None
            producer.send(settings.topic("events"), key=key, value=value,
                          partition=row["partition"])
            restored[row["partition"]] = restored.get(row["partition"], 0) + 1
    producer.flush()
    producer.close()
    return restored


class Archiver:
    """Appends every new event to the archive file, after those that were restored.

    Reads from the beginning and skips the restored offsets: the broker's reported end offset
    is not exact (Tansu 0.6 counts batches), so seeking to the end could archive twice."""

    def __init__(self, settings: Settings, path: Path, restored: dict[int, int]) -> None:
        self.settings = settings
        self.path = path
        self.restored = restored
        self.stopping = threading.Event()

    def run(self) -> None:
        consumer = assigned_consumer(self.settings, "events", from_beginning=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as out:
            while not self.stopping.is_set():
                for raws in consumer.poll(timeout_ms=200).values():
                    for raw in raws:
                        if raw.offset < self.restored.get(raw.partition, 0):
                            continue
                        out.write(json.dumps({
                            "partition": raw.partition, "offset": raw.offset,
                            "key": base64.b64encode(raw.key).decode() if raw.key else None,
                            # a null value is archived too: offsets must match after a restore
                            "value": base64.b64encode(raw.value).decode() if raw.value is not None else None}) + "\n")
                out.flush()
        consumer.close()

    def stop(self) -> None:
        self.stopping.set()
