"""00_source: JSONL files, a watched folder, Kafka or Pub/Sub -> RawRecord.

In:  a file pattern (glob; local, gs://, s3://). Compression is decided as Beam decides it, from
     the file name in any case: .gz, .bz2, .zst/.zstd, .xz/.lzma, .deflate; anything else is plain.
Out: RawRecord per non-blank line: the line's bytes (a UTF-8 byte-order mark at the start of a file
     is not part of them), the file's path and the 1-based line number, the run's ingest time.
Dead letters (stage 00_source), not records but the parts of the input that could not be read:
  SOURCE_UNREADABLE   a file that cannot be opened, a folder, FIFO or device matched by the
                      pattern, a compressed file that is truncated, corrupt or not what its name
                      says. `source` names the file and the last line read before the damage
                      (0: none); the lines before it are records as usual; `payload` holds the
                      bytes of a line the damage cut short.
  RECORD_TOO_LARGE    a line longer than input.max_record_bytes: a record, refused without
                      being held in memory whole; `payload` holds its first KiB.
The source knows nothing of the payload; 10_validate judges it.

Kind `watch` (streaming, WatchTransactions): a local folder is listed every poll interval and each
new file in it is read once, as above. A file is taken only when it is complete: names that writers
use while writing (`*.tmp`, `*.part`, `*.partial`, `*.inprogress`, `*~`, hidden `.NAME`) are never
taken, so a writer writes under such a name and renames the file when it is whole; as a second
guard a file is taken only when it has not changed for `settle_seconds`. Sub-folders are not
entered. Each name is taken once per run (Beam state keyed by path). Event time comes from the
data: the source's watermark is the latest event_time of the files taken, moving on with the wall
clock from there while nothing new comes (EventTimeWatermark); a file's records carry the watermark
as it stood when the file was taken (or the file's earliest event time, where that is later) as
their Beam timestamp, so yesterday's files are on time and a record is late only when it is
behind the records taken before it by more than the allowed lateness.
The input ends (and the job drains) after `stop_after_idle_seconds` without a change in the folder,
or when a drain is requested (Ctrl-C); 0 watches until then.
Kind `kafka` (streaming, ReadKafkaTransactions): Beam's cross-language KafkaIO reads the topics
(pipeline.shared.kafka: consumer group, start position, client properties, expansion service).
Each Kafka record is a RawRecord: its value as the payload; topic, partition and offset as its
source position; its key (`kafka.key`), time (`kafka.timestamp_ms`) and headers
(`kafka.header.NAME`) as attributes, as text (bytes that are not UTF-8 as \\xNN escapes). The Beam
timestamp is the record's event_time (or its partition's watermark, where that is later), and each
partition's watermark follows the event times it reads, with the same idle rule as `watch`.
Restarts (local streaming runs): a record an earlier run of the same output folder already wrote
(pipeline.shared.progress: the ledger and the output files) is skipped when read again and counted
(already_written); a watched file it wrote whole is not taken again.
Kind `pubsub` (streaming, ReadPubSubTransactions): Beam's ReadFromPubSub, on Dataflow; the message
id as the source position, the attributes kept (plus `pubsub.publish_time`).
A message larger than input.max_record_bytes is a RECORD_TOO_LARGE dead letter.
Blank lines are not records: they are skipped and counted (00_source.blank_lines_skipped), so that
lines in = records read + blank lines skipped.

A plain file is cut into ranges of about split_bytes, each starting after a newline, with the
line number it starts at (one fast pass counts the newlines); the ranges are reshuffled so that
several workers read one large file in parallel and every record still knows its line. A
compressed file cannot be entered in the middle and is always one range.
"""

from __future__ import annotations

import bz2
import glob
import inspect
import lzma
import os
import re
import stat
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import zstandard
from apache_beam.coders import BooleanCoder
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline.shared import drain, kafka, metrics, progress
from pipeline.shared.clock import RunClock, parse_rfc3339_timestamp
from pipeline.shared.dead_letter import DEAD_LETTER, MAIN, apply_stage, make_dead_letter

STAGE = "00_source"
DEFAULT_SPLIT_BYTES = 32 * 1024 * 1024
_SCAN_CHUNK = 4 * 1024 * 1024
# Compressed bytes fed to the decompressor at a time; a corrupt block loses at most the lines
# decompressed from one such chunk.
_COMPRESSED_CHUNK = 64 * 1024
_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
_OVERSIZED_HEAD = 1024  # bytes of an oversized line kept in its dead letter
SOURCE_UNREADABLE_CODE = ErrorCode.ERROR_CODE_SOURCE_UNREADABLE


class LineRange(NamedTuple):
    """Bytes [start, end) of a file, beginning at line first_line; end -1: to the end."""

    path: str
    start: int
    end: int
    first_line: int


class SourceError(NamedTuple):
    """Part of the input that could not be read: the file, the last line read before, why."""

    path: str
    last_line: int
    reason: str
    partial_line: bytes = b""


class OversizedLine(NamedTuple):
    """A line longer than the limit: its first bytes and its whole size (without the newline)."""

    head: bytes
    size: int


class FileEntry(NamedTuple):
    path: str
    size: int


class _DamagedError(Exception):
    """The compressed stream is truncated or corrupt."""


def display_uri(path: str) -> str:
    """The path as text: bytes of a file name that are not UTF-8 are shown as \\xNN escapes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def compression_of(path: str) -> str:
    return CompressionTypes.detect_compression_type(path)


def is_compressed(path: str) -> bool:
    return compression_of(path) != CompressionTypes.UNCOMPRESSED


def match_files(pattern: str) -> Iterator[FileEntry | SourceError]:
    """Every file the pattern matches, and an error for every match that is not a readable file.

    Local patterns are expanded here rather than by Beam, whose local match leaves folders and
    broken links out without a word.
    """
    if "://" in pattern:
        for match in FileSystems.match([pattern])[0].metadata_list:
            yield FileEntry(match.path, match.size_in_bytes)
        return
    for path in sorted(glob.glob(pattern)):
        try:
            info = os.stat(path)
        except OSError as exc:
            yield SourceError(path, 0, f"cannot be opened: {exc.strerror or exc}")
            continue
        if stat.S_ISREG(info.st_mode):
            yield FileEntry(path, info.st_size)
        elif stat.S_ISDIR(info.st_mode):
            yield SourceError(path, 0, "is a folder, not a file (give a pattern that matches files only)")
        else:
            kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket or device"
            yield SourceError(path, 0, f"is {kind}, not a regular file: not read")


def split_file(path: str, size: int, split_bytes: int = DEFAULT_SPLIT_BYTES) -> Iterator[LineRange]:
    """Ranges of about split_bytes that start right after a newline, with their first line."""
    if is_compressed(path) or size <= split_bytes:
        yield LineRange(path, 0, -1, 1)
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as stream:
        start, first_line = 0, 1
        position, newlines = 0, 0  # newlines seen before `position`
        target = split_bytes
        while True:
            chunk = stream.read(_SCAN_CHUNK)
            if not chunk:
                break
            while position + len(chunk) > target:
                cut = chunk.find(b"\n", max(0, target - position))
                if cut < 0:
                    break
                boundary = position + cut + 1
                line_at_boundary = 1 + newlines + chunk.count(b"\n", 0, cut + 1)
                yield LineRange(path, start, boundary, first_line)
                start, first_line = boundary, line_at_boundary
                target = boundary + split_bytes
            newlines += chunk.count(b"\n")
            position += len(chunk)
        yield LineRange(path, start, -1, first_line)


def _decompressor(compression: str):
    if compression == CompressionTypes.GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if compression == CompressionTypes.DEFLATE:
        return zlib.decompressobj()
    if compression == CompressionTypes.BZIP2:
        return bz2.BZ2Decompressor()
    if compression == CompressionTypes.LZMA:
        return lzma.LZMADecompressor()
    if compression == CompressionTypes.ZSTD:
        return zstandard.ZstdDecompressor(max_window_size=2**31).decompressobj()
    raise ValueError(f"unknown compression {compression!r}")


_DECOMPRESSION_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, ValueError)


def _decompressed_chunks(stream, compression: str) -> Iterator[bytes]:
    """The decompressed bytes of a whole stream; _DamagedError when it is truncated or corrupt.

    Concatenated streams (several gzip members, say) are read one after the other, as gzip does;
    zero bytes after the last one are padding.
    """
    decompressor = _decompressor(compression)
    started = False  # the decompressor has been given data
    while True:
        if decompressor.eof:
            data = decompressor.unused_data or stream.read(_COMPRESSED_CHUNK)
            while data and not data.strip(b"\0"):
                data = stream.read(_COMPRESSED_CHUNK)
            if not data:
                return
            decompressor = _decompressor(compression)
        else:
            data = stream.read(_COMPRESSED_CHUNK)
            if not data:
                if started:
                    raise _DamagedError(
                        "the compressed data ends before its end-of-stream marker: the file is truncated"
                    )
                return  # an empty file holds no records
        started = True
        try:
            out = decompressor.decompress(data)
        except _DECOMPRESSION_ERRORS as exc:
            raise _DamagedError(f"the compressed data is corrupt or not {compression}: {exc}") from None
        if out:
            yield out


def _lines_of_chunks(chunks: Iterable[bytes], limit: int) -> Iterator[bytes | OversizedLine]:
    """Lines (with their newline; the last one may lack it) of a stream of chunks; a line longer
    than `limit` bytes is an OversizedLine, never held whole.

    A _DamagedError from `chunks` is raised again with the partial line it cut short attached.
    """
    pending = b""
    skipping: list | None = None  # [head, size] of an oversized line still being passed over
    try:
        for chunk in chunks:
            if skipping is not None:
                cut = chunk.find(b"\n")
                if len(skipping[0]) < _OVERSIZED_HEAD:
                    skipping[0] += chunk[: min(cut if cut >= 0 else len(chunk), _OVERSIZED_HEAD - len(skipping[0]))]
                if cut < 0:
                    skipping[1] += len(chunk)
                    continue
                yield OversizedLine(skipping[0], skipping[1] + cut)
                skipping, chunk = None, chunk[cut + 1 :]
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield OversizedLine(line[:_OVERSIZED_HEAD], len(line)) if len(line) > limit else line + b"\n"
            if len(pending) > limit:
                skipping, pending = [pending[:_OVERSIZED_HEAD], len(pending)], b""
    except _DamagedError as exc:
        exc.partial_line = pending if skipping is None else skipping[0]  # type: ignore[attr-defined]
        raise
    if skipping is not None:
        yield OversizedLine(skipping[0], skipping[1])
    elif pending:
        yield pending


def _plain_lines(stream, limit: int) -> Iterator[bytes | OversizedLine]:
    """Lines of a plain stream from where it stands; a line longer than `limit` bytes is an
    OversizedLine, read past in pieces instead of whole."""
    while line := stream.readline(limit + 2):
        body = len(line) - line.endswith(b"\n")
        if body <= limit:
            yield line
            continue
        head, size = line, body
        while not line.endswith(b"\n"):
            line = stream.readline(1 << 20)
            if not line:
                break
            size += len(line) - line.endswith(b"\n")
            if len(head) < _OVERSIZED_HEAD:
                head += line
        yield OversizedLine(head[:_OVERSIZED_HEAD].rstrip(b"\r\n"), size)


def read_range(
    line_range: LineRange, clock: RunClock, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[RawRecord | SourceError | DeadLetter | None]:
    """RawRecords of one range (None for a blank line, a SourceError for damage, a DeadLetter for a
    record too large); shared by the DoFn and the plain loop. Never raises for a file that cannot be
    read: the error is yielded."""
    path, start, end, number = line_range
    uri = display_uri(path)
    ingest_time = clock.timestamp()
    compression = compression_of(path)
    try:
        stream = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # noqa: BLE001 - every filesystem has its own errors; all mean "not read"
        yield SourceError(path, 0, f"cannot be opened: {getattr(exc, 'strerror', None) or exc}")
        return
    try:
        with stream:
            if compression != CompressionTypes.UNCOMPRESSED:
                lines = _lines_of_chunks(_decompressed_chunks(stream, compression), max_record_bytes)
            else:
                if start:
                    stream.seek(start)
                lines = _plain_lines(stream, max_record_bytes)
            position = start
            for line in lines:
                if isinstance(line, OversizedLine):
                    position += line.size + 1
                    yield _too_large(line, uri, number, max_record_bytes, clock)
                else:
                    position += len(line)
                    if number == 1 and line.startswith(_BOM):
                        line = line[len(_BOM) :]
                    payload = line.rstrip(b"\r\n")
                    if payload.strip():
                        yield RawRecord(
                            payload=payload, source=SourcePosition(uri=uri, line=number), ingest_time=ingest_time
                        )
                    else:
                        yield None
                number += 1
                if 0 <= end <= position:
                    return
    except _DamagedError as exc:
        yield SourceError(path, number - 1, str(exc), getattr(exc, "partial_line", b""))
    except Exception as exc:  # noqa: BLE001 - a read error mid-file: report where, keep what was read
        yield SourceError(path, number - 1, f"read failed: {type(exc).__name__}: {exc}")


def _too_large(line: OversizedLine, uri: str, number: int, limit: int, clock: RunClock) -> DeadLetter:
    origin = RawRecord(payload=line.head, source=SourcePosition(uri=uri, line=number))
    return too_large_letter(origin, "a line", line.size, limit, clock)


def too_large_letter(origin: RawRecord, what: str, size: int, limit: int, clock: RunClock) -> DeadLetter:
    """RECORD_TOO_LARGE for a record of `size` bytes whose `origin` payload holds its first bytes."""
    return make_dead_letter(
        STAGE,
        ErrorCode.ERROR_CODE_RECORD_TOO_LARGE,
        f"{what} of {size:,} bytes, more than input.max_record_bytes ({limit:,}); payload holds its first "
        f"{len(origin.payload):,} bytes",
        origin,
        clock.timestamp(),
    )


def source_dead_letter(error: SourceError, clock: RunClock) -> DeadLetter:
    uri = display_uri(error.path)
    where = f"after line {error.last_line}" if error.last_line else "before its first line"
    origin = RawRecord(payload=error.partial_line, source=SourcePosition(uri=uri, line=error.last_line))
    return make_dead_letter(STAGE, SOURCE_UNREADABLE_CODE, f"{uri}: {where}: {error.reason}", origin, clock.timestamp())


class MatchFn(beam.DoFn):
    def __init__(self, clock: RunClock):
        self._clock = clock

    def setup(self) -> None:
        self._errors = metrics.counter(metrics.SOURCE_ERRORS)

    def process(self, pattern: str):
        for entry in match_files(pattern):
            if isinstance(entry, SourceError):
                self._errors.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, source_dead_letter(entry, self._clock))
            else:
                yield entry


class SplitFileFn(beam.DoFn):
    def __init__(self, split_bytes: int):
        self._split_bytes = split_bytes

    def process(self, entry: FileEntry) -> Iterator[LineRange]:
        ranges = list(split_file(entry.path, entry.size, self._split_bytes))
        progress.file_ranges(display_uri(entry.path), entry.size, len(ranges))
        yield from ranges


class ReadRangeFn(beam.DoFn):
    """A line range -> its RawRecords. With `resume` (a restarted streaming run), a line an earlier
    run already wrote out is skipped and counted (already_written); each record read is in flight
    (pipeline.shared.progress) until a sink has written it."""

    def __init__(self, clock: RunClock, max_record_bytes: int, resume: progress.Resume | None = None):
        self._clock = clock
        self._max_record_bytes = max_record_bytes
        self._resume = resume

    def setup(self) -> None:
        self._read = metrics.counter(metrics.RECORDS_READ)
        self._blank = metrics.counter(metrics.BLANK_LINES_SKIPPED)
        self._errors = metrics.counter(metrics.SOURCE_ERRORS)
        self._skipped = metrics.counter(metrics.ALREADY_WRITTEN)

    def process(self, line_range: LineRange):
        read = blank = skipped = 0
        uri = display_uri(line_range.path)
        unit = f"file:{uri}"
        resume, tracking = self._resume, progress.enabled()
        taken: list[int] = []
        for record in read_range(line_range, self._clock, self._max_record_bytes):
            if record is None:
                blank += 1
                continue
            if isinstance(record, SourceError):
                self._errors.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, source_dead_letter(record, self._clock))
                continue
            line = record.source.line
            if resume is not None and resume.already_written(unit, line):
                skipped += 1
                continue
            read += 1
            if tracking:
                taken.append(line)
            if isinstance(record, DeadLetter):
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, record)  # a record, refused here
            else:
                yield record
        progress.taken(unit, taken)
        progress.range_read(uri)
        self._read.inc(read)
        self._blank.inc(blank)
        self._skipped.inc(skipped)


def read_files(
    files: beam.PCollection,
    clock: RunClock,
    split_bytes: int,
    max_record_bytes: int,
    resume: progress.Resume | None = None,
) -> tuple[beam.PCollection, beam.PCollection]:
    """FileEntries -> (RawRecords, the dead letters of reading): each file cut into ranges, the
    ranges spread over the workers and read."""
    ranges = files | "SplitFiles" >> beam.ParDo(SplitFileFn(split_bytes)) | "SpreadRanges" >> beam.Reshuffle()
    return apply_stage(ranges, "ReadRanges", ReadRangeFn(clock, max_record_bytes, resume), RawRecord)


class ReadTransactions(beam.PTransform):
    """Every line of every file matching `pattern`, as a RawRecord; returns (records, source errors)."""

    def __init__(
        self,
        pattern: str,
        clock: RunClock,
        split_bytes: int = DEFAULT_SPLIT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ):
        super().__init__()
        self._pattern = pattern
        self._clock = clock
        self._split_bytes = split_bytes
        self._max_record_bytes = max_record_bytes

    def expand(self, pbegin: beam.pvalue.PBegin):
        matched = (
            pbegin
            | "Pattern" >> beam.Create([self._pattern])
            | "MatchFiles" >> beam.ParDo(MatchFn(self._clock)).with_outputs(DEAD_LETTER, main=MAIN)
        )
        records, read_errors = read_files(matched[MAIN], self._clock, self._split_bytes, self._max_record_bytes)
        errors = (matched[DEAD_LETTER], read_errors) | "SourceErrors" >> beam.Flatten()
        errors.element_type = DeadLetter
        return records, errors


# Names a writer uses while a file is incomplete; never taken.
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".inprogress", "~")


def in_progress(name: str) -> bool:
    return name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES)


def list_folder(folder: str, settle_seconds: float, now: float) -> tuple[list[FileEntry], float]:
    """The complete files in `folder` (by name), and the latest change time of anything in it
    (files still being written included), for the idleness check."""
    complete: list[FileEntry] = []
    latest = 0.0
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return complete, latest
    for name in names:
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue  # gone since the listing (renamed by its writer)
        changed = max(info.st_mtime, info.st_ctime)
        latest = max(latest, changed)
        if in_progress(name) or not stat.S_ISREG(info.st_mode):
            continue
        if now - changed >= settle_seconds:
            complete.append(FileEntry(path, info.st_size))
    return complete, latest


_POLLS = 2**62  # the poll sequence is unbounded in practice


class _PollTracker(OffsetRestrictionTracker):
    """One poller per folder: the runner may checkpoint it (split at 0) but never split it in two."""

    def try_split(self, fraction_of_remainder):
        return super().try_split(0) if fraction_of_remainder == 0 else None


class _PollRestrictions(beam.transforms.core.RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, _POLLS)

    def create_tracker(self, restriction):
        return _PollTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction

    def truncate(self, element, restriction):
        return None  # a runner's drain: stop polling at once


_POLL_RESTRICTIONS = _PollRestrictions()
_POLL_WATERMARK = ManualWatermarkEstimator.default_provider()


_YEAR_2000 = Timestamp(seconds=946684800)  # the contract's earliest event_time
_EVENT_TIME = re.compile(rb'"event_time"\s*:\s*"([^"]{1,64})"')


def event_time_bounds(
    entry: FileEntry, clock: RunClock, max_record_bytes: int
) -> tuple[Timestamp | None, Timestamp | None]:
    """The earliest and latest event_time among a file's records (None when none has one that
    parses): what the watched folder's watermark follows. A quick look, not a validation
    (10_validate judges). An event time ahead of the wall clock or before 2000 is left out: it must
    not move the watermark (one bad record would make every record behind it late)."""
    earliest: Timestamp | None = None
    latest: Timestamp | None = None
    now = Timestamp.of(time.time())
    for record in read_range(LineRange(entry.path, 0, -1, 1), clock, max_record_bytes):
        if not isinstance(record, RawRecord):
            continue
        found = _EVENT_TIME.search(record.payload)
        if found is None:
            continue
        try:
            at = parse_rfc3339_timestamp(found.group(1).decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        event = Timestamp(seconds=at.seconds, micros=at.nanos // 1000)
        if event < _YEAR_2000 or event > now:
            continue
        if latest is None or event > latest:
            latest = event
        if earliest is None or event < earliest:
            earliest = event
    return earliest, latest


class EventTimeWatermark:
    """A source's watermark from the event times it reads: the latest event time taken. When the
    source has nothing new it moves on with the wall clock from there (as if event time went on at
    the speed of the clock since the last record was taken), never past the wall clock, so that a
    quiet source does not hold the watermark back forever and yesterday's records, once taken, are
    not late. Shared by the watched folder; KafkaIO's partitions follow the same rule in Java
    (StoppableKafkaRead.EventTimePolicy)."""

    def __init__(self) -> None:
        self.latest: Timestamp | None = None
        self._taken_at = 0.0

    def took(self, latest: Timestamp | None, now: float) -> None:
        if latest is not None and (self.latest is None or latest > self.latest):
            self.latest = latest
        self._taken_at = now

    def idle(self, now: float) -> Timestamp | None:
        if self.latest is None:
            return None
        moved = self.latest + Duration.of(max(0.0, now - self._taken_at))
        return max(self.latest, min(moved, Timestamp.of(now)))


class WatchFolderFn(beam.DoFn):
    """folder -> the FileEntry of every complete file in it, at each poll. The watermark follows
    the event times of the files taken (EventTimeWatermark); a file's records carry the watermark
    as it stood when it was taken (or the file's own event times, where they are later) as their
    Beam timestamp, so that a record is late only when it is behind the records taken before it.
    A file that an earlier run wrote out whole (`done`: path -> size, from the output folder's
    ledger) is not taken again. Ends after `idle_seconds` without a change in the folder (0:
    never) or when a drain is requested."""

    def __init__(
        self,
        poll_seconds: float,
        settle_seconds: float,
        idle_seconds: float,
        clock: RunClock | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        done: dict[str, int] | None = None,
    ):
        self._poll = poll_seconds
        self._settle = settle_seconds
        self._idle = idle_seconds
        self._clock = clock or RunClock(None)
        self._max_record_bytes = max_record_bytes
        self._done = dict(done or {})

    def setup(self) -> None:
        self._started = time.time()
        self._emitted: set[tuple[str, int]] = set(self._done.items())  # (display path, size)
        self._event_time = EventTimeWatermark()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        folder: str,
        tracker=beam.DoFn.RestrictionParam(_POLL_RESTRICTIONS),
        watermark=beam.DoFn.WatermarkEstimatorParam(_POLL_WATERMARK),
    ):
        position = tracker.current_restriction().start
        if not tracker.try_claim(position):
            return
        now = time.time()
        files, latest_change = list_folder(folder, self._settle, now)
        current = watermark.current_watermark()
        new = [e for e in files if (display_uri(e.path), e.size) not in self._emitted]
        self._emitted.update((display_uri(e.path), e.size) for e in new)
        for entry in new:
            earliest, latest = event_time_bounds(entry, self._clock, self._max_record_bytes)
            at = current if current is not None else MIN_TIMESTAMP
            if earliest is not None and earliest > at:
                at = earliest
            yield TimestampedValue(entry, at)
            self._event_time.took(latest, now)
        moved = self._event_time.latest if new else self._event_time.idle(now)
        if moved is not None and (current is None or moved > current):
            watermark.set_watermark(moved)
        idle_for = now - max(self._started, latest_change)
        if drain.requested() or (self._idle and idle_for >= self._idle):
            tracker.try_claim(_POLLS - 1)  # the rest of the sequence: the input ends here
            return
        tracker.defer_remainder(Duration.of(self._poll))


class TakeOnceFn(beam.DoFn):
    """(path, FileEntry) -> the FileEntry the first time its path is seen; Beam state remembers."""

    TAKEN = ReadModifyWriteStateSpec("taken", BooleanCoder())

    def process(self, keyed: tuple[str, FileEntry], taken=beam.DoFn.StateParam(TAKEN)):
        if not taken.read():
            taken.write(True)
            yield keyed[1]


class WatchTransactions(beam.PTransform):
    """Every line of every file that appears in `folder`, as a RawRecord, unbounded; returns
    (records, source errors) as ReadTransactions does. `resume`: what an earlier run of the same
    output folder wrote (files done are not taken; lines written are skipped)."""

    def __init__(
        self,
        folder: str,
        clock: RunClock,
        poll_seconds: float = 1.0,
        settle_seconds: float = 1.0,
        idle_seconds: float = 0.0,
        split_bytes: int = DEFAULT_SPLIT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        resume: progress.Resume | None = None,
    ):
        super().__init__()
        self._folder = folder
        self._clock = clock
        done = resume.done_inputs if resume is not None else {}
        self._watch = WatchFolderFn(poll_seconds, settle_seconds, idle_seconds, clock, max_record_bytes, done)
        self._split_bytes = split_bytes
        self._max_record_bytes = max_record_bytes
        self._resume = resume

    def expand(self, pbegin: beam.pvalue.PBegin):
        files = (
            pbegin
            | "Folder" >> beam.Create([self._folder])
            | "Watch" >> beam.ParDo(self._watch).with_output_types(FileEntry)
            | "ByPath" >> beam.Map(lambda entry: (entry.path, entry)).with_output_types(tuple[str, FileEntry])
            | "TakeOnce" >> beam.ParDo(TakeOnceFn()).with_output_types(FileEntry)
        )
        return read_files(files, self._clock, self._split_bytes, self._max_record_bytes, self._resume)


# --- Kafka and Pub/Sub -------------------------------------------------------------------------


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "backslashreplace")


def kafka_raw_record(row, clock: RunClock) -> RawRecord:
    """One record of KafkaIO's read with metadata -> RawRecord: topic, partition and offset as its
    source position; the key, the record's time and each header as attributes."""
    attributes = {"kafka.timestamp_ms": str(row.timestamp)}
    if row.key is not None:
        attributes["kafka.key"] = _text(row.key)
    for header in row.headers or ():
        attributes[f"kafka.header.{header.key}"] = _text(header.value)
    return RawRecord(
        payload=row.value or b"",
        source=SourcePosition(topic=row.topic, partition=row.partition, offset=row.offset),
        ingest_time=clock.timestamp(),
        attributes=attributes,
    )


def pubsub_raw_record(message, clock: RunClock) -> RawRecord:
    """A PubsubMessage -> RawRecord: its message_id as the source position, its attributes kept."""
    attributes = dict(message.attributes or {})
    if message.publish_time is not None:
        attributes.setdefault("pubsub.publish_time", message.publish_time.isoformat())
    return RawRecord(
        payload=message.data or b"",
        source=SourcePosition(message_id=message.message_id or ""),
        ingest_time=clock.timestamp(),
        attributes=attributes,
    )


class MessageToRecordFn(beam.DoFn):
    """A message of a streaming source -> RawRecord (or RECORD_TOO_LARGE); marks the input seen.
    With `resume`, a message an earlier run already wrote out (Kafka: its topic, partition and
    offset) is skipped and counted (already_written); each record read is in flight
    (pipeline.shared.progress) until a sink has written it."""

    def __init__(self, to_record, clock: RunClock, max_record_bytes: int, resume: progress.Resume | None = None):
        self._to_record = to_record
        self._clock = clock
        self._max_record_bytes = max_record_bytes
        self._resume = resume

    def setup(self) -> None:
        self._read = metrics.counter(metrics.RECORDS_READ)
        self._skipped = metrics.counter(metrics.ALREADY_WRITTEN)

    def start_bundle(self) -> None:
        self._count = 0
        self._taken: dict[str, list[int]] = {}

    def process(self, message):
        record = self._to_record(message, self._clock)
        where = progress.unit_of(record.source) if self._resume is not None or progress.enabled() else None
        if where is not None:
            if self._resume is not None and self._resume.already_written(*where):
                self._skipped.inc()
                return
            self._taken.setdefault(where[0], []).append(where[1])
        self._count += 1
        size = len(record.payload)
        if size > self._max_record_bytes:
            record.payload = record.payload[:_OVERSIZED_HEAD]
            letter = too_large_letter(record, "a message", size, self._max_record_bytes, self._clock)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, letter)
            return
        yield record

    def finish_bundle(self) -> None:
        for unit, positions in self._taken.items():
            progress.taken(unit, positions)
        if self._count:
            self._read.inc(self._count)
            drain.saw_input()


class MessagesToRecords(beam.PTransform):
    """Messages of a streaming source (KafkaIO rows, PubsubMessages) -> (RawRecords, dead letters)."""

    def __init__(
        self,
        to_record,
        clock: RunClock,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        resume: progress.Resume | None = None,
    ):
        super().__init__()
        self._fn = MessageToRecordFn(to_record, clock, max_record_bytes, resume)

    def expand(self, messages: beam.PCollection):
        return apply_stage(messages, "ToRawRecord", self._fn, RawRecord)


class KafkaRead(NamedTuple):
    """What KafkaIO's read is asked for (pipeline.shared.kafka builds the consumer config)."""

    consumer_config: dict[str, str]
    topics: list[str]
    start_read_time_ms: int | None
    commit_in_finalize: bool
    expansion_service: str
    stop_file: str = ""
    commit_in_bundles: bool = False
    event_time_watermark: bool = True


class ReadKafkaTransactions(beam.PTransform):
    """Every record of the topics, as a RawRecord, unbounded, through Beam's cross-language
    KafkaIO; returns (records, dead letters). With a stop file (local runs) the read ends cleanly,
    at the offsets reached, once the file exists; with commit_in_bundles the offsets read are
    committed after each read bundle (StoppableKafkaRead.java, in the project's expansion jar); with
    event_time_watermark (the default) each record's Beam timestamp and each partition's watermark
    follow the records' event_time (StoppableKafkaRead.EventTimePolicy). `resume`: what an earlier
    run of the same output folder wrote (skipped when read again)."""

    def __init__(
        self,
        read: KafkaRead,
        clock: RunClock,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        resume: progress.Resume | None = None,
    ):
        super().__init__()
        self._read = read
        self._clock = clock
        self._max_record_bytes = max_record_bytes
        self._resume = resume

    def _kafka_io(self) -> beam.PTransform:
        from apache_beam.io.kafka import ReadFromKafka, ReadFromKafkaSchema
        from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder

        read = self._read
        settings: dict[str, Any] = {
            "consumer_config": read.consumer_config,
            "topics": read.topics,
            "key_deserializer": kafka.BYTES_DESERIALIZER,
            "value_deserializer": kafka.BYTES_DESERIALIZER,
            "start_read_time": read.start_read_time_ms,
            "commit_offset_in_finalize": read.commit_in_finalize,
            "timestamp_policy": ReadFromKafka.processing_time_policy,
            # Each partition's read polls for this long before it hands its records on (KafkaIO's
            # default is 2 s; 1 s, its least, halves the latency a read adds).
            "consumer_polling_timeout": 1,
        }
        if not (read.stop_file or read.commit_in_bundles or read.event_time_watermark):
            return ReadFromKafka(with_metadata=True, expansion_service=read.expansion_service, **settings)
        fields = ReadFromKafkaSchema.__annotations__
        defaults = inspect.signature(ReadFromKafka.__init__).parameters
        payload = {name: settings[name] if name in settings else defaults[name].default for name in fields}
        extra = [("stop_file", str), ("commit_in_bundles", bool), ("event_time_watermark", bool)]
        schema: Any = NamedTuple("StoppableKafkaReadSchema", [*fields.items(), *extra])  # type: ignore[misc]
        payload.update(
            stop_file=read.stop_file,
            commit_in_bundles=read.commit_in_bundles,
            event_time_watermark=read.event_time_watermark,
        )
        return ExternalTransform(
            kafka.STOPPABLE_READ_URN,
            NamedTupleBasedPayloadBuilder(schema(**payload)),
            read.expansion_service,
        )

    def expand(self, pbegin: beam.pvalue.PBegin):
        rows = pbegin | "KafkaIO" >> self._kafka_io()
        return rows | "Records" >> MessagesToRecords(
            kafka_raw_record, self._clock, self._max_record_bytes, self._resume
        )


class ReadPubSubTransactions(beam.PTransform):
    """Every message of the subscription, as a RawRecord, unbounded (Beam's ReadFromPubSub: on
    Dataflow; `id_label` drops Pub/Sub's redeliveries at the source, `timestamp_attribute` sets
    the records' time); returns (records, dead letters)."""

    def __init__(
        self,
        subscription: str,
        clock: RunClock,
        id_label: str = "",
        timestamp_attribute: str = "",
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ):
        super().__init__()
        self._subscription = subscription
        self._id_label = id_label or None
        self._timestamp_attribute = timestamp_attribute or None
        self._clock = clock
        self._max_record_bytes = max_record_bytes

    def expand(self, pbegin: beam.pvalue.PBegin):
        messages = pbegin | "ReadFromPubSub" >> beam.io.ReadFromPubSub(
            subscription=self._subscription,
            id_label=self._id_label,
            timestamp_attribute=self._timestamp_attribute,
            with_attributes=True,
        )
        return messages | "Records" >> MessagesToRecords(pubsub_raw_record, self._clock, self._max_record_bytes)
