"""Streaming file output: one file set per fixed event-time window, each file appearing whole.

    FOLDER/<window start>-<window end>.pane<N>.<run>.s<shard>.jsonl
    e.g. scored/20261201T150000Z-20261201T150100Z.pane0.20261201T145812Z-4711.s0.jsonl

A window's file is written when the window closes (the watermark passes its end), under a hidden
temporary name, then renamed: a reader never sees half a file. Records that arrive after their
window closed (within the allowed lateness) come in a later pane, a new file beside the first; a
restarted job writes under its own run id: files are only ever added, never replaced. A bundle the
runner retries writes the same name with the same (sorted) lines again. Once a file is in place its
records' source positions are reported written (pipeline.io.progress: Kafka offsets are
committed from this, and the file is listed in the output folder's ledger for a restart).
Beam's fileio.WriteToFiles writes windowed files too, but names them after it has written them
(its temporary files are renamed by a later step, after the window's whole pane) and reports nothing
per file; this writer fsyncs and renames each file itself and says which records it holds, which
the crash-safe Kafka commit and the restart need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import zlib

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline.io import progress
from pipeline.shared import metrics
from pipeline.shared.clock import TIMESTAMP_MAX_SECONDS, TIMESTAMP_MIN_SECONDS

LATE_PANE_DELAY_SECONDS = 1


@dataclasses.dataclass(frozen=True)
class Windowing:
    window_seconds: int
    allowed_lateness_seconds: int
    run_id: str
    shards: int = 1


def compact_time(at: Timestamp) -> str:
    seconds = max(min(at.micros // 1_000_000, TIMESTAMP_MAX_SECONDS), TIMESTAMP_MIN_SECONDS)
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def file_name(win: window.IntervalWindow, pane_index: int, run_id: str, shard: int, suffix: str = ".jsonl") -> str:
    return f"{compact_time(win.start)}-{compact_time(win.end)}.pane{pane_index}.{run_id}.s{shard}{suffix}"


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _WriteWindowFn(beam.DoFn):
    def __init__(self, folder: str, run_id: str):
        self._folder = folder.rstrip("/")
        self._run_id = run_id

    def setup(self) -> None:
        # Lines in files renamed into place: what the live summary reports as on disk.
        self._on_disk = metrics.counter(metrics.ON_DISK_PREFIX + os.path.basename(self._folder))

    def process(
        self,
        shard_lines: tuple[int, list[str]],
        win=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ):
        shard, lines = shard_lines
        name = file_name(win, pane.index, self._run_id, shard)
        final = f"{self._folder}/{name}"
        temporary = f"{self._folder}/.{name}.tmp"
        data = "".join(line + "\n" for line in sorted(lines)).encode("utf-8")
        if not FileSystems.exists(self._folder):
            with contextlib.suppress(OSError):  # another worker made it first
                FileSystems.mkdirs(self._folder)
        with FileSystems.create(temporary) as f:
            f.write(data)
        if "://" not in temporary:
            _sync(temporary)  # on disk before it is renamed and its records' offsets committed
        if FileSystems.exists(final):
            FileSystems.delete([final])  # a retried bundle: the same lines again
        FileSystems.rename([temporary], [final])
        # On disk: the records' source positions are accounted for (Kafka offsets may be committed
        # past them, a restart skips them), and the file is listed in the run's ledger.
        progress.written(progress.positions_of_lines(lines), f"{os.path.basename(self._folder)}/{name}")
        self._on_disk.inc(len(lines))
        yield final


class WriteWindowedFiles(beam.PTransform):
    """Lines -> files under `folder`, one set per fixed window (see the module's doc)."""

    def __init__(self, folder: str, windowing: Windowing):
        super().__init__()
        self._folder = folder
        self._windowing = windowing

    def expand(self, lines: beam.PCollection):
        w, shards = self._windowing, max(self._windowing.shards, 1)
        return (
            lines
            | "Window"
            >> beam.WindowInto(
                window.FixedWindows(w.window_seconds),
                # Late records (within the allowed lateness) of a closed window: one more pane at
                # most every second, not one per record.
                trigger=trigger.AfterWatermark(late=trigger.AfterProcessingTime(LATE_PANE_DELAY_SECONDS)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=Duration(seconds=w.allowed_lateness_seconds),
            )
            | "Shard"
            >> beam.Map(lambda line: (zlib.crc32(line.encode("utf-8")) % shards, line)).with_output_types(
                tuple[int, str]
            )
            | "GroupByWindow" >> beam.GroupByKey()
            | "WriteWindow" >> beam.ParDo(_WriteWindowFn(self._folder, w.run_id))
        )
