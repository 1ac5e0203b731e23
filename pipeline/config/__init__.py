"""The job's configuration: config.yaml plus command-line overrides, validated before anything runs.

Each setting has a dotted key in the file (predict.model) and a pipeline option on the command
line (--model), so Flex Template parameters and Flink submissions need no file edits. Settings are
declared once, as fields of the section models in pipeline.config.sections; this module reads the
file, merges the options, validates, and turns every problem into a ConfigError that names the key:
an unknown key, a wrong type, a file that does not exist, an impossible threshold order.

Paths in the file are relative to the file's folder; paths on the command line are relative to
the working directory. Remote paths (gs://, s3://, ...) are passed through unchecked.
This package imports no connector: connectors (pipeline.io) take their section whole.
"""

from __future__ import annotations

import datetime as dt
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from pipeline.config import files
from pipeline.config.reference import Setting, settings
from pipeline.config.sections import (
    BigQueryConfig,
    DeadLetterConfig,
    DedupeConfig,
    EnrichConfig,
    InputConfig,
    KafkaConfig,
    OutputConfig,
    PostgresConfig,
    PredictConfig,
    PubSubConfig,
    ReferenceConfig,
    RunConfig,
    SourceConfig,
    StreamingConfig,
    ThresholdsConfig,
    ValidateConfig,
    VelocityConfig,
)
from pipeline.shared.clock import TIMESTAMP_MAX_SECONDS
from pipeline.shared.errors import ConfigError

__all__ = [
    "ConfigError",
    "JobConfig",
    "KafkaConfig",
    "PostgresConfig",
    "Setting",
    "flatten",
    "load",
    "read_file",
    "settings",
]


class JobConfig(BaseModel):
    """The whole configuration: one typed section per part of the job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: InputConfig = InputConfig()
    source: SourceConfig = SourceConfig()
    kafka: KafkaConfig = KafkaConfig()
    pubsub: PubSubConfig = PubSubConfig()
    bigquery: BigQueryConfig = BigQueryConfig()
    streaming: StreamingConfig = StreamingConfig()
    velocity: VelocityConfig = VelocityConfig()
    dedupe: DedupeConfig = DedupeConfig()
    reference: ReferenceConfig = ReferenceConfig()
    output: OutputConfig = OutputConfig()
    validate_: ValidateConfig = ValidateConfig()
    enrich: EnrichConfig = EnrichConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    predict: PredictConfig
    thresholds: ThresholdsConfig = ThresholdsConfig()
    run: RunConfig = RunConfig()

    @property
    def is_streaming(self) -> bool:
        return self.source.streaming

    @property
    def order_wait_seconds(self) -> int:
        """How long 35_velocity holds a record past its event time in streaming."""
        wait = self.velocity.order_wait_seconds
        return self.streaming.allowed_lateness_seconds if wait is None else wait

    @property
    def uses_kafka(self) -> bool:
        """Whether the job has a Kafka read or write (Java transforms, an expansion service)."""
        return self.source.kind == "kafka" or any(self.kafka.sinks)

    def with_output_dir(self, folder: str) -> JobConfig:
        return self.model_copy(update={"output": self.output.model_copy(update={"dir": folder})})

    @model_validator(mode="after")
    def _across_sections(self) -> JobConfig:
        source, kafka = self.source.kind, self.kafka
        if source == "files" and self.input.transactions is None:
            raise ValueError("input.transactions (--input): a value is required when source.kind is files")
        if source == "watch" and self.source.watch_dir is None:
            raise ValueError("source.watch_dir (--watch_dir): a value is required when source.kind is watch")
        if source == "kafka":
            if not kafka.topics:
                raise ValueError("kafka.topic (--kafka_topic): a value is required when source.kind is kafka")
            if not kafka.group_id:
                raise ValueError("kafka.group_id (--kafka_group_id): must not be empty (offsets are committed to it)")
        if self.uses_kafka and not (kafka.bootstrap_servers or "").strip():
            raise ValueError("kafka.bootstrap_servers (--kafka_bootstrap_servers): a value is required for Kafka")
        if source == "pubsub" and not self.pubsub.subscription:
            raise ValueError(
                "pubsub.subscription (--pubsub_subscription): a value is required when source.kind is pubsub"
            )
        if self.bigquery.scored_table is not None and kafka.scored_topic is not None:
            raise ValueError("bigquery.scored_table and kafka.scored_topic: scored records go to one of them, not both")
        if self.bigquery.dead_letter_table is not None and kafka.dead_letter_topic is not None:
            raise ValueError(
                "bigquery.dead_letter_table and kafka.dead_letter_topic: dead letters go to one of them, not both"
            )
        if self.enrich.backend == "files":
            for key, option, path in (
                ("reference.customers", "customers", self.reference.customers),
                ("reference.merchants", "merchants", self.reference.merchants),
            ):
                if path is None:
                    raise ValueError(f"{key} (--{option}): a value is required when enrich.backend is files")
        else:
            self.enrich.postgres.check_dsn()
        if self.is_streaming and self.output.parquet:
            raise ValueError("output.parquet: Parquet output is written by batch runs only (source.kind files)")
        skew = self.validate_.max_future_skew_seconds
        now = self.run.as_of.timestamp() if self.run.as_of is not None else dt.datetime.now(dt.UTC).timestamp()
        # Leave a day of room: 40_features turns event times into local times of up to UTC+14.
        latest = TIMESTAMP_MAX_SECONDS - 86400
        if now + skew > latest:
            raise ValueError(
                f"validate.max_future_skew_seconds: {skew} s after the run's clock lies beyond year 9999, which a "
                f"protobuf Timestamp cannot hold (at most {int(latest - now)} s)"
            )
        return self


# The file's section `validate` is the model's field `validate_` (pydantic's BaseModel has a
# method of that name).
_FIELD_OF_SECTION = {"validate": "validate_"}
_SECTION_OF_FIELD = {field: section for section, field in _FIELD_OF_SECTION.items()}
_BY_KEY = {s.key: s for s in settings()}
_BY_OPTION = {s.option: s for s in settings()}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config file's nested sections as dotted keys (predict.model)."""
    flat: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


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
        if key not in _BY_KEY:
            raise ConfigError(f"{key}: unknown key in {file.name} (known keys: {', '.join(_BY_KEY)})")
    return flat


def load(
    config_path: str | os.PathLike[str] | None, overrides: Mapping[str, Any] | None = None, check_files: bool = True
) -> JobConfig:
    """Merge the file and command-line overrides (by option name) and validate the result."""
    values: dict[str, Any] = {}
    if config_path is not None:
        file_dir = pathlib.Path(config_path).resolve().parent
        for key, value in read_file(config_path).items():
            values[key] = files.resolve(value, file_dir) if _BY_KEY[key].is_path else value
    for option, value in (overrides or {}).items():
        if value is None:
            continue
        if option not in _BY_OPTION:
            raise ConfigError(f"--{option}: unknown option")
        values[_BY_OPTION[option].key] = value
    config = build({key: value for key, value in values.items() if value is not None})
    if check_files:
        files.check(config)
    return config


def build(values: Mapping[str, Any]) -> JobConfig:
    """A JobConfig from dotted keys (as a file or a test gives them); ConfigError naming the key."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        parts = key.split(".")
        parts[0] = _FIELD_OF_SECTION.get(parts[0], parts[0])
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    try:
        return JobConfig.model_validate(nested)
    except ValidationError as exc:
        raise ConfigError(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    parts = [str(part) for part in error["loc"]]
    key = ".".join([_SECTION_OF_FIELD.get(parts[0], parts[0]), *parts[1:]] if parts else [])
    setting = _BY_KEY.get(key)
    if setting is None and error["type"] == "missing":
        return f"{key}: a value is required"  # a required section
    if setting is None:
        return message  # a rule across fields: its message names the keys
    kind, got = error["type"], error.get("input")
    bound = (error.get("ctx") or {}).get("gt", (error.get("ctx") or {}).get("ge"))
    if kind == "missing":
        message = "a value is required"
    elif kind == "literal_error":
        message = f"{got!r} is not one of {', '.join(setting.choices)}"
    elif kind == "greater_than":
        return f"{key}: must be positive, got {got}" if bound == 0 else f"{key}: must be more than {bound}, got {got}"
    elif kind == "greater_than_equal":
        least = "must not be negative" if bound == 0 else f"must be at least {bound}"
        return f"{key}: {least}, got {got}"
    return f"{key} (--{setting.option}): {message}"
