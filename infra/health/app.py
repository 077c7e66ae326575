"""The faust health app: factory and worker. Nothing is built at import time.

``create_app(settings)`` declares the topics and the tasks of ``infra.health.agents`` on a
fresh faust app (id ``<prefix>health-worker``); the health records themselves are read in
batches by an aiokafka reader of the group ``<prefix>health-windows`` inside the app, so faust's
own consumer reads only its (empty) leader topic. The cluster views (``infra.health.views``) live
in the worker's memory, folded from every partition of ``stratos.events`` read without a group,
from their own checkpoint on (``infra.log.projection``: the log is their store, the checkpoint
where a start resumes); a faust Table wrote a changelog record of a whole view per member event,
which stalled the worker under bursts. Workers of one group share the health partitions, each
folding all the views. What the agents share is a ``HealthService`` (``infra.health.service``, a
module of its own so that the agents need not import this one). ``HealthWorker`` is faust's
worker that also runs off the main thread (tests and benchmarks run it beside the node);
``stratos health`` runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import faust

from infra.health.agents import register
from infra.health.service import HealthService
from infra.health.topics import declare_topics
from infra.log.kafka import GROUP_TIMINGS, Appender, DeadLetters, kafka_client_options
from infra.settings import Settings
from streams.health_state import HealthBook


def faust_credentials(settings: Settings) -> faust.SASLCredentials | None:
    """The platform's Kafka security options (`kafka_client_options`) in faust's form."""
    options = kafka_client_options(settings, "aiokafka")
    if "security_protocol" not in options:
        return None
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=options["ssl_context"],
        mechanism=options["sasl_mechanism"],
    )


def create_app(settings: Settings) -> HealthService:
    datadir = settings.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.topic("health-worker"),
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_disable_leader=False,  # its (empty) leader topic is all faust consumes: see agents
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=GROUP_TIMINGS["session_timeout_ms"] / 1000,
        broker_heartbeat_interval=GROUP_TIMINGS["heartbeat_interval_ms"] / 1000,
        broker_max_poll_interval=GROUP_TIMINGS["max_poll_interval_ms"] / 1000,
        # unbounded, one fetch of a backlog is handed to the streams in one go and holds the
        # event loop for seconds: heartbeats missed, the worker thrown out of its group
        broker_max_poll_records=500,
        datadir=str(datadir),
    )
    service = HealthService(
        app=app,
        settings=settings,
        topics=declare_topics(app, settings),
        book=HealthBook(
            settings.health_window_seconds,
            settings.member_fault_seconds,
            settings.health_max_skew_seconds,
            settings.health_max_age_seconds,
        ),
        dead_letters=DeadLetters(Appender(settings, source="health")),
    )
    register(service)
    return service


class HealthWorker(faust.Worker):
    """faust's worker; signal handlers only where Python allows them (the main thread)."""

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            super().install_signal_handlers()

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """No terminal spinner: for it faust turns the root logger to DEBUG, so every debug line
        of aiokafka, kafka-python, mode and faust was built and then dropped (idle CPU)."""
        self.spinner = None


class HealthWorkerThread:
    """A health worker with its own event loop on a thread of this process (tests, benchmarks):
    ``service`` is there once started; ``stop`` ends it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service: HealthService | None = None
        self.worker: HealthWorker | None = None
        self.built = threading.Event()
        self.thread = threading.Thread(target=self._run, name="health-worker", daemon=True)

    def start(self) -> HealthWorkerThread:
        self.thread.start()
        self.built.wait(30)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.service = create_app(self.settings)
        self.worker = HealthWorker(self.service.app, loop=loop, loglevel="WARNING", override_logging=False, quiet=True)
        self.built.set()
        with contextlib.suppress(SystemExit):  # the worker's normal way to end
            self.worker.execute_from_commandline()

    def stop(self, timeout: float = 20.0) -> None:
        if self.worker is not None and self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.worker.stop(), self.worker.loop)
            self.thread.join(timeout)
        if self.service is not None:
            self.service.dead_letters.appender.close()
