"""The checks of a configuration against this machine's files: each file the job will read exists and
can be read, each folder it will watch can be listed. Remote paths (gs://, s3://) pass unchecked."""

from __future__ import annotations

import glob
import os
import pathlib
from typing import TYPE_CHECKING, Any

from pipeline.shared.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import JobConfig


def is_remote(path: str) -> bool:
    return "://" in path


def resolve(value: Any, base: pathlib.Path) -> Any:
    """A path from the config file, relative to the file's folder."""
    if isinstance(value, str) and value and not is_remote(value) and not os.path.isabs(value):
        return str(base / value)
    return value


def check(config: JobConfig) -> None:
    if config.source.kind == "watch":
        _check_watch_dir(config.source.watch_dir or "")
    elif config.source.kind == "files":
        _check_input(config.input.transactions or "")
    folder = config.predict.model_watch_dir
    if folder is not None and not is_remote(folder) and not os.path.isdir(folder):
        raise ConfigError(f"predict.model_watch_dir: {folder!r} is not a folder")
    if config.kafka.properties_file:
        _check_readable_file("kafka.properties_file", config.kafka.properties_file)
    for key, maybe_path in (
        ("reference.customers", config.reference.customers),
        ("reference.merchants", config.reference.merchants),
        ("predict.model", config.predict.model),
        ("predict.shadow_model", config.predict.shadow_model),
    ):
        if maybe_path is not None and not is_remote(maybe_path):
            _check_readable_file(key, maybe_path)


def _check_input(pattern: str) -> None:
    if is_remote(pattern):
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
    if is_remote(folder):
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
