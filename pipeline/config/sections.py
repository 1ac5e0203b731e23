"""The job's settings, one pydantic model per config section, each setting declared once.

A field is a setting: its type and bounds check the value, its description is the help text
(options, --help, the Flex Template's parameters and docs/configuration.md are generated from it),
and `option` names its command-line option where the section's prefix plus the field name is not
it. Rules between the fields of one section sit on the section; rules across sections on
pipeline.config.JobConfig.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from pipeline.config.kinds import Dir, Flag, Float, Glob, Int, Path, Text, Timestamp
from pipeline.shared.clock import parse_rfc3339

SOURCE_KINDS = ("files", "watch", "kafka", "pubsub")
STREAMING_SOURCES = ("watch", "kafka", "pubsub")
KAFKA_COMMIT_MODES = ("auto", "written", "finalize", "bundle")
# Keys and their forms that a regex checks (the Flex Template's parameters carry them too).
KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PUBSUB_NAME = r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}"
PUBSUB_SUBSCRIPTION = re.compile(rf"projects/[a-z][a-z0-9:.-]{{4,62}}/subscriptions/{_PUBSUB_NAME}")
PUBSUB_TOPIC = re.compile(rf"projects/[a-z][a-z0-9:.-]{{4,62}}/topics/{_PUBSUB_NAME}")
# [PROJECT(: or .)]DATASET.TABLE; project ids may hold a domain (example.com:project).
BIGQUERY_TABLE = re.compile(r"(?:[a-z][a-z0-9.:-]{4,62}[a-z0-9][:.])?[A-Za-z0-9_]{1,1024}\.[\w$-]{1,1024}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEYS_PLACEHOLDER = "%(keys)s"


def setting(default: Any = None, help: str = "", *, option: str = "", pattern: str = "", **bounds: Any) -> Any:
    """A field of a section: its default, help text, option name (where not derived) and bounds."""
    extra: dict[str, Any] = {k: v for k, v in (("option", option), ("pattern", pattern)) if v}
    return Field(default, description=help, json_schema_extra=extra or None, **bounds)


class Section(BaseModel):
    """A config section: unknown keys are refused, values are checked when set, never changed after."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)
    # Options are named <prefix><field> unless the field names its own.
    option_prefix: ClassVar[str] = ""


class InputConfig(Section):
    transactions: Glob | None = setting(
        None,
        "Transactions to score (source.kind files): JSONL files, plain or compressed; a glob pattern.",
        option="input",
    )
    max_record_bytes: Int = setting(
        1024 * 1024,
        "Longest line taken as a record; a longer one is a RECORD_TOO_LARGE dead letter, never held whole.",
        ge=1,
    )


class SourceConfig(Section):
    kind: Literal["files", "watch", "kafka", "pubsub"] = setting(
        "files",
        "files: read input.transactions once (batch); watch: watch source.watch_dir for new files and score "
        "them as they arrive; kafka: read kafka.topic; pubsub: read pubsub.subscription (the last three stream, "
        "on Prism by default; pubsub on Dataflow).",
        option="source",
    )
    watch_dir: Dir | None = setting(
        None,
        "The folder source kind `watch` watches. Writers must write `NAME.tmp` (or a hidden `.NAME`) and rename "
        "it when complete; other files are taken once their size and time have not changed for "
        "source.settle_seconds.",
    )
    poll_interval_seconds: Float = setting(1.0, "How often the folder is listed.", gt=0)
    settle_seconds: Float = setting(
        1.0,
        "A watched file is taken only when it has not changed for this long (a second guard behind the rename rule).",
        ge=0,
    )

    @property
    def streaming(self) -> bool:
        return self.kind in STREAMING_SOURCES


class KafkaConfig(Section):
    option_prefix = "kafka_"
    bootstrap_servers: Text | None = setting(
        None, "Kafka brokers, HOST:PORT[,HOST:PORT...]: for source.kind kafka and for the kafka.*_topic sinks."
    )
    topic: Text | None = setting(None, "Topic(s) to read (source.kind kafka); several: T1,T2.")
    group_id: Text = setting(
        "riskpipe-scoring", "Consumer group: a restarted job goes on from the offsets this group committed."
    )
    start: Text = setting(
        "earliest",
        "Where to start where the group has no committed offset: earliest, latest, or an RFC 3339 time (every "
        "partition from its first record at or after it, whatever the group committed).",
    )
    commit: Literal["auto", "written", "finalize", "bundle"] = setting(
        "auto",
        "How read offsets are committed to the group: written (once every record before them is written out: a "
        "crash loses nothing; local runners such as Prism), finalize (KafkaIO commits when the runner finalizes "
        "a checkpoint; Flink, Dataflow), bundle (after each read bundle: a crash loses what was read and not yet "
        "written), auto (written on Prism, finalize elsewhere).",
    )
    properties_file: Path | None = setting(
        None,
        "Kafka client properties (security: SASL, TLS) in a Java .properties file; RISKPIPE_KAFKA_<NAME> "
        "environment variables add to it (RISKPIPE_KAFKA_SASL_JAAS_CONFIG -> sasl.jaas.config). Never in this file.",
    )
    scored_topic: Text | None = setting(
        None, "Scored records to this topic instead of files.", pattern=KAFKA_TOPIC.pattern
    )
    alerts_topic: Text | None = setting(
        None, "REVIEW and DECLINE records also to this topic.", pattern=KAFKA_TOPIC.pattern
    )
    dead_letter_topic: Text | None = setting(
        None, "Dead letters to this topic instead of files.", pattern=KAFKA_TOPIC.pattern
    )
    value_format: Literal["json", "protobuf"] = setting(
        "json",
        "Values written to topics: json (proto3 JSON, proto field names) or protobuf (binary; the contracts' "
        "messages). Keys are the transaction_id.",
    )
    expansion_service: Text = setting(
        "",
        "Where KafkaIO's Java transforms come from: HOST:PORT of a running expansion service, or a jar that the "
        "job starts; empty: the jar scripts/kafka.sh builds.",
    )

    _topics: tuple[str, ...] = PrivateAttr(())
    _start_ms: int | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _parse(self) -> KafkaConfig:
        self._topics = tuple(t.strip() for t in (self.topic or "").split(",") if t.strip())
        if self.start not in ("earliest", "latest"):
            try:
                self._start_ms = int(parse_rfc3339(self.start).timestamp() * 1000)
            except ValueError as exc:
                raise ValueError(f"kafka.start (--kafka_start): earliest, latest or an RFC 3339 time: {exc}") from None
            if self._start_ms > (time.time() + 86400) * 1000:
                raise ValueError(
                    f"kafka.start (--kafka_start): earliest, latest or an RFC 3339 time: {self.start!r} lies in the "
                    "future"
                )
        for name in ("scored_topic", "alerts_topic", "dead_letter_topic"):
            topic = getattr(self, name)
            if topic is not None and not KAFKA_TOPIC.fullmatch(topic):
                raise ValueError(
                    f"kafka.{name}: {topic!r} is not a Kafka topic name (letters, digits, . _ -, at most 249)"
                )
            if topic is not None and topic in self._topics:
                raise ValueError(
                    f"kafka.{name}: {topic!r} is the topic the job reads; the job would read its own output"
                )
        return self

    @property
    def topics(self) -> list[str]:
        """kafka.topic, split."""
        return list(self._topics)

    @property
    def offset_reset(self) -> str:
        """The consumer's auto.offset.reset: where a partition with no committed offset starts."""
        return self.start if self.start in ("earliest", "latest") else "earliest"

    @property
    def start_read_time_ms(self) -> int | None:
        """kafka.start as a time (epoch ms), or None for earliest / latest."""
        return self._start_ms

    @property
    def sinks(self) -> tuple[str | None, str | None, str | None]:
        return self.scored_topic, self.alerts_topic, self.dead_letter_topic


class PubSubConfig(Section):
    option_prefix = "pubsub_"
    subscription: Text | None = setting(
        None, "projects/P/subscriptions/S to read (source.kind pubsub).", pattern=PUBSUB_SUBSCRIPTION.pattern
    )
    id_label: Text = setting(
        "", "Attribute holding a unique message id: Pub/Sub's redeliveries with it are dropped at the source."
    )
    timestamp_attribute: Text = setting(
        "", "Attribute holding the message's time (RFC 3339 or epoch ms); empty: the publish time."
    )
    alerts_topic: Text | None = setting(
        None, "projects/P/topics/T: REVIEW and DECLINE records also published here.", pattern=PUBSUB_TOPIC.pattern
    )

    @model_validator(mode="after")
    def _forms(self) -> PubSubConfig:
        if self.subscription is not None and not PUBSUB_SUBSCRIPTION.fullmatch(self.subscription):
            raise ValueError(f"pubsub.subscription: {self.subscription!r} is not projects/PROJECT/subscriptions/NAME")
        if self.alerts_topic is not None and not PUBSUB_TOPIC.fullmatch(self.alerts_topic):
            raise ValueError(f"pubsub.alerts_topic: {self.alerts_topic!r} is not projects/PROJECT/topics/NAME")
        return self


class BigQueryConfig(Section):
    option_prefix = "bigquery_"
    scored_table: Text | None = setting(
        None,
        "PROJECT:DATASET.TABLE (or DATASET.TABLE): scored records to this BigQuery table instead of files; the "
        "table is created from the ScoredTransaction contract when missing.",
        pattern=BIGQUERY_TABLE.pattern,
    )
    dead_letter_table: Text | None = setting(
        None,
        "PROJECT:DATASET.TABLE (or DATASET.TABLE): dead letters to this BigQuery table instead of files; created "
        "from the DeadLetter contract when missing.",
        pattern=BIGQUERY_TABLE.pattern,
    )
    method: Literal["auto", "storage_write_api", "file_loads", "streaming_inserts"] = setting(
        "auto",
        "How rows are written: storage_write_api (exactly once; a Java transform Beam expands when the job is "
        "built), file_loads, streaming_inserts, or auto (file loads in batch, streaming inserts in streaming).",
    )

    @model_validator(mode="after")
    def _forms(self) -> BigQueryConfig:
        for name in ("scored_table", "dead_letter_table"):
            table = getattr(self, name)
            if table is not None and not BIGQUERY_TABLE.fullmatch(table):
                raise ValueError(
                    f"bigquery.{name}: {table!r} is not PROJECT:DATASET.TABLE, PROJECT.DATASET.TABLE or DATASET.TABLE"
                )
        return self


class StreamingConfig(Section):
    window_seconds: Int = setting(
        60,
        "Streaming output: scored records and dead letters go to one file set per fixed event-time window of this "
        "length, written when the window closes.",
        gt=0,
    )
    allowed_lateness_seconds: Int = setting(
        300,
        "How far a transaction's event_time may lie behind its source's watermark (the time it was taken) and "
        "still be on time; later ones follow streaming.late_policy.",
        ge=0,
    )
    late_policy: Literal["dead_letter", "score"] = setting(
        "dead_letter",
        "A record later than allowed: dead_letter (LATE_RECORD) or score (scored, `late: true`, in the window of "
        "its arrival).",
    )
    stop_after_idle_seconds: Float = setting(
        0.0, "Drain and stop a streaming run after this many seconds without a new file; 0: run until Ctrl-C.", ge=0
    )
    summary_interval_seconds: Float = setting(30.0, "How often a running streaming job refreshes summary.json.", gt=0)


class VelocityConfig(Section):
    option_prefix = "velocity_"
    order_wait_seconds: Int | None = setting(
        None,
        "Streaming: how long past a transaction's event_time (by the watermark) 35_velocity waits before "
        "scoring it, so that its card's earlier transactions that come out of order are counted; default: "
        "streaming.allowed_lateness_seconds, which gives the batch results for every on-time transaction.",
        ge=0,
    )


class DedupeConfig(Section):
    option_prefix = "dedupe_"
    horizon_seconds: Int = setting(
        3600,
        "A transaction_id is remembered this long after its latest copy's event_time: a copy within it is a duplicate "
        "(dropped and counted) or, with different content, a TRANSACTION_ID_CONFLICT dead letter.",
        gt=0,
    )


class ReferenceConfig(Section):
    customers: Path | None = setting(
        None, "Customer profiles (JSONL, one per card_id); required with enrich.backend files."
    )
    merchants: Path | None = setting(
        None, "Merchant profiles (JSONL, one per merchant_id); required with enrich.backend files."
    )


class OutputConfig(Section):
    dir: Dir = setting("output", "Where scored/, dead_letters/ and summary.json are written.", option="output_dir")
    overwrite: Flag = setting(
        False, "Replace an output folder that holds files the job did not write (`--overwrite` alone means true)."
    )
    parquet: Flag = setting(False, "Also write scored records as Parquet under scored_parquet/.")
    num_shards: Int = setting(0, "Output files per sink; 0 lets the runner decide.", ge=0)
    include_features: Flag = setting(
        False,
        "Add `features` (feature name to value, in the model's order) to every scored record, for audit "
        "and for logging serving features for training.",
    )


class ValidateConfig(Section):
    max_future_skew_seconds: Int = setting(300, "How far event_time may lie ahead of the run's clock.", ge=0)


class PostgresConfig(Section):
    """The profile store (enrich.backend postgres): what a worker needs to reach it; never the password."""

    option_prefix = "pg_"
    dsn: Text | None = setting(
        None, "libpq connection string without the password: 'host=H port=P dbname=D user=U' (or service=NAME)."
    )
    password_env: Text = setting(
        "PGPASSWORD",
        "Environment variable holding the password (read on each worker); unset: libpq's pgpass or service file.",
    )
    customers_table: Text = setting(
        "customer_profiles",
        "Table of customer profiles ([schema.]table), one row per card_id; columns named as the contract's fields.",
    )
    merchants_table: Text = setting(
        "merchant_profiles", "Table of merchant profiles ([schema.]table), one row per merchant_id."
    )
    customers_query: Text = setting(
        "",
        "A query instead of the table: it takes the keys as %(keys)s (a text array) and returns one row per "
        "card_id found, columns named as CustomerProfile's fields (usual_amount_minor_units, ..._currency).",
    )
    merchants_query: Text = setting("", "The same for merchant profiles (keys: merchant_id).")
    batch_size: Int = setting(
        500, "Records held for one lookup (one query per profile kind); a bundle's end sends a smaller batch.", ge=1
    )
    cache_size: Int = setting(
        200_000, "Profiles of each kind a worker keeps (least recently used out first); 0: no cache.", ge=0
    )
    cache_ttl_seconds: Float = setting(
        300.0,
        "How long a cached profile (or a cached 'no such profile') is used before it is looked up again.",
        ge=0,
    )
    statement_timeout_ms: Int = setting(
        2000, "A lookup query running longer is cancelled by the server and retried.", ge=1
    )
    connect_timeout_seconds: Int = setting(5, "How long a connection attempt may take.", ge=1)
    retries: Int = setting(
        3,
        "Retries of a lookup after a transient error (connection lost or refused, timeout) before its records "
        "become PROFILE_STORE_UNAVAILABLE dead letters.",
        ge=0,
    )
    backoff_seconds: Float = setting(
        0.1, "First wait before a retry; doubled at each retry, with jitter (between half and all of it).", ge=0
    )
    backoff_max_seconds: Float = setting(2.0, "Longest wait between two retries.")

    @model_validator(mode="after")
    def _rules(self) -> PostgresConfig:
        if not ENV_NAME.fullmatch(self.password_env):
            raise ValueError(f"enrich.postgres.password_env: {self.password_env!r} is not an environment variable name")
        for name in ("customers_query", "merchants_query"):
            query = getattr(self, name)
            if query and KEYS_PLACEHOLDER not in query:
                raise ValueError(f"enrich.postgres.{name}: the query must take the keys as {KEYS_PLACEHOLDER}")
        for name in ("customers_table", "merchants_table"):
            table = getattr(self, name)
            if not all(part.strip() for part in table.split(".")) or table.count(".") > 1:
                raise ValueError(f"enrich.postgres.{name}: {table!r} is not a table name (table or schema.table)")
        if self.backoff_max_seconds < self.backoff_seconds:
            raise ValueError(
                f"enrich.postgres.backoff_max_seconds: must be at least enrich.postgres.backoff_seconds "
                f"({self.backoff_seconds}), got {self.backoff_max_seconds}"
            )
        return self

    def check_dsn(self) -> None:
        """A libpq connection string without a password. Never quoted back: it might hold one."""
        from psycopg import conninfo

        if not (self.dsn or "").strip():
            raise ValueError("enrich.postgres.dsn (--pg_dsn): a value is required when enrich.backend is postgres")
        try:
            params = conninfo.conninfo_to_dict(self.dsn or "")
        except Exception:  # noqa: BLE001 - psycopg's ProgrammingError, or a URL it cannot split
            raise ValueError(
                "enrich.postgres.dsn: not a libpq connection string (key=value pairs or a postgresql:// URL)"
            ) from None
        if params.get("password"):
            raise ValueError(
                "enrich.postgres.dsn: holds a password; put it in the environment variable named by "
                "enrich.postgres.password_env (default PGPASSWORD) or in a pgpass file, never in the config"
            )


class EnrichConfig(Section):
    missing_profile_policy: Literal["default", "dead_letter"] = setting(
        "default", "default: use a default profile and flag it; dead_letter: PROFILE_NOT_FOUND."
    )
    backend: Literal["files", "postgres"] = setting(
        "files",
        "Where 30_enrich finds the profiles: files (reference.customers / reference.merchants, read whole as side "
        "inputs) or postgres (looked up in batches in enrich.postgres.dsn, through a per-worker cache).",
        option="enrich_backend",
    )
    postgres: PostgresConfig = PostgresConfig()

    @property
    def store(self) -> PostgresConfig | None:
        """The profile store 30_enrich reads (backend postgres), or None (the files)."""
        return self.postgres if self.backend == "postgres" else None


class DeadLetterConfig(Section):
    option_prefix = "dead_letter_"
    payload: Literal["raw", "masked", "none"] = setting(
        "raw",
        "What dead letters keep of the original bytes: raw (replayable; card numbers sent in clear stay in "
        "clear: PCI scope), masked (card numbers masked) or none.",
    )


class PredictConfig(Section):
    model: Path = setting(..., "ONNX model file.")
    model_version: Text = setting("", "Model version stamped on every score; default: the model card's model_version.")
    min_batch_size: Int = setting(64, "Smallest inference batch.", ge=1)
    max_batch_size: Int = setting(1024, "Largest inference batch.")

    @model_validator(mode="after")
    def _batches(self) -> PredictConfig:
        if self.max_batch_size < self.min_batch_size:
            raise ValueError(
                f"predict.max_batch_size: must be at least predict.min_batch_size "
                f"({self.min_batch_size}), got {self.max_batch_size}"
            )
        return self


class ThresholdsConfig(Section):
    version: Text = setting(
        "v1", "Version of the decision thresholds, stamped on every score.", option="thresholds_version"
    )
    review: Float = setting(0.5, "Scores at or above this are REVIEW.", option="review_threshold")
    decline: Float = setting(0.9, "Scores at or above this are DECLINE.", option="decline_threshold")

    @model_validator(mode="after")
    def _order(self) -> ThresholdsConfig:
        if not 0.0 < self.review <= self.decline <= 1.0:
            raise ValueError(
                f"thresholds.review / thresholds.decline: need 0 < review <= decline <= 1, got "
                f"review={self.review}, decline={self.decline}"
            )
        if not self.version.strip():
            raise ValueError("thresholds.version: must not be empty (it is stamped on every score)")
        return self


class RunConfig(Section):
    as_of: Timestamp | None = setting(
        None, "Pin the run's clock (RFC 3339) for reproducible batch runs; default: wall clock."
    )


# Section name in the file -> its model, in the order the references list them.
SECTIONS: dict[str, type[Section]] = {
    "input": InputConfig,
    "source": SourceConfig,
    "kafka": KafkaConfig,
    "pubsub": PubSubConfig,
    "bigquery": BigQueryConfig,
    "streaming": StreamingConfig,
    "velocity": VelocityConfig,
    "dedupe": DedupeConfig,
    "reference": ReferenceConfig,
    "output": OutputConfig,
    "validate": ValidateConfig,
    "enrich": EnrichConfig,
    "dead_letter": DeadLetterConfig,
    "predict": PredictConfig,
    "thresholds": ThresholdsConfig,
    "run": RunConfig,
}
