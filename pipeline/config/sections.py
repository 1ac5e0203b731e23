"""The job's settings, one pydantic model per config section, each setting declared once.

A field is a setting: its type and bounds check the value, its description is the help text
(options, --help, the Flex Template's parameters and docs/configuration.md are generated from it),
and `option` names its command-line option where the section's prefix plus the field name is not
it. Rules between the fields of one section sit on the section; rules across sections on
pipeline.config.JobConfig.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import model_validator

from pipeline.config.base import Section, setting
from pipeline.config.connectors import BigQueryConfig, KafkaConfig, PubSubConfig
from pipeline.config.kinds import Dir, Flag, Float, Glob, Int, Path, Text, Timestamp

STREAMING_SOURCES = ("watch", "kafka", "pubsub")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEYS_PLACEHOLDER = "%(keys)s"


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
    order: Literal["arrival", "event_time"] = setting(
        "arrival",
        "How 20_dedupe and 35_velocity take a streaming run's records. arrival: each is scored as it comes, from "
        "its card's history as it stands (one that comes after a later one of its card is scored from the "
        "earlier ones, then joins the history: counted as velocity_out_of_order), and the first copy of a "
        "transaction_id to come is kept. event_time (replays, backfills): each waits until the watermark passes "
        "it (35_velocity: plus velocity.order_wait_seconds), then a card's records are scored in event-time "
        "order and the earliest copy is kept, as in batch. Batch is always in event-time order.",
        option="streaming_order",
    )
    state_shards: Int = setting(
        16,
        "streaming.order arrival: 20_dedupe and 35_velocity keep their state in this many shards (keys), each "
        "read and written once per bundle; more shards spread a cluster's work over more workers, fewer cost "
        "fewer state requests.",
        gt=0,
        le=4096,
    )


class VelocityConfig(Section):
    option_prefix = "velocity_"
    order_wait_seconds: Int | None = setting(
        None,
        "Streaming, streaming.order event_time: how long past a transaction's event_time (by the watermark) "
        "35_velocity waits before "
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
    report: Flag = setting(
        True,
        "Write report.html beside summary.json: the summary, score distribution, decisions over event time, "
        "dead letters with masked examples, streaming throughput and latency, the model card (self-contained).",
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
    explain: Literal["decisions", "all", "none"] = setting(
        "decisions",
        "Which scored records carry their reasons (the features that pushed the score up most, with "
        "their values and contributions): decisions = REVIEW and DECLINE, all, or none. Needs a model "
        "whose card names its trees in LightGBM's format (tools.train writes them).",
    )
    reasons: Int = setting(3, "Most reasons a scored record carries.", ge=1, le=50)
    drift_threshold: Float = setting(
        0.2,
        "Population stability index above which the score or a feature is flagged as drifted (logged, and "
        "listed in the summary's drift.flagged); needs a model card with a drift reference.",
        gt=0,
    )
    model_watch_dir: Dir | None = setting(
        None,
        "A folder of model versions, each a sub-folder with model.onnx and model_card.json (as tools.train "
        "writes them), ordered by name: the newest that passes the start-up checks scores, at the start "
        "and, when a newer one appears, from the next batch on, without a restart; one that fails is "
        "refused and logged, and the running model goes on. predict.model scores until a version is there.",
    )
    model_watch_seconds: Float = setting(10.0, "How often predict.model_watch_dir is looked at.", gt=0)
    shadow_model: Path | None = setting(
        None,
        "A challenger ONNX model (with its model card) scored beside the champion on every record: its "
        "score and decision go into the output beside the champion's and never change the decision; "
        "the summary compares the two. One model's features must start with the other's (fs-v3 beside fs-v2, "
        "or fs-v1): the job computes the longer vector and each model reads its own first columns.",
    )

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
    metrics_port: Int = setting(
        0,
        "Serve Prometheus metrics (riskpipe_*) on this port while the job runs, batch or streaming; 0: none. "
        "The figures are those of the workers that run in this process (FnApiRunner, Prism).",
        ge=0,
        le=65535,
    )
    metrics_host: Text = setting("127.0.0.1", "Address the metrics endpoint listens on (0.0.0.0: every interface).")
    progress: Literal["auto", "on", "off"] = setting(
        "auto",
        "A batch run's progress line on stderr (files, records, rate, time left): auto shows it when stderr is "
        "a terminal.",
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
