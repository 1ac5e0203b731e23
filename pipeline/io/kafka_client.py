"""Kafka clients' settings for the job: client properties (security settings never come from
config.yaml: a Java-style .properties file, kafka.properties_file, and RISKPIPE_KAFKA_<NAME>
environment variables, the environment winning), the consumer and producer configurations KafkaIO
is given, and the consumer group's lag (the Python client) that a local run's idle stop waits on.
They are given to KafkaIO as its consumer and producer configuration, which the runner keeps in the
job's graph: use a secret store or file on the workers for real credentials.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from pipeline.config import KafkaConfig

ENV_PREFIX = "RISKPIPE_KAFKA_"
# What a producer of the job's output topics is asked for: no loss and no duplicates from retries.
PRODUCER_DEFAULTS = {"acks": "all", "enable.idempotence": "true", "compression.type": "lz4", "linger.ms": "20"}


def read_properties(path: str) -> dict[str, str]:
    """A Java .properties file's `key=value` (or `key: value`) lines; # and ! start comments."""
    props: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#!":
                continue
            cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
            if cut < 0:
                props[line] = ""
            else:
                props[line[:cut].strip()] = line[cut + 1 :].strip()
    return props


def env_properties(environ: Mapping[str, str]) -> dict[str, str]:
    """RISKPIPE_KAFKA_SASL_MECHANISM=PLAIN -> {"sasl.mechanism": "PLAIN"}."""
    return {
        name[len(ENV_PREFIX) :].lower().replace("_", "."): value
        for name, value in environ.items()
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX)
    }


def client_properties(properties_file: str | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    props = read_properties(properties_file) if properties_file else {}
    props.update(env_properties(os.environ if environ is None else environ))
    return props


def consumer_config(section: KafkaConfig, properties: Mapping[str, str]) -> dict[str, str]:
    """KafkaIO's consumer config: where a partition with no committed offset starts, the client
    properties, the brokers and the group."""
    # The job commits the offsets itself (kafka.commit), never the consumer on a timer: an
    # auto-commit would mark records read that are not yet written.
    config = {
        "auto.offset.reset": section.offset_reset,
        **properties,
        "bootstrap.servers": section.bootstrap_servers or "",
        "enable.auto.commit": "false",
    }
    if section.group_id:
        config["group.id"] = section.group_id
    return config


def producer_config(bootstrap: str, properties: Mapping[str, str]) -> dict[str, str]:
    return {**PRODUCER_DEFAULTS, **properties, "bootstrap.servers": bootstrap}


_SHARED_CLIENT_PROPERTIES = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
)


def python_client_config(bootstrap: str, group_id: str, properties: Mapping[str, str]) -> dict[str, object]:
    """A Python (librdkafka) consumer's config for the group, with the client properties it shares
    with Java's; it never commits by itself."""
    shared = {k: v for k, v in properties.items() if k in _SHARED_CLIENT_PROPERTIES}
    return {**shared, "bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False}


class GroupLag:
    """How many records of the topics the job has not read yet: what the runner looks at to stop a
    local run by idleness (everything there is has been read, for a while). The group's committed
    offsets trail the reads (they are committed once the records are written), so the run's own
    read positions are asked first."""

    def __init__(self, section: KafkaConfig, properties: Mapping[str, str]):
        from confluent_kafka import Consumer

        self._consumer = Consumer(python_client_config(section.bootstrap_servers or "", section.group_id, properties))
        self._topics = section.topics
        self._latest = section.offset_reset == "latest" and section.start_read_time_ms is None
        self._start_ms = section.start_read_time_ms

    def pending(self, read: Mapping[tuple[str, int], int] | None = None) -> int:
        """Records not yet read: past the group's committed offset and past `read` (the offset
        after the last record this run read, per partition); -1 when the broker cannot be asked."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            partitions = [
                TopicPartition(topic, p)
                for topic in self._topics
                for p in self._consumer.list_topics(topic, timeout=5).topics[topic].partitions
            ]
            committed = self._consumer.committed(partitions, timeout=5)
            total = 0
            for tp in committed:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
                done = tp.offset if tp.offset >= 0 else self._first_offset(tp, low, high)
                done = max(done, (read or {}).get((tp.topic, tp.partition), -1))
                total += max(0, high - done)
            return total
        except (KafkaException, KeyError):
            return -1

    def committed(self, patience_seconds: float = 20.0) -> dict[tuple[str, int], int]:
        """The group's committed offset of each partition of the topics (those it committed). A
        broker that has just started, or whose group coordinator has just moved, answers "not
        coordinator" or "coordinator load in progress" for a while: asked again every half second
        for up to `patience_seconds` (a restart that cannot read the offsets reads every output
        file back); any other error, or the same one after that, is raised."""
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        not_ready = (
            KafkaError.NOT_COORDINATOR,
            KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
            KafkaError.COORDINATOR_NOT_AVAILABLE,
        )
        deadline = time.monotonic() + patience_seconds
        while True:
            try:
                partitions = [
                    TopicPartition(topic, p)
                    for topic in self._topics
                    for p in self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
                ]
                return {
                    (tp.topic, tp.partition): tp.offset
                    for tp in self._consumer.committed(partitions, timeout=10)
                    if tp.offset >= 0
                }
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                passing = isinstance(error, KafkaError) and (error.code() in not_ready or error.retriable())
                if not passing or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _first_offset(self, tp, low: int, high: int) -> int:
        """Where the read starts in a partition the group has not committed in."""
        from confluent_kafka import TopicPartition

        if self._start_ms is None:
            return high if self._latest else low
        at = TopicPartition(tp.topic, tp.partition, self._start_ms)
        (found,) = self._consumer.offsets_for_times([at], timeout=5)
        return found.offset if found.offset >= 0 else high  # no record at or after the time: none to read

    def close(self) -> None:
        self._consumer.close()
