"""`stratos agent`: the cartridge agent that runs on an instance (docs/operators/cloud.md).

It waits until its member is Initialized (the lifecycle allows Started only then), publishes
InstanceStarted, checks out the artifact repository, publishes InstanceActivated (with the
revision) once its ports answer, then health every `health_publish_seconds`: memory percent and
load = 1-minute load average / cores x 100, as Stratos's agent computes them. On ArtifactUpdated
for its cluster it checks out the new commit and reports the revision; on InstanceCleanupMember
(or InstanceCleanupCluster) it publishes maintenance mode, runs its clean hook, then
ready-to-shutdown. kafka-python reconnects by itself, so a broker restart is waited out. A record
that does not decode, or whose handling raises, is dead-lettered with the reason.

On a secure broker (`STRATOS_KAFKA_SECURITY_PROTOCOL=SASL_SSL`, as its tenant's `instance.<tenant>`
principal) it reads neither the notifier nor the events topic, which its credentials may not
read, but `<prefix>instances.<tenant>`: the copy of its tenant's notices and member
initialisations (`infra.broker.fanout`), each marked with the topic it was copied from.

Its log lines go to `<prefix>logs` (infra/observe/line_shipper.py): its own, git's, the clean hook's output and
the lines appended to the files of `log_file_paths` (the cartridge's `property` list).
"""

from __future__ import annotations

import functools
import http.server
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
from pydantic import BaseModel, Field, SecretStr

from actors.history import events_of
from infra.auth.secrets import SecretError, open_for_instance
from infra.auth.signing import Signer, Verifier
from infra.broker import port_is_open
from infra.broker.acls import COPIED_FROM, tenant_instances
from infra.log.eventlog import History, decode_log, history_events
from infra.log.kafka import (
    Appender,
    DeadLetters,
    assigned_consumer,
    envelope,
    poll_through_broker_loss,
    rejection_reason,
    validated,
)
from infra.observe.line_shipper import KafkaLogHandler, LogShipper, LogSource
from infra.platform.child_env import minimal_env
from infra.settings import Settings
from schemas import events as E
from schemas.base import MASK
from schemas.envelope import SUPER_TENANT
from schemas.ids import aggregate_id
from schemas.records import EventRecord, HealthRecord, InstanceStatusRecord
from schemas.status import (
    ArtifactUpdated,
    InstanceCleanupCluster,
    InstanceCleanupMember,
    InstanceStatus,
    MemberHealth,
    MemberMetric,
)

log = logging.getLogger(__name__)


class AgentPayload(BaseModel):
    """What an instance is told at boot (Stratos's payload parameters)."""

    member_id: str = Field(min_length=1)
    cluster_id: str = Field(min_length=1)
    network_partition_id: str = "default"
    tenant: str = SUPER_TENANT
    ports: list[int] = Field(default_factory=list, description="ports that must answer before Activated")
    repo_url: str | None = None
    repo_username: str | None = None
    repo_password: str | None = Field(None, repr=False, description="sealed for this cluster")
    cartridge_key: str | None = Field(
        None, repr=False, description="opens what is sealed for this cluster (infra/auth/secrets.py)"
    )
    application_id: str = ""
    log_file_paths: list[Path] = Field(default_factory=list, description="files whose lines are shipped")
    signing_key: SecretStr | None = Field(
        None, description="hex key its status and health are signed with (`signingKey` of the payload)"
    )

    @property
    def cluster_key(self) -> str:
        return aggregate_id(self.tenant, "cluster", self.cluster_id)

    def signer(self) -> Signer | None:
        """The member's signer (`infra.auth.signing`); without a key its records go unsigned, and
        the platform dead-letters them."""
        if self.signing_key is None:
            return None
        return Signer.member(self.tenant, self.cluster_id, self.member_id, self.signing_key.get_secret_value())

    @property
    def log_source(self) -> LogSource:
        return LogSource(self.member_id, self.cluster_id, self.application_id, self.tenant)


class _Unchecked(Verifier):
    """What an instance can check of the platform's signatures: nothing (it has no secret)."""

    def __init__(self) -> None:
        super().__init__(b"")

    def platform(self, topic_kind: str, record_key: bytes | None, value: bytes | None, headers) -> None:
        return None


def host_health() -> dict[MemberMetric, float]:
    """Stratos's figures for this host: memory percent and 1-minute load per core, in percent."""
    load_1m = psutil.getloadavg()[0]
    return {
        "memory_consumption": psutil.virtual_memory().percent,
        "load_average": load_1m / (psutil.cpu_count() or 1) * 100,
    }


class ArtifactError(RuntimeError):
    """git could not fetch or check out the artifact repository; the message says why."""


GIT_PROTOCOLS = "http:https:ssh:git:file"
"""Transports git may use for a tenant-given URL (never `ext::`, which runs commands)."""
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" '
    '"$STRATOS_GIT_USERNAME" "$STRATOS_GIT_PASSWORD"; }; f'
)
"""A constant helper: the credentials reach git as data in its environment, never in a URL,
an argument or a file."""
_USERINFO = re.compile(r"(://[^/@:\s]*):[^/@\s]*@")


def shown(text: str) -> str:
    """A git line or URL as logged: a password written into a URL is masked."""
    return _USERINFO.sub(r"\1:" + MASK + "@", text)


def _option_free(name: str, value: str) -> str:
    if value.startswith("-"):
        raise ArtifactError(f"{name} {value!r} must not start with '-'")
    return value


def checkout(
    repo_url: str,
    workdir: Path,
    commit: str | None = None,
    output=None,
    username: str | None = None,
    password: str | None = None,
) -> str:
    """Clone or fetch `repo_url` into `workdir` and check out `commit` (default: the remote's
    HEAD); returns the revision now checked out. `output(level, line)` gets git's lines.

    Tenant input is data: no option-like value, after `--`, never through a shell; the
    credentials go to git through its environment and a constant credential helper."""
    _option_free("repoUrl", repo_url)
    if commit:
        _option_free("commit", commit)
    env = minimal_env(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ALLOW_PROTOCOL": GIT_PROTOCOLS,
            "GIT_CONFIG_NOSYSTEM": "1",
            "STRATOS_GIT_USERNAME": username or "",
            "STRATOS_GIT_PASSWORD": password or "",
        }
    )
    helper = ["-c", "credential.helper=", "-c", f"credential.helper={CREDENTIAL_HELPER}"] if password else []

    def git(*args: str, cwd: Path | None = workdir) -> str:
        done = subprocess.run(
            ["git", *helper, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        if output is not None:
            output("INFO", shown("git " + " ".join(args)))
            for line in (done.stdout + done.stderr).splitlines():
                output("INFO" if done.returncode == 0 else "ERROR", shown(line))
        if done.returncode != 0:
            raise ArtifactError(f"git {args[0]} failed: {shown(done.stderr.strip())}")
        return done.stdout.strip()

    if not (workdir / ".git").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        git("clone", "--quiet", "--", repo_url, str(workdir), cwd=None)
    else:
        git("remote", "set-url", "--", "origin", repo_url)
        git("fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*")
    git("checkout", "--quiet", "--detach", commit or "origin/HEAD", "--")  # the revision checked above
    return git("rev-parse", "HEAD")


_TENANT_DIR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def tenant_workdir(workdir: Path, tenant: str) -> Path:
    """Where a tenant's sign-up is checked out: a directory of its own beside the member's."""
    if not _TENANT_DIR.match(tenant) or ".." in tenant:
        raise ArtifactError(f"tenant {tenant!r} is not a domain name usable as a directory")
    return workdir.with_name(workdir.name + ".tenants") / tenant


WORK_PATH = "/_stratos/work/"


class MemberHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the artifacts; every answer says which member gave it (`X-Stratos-Member`), so
    traffic through a load balancer can be attributed."""

    member_id = ""

    def end_headers(self) -> None:
        if self.member_id:
            self.send_header("X-Stratos-Member", self.member_id)
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        """`/_stratos/work/<seconds>`: simulated work (at most 10 s), for load tests through a
        load balancer; anything else is a file of the artifacts."""
        if self.path.startswith(WORK_PATH):
            try:
                seconds = min(max(float(self.path[len(WORK_PATH) :]), 0.0), 10.0)
            except ValueError:
                self.send_error(400, "work: seconds expected, e.g. /_stratos/work/0.5")
                return
            time.sleep(seconds)
            body = f"{self.member_id} worked {seconds:g}s\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        pass  # one line per request on stderr would swamp the instance's log under load


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # the stdlib's 5 refuses connections under a load balancer's bursts


def serve_directory(directory: Path, port: int, member_id: str = "") -> http.server.ThreadingHTTPServer:
    """The instance's cartridge for http ports: the checked-out artifacts, on a loopback port."""
    directory.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(type("Handler", (MemberHandler,), {"member_id": member_id}), directory=str(directory))
    server = _Server(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, name="cartridge-http", daemon=True).start()
    return server


class CartridgeAgent:
    def __init__(
        self,
        settings: Settings,
        payload: AgentPayload,
        workdir: Path,
        clean_hook: str | None = None,
        wait_initialized: bool = True,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.payload = payload
        self.workdir = workdir
        self.clean_hook = clean_hook
        self.wait_initialized = wait_initialized
        self.ready = ready
        """What else must hold before Activated (a load balancer's HAProxy serving)."""
        self.appender = Appender(settings, source="agent", signer=payload.signer())
        self.dead_letters = DeadLetters(self.appender)
        self.shipper = LogShipper(settings, self.appender)
        self.log_handler = KafkaLogHandler(self.shipper, payload.log_source, exclude=(__name__,))
        """the process's other loggers; the agent's own lines are shipped by `line` directly"""
        self.tails = {path: 0 for path in payload.log_file_paths}
        self.notices = assigned_consumer(settings, self._topic_of("instance-notifier"), from_beginning=False)
        for tp in self.notices.assignment():
            self.notices.position(tp)  # from now on: nothing published after start is missed
        self.revision: str | None = None
        self.tenant_revisions: dict[str, str] = {}
        self.activated = False
        self.leaving = False
        self.stopping = threading.Event()

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        logging.getLogger().addHandler(self.log_handler)
        tailer = threading.Thread(target=self._tail_files, name="log-files", daemon=True)
        tailer.start()
        try:
            if self.wait_initialized and not self._initialized():
                return
            self.say("InstanceStarted")
            if self.payload.repo_url:
                self.update_artifacts(
                    self.payload.repo_url, None, self.payload.repo_username, self.payload.repo_password
                )
            next_health = 0.0
            while not self.stopping.is_set():
                for raws in poll_through_broker_loss(self.notices, 200).values():
                    notices = self._copied_from("instance-notifier", raws)
                    for delivered in validated(self.settings, "instance-notifier", notices, self.dead_letters):
                        try:
                            self.on_notice(delivered.record)
                        except Exception as exc:  # noqa: BLE001 - one notice must not stop the agent
                            self.dead_letters.handling_failed(delivered, delivered.record, exc)
                if not self.activated and not self.leaving and self.ports_answer():
                    self.activated = True
                    self.say("InstanceActivated")
                if self.activated and not self.leaving and time.monotonic() >= next_health:
                    self.publish_health()
                    next_health = time.monotonic() + self.settings.health_publish_seconds
        finally:
            self.notices.close()
            logging.getLogger().removeHandler(self.log_handler)
            self.stopping.set()
            tailer.join(5)
            self.shipper.close()
            self.appender.close()

    def stop(self) -> None:
        self.stopping.set()

    def line(self, level: str, message: str, origin: str = "agent") -> None:
        """One line of this instance's log: shipped, and in the agent's own log output."""
        if origin == "agent":
            log.log(logging.getLevelName(level), "%s: %s", self.payload.member_id, message)
        self.shipper.emit(self.payload.log_source, level, message, origin)

    def _tail_files(self) -> None:
        """Ship the lines appended to each of `log_file_paths` (from the start of the file; a
        file that shrank was rotated: read again from its start)."""
        while True:
            for path, position in list(self.tails.items()):
                try:
                    size = path.stat().st_size
                    if size < position:
                        position = 0
                    with path.open("rb") as file:
                        file.seek(position)
                        chunk = file.read(1 << 20)
                except OSError:
                    continue
                end = chunk.rfind(b"\n") + 1  # whole lines only
                for raw in chunk[:end].splitlines():
                    self.line("INFO", raw.decode("utf-8", "replace"), str(path))
                self.tails[path] = position + end
            if self.stopping.wait(0.5):
                return

    def _initialized(self) -> bool:
        """Wait for our MemberInitialized event (the IaaS call has returned); False if stopped.

        An instance holds no platform secret, and the platform's signatures are HMACs made with
        it: the instance cannot check them (`_Unchecked`). This wait is only when to start: a
        forged MemberInitialized could make this instance say Started early, which changes
        nothing the platform shows (the node, which checks, folds only the platform's history)."""
        events, history = assigned_consumer(self.settings, self._topic_of("events")), History(_Unchecked())
        try:
            while not self.stopping.is_set():
                for raws in poll_through_broker_loss(events, 200).values():
                    for record in self._events(history, raws):
                        event = record.payload
                        if isinstance(event, E.MemberInitialized) and event.member_id == self.payload.member_id:
                            return True
            return False
        finally:
            events.close()

    @property
    def tenant_topic(self) -> bool:
        """On a secure broker the agent reads its tenant's instance topic, the only one its
        principal may read; on a plain one the notifier and events topics themselves."""
        return self.settings.kafka_security_protocol != "PLAINTEXT"

    def _topic_of(self, kind: str) -> str:
        return tenant_instances(self.payload.tenant) if self.tenant_topic else kind

    def _copied_from(self, kind: str, raws: list) -> list:
        """The records of `kind`: on the tenant topic, those copied from that topic."""
        if not self.tenant_topic:
            return raws
        wanted = kind.encode()
        return [raw for raw in raws if dict(raw.headers or ()).get(COPIED_FROM) == wanted]

    def _events(self, history: History, raws: list) -> Iterator[EventRecord]:
        """The events of these records: on the tenant topic, of the commits the platform copied
        there (fenced by it already: they are history); else of the events topic's history."""
        if not self.tenant_topic:
            yield from (record for record, _source in history_events(history, raws, self.dead_letters))
            return
        for raw in self._copied_from("events", raws):
            try:
                yield from events_of(decode_log(raw.value))
            except ValueError as exc:
                self.dead_letters.send(
                    raw.topic, raw.partition, raw.offset, raw.key, raw.value, rejection_reason(exc), exc, raw.headers
                )

    def ports_answer(self) -> bool:
        return all(port_is_open("127.0.0.1", port) for port in self.payload.ports) and (
            self.ready is None or self.ready()
        )

    # --- what it reacts to --------------------------------------------------------------------
    def on_notice(self, record) -> None:
        notice = record.payload
        if isinstance(notice, ArtifactUpdated) and notice.cluster_id == self.payload.cluster_id:
            self.update_artifacts(
                notice.repo_url, notice.commit, notice.repo_username, notice.repo_password, notice.tenant
            )
            if self.activated:
                self.say("InstanceActivated", cause=record.id)  # the same status, now with the revision
        elif (isinstance(notice, InstanceCleanupMember) and notice.member_id == self.payload.member_id) or (
            isinstance(notice, InstanceCleanupCluster) and notice.cluster_id == self.payload.cluster_id
        ):
            self.clean_up(cause=record.id)

    def update_artifacts(
        self,
        repo_url: str,
        commit: str | None = None,
        username: str | None = None,
        sealed_password: str | None = None,
        tenant: str | None = None,
    ) -> None:
        """Check out the member's repository, or a signed-up tenant's into that tenant's own
        directory, with that repository's credentials (opened here, with the cartridge key)."""
        mine = tenant is None or tenant == self.payload.tenant
        whose = "artifacts" if mine else f"tenant {tenant}'s artifacts"
        try:
            password = open_for_instance(sealed_password, self.payload.cartridge_key)
            workdir = self.workdir if mine else tenant_workdir(self.workdir, tenant)  # type: ignore[arg-type]
            revision = checkout(
                repo_url,
                workdir,
                commit,
                lambda level, text: self.line(level, text, "git"),
                username=username,
                password=password,
            )
        except (ArtifactError, SecretError, subprocess.TimeoutExpired) as exc:
            log.error("artifact update of %s failed: %s", self.payload.member_id, exc)
            self.line("ERROR", f"{whose}: update failed: {exc}")
            return
        if mine:
            self.revision = revision
        else:
            self.tenant_revisions[tenant] = revision  # type: ignore[index]
        self.line("INFO", f"{whose} checked out at revision {revision}")

    def clean_up(self, cause: str | None = None) -> None:
        if self.leaving:
            return
        self.leaving = True
        self.say("InstanceMaintenanceMode", cause)
        if self.clean_hook:
            # the operator's own command (not tenant input); it never sees the agent's keys
            done = subprocess.run(
                self.clean_hook,
                shell=True,
                cwd=self.workdir if self.workdir.exists() else None,
                env=minimal_env({"STRATOS_MEMBER_ID": self.payload.member_id}),
                capture_output=True,
                text=True,
            )
            for text in done.stdout.splitlines():
                self.line("INFO", text, "clean-hook")
            for text in done.stderr.splitlines():
                self.line("WARNING" if done.returncode else "INFO", text, "clean-hook")
            if done.returncode != 0:
                log.warning("clean hook exited %d: %s", done.returncode, done.stderr.strip())
                self.line("WARNING", f"clean hook exited {done.returncode}")
        self.say("InstanceReadyToShutdown", cause)

    # --- what it publishes --------------------------------------------------------------------
    def say(self, status_type: str, cause: str | None = None) -> None:
        """Publish a status; `cause`: the notice it answers, so that `stratos why` follows."""
        self.line("INFO", f"published {status_type}")
        status = InstanceStatus(
            type=status_type,
            member_id=self.payload.member_id,
            cluster_id=self.payload.cluster_id,
            network_partition_id=self.payload.network_partition_id,
            revision=self.revision,
        )
        key = self.payload.cluster_key
        self.appender.append(
            "instance-status",
            key,
            envelope(InstanceStatusRecord, status, key, tenant=self.payload.tenant, causation_id=cause),
        )

    def publish_health(self) -> None:
        """Every metric of this publish in one record (`MemberHealth`): the health worker's cost
        is per record."""
        key = self.payload.cluster_key
        sample = MemberHealth(
            cluster_id=self.payload.cluster_id,
            member_id=self.payload.member_id,
            network_partition_id=self.payload.network_partition_id,
            metrics=host_health(),
            timestamp=time.time(),
        )
        self.appender.send("health", key, envelope(HealthRecord, sample, key, tenant=self.payload.tenant))
        self.appender.flush()
