"""The output folder: one run's complete results, published at the end, never mixed with another's.

    DIR/scored/  DIR/dead_letters/  DIR/scored_parquet/  DIR/summary.json

A run writes into a fresh hidden sibling, `.NAME.staging-<run id>`, and publishes it by renaming it
to DIR once the job has finished; summary.json is written last, so a DIR with a summary.json holds
one whole run. Before the job starts, the DIR of an earlier run is moved aside to `NAME.previous`
(and removed when the new run publishes): a run that fails or is killed leaves no DIR at all,
never the earlier run's "balanced" summary as if it were its own, and the earlier results can
still be found in NAME.previous.

A folder is the job's when it holds nothing but what the job writes; one that holds other files is
refused (ConfigError, exit 2) unless `overwrite` is set. A lock file beside DIR (`.NAME.lock`,
flock) lets one run at a time write into DIR: a second run started at once stops with exit 2 and
touches nothing. The lock goes with the process, so a killed run never leaves it held; its stale
staging folder is removed by the next run.

A streaming run appends instead (`appending`): it writes into DIR itself, one file set per window,
each file renamed into place whole (pipeline.io.windowed_files), and a restarted run adds to
the same DIR; summary.json is replaced whole (written beside it, then renamed) at every refresh, and
ledger.jsonl lists what has been written (pipeline.io.progress) so that a restart after a crash
reads nothing twice, and state/ holds what the stateful stages remember (pipeline.io.shard_files)
so that a restart goes on with it.
A batch run never replaces a streaming run's DIR, nor a streaming run a batch run's, unless
`overwrite` is set.

Remote folders (gs://, s3://) cannot be renamed: there the run writes into DIR directly, and DIR
should be a fresh prefix per run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import shutil
import time
from typing import IO

from apache_beam.io.filesystems import FileSystems

from pipeline.io import shard_files
from pipeline.shared.errors import ConfigError

OURS = frozenset(
    {
        "scored",
        "dead_letters",
        "scored_parquet",
        "summary.json",
        "report.html",
        ".riskpipe-run",
        "ledger.jsonl",
        shard_files.FOLDER,
    }
)
MARKER = ".riskpipe-run"


def _is_ours(folder: pathlib.Path) -> bool:
    # a refresh cut short leaves its temporary file
    entries = {e for e in os.listdir(folder) if not e.startswith((".summary.json.", ".report.html."))}
    if not entries:
        return True
    if not entries <= OURS:
        return False
    if MARKER in entries:
        return True
    try:  # written by a version of the job that left no marker
        return "pipeline_version" in json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _mode(folder: pathlib.Path) -> str:
    """batch or streaming: the kind of run whose results `folder` holds."""
    try:
        return str(json.loads((folder / MARKER).read_text(encoding="utf-8")).get("mode", "batch"))
    except (OSError, ValueError, AttributeError):
        return "batch"


class OutputFolder:
    def __init__(self, final: str, overwrite: bool = False, protected: tuple[str, ...] = (), appending: bool = False):
        """`protected`: paths the run reads (input, reference files, model, config); a folder that
        holds one of them, the working directory or the home folder is never replaced."""
        self.final = final
        self._protected = protected
        self.remote = "://" in final
        self._overwrite = overwrite
        self.appending = appending
        self._lock: IO[str] | None = None
        self.staging = final
        if not self.remote:
            path = pathlib.Path(final).absolute()
            self._path = path
            self._previous = path.with_name(path.name + ".previous")

    def prepare(self) -> str:
        """Checks and locks the folder and creates the staging folder; returns where to write."""
        if self.remote:
            return self.final
        path, where = self._path, f"output.dir: {self.final}"
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{where} is a file, not a folder")
        resolved = path.resolve()
        for other in (os.getcwd(), str(pathlib.Path.home()), *self._protected):
            if "://" in other:
                continue
            target = pathlib.Path(other).resolve()
            if target == resolved or resolved in target.parents:
                raise ConfigError(
                    f"{where} holds {other}, which the job needs or must not replace; choose a folder of its own"
                )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{where}: its parent folder cannot be created: {exc.strerror or exc}") from None
        lock_path = path.with_name(f".{path.name}.lock")
        try:
            lock = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
        except OSError as exc:
            raise ConfigError(f"{where}: not writable ({lock_path}: {exc.strerror or exc})") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise ConfigError(f"{where}: another run ({holder}) is writing into this folder") from None
        self._lock = lock
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        try:
            if path.is_dir() and not _is_ours(path) and not self._overwrite:
                raise ConfigError(
                    f"{where} holds files the job did not write ({', '.join(sorted(os.listdir(path))[:5])}); "
                    "choose another folder or pass --overwrite to replace it"
                )
            if path.is_dir() and os.listdir(path) and _mode(path) != self.mode and not self._overwrite:
                raise ConfigError(
                    f"{where} holds a {_mode(path)} run's results and this is a {self.mode} run; choose another "
                    "folder or pass --overwrite"
                )
            if self.appending:
                try:
                    path.mkdir(exist_ok=True)
                    if _mode(path) != self.mode:
                        (path / MARKER).write_text(json.dumps({"mode": self.mode, "started": time.time()}) + "\n")
                except OSError as exc:
                    raise ConfigError(f"{where}: not writable ({exc.strerror or exc})") from None
                self.staging = str(path)
                return self.staging
            for stale in path.parent.glob(f".{path.name}.staging-*"):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; the lock says none runs
            staging = path.with_name(f".{path.name}.staging-{os.getpid()}-{time.time_ns()}")
            try:
                staging.mkdir()
                (staging / MARKER).write_text(
                    json.dumps({"mode": self.mode, "pid": os.getpid(), "started": time.time()}) + "\n"
                )
            except OSError as exc:
                raise ConfigError(f"{where}: not writable ({exc.strerror or exc})") from None
        except BaseException:
            self.release()
            raise
        self.staging = str(staging)
        return self.staging

    @property
    def mode(self) -> str:
        return "streaming" if self.appending else "batch"

    def retire_previous(self) -> None:
        """Moves an earlier run's DIR aside to NAME.previous, so that DIR is never stale."""
        if self.remote or self.appending or not self._path.exists():
            return
        if self._previous.exists():
            shutil.rmtree(self._previous)
        os.rename(self._path, self._previous)

    def write_summary(self, data: bytes) -> None:
        """summary.json, written last (still into the staging folder for local folders)."""
        self.write_file("summary.json", data)

    def write_file(self, name: str, data: bytes) -> None:
        """A file of the run's own beside its outputs (summary.json, report.html): replaced whole
        in a folder that a streaming run refreshes, else written into the staging folder."""
        if self.appending and not self.remote:
            temporary = self._path / f".{name}.{os.getpid()}.tmp"
            temporary.write_bytes(data)
            os.replace(temporary, self._path / name)
            return
        with FileSystems.create(f"{self.staging.rstrip('/')}/{name}") as f:
            f.write(data)

    def publish(self) -> None:
        if not self.remote and not self.appending:
            os.rename(self.staging, self._path)
            if self._previous.exists():
                shutil.rmtree(self._previous, ignore_errors=True)
        self.release()

    def abandon(self) -> None:
        """A failed run: its staging folder goes, nothing is published."""
        if not self.remote and not self.appending and self.staging != self.final:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.close()
            self._lock = None
