"""The topics of the health app, declared on an app (never at import)."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from infra.settings import Settings


@dataclass(frozen=True)
class HealthTopics:
    health: faust.TopicT
    """HealthRecord envelopes in (statistics), MemberFault records out."""
    commands: faust.TopicT
    """ScaleCluster commands out."""


def raw_topic(app: faust.App, settings: Settings, kind: str) -> faust.TopicT:
    """A platform topic read as bytes: records are validated with their pydantic envelope by
    the agent itself, so that an invalid one reaches the dead-letter topic with its reason
    instead of failing inside faust's deserialiser."""
    return app.topic(
        settings.topic(kind),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


def declare_topics(app: faust.App, settings: Settings) -> HealthTopics:
    return HealthTopics(*(raw_topic(app, settings, kind) for kind in ("health", "commands")))
