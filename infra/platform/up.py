"""Wiring of `stratos up`: broker, topics, supervised parts, the sample."""

from __future__ import annotations

import json
import logging
import threading
from importlib import resources
from pathlib import Path

from rich.console import Console

from infra.auth.tls import TlsConfigError, server_certificate, trusted_ca
from infra.broker import BrokerError, EmbeddedBroker, acls
from infra.broker.secure import (
    PLATFORM_PRINCIPAL,
    SECURE_FIELDS,
    as_platform_principal,
    broker_security,
    platform_client_env,
)
from infra.cloud.mock.account import access_key
from infra.lb.balancer import haproxy_binary
from infra.log.kafka import TopicsError, ensure_topics, require_sound_topics
from infra.platform.supervisor import Supervisor, child_env
from infra.settings import get_settings
from schemas.envelope import SUPER_TENANT

log = logging.getLogger(__name__)

SAMPLE_ORDER = [
    ("networkPartition", "network-partition.json"),
    ("cartridge", "php.json"),
    ("autoscalingPolicy", "autoscaling-policy.json"),
    ("deploymentPolicy", "deployment-policy.json"),
    ("applicationPolicy", "application-policy.json"),
    ("application", "application-single-cartridge.json"),
]


def parts(api_port: int, demo: bool, secure: bool = False) -> dict[str, list[str]]:
    """Each supervised part and its `stratos` arguments."""
    patterns = resources.files("infra") / "samples" / "health-patterns.yaml"
    return {
        "node": ["node"],
        "reactor": ["reactor"],
        "mock-iaas": ["mock-iaas", "--patterns", str(patterns)],
        "cloud": ["cloud"],
        "health": ["health"],
        "api": ["api", "--port", str(api_port)] + (["--demo"] if demo else []),
        "topology": ["topology"],
        **({"lb": ["lb"]} if haproxy_binary() else {}),
        "usage-export": ["usage-export"],
        **({"tenant-replies": ["tenant-replies"]} if secure else {}),
    }


def load_sample(settings, console: Console) -> None:
    """Define the sample application and deploy it (already present after a restart: fine)."""
    from infra.log.commands_client import CommandClient
    from schemas import commands as C
    from schemas.definitions import DEFINITION_KINDS
    from schemas.envelope import SUPER_TENANT
    from schemas.ids import aggregate_id
    from schemas.status import CommandRejected

    client = CommandClient(settings)
    try:
        samples = resources.files("infra") / "samples"
        app_id = None
        for kind, name in SAMPLE_ORDER:
            model = DEFINITION_KINDS[kind].model_validate(json.loads((samples / name).read_text()))
            verb = getattr(C, f"Add{kind[0].upper()}{kind[1:]}")
            reply = client.call(aggregate_id(SUPER_TENANT, kind, model.definition_id), verb(definition=model))
            if isinstance(reply, CommandRejected) and reply.code != 409:
                console.print(f"[red]sample {name}:[/] {reply.reason}")
            if kind == "application":
                app_id = model.definition_id
        reply = client.call(
            aggregate_id(SUPER_TENANT, "application", app_id),  # type: ignore[arg-type]
            C.DeployApplication(application_policy_id="application-policy-1"),
        )
        if isinstance(reply, CommandRejected) and reply.code != 409:
            console.print(f"[red]deploy {app_id}:[/] {reply.reason}")
        else:
            console.print(f"sample application [bold]{app_id}[/] deployed")
    finally:
        client.close()


def run_platform(
    bootstrap: str | None,
    api_port: int,
    sample: bool,
    state_dir: Path,
    console: Console,
    process: bool = False,
    tls: bool = False,
    brokers: int = 1,
    secure: bool = False,
) -> int:
    from infra.cli.common import revive_printing, wait_for_interrupt

    settings = get_settings()
    settings.state_dir = state_dir  # the sample loader seals with the parts' key (infra/auth/secrets.py)
    state_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    supervisor = None
    kafka_env: dict[str, str] = {}
    try:
        if secure and (bootstrap or settings.kafka_bootstrap):
            raise BrokerError(
                "--secure starts the embedded Kafka with SASL_SSL; for a Kafka of your own set "
                "STRATOS_KAFKA_SECURITY_PROTOCOL, _USERNAME, _PASSWORD and _CA instead"
            )
        if bootstrap or settings.kafka_bootstrap:
            settings.kafka_bootstrap = bootstrap or settings.kafka_bootstrap
        else:
            console.print(
                f"starting Apache Kafka ({brokers} node{'s' if brokers > 1 else ''}, data in {state_dir / 'kafka'})"
                + (", SASL_SSL with SCRAM-SHA-512 and ACLs" if secure else "")
                + " ..."
            )
            broker = EmbeddedBroker(
                data_dir=state_dir / "kafka",
                brokers=brokers,
                log_path=state_dir / "logs" / "kafka.log",
                security=broker_security(settings) if secure else None,
            ).start()
            settings.kafka_bootstrap = broker.bootstrap
            settings.replication_factor = min(brokers, 3)
            if secure:  # this process (topics, the sample) and every part: the platform's principal
                kafka_env = platform_client_env(settings)
                for name, value in as_platform_principal(settings).model_dump(include=SECURE_FIELDS).items():
                    setattr(settings, name, value)
        ensure_topics(settings)
        require_sound_topics(settings)
        if secure:  # the super tenant's instances and clients; other tenants' by kafka-acls
            grants = acls.plan(settings, [SUPER_TENANT])
            acls.apply(settings, grants)
            console.print(
                f"Kafka ACLs for {', '.join(acls.principals(grants))} applied; a tenant's Kafka "
                "instances and clients: `stratos kafka-acls --tenant DOMAIN --apply`"
            )
        tls = tls or settings.api_tls
        here = settings.model_copy(update={"api_tls": tls, "state_dir": state_dir.absolute()})
        access_key(here)  # the mock IaaS's key and the certificate: made once, before the parts start
        if tls:
            cert, _key = server_certificate(here)
            console.print(f"HTTPS with {cert} (clients trust it: STRATOS_API_CA={trusted_ca(here)})")
        extra = {
            "STRATOS_API_PORT": str(api_port),
            "STRATOS_STATE_DIR": str(state_dir.absolute()),
            "STRATOS_REPLICATION_FACTOR": str(settings.replication_factor),
            **({"STRATOS_MOCK_IAAS_MODE": "process"} if process else {}),
            **({"STRATOS_API_TLS": "1"} if tls else {}),
            **kafka_env,
        }
        supervisor = Supervisor(child_env(settings.kafka_bootstrap, extra), state_dir / "logs")  # type: ignore[arg-type]
        demo = not settings.admin_password
        for name, args in parts(api_port, demo, secure).items():
            supervisor.add(name, *args)
        threading.Thread(target=supervisor.run, name="supervisor", daemon=True).start()
        console.print(
            f"[green]Stratos-ES[/] on Kafka [bold]{settings.kafka_bootstrap}[/]"
            f"{' (embedded broker)' if broker else ''}"
            f"{' over SASL_SSL as principal ' + PLATFORM_PRINCIPAL if secure else ''}; logs in {state_dir / 'logs'}"
        )
        password = "admin (demo only: set STRATOS_ADMIN_PASSWORD)" if demo else "<STRATOS_ADMIN_PASSWORD>"
        user = f"{settings.admin_username} / {password}"
        base = f"{'https' if tls else 'http'}://127.0.0.1:{api_port}"
        console.print(f"console:  {base}/   REST API: {base}/api   user {user}")
        console.print(
            f"mock IaaS: {base}/mock-iaas/api/instances (state in {state_dir / 'mock-iaas'})"
            f"{' (process mode: every member a real process)' if process else ''}"
        )
        console.print(
            f"load balancer: HAProxy on {settings.lb_bind}, proxy ports of the cartridges (`stratos lb-status`)"
            if haproxy_binary()
            else "load balancer: [yellow]not started[/]: haproxy is not on PATH (apt-get install -y haproxy)"
        )
        if sample:
            load_sample(settings, console)
        console.print("running; Ctrl-C stops everything")
        wait_for_interrupt(revive_printing(broker) if broker else None)
        return 0
    except (BrokerError, TlsConfigError, TopicsError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    finally:  # parts first (Ctrl-C may come at any point), the broker they use last
        if supervisor:
            supervisor.stop()
        if broker:
            broker.stop()
