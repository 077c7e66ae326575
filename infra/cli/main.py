"""`stratos`: the one console script for every command of the platform."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

from infra.auth.cli import register as register_signing
from infra.contract_cli import register as register_contract_verbs
from infra.iaas.cli import register as register_mock_iaas
from infra.lb.cli import register as register_lb
from infra.manager_cli import register as register_stratos_verbs
from infra.metadata_cli import register as register_metadata_verbs
from infra.replay_cli import register as register_replay
from infra.observe.cli import register as register_observe_verbs
from infra.secrets_cli import register as register_secrets
from infra.settings import get_settings
from schemas.base import masked

app = typer.Typer(help="Stratos-ES: a PaaS control plane on an event log.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
schemas_app = typer.Typer(help="JSON Schemas of every topic record.")
app.add_typer(schemas_app, name="schemas")
app.command("simulate")(__import__("infra.simulation.cli", fromlist=["simulate"]).simulate)
console = Console()


def _logging() -> None:
    logging.basicConfig(level=get_settings().log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


@app.command()
def broker(port: int = typer.Option(0, help="loopback port of the (first) broker; 0 picks a free one"),
           data: Path = typer.Option(None, "--data", help="where Kafka keeps its log; unset = a "
                                     "temporary directory removed at exit"),
           brokers: int = typer.Option(1, "--brokers", min=1, help="KRaft nodes (each broker and "
                                       "controller); 3 gives replication factor 3, min ISR 2")) -> None:
    """Start the embedded Apache Kafka (KRaft), create the topics, run until Ctrl-C."""
    from infra.broker import BrokerError, EmbeddedBroker
    from infra.kafka import TopicsError, ensure_topics, require_sound_topics

    _logging()
    settings = get_settings()
    settings.replication_factor = min(brokers, 3)
    try:
        with console.status(f"starting Apache Kafka ({brokers} node{'s' if brokers > 1 else ''}) ..."):
            embedded = EmbeddedBroker(port or None, data_dir=data, brokers=brokers).start()
        with embedded:
            settings.kafka_bootstrap = embedded.bootstrap
            created = ensure_topics(settings)
            require_sound_topics(settings)
            console.print(f"[green]broker[/] listening on [bold]{embedded.bootstrap}[/]"
                          f" ({len(created)} topics created, prefix {settings.topic_prefix!r},"
                          f" data in {embedded.data_dir})")
            console.print(f"use it with: export STRATOS_KAFKA_BOOTSTRAP={embedded.bootstrap}"
                          + (f" STRATOS_REPLICATION_FACTOR={settings.replication_factor}" if brokers > 1 else ""))
            wait_for_interrupt()
    except (BrokerError, TopicsError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1)


@app.command()
def topics() -> None:
    """Create the platform's topics on STRATOS_KAFKA_BOOTSTRAP (idempotent)."""
    from infra.kafka import ensure_topics

    settings = _require_bootstrap()
    created = ensure_topics(settings)
    console.print(f"created: {', '.join(created) or 'nothing (all present)'}")


@schemas_app.command("export")
def schemas_export(directory: Path) -> None:
    """Write one JSON Schema per topic record type into DIRECTORY."""
    from schemas.records import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(f"wrote {path}")


@app.command()
def node(base: str = typer.Option("simpleSystemBase", help="thespian system base"),
         timer_seconds: float = typer.Option(30.0, help="how often timeouts are checked")) -> None:
    """Run a node: claims command partitions, rebuilds their aggregates, handles commands."""
    from infra.kafka import TopicsError, require_sound_topics
    from infra.node import Node

    _logging()
    settings = _require_bootstrap()
    try:
        require_sound_topics(settings)  # the node rebuilds from history: it must all be there
    except TopicsError as exc:
        console.print(f"[red]error:[/] the node refuses to start: {exc}")
        raise typer.Exit(3)
    _part(settings, "node")
    node_ = Node(settings, base=base, timer_seconds=timer_seconds)
    signal.signal(signal.SIGTERM, lambda *_: node_.stop())
    try:
        node_.run()
    except KeyboardInterrupt:
        node_.stop()


@app.command()
def reactor() -> None:
    """Run the reactor: turns events, replies and instance status into follow-up commands."""
    from infra.reactor import Reactor

    _logging()
    reactor_ = Reactor(_part(_require_bootstrap(), "reactor"))
    signal.signal(signal.SIGTERM, lambda *_: reactor_.stop())
    try:
        reactor_.run()
    except KeyboardInterrupt:
        reactor_.stop()


def _part(settings, name: str):
    """A supervised part: heartbeats (and its lines on <prefix>logs with STRATOS_LOG_TO_KAFKA=1)."""
    from infra.observe.heartbeat import start_part

    beats = start_part(settings, name)
    if beats is not None:
        import atexit

        atexit.register(beats.stop)
    return settings


def _require_bootstrap():
    settings = get_settings()
    if not settings.kafka_bootstrap:
        console.print("[red]error:[/] STRATOS_KAFKA_BOOTSTRAP is not set (start `stratos broker` "
                      "or `stratos up`)")
        raise typer.Exit(2)
    return settings


@app.command()
def up(bootstrap: str = typer.Option(None, help="use this Kafka instead of the embedded broker"),
       api_port: int = typer.Option(9443, help="port of the REST API and console"),
       no_sample: bool = typer.Option(False, "--no-sample", help="start empty"),
       state_dir: Path = typer.Option(Path("state"), help="where Kafka's log, the mock cloud and the logs go"),
       brokers: int = typer.Option(1, "--brokers", min=1, help="embedded Kafka nodes (3: replicated)"),
       process: bool = typer.Option(False, "--process", help="mock IaaS in process mode: every member "
                                    "a real `stratos agent` with an HTTP server"),
       tls: bool = typer.Option(False, "--tls", help="HTTPS (as STRATOS_API_TLS=1): a self-signed certificate "
                                "made into the state dir, or STRATOS_API_TLS_CERT/_KEY")) -> None:
    """Start the whole platform (embedded broker by default) until Ctrl-C."""
    from infra.platform import run_platform

    _logging()
    raise typer.Exit(run_platform(bootstrap=bootstrap, api_port=api_port, sample=not no_sample,
                                  state_dir=state_dir, console=console, process=process, tls=tls,
                                  brokers=brokers))


@app.command()
def state(aggregate: str = typer.Argument(..., help="aggregate id, e.g. carbon.super/cluster/app.php1.php.domain"),
          until: str = typer.Option(None, help="stop after this event id (inclusive)"),
          events: bool = typer.Option(False, help="also list the events folded")) -> None:
    """Replay one aggregate from the log and print its state (at a past event with --until)."""
    import json

    from infra.inspect_log import state_at
    from schemas.ids import parse_aggregate_id

    settings = _require_bootstrap()
    try:
        parse_aggregate_id(aggregate)
    except ValueError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2)
    tracked, folded = state_at(settings, aggregate, until_event=until)
    if not folded:
        console.print(f"[red]error:[/] no events for aggregate {aggregate!r}")
        raise typer.Exit(1)
    if events:
        for record in folded:
            console.print(f"{record.aggregate_seq:>5} {record.occurred_at:%H:%M:%S} {record.type} "
                          f"[dim]{record.id} cause={record.causation_id}[/]")
    console.print_json(json.dumps(masked(tracked.state.model_dump(mode="json"))))


@app.command()
def digest() -> None:
    """Rebuild every aggregate from the log and print a digest of their states."""
    from infra.inspect_log import digest_all

    value, count = digest_all(_require_bootstrap())
    console.print(f"{value} ({count} aggregates)")


@app.command()
def api(port: int = typer.Option(None, help="port; default STRATOS_API_PORT (9443)"),
        demo: bool = typer.Option(False, "--demo", help="admin/admin when STRATOS_ADMIN_PASSWORD is unset")) -> None:
    """Serve the REST API (Stratos 4.1 paths under /api) with uvicorn until Ctrl-C."""
    from infra.api import ConfigurationError, create_app
    from infra.api.server import serve
    from infra.tls import TlsConfigError, tls_options

    _logging()
    settings = _part(_require_bootstrap(), "api")
    try:
        application = create_app(settings, demo=demo)
        tls_options(settings)
    except (ConfigurationError, TlsConfigError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2)
    serve(application, host=settings.api_host, port=port or settings.api_port, log_level="warning",
          **tls_options(settings))


register_stratos_verbs(app)
register_metadata_verbs(app)
register_replay(app)
register_lb(app)
register_signing(app)
register_observe_verbs(app)
register_secrets(app)
register_contract_verbs(app, schemas_app)
register_mock_iaas(app)


@app.command()
def health() -> None:
    """Run the health worker (faust): windows of health statistics, ScaleCluster commands on
    every hop (STRATOS_HEALTH_WINDOW_SECONDS, STRATOS_HEALTH_HOP_SECONDS), member faults
    (STRATOS_MEMBER_FAULT_SECONDS). Run more of them to share the health partitions."""
    from infra.health.app import HealthWorker, create_app

    settings = _part(_require_bootstrap(), "health")
    service = create_app(settings)
    console.print(f"[green]health worker[/] on {settings.topic('health')}: window "
                  f"{settings.health_window_seconds:g}s, hop {settings.health_hop_seconds:g}s, "
                  f"fault after {settings.member_fault_seconds:g}s")
    # faust's logging setup clears the root handlers: give it ours (the heartbeat's last error, the logs topic)
    service.app.conf.loghandlers = list(logging.getLogger().handlers)
    HealthWorker(service.app, loglevel=settings.log_level).execute_from_commandline()


@app.command()
def cloud() -> None:
    """Run the cloud controller: starts and stops nodes through libcloud for member events and
    reports back. It holds no cloud state: the mock IaaS is `stratos mock-iaas`, reached by the
    libcloud `mock` driver over HTTP (STRATOS_MOCK_IAAS_URL)."""
    from infra.cloud import CloudController

    _logging()
    settings = _part(_require_bootstrap(), "cloud")
    controller = CloudController(settings)
    signal.signal(signal.SIGTERM, lambda *_: controller.stop())
    console.print(f"[green]cloud controller[/] on {settings.topic('events')} (mock IaaS at {controller.mock.url})")
    try:
        controller.run()
    except KeyboardInterrupt:
        controller.stop()


@app.command()
def agent(member_id: str = typer.Option(..., envvar="STRATOS_AGENT_MEMBER_ID"),
          cluster_id: str = typer.Option(..., envvar="STRATOS_AGENT_CLUSTER_ID"),
          network_partition_id: str = typer.Option("default", envvar="STRATOS_AGENT_NETWORK_PARTITION_ID"),
          tenant: str = typer.Option("carbon.super", envvar="STRATOS_AGENT_TENANT"),
          port: list[int] = typer.Option([], help="a port that must answer before Activated (repeat)"),
          repo_url: str = typer.Option(None, envvar="STRATOS_AGENT_REPO_URL"),
          repo_username: str = typer.Option(None, envvar="STRATOS_AGENT_REPO_USERNAME"),
          workdir: Path = typer.Option(Path("app"), help="where the artifacts are checked out"),
          serve_http: int = typer.Option(None, help="serve the artifacts over HTTP on this loopback port"),
          clean_hook: str = typer.Option(None, help="shell command run on cleanup, before shutdown"),
          wait_initialized: bool = typer.Option(True, help="say Started only once the member is Initialized"),
          load_balancer: str = typer.Option(None, help="a load-balancer cartridge: run `stratos lb` "
                                                       "for this application's clusters"),
          application_id: str = typer.Option("", envvar="STRATOS_AGENT_APPLICATION_ID"),
          log_file: list[Path] = typer.Option([], help="a file whose lines are shipped to <prefix>logs (repeat)")) -> None:
    """Run the cartridge agent of one instance (payload from options or STRATOS_AGENT_* variables;
    its secrets only from STRATOS_AGENT_CARTRIDGE_KEY, STRATOS_AGENT_REPO_PASSWORD and
    STRATOS_AGENT_SIGNING_KEY (the key its status and health are signed with), taken out
    of the environment at once so that no child process inherits them)."""
    import os

    from pydantic import ValidationError

    from infra.agent import AgentPayload, CartridgeAgent, serve_directory
    from infra.kafka import rejection_reason

    _logging()
    settings = _require_bootstrap()
    try:
        payload = AgentPayload(member_id=member_id, cluster_id=cluster_id, tenant=tenant,
                               network_partition_id=network_partition_id, repo_url=repo_url,
                               repo_username=repo_username,
                               repo_password=os.environ.pop("STRATOS_AGENT_REPO_PASSWORD", None) or None,
                               cartridge_key=os.environ.pop("STRATOS_AGENT_CARTRIDGE_KEY", None) or None,
                               signing_key=os.environ.pop("STRATOS_AGENT_SIGNING_KEY", None) or None,
                               application_id=application_id, log_file_paths=log_file,
                               ports=[*port, *([serve_http] if serve_http else [])])
    except ValidationError as exc:
        console.print(f"[red]error:[/] {rejection_reason(exc)}")
        raise typer.Exit(2)
    if serve_http:
        serve_directory(workdir, serve_http, member_id)
    balancer = ready = None
    if load_balancer:
        from infra.lb.cli import start_balancer_process

        balancer, ready = start_balancer_process(load_balancer, workdir / "lb")
    cartridge_agent = CartridgeAgent(settings, payload, workdir, clean_hook, wait_initialized, ready)
    signal.signal(signal.SIGTERM, lambda *_: cartridge_agent.stop())
    try:
        cartridge_agent.run()
    except KeyboardInterrupt:
        cartridge_agent.stop()
    finally:
        if balancer is not None:
            balancer.terminate()
            balancer.wait(20)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
