"""CLI verbs for the metadata service (`/metadata/api`): list, add and remove an application's
properties, or a cartridge alias's, with the API's credentials; `--json` for scripts.
(No `from __future__ import annotations`: typer reads the annotations at runtime.)
"""

from typing import Annotated
from urllib.parse import quote

import httpx
import typer
from rich.table import Table

from infra.api.client_cli import DEFAULT_URL, AsJson, Failed, Password, Url, Username, console, run, say

Application = Annotated[str, typer.Argument(help="the application id")]
Alias = Annotated[str | None, typer.Option("--alias", "-c", help="a cartridge alias: its cluster's properties")]
Key = Annotated[str, typer.Option("--key", "-k", help="the property's name")]


def _call(
    method: str, url: str, username: str, password: str, application: str, alias: str | None, tail: str = "", **kwargs
) -> dict:
    scope = f"/clusters/{alias}" if alias else ""
    target = f"{url.rstrip('/')}/metadata/api/applications/{application}{scope}/properties{tail}"
    try:
        reply = httpx.request(method, target, auth=(username, password), timeout=60, **kwargs)
    except httpx.HTTPError as exc:
        raise Failed(f"cannot reach the metadata service at {url}: {exc}") from exc
    try:
        body = reply.json()
    except ValueError:
        body = {"message": reply.text or reply.reason_phrase}
    if reply.is_error:
        raise Failed(f"{body.get('message', body) if isinstance(body, dict) else body} (HTTP {reply.status_code})")
    return body


def register(app: typer.Typer) -> None:
    @app.command("list-metadata", rich_help_panel="Stratos")
    def list_metadata(
        application: Application,
        alias: Alias = None,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """List an application's metadata properties (or a cartridge alias's)."""

        def action() -> None:
            found = _call("GET", url, username, password, application, alias)
            if as_json:
                console.print_json(data=found)
                return
            table = Table(title=f"Metadata of {application}" + (f" / {alias}" if alias else ""))
            table.add_column("key")
            table.add_column("values")
            for prop in found["properties"]:
                table.add_row(prop["key"], ", ".join(prop["values"]))
            console.print(table if found["properties"] else "no properties")

        run(action)

    @app.command("add-metadata", rich_help_panel="Stratos")
    def add_metadata(
        application: Application,
        key: Key,
        values: Annotated[list[str], typer.Option("--value", "-v", help="a value (repeat for more)")],
        alias: Alias = None,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Publish a property: an application's gains the values it lacks, a cluster's is set to them."""
        run(
            lambda: say(
                _call("POST", url, username, password, application, alias, json={"key": key, "values": values}), as_json
            )
        )

    @app.command("remove-metadata", rich_help_panel="Stratos")
    def remove_metadata(
        application: Application,
        key: Key,
        value: Annotated[str | None, typer.Option("--value", "-v", help="only this value")] = None,
        alias: Alias = None,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Remove a property, or one of its values."""
        tail = f"/{quote(key, safe='')}" + (f"/value/{quote(value, safe='')}" if value is not None else "")
        run(lambda: say(_call("DELETE", url, username, password, application, alias, tail), as_json))
