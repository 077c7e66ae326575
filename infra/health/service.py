"""What the health app's agents share: the faust app, the settings, the topics, the health book,
the dead letters and the cluster views (`HealthService`), built by ``infra.health.app.create_app``."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import faust

from infra.health.topics import HealthTopics
from infra.health.views import ClusterViews
from infra.log.kafka import DeadLetters
from infra.settings import Settings
from streams.health_state import ClusterView, HealthBook


@dataclass
class HealthService:
    """One faust app and what its agents share (all touched only on the app's event loop)."""

    app: faust.App
    settings: Settings
    topics: HealthTopics
    book: HealthBook
    dead_letters: DeadLetters
    views: ClusterViews = field(init=False)
    views_ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the views hold the events topic up to its end as it was at start: health
    records are read only then (else their clusters would look unknown)."""
    reading: threading.Event = field(default_factory=threading.Event)
    """Set once the health reader holds its partitions (its group joined): load started before
    that waits for the join (a few seconds: the group's first rebalance)."""

    def __post_init__(self) -> None:
        self.views = ClusterViews(self.settings)

    @property
    def clusters(self) -> dict[str, ClusterView]:
        """cluster aggregate id -> its view, for every live cluster of the platform."""
        return self.views.clusters
