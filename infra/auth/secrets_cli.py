"""`stratos secrets …`: the keys that seal secrets in the log (infra/auth/secrets.py).

- `stratos secrets status [--json]`: where the keys come from, their ids, which one seals;
- `stratos secrets new-key`: print a fresh key (for STRATOS_SECRET_KEY);
- `stratos secrets rotate [--json]`: put a new key first in `<state dir>/secret.key` (with
  STRATOS_SECRET_KEY set, it prints the value to set instead: the new key, then the old ones);
- `stratos secrets usage [--json]`: how many secrets in the events topic each key sealed, so an
  old key is dropped only when nothing needs it.
"""

from __future__ import annotations

import json
from collections import Counter

import typer
from rich.console import Console

from infra.auth.secrets import SecretError, key_id, new_key, rotate_key_file, secret_box
from infra.settings import get_settings
from schemas.base import is_sealed, map_secrets

console = Console()
app = typer.Typer(help="Keys that seal secrets in the log: status, new key, rotation, usage.", no_args_is_help=True)


def _box():
    settings = get_settings()
    try:
        return settings, secret_box(settings)
    except SecretError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Where the keys come from and their ids; the first seals new secrets."""
    _, box = _box()
    found = {"source": box.source, "sealing_key": box.primary_id, "key_ids": box.key_ids}
    if as_json:
        typer.echo(json.dumps(found))
        return
    console.print(
        f"keys from [bold]{box.source}[/]: {', '.join(box.key_ids)}; "
        f"new secrets are sealed with [bold]{box.primary_id}[/]"
    )


@app.command("new-key")
def new_key_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Print a fresh key (url-safe base64, 32 bytes) for STRATOS_SECRET_KEY."""
    key = new_key()
    typer.echo(json.dumps({"key": key, "key_id": key_id(key)}) if as_json else key)


@app.command()
def rotate(as_json: bool = typer.Option(False, "--json")) -> None:
    """Seal new secrets with a new key; the old keys stay, so old records still open."""
    settings, box = _box()
    if settings.secret_key:
        fresh = new_key()
        value = ",".join([fresh, *box.keys])
        if as_json:
            typer.echo(
                json.dumps({"source": "STRATOS_SECRET_KEY", "sealing_key": key_id(fresh), "STRATOS_SECRET_KEY": value})
            )
            return
        console.print(
            "STRATOS_SECRET_KEY is set: set it to this value (new key first) and restart the platform's parts:",
            soft_wrap=True,
        )
        typer.echo(value)
        return
    kid = rotate_key_file(settings.state_dir)
    if as_json:
        typer.echo(json.dumps({"source": box.source, "sealing_key": kid}))
        return
    console.print(
        f"new key [bold]{kid}[/] first in {box.source}; restart the platform's parts "
        "to seal with it (the old keys stay, to open old records)"
    )


@app.command()
def usage(as_json: bool = typer.Option(False, "--json")) -> None:
    """Secrets in the events topic per key id that sealed them (and clear ones, from old logs)."""
    from infra.log.eventlog import read_history

    settings, box = _box()
    counts: Counter[str] = Counter()

    def count(secret: str) -> str:
        counts[box.sealed_with(secret) if is_sealed(secret) else "clear"] += 1
        return secret

    for _partition, _offset, commit in read_history(settings):
        map_secrets(commit.model_dump(mode="json"), count)
    if as_json:
        typer.echo(json.dumps(dict(counts)))
        return
    for kid, n in sorted(counts.items()):
        known = "" if kid == "clear" or kid in box.key_ids else " [red](not among the keys!)[/]"
        console.print(f"{kid}: {n} secrets{known}")
    if not counts:
        console.print("no secrets in the log")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="secrets")
