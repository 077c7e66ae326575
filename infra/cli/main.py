"""`stratos`: the one console script for every command of the platform.

Each part registers its own verbs (`infra/<part>/cli.py`); they are registered here in the order
`stratos --help` lists them."""

from __future__ import annotations

import sys

import typer
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka.errors import KafkaError

from infra.agent.cli import register as register_agent
from infra.api.cli import register as register_api
from infra.api.client_cli import register as register_stratos_verbs
from infra.api.metadata_cli import register as register_metadata_verbs
from infra.auth.cli import register as register_signing
from infra.auth.secrets_cli import register as register_secrets
from infra.broker.cli import register as register_broker
from infra.cloud.cli import register as register_cloud
from infra.cloud.mock.cli import register as register_mock_iaas
from infra.health.cli import register as register_health
from infra.lb.cli import register as register_lb
from infra.log.cli import register as register_log
from infra.log.cli import register_schemas
from infra.node.cli import register as register_node
from infra.observe.cli import register as register_observe_verbs
from infra.platform.cli import register as register_platform
from infra.reactor.cli import register as register_reactor
from infra.replay.cli import register as register_replay
from infra.replay.cli import register_inspection
from infra.simulation.cli import register as register_simulation
from infra.simulation.scenario_cli import register as register_scenario
from infra.tune.cli import register as register_tune

app = typer.Typer(
    help="Stratos-ES: a PaaS control plane on an event log.", no_args_is_help=True, pretty_exceptions_enable=False
)

register_schemas(app)
register_simulation(app)
register_scenario(app)
register_tune(app)
register_broker(app)
register_node(app)
register_reactor(app)
register_platform(app)
register_inspection(app)
register_api(app)
register_stratos_verbs(app)
register_metadata_verbs(app)
register_replay(app)
register_lb(app)
register_signing(app)
register_observe_verbs(app)
register_secrets(app)
register_log(app)
register_mock_iaas(app)
register_health(app)
register_cloud(app)
register_agent(app)


def main() -> None:
    """Every verb. A Kafka that cannot be reached, or that refuses, ends a verb with one line
    naming the bootstrap servers and the error, never with a traceback."""
    try:
        app()
    except (KafkaError, AIOKafkaError) as exc:
        from infra.cli.common import console
        from infra.settings import get_settings

        bootstrap = get_settings().kafka_bootstrap
        console.print(
            f"[red]error:[/] Kafka at {bootstrap} (STRATOS_KAFKA_BOOTSTRAP): {exc}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
