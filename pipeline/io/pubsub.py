"""Pub/Sub (on Dataflow): Beam's ReadFromPubSub -> RawRecords; the message id as the source
position, the attributes kept (plus `pubsub.publish_time`)."""

from __future__ import annotations

import apache_beam as beam

from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline.io.messages import DEFAULT_MAX_RECORD_BYTES, MessagesToRecords
from pipeline.shared.clock import RunClock


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
