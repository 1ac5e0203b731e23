"""A stateful stage's shards kept in files beside the outputs, so that a job restarted on a local
runner starts from what the last run remembered (20_dedupe's ids, 35_velocity's card histories).

Prism keeps user state in its own memory: it dies with the job, and a restarted job would start
with every card's history empty and no id remembered. On Flink and Dataflow the runner's state is
durable (checkpoints, Dataflow's own store) and no file is kept.

    <output_dir>/state/<stage>/<shards>/shard-NNNN.log

A file holds the entries of the shard's log (pipeline.shared.shard_state), appended at the end of
each bundle that changed the shard, one record per bundle: a 4-byte big-endian length, then the
bundle's entries pickled as a list. A record cut short by a crash is recognised by its length and
cut off when the file is next read. When the stage rewrites its log (what is past its horizon
forgotten), the file is rewritten whole: written beside it, fsynced, renamed into place. A file is
opened for each append and closed after it, so that a rewrite never leaves a writer appending to
the file it replaced. An append reaches the operating system at the bundle's end (a killed process
loses none of it); only a rewrite is fsynced, so a machine lost at once can lose the last bundles'
entries: a few records missing from a card's history, a few ids from 20_dedupe's memory.

Entries are written at the end of the bundle that changed the shard, before its records are
written downstream; a restart reads again the records that were not written. The stages make that
harmless: 20_dedupe keeps a copy read again from the same source position as the copy it kept, and
35_velocity does not remember a transaction twice.

The folder is named by the shard count: a run with another `streaming.state_shards` starts empty
(and says so), since each entry belongs to the shard of its key.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
from collections.abc import Iterable
from typing import Any

FOLDER = "state"
_LENGTH = struct.Struct(">I")
_LOG = logging.getLogger(__name__)


class ShardFiles:
    """The files of one stage's shards. Picklable (it travels with the stage's DoFn); it holds no
    open file."""

    def __init__(self, folder: str, shards: int):
        self.folder = folder
        self.shards = shards
        self._dir = os.path.join(folder, str(shards))

    def path(self, shard: int) -> str:
        return os.path.join(self._dir, f"shard-{shard:04d}.log")

    def load(self, shard: int) -> list[Any]:
        """The shard's entries, in the order they were appended; a record a crash cut short is cut
        off the file."""
        entries: list[Any] = []
        try:
            with open(self.path(shard), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if shard == 0:
                self._say_if_other_counts()
            return entries
        at = good = 0
        while at + _LENGTH.size <= len(data):
            (length,) = _LENGTH.unpack_from(data, at)
            end = at + _LENGTH.size + length
            if end > len(data):
                break
            try:
                entries.extend(pickle.loads(data[at + _LENGTH.size : end]))
            except Exception:  # noqa: BLE001 - a damaged record: what follows it cannot be trusted
                break
            at = good = end
        if good < len(data):
            _LOG.warning(
                "%s: %d bytes at its end cut off (a write a crash cut short)", self.path(shard), len(data) - good
            )
            os.truncate(self.path(shard), good)
        return entries

    def append(self, shard: int, entries: list[Any]) -> None:
        """Appends one bundle's entries for the shard."""
        if not entries:
            return
        record = pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL)
        os.makedirs(self._dir, exist_ok=True)
        with open(self.path(shard), "ab") as f:
            f.write(_LENGTH.pack(len(record)) + record)

    def rewrite(self, shard: int, entries: Iterable[Any]) -> None:
        """Replaces the shard's file with `entries` (a rewritten log)."""
        record = pickle.dumps(list(entries), protocol=pickle.HIGHEST_PROTOCOL)
        os.makedirs(self._dir, exist_ok=True)
        path = self.path(shard)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "wb") as f:
            f.write(_LENGTH.pack(len(record)) + record)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)

    def _say_if_other_counts(self) -> None:
        try:
            others = sorted(name for name in os.listdir(self.folder) if name != str(self.shards))
        except FileNotFoundError:
            return
        if others:
            _LOG.warning(
                "%s holds state kept with %s shards; this run has %d (streaming.state_shards) and starts without it",
                self.folder,
                ", ".join(others),
                self.shards,
            )


def for_stage(state_dir: str, stage: str, shards: int) -> ShardFiles | None:
    """The files of `stage`'s shards under `state_dir`; None when no state is kept ("")."""
    return ShardFiles(os.path.join(state_dir, stage), shards) if state_dir else None


def kept_files(state_dir: str) -> int:
    """How many shard files `state_dir` holds (for a restart's report)."""
    count = 0
    for _, _, names in os.walk(state_dir):
        count += sum(1 for name in names if name.endswith(".log"))
    return count
