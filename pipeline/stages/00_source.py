"""00_source: JSONL files -> RawRecord.

In:  a file pattern (glob; local, gs://, s3://; plain or gzip, recognised by the .gz suffix).
Out: RawRecord per non-blank line: the line's bytes, the file's path and the 1-based line number,
     the run's ingest time.
Dead letters: none. The source knows nothing of the payload; 10_validate judges it.
Blank lines are not records: they are skipped and counted (00_source.blank_lines_skipped).

A plain file is cut into ranges of about split_bytes, each starting after a newline, with the
line number it starts at (one fast pass counts the newlines); the ranges are reshuffled so that
several workers read one large file in parallel and every record still knows its line. A gzip
file cannot be entered in the middle and is one range.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock

STAGE = "00_source"
DEFAULT_SPLIT_BYTES = 32 * 1024 * 1024
_SCAN_CHUNK = 4 * 1024 * 1024


class LineRange(NamedTuple):
    """Bytes [start, end) of a file, beginning at line first_line; end -1: to the end."""

    path: str
    start: int
    end: int
    first_line: int


def split_file(path: str, size: int, split_bytes: int = DEFAULT_SPLIT_BYTES) -> Iterator[LineRange]:
    """Ranges of about split_bytes that start right after a newline, with their first line."""
    if path.endswith(".gz") or size <= split_bytes:
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


def read_range(line_range: LineRange, clock: RunClock) -> Iterator[RawRecord | None]:
    """RawRecords of one range (None for a blank line); shared by the DoFn and the plain loop."""
    path, start, end, number = line_range
    ingest_time = clock.timestamp()
    with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as stream:
        if start:
            stream.seek(start)
        position = start
        for line in iter(stream.readline, b""):
            position += len(line)
            payload = line.rstrip(b"\r\n")
            if payload.strip():
                yield RawRecord(payload=payload, source=SourcePosition(uri=path, line=number), ingest_time=ingest_time)
            else:
                yield None
            number += 1
            if 0 <= end <= position:
                return


class SplitFileFn(beam.DoFn):
    def __init__(self, split_bytes: int):
        self._split_bytes = split_bytes

    def process(self, metadata) -> Iterator[LineRange]:
        yield from split_file(metadata.path, metadata.size_in_bytes, self._split_bytes)


class ReadRangeFn(beam.DoFn):
    def __init__(self, clock: RunClock):
        self._clock = clock

    def setup(self) -> None:
        self._read = metrics.counter(metrics.RECORDS_READ)
        self._blank = metrics.counter(f"{STAGE}.blank_lines_skipped")

    def process(self, line_range: LineRange) -> Iterator[RawRecord]:
        read = blank = 0
        for record in read_range(line_range, self._clock):
            if record is None:
                blank += 1
                continue
            read += 1
            yield record
        self._read.inc(read)
        self._blank.inc(blank)


class ReadTransactions(beam.PTransform):
    """Every line of every file matching `pattern`, as a RawRecord."""

    def __init__(self, pattern: str, clock: RunClock, split_bytes: int = DEFAULT_SPLIT_BYTES):
        super().__init__()
        self._pattern = pattern
        self._clock = clock
        self._split_bytes = split_bytes

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern)
            | "SplitFiles" >> beam.ParDo(SplitFileFn(self._split_bytes))
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRanges" >> beam.ParDo(ReadRangeFn(self._clock)).with_output_types(RawRecord)
        )
