"""Options of the Kafka engine and their mapping to a confluent-kafka (librdkafka) config.

Secrets (``sasl_password``, ``ssl_key_password``) are :class:`pydantic.SecretStr`: they print as
``**********`` in reprs, ``str()`` and ``model_dump()``; only :func:`client_config` unwraps them,
into a dict that goes straight to the client and is never logged (:func:`redacted` shows one
safely).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from qmtl.models import QmtlModel

__all__ = ["KafkaEngineSettings", "client_config", "redacted"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]

#: librdkafka properties whose values are never shown.
_SECRET_KEYS = ("password", "secret", "sasl.oauthbearer.config", "ssl.key.pem", "ssl_key")


class KafkaEngineSettings(QmtlModel):
    """Where the brokers are, how topics are laid out, and how to authenticate."""

    bootstrap_servers: str = Field(
        default="localhost:9092",
        description="Comma-separated host:port list of Kafka (or Redpanda) brokers.",
    )
    partitions: int = Field(
        default=8,
        ge=1,
        description="Partitions of a pipeline's shard and output topics: the most worker "
        "processes that can share its shards. Recorded with the pipeline's pending state: a "
        "deployment cannot change it without being reset.",
    )
    input_partitions: int = Field(
        default=1,
        ge=1,
        description="Partitions of the seed input topics QMTL creates. A source whose input "
        "spreads over several partitions closes a bucket only once every partition has passed "
        "it, so producers must keep every partition moving (or set idle_flush_s).",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replication factor of each topic QMTL creates (1 for one broker).",
    )
    security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="How clients talk to the brokers."
    )
    sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="SASL mechanism; required with SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (never logged)."
    )
    ssl_ca_location: str | None = Field(
        default=None, description="Path of the CA certificate file."
    )
    ssl_certificate_location: str | None = Field(
        default=None, description="Path of the client certificate (mutual TLS)."
    )
    ssl_key_location: str | None = Field(
        default=None, description="Path of the client private key."
    )
    ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the client private key (never logged)."
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="How long to wait for a broker to answer before failing."
    )
    delivery_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a produced message may take to be acknowledged."
    )
    max_message_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        description="Largest envelope accepted; larger ones are dead-lettered.",
    )
    topic_create_attempts: int = Field(
        default=6, ge=1, description="Attempts to create and verify a topic before giving up."
    )
    topic_create_backoff_s: float = Field(
        default=0.2, gt=0, description="First wait between topic attempts; doubles each time."
    )
    workers: int = Field(
        default=1,
        ge=0,
        description="Worker threads a finite run starts in this process (with topics and a "
        "consumer group of its own); 0 sends the run to standing `qmtl worker` processes.",
    )
    batch_size: int = Field(
        default=2000,
        ge=1,
        description="Most messages a worker consumes, applies and commits at once.",
    )
    batch_time_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest a worker applies one batch before it commits what it applied "
        "and polls again (the rest follows in the next batch); also kept under "
        "max_poll_interval_s / 2.",
    )
    poll_interval_s: float = Field(
        default=0.02, gt=0, description="How long an idle worker waits for messages per poll round."
    )
    linger_ms: int = Field(
        default=2,
        ge=0,
        description="How long the producer waits to fill a batch (latency vs. throughput).",
    )
    idempotent_producer: bool = Field(
        default=True,
        description="Produce with librdkafka's enable.idempotence: a retried message "
        "keeps its partition's order and is never written twice, so an end marker or a later "
        "bucket cannot overtake it (costs some throughput; off only if the brokers refuse it).",
    )
    session_timeout_s: float = Field(
        default=10.0,
        ge=1,
        description="A worker silent this long is considered dead and its "
        "partitions move to the others.",
    )
    max_poll_interval_s: float = Field(
        default=600.0,
        ge=1,
        description="Longest a worker may go without polling a node's consumer "
        "before the group takes its partitions away; at least session_timeout_s, and above "
        "the slowest single call of a node's function.",
    )
    run_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Longest a finite run may take before it fails (None: no limit).",
    )
    stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="A finite run that hears nothing of its own for this long fails with an "
        "error saying which nodes are still running and whether any worker serves the "
        "pipeline (a run never waits forever).",
    )
    idle_flush_s: float | None = Field(
        default=None,
        gt=0,
        description="Live inputs: an input partition silent this long gets a watermark at the "
        "wall clock, written into the log, so its open buckets close (None: never).",
    )
    seed_topics: bool = Field(
        default=False,
        description="Create the seed-named per-node topics (qmtl.input.{pipeline}.{node} for "
        "sources, qmtl.output.{pipeline}.{node} for every node) when a deployment starts; "
        "prepare_pipeline and StreamProcessor.subscribe_outputs create them on demand.",
    )
    warm_start: bool = Field(
        default=True,
        description="A deployment's live run that has no pending state of its own (a new plan "
        "after an upgrade, or after KafkaEngine.reset) continues the history of its namespace: "
        "buckets history holds are final, windows and as-of joins are seeded from it "
        "(qmtl.warm). False: start cold and recompute from whatever the input topics hold.",
    )
    client_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        repr=False,
        description="Extra librdkafka properties passed through as they are (e.g. linger.ms).",
    )
    # -- `qmtl worker` operations (qmtl_engine_kafka.operations, docs/operations.md) ----------
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port where `qmtl worker` serves /metrics (Prometheus), /healthz and "
        "/readyz (None: no server; --metrics-port).",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address the metrics port listens on (all interfaces by default).",
    )
    failure_policy: Literal["exit", "stop-node"] = Field(
        default="exit",
        description="What a node of a deployment's run that raises does to its worker: 'exit' "
        "replays the failing batch, fails readiness, and exits non-zero after "
        "max_node_failures failures in a row; 'stop-node' ends the node with its error and "
        "fails readiness while the worker runs its other nodes.",
    )
    max_node_failures: int = Field(
        default=3,
        ge=1,
        description="Failures in a row of one node before failure_policy 'exit' exits.",
    )
    node_retry_backoff_s: float = Field(
        default=1.0,
        gt=0,
        description="Wait before a failing batch is replayed (failure_policy 'exit'); doubles "
        "with every failure in a row, up to 60 s.",
    )
    liveness_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="/healthz fails when the poll loop has not completed a round for this long.",
    )
    startup_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="Longest `qmtl worker` waits for Redis to answer at start-up before it "
        "exits non-zero (Kafka: connect_timeout_s).",
    )

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _join_servers(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return value

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_present(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("give at least one host:port, e.g. 'localhost:9092'")
        return ",".join(servers)

    @model_validator(mode="after")
    def _security_consistent(self) -> KafkaEngineSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism "
                "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or GSSAPI)"
            )
        if not sasl and self.sasl_mechanism is not None:
            raise ValueError(
                f"sasl_mechanism is set but security_protocol is {self.security_protocol}; "
                "use SASL_SSL or SASL_PLAINTEXT"
            )
        needs_login = self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
        if needs_login and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError(
                f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password"
            )
        return self

    @model_validator(mode="after")
    def _poll_interval_covers_session(self) -> KafkaEngineSettings:
        # librdkafka refuses to create a consumer whose max.poll.interval.ms is below its
        # session.timeout.ms: say so here, naming both options, not when a worker starts.
        if self.max_poll_interval_s < self.session_timeout_s:
            raise ValueError(
                f"max_poll_interval_s ({self.max_poll_interval_s:g}) must be at least "
                f"session_timeout_s ({self.session_timeout_s:g}); raise max_poll_interval_s "
                "or lower session_timeout_s"
            )
        return self


def client_config(
    settings: KafkaEngineSettings, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The librdkafka configuration for ``settings``, with secrets unwrapped: never log it."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "socket.connection.setup.timeout.ms": int(settings.connect_timeout_s * 1000),
    }
    if settings.sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username is not None:
        config["sasl.username"] = settings.sasl_username
    if settings.sasl_password is not None:
        config["sasl.password"] = settings.sasl_password.get_secret_value()
    for field, key in (
        ("ssl_ca_location", "ssl.ca.location"),
        ("ssl_certificate_location", "ssl.certificate.location"),
        ("ssl_key_location", "ssl.key.location"),
    ):
        value = getattr(settings, field)
        if value is not None:
            config[key] = value
    if settings.ssl_key_password is not None:
        config["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    config.update(settings.client_options)
    if overrides:
        config.update(overrides)
    return config


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a client config that is safe to show: secret values replaced by asterisks."""
    return {
        key: "**********" if any(marker in key for marker in _SECRET_KEYS) else value
        for key, value in config.items()
    }
