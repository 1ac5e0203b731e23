"""90_dead_letter: DeadLetter, from every stage -> files under <output.dir>/dead_letters/ (or a topic or table).

In:  DeadLetter (one PCollection: the runner flattens the dead letters of all stages).
Out: dead_letters/part-*.jsonl, one proto3-JSON DeadLetter per line (proto field names; payload
     base64 as the JSON mapping says, payload_text beside it when the bytes are UTF-8). Streaming:
     one file set per fixed window, as 60_sink writes scored records (pipeline.io.windowed_files).
     With kafka.dead_letter_topic: to that topic instead, keyed by transaction_id (or, for a record
     whose id could not be read, its source position), the value in kafka.value_format.
     With bigquery.dead_letter_table: to that table instead, one row per letter, its schema derived
     from the DeadLetter contract (pipeline.io.bigquery). A letter BigQuery refuses for good has
     nowhere left to go: it is logged as an error, counted in dead_letters_rejected_by_sink and
     taken off dead_letters_written, so the run's summary does not balance.
Before a letter is written, card numbers are masked in its text fields (payload_text, message,
violations, stack trace) and its payload bytes follow dead_letter.payload: raw, masked or none.
Counts every letter (dead_letters_written) and every error code (dead_letters.<ERROR_CODE_...>).
Dead letters: none of its own; this is the last stop.
"""

from __future__ import annotations

import logging

import apache_beam as beam

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from pipeline.io import bigquery, kafka, progress
from pipeline.io.windowed_files import Windowing, WriteWindowedFiles
from pipeline.shared import metrics
from pipeline.shared.dead_letter import redact
from pipeline.shared.json_codec import dead_letter_json

STAGE = "90_dead_letter"


class EncodeDeadLetterFn(beam.DoFn):
    def __init__(self, payload_policy: str):
        self._payload_policy = payload_policy

    def setup(self) -> None:
        self._written = metrics.counter(metrics.DEAD_LETTERS_WRITTEN)
        self._by_code = {
            number: metrics.counter(metrics.DEAD_LETTER_CODE_PREFIX + name) for name, number in ErrorCode.items()
        }
        self._at: dict[tuple[str, int], metrics.Counter] = {}

    def process(self, letter: DeadLetter):
        self._written.inc()
        self._by_code[letter.error_code].inc()
        at_stage(self._at, letter.stage, letter.error_code).inc()
        yield self._encode(letter, redact(letter, self._payload_policy))

    def _encode(self, letter: DeadLetter, redacted: DeadLetter):
        return dead_letter_json(redacted)


def at_stage(counters: dict[tuple[str, int], metrics.Counter], stage: str, code: int) -> metrics.Counter:
    """The counter of dead letters refused by `stage` with `code` (made on first use)."""
    found = counters.get((stage, code))
    if found is None:
        name = f"{metrics.DEAD_LETTER_STAGE_PREFIX}{stage}/{ErrorCode.Name(code)}"
        found = counters[(stage, code)] = metrics.counter(name)
    return found


def handed(letter: DeadLetter) -> None:
    """A dead letter handed to a topic or table: its record is accounted for (a source error is
    not a record: its position is the last good line before the damage)."""
    if letter.error_code != ErrorCode.ERROR_CODE_SOURCE_UNREADABLE:
        progress.handed(letter.source)


class EncodeForTopicFn(EncodeDeadLetterFn):
    """DeadLetter -> (key, value) for a topic: keyed by its transaction_id when it has one, else by
    its source position; the value as proto3 JSON or the DeadLetter's protobuf bytes."""

    def __init__(self, payload_policy: str, value_format: str):
        super().__init__(payload_policy)
        self._binary = value_format == "protobuf"

    def _encode(self, letter: DeadLetter, redacted: DeadLetter):
        value = redacted.SerializeToString() if self._binary else dead_letter_json(redacted).encode()
        handed(letter)
        return letter_key(letter), value


class EncodeForTableFn(EncodeDeadLetterFn):
    """DeadLetter -> a row of its BigQuery table."""

    def __init__(self, payload_policy: str, storage_write: bool):
        super().__init__(payload_policy)
        self._storage_write = storage_write

    def _encode(self, letter: DeadLetter, redacted: DeadLetter):
        handed(letter)
        return bigquery.to_row(redacted, self._storage_write)


class RejectedLetterFn(beam.DoFn):
    """A dead letter BigQuery refused for good: logged and counted, never silently dropped."""

    def setup(self) -> None:
        self._written = metrics.counter(metrics.DEAD_LETTERS_WRITTEN)
        self._rejected = metrics.counter(metrics.DEAD_LETTERS_REJECTED_BY_SINK)
        self._by_code = {name: metrics.counter(metrics.DEAD_LETTER_CODE_PREFIX + name) for name in ErrorCode.keys()}  # noqa: SIM118
        self._at: dict[tuple[str, int], metrics.Counter] = {}

    def process(self, failure):
        row, errors = bigquery.refusal(failure)
        self._written.dec()
        self._rejected.inc()
        code = self._by_code.get(str(row.get("error_code")))
        if code is not None:
            code.dec()
            at_stage(self._at, str(row.get("stage")), ErrorCode.Value(str(row.get("error_code")))).dec()
        logging.getLogger(__name__).error(
            "BigQuery refused the dead letter of %s from %s (%s): %s",
            row.get("transaction_id") or row.get("source"),
            row.get("stage"),
            row.get("error_code"),
            errors,
        )
        return []


def letter_key(letter: DeadLetter) -> bytes:
    if letter.transaction_id:
        return letter.transaction_id.encode()
    where = letter.source
    if where.topic:
        return f"{where.topic}/{where.partition}/{where.offset}".encode()
    if where.message_id:
        return where.message_id.encode()
    return f"{where.uri}:{where.line}".encode()


class WriteDeadLetters(beam.PTransform):
    def __init__(
        self,
        output_dir: str,
        num_shards: int,
        payload_policy: str = "raw",
        windowing: Windowing | None = None,
        topic: kafka.TopicSink | None = None,
        value_format: str = "json",
        table: bigquery.TableSink | None = None,
    ):
        super().__init__()
        self._table = table
        self._dir = output_dir.rstrip("/")
        self._num_shards = num_shards
        self._payload_policy = payload_policy
        self._windowing = windowing
        self._topic = topic
        self._value_format = value_format

    def expand(self, dead_letters: beam.PCollection):
        if self._topic is not None:
            encode = EncodeForTopicFn(self._payload_policy, self._value_format)
            keyed = dead_letters | "ToKafka" >> beam.ParDo(encode).with_output_types(tuple[bytes, bytes])
            return keyed | "WriteToKafka" >> kafka.write(self._topic)
        if self._table is not None:
            encode_row = EncodeForTableFn(self._payload_policy, self._table.storage_write)
            rows = dead_letters | "ToBigQueryRow" >> beam.ParDo(encode_row).with_output_types(dict)
            streaming = self._windowing is not None
            written = rows | "WriteToBigQuery" >> bigquery.write(self._table, DeadLetter.DESCRIPTOR, streaming)
            if bigquery.reports_refusals(self._table, streaming):
                written.failed_rows_with_errors | "RejectedByBigQuery" >> beam.ParDo(RejectedLetterFn())
            return written
        lines = dead_letters | "ToJson" >> beam.ParDo(EncodeDeadLetterFn(self._payload_policy)).with_output_types(str)
        if self._windowing is not None:
            return lines | "WriteWindows" >> WriteWindowedFiles(f"{self._dir}/dead_letters", self._windowing)
        return lines | "WriteJsonl" >> beam.io.WriteToText(
            f"{self._dir}/dead_letters/part", file_name_suffix=".jsonl", num_shards=self._num_shards
        )
