"""The topics and the table of the health app, declared on an app (never at import)."""
from __future__ import annotations

from dataclasses import dataclass

import faust

from infra.settings import Settings


@dataclass(frozen=True)
class HealthTopics:
    health: faust.TopicT
    """HealthRecord envelopes in (statistics), MemberFault records out."""
    events: faust.TopicT
    """The aggregates' events: the cluster views are folded from them."""
    commands: faust.TopicT
    """ScaleCluster commands out."""


def raw_topic(app: faust.App, settings: Settings, kind: str) -> faust.TopicT:
    """A platform topic read as bytes: records are validated with their pydantic envelope by
    the agent itself, so that an invalid one reaches the dead-letter topic with its reason
    instead of failing inside faust's deserialiser."""
    return app.topic(settings.topic(kind), key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw", partitions=settings.partitions)


def declare_topics(app: faust.App, settings: Settings) -> HealthTopics:
    return HealthTopics(*(raw_topic(app, settings, kind) for kind in ("health", "events", "commands")))


def declare_cluster_views(app: faust.App, settings: Settings) -> faust.Table:
    """cluster aggregate id -> its view (``streams.health_state.ClusterView``), co-partitioned
    with the events and health topics (both keyed by the cluster aggregate id)."""
    return app.Table("clusters", default=None, key_type=str, value_type=dict,
                     partitions=settings.partitions, help="limits, thresholds and member status per cluster")
