"""Kafka for the job: the read and the topic sinks (Beam's cross-language KafkaIO), client properties,
and the group's lag. The Java side (expansion service, worker pool) is pipeline.io.kafka_expansion.

Client properties (security settings: SASL, TLS) never come from config.yaml: they come from a
Java-style .properties file (kafka.properties_file) and from environment variables
RISKPIPE_KAFKA_<NAME> (RISKPIPE_KAFKA_SASL_JAAS_CONFIG -> sasl.jaas.config), the environment
winning. They are given to KafkaIO as its consumer and producer configuration, which the runner
keeps in the job's graph: use a secret store or file on the workers for real credentials.
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import apache_beam as beam

from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline.io import progress
from pipeline.io.messages import DEFAULT_MAX_RECORD_BYTES, MessagesToRecords, text
from pipeline.shared.clock import RunClock

STOPPABLE_READ_URN = "riskpipe:transform:kafka_read_with_metadata_until_stop_file:v1"
BYTES_DESERIALIZER = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
BYTES_SERIALIZER = "org.apache.kafka.common.serialization.ByteArraySerializer"


class TopicSink(NamedTuple):
    """A Kafka topic the job writes to, and how (see `write`)."""

    topic: str
    producer_config: dict[str, str]
    expansion_service: str


class _WriteToTopic(beam.PTransform):
    def __init__(self, sink: TopicSink):
        super().__init__()
        self._sink = sink

    def expand(self, pairs: beam.PCollection):
        from apache_beam.io.kafka import WriteToKafka

        return pairs | WriteToKafka(
            producer_config=self._sink.producer_config,
            topic=self._sink.topic,
            key_serializer=BYTES_SERIALIZER,
            value_serializer=BYTES_SERIALIZER,
            expansion_service=self._sink.expansion_service,
        )


def write(sink: TopicSink) -> beam.PTransform:
    """(key, value) byte pairs -> the topic, through Beam's cross-language KafkaIO write. The
    pairs must be typed tuple[bytes, bytes] (apply_stage or with_output_types): KafkaIO needs a
    key-value coder, and an untyped PCollection would reach Java with a pickled one."""
    return _WriteToTopic(sink)


# Client properties the Python client (librdkafka) shares with Java's, for the lag check.
# --- the read ----------------------------------------------------------------------------------


def kafka_raw_record(row, clock: RunClock) -> RawRecord:
    """One record of KafkaIO's read with metadata -> RawRecord: topic, partition and offset as its
    source position; the key, the record's time and each header as attributes."""
    attributes = {"kafka.timestamp_ms": str(row.timestamp)}
    if row.key is not None:
        attributes["kafka.key"] = text(row.key)
    for header in row.headers or ():
        attributes[f"kafka.header.{header.key}"] = text(header.value)
    return RawRecord(
        payload=row.value or b"",
        source=SourcePosition(topic=row.topic, partition=row.partition, offset=row.offset),
        ingest_time=clock.timestamp(),
        attributes=attributes,
    )


class KafkaRead(NamedTuple):
    """What KafkaIO's read is asked for (pipeline.io.kafka builds the consumer config)."""

    consumer_config: dict[str, str]
    topics: list[str]
    start_read_time_ms: int | None
    commit_in_finalize: bool
    expansion_service: str
    stop_file: str = ""
    commit_in_bundles: bool = False
    event_time_watermark: bool = True
    read_round_ms: int = 0  # BoundedPollConsumer.java: 0 leaves KafkaIO's own polling timeout


class ReadKafkaTransactions(beam.PTransform):
    """Every record of the topics, as a RawRecord, unbounded, through Beam's cross-language
    KafkaIO; returns (records, dead letters). With a stop file (local runs) the read ends cleanly,
    at the offsets reached, once the file exists; with commit_in_bundles the offsets read are
    committed after each read bundle (StoppableKafkaRead.java, in the project's expansion jar); with
    event_time_watermark (the default) each record's Beam timestamp and each partition's watermark
    follow the records' event_time (StoppableKafkaRead.EventTimePolicy); with read_round_ms each
    partition's read hands its records on after that long (BoundedPollConsumer.java). `resume`: what
    an earlier run of the same output folder wrote (skipped when read again)."""

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
            "key_deserializer": BYTES_DESERIALIZER,
            "value_deserializer": BYTES_DESERIALIZER,
            "start_read_time": read.start_read_time_ms,
            "commit_offset_in_finalize": read.commit_in_finalize,
            "timestamp_policy": ReadFromKafka.processing_time_policy,
            # Each partition's read polls for this long before it hands its records on (KafkaIO's
            # default is 2 s; 1 s, its least, halves the latency a read adds).
            "consumer_polling_timeout": 1,
        }
        if not (read.stop_file or read.commit_in_bundles or read.event_time_watermark or read.read_round_ms):
            return ReadFromKafka(with_metadata=True, expansion_service=read.expansion_service, **settings)
        fields = ReadFromKafkaSchema.__annotations__
        defaults = inspect.signature(ReadFromKafka.__init__).parameters
        payload = {name: settings[name] if name in settings else defaults[name].default for name in fields}
        extra = [
            ("stop_file", str),
            ("commit_in_bundles", bool),
            ("event_time_watermark", bool),
            ("read_round_ms", int),
        ]
        schema: Any = NamedTuple("StoppableKafkaReadSchema", [*fields.items(), *extra])  # type: ignore[misc]
        payload.update(
            stop_file=read.stop_file,
            commit_in_bundles=read.commit_in_bundles,
            event_time_watermark=read.event_time_watermark,
            read_round_ms=read.read_round_ms,
        )
        return ExternalTransform(
            STOPPABLE_READ_URN,
            NamedTupleBasedPayloadBuilder(schema(**payload)),
            read.expansion_service,
        )

    def expand(self, pbegin: beam.pvalue.PBegin):
        rows = pbegin | "KafkaIO" >> self._kafka_io()
        return rows | "Records" >> MessagesToRecords(
            kafka_raw_record, self._clock, self._max_record_bytes, self._resume
        )
