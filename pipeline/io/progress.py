"""What a streaming run has durably written, and where a restarted run goes on from.

A streaming record lives in the runner's memory between its read and the moment its window's file
is renamed into place (20_dedupe and 35_velocity hold it until the watermark passes). A crash
(kill -9, a machine lost) loses that memory. So a local streaming run keeps two things:

- **In flight**, in this process (the sources and sinks of a run on Prism or the FnApiRunner run
  their Python workers here): each record's source position from its read until it is durably
  accounted for: its line renamed into a window file (scored or dead letter), handed to a topic or
  table sink, or dropped as a counted duplicate. Kafka offsets are committed from this: for each
  partition, the first offset still in flight (or the next to read), never past a record that is
  not yet written. The committer (KafkaCommitter) commits them every second and at the end.
- **The ledger**, `<output.dir>/ledger.jsonl`, appended as the run goes: one line per output file
  renamed into place (`{"out": "scored/NAME", "units": {UNIT: [first, last]}}`: the source positions
  it holds), and one per watched input file whose every record is written (`{"done": PATH, "size":
  N, "mtime_ns": N, "records": N}`).

A restart reads the ledger (`Resume.load`): a watched file marked done is not read again; the
output files that may hold records read again (those the ledger does not list, and those with
positions past what was committed or in an input not done) are read back, and a record read again
at a position already written is skipped at the source (counted: already_written) instead of being
scored twice. Together: every record read is in the outputs exactly once across a crash.

A unit is where positions are counted: `kafka:TOPIC:PARTITION` (offsets) or `file:URI` (lines).
On Flink and Dataflow the workers are elsewhere: tracking is off there (`enable` is never called in
their processes) and the runner's checkpoints and KafkaIO's commit on finalize keep the guarantee.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from pipeline.io import shard_files
from pipeline.shared.periodic import Every

LEDGER = "ledger.jsonl"
OUTPUT_FOLDERS = ("scored", "dead_letters")
_LOG = logging.getLogger(__name__)


def unit_of(source) -> tuple[str, int] | None:
    """(unit, position) of a SourcePosition (or its proto3-JSON dict); None when it has none."""
    if isinstance(source, Mapping):
        topic = source.get("topic")
        if topic:
            return kafka_unit(topic, int(source.get("partition", 0))), int(source.get("offset", 0))
        uri = source.get("uri")
        if uri:
            return f"file:{uri}", int(source.get("line", 0))
        return None
    if source.topic:
        return kafka_unit(source.topic, source.partition), source.offset
    if source.uri:
        return f"file:{source.uri}", source.line
    return None


def kafka_unit(topic: str, partition: int) -> str:
    return f"kafka:{topic}:{partition}"


def _partition_of(unit_key: str) -> tuple[str, int] | None:
    """(topic, partition) of a Kafka unit; None for a file's."""
    if not unit_key.startswith("kafka:"):
        return None
    _, topic, partition = unit_key.rsplit(":", 2)
    return topic, int(partition)


@dataclass
class _Unit:
    in_flight: set[int] = field(default_factory=set)
    next_read: int = -1  # Kafka: the offset after the last one read
    # Watched files: the file's size, how many line ranges it was cut into and how many are read.
    size: int = -1
    mtime_ns: int = 0
    ranges: int = 0
    ranges_read: int = 0
    records: int = 0
    done: bool = False


class _Tracker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.enabled = False
        self.ledger: str | None = None
        self.units: dict[str, _Unit] = {}

    def reset(self, ledger: str | None, enabled: bool) -> None:
        with self.lock:
            self.enabled = enabled
            self.ledger = ledger
            self.units = {}


_TRACKER = _Tracker()


def enable(output_dir: str) -> None:
    """Tracks this run's records (a local streaming run); the ledger goes into `output_dir`."""
    _TRACKER.reset(os.path.join(output_dir, LEDGER), True)


def disable() -> None:
    _TRACKER.reset(None, False)


def enabled() -> bool:
    return _TRACKER.enabled


def _append(entries: list[dict]) -> None:
    if not entries or _TRACKER.ledger is None:
        return
    data = b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
    # One write of whole lines on a file opened for appending: lines from two threads never mix.
    fd = os.open(_TRACKER.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def file_ranges(uri: str, size: int, ranges: int, mtime_ns: int = 0) -> None:
    """A watched file was cut into `ranges` line ranges (00_source)."""
    if not _TRACKER.enabled:
        return
    with _TRACKER.lock:
        unit = _TRACKER.units.setdefault(f"file:{uri}", _Unit())
        unit.size, unit.ranges, unit.mtime_ns = size, ranges, mtime_ns


def taken(unit_key: str, positions: Iterable[int]) -> None:
    """Records read at these positions are in flight (00_source, after the read)."""
    if not _TRACKER.enabled:
        return
    with _TRACKER.lock:
        unit = _TRACKER.units.setdefault(unit_key, _Unit())
        for position in positions:
            unit.in_flight.add(position)
            unit.records += 1
            if position >= unit.next_read:
                unit.next_read = position + 1


def skipped(unit_key: str, positions: Iterable[int]) -> None:
    """Records read again at positions an earlier run wrote (00_source skips them): read, and
    accounted for, so that the commit point and the idle check move past them."""
    if not _TRACKER.enabled:
        return
    with _TRACKER.lock:
        unit = _TRACKER.units.setdefault(unit_key, _Unit())
        for position in positions:
            if position >= unit.next_read:
                unit.next_read = position + 1


def range_read(uri: str) -> None:
    """One line range of a watched file has been read whole (00_source)."""
    if not _TRACKER.enabled:
        return
    done: list[dict] = []
    with _TRACKER.lock:
        unit = _TRACKER.units.setdefault(f"file:{uri}", _Unit())
        unit.ranges_read += 1
        done = _settle_file(uri, unit)
    _append(done)


def _settle_file(uri: str, unit: _Unit) -> list[dict]:
    if unit.done or unit.ranges == 0 or unit.ranges_read < unit.ranges or unit.in_flight:
        return []
    unit.done = True
    return [{"done": uri, "size": unit.size, "mtime_ns": unit.mtime_ns, "records": unit.records}]


def written(positions: Iterable[tuple[str, int]], out: str = "") -> None:
    """These positions are durably accounted for: in the output file `out` (relative to the output
    folder; recorded in the ledger), or handed to a sink or dropped as duplicates (no `out`)."""
    if not _TRACKER.enabled:
        return
    positions = list(positions)
    ranges: dict[str, list[int]] = {}
    for unit_key, position in positions:
        span = ranges.get(unit_key)
        if span is None:
            ranges[unit_key] = [position, position]
        elif position < span[0]:
            span[0] = position
        elif position > span[1]:
            span[1] = position
    entries: list[dict] = [{"out": out, "units": ranges}] if out and ranges else []
    # The file's entry goes first: an input is marked done only after the files holding it are listed.
    _append(entries)
    done: list[dict] = []
    with _TRACKER.lock:
        for unit_key, position in positions:
            unit = _TRACKER.units.get(unit_key)
            if unit is not None:
                unit.in_flight.discard(position)
        for unit_key in ranges:
            unit = _TRACKER.units.get(unit_key)
            if unit is not None and unit_key.startswith("file:"):
                done += _settle_file(unit_key[5:], unit)
    _append(done)


def handed(source) -> None:
    """A record handed to a topic or table sink, or dropped as a duplicate: accounted for (the
    sink's own delivery guarantee takes over from here)."""
    if not _TRACKER.enabled:
        return
    found = unit_of(source)
    if found is None:
        return
    unit_key, position = found
    if unit_key.startswith("file:"):
        written([found])  # a line of a file: the file is settled once all of it is accounted for
        return
    with _TRACKER.lock:  # a Kafka record: no ledger entry, no file to settle
        unit = _TRACKER.units.get(unit_key)
        if unit is not None:
            unit.in_flight.discard(position)


def commit_points() -> dict[tuple[str, int], int]:
    """For each Kafka partition read: the offset to commit (the first still in flight, or the next
    to read)."""
    with _TRACKER.lock:
        return {
            partition: min(unit.in_flight) if unit.in_flight else unit.next_read
            for partition, unit in _read_partitions()
        }


def read_positions() -> dict[tuple[str, int], int]:
    """For each Kafka partition: the offset after the last record read (for the idle check)."""
    with _TRACKER.lock:
        return {partition: unit.next_read for partition, unit in _read_partitions()}


def _read_partitions() -> Iterable[tuple[tuple[str, int], _Unit]]:
    """The Kafka partitions this run has read from (call with the tracker's lock held)."""
    for key, unit in _TRACKER.units.items():
        partition = _partition_of(key)
        if partition is not None and unit.next_read >= 0:
            yield partition, unit


# --- restart --------------------------------------------------------------------------------


@dataclass
class Resume:
    """What an earlier run of the same output folder left: the inputs it finished, the positions
    already written (to skip when read again) and its last summary."""

    done_inputs: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, mtime_ns)
    written: dict[str, frozenset[int]] = field(default_factory=dict)  # unit -> positions
    previous_summary: dict | None = None
    files_read_back: int = 0
    output_files: int = 0
    unfinished_files: int = 0  # window files a crash left half written (hidden .tmp): removed
    state_files: int = 0  # the stateful stages' shards kept for a restart (pipeline.io.shard_files)

    @property
    def fresh(self) -> bool:
        return self.previous_summary is None and not self.output_files

    def already_written(self, unit_key: str, position: int) -> bool:
        positions = self.written.get(unit_key)
        return positions is not None and position in positions

    def describe(self) -> dict:
        previous = self.previous_summary or {}
        return {
            "previous_run": {
                key: previous.get(key)
                for key in ("read", "scored", "dead_letters", "duplicates", "running", "stopped_by")
                if key in previous
            },
            "previous_run_finished": bool(previous) and not previous.get("running", False),
            "inputs_done": len(self.done_inputs),
            "output_files": self.output_files,
            "output_files_read_back": self.files_read_back,
            "unfinished_window_files_removed": self.unfinished_files,
            "positions_already_written": sum(len(p) for p in self.written.values()),
            "state_files": self.state_files,
        }

    @classmethod
    def load(cls, output_dir: str, committed: Mapping[tuple[str, int], int] | None = None) -> Resume:
        """Reads `output_dir`'s ledger and the output files that may hold records a restart reads
        again. `committed`: the consumer group's committed offsets (Kafka)."""
        resume = cls()
        if "://" in output_dir or not os.path.isdir(output_dir):
            return resume
        resume.state_files = shard_files.kept_files(os.path.join(output_dir, shard_files.FOLDER))
        with contextlib.suppress(OSError, ValueError), open(os.path.join(output_dir, "summary.json"), "rb") as f:
            resume.previous_summary = json.loads(f.read())
        indexed: dict[str, dict[str, list[int]]] = {}
        with contextlib.suppress(FileNotFoundError), open(os.path.join(output_dir, LEDGER), "rb") as f:
            for line in f:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a line cut short by a crash
                if "done" in entry:
                    resume.done_inputs[entry["done"]] = (int(entry.get("size", -1)), int(entry.get("mtime_ns", 0)))
                elif "out" in entry:
                    indexed[entry["out"]] = entry.get("units", {})
        committed = committed or {}

        def done_file(unit_key: str) -> bool:
            return unit_key.startswith("file:") and unit_key[5:] in resume.done_inputs

        def settled(unit_key: str, span: list[int]) -> bool:
            partition = _partition_of(unit_key)
            if partition is None:
                return done_file(unit_key)
            return span[1] < committed.get(partition, -1)

        written: dict[str, set[int]] = {}
        for folder in OUTPUT_FOLDERS:
            for unfinished in glob.glob(os.path.join(output_dir, folder, ".*.tmp")):
                # Never renamed into place, so none of its records counts as written: they are read again.
                with contextlib.suppress(OSError):
                    os.remove(unfinished)
                    resume.unfinished_files += 1
            for path in sorted(glob.glob(os.path.join(output_dir, folder, "*.jsonl"))):
                resume.output_files += 1
                name = f"{folder}/{os.path.basename(path)}"
                units = indexed.get(name)
                if units is not None and all(settled(k, span) for k, span in units.items()):
                    continue
                resume.files_read_back += 1
                with open(path, "rb") as f:
                    for unit_key, position in positions_of_lines(f):
                        if done_file(unit_key):
                            continue  # not read again; a new file put under its name is not skipped
                        written.setdefault(unit_key, set()).add(position)
        resume.written = {k: frozenset(v) for k, v in written.items()}
        return resume


_UNREADABLE = "ERROR_CODE_SOURCE_UNREADABLE"


def position_of_line(line: str | bytes) -> tuple[str, int] | None:
    """The source position of an output line (proto3 JSON with a `source`): a scored record or a
    dead letter; None for a source error (its position is the last good line before the damage,
    not a record of its own) and for a line that is not such JSON."""
    try:
        obj = orjson.loads(line)
        if obj.get("error_code") == _UNREADABLE:
            return None
        return unit_of(obj.get("source") or {})
    except (orjson.JSONDecodeError, AttributeError, ValueError, TypeError):
        return None


def positions_of_lines(lines: Iterable[str | bytes]) -> list[tuple[str, int]]:
    """The source positions of output lines (see position_of_line)."""
    return [found for found in map(position_of_line, lines) if found is not None]


class KafkaCommitter:
    """Commits each partition's commit point (see the module's doc) for the consumer group, every
    `interval` seconds while the run goes and once more at the end."""

    def __init__(self, bootstrap: str, group_id: str, properties: Mapping[str, str], interval: float = 1.0):
        from confluent_kafka import Consumer

        from pipeline.io.kafka_client import python_client_config

        self._consumer = Consumer(python_client_config(bootstrap, group_id, properties))
        self._interval = interval
        self._committed: dict[tuple[str, int], int] = {}
        self._ticks = Every(interval, self.commit, "riskpipe-kafka-commit")

    def __enter__(self) -> KafkaCommitter:
        self._ticks.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ticks.stop()
        self.commit()
        self._consumer.close()

    def commit(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        changed = {tp: offset for tp, offset in commit_points().items() if self._committed.get(tp) != offset}
        if not changed:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(topic, partition, offset) for (topic, partition), offset in changed.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            _LOG.warning(
                "committing the consumer group's offsets failed (tried again in %s s): %s", self._interval, exc
            )
            return
        self._committed.update(changed)

    def committed(self) -> dict[tuple[str, int], int]:
        return dict(self._committed)
