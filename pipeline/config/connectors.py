"""The connectors' config sections: Kafka, Pub/Sub and BigQuery (each connector in pipeline.io takes
its section whole). Part of pipeline.config.sections, apart because they change with the connectors."""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import PrivateAttr, model_validator

from pipeline.config.base import Section, setting
from pipeline.config.kinds import Int, Path, Text
from pipeline.shared.clock import parse_rfc3339

# The forms a regex checks (the Flex Template's parameters carry them too).
KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PUBSUB_NAME = r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}"
PUBSUB_SUBSCRIPTION = re.compile(rf"projects/[a-z][a-z0-9:.-]{{4,62}}/subscriptions/{_PUBSUB_NAME}")
PUBSUB_TOPIC = re.compile(rf"projects/[a-z][a-z0-9:.-]{{4,62}}/topics/{_PUBSUB_NAME}")
# [PROJECT(: or .)]DATASET.TABLE; project ids may hold a domain (example.com:project).
BIGQUERY_TABLE = re.compile(r"(?:[a-z][a-z0-9.:-]{4,62}[a-z0-9][:.])?[A-Za-z0-9_]{1,1024}\.[\w$-]{1,1024}")


class KafkaConfig(Section):
    option_prefix = "kafka_"
    bootstrap_servers: Text | None = setting(
        None, "Kafka brokers, HOST:PORT[,HOST:PORT...]: for source.kind kafka and for the kafka.*_topic sinks."
    )
    topic: Text | None = setting(None, "Topic(s) to read (source.kind kafka); several: T1,T2.")
    group_id: Text = setting(
        "riskpipe-scoring", "Consumer group: a restarted job goes on from the offsets this group committed."
    )
    start: Text = setting(
        "earliest",
        "Where to start where the group has no committed offset: earliest, latest, or an RFC 3339 time (every "
        "partition from its first record at or after it, whatever the group committed).",
    )
    commit: Literal["auto", "written", "finalize", "bundle"] = setting(
        "auto",
        "How read offsets are committed to the group: written (once every record before them is written out: a "
        "crash loses nothing; local runners such as Prism), finalize (KafkaIO commits when the runner finalizes "
        "a checkpoint; Flink, Dataflow), bundle (after each read bundle: a crash loses what was read and not yet "
        "written), auto (written on Prism, finalize elsewhere).",
    )
    read_round_ms: Int = setting(
        100,
        "How long KafkaIO's read takes one partition before it hands the records on and goes to the next (0: "
        "KafkaIO's own polling timeout, 1 s). A runner that reads a job's partitions one after another in one "
        "bundle (Prism) holds each record about partitions x this long.",
        ge=0,
        le=60000,
    )
    properties_file: Path | None = setting(
        None,
        "Kafka client properties (security: SASL, TLS) in a Java .properties file; RISKPIPE_KAFKA_<NAME> "
        "environment variables add to it (RISKPIPE_KAFKA_SASL_JAAS_CONFIG -> sasl.jaas.config). Never in this file.",
    )
    scored_topic: Text | None = setting(
        None, "Scored records to this topic instead of files.", pattern=KAFKA_TOPIC.pattern
    )
    alerts_topic: Text | None = setting(
        None, "REVIEW and DECLINE records also to this topic.", pattern=KAFKA_TOPIC.pattern
    )
    dead_letter_topic: Text | None = setting(
        None, "Dead letters to this topic instead of files.", pattern=KAFKA_TOPIC.pattern
    )
    value_format: Literal["json", "protobuf"] = setting(
        "json",
        "Values written to topics: json (proto3 JSON, proto field names) or protobuf (binary; the contracts' "
        "messages). Keys are the transaction_id.",
    )
    expansion_service: Text = setting(
        "",
        "Where KafkaIO's Java transforms come from: HOST:PORT of a running expansion service, or a jar that the "
        "job starts; empty: the jar scripts/kafka.sh builds.",
    )

    _topics: tuple[str, ...] = PrivateAttr(())
    _start_ms: int | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _parse(self) -> KafkaConfig:
        self._topics = tuple(t.strip() for t in (self.topic or "").split(",") if t.strip())
        if self.start not in ("earliest", "latest"):
            try:
                self._start_ms = int(parse_rfc3339(self.start).timestamp() * 1000)
            except ValueError as exc:
                raise ValueError(f"kafka.start (--kafka_start): earliest, latest or an RFC 3339 time: {exc}") from None
            if self._start_ms > (time.time() + 86400) * 1000:
                raise ValueError(
                    f"kafka.start (--kafka_start): earliest, latest or an RFC 3339 time: {self.start!r} lies in the "
                    "future"
                )
        for name in ("scored_topic", "alerts_topic", "dead_letter_topic"):
            topic = getattr(self, name)
            if topic is not None and not KAFKA_TOPIC.fullmatch(topic):
                raise ValueError(
                    f"kafka.{name}: {topic!r} is not a Kafka topic name (letters, digits, . _ -, at most 249)"
                )
            if topic is not None and topic in self._topics:
                raise ValueError(
                    f"kafka.{name}: {topic!r} is the topic the job reads; the job would read its own output"
                )
        return self

    @property
    def topics(self) -> list[str]:
        """kafka.topic, split."""
        return list(self._topics)

    @property
    def offset_reset(self) -> str:
        """The consumer's auto.offset.reset: where a partition with no committed offset starts."""
        return self.start if self.start in ("earliest", "latest") else "earliest"

    @property
    def start_read_time_ms(self) -> int | None:
        """kafka.start as a time (epoch ms), or None for earliest / latest."""
        return self._start_ms

    @property
    def sinks(self) -> tuple[str | None, str | None, str | None]:
        return self.scored_topic, self.alerts_topic, self.dead_letter_topic


class PubSubConfig(Section):
    option_prefix = "pubsub_"
    subscription: Text | None = setting(
        None, "projects/P/subscriptions/S to read (source.kind pubsub).", pattern=PUBSUB_SUBSCRIPTION.pattern
    )
    id_label: Text = setting(
        "", "Attribute holding a unique message id: Pub/Sub's redeliveries with it are dropped at the source."
    )
    timestamp_attribute: Text = setting(
        "", "Attribute holding the message's time (RFC 3339 or epoch ms); empty: the publish time."
    )
    alerts_topic: Text | None = setting(
        None, "projects/P/topics/T: REVIEW and DECLINE records also published here.", pattern=PUBSUB_TOPIC.pattern
    )

    @model_validator(mode="after")
    def _forms(self) -> PubSubConfig:
        if self.subscription is not None and not PUBSUB_SUBSCRIPTION.fullmatch(self.subscription):
            raise ValueError(f"pubsub.subscription: {self.subscription!r} is not projects/PROJECT/subscriptions/NAME")
        if self.alerts_topic is not None and not PUBSUB_TOPIC.fullmatch(self.alerts_topic):
            raise ValueError(f"pubsub.alerts_topic: {self.alerts_topic!r} is not projects/PROJECT/topics/NAME")
        return self


class BigQueryConfig(Section):
    option_prefix = "bigquery_"
    scored_table: Text | None = setting(
        None,
        "PROJECT:DATASET.TABLE (or DATASET.TABLE): scored records to this BigQuery table instead of files; the "
        "table is created from the ScoredTransaction contract when missing.",
        pattern=BIGQUERY_TABLE.pattern,
    )
    dead_letter_table: Text | None = setting(
        None,
        "PROJECT:DATASET.TABLE (or DATASET.TABLE): dead letters to this BigQuery table instead of files; created "
        "from the DeadLetter contract when missing.",
        pattern=BIGQUERY_TABLE.pattern,
    )
    method: Literal["auto", "storage_write_api", "file_loads", "streaming_inserts"] = setting(
        "auto",
        "How rows are written: storage_write_api (exactly once; a Java transform Beam expands when the job is "
        "built), file_loads, streaming_inserts, or auto (file loads in batch, streaming inserts in streaming).",
    )

    @model_validator(mode="after")
    def _forms(self) -> BigQueryConfig:
        for name in ("scored_table", "dead_letter_table"):
            table = getattr(self, name)
            if table is not None and not BIGQUERY_TABLE.fullmatch(table):
                raise ValueError(
                    f"bigquery.{name}: {table!r} is not PROJECT:DATASET.TABLE, PROJECT.DATASET.TABLE or DATASET.TABLE"
                )
        return self
