"""Metering on the real platform parts: a node and reactor, the cloud controller with simulated
instances (which also write their agents' log lines), the API; a deployment scripted 1 -> 3 -> 1.
Then the `stratos.usage` export (idempotent ids) and the OTLP exporter against a local receiver."""

from __future__ import annotations

import csv
import http.server
import io
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.broker import free_port
from infra.cli.main import app as stratos
from infra.log.kafka import read_to_end
from infra.observe.follower import stop_together
from infra.observe.usage import UsageExporter, otel_exporter
from schemas import commands as C
from schemas.ids import aggregate_id
from tests.conftest import events_of, wait_until
from tests.test_api_platform import define_samples
from tests.test_cloud_controller import RunningCloud, active_members

pytestmark = pytest.mark.integration
PASSWORD = "usage-pw"
APP = "single-cartridge-app"
CLUSTER_ID = "single-cartridge-app.php1.php.domain"
CLUSTER = aggregate_id("carbon.super", "cluster", CLUSTER_ID)


class OtlpReceiver(http.server.BaseHTTPRequestHandler):
    """A tiny OTLP/HTTP metrics receiver: keeps every decoded ExportMetricsServiceRequest."""

    received: list = []

    def do_POST(self):  # noqa: N802 - the http.server API
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        type(self).received.append((self.path, request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def active_intervals(settings, end: float) -> float:
    """The expectation, read from the events: each member's MemberActivated to MemberTerminated."""
    started: dict[str, float] = {}
    total = 0.0
    for event in events_of(settings, CLUSTER):
        at = event.occurred_at.timestamp()
        if event.type == "MemberActivated":
            started[event.payload.member_id] = at
        elif event.type == "MemberTerminated" and event.payload.member_id in started:
            total += min(at, end) - started.pop(event.payload.member_id)
    return total + sum(end - at for at in started.values() if at < end)


def test_a_deployment_scaled_1_3_1_is_metered_per_tenant_exported_and_its_instances_logged(
    settings, running_node, monkeypatch
):
    own = settings.model_copy(
        update={
            "admin_password": SecretStr(PASSWORD),
            "password_hash_rounds": 4,
            "cloud_reconcile_seconds": 0.3,
            "cloud_retry_seconds": 0.1,
            "health_publish_seconds": 0.3,
            "log_batch_seconds": 0.2,
            "usage_period_seconds": 2.0,
            "usage_grace_seconds": 0.0,
        }
    )
    cloud = RunningCloud(own)
    server = ApiServer(create_app(own), port=free_port()).start()
    url = server.url
    admin = httpx.Client(base_url=f"{url}/api", auth=("admin", PASSWORD), timeout=60)
    from infra.log.commands_client import CommandClient

    commands = CommandClient(own)
    try:
        define_samples(admin)
        assert admin.post(f"/applications/{APP}/deploy/application-policy-1").status_code == 202
        wait_until(lambda: len(active_members(own)) == 1, timeout=60, message="one active member")
        commands.call(CLUSTER, C.ScaleCluster(required=3, metric="load_average", reason="test: up"))
        wait_until(lambda: len(active_members(own)) == 3, timeout=60, message="three active members")

        def scaled_down():
            gone = [e for e in events_of(own, CLUSTER) if e.type == "MemberTerminated"]
            if len(gone) < 2:
                commands.call(CLUSTER, C.ScaleCluster(required=1, metric="load_average", reason="test: down"))
            return len(gone) == 2 and len(active_members(own)) == 1

        wait_until(scaled_down, timeout=90, interval=0.3, message="back to one member, two terminated")
        end = time.time()
        expected = active_intervals(own, end)

        at = datetime.fromtimestamp(end, UTC).isoformat()
        body = admin.get("/usage", params={"to": at}).json()
        [row] = body["rows"]
        assert row["cluster"] == CLUSTER_ID and row["application"] == APP and row["cartridge"] == "php"
        assert abs(row["member_seconds"] - expected) <= own.health_publish_seconds
        assert row["pending_seconds"] > 0 and row["scaling_actions"] >= 3  # up once, down twice
        assert row["requests_served"] is None
        assert set(row["by_instance_type"]) == {"RegionOne/aa5f45a2-c6d6-419d-917a-9dd2e3888594"}
        assert abs(sum(row["by_partition"].values()) - row["member_seconds"]) < 0.01
        # the same instant asked again later gives the same figures: a fold of the log up to then
        assert admin.get("/usage", params={"to": at}).json()["rows"] == body["rows"]

        domain = f"t{int(time.time() * 1000)}.org"
        assert (
            admin.post(
                "/tenants",
                json={"tenantDomain": domain, "admin": "boss", "adminPassword": "boss-pw", "email": f"boss@{domain}"},
            ).status_code
            == 201
        )
        with httpx.Client(base_url=f"{url}/api", auth=(f"boss@{domain}", "boss-pw"), timeout=60) as other:
            assert other.get("/usage").json()["rows"] == []
            refused = other.get("/usage", params={"tenant": "carbon.super"})
            assert refused.status_code == 403 and "only the usage of tenant" in refused.json()["message"]

        bad = admin.get("/usage", params={"groupBy": "planet"})
        assert bad.status_code == 400 and "groupBy: 'planet'" in bad.json()["message"]
        assert admin.get("/usage", params={"from": "yesterday-ish"}).status_code == 400

        runner = CliRunner()
        shown = runner.invoke(stratos, ["usage", "--to", at, "--csv", "--url", url, "--password", PASSWORD])
        assert shown.exit_code == 0, shown.output
        [csv_row] = list(csv.DictReader(io.StringIO(shown.output)))
        assert float(csv_row["member_seconds"]) == row["member_seconds"] and csv_row["cluster"] == CLUSTER_ID
        by_app = runner.invoke(
            stratos, ["usage", "--by", "application", "--json", "--url", url, "--password", PASSWORD]
        )
        assert '"application": "single-cartridge-app"' in by_app.output

        # the instances' log lines, as their agents would write them, in order
        gone = next(e.payload.member_id for e in events_of(own, CLUSTER) if e.type == "MemberTerminated")

        def logged():
            found = runner.invoke(stratos, ["logs", gone, "--json", "--url", url, "--password", PASSWORD])
            return found.exit_code == 0 and "clean hook done" in found.output and found.output

        messages = [
            __import__("json").loads(line)["message"] for line in wait_until(logged, message="its lines").splitlines()
        ]
        assert [m for m in messages if m.startswith("published")] == [
            "published InstanceStarted",
            "published InstanceActivated",
            "published InstanceMaintenanceMode",
            "published InstanceReadyToShutdown",
        ]
        assert messages[0].startswith("cartridge agent started: member " + gone)

        # export: one record per period and cluster, ids stable, nothing written twice
        exporter = UsageExporter(own)
        exporter.fold.start()
        wait_until(exporter.fold.caught_up.is_set, message="the exporter's fold caught up")
        written = exporter.export_due(end)
        assert written > 0 and exporter.export_due(end) == 0
        exporter.fold.stop()
        exporter.appender.close()  # `run` closes it; this test drives `export_due` itself
        again = UsageExporter(own)
        assert again.written == exporter.written
        records = [d.record for d in read_to_end(own, "usage")]
        assert len({r.id for r in records}) == len(records) == written
        first = min(r.payload.period_start for r in records).timestamp()
        last = max(r.payload.period_end for r in records).timestamp()
        span = admin.get("/usage", params={"from": str(first), "to": str(last)}).json()["total"]
        assert abs(sum(r.payload.member_seconds for r in records) - span["member_seconds"]) < 0.01
        assert {r.tenant for r in records} == {"carbon.super"}

        # OTLP: the same fold's counters, pushed to a local OTLP/HTTP receiver
        receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtlpReceiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_port}")
        again.fold.start()
        wait_until(again.fold.caught_up.is_set, message="a second fold caught up")
        provider = otel_exporter(again.fold, interval_seconds=0.5)
        try:

            def exported():
                names = {
                    m.name: m
                    for path, request in OtlpReceiver.received
                    if path == "/v1/metrics"
                    for rm in request.resource_metrics
                    for sm in rm.scope_metrics
                    for m in sm.metrics
                }
                return "stratos.member_seconds" in names and names

            names = wait_until(exported, message="metrics received over OTLP")
        finally:
            provider.shutdown()
            receiver.shutdown()
            again.fold.stop()
            again.appender.close()
        points = names["stratos.member_seconds"].sum.data_points
        attributes = {kv.key: kv.value.string_value for kv in points[0].attributes}
        assert attributes["cluster"] == CLUSTER_ID and attributes["tenant"] == "carbon.super"
        assert sum(p.as_double for p in points) >= row["member_seconds"] - 0.01
    finally:
        commands.close()
        admin.close()
        stop_together(server.stop, cloud.stop)
