"""BigQuery tables for the job's outputs: table schemas derived from the contracts, rows from messages.

A table's schema is computed from the contract's protobuf descriptor, never written by hand, so a
field added to ScoredTransaction or DeadLetter is a column the next run creates:

    string -> STRING, bytes -> BYTES, bool -> BOOL, double/float -> FLOAT64, every integer -> INT64,
    enum -> STRING (the value's name), google.protobuf.Timestamp -> TIMESTAMP,
    message -> RECORD (its fields, recursively), map<K, V> -> REPEATED RECORD (key, value),
    repeated -> mode REPEATED; everything else NULLABLE.

Rows carry every field: an unset proto3 scalar is its default (as in the files), an unset message or
`optional` field is NULL. Bytes are base64 text and timestamps RFC 3339 text for the JSON-based write
methods (file loads, streaming inserts); bytes and Beam Timestamps for the Storage Write API.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.utils.timestamp import Timestamp as BeamTimestamp
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pipeline.shared.json_codec import timestamp_text

# A streaming job's seconds between loads (file loads) or commits (Storage Write API): rows become
# visible in the table this often.
COMMIT_SECONDS = {"file_loads": 60, "storage_write_api": 5}
_TIMESTAMP = "google.protobuf.Timestamp"
_MAX_DEPTH = 15  # BigQuery's limit on nested RECORDs
_SCALARS = {
    FieldDescriptor.TYPE_STRING: "STRING",
    FieldDescriptor.TYPE_BYTES: "BYTES",
    FieldDescriptor.TYPE_BOOL: "BOOL",
    FieldDescriptor.TYPE_DOUBLE: "FLOAT64",
    FieldDescriptor.TYPE_FLOAT: "FLOAT64",
    FieldDescriptor.TYPE_ENUM: "STRING",
    **{
        t: "INT64"
        for t in (
            FieldDescriptor.TYPE_INT32,
            FieldDescriptor.TYPE_INT64,
            FieldDescriptor.TYPE_UINT32,
            FieldDescriptor.TYPE_UINT64,
            FieldDescriptor.TYPE_SINT32,
            FieldDescriptor.TYPE_SINT64,
            FieldDescriptor.TYPE_FIXED32,
            FieldDescriptor.TYPE_FIXED64,
            FieldDescriptor.TYPE_SFIXED32,
            FieldDescriptor.TYPE_SFIXED64,
        )
    },
}


@dataclasses.dataclass(frozen=True)
class TableSink:
    """Where one output goes in BigQuery: PROJECT:DATASET.TABLE (or DATASET.TABLE in the job's project)."""

    table: str
    method: str = "auto"

    @property
    def storage_write(self) -> bool:
        """Rows go through the Storage Write API, which takes bytes and Beam Timestamps as they are."""
        return self.method == "storage_write_api"


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _repeated(field: FieldDescriptor) -> bool:
    return field.label == FieldDescriptor.LABEL_REPEATED


def _schema_field(field: FieldDescriptor, depth: int) -> dict[str, Any]:
    mode = "REPEATED" if _repeated(field) else "NULLABLE"
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return {"name": field.name, "type": _SCALARS[field.type], "mode": mode}
    if field.message_type.full_name == _TIMESTAMP:
        return {"name": field.name, "type": "TIMESTAMP", "mode": mode}
    return {"name": field.name, "type": "RECORD", "mode": mode, "fields": _fields(field.message_type, depth + 1)}


def _fields(descriptor: Descriptor, depth: int = 0) -> list[dict[str, Any]]:
    if depth >= _MAX_DEPTH:
        raise ValueError(f"{descriptor.full_name}: nested deeper than BigQuery's {_MAX_DEPTH} levels")
    return [_schema_field(field, depth) for field in descriptor.fields]


def table_schema(descriptor: Descriptor) -> dict[str, Any]:
    """The BigQuery table schema (the JSON form WriteToBigQuery takes) of a contract's message."""
    return {"fields": _fields(descriptor)}


def _value(field: FieldDescriptor, value: Any, storage_write: bool) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name if value in field.enum_type.values_by_number else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes(value) if storage_write else base64.b64encode(value).decode("ascii")
    if field.type != FieldDescriptor.TYPE_MESSAGE:
        return value
    if field.message_type.full_name == _TIMESTAMP:
        if storage_write:
            return BeamTimestamp(seconds=value.seconds, micros=value.nanos // 1000)
        return timestamp_text(value)
    return to_row(value, storage_write)


def to_row(message: Message, storage_write: bool = False) -> dict[str, Any]:
    """A message as a row of its table_schema()."""
    row: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            row[field.name] = [
                {"key": key, "value": _value(value_field, value[key], storage_write)} for key in sorted(value)
            ]
        elif _repeated(field):
            row[field.name] = [_value(field, item, storage_write) for item in value]
        elif field.has_presence and not message.HasField(field.name):
            row[field.name] = None
        else:
            row[field.name] = _value(field, value, storage_write)
    return row


def method_of(sink: TableSink, streaming: bool) -> str:
    """The write method a sink uses: `auto` is file loads in batch, streaming inserts in streaming."""
    if sink.method != "auto":
        return sink.method
    return "streaming_inserts" if streaming else "file_loads"


def reports_refusals(sink: TableSink, streaming: bool) -> bool:
    """Whether rows BigQuery refuses come back from the write (file loads fail the job instead)."""
    return method_of(sink, streaming) in ("streaming_inserts", "storage_write_api")


def _plain(value: Any) -> Any:
    """A refused row's value as JSON-ready data (the Storage Write API gives back Beam Rows)."""
    if hasattr(value, "_asdict"):
        return {key: _plain(item) for key, item in value._asdict().items()}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, BeamTimestamp):
        return value.to_rfc3339()
    return value


def refusal(failure: Any) -> tuple[dict[str, Any], str]:
    """(the row, BigQuery's errors as text) from an element of the write's failed_rows_with_errors:
    (table, row, errors) from streaming inserts, {"failed_row", "error_message"} from the Storage
    Write API."""
    if isinstance(failure, dict):
        return _plain(failure.get("failed_row", {})), str(failure.get("error_message", ""))
    _, row, errors = failure
    return _plain(row), "; ".join(
        str(e.get("message", e)) if isinstance(e, dict) else str(e)
        for e in (errors if isinstance(errors, list) else [errors])
    )


def write(sink: TableSink, descriptor: Descriptor, streaming: bool) -> beam.PTransform:
    """Beam's WriteToBigQuery for rows of `descriptor`, into a table it creates when missing and
    appends to; its result's failed_rows_with_errors holds the refused rows where
    reports_refusals(). The Storage Write API is a Java transform: Beam expands it through its GCP
    expansion service, which it fetches when the pipeline is built (on Dataflow's launcher)."""
    name = method_of(sink, streaming)
    method = {
        "storage_write_api": beam.io.WriteToBigQuery.Method.STORAGE_WRITE_API,
        "file_loads": beam.io.WriteToBigQuery.Method.FILE_LOADS,
        "streaming_inserts": beam.io.WriteToBigQuery.Method.STREAMING_INSERTS,
    }[name]
    extra: dict[str, Any] = {}
    if streaming and name in COMMIT_SECONDS:
        extra["triggering_frequency"] = COMMIT_SECONDS[name]
    if name == "streaming_inserts":
        # Transient errors are retried; a row refused for good comes back as a failed row (a
        # dead letter), instead of being retried for ever and holding the job up.
        extra["insert_retry_strategy"] = RetryStrategy.RETRY_ON_TRANSIENT_ERROR
    return beam.io.WriteToBigQuery(
        sink.table,
        schema=table_schema(descriptor),
        method=method,
        create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
        write_disposition=beam.io.BigQueryDisposition.WRITE_APPEND,
        **extra,
    )
