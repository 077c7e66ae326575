"""The metering service's adapters: the fold of the events log (actors/metering.py) kept
current, the `stratos.usage` export (one record per period and cluster, idempotent ids), and the
optional OpenTelemetry OTLP metrics exporter (when OTEL_EXPORTER_OTLP_ENDPOINT is set).

`UsageFold` reads every events partition from its start without a group and folds each commit
that is history (`infra.log.eventlog.History`: the fence every reader applies).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime

from actors.metering import Meter, periods, usage
from infra.log.eventlog import History
from infra.log.kafka import Appender, envelope, read_to_end, rejection_reason
from infra.observe.follower import Follower
from infra.settings import Settings
from schemas.observability import UsageHour, UsageRecord

log = logging.getLogger(__name__)


class UsageFold(Follower):
    topic_kind = "events"
    name = "usage-fold"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.meter = Meter()
        self.history = History.of(settings)
        self.lock = threading.Lock()

    def on_records(self, raws) -> None:
        with self.lock:
            for raw in raws:
                self._fold(raw)

    def _fold(self, raw) -> None:
        """Invalid records are skipped (the reactor dead-letters them); a fold that raises costs
        that commit, never the reader."""
        try:
            commit = self.history.commit(raw)
        except ValueError as exc:
            log.warning("usage skips %d@%d: %s", raw.partition, raw.offset, rejection_reason(exc))
            return
        if commit is None:
            return
        try:
            self.meter.fold(commit)
        except Exception:  # noqa: BLE001
            log.exception("usage: folding %s (%d@%d) failed", commit.id, raw.partition, raw.offset)

    def usage(self, tenant: str, start: float, end: float, group_by: str = "cluster") -> list[dict]:
        with self.lock:
            return usage(self.meter, tenant, start, end, group_by)

    def tenants(self) -> set[str]:
        with self.lock:
            return {i.owner.tenant for i in self.meter.intervals}

    def first_at(self) -> float | None:
        with self.lock:
            return min((i.start for i in self.meter.intervals), default=None)


def usage_id(tenant: str, cluster: str, period_start: float) -> str:
    return f"usage:{tenant}/{cluster}:{datetime.fromtimestamp(period_start, UTC):%Y-%m-%dT%H:%M:%SZ}"


def period_records(fold: UsageFold, start: float, end: float) -> list[UsageRecord]:
    """One record per cluster that used anything in [start, end)."""
    records = []
    for tenant in sorted(fold.tenants()):
        for row in fold.usage(tenant, start, end, "cluster"):
            hour = UsageHour(
                cluster_id=row["cluster"],
                application_id=row["application"],
                cartridge_type=row["cartridge"],
                period_start=datetime.fromtimestamp(start, UTC),
                period_end=datetime.fromtimestamp(end, UTC),
                member_seconds=row["member_seconds"],
                pending_seconds=row["pending_seconds"],
                by_instance_type=row["by_instance_type"],
                by_partition=row["by_partition"],
                scaling_actions=row["scaling_actions"],
                requests_served=row["requests_served"],
            )
            records.append(
                envelope(
                    UsageRecord,
                    hour,
                    f"{tenant}/cluster/{row['cluster']}",
                    tenant=tenant,
                    record_id=usage_id(tenant, row["cluster"], start),
                    occurred_at=datetime.fromtimestamp(end, UTC),
                )
            )
    return records  # type: ignore[return-value]


class UsageExporter:
    """`stratos usage-export`, a supervised part of `stratos up`: writes each period's records
    `usage_grace_seconds` after it ends (late commits of a lagging node still count), once per
    id (the ids already on the topic are read back at start; a repeat would be harmless anyway:
    same id, same figures, compacted topic)."""

    def __init__(self, settings: Settings, check_seconds: float = 2.0) -> None:
        self.settings = settings
        self.fold = UsageFold(settings)
        self.appender = Appender(settings)
        self.check_seconds = check_seconds
        self.written: set[str] = {d.record.id for d in read_to_end(settings, "usage", wait_for_broker=True)}
        self.stopping = threading.Event()
        self.otel = otel_exporter(self.fold)

    def export_due(self, now: float) -> int:
        first = self.fold.first_at()
        if first is None or not self.fold.caught_up.is_set():
            return 0
        sent = 0
        for start, end in periods(first, now - self.settings.usage_grace_seconds, self.settings.usage_period_seconds):
            for record in period_records(self.fold, start, end):
                if record.id in self.written:
                    continue
                self.appender.send("usage", record.id, record)
                self.written.add(record.id)
                sent += 1
        if sent:
            self.appender.flush()
            log.info("usage: %d records exported", sent)
        return sent

    def run(self) -> None:
        self.fold.start()
        try:
            while not self.stopping.wait(self.check_seconds):
                try:
                    self.export_due(time.time())
                except Exception:  # noqa: BLE001 - the next check tries again
                    log.exception("usage export failed")
        finally:
            self.fold.stop()
            if self.otel is not None:
                self.otel.shutdown()
            self.appender.close()

    def stop(self) -> None:
        self.stopping.set()


def otel_exporter(fold: UsageFold, interval_seconds: float | None = None):
    """With OTEL_EXPORTER_OTLP_ENDPOINT set: an OpenTelemetry MeterProvider whose observable
    counters `stratos.member_seconds`, `stratos.pending_seconds` and `stratos.scaling_actions`
    (cumulative since the log's start, attributes tenant, application, cluster, cartridge,
    instance_type, partition) go to that OTLP/HTTP endpoint. None without it; the optional extra
    `stratos-es[otel]` brings the packages."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.metrics import Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
    except ImportError:
        log.error(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is missing: pip install 'stratos-es[otel]'"
        )
        return None
    millis = int((interval_seconds or float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000) * 1000)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=millis)
    provider = MeterProvider(resource=Resource.create({"service.name": "stratos-es"}), metric_readers=[reader])
    meter = provider.get_meter("stratos.metering")

    def observe(kind: str):
        def callback(_options):
            now = time.time()
            out = []
            for tenant in sorted(fold.tenants()):
                for row in fold.usage(tenant, 0.0, now, "cluster"):
                    base = {
                        "tenant": tenant,
                        "application": row["application"],
                        "cluster": row["cluster"],
                        "cartridge": row["cartridge"],
                    }
                    if kind == "member_seconds":
                        for (itype, partition), seconds in _by_type_and_partition(
                            fold, tenant, row["cluster"], now
                        ).items():
                            out.append(Observation(seconds, {**base, "instance_type": itype, "partition": partition}))
                    else:
                        out.append(Observation(row[kind], base))
            return out

        return callback

    meter.create_observable_counter(
        "stratos.member_seconds",
        [observe("member_seconds")],
        unit="s",
        description="instance seconds from Active to Terminated",
    )
    meter.create_observable_counter(
        "stratos.pending_seconds",
        [observe("pending_seconds")],
        unit="s",
        description="instance seconds from spawn request to Active",
    )
    meter.create_observable_counter(
        "stratos.scaling_actions",
        [observe("scaling_actions")],
        description="scaling decisions that spawned or terminated members",
    )
    return provider


def _by_type_and_partition(fold: UsageFold, tenant: str, cluster: str, now: float) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    with fold.lock:
        for interval in fold.meter.intervals:
            o = interval.owner
            if o.tenant == tenant and o.cluster == cluster and interval.kind == "running":
                key = (o.instance_type, o.partition)
                out[key] = out.get(key, 0.0) + interval.seconds(0.0, now)
    return out
