"""60_sink: ScoredTransaction -> files under <output.dir>/, a BigQuery table, or Kafka and Pub/Sub topics.

In:  ScoredTransaction.
Out: scored/part-*.jsonl, one proto3-JSON object per line (proto field names); with
     output.parquet, also scored_parquet/part-*.parquet with flat columns (see PARQUET_SCHEMA).
     Streaming: scored/<window start>-<window end>.pane<N>.<run>.s<shard>.jsonl, one file set per
     fixed event-time window (streaming.window_seconds), each written whole when the window closes
     (pipeline.io.windowed_files); no Parquet.
To BigQuery, where configured (bigquery.scored_table): every scored record is a row of a table whose
     schema is derived from the ScoredTransaction contract (pipeline.io.bigquery), instead of files.
To topics, where configured: with a Kafka scored topic, every scored record goes there instead of
     to files; alerts (REVIEW and DECLINE) go to the Kafka alerts topic and the Pub/Sub alerts
     topic as well. Kafka records are keyed by transaction_id; values are proto3 JSON or the
     ScoredTransaction's protobuf bytes (kafka.value_format); Pub/Sub alerts are proto3 JSON with
     the transaction_id and decision as attributes.
Dead letters: SINK_REJECTED for a row BigQuery refuses for good (streaming inserts, Storage Write API;
     the row as JSON in the payload, no longer counted as scored); an encoding failure is an
     INTERNAL_ERROR from the stage guard.
A given input gives the same lines (their order inside and across files is the runner's).
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.enriched_transaction_pb2 import ProfileKind
from contracts.riskpipe.v1.raw_record_pb2 import SourcePosition
from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, ScoredTransaction
from pipeline.io import bigquery, kafka, progress
from pipeline.io.windowed_files import Windowing, WriteWindowedFiles
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import StageFn, apply_stage, make_dead_letter
from pipeline.shared.json_codec import reason_dicts, scored_json

STAGE = "60_sink"

PARQUET_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("card_id", pa.string()),
        ("merchant_id", pa.string()),
        ("amount_minor_units", pa.int64()),
        ("currency", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("score", pa.float64()),
        ("decision", pa.string()),
        ("model_version", pa.string()),
        ("thresholds_version", pa.string()),
        ("feature_set_version", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("missing_profiles", pa.list_(pa.string())),
        ("source_uri", pa.string()),
        ("source_line", pa.int64()),
        ("features", pa.map_(pa.string(), pa.float64())),
        (
            "reasons",
            pa.list_(pa.struct([("feature", pa.string()), ("value", pa.float64()), ("contribution", pa.float64())])),
        ),
        # under predict.shadow_model; null otherwise
        ("shadow", pa.struct([("model_version", pa.string()), ("score", pa.float64()), ("decision", pa.string())])),
    ]
)


def parquet_row(s: ScoredTransaction) -> dict:
    return {
        "transaction_id": s.transaction_id,
        "card_id": s.card_id,
        "merchant_id": s.merchant_id,
        "amount_minor_units": s.amount.minor_units,
        "currency": s.amount.currency,
        "event_time": s.event_time.seconds * 1_000_000 + s.event_time.nanos // 1000,
        "score": s.score,
        "decision": Decision.Name(s.decision),
        "model_version": s.model_version,
        "thresholds_version": s.thresholds_version,
        "feature_set_version": s.feature_set_version,
        "scored_at": s.scored_at.seconds * 1_000_000 + s.scored_at.nanos // 1000,
        "missing_profiles": [ProfileKind.Name(k) for k in s.missing_profiles],
        "source_uri": s.source.uri,
        "source_line": s.source.line,
        "features": list(zip(s.features.names, s.features.values, strict=True)) or None,
        "reasons": reason_dicts(s),
        "shadow": (
            {
                "model_version": s.shadow.model_version,
                "score": s.shadow.score,
                "decision": Decision.Name(s.shadow.decision),
            }
            if s.HasField("shadow")
            else None
        ),
    }


ALERT_DECISIONS = (Decision.DECISION_REVIEW, Decision.DECISION_DECLINE)


class ScoredEncoder:
    def __init__(self):
        self._written = metrics.counter(metrics.SCORED_WRITTEN)

    def __call__(self, scored: ScoredTransaction) -> str:
        line = scored_json(scored)
        self._written.inc()  # after encoding: a record that fails here is a dead letter, not scored
        return line


class KeyedEncoder:
    """ScoredTransaction -> (transaction_id, value) for a topic; counts what it encodes."""

    def __init__(self, value_format: str, counter: str):
        self._binary = value_format == "protobuf"
        self._written = metrics.counter(counter)
        self._scored = counter == metrics.SCORED_WRITTEN  # not an alert (a copy of a scored record)

    def __call__(self, scored: ScoredTransaction) -> tuple[bytes, bytes]:
        value = scored.SerializeToString() if self._binary else scored_json(scored).encode()
        self._written.inc()
        if self._scored:
            progress.handed(scored.source)
        return scored.transaction_id.encode(), value


class RowEncoder:
    """ScoredTransaction -> a row of its BigQuery table; counts what it encodes."""

    def __init__(self, storage_write: bool):
        self._storage_write = storage_write
        self._written = metrics.counter(metrics.SCORED_WRITTEN)

    def __call__(self, scored: ScoredTransaction) -> dict:
        row = bigquery.to_row(scored, self._storage_write)
        self._written.inc()
        progress.handed(scored.source)
        return row


class RejectedRow:
    """A row BigQuery refused for good -> a SINK_REJECTED dead letter holding the row; the record
    is no longer counted as scored."""

    def __init__(self, clock: RunClock):
        self._clock = clock
        self._written = metrics.counter(metrics.SCORED_WRITTEN)

    def __call__(self, failure) -> DeadLetter:
        row, errors = bigquery.refusal(failure)
        letter = make_dead_letter(
            STAGE,
            ErrorCode.ERROR_CODE_SINK_REJECTED,
            f"BigQuery refused the row: {errors}",
            None,
            self._clock(),
            transaction_id=str(row.get("transaction_id") or ""),
        )
        letter.payload = json.dumps(row, sort_keys=True, default=str).encode()
        source = row.get("source") or {}
        letter.source.CopyFrom(
            SourcePosition(**{k: v for k, v in source.items() if k in SourcePosition.DESCRIPTOR.fields_by_name and v})
        )
        self._written.dec()
        return letter


def pubsub_alert(scored: ScoredTransaction):
    from apache_beam.io.gcp.pubsub import PubsubMessage

    attributes = {"transaction_id": scored.transaction_id, "decision": Decision.Name(scored.decision)}
    return PubsubMessage(scored_json(scored).encode(), attributes)


class Topics(NamedTuple):
    """Where scored records and alerts go besides (or instead of) files."""

    kafka_scored: kafka.TopicSink | None = None
    kafka_alerts: kafka.TopicSink | None = None
    pubsub_alerts: str | None = None
    value_format: str = "json"


class WriteScored(beam.PTransform):
    """ScoredTransactions -> JSONL (and Parquet) files; returns the encoding dead letters."""

    def __init__(
        self,
        output_dir: str,
        num_shards: int,
        parquet: bool,
        clock: RunClock,
        windowing: Windowing | None = None,
        topics: Topics | None = None,
        table: bigquery.TableSink | None = None,
    ):
        super().__init__()
        self._table = table
        self._dir = output_dir.rstrip("/")
        self._num_shards = num_shards
        self._parquet = parquet
        self._clock = clock
        self._windowing = windowing
        self._topics = topics or Topics()

    def _keyed(self, scored: beam.PCollection, label: str, counter: str):
        encoder = functools.partial(KeyedEncoder, self._topics.value_format, counter)
        return apply_stage(scored, label, StageFn(STAGE, encoder, self._clock), tuple[bytes, bytes])

    def _alerts(self, scored: beam.PCollection) -> list[beam.PCollection]:
        topics = self._topics
        if topics.kafka_alerts is None and topics.pubsub_alerts is None:
            return []
        alerts = scored | "Alerts" >> beam.Filter(lambda s: s.decision in ALERT_DECISIONS)
        dead = []
        if topics.kafka_alerts is not None:
            keyed, refused = self._keyed(alerts, "AlertToKafka", metrics.ALERTS_WRITTEN)
            keyed | "WriteAlertsToKafka" >> kafka.write(topics.kafka_alerts)
            dead.append(refused)
        if topics.pubsub_alerts is not None:
            (
                alerts
                | "AlertToPubSub" >> beam.Map(pubsub_alert)
                | "WriteAlertsToPubSub" >> beam.io.WriteToPubSub(topics.pubsub_alerts, with_attributes=True)
            )
        return dead

    def expand(self, scored: beam.PCollection):
        refused = self._alerts(scored)
        if self._topics.kafka_scored is not None:
            keyed, dead = self._keyed(scored, "ToKafka", metrics.SCORED_WRITTEN)
            keyed | "WriteToKafka" >> kafka.write(self._topics.kafka_scored)
        elif self._table is not None:
            encoder = StageFn(STAGE, functools.partial(RowEncoder, self._table.storage_write), self._clock)
            rows, dead = apply_stage(scored, "ToBigQueryRow", encoder, dict)
            streaming = self._windowing is not None
            written = rows | "WriteToBigQuery" >> bigquery.write(self._table, ScoredTransaction.DESCRIPTOR, streaming)
            if bigquery.reports_refusals(self._table, streaming):
                rejected = written.failed_rows_with_errors | "RejectedByBigQuery" >> beam.Map(
                    RejectedRow(self._clock)
                ).with_output_types(DeadLetter)
                refused.append(rejected)
        else:
            encoder = StageFn(STAGE, functools.partial(ScoredEncoder), self._clock)
            lines, dead = apply_stage(scored, "ToJson", encoder, str)
            self._write_files(scored, lines)
        if not refused:
            return dead
        return (dead, *refused) | "Refused" >> beam.Flatten()

    def _write_files(self, scored: beam.PCollection, lines: beam.PCollection) -> None:
        if self._windowing is not None:
            lines | "WriteWindows" >> WriteWindowedFiles(f"{self._dir}/scored", self._windowing)
            return
        lines | "WriteJsonl" >> beam.io.WriteToText(
            f"{self._dir}/scored/part", file_name_suffix=".jsonl", num_shards=self._num_shards
        )
        if self._parquet:
            (
                scored
                | "ToParquetRow" >> beam.Map(parquet_row)
                | "WriteParquet"
                >> beam.io.WriteToParquet(
                    f"{self._dir}/scored_parquet/part",
                    PARQUET_SCHEMA,
                    file_name_suffix=".parquet",
                    num_shards=self._num_shards,
                )
            )
