"""The Stratos CLI verbs (`stratos add-cartridge -p php.json`, `stratos list-applications`, ...)
as clients of the REST API: rich tables and trees for people, `--json` for scripts.

Every failure prints the server's message (or why the server could not be reached) and exits 1;
never a traceback. (No `from __future__ import annotations`: typer reads the per-resource help
in the commands' annotations at runtime.)
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.json import JSON
from rich.table import Table
from rich.tree import Tree

from infra.auth.tls import scheme, verify_for
from infra.settings import get_settings

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # an error is one line: scripts grep it

Url = Annotated[str, typer.Option("--url", envvar="STRATOS_URL", help="the API's base URL")]
Username = Annotated[
    str, typer.Option("--username", "-u", envvar="STRATOS_USERNAME", help="user, or user@tenantDomain")
]
Password = Annotated[str, typer.Option("--password", "-pw", envvar="STRATOS_PASSWORD", help="password")]
AsJson = Annotated[bool, typer.Option("--json", help="print the server's JSON (for scripts)")]
DEFAULT_URL = f"{scheme(get_settings())}://127.0.0.1:9443"
"""https when STRATOS_API_TLS is set (`stratos up --tls`); the certificate trusted is
STRATOS_API_CA, else the state directory's generated one (infra/auth/tls.py)."""


@dataclass(frozen=True)
class Verbs:
    """One resource: its CLI words, its REST path, and the columns its list shows."""

    singular: str
    plural: str
    path: str
    columns: tuple[str, ...]


RESOURCES = [
    Verbs("cartridge", "cartridges", "cartridges", ("type", "category", "provider", "displayName", "version")),
    Verbs("cartridge-group", "cartridge-groups", "cartridgeGroups", ("name", "cartridges", "groups")),
    Verbs("network-partition", "network-partitions", "networkPartitions", ("id", "provider", "partitions")),
    Verbs("deployment-policy", "deployment-policies", "deploymentPolicies", ("id", "networkPartitions")),
    Verbs("autoscaling-policy", "autoscaling-policies", "autoscalingPolicies", ("id", "displayName", "loadThresholds")),
    Verbs(
        "application-policy", "application-policies", "applicationPolicies", ("id", "algorithm", "networkPartitions")
    ),
    Verbs("application", "applications", "applications", ("applicationId", "alias", "status", "description")),
    Verbs("kubernetes-cluster", "kubernetes-clusters", "kubernetesClusters", ("clusterId", "description")),
    Verbs("tenant", "tenants", "tenants", ("tenantDomain", "admin", "email", "active")),
    Verbs("user", "users", "users", ("userName", "role", "firstName", "lastName", "email")),
]


class Failed(Exception):
    """A message for the user; the command exits 1 after printing it."""


def request(method: str, path: str, url: str, username: str, password: str, **kwargs) -> Any:
    """Call the API; returns the decoded JSON body, raises Failed with the server's message."""
    try:
        with httpx.Client(
            base_url=f"{url.rstrip('/')}/api",
            auth=(username, password),
            timeout=60,
            verify=verify_for(url, get_settings()),
        ) as client:
            reply = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise Failed(f"cannot reach the Stratos API at {url}: {exc}") from exc
    try:
        body = reply.json()
    except ValueError:
        body = {"status": "error", "message": reply.text or reply.reason_phrase}
    if reply.is_error:
        message = body.get("message") if isinstance(body, dict) else None
        raise Failed(f"{message or body} (HTTP {reply.status_code})")
    return body


def run(action: Callable[[], None]) -> None:
    try:
        action()
    except Failed as failure:
        errors.print(f"[red]error:[/] {failure}", highlight=False)
        raise typer.Exit(1) from failure


def read_definition(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise Failed(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise Failed(f"{path} is not valid JSON: {exc}") from exc


def cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(cell(v.get("id") or v.get("name") or v) if isinstance(v, dict) else str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(k for k, v in value.items() if v)
    return "" if value is None else str(value)


def show_list(verbs: Verbs, items: list[dict]) -> None:
    table = Table(title=verbs.plural.replace("-", " ").capitalize())
    for column in verbs.columns:
        table.add_column(column)
    for item in items:
        table.add_row(*(cell(item.get(c)) for c in verbs.columns))
    console.print(table if items else f"no {verbs.plural.replace('-', ' ')} found")


def say(body: dict, as_json: bool) -> None:
    if as_json:
        console.print_json(data=body)
    else:
        console.print(body.get("message", ""), highlight=False, markup=False)  # Stratos's [labels] stay


def _resource_commands(app: typer.Typer, verbs: Verbs) -> None:
    def add(
        file: Annotated[Path, typer.Option("--resource-path", "-p", help="the JSON definition")],
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        run(
            lambda: say(request("POST", f"/{verbs.path}", url, username, password, json=read_definition(file)), as_json)
        )

    def update(
        file: Annotated[Path, typer.Option("--resource-path", "-p", help="the JSON definition")],
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        run(lambda: say(request("PUT", f"/{verbs.path}", url, username, password, json=read_definition(file)), as_json))

    def list_all(
        url: Url = DEFAULT_URL, username: Username = "admin", password: Password = "", as_json: AsJson = False
    ) -> None:
        def action() -> None:
            items = request("GET", f"/{verbs.path}", url, username, password)
            console.print_json(data=items) if as_json else show_list(verbs, items)

        run(action)

    def describe(
        id: Annotated[str, typer.Argument(help=f"the {verbs.singular}'s id")],
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        def action() -> None:
            body = request("GET", f"/{verbs.path}/{id}", url, username, password)
            console.print_json(data=body) if as_json else console.print(JSON.from_data(body))

        run(action)

    def remove(
        id: Annotated[str, typer.Argument(help=f"the {verbs.singular}'s id")],
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        run(lambda: say(request("DELETE", f"/{verbs.path}/{id}", url, username, password), as_json))

    for verb, function, what in (
        ("add", add, "Add {} from a JSON file."),
        ("update", update, "Update {} from a JSON file."),
        ("describe", describe, "Show {}."),
        ("remove", remove, "Remove {}."),
    ):
        noun = verbs.singular.replace("-", " ")
        app.command(
            f"{verb}-{verbs.singular}",
            help=what.format(("an " if noun[0] in "aeio" else "a ") + noun),
            rich_help_panel="Stratos",
        )(function)
    app.command(f"list-{verbs.plural}", help=f"List {verbs.plural.replace('-', ' ')}.", rich_help_panel="Stratos")(
        list_all
    )


def runtime_tree(runtime: dict) -> Tree:
    tree = Tree(f"[bold]{runtime['applicationId']}[/] {runtime['status']}")

    def clusters(node: Tree, instances: list[dict]) -> None:
        for cluster in instances:
            branch = node.add(f"cluster [bold]{cluster['clusterId']}[/] {cluster['status']}")
            for m in cluster["member"]:
                branch.add(
                    f"{m['memberId']} {m['status']} {m.get('defaultPrivateIP') or '-'} "
                    f"{m.get('defaultPublicIP') or '-'} {m['networkPartitionId']}/{m['partitionId']}"
                )

    def groups(node: Tree, instances: list[dict]) -> None:
        for group in instances:
            branch = node.add(f"group [bold]{group['alias']}[/] ({group['groupId']}) {group['status']}")
            clusters(branch, group["clusterInstances"])
            groups(branch, group["groupInstances"])

    for instance in runtime["applicationInstances"]:
        branch = tree.add(f"instance {instance['instanceId']} {instance['status']}")
        clusters(branch, instance["clusterInstances"])
        groups(branch, instance["groupInstances"])
    return tree


def _deployment_commands(app: typer.Typer) -> None:
    @app.command("deploy-application", rich_help_panel="Stratos")
    def deploy(
        application_id: Annotated[str, typer.Option("--application-id", "-a")],
        policy_id: Annotated[str, typer.Option("--application-policy-id", "-ap")],
        wait_active: Annotated[bool, typer.Option("--wait-active", help="show progress until Active")] = False,
        timeout: Annotated[float, typer.Option(help="seconds --wait-active waits")] = 600.0,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Deploy an application with an application policy."""

        def action() -> None:
            say(request("POST", f"/applications/{application_id}/deploy/{policy_id}", url, username, password), as_json)
            if wait_active:
                wait_for_active(application_id, timeout, url, username, password)

        run(action)

    @app.command("undeploy-application", rich_help_panel="Stratos")
    def undeploy(
        application_id: Annotated[str, typer.Argument()],
        force: Annotated[bool, typer.Option("--force", "-f", help="terminate without cleanup")] = False,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Undeploy an application (graceful unless --force)."""
        run(
            lambda: say(
                request(
                    "POST",
                    f"/applications/{application_id}/undeploy",
                    url,
                    username,
                    password,
                    params={"force": str(force).lower()},
                ),
                as_json,
            )
        )

    @app.command("describe-application-runtime", rich_help_panel="Stratos")
    def describe_runtime(
        application_id: Annotated[str, typer.Argument()],
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Show the application's groups, clusters and members with status and IPs."""

        def action() -> None:
            body = request("GET", f"/applications/{application_id}/runtime", url, username, password)
            console.print_json(data=body) if as_json else console.print(runtime_tree(body))

        run(action)


ApplicationId = Annotated[str, typer.Argument(help="the application's id")]
ResourcePath = Annotated[Path, typer.Option("--resource-path", "-p", help="the JSON file")]


def _signup_commands(app: typer.Typer) -> None:
    @app.command("add-application-signup", rich_help_panel="Stratos")
    def add_signup(
        application_id: ApplicationId,
        file: ResourcePath,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Sign your tenant up for a multi-tenant application, with its artifact repositories."""
        run(
            lambda: say(
                request(
                    "POST",
                    f"/applications/{application_id}/signup",
                    url,
                    username,
                    password,
                    json=read_definition(file),
                ),
                as_json,
            )
        )

    @app.command("describe-application-signup", rich_help_panel="Stratos")
    def describe_signup(
        application_id: ApplicationId,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Show your tenant's sign-up for an application."""

        def action() -> None:
            body = request("GET", f"/applications/{application_id}/signup", url, username, password)
            console.print_json(data=body) if as_json else show_list(REPOSITORIES, body["artifactRepositories"])

        run(action)

    @app.command("remove-application-signup", rich_help_panel="Stratos")
    def remove_signup(
        application_id: ApplicationId,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Remove your tenant's sign-up (and its domain mappings)."""
        run(lambda: say(request("DELETE", f"/applications/{application_id}/signup", url, username, password), as_json))

    @app.command("add-domain-mappings", rich_help_panel="Stratos")
    def add_mappings(
        application_id: ApplicationId,
        file: ResourcePath,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Map domain names to cartridge aliases of an application."""
        run(
            lambda: say(
                request(
                    "POST",
                    f"/applications/{application_id}/domainMappings",
                    url,
                    username,
                    password,
                    json=read_definition(file),
                ),
                as_json,
            )
        )

    @app.command("list-domain-mappings", rich_help_panel="Stratos")
    def list_mappings(
        application_id: ApplicationId,
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """List your tenant's domain mappings of an application."""

        def action() -> None:
            items = request("GET", f"/applications/{application_id}/domainMappings", url, username, password)
            console.print_json(data=items) if as_json else show_list(DOMAIN_MAPPINGS, items)

        run(action)

    @app.command("remove-domain-mappings", rich_help_panel="Stratos")
    def remove_mappings(
        application_id: ApplicationId,
        domains: Annotated[list[str], typer.Option("--domain-name", "-d", help="repeatable")],
        url: Url = DEFAULT_URL,
        username: Username = "admin",
        password: Password = "",
        as_json: AsJson = False,
    ) -> None:
        """Remove domain mappings of an application by domain name."""
        body = {"domainMappings": [{"domainName": d} for d in domains]}
        run(
            lambda: say(
                request("DELETE", f"/applications/{application_id}/domainMappings", url, username, password, json=body),
                as_json,
            )
        )


REPOSITORIES = Verbs("repository", "artifact-repositories", "", ("alias", "repoUrl", "repoUsername", "privateRepo"))
DOMAIN_MAPPINGS = Verbs(
    "domain-mapping", "domain-mappings", "", ("domainName", "cartridgeAlias", "contextPath", "clusterId")
)


def wait_for_active(application_id: str, timeout: float, url: str, username: str, password: str) -> None:
    """Show members becoming active until the application is Active (or the time is up)."""
    deadline = time.monotonic() + timeout
    with console.status("deploying...") as status:
        while True:
            runtime = request("GET", f"/applications/{application_id}/runtime", url, username, password)
            members = [m for i in runtime["applicationInstances"] for m in _members(i)]
            active = sum(1 for m in members if m["status"] == "Active")
            status.update(f"{application_id}: {runtime['status']}, {active}/{len(members)} members active")
            if runtime["status"] == "Active":
                console.print(f"{application_id} is Active ({len(members)} members)")
                return
            if time.monotonic() > deadline:
                raise Failed(
                    f"{application_id} is not Active after {timeout:.0f}s ({active}/{len(members)} members active)"
                )
            time.sleep(1)


def _members(node: dict):
    for cluster in node["clusterInstances"]:
        yield from cluster["member"]
    for group in node["groupInstances"]:
        yield from _members(group)


def register(app: typer.Typer) -> None:
    """Add the Stratos verbs to the `stratos` console script."""
    for verbs in RESOURCES:
        _resource_commands(app, verbs)
    _deployment_commands(app)
    _signup_commands(app)
