"""A reader that follows one topic on its own thread: every partition from its start, without a
group (no rebalance pauses), like the API's read model; `caught_up` is set once it has read what
the topic held when it started. Subclasses say what to do with each partition's records."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from infra.log.kafka import IDLE_POLL_MS, assigned_consumer, poll_through_broker_loss
from infra.settings import Settings

log = logging.getLogger(__name__)


class Follower(ABC):
    topic_kind = ""
    name = "follower"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.caught_up = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)

    @abstractmethod
    def on_records(self, raws) -> None:
        """One partition's records, in offset order (raw kafka-python ConsumerRecords)."""

    def closed(self) -> None:  # noqa: B027 - an optional hook, a no-op unless a follower overrides it
        """The reader has stopped."""

    def _run(self) -> None:
        try:
            consumer = assigned_consumer(self.settings, self.topic_kind)
        except Exception:  # noqa: BLE001 - the part serves on without it; the reason is logged
            log.exception("%s could not open the %s topic", self.name, self.topic_kind)
            return
        try:
            ends = consumer.end_offsets(list(consumer.assignment()))
            while not self.stopping.is_set():
                for _tp, raws in poll_through_broker_loss(consumer, IDLE_POLL_MS, max_records=2000).items():
                    self.on_records(raws)
                if not self.caught_up.is_set() and all(consumer.position(tp) >= end for tp, end in ends.items()):
                    self.caught_up.set()
        finally:
            consumer.close()
            self.closed()


def stop_together(*stops: Callable[[], None]) -> None:
    """Run the stops of several background readers at once. Each waits for its reader to leave
    a poll of up to IDLE_POLL_MS: one after another, an API with four readers took 8 s to stop."""
    with ThreadPoolExecutor(max(len(stops), 1), thread_name_prefix="stop") as pool:
        for done in [pool.submit(stop) for stop in stops]:
            done.result()


def follower_lifespan(attribute: str, factory):
    """A router lifespan that starts `factory(settings)` beside the API and keeps it as
    `app.state.<attribute>` (a router's lifespan runs inside the app's, so settings are there).
    Its stop is left to the app's lifespan (`app.state.stops`), which stops every reader at once."""
    from contextlib import asynccontextmanager

    from fastapi.concurrency import run_in_threadpool

    @asynccontextmanager
    async def lifespan(app):
        follower = await run_in_threadpool(lambda: factory(app.state.settings).start())
        setattr(app.state, attribute, follower)
        app.state.stops.append(follower.stop)
        yield

    return lifespan
