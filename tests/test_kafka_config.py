"""Kafka settings, client properties and record conversion, without a broker."""

from __future__ import annotations

import collections

import pytest

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.raw_record_pb2 import SourcePosition
from pipeline import config as job_config
from pipeline import launch
from pipeline import options as job_options
from pipeline.config import KafkaConfig
from pipeline.io import kafka as kafka_io
from pipeline.io import kafka_client, kafka_expansion, messages
from pipeline.local import runners
from pipeline.stages import s90_dead_letter as dead_letter_sink
from tests.helpers import job_config as write_config
from tests.helpers import typed_config

Row = collections.namedtuple("Row", "topic partition offset timestamp key value headers")
Header = collections.namedtuple("Header", "key value")


def kafka_settings(**overrides):
    settings = {
        "source__kind": "kafka",
        "kafka__bootstrap_servers": "127.0.0.1:9092",
        "kafka__topic": "transactions",
    }
    settings.update(overrides)
    return settings


def load(dataset, tmp_path, **overrides):
    return typed_config(dataset, tmp_path / "out", **kafka_settings(**overrides))


def test_a_kafka_source_is_streaming_and_needs_brokers_and_a_topic(dataset, tmp_path):
    config = load(dataset, tmp_path, kafka__topic="a, b")
    assert config.is_streaming and config.uses_kafka and config.kafka.topics == ["a", "b"]
    with pytest.raises(job_config.ConfigError, match=r"kafka\.topic"):
        load(dataset, tmp_path, kafka__topic=None)
    with pytest.raises(job_config.ConfigError, match=r"kafka\.bootstrap_servers"):
        load(dataset, tmp_path, kafka__bootstrap_servers=None)
    with pytest.raises(job_config.ConfigError, match=r"kafka\.start"):
        load(dataset, tmp_path, kafka__start="yesterday")
    with pytest.raises(job_config.ConfigError, match="read its own output"):
        load(dataset, tmp_path, kafka__scored_topic="transactions")
    with pytest.raises(job_config.ConfigError, match="not a Kafka topic name"):
        load(dataset, tmp_path, kafka__alerts_topic="alerts/high")


def test_a_kafka_sink_alone_makes_a_batch_run_go_to_prism(dataset, tmp_path):
    config = job_config.load(
        write_config(dataset, tmp_path / "out", kafka__bootstrap_servers="127.0.0.1:9092", kafka__scored_topic="s")
    )
    assert not config.is_streaming and config.uses_kafka
    options = job_options.parse_options([])
    assert runners.choose_runner(options, config.is_streaming, config.uses_kafka, config.source.kind) == "PrismRunner"
    with pytest.raises(job_config.ConfigError, match="cannot run Kafka's Java transforms"):
        runners.choose_runner(job_options.parse_options(["--runner=FnApiRunner"]), False, True, "files")


def start_position(start: str) -> tuple[str, int | None]:
    section = KafkaConfig(start=start)
    return section.offset_reset, section.start_read_time_ms


def test_the_start_position_is_earliest_latest_or_a_time():
    assert start_position("earliest") == ("earliest", None)
    assert start_position("latest") == ("latest", None)
    assert start_position("2026-11-30T12:00:00Z") == ("earliest", 1796040000000)
    with pytest.raises(ValueError):
        start_position("2999-01-01T00:00:00Z")


def test_client_properties_come_from_a_file_and_the_environment_never_the_config(tmp_path):
    props = tmp_path / "client.properties"
    props.write_text(
        "# security\nsecurity.protocol=SASL_SSL\nsasl.mechanism: PLAIN\n! old style comment\n"
        "ssl.truststore.location = /etc/kafka/truststore.jks\n"
    )
    environ = {"RISKPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "RISKPIPE_KAFKA_SASL_JAAS_CONFIG": "x", "HOME": "/"}
    assert kafka_client.client_properties(str(props), environ) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",  # the environment wins
        "sasl.jaas.config": "x",
        "ssl.truststore.location": "/etc/kafka/truststore.jks",
    }
    consumer = kafka_client.consumer_config(
        KafkaConfig(bootstrap_servers="b:9092", group_id="g", start="latest"), {"bootstrap.servers": "other:1"}
    )
    # The job commits offsets itself (kafka.commit): the consumer never auto-commits.
    assert consumer == {
        "auto.offset.reset": "latest",
        "bootstrap.servers": "b:9092",
        "group.id": "g",
        "enable.auto.commit": "false",
    }
    producer = kafka_client.producer_config("b:9092", {"acks": "1"})
    assert producer["enable.idempotence"] == "true" and producer["acks"] == "1"


def test_a_kafka_record_keeps_topic_partition_offset_key_and_headers(clock):
    row = Row("tx", 2, 417, 1796040000123, b"t-\xff", b'{"a":1}', [Header("trace", b"abc"), Header("bin", b"\x00\xfe")])
    record = kafka_io.kafka_raw_record(row, clock)
    assert record.payload == b'{"a":1}'
    assert record.source == SourcePosition(topic="tx", partition=2, offset=417)
    assert dict(record.attributes) == {
        "kafka.key": "t-\\xff",
        "kafka.timestamp_ms": "1796040000123",
        "kafka.header.trace": "abc",
        "kafka.header.bin": "\x00\\xfe",
    }
    keyless = kafka_io.kafka_raw_record(Row("tx", 0, 0, 0, None, None, None), clock)
    assert keyless.payload == b"" and "kafka.key" not in keyless.attributes


def test_a_message_larger_than_the_limit_is_a_record_too_large_dead_letter(clock):
    fn = messages.MessageToRecordFn(kafka_io.kafka_raw_record, clock, max_record_bytes=10)
    fn.setup()
    fn.start_bundle()
    (out,) = list(fn.process(Row("tx", 1, 5, 0, b"k", b"x" * 5000, None)))
    letter = out.value
    assert out.tag == "dead_letter" and letter.error_code == ErrorCode.ERROR_CODE_RECORD_TOO_LARGE
    assert len(letter.payload) == 1024 and letter.source.offset == 5 and letter.source.partition == 1


def test_dead_letters_on_a_topic_are_keyed_by_transaction_id_or_position():
    keyed = DeadLetter(transaction_id="t-9", source=SourcePosition(topic="tx", partition=1, offset=3))
    assert dead_letter_sink.letter_key(keyed) == b"t-9"
    assert (
        dead_letter_sink.letter_key(DeadLetter(source=SourcePosition(topic="tx", partition=1, offset=3))) == b"tx/1/3"
    )
    assert dead_letter_sink.letter_key(DeadLetter(source=SourcePosition(message_id="m-1"))) == b"m-1"
    assert dead_letter_sink.letter_key(DeadLetter(source=SourcePosition(uri="a.jsonl", line=4))) == b"a.jsonl:4"


def test_a_running_expansion_service_is_used_as_it_is():
    with kafka_expansion.JavaExpansion("10.0.0.5:8097", local_worker=True) as java:
        assert java.address == "10.0.0.5:8097" and java.stop_file
    with kafka_expansion.JavaExpansion("10.0.0.5:8097", local_worker=False) as java:
        assert java.stop_file == ""


def test_without_a_built_jar_the_job_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RISKPIPE_KAFKA_EXPANSION_JAR", str(tmp_path / "missing.jar"))
    with pytest.raises(kafka_expansion.KafkaSetupError, match=r"missing\.jar"):
        kafka_expansion.find_jar()
    monkeypatch.delenv("RISKPIPE_KAFKA_EXPANSION_JAR")
    monkeypatch.setenv("RISKPIPE_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(kafka_expansion.KafkaSetupError, match=r"scripts/kafka\.sh expansion-jar"):
        kafka_expansion.find_jar()


def test_values_on_topics_are_proto3_json_or_the_contracts_binary_messages():
    from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, ScoredTransaction
    from pipeline.shared.json_codec import scored_json
    from pipeline.stages import s60_sink as sink

    scored = ScoredTransaction(transaction_id="t-7", score=0.95, decision=Decision.DECISION_DECLINE)
    key, value = sink.KeyedEncoder("json", "scored_written")(scored)
    assert key == b"t-7" and value == scored_json(scored).encode()
    key, value = sink.KeyedEncoder("protobuf", "scored_written")(scored)
    assert key == b"t-7" and ScoredTransaction.FromString(value) == scored

    letter = DeadLetter(
        stage="10_validate",
        error_code=ErrorCode.ERROR_CODE_MALFORMED_JSON,
        payload=b"{oops",
        source=SourcePosition(topic="tx", partition=2, offset=9),
    )
    for value_format in ("json", "protobuf"):
        fn = dead_letter_sink.EncodeForTopicFn("raw", value_format)
        fn.setup()
        ((key, value),) = list(fn.process(letter))
        assert key == b"tx/2/9"
        decoded = DeadLetter.FromString(value) if value_format == "protobuf" else None
        if decoded is not None:
            assert decoded.payload == b"{oops" and decoded.source.offset == 9
        else:
            assert b'"offset": "9"' in value or b'"offset":"9"' in value


def test_prism_cannot_commit_on_finalize_and_says_so(dataset, tmp_path):
    config = load(dataset, tmp_path, kafka__commit="finalize")
    with kafka_expansion.JavaExpansion("127.0.0.1:1", local_worker=True) as java:
        with pytest.raises(job_config.ConfigError, match="stable input"):
            launch.kafka_read(config, java, "PrismRunner", {})
        read = launch.kafka_read(config, java, "FlinkRunner", {})
    assert read.commit_in_finalize and not read.commit_in_bundles
    # On Prism auto commits once written (the job's own committer), neither per bundle nor on finalize.
    auto = launch.kafka_read(load(dataset, tmp_path), kafka_expansion.JavaExpansion("127.0.0.1:1"), "PrismRunner", {})
    assert not auto.commit_in_bundles and not auto.commit_in_finalize
    assert launch.kafka_commit(load(dataset, tmp_path), "PrismRunner") == "written"
    assert launch.kafka_commit(load(dataset, tmp_path), "FlinkRunner") == "finalize"
    bundle = launch.kafka_read(load(dataset, tmp_path, kafka__commit="bundle"), java, "PrismRunner", {})
    assert bundle.commit_in_bundles
    with pytest.raises(job_config.ConfigError, match="workers run elsewhere"):
        launch.kafka_read(load(dataset, tmp_path, kafka__commit="written"), java, "FlinkRunner", {})


def test_committed_offsets_wait_for_a_group_coordinator_that_is_not_ready(monkeypatch):
    # A broker just started answers "not coordinator" for a while; a restart asks again rather than
    # reading every output file back. Another error, or the same one past the patience, is raised.
    from types import SimpleNamespace

    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    class Consumer:
        def __init__(self, failures: list[int]):
            self.failures, self.calls = failures, 0

        def list_topics(self, topic, timeout):
            return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None, 1: None})})

        def committed(self, partitions, timeout):
            self.calls += 1
            if self.failures:
                raise KafkaException(KafkaError(self.failures.pop(0)))
            return [TopicPartition("t", 0, 5), TopicPartition("t", 1, -1001)]  # partition 1: none committed

    def lag_with(consumer):
        lag = kafka_client.GroupLag.__new__(kafka_client.GroupLag)
        lag._consumer, lag._topics = consumer, ["t"]
        return lag

    monkeypatch.setattr(kafka_client.time, "sleep", lambda seconds: None)
    waiting = Consumer([KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS])
    assert lag_with(waiting).committed() == {("t", 0): 5} and waiting.calls == 3
    refused = Consumer([KafkaError.GROUP_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        lag_with(refused).committed()
    assert refused.calls == 1
    never = Consumer([KafkaError.NOT_COORDINATOR] * 3)
    with pytest.raises(KafkaException):
        lag_with(never).committed(patience_seconds=0)
    assert never.calls == 1
