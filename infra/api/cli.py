"""`stratos api`: serve the REST API and the console."""

from __future__ import annotations

import typer

from infra.cli.common import as_part, console, require_bootstrap, setup_logging


def register(app: typer.Typer) -> None:
    app.command()(api)


def api(
    port: int = typer.Option(None, help="port; default STRATOS_API_PORT (9443)"),
    demo: bool = typer.Option(False, "--demo", help="admin/admin when STRATOS_ADMIN_PASSWORD is unset"),
) -> None:
    """Serve the REST API (Stratos 4.1 paths under /api) with uvicorn until Ctrl-C."""
    from infra.api.app import ConfigurationError, create_app
    from infra.api.server import serve
    from infra.auth.tls import TlsConfigError, tls_options

    setup_logging()
    settings = as_part(require_bootstrap(), "api")
    try:
        application = create_app(settings, demo=demo)
        tls_options(settings)
    except (ConfigurationError, TlsConfigError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    serve(
        application,
        host=settings.api_host,
        port=port or settings.api_port,
        log_level="warning",
        **tls_options(settings),
    )
