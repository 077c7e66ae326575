"""`stratos member-key`: the signing key of one member, for an agent started by hand.

The cloud controller puts this key in every member's payload (`signingKey`); an operator who
starts an agent or a health client outside the platform asks for it here. It needs the platform
secret (`STRATOS_PLATFORM_SECRET` or the state directory's `platform.secret`): run it where the
platform runs.
"""

from __future__ import annotations

import json

import typer

from infra.auth.signing import member_credentials, member_signer_name, platform_secret
from infra.settings import get_settings


def member_key(
    tenant: str = typer.Option("carbon.super", help="the member's tenant"),
    cluster: str = typer.Option(..., help="its cluster id"),
    member: str = typer.Option(..., help="its member id"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Print the member's signing key (hex): STRATOS_AGENT_SIGNING_KEY for its agent."""
    key = member_credentials(platform_secret(get_settings()), tenant, cluster, member)["signingKey"]
    if as_json:
        typer.echo(json.dumps({"signer": member_signer_name(tenant, cluster, member), "signingKey": key}))
    else:
        typer.echo(key)


def register(app: typer.Typer) -> None:
    app.command("member-key")(member_key)
