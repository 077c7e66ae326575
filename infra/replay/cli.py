"""Debugging by replay: `stratos state`, `digest`, `replay`, `history`, `diff` and `why`.

Every one of them reads the log without a consumer group and writes nothing: run them against
a live platform as often as you like.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from actors.causality import causes, effects
from actors.timeline import diff as diff_states
from actors.timeline import one_line, platform_view
from infra.cli.common import require_bootstrap
from infra.settings import get_settings
from schemas.base import masked

console = Console()


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def _settings():
    settings = get_settings()
    if not settings.kafka_bootstrap:
        raise _fail("STRATOS_KAFKA_BOOTSTRAP is not set (start `stratos broker` or `stratos up`)")
    return settings


def _guarded(run: Callable[[], Any]) -> Any:
    """Bad input becomes one clear line and exit code 2, never a traceback."""
    from infra.log.kafka import rejection_reason

    try:
        return run()
    except ValidationError as exc:
        raise _fail(rejection_reason(exc)) from exc
    except (ValueError, TimeoutError) as exc:
        raise _fail(str(exc)) from exc


def _time(text: str | None, option: str) -> datetime | None:
    from infra.replay.timetravel import PositionError, parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except PositionError as exc:
        raise _fail(f"{option}: {exc}") from exc


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(masked(value), indent=2, sort_keys=True, default=str))


def replay(
    at: str = typer.Option(
        None,
        "--at",
        help="ISO 8601 time, or PARTITION:OFFSET,… (inclusive; partitions not named are read to their end)",
    ),
    aggregate: str = typer.Option(None, help="only this aggregate (printed in full)"),
    what_if: Path = typer.Option(
        None, "--what-if", help="an autoscaling policy JSON: replay the cluster's recorded health through it"
    ),
    since: str = typer.Option(None, "--from", help="what-if: first hop compared (ISO 8601)"),
    until: str = typer.Option(None, "--to", help="what-if: last hop compared (ISO 8601)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The whole platform (or one aggregate) as it was at a past instant, rebuilt from snapshots
    plus the log; or, with --what-if, what a changed policy would have decided."""
    if what_if is not None:
        return _what_if(what_if, aggregate, _time(since, "--from"), _time(until, "--to"), as_json)
    if not at:
        raise _fail("--at is required (an ISO 8601 time or PARTITION:OFFSET,…), or give --what-if")
    from infra.replay.timetravel import parse_position, platform_at

    settings = _settings()
    position = _guarded(lambda: parse_position(at))
    found = _guarded(lambda: platform_at(settings, position, aggregate))
    if aggregate:
        if aggregate not in found:
            raise _fail(f"aggregate {aggregate!r} has no events at or before {position}", 1)
        state = found[aggregate].state.model_dump(mode="json")
        return (
            _print_json({"at": str(position), "aggregate": aggregate, "state": state})
            if as_json
            else console.print_json(json.dumps(masked(state), default=str))
        )
    view = platform_view(t.state for t in found.values())
    if as_json:
        return _print_json({"at": str(position), **view})
    console.print(f"[bold]platform at {position}[/] ({len(found)} aggregates)")
    _print_view(view)


def _print_view(view: dict) -> None:
    apps = Table("application", "status", "clusters", title="applications")
    for app_id, app in view["applications"].items():
        apps.add_row(
            app_id, str(app["status"]), ", ".join(f"{c.split('/')[-1]}={s}" for c, s in app["clusters"].items())
        )
    console.print(apps)
    clusters = Table("cluster", "status", "min/max", "members", title="clusters")
    for cluster_id, cluster in view["clusters"].items():
        members = (
            "\n".join(
                f"{m} {s['status']}{' (leaving)' if s['leaving'] else ''} {s['ip'] or ''}".rstrip()
                for m, s in cluster["members"].items()
            )
            or "-"
        )
        clusters.add_row(cluster_id, str(cluster["status"]), f"{cluster['min']}/{cluster['max']}", members)
    console.print(clusters)
    for kind, ids in sorted(view["definitions"].items()):
        console.print(f"[bold]{kind}[/] ({len(ids)}): {', '.join(ids)}")


def _what_if(policy_path: Path, aggregate: str | None, since, until, as_json: bool) -> None:
    from infra.replay.timetravel import what_if_from_log

    if not aggregate:
        raise _fail("--what-if needs --aggregate CLUSTER (e.g. carbon.super/cluster/app.php1.php.domain)")
    try:
        policy = json.loads(policy_path.read_text())
    except OSError as exc:
        raise _fail(f"--what-if {policy_path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(f"--what-if {policy_path}: not JSON: {exc}") from exc
    result = _guarded(lambda: what_if_from_log(_settings(), aggregate, policy, since, until))
    if as_json:
        return _print_json(
            {
                "cluster": aggregate,
                "policy": policy.get("id"),
                "totals": result.totals(),
                "samples_used": result.samples_used,
                "samples_skipped": result.samples_skipped,
                "verdicts": [v.as_json() for v in result.verdicts],
            }
        )
    table = Table(
        "time", "recorded", "what-if", "", title=f"{aggregate}: recorded vs policy {policy.get('id', policy_path.name)}"
    )
    for v in result.verdicts:
        table.add_row(
            f"{v.at:%H:%M:%S}",
            f"req {v.recorded_required} +{v.recorded_spawn} -{v.recorded_terminate}\n{v.recorded_reason}",
            f"req {v.what_if_required} +{v.what_if_spawn} -{v.what_if_terminate}\n{v.what_if_reason}",
            "[yellow]≠[/]" if v.differs else "",
        )
    console.print(table)
    totals = result.totals()
    console.print(
        f"{totals['hops']} hops: scale-ups recorded {totals['recorded_scale_ups']}, what-if "
        f"{totals['what_if_scale_ups']}; scale-downs recorded {totals['recorded_scale_downs']}, "
        f"what-if {totals['what_if_scale_downs']}; {totals['differing_hops']} hops differ "
        f"(nothing was sent)"
    )


def history(
    aggregate: str = typer.Argument(..., help="aggregate id, e.g. carbon.super/cluster/app.php1.php.domain"),
    since: str = typer.Option(None, "--since", help="ISO 8601"),
    until: str = typer.Option(None, "--until", help="ISO 8601"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """An aggregate's timeline: one line per event (and per rejected command) with its figures
    and the command that caused it."""
    from infra.replay.timetravel import timeline

    problems: list[str] = []
    entries = _guarded(
        lambda: timeline(_settings(), aggregate, _time(since, "--since"), _time(until, "--until"), problems)
    )
    if as_json:
        return _print_json([e.as_json() for e in entries])
    if not entries:
        raise _fail(f"no events for aggregate {aggregate!r} in that period", 1)
    for e in entries:
        style = "red" if e.outcome == "rejected" else "cyan"
        console.print(
            f"{e.at:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f" [{style}]{e.type}[/] {one_line(e.figures)}"
            f" [dim]← {e.command_type} {e.command_id} · {e.id}[/]",
            highlight=False,
        )
    for problem in problems:
        console.print(f"[yellow]warning:[/] {problem}")


def diff(
    aggregate: str = typer.Argument(..., help="aggregate id"),
    since: str = typer.Option(..., "--from", help="ISO 8601 time or PARTITION:OFFSET,…"),
    until: str = typer.Option(..., "--to", help="ISO 8601 time or PARTITION:OFFSET,…"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What changed in an aggregate's state between two instants."""
    from infra.replay.timetravel import parse_position, platform_at, state_json

    def masked_state(tracked) -> Any:
        return masked(state_json(tracked))

    settings = _settings()
    before_at, after_at = _guarded(lambda: parse_position(since)), _guarded(lambda: parse_position(until))
    before = masked_state(_guarded(lambda: platform_at(settings, before_at, aggregate)).get(aggregate))
    after = masked_state(_guarded(lambda: platform_at(settings, after_at, aggregate)).get(aggregate))
    if before is None and after is None:
        raise _fail(f"aggregate {aggregate!r} has no events at either instant", 1)
    changes = diff_states(before or {}, after or {})
    if as_json:
        return _print_json(
            {
                "aggregate": aggregate,
                "from": str(before_at),
                "to": str(after_at),
                "changes": [
                    {"path": list(c.path), "kind": c.kind, "before": c.before, "after": c.after} for c in changes
                ],
            }
        )
    if not changes:
        console.print("no change")
    for c in changes:
        mark = {"added": "[green]+[/]", "removed": "[red]-[/]", "changed": "[yellow]~[/]"}[c.kind]
        console.print(f"{mark} {c.dotted}: {_brief(c.before)} → {_brief(c.after)}", highlight=False)


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 100 else text[:99] + "…"


def why(
    record_id: str | None = typer.Argument(None, help="an event, command or health record id"),
    cluster: str | None = typer.Option(
        None,
        "--cluster",
        help="a cluster aggregate id (<tenant>/cluster/<id>) instead: its members, the last decision "
        "that changed it with its figures, and the verdict of its health now",
    ),
    show_effects: bool = typer.Option(False, "--effects", help="what it led to, instead of its causes"),
    reindex: bool = typer.Option(
        False,
        "--reindex",
        help="build the causation index again from the topics' start (after pointing at another broker)",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Follow causation ids back to the root across topics and aggregates (or forward with
    --effects); with --cluster, why a cluster has the members it has."""
    if cluster is not None and record_id is None:
        return _why_cluster(cluster, as_json)
    if record_id is None or cluster is not None:
        raise _fail("give a record id or --cluster <tenant>/cluster/<id> (one of them)")
    from infra.replay.causation_index import CausalIndex

    index = CausalIndex(_settings(), fresh=reindex)
    try:
        _guarded(index.refresh)
        if show_effects:
            if index.lookup(record_id) is None and not index.children(record_id):
                raise _fail(f"no record {record_id!r} in the log (events, commands, health, status)", 1)
            tree = effects(index.children, record_id)  # type: ignore[arg-type]
            if as_json:
                return _print_json(tree)
            root = Tree(f"[bold]{record_id}[/]")
            _grow(root, tree["effects"])
            console.print(root)
            if tree["truncated"]:
                console.print("[yellow](truncated)[/]")
            return
        chain, missing = causes(index.lookup, record_id)
        if not chain:
            raise _fail(f"no record {record_id!r} in the log (events, commands, health, status)", 1)
        if as_json:
            return _print_json({"chain": chain, "missing_cause": missing})
        for depth, link in enumerate(chain):
            console.print(("  " * depth) + ("← " if depth else "") + _describe(link), highlight=False)  # type: ignore[arg-type]
        if missing:
            console.print(
                ("  " * len(chain)) + f"← [yellow]{missing}[/] (not in the log: outside its "
                "retention, or sent by a client that does not log)"
            )
    finally:
        index.close()


def _why_cluster(cluster_key: str, as_json: bool) -> None:
    from infra.health.verdict import cluster_explained

    found = _guarded(lambda: cluster_explained(_settings(), cluster_key))
    if as_json:
        return _print_json(found)
    members, change, verdict = found["members"], found["last_change"], found["verdict"]
    console.print(
        f"[bold]{cluster_key}[/] {found['status']}: {members['active']} active, {members['pending']} pending "
        f"(min {members['min']}, max {members['max']})",
        highlight=False,
    )
    if change is None:
        console.print("last change: none by the autoscaler (the min rule and limits only)")
    else:
        console.print(
            f"last change: [cyan]{change['reason']}[/] {change['at'][:19]} required {change['required']}, "
            f"spawn {change['spawn']}, terminate {change['terminate']}: {one_line(change['figures'])} "
            f"[dim](commit {change['commit']}: stratos why follows it)[/]",
            highlight=False,
            soft_wrap=True,
        )
    if verdict is None:
        console.print("verdict now: none (no health sample in the last window)")
    else:
        acts = "the cluster would act on it" if verdict["changes_cluster"] else "changes nothing: not sent"
        console.print(
            f"verdict now: {verdict['reason']} ({acts}): {one_line(verdict['figures'])}",
            highlight=False,
            soft_wrap=True,
        )


def _describe(link: dict) -> str:
    figures = one_line(link.get("figures", {}))
    decision = (
        f" [dim](commit {link['commit']}, {link['outcome']} {link['command_type']})[/]" if "commit" in link else ""
    )
    return (
        f"[cyan]{link['type']}[/] {link['at'][11:23]} [dim]{link['topic']} {link['aggregate']}[/] "
        f"{figures}{decision} [dim]{link['id']}[/]"
    )


def _grow(node: Tree, children: list[dict]) -> None:
    for child in children:
        _grow(node.add(_describe(child["link"])), child["effects"])


def register_inspection(app: typer.Typer) -> None:
    """`stratos state` and `digest` (listed before `api` in `stratos --help`)."""
    app.command()(state)
    app.command()(digest)


def register(app: typer.Typer) -> None:
    for command in (replay, history, diff, why):
        app.command()(command)


def state(
    aggregate: str = typer.Argument(..., help="aggregate id, e.g. carbon.super/cluster/app.php1.php.domain"),
    until: str = typer.Option(None, help="stop after this event id (inclusive)"),
    events: bool = typer.Option(False, help="also list the events folded"),
) -> None:
    """Replay one aggregate from the log and print its state (at a past event with --until)."""
    from infra.replay.inspect_log import state_at
    from schemas.ids import parse_aggregate_id

    settings = require_bootstrap()
    try:
        parse_aggregate_id(aggregate)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    tracked, folded = state_at(settings, aggregate, until_event=until)
    if not folded:
        console.print(f"[red]error:[/] no events for aggregate {aggregate!r}")
        raise typer.Exit(1)
    if events:
        for record in folded:
            console.print(
                f"{record.aggregate_seq:>5} {record.occurred_at:%H:%M:%S} {record.type} "
                f"[dim]{record.id} cause={record.causation_id}[/]"
            )
    console.print_json(json.dumps(masked(tracked.state.model_dump(mode="json"))))


def digest() -> None:
    """Rebuild every aggregate from the log and print a digest of their states."""
    from infra.replay.inspect_log import digest_all

    value, count = digest_all(require_bootstrap())
    console.print(f"{value} ({count} aggregates)")
