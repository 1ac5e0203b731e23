"""Messages of a streaming source (KafkaIO rows, Pub/Sub messages) -> RawRecords, with the same
size limit and restart skip as files."""

from __future__ import annotations

import apache_beam as beam

from contracts.riskpipe.v1.raw_record_pb2 import RawRecord
from pipeline.io import drain, progress
from pipeline.io.files import DEFAULT_MAX_RECORD_BYTES, OVERSIZED_HEAD, too_large_letter
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import DEAD_LETTER, apply_stage


def text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "backslashreplace")


class MessageToRecordFn(beam.DoFn):
    """A message of a streaming source -> RawRecord (or RECORD_TOO_LARGE); marks the input seen.
    With `resume`, a message an earlier run already wrote out (Kafka: its topic, partition and
    offset) is skipped and counted (already_written); each record read is in flight
    (pipeline.io.progress) until a sink has written it."""

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
        self._skipped_at: dict[str, list[int]] = {}

    def process(self, message):
        record = self._to_record(message, self._clock)
        where = progress.unit_of(record.source) if self._resume is not None or progress.enabled() else None
        if where is not None:
            if self._resume is not None and self._resume.already_written(*where):
                self._skipped.inc()
                self._skipped_at.setdefault(where[0], []).append(where[1])
                return
            self._taken.setdefault(where[0], []).append(where[1])
        self._count += 1
        size = len(record.payload)
        if size > self._max_record_bytes:
            record.payload = record.payload[:OVERSIZED_HEAD]
            letter = too_large_letter(record, "a message", size, self._max_record_bytes, self._clock)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, letter)
            return
        yield record

    def finish_bundle(self) -> None:
        for unit, positions in self._taken.items():
            progress.taken(unit, positions)
        for unit, positions in self._skipped_at.items():
            progress.skipped(unit, positions)
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
