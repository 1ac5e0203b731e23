"""The job's configuration: config.yaml, validated before anything runs, every key overridable.

Each setting has a dotted key in the file (predict.model) and a pipeline option on the command
line (--model), so Flex Template parameters and Flink submissions need no file edits. Validation
stops the job with a message that names the key: an unknown key, a wrong type, a file that does
not exist, an impossible threshold order.

Paths in the file are relative to the file's folder; paths on the command line are relative to
the working directory. Remote paths (gs://, s3://, ...) are passed through unchecked.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import yaml

from pipeline.shared import bigquery, profile_store
from pipeline.shared.clock import TIMESTAMP_MAX_SECONDS, parse_rfc3339
from pipeline.shared.dead_letter import PAYLOAD_POLICIES
from pipeline.shared.kafka import check_start as kafka_start_check


class ConfigError(ValueError):
    """The configuration cannot run; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Setting:
    key: str
    option: str
    kind: str  # str | int | float | bool | path | glob | dir | choice | timestamp
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    required: bool = False


SOURCE_KINDS = ("files", "watch", "kafka", "pubsub")
STREAMING_SOURCES = ("watch", "kafka", "pubsub")
KAFKA_COMMIT_MODES = ("auto", "written", "finalize", "bundle")
KAFKA_VALUE_FORMATS = ("json", "protobuf")
ENRICH_BACKENDS = ("files", "postgres")

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "input.transactions",
        "input",
        "glob",
        None,
        "Transactions to score (source.kind files): JSONL files, plain or compressed; a glob pattern.",
    ),
    Setting(
        "input.max_record_bytes",
        "max_record_bytes",
        "int",
        1024 * 1024,
        "Longest line taken as a record; a longer one is a RECORD_TOO_LARGE dead letter, never held whole.",
    ),
    Setting(
        "source.kind",
        "source",
        "choice",
        "files",
        "files: read input.transactions once (batch); watch: watch source.watch_dir for new files and score "
        "them as they arrive; kafka: read kafka.topic; pubsub: read pubsub.subscription (the last three stream, "
        "on Prism by default; pubsub on Dataflow).",
        choices=SOURCE_KINDS,
    ),
    Setting(
        "source.watch_dir",
        "watch_dir",
        "dir",
        None,
        "The folder source kind `watch` watches. Writers must write `NAME.tmp` (or a hidden `.NAME`) and rename "
        "it when complete; other files are taken once their size and time have not changed for "
        "source.settle_seconds.",
    ),
    Setting("source.poll_interval_seconds", "poll_interval_seconds", "float", 1.0, "How often the folder is listed."),
    Setting(
        "source.settle_seconds",
        "settle_seconds",
        "float",
        1.0,
        "A watched file is taken only when it has not changed for this long (a second guard behind the rename rule).",
    ),
    Setting(
        "kafka.bootstrap_servers",
        "kafka_bootstrap_servers",
        "str",
        None,
        "Kafka brokers, HOST:PORT[,HOST:PORT...]: for source.kind kafka and for the kafka.*_topic sinks.",
    ),
    Setting("kafka.topic", "kafka_topic", "str", None, "Topic(s) to read (source.kind kafka); several: T1,T2."),
    Setting(
        "kafka.group_id",
        "kafka_group_id",
        "str",
        "riskpipe-scoring",
        "Consumer group: a restarted job goes on from the offsets this group committed.",
    ),
    Setting(
        "kafka.start",
        "kafka_start",
        "str",
        "earliest",
        "Where to start where the group has no committed offset: earliest, latest, or an RFC 3339 time (every "
        "partition from its first record at or after it, whatever the group committed).",
    ),
    Setting(
        "kafka.commit",
        "kafka_commit",
        "choice",
        "auto",
        "How read offsets are committed to the group: written (once every record before them is written out: a "
        "crash loses nothing; local runners such as Prism), finalize (KafkaIO commits when the runner finalizes "
        "a checkpoint; Flink, Dataflow), bundle (after each read bundle: a crash loses what was read and not yet "
        "written), auto (written on Prism, finalize elsewhere).",
        choices=KAFKA_COMMIT_MODES,
    ),
    Setting(
        "kafka.properties_file",
        "kafka_properties_file",
        "path",
        None,
        "Kafka client properties (security: SASL, TLS) in a Java .properties file; RISKPIPE_KAFKA_<NAME> "
        "environment variables add to it (RISKPIPE_KAFKA_SASL_JAAS_CONFIG -> sasl.jaas.config). Never in this file.",
    ),
    Setting("kafka.scored_topic", "kafka_scored_topic", "str", None, "Scored records to this topic instead of files."),
    Setting(
        "kafka.alerts_topic",
        "kafka_alerts_topic",
        "str",
        None,
        "REVIEW and DECLINE records also to this topic.",
    ),
    Setting(
        "kafka.dead_letter_topic",
        "kafka_dead_letter_topic",
        "str",
        None,
        "Dead letters to this topic instead of files.",
    ),
    Setting(
        "kafka.value_format",
        "kafka_value_format",
        "choice",
        "json",
        "Values written to topics: json (proto3 JSON, proto field names) or protobuf (binary; the contracts' "
        "messages). Keys are the transaction_id.",
        choices=KAFKA_VALUE_FORMATS,
    ),
    Setting(
        "kafka.expansion_service",
        "kafka_expansion_service",
        "str",
        "",
        "Where KafkaIO's Java transforms come from: HOST:PORT of a running expansion service, or a jar that the "
        "job starts; empty: the jar scripts/kafka.sh builds.",
    ),
    Setting(
        "pubsub.subscription",
        "pubsub_subscription",
        "str",
        None,
        "projects/P/subscriptions/S to read (source.kind pubsub).",
    ),
    Setting(
        "pubsub.id_label",
        "pubsub_id_label",
        "str",
        "",
        "Attribute holding a unique message id: Pub/Sub's redeliveries with it are dropped at the source.",
    ),
    Setting(
        "pubsub.timestamp_attribute",
        "pubsub_timestamp_attribute",
        "str",
        "",
        "Attribute holding the message's time (RFC 3339 or epoch ms); empty: the publish time.",
    ),
    Setting(
        "pubsub.alerts_topic",
        "pubsub_alerts_topic",
        "str",
        None,
        "projects/P/topics/T: REVIEW and DECLINE records also published here.",
    ),
    Setting(
        "bigquery.scored_table",
        "bigquery_scored_table",
        "str",
        None,
        "PROJECT:DATASET.TABLE (or DATASET.TABLE): scored records to this BigQuery table instead of files; the "
        "table is created from the ScoredTransaction contract when missing.",
    ),
    Setting(
        "bigquery.dead_letter_table",
        "bigquery_dead_letter_table",
        "str",
        None,
        "PROJECT:DATASET.TABLE (or DATASET.TABLE): dead letters to this BigQuery table instead of files; created "
        "from the DeadLetter contract when missing.",
    ),
    Setting(
        "bigquery.method",
        "bigquery_method",
        "choice",
        "auto",
        "How rows are written: storage_write_api (exactly once; a Java transform Beam expands when the job is "
        "built), file_loads, streaming_inserts, or auto (file loads in batch, streaming inserts in streaming).",
        choices=bigquery.METHODS,
    ),
    Setting(
        "streaming.window_seconds",
        "window_seconds",
        "int",
        60,
        "Streaming output: scored records and dead letters go to one file set per fixed event-time window of this "
        "length, written when the window closes.",
    ),
    Setting(
        "streaming.allowed_lateness_seconds",
        "allowed_lateness_seconds",
        "int",
        300,
        "How far a transaction's event_time may lie behind its source's watermark (the time it was taken) and "
        "still be on time; later ones follow streaming.late_policy.",
    ),
    Setting(
        "velocity.order_wait_seconds",
        "velocity_order_wait_seconds",
        "int",
        None,
        "Streaming: how long past a transaction's event_time (by the watermark) 35_velocity waits before "
        "scoring it, so that its card's earlier transactions that come out of order are counted; default: "
        "streaming.allowed_lateness_seconds, which gives the batch results for every on-time transaction.",
    ),
    Setting(
        "streaming.late_policy",
        "late_policy",
        "choice",
        "dead_letter",
        "A record later than allowed: dead_letter (LATE_RECORD) or score (scored, `late: true`, in the window of "
        "its arrival).",
        choices=("dead_letter", "score"),
    ),
    Setting(
        "streaming.stop_after_idle_seconds",
        "stop_after_idle_seconds",
        "float",
        0.0,
        "Drain and stop a streaming run after this many seconds without a new file; 0: run until Ctrl-C.",
    ),
    Setting(
        "streaming.summary_interval_seconds",
        "summary_interval_seconds",
        "float",
        30.0,
        "How often a running streaming job refreshes summary.json.",
    ),
    Setting(
        "dedupe.horizon_seconds",
        "dedupe_horizon_seconds",
        "int",
        3600,
        "A transaction_id is remembered this long after its latest copy's event_time: a copy within it is a duplicate "
        "(dropped and counted) or, with different content, a TRANSACTION_ID_CONFLICT dead letter.",
    ),
    Setting(
        "reference.customers",
        "customers",
        "path",
        None,
        "Customer profiles (JSONL, one per card_id); required with enrich.backend files.",
    ),
    Setting(
        "reference.merchants",
        "merchants",
        "path",
        None,
        "Merchant profiles (JSONL, one per merchant_id); required with enrich.backend files.",
    ),
    Setting("output.dir", "output_dir", "dir", "output", "Where scored/, dead_letters/ and summary.json are written."),
    Setting(
        "output.overwrite",
        "overwrite",
        "bool",
        False,
        "Replace an output folder that holds files the job did not write (`--overwrite` alone means true).",
    ),
    Setting("output.parquet", "parquet", "bool", False, "Also write scored records as Parquet under scored_parquet/."),
    Setting("output.num_shards", "num_shards", "int", 0, "Output files per sink; 0 lets the runner decide."),
    Setting(
        "output.include_features",
        "include_features",
        "bool",
        False,
        "Add `features` (feature name to value, in the model's order) to every scored record, for audit "
        "and for logging serving features for training.",
    ),
    Setting(
        "validate.max_future_skew_seconds",
        "max_future_skew_seconds",
        "int",
        300,
        "How far event_time may lie ahead of the run's clock.",
    ),
    Setting(
        "enrich.missing_profile_policy",
        "missing_profile_policy",
        "choice",
        "default",
        "default: use a default profile and flag it; dead_letter: PROFILE_NOT_FOUND.",
        choices=("default", "dead_letter"),
    ),
    Setting(
        "enrich.backend",
        "enrich_backend",
        "choice",
        "files",
        "Where 30_enrich finds the profiles: files (reference.customers / reference.merchants, read whole as side "
        "inputs) or postgres (looked up in batches in enrich.postgres.dsn, through a per-worker cache).",
        choices=ENRICH_BACKENDS,
    ),
    Setting(
        "enrich.postgres.dsn",
        "pg_dsn",
        "str",
        None,
        "libpq connection string without the password: 'host=H port=P dbname=D user=U' (or service=NAME).",
    ),
    Setting(
        "enrich.postgres.password_env",
        "pg_password_env",
        "str",
        profile_store.DEFAULT_PASSWORD_ENV,
        "Environment variable holding the password (read on each worker); unset: libpq's pgpass or service file.",
    ),
    Setting(
        "enrich.postgres.customers_table",
        "pg_customers_table",
        "str",
        profile_store.CUSTOMERS.table,
        "Table of customer profiles ([schema.]table), one row per card_id; columns named as the contract's fields.",
    ),
    Setting(
        "enrich.postgres.merchants_table",
        "pg_merchants_table",
        "str",
        profile_store.MERCHANTS.table,
        "Table of merchant profiles ([schema.]table), one row per merchant_id.",
    ),
    Setting(
        "enrich.postgres.customers_query",
        "pg_customers_query",
        "str",
        "",
        "A query instead of the table: it takes the keys as %(keys)s (a text array) and returns one row per "
        "card_id found, columns named as CustomerProfile's fields (usual_amount_minor_units, ..._currency).",
    ),
    Setting(
        "enrich.postgres.merchants_query",
        "pg_merchants_query",
        "str",
        "",
        "The same for merchant profiles (keys: merchant_id).",
    ),
    Setting(
        "enrich.postgres.batch_size",
        "pg_batch_size",
        "int",
        500,
        "Records held for one lookup (one query per profile kind); a bundle's end sends a smaller batch.",
    ),
    Setting(
        "enrich.postgres.cache_size",
        "pg_cache_size",
        "int",
        200_000,
        "Profiles of each kind a worker keeps (least recently used out first); 0: no cache.",
    ),
    Setting(
        "enrich.postgres.cache_ttl_seconds",
        "pg_cache_ttl_seconds",
        "float",
        300.0,
        "How long a cached profile (or a cached 'no such profile') is used before it is looked up again.",
    ),
    Setting(
        "enrich.postgres.statement_timeout_ms",
        "pg_statement_timeout_ms",
        "int",
        2000,
        "A lookup query running longer is cancelled by the server and retried.",
    ),
    Setting(
        "enrich.postgres.connect_timeout_seconds",
        "pg_connect_timeout_seconds",
        "int",
        5,
        "How long a connection attempt may take.",
    ),
    Setting(
        "enrich.postgres.retries",
        "pg_retries",
        "int",
        3,
        "Retries of a lookup after a transient error (connection lost or refused, timeout) before its records "
        "become PROFILE_STORE_UNAVAILABLE dead letters.",
    ),
    Setting(
        "enrich.postgres.backoff_seconds",
        "pg_backoff_seconds",
        "float",
        0.1,
        "First wait before a retry; doubled at each retry, with jitter (between half and all of it).",
    ),
    Setting(
        "enrich.postgres.backoff_max_seconds",
        "pg_backoff_max_seconds",
        "float",
        2.0,
        "Longest wait between two retries.",
    ),
    Setting(
        "dead_letter.payload",
        "dead_letter_payload",
        "choice",
        "raw",
        "What dead letters keep of the original bytes: raw (replayable; card numbers sent in clear stay in "
        "clear: PCI scope), masked (card numbers masked) or none.",
        choices=PAYLOAD_POLICIES,
    ),
    Setting("predict.model", "model", "path", None, "ONNX model file.", required=True),
    Setting(
        "predict.model_version",
        "model_version",
        "str",
        "",
        "Model version stamped on every score; default: the model card's model_version.",
    ),
    Setting("predict.min_batch_size", "min_batch_size", "int", 64, "Smallest inference batch."),
    Setting("predict.max_batch_size", "max_batch_size", "int", 1024, "Largest inference batch."),
    Setting(
        "thresholds.version",
        "thresholds_version",
        "str",
        "v1",
        "Version of the decision thresholds, stamped on every score.",
    ),
    Setting("thresholds.review", "review_threshold", "float", 0.5, "Scores at or above this are REVIEW."),
    Setting("thresholds.decline", "decline_threshold", "float", 0.9, "Scores at or above this are DECLINE."),
    Setting(
        "run.as_of",
        "as_of",
        "timestamp",
        None,
        "Pin the run's clock (RFC 3339) for reproducible batch runs; default: wall clock.",
    ),
)
BY_KEY = {s.key: s for s in SETTINGS}
BY_OPTION = {s.option: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class JobConfig:
    transactions: str | None
    max_record_bytes: int
    source: str
    watch_dir: str | None
    poll_interval_seconds: float
    settle_seconds: float
    window_seconds: int
    allowed_lateness_seconds: int
    velocity_order_wait_seconds: int | None
    late_policy: str
    stop_after_idle_seconds: float
    summary_interval_seconds: float
    dedupe_horizon_seconds: int
    kafka_bootstrap_servers: str | None
    kafka_topic: str | None
    kafka_group_id: str
    kafka_start: str
    kafka_commit: str
    kafka_properties_file: str | None
    kafka_scored_topic: str | None
    kafka_alerts_topic: str | None
    kafka_dead_letter_topic: str | None
    kafka_value_format: str
    kafka_expansion_service: str
    pubsub_subscription: str | None
    pubsub_id_label: str
    pubsub_timestamp_attribute: str
    pubsub_alerts_topic: str | None
    bigquery_scored_table: str | None
    bigquery_dead_letter_table: str | None
    bigquery_method: str
    customers: str | None
    merchants: str | None
    output_dir: str
    overwrite: bool
    parquet: bool
    include_features: bool
    num_shards: int
    max_future_skew_seconds: int
    missing_profile_policy: str
    enrich_backend: str
    pg_dsn: str | None
    pg_password_env: str
    pg_customers_table: str
    pg_merchants_table: str
    pg_customers_query: str
    pg_merchants_query: str
    pg_batch_size: int
    pg_cache_size: int
    pg_cache_ttl_seconds: float
    pg_statement_timeout_ms: int
    pg_connect_timeout_seconds: int
    pg_retries: int
    pg_backoff_seconds: float
    pg_backoff_max_seconds: float
    dead_letter_payload: str
    model: str
    model_version: str
    min_batch_size: int
    max_batch_size: int
    thresholds_version: str
    review_threshold: float
    decline_threshold: float
    as_of: dt.datetime | None

    @property
    def streaming(self) -> bool:
        return self.source in STREAMING_SOURCES

    @property
    def order_wait_seconds(self) -> int:
        """How long 35_velocity holds a record past its event time in streaming."""
        if self.velocity_order_wait_seconds is None:
            return self.allowed_lateness_seconds
        return self.velocity_order_wait_seconds

    @property
    def profile_store(self) -> profile_store.StoreSettings | None:
        """The profile store 30_enrich reads (enrich.backend postgres), or None (the files)."""
        if self.enrich_backend != "postgres":
            return None
        return profile_store.StoreSettings(
            dsn=self.pg_dsn or "",
            password_env=self.pg_password_env,
            customers_table=self.pg_customers_table,
            merchants_table=self.pg_merchants_table,
            customers_query=self.pg_customers_query,
            merchants_query=self.pg_merchants_query,
            batch_size=self.pg_batch_size,
            cache_size=self.pg_cache_size,
            cache_ttl_seconds=self.pg_cache_ttl_seconds,
            statement_timeout_ms=self.pg_statement_timeout_ms,
            connect_timeout_seconds=self.pg_connect_timeout_seconds,
            retries=self.pg_retries,
            backoff_seconds=self.pg_backoff_seconds,
            backoff_max_seconds=self.pg_backoff_max_seconds,
        )

    @property
    def kafka_topics(self) -> list[str]:
        return [t.strip() for t in (self.kafka_topic or "").split(",") if t.strip()]

    @property
    def uses_kafka(self) -> bool:
        """Whether the job has a Kafka read or write (Java transforms, an expansion service)."""
        return self.source == "kafka" or any(
            (self.kafka_scored_topic, self.kafka_alerts_topic, self.kafka_dead_letter_topic)
        )

    @property
    def transaction_files(self) -> list[str]:
        if self.transactions is None:
            return []
        return sorted(glob.glob(self.transactions)) if not _is_remote(self.transactions) else [self.transactions]


_FIELD_OF = {s.key: s.option if s.option != "input" else "transactions" for s in SETTINGS}


def _is_remote(path: str) -> bool:
    return "://" in path


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config file's nested sections as dotted keys (predict.model), as SETTINGS names them."""
    flat: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def _coerce(setting: Setting, value: Any, base: pathlib.Path | None) -> Any:
    where = f"{setting.key} (--{setting.option})"
    kind = setting.kind
    if value is None:
        if setting.required:
            raise ConfigError(f"{where}: a value is required")
        return setting.default
    if kind in ("str", "path", "glob", "dir", "choice"):
        if not isinstance(value, str) or (not value and kind != "str"):
            raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
        if kind in ("path", "glob", "dir") and base is not None and not _is_remote(value) and not os.path.isabs(value):
            value = str(base / value)
        if kind == "choice" and value not in setting.choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(setting.choices)}")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if kind in ("int", "float"):
        convert, accepted, noun = (
            (int, int | str, "an integer") if kind == "int" else (float, int | float | str, "a number")
        )
        try:
            if isinstance(value, bool) or not isinstance(value, accepted):
                raise ValueError
            return convert(value)
        except ValueError:
            raise ConfigError(f"{where}: expected {noun}, got {value!r}") from None
    if kind == "timestamp":
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ConfigError(f"{where}: {value.isoformat()} has no time zone offset")
            value = value.isoformat()  # YAML reads unquoted timestamps itself; check them like text
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected an RFC 3339 timestamp, got {value!r}")
        try:
            return parse_rfc3339(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    raise AssertionError(kind)


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read config.yaml into flat dotted keys; unknown keys and bad YAML are ConfigErrors."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise ConfigError(f"--config: no such file {str(file)!r}")
    try:
        data = yaml.safe_load(file.read_bytes().decode("utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"--config: {file} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config: {file} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{file}: the top level must be a mapping of sections")
    flat = flatten(data)
    for key in flat:
        if key not in BY_KEY:
            raise ConfigError(f"{key}: unknown key in {file.name} (known keys: {', '.join(BY_KEY)})")
    return flat


def load(
    config_path: str | os.PathLike[str] | None, overrides: Mapping[str, Any] | None = None, check_files: bool = True
) -> JobConfig:
    """Merge the file and command-line overrides (by option name) and validate the result."""
    values: dict[str, tuple[Any, pathlib.Path | None]] = {}
    if config_path is not None:
        file_dir = pathlib.Path(config_path).resolve().parent
        for key, value in read_file(config_path).items():
            values[key] = (value, file_dir)
    for option, value in (overrides or {}).items():
        if value is None:
            continue
        if option not in BY_OPTION:
            raise ConfigError(f"--{option}: unknown option")
        values[BY_OPTION[option].key] = (value, None)
    resolved = {}
    for setting in SETTINGS:
        value, base = values.get(setting.key, (None, None))
        resolved[_FIELD_OF[setting.key]] = _coerce(setting, value, base)
    config = JobConfig(**resolved)
    _check(config, check_files)
    return config


def _check(config: JobConfig, check_files: bool) -> None:
    if not 0.0 < config.review_threshold <= config.decline_threshold <= 1.0:
        raise ConfigError(
            f"thresholds.review / thresholds.decline: need 0 < review <= decline <= 1, got "
            f"review={config.review_threshold}, decline={config.decline_threshold}"
        )
    if config.min_batch_size < 1:
        raise ConfigError(f"predict.min_batch_size: must be at least 1, got {config.min_batch_size}")
    if config.max_batch_size < config.min_batch_size:
        raise ConfigError(
            f"predict.max_batch_size: must be at least predict.min_batch_size "
            f"({config.min_batch_size}), got {config.max_batch_size}"
        )
    if config.max_future_skew_seconds < 0:
        raise ConfigError(
            f"validate.max_future_skew_seconds: must not be negative, got {config.max_future_skew_seconds}"
        )
    if config.max_record_bytes < 1:
        raise ConfigError(f"input.max_record_bytes: must be at least 1, got {config.max_record_bytes}")
    for key, value in (
        ("source.poll_interval_seconds", config.poll_interval_seconds),
        ("streaming.window_seconds", config.window_seconds),
        ("streaming.summary_interval_seconds", config.summary_interval_seconds),
        ("dedupe.horizon_seconds", config.dedupe_horizon_seconds),
    ):
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    for key, value in (
        ("source.settle_seconds", config.settle_seconds),
        ("streaming.allowed_lateness_seconds", config.allowed_lateness_seconds),
        ("streaming.stop_after_idle_seconds", config.stop_after_idle_seconds),
    ):
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value}")
    wait = config.velocity_order_wait_seconds
    if wait is not None and wait < 0:
        raise ConfigError(f"velocity.order_wait_seconds: must not be negative, got {wait}")
    if not config.streaming and config.transactions is None:
        raise ConfigError("input.transactions (--input): a value is required when source.kind is files")
    if config.source == "watch" and config.watch_dir is None:
        raise ConfigError("source.watch_dir (--watch_dir): a value is required when source.kind is watch")
    _check_kafka(config)
    _check_pubsub(config)
    _check_bigquery(config)
    _check_enrich(config)
    if config.streaming and config.parquet:
        raise ConfigError("output.parquet: Parquet output is written by batch runs only (source.kind files)")
    if config.num_shards < 0:
        raise ConfigError(f"output.num_shards: must not be negative, got {config.num_shards}")
    if not config.thresholds_version.strip():
        raise ConfigError("thresholds.version: must not be empty (it is stamped on every score)")
    now = config.as_of.timestamp() if config.as_of is not None else dt.datetime.now(dt.UTC).timestamp()
    # Leave a day of room: 40_features turns event times into local times of up to UTC+14.
    latest = TIMESTAMP_MAX_SECONDS - 86400
    if now + config.max_future_skew_seconds > latest:
        raise ConfigError(
            f"validate.max_future_skew_seconds: {config.max_future_skew_seconds} s after the run's clock lies beyond "
            f"year 9999, which a protobuf Timestamp cannot hold (at most {int(latest - now)} s)"
        )
    if not check_files:
        return
    if config.source == "watch":
        _check_watch_dir(config.watch_dir or "")
    elif config.source == "files":
        _check_input(config.transactions or "")
    if config.kafka_properties_file:
        _check_readable_file("kafka.properties_file", config.kafka_properties_file)
    for key, maybe_path in (
        ("reference.customers", config.customers),
        ("reference.merchants", config.merchants),
        ("predict.model", config.model),
    ):
        if maybe_path is not None and not _is_remote(maybe_path):
            _check_readable_file(key, maybe_path)


def _check_kafka(config: JobConfig) -> None:
    if config.source == "kafka":
        if not config.kafka_topics:
            raise ConfigError("kafka.topic (--kafka_topic): a value is required when source.kind is kafka")
        if not config.kafka_group_id:
            raise ConfigError("kafka.group_id (--kafka_group_id): must not be empty (offsets are committed to it)")
        try:
            kafka_start_check(config.kafka_start)
        except ValueError as exc:
            raise ConfigError(f"kafka.start (--kafka_start): earliest, latest or an RFC 3339 time: {exc}") from None
    if config.uses_kafka and not (config.kafka_bootstrap_servers or "").strip():
        raise ConfigError("kafka.bootstrap_servers (--kafka_bootstrap_servers): a value is required for Kafka")
    for key, topic in (
        ("kafka.scored_topic", config.kafka_scored_topic),
        ("kafka.alerts_topic", config.kafka_alerts_topic),
        ("kafka.dead_letter_topic", config.kafka_dead_letter_topic),
    ):
        if topic is not None and not _KAFKA_TOPIC.fullmatch(topic):
            raise ConfigError(f"{key}: {topic!r} is not a Kafka topic name (letters, digits, . _ -, at most 249)")
        if topic is not None and topic in config.kafka_topics:
            raise ConfigError(f"{key}: {topic!r} is the topic the job reads; the job would read its own output")


def _check_pubsub(config: JobConfig) -> None:
    if config.source == "pubsub":
        if not config.pubsub_subscription:
            raise ConfigError(
                "pubsub.subscription (--pubsub_subscription): a value is required when source.kind is pubsub"
            )
        if not _PUBSUB_SUBSCRIPTION.fullmatch(config.pubsub_subscription):
            raise ConfigError(
                f"pubsub.subscription: {config.pubsub_subscription!r} is not projects/PROJECT/subscriptions/NAME"
            )
    if config.pubsub_alerts_topic is not None and not _PUBSUB_TOPIC.fullmatch(config.pubsub_alerts_topic):
        raise ConfigError(f"pubsub.alerts_topic: {config.pubsub_alerts_topic!r} is not projects/PROJECT/topics/NAME")


def _check_bigquery(config: JobConfig) -> None:
    for key, table in (
        ("bigquery.scored_table", config.bigquery_scored_table),
        ("bigquery.dead_letter_table", config.bigquery_dead_letter_table),
    ):
        if table is not None and not _BIGQUERY_TABLE.fullmatch(table):
            raise ConfigError(f"{key}: {table!r} is not PROJECT:DATASET.TABLE, PROJECT.DATASET.TABLE or DATASET.TABLE")
    if config.bigquery_scored_table is not None and config.kafka_scored_topic is not None:
        raise ConfigError("bigquery.scored_table and kafka.scored_topic: scored records go to one of them, not both")
    if config.bigquery_dead_letter_table is not None and config.kafka_dead_letter_topic is not None:
        raise ConfigError(
            "bigquery.dead_letter_table and kafka.dead_letter_topic: dead letters go to one of them, not both"
        )


def _check_enrich(config: JobConfig) -> None:
    if config.enrich_backend == "files":
        for key, option, path in (
            ("reference.customers", "customers", config.customers),
            ("reference.merchants", "merchants", config.merchants),
        ):
            if path is None:
                raise ConfigError(f"{key} (--{option}): a value is required when enrich.backend is files")
        return
    if not (config.pg_dsn or "").strip():
        raise ConfigError("enrich.postgres.dsn (--pg_dsn): a value is required when enrich.backend is postgres")
    _check_dsn(config.pg_dsn or "")
    if not _ENV_NAME.fullmatch(config.pg_password_env):
        raise ConfigError(
            f"enrich.postgres.password_env: {config.pg_password_env!r} is not an environment variable name"
        )
    for key, query in (
        ("enrich.postgres.customers_query", config.pg_customers_query),
        ("enrich.postgres.merchants_query", config.pg_merchants_query),
    ):
        if query and profile_store.KEYS_PLACEHOLDER not in query:
            raise ConfigError(f"{key}: the query must take the keys as {profile_store.KEYS_PLACEHOLDER}")
    for key, table in (
        ("enrich.postgres.customers_table", config.pg_customers_table),
        ("enrich.postgres.merchants_table", config.pg_merchants_table),
    ):
        if not all(part.strip() for part in table.split(".")) or table.count(".") > 1:
            raise ConfigError(f"{key}: {table!r} is not a table name (table or schema.table)")
    for key, value, least in (
        ("enrich.postgres.batch_size", config.pg_batch_size, 1),
        ("enrich.postgres.cache_size", config.pg_cache_size, 0),
        ("enrich.postgres.cache_ttl_seconds", config.pg_cache_ttl_seconds, 0),
        ("enrich.postgres.statement_timeout_ms", config.pg_statement_timeout_ms, 1),
        ("enrich.postgres.connect_timeout_seconds", config.pg_connect_timeout_seconds, 1),
        ("enrich.postgres.retries", config.pg_retries, 0),
        ("enrich.postgres.backoff_seconds", config.pg_backoff_seconds, 0),
    ):
        if value < least:
            raise ConfigError(f"{key}: must be at least {least}, got {value}")
    if config.pg_backoff_max_seconds < config.pg_backoff_seconds:
        raise ConfigError(
            f"enrich.postgres.backoff_max_seconds: must be at least enrich.postgres.backoff_seconds "
            f"({config.pg_backoff_seconds}), got {config.pg_backoff_max_seconds}"
        )


def _check_dsn(dsn: str) -> None:
    """A libpq connection string without a password. Never quoted back: it might hold one."""
    from psycopg import conninfo

    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - psycopg's ProgrammingError, or a URL it cannot split
        raise ConfigError(
            "enrich.postgres.dsn: not a libpq connection string (key=value pairs or a postgresql:// URL)"
        ) from None
    if params.get("password"):
        raise ConfigError(
            "enrich.postgres.dsn: holds a password; put it in the environment variable named by "
            "enrich.postgres.password_env (default PGPASSWORD) or in a pgpass file, never in the config"
        )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PUBSUB_NAME = r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}"
_PUBSUB_SUBSCRIPTION = re.compile(rf"projects/[a-z][a-z0-9:.-]{{4,62}}/subscriptions/{_PUBSUB_NAME}")
# [PROJECT(: or .)]DATASET.TABLE; project ids may hold a domain (example.com:project).
_BIGQUERY_TABLE = re.compile(r"(?:[a-z][a-z0-9.:-]{4,62}[a-z0-9][:.])?[A-Za-z0-9_]{1,1024}\.[\w$-]{1,1024}")
_PUBSUB_TOPIC = re.compile(rf"projects/[a-z][a-z0-9:.-]{{4,62}}/topics/{_PUBSUB_NAME}")


def _check_input(pattern: str) -> None:
    if _is_remote(pattern):
        return
    if os.path.isdir(pattern):
        raise ConfigError(
            f"input.transactions: {pattern!r} is a folder; "
            f"give a file or a pattern such as '{pattern.rstrip('/')}/*.jsonl'"
        )
    matches = glob.glob(pattern)
    if not matches:
        raise ConfigError(f"input.transactions: no file matches {pattern!r}")
    if all(os.path.isdir(m) for m in matches):
        raise ConfigError(f"input.transactions: {pattern!r} matches only folders, no file")


def _check_watch_dir(folder: str) -> None:
    if _is_remote(folder):
        raise ConfigError(f"source.watch_dir: {folder!r}: only a local folder can be watched")
    if not os.path.isdir(folder):
        raise ConfigError(
            f"source.watch_dir: {folder!r} is not a folder" + ("" if os.path.exists(folder) else " (no such folder)")
        )
    if not os.access(folder, os.R_OK | os.X_OK):
        raise ConfigError(f"source.watch_dir: {folder!r} cannot be listed")


def _check_readable_file(key: str, path: str) -> None:
    if os.path.isdir(path):
        raise ConfigError(f"{key}: {path!r} is a folder, not a file")
    if not os.path.exists(path):
        raise ConfigError(f"{key}: no such file {path!r}" + (" (a broken link)" if os.path.lexists(path) else ""))
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: {path!r} is not a regular file (a FIFO or device is never opened)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise ConfigError(f"{key}: {path!r} cannot be read: {exc.strerror or exc}") from None


# The forms the checks above accept for these keys, for tools that describe the options (the
# Flex Template's parameter regexes).
PATTERNS: dict[str, str] = {
    "pubsub.subscription": _PUBSUB_SUBSCRIPTION.pattern,
    "pubsub.alerts_topic": _PUBSUB_TOPIC.pattern,
    "bigquery.scored_table": _BIGQUERY_TABLE.pattern,
    "bigquery.dead_letter_table": _BIGQUERY_TABLE.pattern,
    **{key: _KAFKA_TOPIC.pattern for key in ("kafka.scored_topic", "kafka.alerts_topic", "kafka.dead_letter_topic")},
}
