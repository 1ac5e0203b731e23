"""00_source: JSONL files -> RawRecord.

In:  a file pattern (glob; local, gs://, s3://; plain or gzip, recognised by the .gz suffix).
Out: RawRecord per non-blank line: the line's bytes, the file's path and the 1-based line number,
     the run's ingest time.
Dead letters: none. The source knows nothing of the payload; 10_validate judges it.
Blank lines are not records: they are skipped and counted (blank_lines_skipped).
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes

from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock

STAGE = "00_source"


def read_lines(path: str, stream, clock: RunClock) -> Iterator[RawRecord | None]:
    """RawRecords from one open binary stream (None for a blank line); shared by the DoFn and the
    plain-Python loop."""
    ingest_time = clock.timestamp()
    for number, line in enumerate(stream, start=1):
        payload = line.rstrip(b"\r\n")
        if not payload.strip():
            yield None  # a blank line, counted by the caller
            continue
        yield RawRecord(payload=payload, source=SourcePosition(uri=path, line=number), ingest_time=ingest_time)


class ReadLinesFn(beam.DoFn):
    def __init__(self, clock: RunClock):
        self._clock = clock

    def setup(self) -> None:
        self._read = metrics.counter(metrics.RECORDS_READ)
        self._blank = metrics.counter(f"{STAGE}.blank_lines_skipped")

    def process(self, readable: fileio.ReadableFile) -> Iterator[RawRecord]:
        path = readable.metadata.path
        read = blank = 0
        with readable.open(compression_type=CompressionTypes.AUTO) as stream:
            for record in read_lines(path, iter(stream.readline, b""), self._clock):
                if record is None:
                    blank += 1
                    continue
                read += 1
                yield record
        self._read.inc(read)
        self._blank.inc(blank)


class ReadTransactions(beam.PTransform):
    """Every line of every file matching `pattern`, as a RawRecord."""

    def __init__(self, pattern: str, clock: RunClock):
        super().__init__()
        self._pattern = pattern
        self._clock = clock

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            pbegin
            | "MatchFiles" >> fileio.MatchFiles(self._pattern)
            | "OpenFiles" >> fileio.ReadMatches()
            | "ReadLines" >> beam.ParDo(ReadLinesFn(self._clock)).with_output_types(RawRecord)
        )
