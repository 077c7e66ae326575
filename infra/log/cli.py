"""`stratos log export/import`, `stratos deadletter list/replay`, `stratos schemas export /
asyncapi / check / baseline`: the archive and the client contract."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from infra.cli.common import console, require_bootstrap

log_app = typer.Typer(
    help="Archive the log: export every topic that carries history, import it into a fresh broker.",
    no_args_is_help=True,
)
deadletter_app = typer.Typer(
    help="Records the platform refused: list them, re-send corrected ones.", no_args_is_help=True
)
schemas_app = typer.Typer(help="JSON Schemas of every topic record.")
BASELINE = Path(__file__).resolve().parents[2] / "docs" / "schemas"
"""The published schemas (the compatibility baseline), checked in."""


def register_schemas(app: typer.Typer) -> None:
    """`stratos schemas ...` (the first group of `stratos --help`)."""
    app.add_typer(schemas_app, name="schemas")
    schemas_app.command("export")(schemas_export)
    schemas_app.command("asyncapi")(schemas_asyncapi)
    schemas_app.command("check")(schemas_check)
    schemas_app.command("baseline")(schemas_baseline)


def register(app: typer.Typer) -> None:
    """`stratos log ...` and `stratos deadletter ...`."""
    app.add_typer(log_app, name="log")
    app.add_typer(deadletter_app, name="deadletter")


def _settings():
    return require_bootstrap()


def _fail(message: str, code: int = 2):
    console.print(f"[red]error:[/] {message}")
    raise typer.Exit(code)


def _broker_errors():
    """What talking to the broker or the file system can raise, for a clear error line."""
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    return (KafkaError, AioKafkaError, OSError, TimeoutError)


def _topics(text: str | None):
    from schemas.records import TOPIC_RECORDS

    if not text:
        return None
    topics = [t.strip() for t in text.split(",") if t.strip()]
    if unknown := [t for t in topics if t not in TOPIC_RECORDS]:
        _fail(f"--topics: unknown topic {', '.join(unknown)} (one of {', '.join(TOPIC_RECORDS)})")
    return topics


# --- log export / import ----------------------------------------------------------------------


@log_app.command("export")
def log_export(
    file: Path = typer.Argument(..., help="archive to write (replaced if it exists)"),
    topics: str = typer.Option(None, help="comma-separated topics (default: every topic but topology)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write every record of the topics that carry history to a compressed, checksummed archive."""
    from infra.log.archive import HISTORY_TOPICS, export_log

    try:
        result = export_log(_settings(), file, _topics(topics) or HISTORY_TOPICS)
    except _broker_errors() as exc:
        _fail(f"export to {file}: {exc}", 1)
    if as_json:
        print(json.dumps({"file": str(file), **result.as_dict()}))
        return
    counts = ", ".join(f"{t} {n:,}" for t, n in result.records.items())
    console.print(
        f"exported {result.total:,} records ({counts}) to {file}: {result.bytes:,} bytes, "
        f"{result.blocks} blocks, {result.seconds:.1f}s"
    )


@log_app.command("import")
def log_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="an archive written by export"),
    topics: str = typer.Option(None, help="only these topics of the archive (comma-separated)"),
    reread: bool = typer.Option(
        False,
        "--reread",
        help="leave the platform's consumer groups "
        "without offsets: a platform started on the copy handles every "
        "imported record again",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write an archive back into empty topics (a fresh broker or STRATOS_TOPIC_PREFIX), each record
    at its original offset, and mark it handled for the platform's consumer groups. A corrupt or
    truncated archive imports its intact prefix, says where it stops, and exits 1."""
    from infra.log.archive import ImportRefused, import_log
    from infra.log.kafka import ensure_topics

    settings = _settings()
    ensure_topics(settings)
    try:
        result = import_log(settings, file, _topics(topics), reread=reread)
    except ImportRefused as exc:
        _fail(str(exc))
    except _broker_errors() as exc:
        _fail(f"import of {file}: {exc}", 1)
    if as_json:
        print(json.dumps({"file": str(file), **result.as_dict()}))
    else:
        counts = ", ".join(f"{t} {n:,}" for t, n in result.records.items()) or "nothing"
        console.print(
            f"imported {result.total:,} records ({counts}) in {result.seconds:.1f}s"
            + (f"; consumer groups {', '.join(result.groups_marked)} start after them" if result.groups_marked else "")
        )
        if result.offset_mismatches:
            console.print(
                f"[yellow]warning:[/] {result.offset_mismatches} batches landed at other offsets "
                f"than archived (snapshots name events offsets)"
            )
        if result.corrupt:
            console.print(f"[red]error:[/] {result.corrupt}")
        elif not result.complete:
            console.print("[yellow]warning:[/] the archive has no end marker: its writer did not finish")
    if result.corrupt:
        raise typer.Exit(1)


@log_app.command("generate")
def log_generate(
    records: int = typer.Option(2_000_000, min=1, help="commits to append to the events topic"),
    clusters: int = typer.Option(1000, min=1, help="clusters of the simulated platform"),
    tenants: int = typer.Option(20, min=1, help="tenants (each with its definitions)"),
    days: float = typer.Option(7.0, min=0.001, help="the history's span: it ends now"),
    takeovers: int = typer.Option(8, min=0, help="times a partition changes hands along the history"),
    snapshot_every: int = typer.Option(
        None, min=1, help="commits of a partition between checkpoints (default STRATOS_SNAPSHOT_EVERY)"
    ),
    seed: int = typer.Option(7),
    workers: int = typer.Option(2, min=1, help="processes, each writing its own partitions"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Append a long, realistic history, decided and written as the node does it (docs/log.md):
    for measuring restarts, takeovers and time travel on an old log."""
    import time
    from datetime import timedelta

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from infra.log.generate import HistoryNotEmpty, generate_log
    from infra.log.kafka import ensure_topics

    settings = _settings()
    started = time.perf_counter()
    with Progress(
        TextColumn("[bold]commits"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=as_json,
        transient=True,
    ) as progress:
        task = progress.add_task("commits", total=records, rate="")

        def advance(done: int) -> None:
            rate = done / max(time.perf_counter() - started, 1e-6)
            progress.update(task, completed=done, rate=f"{rate:,.0f}/s")

        try:
            ensure_topics(settings)
            result = generate_log(
                settings,
                records,
                clusters=clusters,
                tenants=tenants,
                span=timedelta(days=days),
                takeovers=takeovers,
                seed=seed,
                snapshot_every=snapshot_every,
                workers=workers,
                progress=advance,
            )
        except HistoryNotEmpty as exc:
            _fail(str(exc))
        except _broker_errors() as exc:
            _fail(f"generating the log: {exc}", 1)
    seconds = time.perf_counter() - started
    sizes = sorted(result.snapshots.snapshot_bytes) or [0]
    summary = {
        "commits": result.commits,
        "events": result.events,
        "rejected": result.rejected,
        "duplicates": result.duplicates,
        "aggregates": result.aggregates,
        "claims": result.claims,
        "checkpoints": result.checkpoints,
        "snapshots": result.snapshots.snapshots,
        "snapshot_bytes_median": sizes[len(sizes) // 2],
        "snapshot_bytes_max": sizes[-1],
        "snapshots_oversized": result.snapshots.oversized,
        "first": result.first.isoformat() if result.first else None,
        "last": result.last.isoformat() if result.last else None,
        "seconds": round(seconds, 1),
    }
    if as_json:
        print(json.dumps(summary))
        return
    console.print(
        f"appended {result.commits:,} commits ({result.events:,} events, {result.rejected:,} rejected; "
        f"{result.duplicates:,} duplicates answered from the dedup window) for {result.aggregates:,} aggregates, "
        f"{result.claims} claims, {result.checkpoints} checkpoints ({result.snapshots.snapshots:,} snapshots, "
        f"median {summary['snapshot_bytes_median']:,} bytes, largest {summary['snapshot_bytes_max']:,}), "
        f"from {summary['first']} to {summary['last']}, in {seconds:.0f}s ({result.commits / seconds:,.0f} commits/s)"
    )


# --- dead letters -----------------------------------------------------------------------------


@deadletter_app.command("list")
def deadletter_list(
    since: str = typer.Option(None, help="only newer ones: 10m, 2h, 1d or an ISO 8601 time"),
    topic: str = typer.Option(None, help="only those refused from this topic (e.g. commands)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dead letters with their id (PARTITION:OFFSET), time, source, reason, Connect headers and
    the original record."""
    from infra.log.deadletters import DeadLetterError, list_letters, parse_since

    settings = _settings()
    try:
        letters = list_letters(settings, parse_since(since) if since else None, topic)
    except DeadLetterError as exc:
        _fail(str(exc), exc.code)
    except _broker_errors() as exc:
        _fail(f"reading {settings.topic('deadletter')}: {exc}", 1)
    if as_json:
        print(json.dumps([letter.as_dict() for letter in letters], indent=2))
        return
    table = Table("id", "time", "from", "reason", "exception", "original", show_lines=True)
    for letter in letters:
        item = letter.as_dict()
        original = item["original"] if len(item["original"]) <= 120 else item["original"][:117] + "..."
        table.add_row(
            item["id"],
            f"{letter.record.occurred_at:%Y-%m-%d %H:%M:%S}",
            f"{item['source_topic']}[{item['source_partition']}]@{item['source_offset']}",
            item["reason"],
            (item["exception_class"] or "").rsplit(".", 1)[-1],
            original,
        )
    console.print(table)
    console.print(f"{len(letters)} dead letters")


@deadletter_app.command("replay")
def deadletter_replay(
    letter_id: str = typer.Argument(..., metavar="ID", help="PARTITION:OFFSET from `deadletter list`"),
    value: str = typer.Option(
        None, help="the corrected record: a JSON file, or - for stdin (default: the original, as it was)"
    ),
    sign: bool = typer.Option(
        False,
        "--sign",
        help="sign it as the platform (it is then taken as the platform's own: only for a record "
        "you have read); by default it goes out unsigned, with its sender's own headers",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Re-send a dead letter's record (or a corrected one, validated first) to its source topic,
    as its sender sent it (its token or signature, checked again) unless --sign."""
    from infra.log.deadletters import DeadLetterError, replay

    settings = _settings()
    body = None
    try:
        if value == "-":
            body = sys.stdin.buffer.read()
        elif value:
            body = Path(value).read_bytes()
    except OSError as exc:
        _fail(f"--value {value}: {exc.strerror or exc}")
    try:
        sent = replay(settings, letter_id, body, sign=sign)
    except DeadLetterError as exc:
        _fail(str(exc), exc.code)
    except _broker_errors() as exc:
        _fail(f"replay of {letter_id}: {exc}", 1)
    if as_json:
        print(
            json.dumps(
                {
                    "id": letter_id,
                    "topic": sent.topic,
                    "partition": sent.partition,
                    "offset": sent.offset,
                    "record_id": sent.record_id,
                    "signed_by_platform": sent.signed,
                    "sender_headers": list(sent.headers),
                }
            )
        )
        return
    how = (
        "[yellow]signed as the platform[/] (--sign): it is taken as the platform's own"
        if sent.signed
        else "unsigned, with its sender's headers ("
        + (", ".join(sent.headers) or "none")
        + "): checked as its sender's again"
    )
    console.print(
        f"re-sent dead letter {letter_id} as record {sent.record_id} to "
        f"{sent.topic}[{sent.partition}]@{sent.offset}, {how}"
    )


# --- schemas ----------------------------------------------------------------------------------


def schemas_export(directory: Path) -> None:
    """Write one JSON Schema per topic record type into DIRECTORY."""
    from schemas.records import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(f"wrote {path}")


def schemas_asyncapi(file: Path = typer.Argument(..., help="where to write the AsyncAPI 3.0 document (JSON)")) -> None:
    """Write the AsyncAPI 3.0 document of every topic (channel, key, message, JSON Schema, headers)."""
    from infra.settings import get_settings
    from schemas.asyncapi import asyncapi_document

    settings = get_settings()
    document = asyncapi_document(
        settings.topic_prefix, settings.partitions, bootstrap=settings.kafka_bootstrap or "127.0.0.1:9092"
    )
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(document, indent=2) + "\n")
    console.print(
        f"wrote {file}: {len(document['channels'])} channels, {len(document['components']['messages'])} messages"
    )


def schemas_check(
    baseline: Path = typer.Option(BASELINE, help="the published schemas"), as_json: bool = typer.Option(False, "--json")
) -> None:
    """Compare the models with the published schemas under Confluent's compatibility rules
    (BACKWARD for topics clients write, FULL for the rest); exit 1 on a break."""
    from schemas.compat import check_all
    from schemas.records import read_json_schemas, topic_schemas

    published = read_json_schemas(baseline)
    if not published:
        _fail(f"no *.schema.json in {baseline} (write them with `stratos schemas baseline`)")
    problems = check_all(published, topic_schemas())
    if as_json:
        print(json.dumps({"baseline": str(baseline), "compatible": not problems, "problems": problems}))
    else:
        for problem in problems:
            console.print(f"[red]break:[/] {problem}")
        console.print(
            "compatible with the published schemas"
            if not problems
            else f"{len(problems)} breaking changes against {baseline}"
        )
    if problems:
        raise typer.Exit(1)


def schemas_baseline(baseline: Path = typer.Option(BASELINE, help="where the published schemas live")) -> None:
    """Publish the current schemas as the new baseline (an intended, announced change)."""
    from schemas.records import export_json_schemas

    for path in baseline.glob("*.schema.json"):
        path.unlink()
    written = export_json_schemas(baseline)
    console.print(f"wrote {len(written)} schemas to {baseline}")
