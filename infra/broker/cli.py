"""`stratos broker` (the embedded Apache Kafka) and `stratos topics`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import typer
from rich.table import Table

from infra.cli.common import as_part, console, require_bootstrap, revive_printing, setup_logging, wait_for_interrupt
from infra.settings import get_settings


def register(app: typer.Typer) -> None:
    app.command()(broker)
    app.command()(topics)
    app.command("kafka-acls")(kafka_acls)
    app.command("tenant-replies")(tenant_replies)


def broker(
    port: int = typer.Option(0, help="loopback port of the (first) broker; 0 picks a free one"),
    data: Path = typer.Option(
        None, "--data", help="where Kafka keeps its log; unset = a temporary directory removed at exit"
    ),
    brokers: int = typer.Option(
        1, "--brokers", min=1, help="KRaft nodes (each broker and controller); 3 gives replication factor 3, min ISR 2"
    ),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="SASL_SSL only (SCRAM-SHA-512 over TLS, a certificate made into the state dir), the "
        "StandardAuthorizer with ACLs; the platform's principal and its password in "
        "<state dir>/kafka-tls/",
    ),
) -> None:
    """Start the embedded Apache Kafka (KRaft), create the topics, run until Ctrl-C."""
    from infra.broker import BrokerError, EmbeddedBroker
    from infra.broker.secure import SECURE_FIELDS, as_platform_principal, broker_security
    from infra.log.kafka import TopicsError, ensure_topics, require_sound_topics

    setup_logging()
    settings = get_settings()
    settings.replication_factor = min(brokers, 3)
    try:
        embedded = EmbeddedBroker(
            port or None, data_dir=data, brokers=brokers, security=broker_security(settings) if secure else None
        )
        with console.status(
            f"starting Apache Kafka ({brokers} node{'s' if brokers > 1 else ''}{', SASL_SSL' if secure else ''}) ..."
        ):
            embedded.start()  # once: entering the broker as a context would start it again
        try:
            settings.kafka_bootstrap = embedded.bootstrap
            if secure:
                for name, value in as_platform_principal(settings).model_dump(include=SECURE_FIELDS).items():
                    setattr(settings, name, value)
            created = ensure_topics(settings)
            require_sound_topics(settings)
            console.print(
                f"[green]broker[/] listening on [bold]{embedded.bootstrap}[/]"
                f"{' (SASL_SSL, SCRAM-SHA-512, ACLs)' if secure else ''}"
                f" ({len(created)} topics created, prefix {settings.topic_prefix!r},"
                f" data in {embedded.data_dir})"
            )
            console.print(
                f"use it with: export STRATOS_KAFKA_BOOTSTRAP={embedded.bootstrap}"
                + (f" STRATOS_REPLICATION_FACTOR={settings.replication_factor}" if brokers > 1 else "")
            )
            if secure:
                tls = settings.state_dir.absolute() / "kafka-tls"
                console.print(
                    f"  STRATOS_KAFKA_SECURITY_PROTOCOL=SASL_SSL STRATOS_KAFKA_CA={tls / 'ca.pem'} "
                    f'STRATOS_KAFKA_USERNAME=stratos STRATOS_KAFKA_PASSWORD="$(cat {tls / "stratos.password"})"'
                )
            wait_for_interrupt(revive_printing(embedded))
        finally:
            embedded.stop()
    except (BrokerError, TopicsError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def topics() -> None:
    """Create the platform's topics on STRATOS_KAFKA_BOOTSTRAP (idempotent)."""
    from infra.log.kafka import ensure_topics

    settings = require_bootstrap()
    created = ensure_topics(settings)
    console.print(f"created: {', '.join(created) or 'nothing (all present)'}")


def kafka_acls(
    tenant: list[str] = typer.Option(
        None, "--tenant", help="only these tenants' instance and client principals (default: every tenant in the log)"
    ),
    apply: bool = typer.Option(
        False, "--apply", help="create them: the tenants' reply and instance topics, SCRAM credentials, the ACLs"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The broker's ACLs of the platform's outside principals (each tenant's instances and
    clients); the platform's own principal is a super user. Prints them, or applies them with --apply."""
    from kafka.errors import KafkaError

    from infra.broker import acls

    settings = require_bootstrap()
    try:
        grants = acls.plan(settings, tenant or acls.known_tenants(settings))
        files = acls.apply(settings, grants) if apply else {}
    except (KafkaError, OSError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps({"applied": apply, "acls": [g.as_dict() for g in grants], "password_files": files}))
        return
    table = Table("principal", "operation", "topic (LITERAL)")
    for grant in grants:
        table.add_row(f"User:{grant.principal}", grant.operation, grant.topic)
    console.print(table)
    console.print("User:stratos (the platform's parts) and User:broker are super users: no ACL needed")
    if apply:
        for name, path in files.items():
            console.print(f'applied; {name}: STRATOS_KAFKA_USERNAME={name} STRATOS_KAFKA_PASSWORD="$(cat {path})"')


def tenant_replies() -> None:
    """Copy each tenant's replies to its own topic (`<prefix>replies.<tenant>`), and what its
    instances need (notices, member initialisations) to `<prefix>instances.<tenant>`, until Ctrl-C."""
    from infra.broker.fanout import TenantReplies

    setup_logging()
    part = TenantReplies(as_part(require_bootstrap(), "tenant-replies"))
    signal.signal(signal.SIGTERM, lambda *_: part.stop())
    try:
        part.run()
    except KeyboardInterrupt:
        part.stop()
