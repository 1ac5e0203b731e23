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
from collections.abc import Mapping
from typing import Any

import yaml

from pipeline.shared.clock import TIMESTAMP_MAX_SECONDS, parse_rfc3339
from pipeline.shared.dead_letter import PAYLOAD_POLICIES


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
        "them as they arrive (streaming, on Prism by default).",
        choices=("files", "watch"),
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
        "reference.customers", "customers", "path", None, "Customer profiles (JSONL, one per card_id).", required=True
    ),
    Setting(
        "reference.merchants",
        "merchants",
        "path",
        None,
        "Merchant profiles (JSONL, one per merchant_id).",
        required=True,
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
    late_policy: str
    stop_after_idle_seconds: float
    summary_interval_seconds: float
    dedupe_horizon_seconds: int
    customers: str
    merchants: str
    output_dir: str
    overwrite: bool
    parquet: bool
    num_shards: int
    max_future_skew_seconds: int
    missing_profile_policy: str
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
        return self.source == "watch"

    @property
    def transaction_files(self) -> list[str]:
        if self.transactions is None:
            return []
        return sorted(glob.glob(self.transactions)) if not _is_remote(self.transactions) else [self.transactions]


_FIELD_OF = {s.key: s.option if s.option != "input" else "transactions" for s in SETTINGS}


def _is_remote(path: str) -> bool:
    return "://" in path


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, key + "."))
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
    flat = _flatten(data)
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
    if not config.streaming and config.transactions is None:
        raise ConfigError("input.transactions (--input): a value is required when source.kind is files")
    if config.streaming:
        if config.watch_dir is None:
            raise ConfigError("source.watch_dir (--watch_dir): a value is required when source.kind is watch")
        if config.parquet:
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
    if config.streaming:
        _check_watch_dir(config.watch_dir or "")
    else:
        _check_input(config.transactions or "")
    for key, path in (
        ("reference.customers", config.customers),
        ("reference.merchants", config.merchants),
        ("predict.model", config.model),
    ):
        if not _is_remote(path):
            _check_readable_file(key, path)


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
