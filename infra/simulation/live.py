"""Live mode: play a scenario against a running platform (embedded or external Kafka) and write
the same report from what its event log shows.

It adds the scenario's definitions (ones already there are kept) and deploys its applications
through the commands topic, then, every ``step / speed`` wall seconds, publishes the scenario's
health samples on the health topic for the members the log shows Active (the records the mock
IaaS's simulated agents would publish from a pattern), so the platform's own health worker,
node, reactor and cloud controller do the rest. The timeline is read back from the events topic:
cluster states folded by ``Tracked.fold_commit`` (the one fold), each scaling decision put on
the step its commit was written in. With ``--mock-api`` it also silences the mock IaaS's own
health patterns for the scenario's cartridge types (else both would publish) and plays the
scenario's crash rate by deleting instances through the mock's REST API.

Instance start-up, start failures and timeouts are the platform's and its IaaS's own here; the
platform's windows run on the wall clock, so at ``--speed 4`` a 60 s window spans 240 scenario
seconds.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from actors.runtime import Tracked
from infra.auth.tls import verify_for
from infra.log.commands_client import CommandClient
from infra.log.eventlog import History
from infra.log.kafka import Appender, assigned_consumer, envelope, poll_through_broker_loss
from infra.settings import Settings, get_settings
from infra.simulation.report import PolicyRun, write_report
from infra.simulation.scenario import Scenario, ScenarioFileError, load_policy
from schemas import commands as C
from schemas import events as E
from schemas.definitions import DEFINITION_KINDS
from schemas.ids import aggregate_id, parse_aggregate_id
from schemas.records import HealthRecord
from schemas.status import CommandRejected, HealthStat
from streams.simulation import ClusterTrack, ScenarioError, SimulationSetup, attach_loads, sample_values


class LiveRun:
    def __init__(self, settings: Settings, setup: SimulationSetup, speed: float, mock_api: str | None = None) -> None:
        self.settings, self.setup, self.speed, self.mock_api = settings, setup, speed, mock_api
        self.history = History.of(settings)
        self.clusters: dict[str, Tracked] = {}
        self.tracks: dict[str, ClusterTrack] = {}
        self.app_ids = {a for a, _ in setup.deploy}
        self.started_at = time.time()
        self.commits = 0
        self.health_sent = 0
        self.crashed: list[str] = []
        self.rng = random.Random(f"{setup.seed}:live-crashes")

    # --- the log ----------------------------------------------------------------------------
    def feed(self, raws) -> None:
        for raw in raws:
            try:
                commit = self.history.commit(raw)
            except ValueError:
                continue  # the platform's own readers dead-letter it
            if commit is None:
                continue
            ref = parse_aggregate_id(commit.aggregate_id)
            if ref.kind == "application" and ref.id in self.app_ids:
                for event in commit.payload.events:  # type: ignore[union-attr]
                    if isinstance(event, E.ApplicationDeployed):
                        self._tracks_for(event, commit.tenant)
            elif ref.kind == "cluster":
                tracked = self.clusters.get(commit.aggregate_id) or Tracked.new(commit.aggregate_id)
                tracked.fold_commit(commit)
                self.clusters[commit.aggregate_id] = tracked
                track = self.tracks.get(commit.aggregate_id)
                if track is not None and commit.occurred_at.timestamp() >= self.started_at:
                    self.commits += 1
                    k = self.step_of(commit.occurred_at.timestamp())
                    for event in commit.payload.events:  # type: ignore[union-attr]
                        if isinstance(event, E.ScalingDecided):
                            track.note(k, event)

    def _tracks_for(self, deployed: E.ApplicationDeployed, tenant: str) -> None:
        for spec in deployed.clusters:
            key = aggregate_id(tenant, "cluster", spec.cluster_id)
            self.tracks[key] = ClusterTrack(key, spec.cluster_id, spec.alias, spec.min, spec.max, dict(spec.thresholds))

    def step_of(self, wall: float) -> int:
        return min(max(0, int((wall - self.started_at) * self.speed // self.setup.step)), self.setup.steps - 1)

    # --- what the run sends ---------------------------------------------------------------------
    def define_and_deploy(self, client: CommandClient) -> None:
        tenant = self.setup.tenant
        for kind, body in self.setup.definitions:
            model = DEFINITION_KINDS[kind].model_validate(body)
            command = getattr(C, f"Add{kind[0].upper()}{kind[1:]}")(definition=model)
            reply = client.call(aggregate_id(tenant, kind, model.definition_id), command, tenant=tenant, timeout=30)
            if reply is None:
                raise ScenarioFileError(f"no answer from the platform to {command.type} (is a node running?)")
            if isinstance(reply, CommandRejected) and reply.code != 409:  # 409: already defined, kept
                raise ScenarioFileError(f"{command.type} {model.definition_id}: {reply.reason}")
        for app_id, policy_id in self.setup.deploy:
            reply = client.call(
                aggregate_id(tenant, "application", app_id),
                C.DeployApplication(application_policy_id=policy_id),
                tenant=tenant,
                timeout=30,
            )
            if not reply or isinstance(reply, CommandRejected):
                raise ScenarioFileError(f"deploying {app_id}: {getattr(reply, 'reason', 'no answer')}")

    def silence_mock_patterns(self) -> None:
        types = {body["type"] for kind, body in self.setup.definitions if kind == "cartridge"}
        with httpx.Client(base_url=self.mock_api, timeout=10, verify=verify_for(self.mock_api, self.settings)) as http:  # type: ignore[arg-type]
            for cartridge_type in sorted(types):
                http.put(f"/mock-iaas/api/health-patterns/{cartridge_type}", json={}).raise_for_status()

    def publish_health(self, appender: Appender, k: int) -> None:
        now = time.time()
        for key, track in self.tracks.items():
            tracked = self.clusters.get(key)
            if tracked is None or not track.loads:
                continue
            active = [m for m in tracked.state.members.values() if m.is_active]  # type: ignore[attr-defined]
            if not active:
                continue
            tenant = parse_aggregate_id(key).tenant
            for metric, value, per_member in sample_values(track, k, len(active)):
                for member in active if per_member else active[:1]:
                    stat = HealthStat(
                        cluster_id=track.cluster_id,
                        network_partition_id=member.network_partition_id,
                        member_id=member.member_id if per_member else None,
                        metric=metric,
                        value=value,
                        timestamp=now,
                    )
                    appender.send("health", key, envelope(HealthRecord, stat, key, tenant=tenant))
                    self.health_sent += 1
        appender.flush()

    def crash_some(self, http: httpx.Client) -> None:
        rate = self.setup.instances.crash_rate_per_hour * self.setup.step / 3600.0
        for key, tracked in sorted(self.clusters.items()):
            if key not in self.tracks:
                continue
            for member in sorted(tracked.state.members.values(), key=lambda m: m.member_id):  # type: ignore[attr-defined]
                if member.is_active and self.rng.random() < rate:
                    http.delete(f"/mock-iaas/api/instances/{member.member_id}")
                    self.crashed.append(member.member_id)

    def record(self, k: int) -> None:
        for key, track in self.tracks.items():
            tracked = self.clusters.get(key)
            members = tracked.state.members if tracked is not None else {}  # type: ignore[attr-defined]
            active = sum(1 for m in members.values() if m.is_active)
            pending = sum(1 for m in members.values() if m.is_pending)
            while len(track.supply) < k:  # steps the reader fell behind on: the state then
                track.record(track.need_at(len(track.supply)), active, pending, len(members) - active - pending)
            track.record(track.need_at(k), active, pending, len(members) - active - pending)


def run_live(
    scenario: Scenario,
    policy: Path | None,
    out: Path,
    bootstrap: str | None,
    speed: float,
    console: Console,
    quiet: bool = False,
    settings: Settings | None = None,
    mock_api: str | None = None,
) -> dict:
    settings = settings or get_settings()
    if bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    if not settings.kafka_bootstrap:
        raise ScenarioFileError(
            "--live drives a running platform: give --bootstrap HOST:PORT or set "
            "STRATOS_KAFKA_BOOTSTRAP (see `stratos up`)"
        )
    setup = scenario.with_policy(load_policy(policy)) if policy else scenario.setup
    run = LiveRun(settings, setup, speed, mock_api)
    client, appender = CommandClient(settings), Appender(settings)
    consumer = assigned_consumer(settings, "events")
    http = httpx.Client(base_url=mock_api, timeout=10, verify=verify_for(mock_api, settings)) if mock_api else None
    try:
        if mock_api:
            run.silence_mock_patterns()
        run.started_at = time.time()
        run.define_and_deploy(client)
        deadline = time.monotonic() + 60
        while not set(run.tracks) and time.monotonic() < deadline:
            for raws in poll_through_broker_loss(consumer, 200).values():
                run.feed(raws)
        if not run.tracks:
            raise ScenarioFileError("the platform deployed no cluster within 60 s")
        try:
            attach_loads(setup, list(run.tracks.values()))
        except ScenarioError as exc:
            raise scenario.error(exc) from None
        run.started_at = time.time()
        with Progress(
            TextColumn("[bold]live"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
            transient=True,
        ) as progress:
            task = progress.add_task("live", total=setup.steps)
            for k in range(setup.steps):
                due = run.started_at + k * setup.step / speed
                while (left := due - time.time()) > 0:
                    for raws in poll_through_broker_loss(consumer, max(1, int(min(left, 0.2) * 1000))).values():
                        run.feed(raws)
                if http is not None and setup.instances.crash_rate_per_hour:
                    run.crash_some(http)
                run.publish_health(appender, k)
                run.record(k)
                progress.update(task, completed=k + 1)
        # the decisions of the last step's samples
        settle = time.time() + min(2.0, setup.step / speed)
        while time.time() < settle:
            for raws in poll_through_broker_loss(consumer, 100).values():
                run.feed(raws)
    finally:
        consumer.close()
        client.close()
        appender.close()
        if http is not None:
            http.close()
    name = policy.stem if policy else "scenario"
    info = {**_info(scenario), "mode": "live", "speed": speed}
    extra = {
        "observed_commits": run.commits,
        "health_records_sent": run.health_sent,
        "crashed_instances": len(run.crashed),
    }
    return write_report(
        out, info, [PolicyRun(name, dict(sorted((t.cluster_id, t) for t in run.tracks.values())), extra)], setup.step
    )


def _info(scenario: Scenario) -> dict:
    s = scenario.setup
    return {
        "name": scenario.name,
        "description": scenario.model.description,
        "seed": s.seed,
        "duration_s": s.duration,
        "step_s": s.step,
    }
