"""`stratos logs`, `stratos usage`, `stratos status` (clients of the REST API) and
`stratos usage-export` (the supervised part that writes `<prefix>usage`).

(No `from __future__ import annotations`: typer reads the annotations at runtime.)
"""

import csv
import json
import signal
import sys
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.api.client_cli import DEFAULT_URL, AsJson, Failed, Password, Url, Username, request, run
from infra.auth.tls import verify_for
from infra.settings import get_settings

console = Console()
LEVEL_STYLE = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


def _print_line(line: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(line), flush=True)
        return
    style = LEVEL_STYLE.get(line["level"], "")
    level = f"[{style}]{line['level']:<7}[/]" if style else f"{line['level']:<7}"
    console.print(
        f"{line['at'][:23]} {level} [cyan]{escape(line['member'])}[/] "
        f"[dim]{escape(line['source'])}[/] {escape(line['message'])}",
        highlight=False,
        soft_wrap=True,
    )


def _follow(url: str, username: str, password: str, params: dict, as_json: bool) -> None:
    """Stream `event: line` records; on a dropped connection resume after the last seq seen."""
    cursor = 0
    while True:
        query = {**params, **({"after": cursor} if cursor else {})}
        try:
            with (
                httpx.Client(
                    base_url=f"{url.rstrip('/')}/api",
                    auth=(username, password),
                    timeout=None,
                    verify=verify_for(url, get_settings()),
                ) as client,
                client.stream("GET", "/logs/stream", params=query) as reply,
            ):
                if reply.is_error:
                    reply.read()
                    try:
                        message = reply.json().get("message")
                    except ValueError:
                        message = reply.text
                    raise Failed(f"{message} (HTTP {reply.status_code})")
                data: list[str] = []
                for raw in reply.iter_lines():
                    if raw.startswith("data:"):
                        data.append(raw[5:].lstrip())
                    elif raw == "" and data:
                        line = json.loads("\n".join(data))
                        data = []
                        cursor = line["seq"]
                        _print_line(line, as_json)
        except httpx.HTTPError as exc:
            if not cursor:
                raise Failed(f"cannot reach the Stratos API at {url}: {exc}") from exc
            console.print(f"[dim]stream interrupted ({exc}); resuming[/]", highlight=False, stderr=True)  # type: ignore[call-arg]


def register(app: typer.Typer) -> None:
    @app.command("logs")
    def logs(
        target: Annotated[
            str, typer.Argument(help="a member, cluster or application id (`platform`: the platform's own parts)")
        ],
        follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
        since: Annotated[str | None, typer.Option(help="only lines newer than this (10m, 2h, or ISO-8601)")] = None,
        level: Annotated[str | None, typer.Option(help="the least level: DEBUG, INFO, WARN, ERROR")] = None,
        limit: Annotated[int, typer.Option(help="at most this many past lines")] = 200,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Log lines of an instance, a cluster or an application, oldest first."""
        params = {k: v for k, v in {"target": target, "since": since, "level": level, "limit": limit}.items() if v}

        def action() -> None:
            if follow:
                signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
                _follow(url, username, password, params, as_json)
                return
            body = request("GET", "/logs", url, username, password, params=params)
            for line in body["lines"]:
                _print_line(line, as_json)
            for member, counts in body.get("dropped", {}).items():
                if not as_json:
                    console.print(
                        f"[yellow]{escape(member)}: {counts['shipper']} lines dropped by its shipper's "
                        f"rate limit, {counts['readSide']} by the read side[/]",
                        highlight=False,
                    )

        run(action)

    @app.command("usage")
    def usage(
        from_: Annotated[
            str | None, typer.Option("--from", help="ISO-8601, epoch seconds or a duration back (24h)")
        ] = None,
        to: Annotated[str | None, typer.Option(help="same forms; default now")] = None,
        by: Annotated[str, typer.Option(help="application | cluster | cartridge")] = "cluster",
        tenant: Annotated[str | None, typer.Option(help="another tenant (super admin only)")] = None,
        as_csv: Annotated[bool, typer.Option("--csv", help="CSV rows (for spreadsheets)")] = False,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Member-seconds (Active to Terminated), pending seconds and scaling actions of your tenant."""
        params = {k: v for k, v in {"from": from_, "to": to, "groupBy": by, "tenant": tenant}.items() if v}

        def action() -> None:
            body = request("GET", "/usage", url, username, password, params=params)
            if as_json:
                console.print_json(data=body)
                return
            keys = {
                "application": ["application"],
                "cartridge": ["cartridge"],
                "cluster": ["application", "cluster", "cartridge"],
            }[body["groupBy"]]
            figures = ["member_seconds", "pending_seconds", "scaling_actions", "requests_served"]
            if as_csv:
                writer = csv.writer(sys.stdout)
                writer.writerow([*keys, *figures, "by_instance_type", "by_partition"])
                for row in body["rows"]:
                    writer.writerow(
                        [
                            *(row[k] for k in keys),
                            *("" if row[f] is None else row[f] for f in figures),
                            json.dumps(row["by_instance_type"]),
                            json.dumps(row["by_partition"]),
                        ]
                    )
                return
            table = Table(title=f"Usage of {body['tenant']} from {body['from'][:19]} to {body['to'][:19]}")
            for column in [*keys, *figures, "by partition"]:
                table.add_column(column, justify="right" if column in figures else "left")
            for row in body["rows"]:
                table.add_row(
                    *(row[k] for k in keys),
                    f"{row['member_seconds']:.1f}",
                    f"{row['pending_seconds']:.1f}",
                    str(row["scaling_actions"]),
                    "–" if row["requests_served"] is None else str(row["requests_served"]),
                    ", ".join(f"{p} {s:.0f}s" for p, s in row["by_partition"].items()),
                )
            console.print(table if body["rows"] else "no usage in that period")

        run(action)

    @app.command("status")
    def status(
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        direct: Annotated[
            bool, typer.Option("--direct", help="read the broker (STRATOS_KAFKA_BOOTSTRAP) instead of asking the API")
        ] = False,
        as_json: AsJson = False,
    ) -> None:
        """Each part of the platform: running or stopped, its lag on the topics it reads, its last error."""

        def action() -> None:
            try:
                body = _direct_status() if direct else request("GET", "/health", url, username, password)
            except Failed as failure:
                if direct or "cannot reach" not in str(failure):
                    raise
                raise Failed(f"{failure}; `stratos status --direct` reads the broker instead") from failure
            if as_json:
                console.print_json(data=body)
            else:
                _status_table(body)
            if not body["healthy"]:
                raise typer.Exit(3)

        run(action)

    @app.command("usage-export")
    def usage_export() -> None:
        """Run the usage exporter: `<prefix>usage` gets one record per period (STRATOS_USAGE_PERIOD_SECONDS,
        an hour) and cluster; with OTEL_EXPORTER_OTLP_ENDPOINT set, also OTLP metrics."""
        from infra.cli.common import require_bootstrap, setup_logging
        from infra.observe.heartbeat import start_part
        from infra.observe.usage import UsageExporter

        setup_logging()
        settings = require_bootstrap()
        beats = start_part(settings, "usage-export")
        exporter = UsageExporter(settings)
        signal.signal(signal.SIGTERM, lambda *_: exporter.stop())
        console.print(
            f"[green]usage exporter[/] to {settings.topic('usage')}{' and OTLP' if exporter.otel is not None else ''}"
        )
        try:
            exporter.run()
        except KeyboardInterrupt:
            exporter.stop()
        finally:
            if beats:
                beats.stop()


def _direct_status() -> dict:
    from infra.observe.status import platform_status
    from infra.settings import get_settings

    settings = get_settings()
    if not settings.kafka_bootstrap:
        raise Failed("--direct needs STRATOS_KAFKA_BOOTSTRAP")
    return platform_status(settings)


def _status_table(body: dict) -> None:
    table = Table(title=f"Platform status: {'healthy' if body['healthy'] else 'NOT healthy'}")
    for column in ("part", "state", "processes", "lag", "last error"):
        table.add_column(column)
    colours = {"running": "green", "stopped": "red", "unreachable": "red", "not seen": "dim"}
    for part in body["parts"]:
        lag = ", ".join(f"{topic} {count}" for topic, count in part.get("lag", {}).items()) or (
            "–" if part["part"] != "broker" else part.get("address", "")
        )
        processes = ", ".join(
            f"{p['process']} ({p['state']}, {p['lastBeatSecondsAgo']}s ago)" for p in part.get("processes", [])
        )
        state = part["state"]
        table.add_row(
            part["part"],
            f"[{colours.get(state, '')}]{state}[/]",
            escape(processes),
            lag,
            escape(part.get("lastError") or ""),
        )
    console.print(table)
    for kind, rejected in body.get("rejected", {}).items():
        console.print(
            f"[yellow]{rejected['records']} {kind} record(s) refused for their signature[/] "
            f"(dead-lettered; `stratos deadletter list --topic {kind}`), the latest: {escape(rejected['lastReason'])}"
        )
