"""Settings from `STRATOS_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRATOS_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        None, description="bootstrap servers of an external Kafka; unset = embedded broker"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="how every Kafka client of the platform connects: SASL_SSL authenticates "
        "(STRATOS_KAFKA_USERNAME/PASSWORD) over TLS (STRATOS_KAFKA_CA), as `stratos broker --secure` asks",
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism with SASL_SSL"
    )
    kafka_username: str | None = Field(None, description="the Kafka principal's name with SASL_SSL")
    kafka_password: SecretStr | None = Field(None, description="its password (SCRAM credential)")
    kafka_ca: Path | None = Field(
        None,
        description="PEM certificate(s) the Kafka clients trust with SASL_SSL; unset = "
        "<state dir>/kafka-tls/ca.pem when it exists, else the system's CAs",
    )
    kafka_connect_timeout_seconds: float = Field(
        30.0, gt=0, description="how long a Kafka client waits to reach its first broker before it gives up"
    )
    topic_prefix: str = "stratos."
    partitions: int = Field(4, ge=1, description="partitions of each topic created")
    replication_factor: int = Field(1, ge=1, description="replicas of each topic the platform creates")
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of each topic created; unset = replication "
        "factor capped at 2 (one broker of three may fail without stalling writes)",
    )
    events_retention_ms: int = Field(
        -1,
        ge=-1,
        description="retention.ms of <prefix>events: -1 keeps history forever (the log "
        "is the only store of state); a part refuses to start once a "
        "partition's head has been deleted",
    )
    transient_retention_hours: float = Field(
        168.0,
        gt=0,
        description="retention of the topics that carry no history (commands, replies, "
        "health, instance status and notifier, dead letters)",
    )
    state_dir: Path = Path("state")
    snapshot_every: int = Field(5000, ge=1, description="commits of a partition between snapshot checkpoints")
    time_travel_hours: float = Field(
        0.0,
        ge=0,
        description="min.compaction.lag.ms of <prefix>snapshots, in hours: checkpoints younger "
        "than this survive the cleaner, so `replay --at` within it starts from the nearest one "
        "(0: only each claim's newest checkpoint survives compaction)",
    )
    health_window_seconds: float = Field(60.0, gt=0)
    health_hop_seconds: float = Field(5.0, gt=0)
    health_publish_seconds: float = Field(15.0, gt=0)
    member_fault_seconds: float = Field(60.0, gt=0)
    pending_timeout_seconds: float = Field(900.0, gt=0)
    termination_timeout_seconds: float = Field(1800.0, gt=0)
    obsolete_timeout_seconds: float = Field(86400.0, gt=0)
    api_port: int = 9443
    api_host: str = Field("127.0.0.1", description="address `stratos api` listens on")
    fetch_wait_ms: int = Field(
        5000,
        ge=1,
        le=60_000,
        description="longest a reader's fetch waits for data; Kafka answers a waiting fetch "
        "as soon as data arrives, so this is only the idle poll period",
    )
    api_wait_seconds: float = Field(20.0, gt=0, description="how long a write waits for its reply")
    metadata_service_url: str | None = Field(
        None, description="the metadata service's base URL given to instances (METADATA_SERVICE_URL); unset = the API's"
    )
    admin_username: str = Field("admin", min_length=1, description="the bootstrap super-admin")
    admin_password: SecretStr | None = Field(
        None,
        description="the bootstrap super-admin's password; unset = API refuses to start "
        "(admin/admin only in the embedded demo)",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet keys that seal secrets in the log, comma-separated, newest first; "
        "unset = <state dir>/secret.key (made on first use, mode 0600)",
    )
    password_hash_rounds: int = Field(12, ge=4, le=16, description="bcrypt cost factor")
    token_ttl_seconds: float = Field(3600.0, gt=0, description="lifetime of a bearer token")
    platform_secret: SecretStr | None = Field(
        None,
        min_length=32,
        description="the key the platform's parts sign records and tokens with; "
        "unset = <state_dir>/platform.secret, created owner-only",
    )
    projection_checkpoint_records: int = Field(
        100_000, ge=1, description="events records a read side folds between two of its checkpoints"
    )
    projection_checkpoint_seconds: float = Field(
        300.0, gt=0, description="longest time between a read side's checkpoints while records arrive"
    )
    platform_secret_previous: SecretStr | None = Field(
        None,
        description="retired platform secrets, comma-separated, newest first: history they signed "
        "still verifies (with the file: its lines after the first)",
    )
    login_failures: int = Field(5, ge=1, description="failed logins per user and per address before 429")
    login_lockout_seconds: float = Field(60.0, gt=0, description="how long those failures are counted")
    iaas_providers: list[str] = Field(["mock"], description="providers the cloud controller serves")
    cloud_workers: int = Field(4, ge=1, description="cloud controller lanes for IaaS calls")
    cloud_start_attempts: int = Field(3, ge=1, description="node starts tried before giving up")
    cloud_retry_seconds: float = Field(2.0, gt=0, description="first backoff after a failed start")
    cloud_reconcile_seconds: float = Field(15.0, gt=0, description="how often nodes are listed")
    mock_health_patterns: Path | None = Field(None, description="YAML/JSON health patterns file")
    mock_iaas_mode: Literal["simulated", "process"] = "simulated"
    mock_api_port: int | None = Field(
        None, description="loopback port of `stratos mock-iaas`; unset = STRATOS_API_PORT + 1"
    )
    mock_iaas_url: str | None = Field(
        None,
        description="where the mock driver and the API reach the "
        "mock IaaS; unset = http(s)://127.0.0.1:<mock_api_port>",
    )
    mock_iaas_key: SecretStr | None = Field(
        None, description="the mock IaaS's access key; unset = <state dir>/mock-iaas/access-key (made on first use)"
    )
    api_tls: bool = Field(False, description="serve the API, console and mock IaaS over HTTPS")
    api_tls_cert: Path | None = Field(
        None, description="PEM certificate for HTTPS; unset = a self-signed one made into <state dir>/tls/"
    )
    api_tls_key: Path | None = Field(None, description="PEM key of STRATOS_API_TLS_CERT")
    api_ca: Path | None = Field(
        None, description="certificate clients trust for the API; unset = <state dir>/tls/cert.pem when it exists"
    )
    node_partitions: list[int] | None = Field(
        None,
        description="command partitions a node owns without a consumer group (e.g. [0,1,2,3]); "
        "unset = share them with the other nodes of the group",
    )
    node_stall_seconds: float = Field(
        20.0,
        gt=0,
        description="a poll of the node's consumer still waiting after this long is hung, not slow: the node "
        "closes that consumer and joins its group again with a new one",
    )
    max_record_bytes: int = Field(
        900_000, gt=1000, description="largest decision a node appends (below the broker's message.max.bytes)"
    )
    fault: str | None = Field(
        None,
        description="fault injection for tests: `point:N` kills the process (SIGKILL) the Nth time it passes `point`",
    )
    lb_bind: str = Field("127.0.0.1", description="address the load balancer's proxy ports bind")
    lb_stats_seconds: float = Field(15.0, gt=0, description="how often requests in flight are published")
    lb_drain_seconds: float = Field(30.0, ge=0, description="longest a leaving member is drained")
    lb_member_networks: list[str] = Field(
        ["127.0.0.0/8", "::1/128"],
        description="networks the load balancer may send to (members elsewhere are not routed)",
    )
    log_level: str = "INFO"
    health_max_skew_seconds: float = Field(
        30.0, ge=0, description="how far ahead of the health worker's clock a sample may be stamped (clock skew)"
    )
    health_max_age_seconds: float = Field(
        300.0,
        gt=0,
        description="oldest sample the health worker takes, by its clock (a backlog after a restart still counts)",
    )

    log_to_kafka: bool = Field(False, description="platform parts also ship their own log lines to <prefix>logs")
    logs_retention_hours: float = Field(72.0, gt=0, description="retention.ms of <prefix>logs, in hours")
    logs_retention_bytes: int = Field(1_073_741_824, gt=0, description="retention.bytes of each <prefix>logs partition")
    log_lines_per_second: float = Field(200.0, gt=0, description="lines a member may ship per second (token bucket)")
    log_burst_lines: int = Field(1000, ge=1, description="lines a member may ship at once above its rate")
    log_batch_seconds: float = Field(0.5, gt=0, description="how long the shipper gathers lines into one batch")
    log_ring_lines: int = Field(2000, ge=10, description="lines the read side keeps per member")
    heartbeat_seconds: float = Field(5.0, gt=0, description="how often every part publishes its heartbeat")
    usage_period_seconds: float = Field(3600.0, gt=0, description="period of one <prefix>usage record")
    usage_grace_seconds: float = Field(30.0, ge=0, description="a period is exported this long after it ends")

    @property
    def metadata_url(self) -> str:
        return self.metadata_service_url or f"{'https' if self.api_tls else 'http'}://{self.api_host}:{self.api_port}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
