"""Files: JSONL transactions, plain or compressed, local or remote (gs://, s3://) -> RawRecords,
each with its file and line; the parts that cannot be read are SOURCE_UNREADABLE dead letters and a
line longer than the limit a RECORD_TOO_LARGE one (the contract is 00_source's, which uses this).

A plain file is cut into ranges of about split_bytes, each starting after a newline, with the
line number it starts at (one fast pass counts the newlines); the ranges are reshuffled so that
several workers read one large file in parallel and every record still knows its line. A
compressed file cannot be entered in the middle and is always one range. Beam's textio and fileio
read lines too, but give neither line numbers nor a dead letter per damaged file or oversized line.
"""

from __future__ import annotations

import bz2
import glob
import lzma
import os
import stat
import zlib
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline.io import progress
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import DEAD_LETTER, MAIN, apply_stage, make_dead_letter

# Dead letters of a read are the source stage's.
STAGE = "00_source"
DEFAULT_SPLIT_BYTES = 32 * 1024 * 1024
_SCAN_CHUNK = 4 * 1024 * 1024
# Compressed bytes fed to the decompressor at a time; a corrupt block loses at most the lines
# decompressed from one such chunk.
_COMPRESSED_CHUNK = 64 * 1024
_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
OVERSIZED_HEAD = 1024  # bytes of an oversized line kept in its dead letter
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
    mtime_ns: int = 0  # watched files: with the size, tells a new file under a done file's name


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
                if len(skipping[0]) < OVERSIZED_HEAD:
                    skipping[0] += chunk[: min(cut if cut >= 0 else len(chunk), OVERSIZED_HEAD - len(skipping[0]))]
                if cut < 0:
                    skipping[1] += len(chunk)
                    continue
                yield OversizedLine(skipping[0], skipping[1] + cut)
                skipping, chunk = None, chunk[cut + 1 :]
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield OversizedLine(line[:OVERSIZED_HEAD], len(line)) if len(line) > limit else line + b"\n"
            if len(pending) > limit:
                skipping, pending = [pending[:OVERSIZED_HEAD], len(pending)], b""
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
            if len(head) < OVERSIZED_HEAD:
                head += line
        yield OversizedLine(head[:OVERSIZED_HEAD].rstrip(b"\r\n"), size)


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
        progress.file_ranges(display_uri(entry.path), entry.size, len(ranges), entry.mtime_ns)
        yield from ranges


class ReadRangeFn(beam.DoFn):
    """A line range -> its RawRecords. With `resume` (a restarted streaming run), a line an earlier
    run already wrote out is skipped and counted (already_written); each record read is in flight
    (pipeline.io.progress) until a sink has written it."""

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
        read = blank = skipped = nbytes = 0
        uri = display_uri(line_range.path)
        unit = f"file:{uri}"
        resume, tracking = self._resume, progress.enabled()
        taken: list[int] = []
        for record in read_range(line_range, self._clock, self._max_record_bytes):
            if record is None:
                blank += 1
                nbytes += 1
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
                nbytes += len(record.payload) + 1
                yield record
        progress.taken(unit, taken)
        progress.range_read(uri)
        self._read.inc(read)
        self._blank.inc(blank)
        self._skipped.inc(skipped)
        metrics.live_add(metrics.BYTES_READ, nbytes)  # about the bytes of an uncompressed file: for progress
        if line_range.end < 0:
            metrics.live_add(metrics.FILES_READ)


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
