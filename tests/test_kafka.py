"""Kafka in and out, end to end, against a real broker (scripts/kafka.sh) with the job on Prism.

The broker is Apache Kafka from Maven Central's jars, started on a free port on 127.0.0.1 for this
module and stopped after it; the job's Kafka I/O is Beam's cross-language KafkaIO, expanded by the
project's expansion service jar and run by a Java worker pool. Under CI=true none of this skips.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.config import KafkaConfig
from pipeline.io import kafka_client, kafka_expansion
from tests.conftest import IN_CI, ROOT, need
from tests.helpers import job_config, read_jsonl
from tests.test_streaming import start_job
from tools import kafka as kafka_tool
from tools import stream_files

PYTHON = sys.executable
ALERT_DECISIONS = {"DECISION_REVIEW", "DECISION_DECLINE"}


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A Kafka broker of its own on 127.0.0.1 (tools.kafka.Broker), stopped after the module."""
    need(shutil.which("java") is not None, "Java is not installed: Kafka and KafkaIO need it")
    need(shutil.which("mvn") is not None, "Maven is not installed: scripts/kafka.sh fetches Kafka's jars with it")
    broker = kafka_tool.Broker(str(tmp_path_factory.mktemp("kafka-state")))
    try:
        broker.start()
    except kafka_tool.BrokerError as exc:
        need(False, str(exc))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def expansion_jar():
    try:
        return kafka_expansion.ensure_jar()
    except kafka_expansion.KafkaSetupError as exc:
        need(False, str(exc))
        raise


def topics(prefix: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {name: f"{prefix}-{name}-{tag}" for name in ("in", "scored", "alerts", "dead")}


def kafka_job_config(dataset, out, bootstrap, names, **overrides):
    settings = {
        "source__kind": "kafka",
        "kafka__bootstrap_servers": bootstrap,
        "kafka__topic": names["in"],
        "kafka__group_id": f"group-{names['in']}",
        "kafka__scored_topic": names["scored"],
        "kafka__alerts_topic": names["alerts"],
        "kafka__dead_letter_topic": names["dead"],
        "streaming__stop_after_idle_seconds": 10,
        "streaming__summary_interval_seconds": 1,
        "run__as_of": None,
    }
    settings.update(overrides)
    return job_config(dataset, out, **settings)


def finish(job: subprocess.Popen, out: pathlib.Path, timeout: float = 300) -> dict:
    _, stderr = job.communicate(timeout=timeout)
    assert job.returncode == 0, stderr.decode()[-4000:]
    return json.loads((out / "summary.json").read_text())


def labelled_lines(dataset) -> tuple[list[bytes], set[str]]:
    """The data set's lines with live event times, and the ids of its valid transactions."""
    lines = list(kafka_tool.file_lines([dataset / "transactions.jsonl"]))
    labels = [orjson.loads(line) for line in open(dataset / "labels.jsonl", "rb")]
    valid = {row["transaction_id"] for row in labels if not row["expected_error_code"]}
    return list(kafka_tool.live(lines)), valid


def read_topic(bootstrap: str, topic: str) -> list[dict]:
    return list(kafka_tool.consume(bootstrap, topic, idle_seconds=4))


def test_kafka_to_kafka_scores_every_transaction_once_and_explains_the_rest(dataset, tmp_path, broker, expansion_jar):
    bootstrap = broker.bootstrap
    names = topics("e2e")
    kafka_tool.create_topics(bootstrap, names.values(), partitions=3)
    lines, valid = labelled_lines(dataset)
    rng = random.Random(3)
    valid_lines = [line for line in lines if (kafka_tool.transaction_key(line) or b"").decode() in valid]
    redelivered = rng.sample(valid_lines, 60)  # an at-least-once producer sends these twice
    delivered = kafka_tool.produce(bootstrap, names["in"], lines + redelivered)
    by_position = {(d.partition, d.offset): d.value for d in delivered}

    out = tmp_path / "out"
    summary = finish(start_job(kafka_job_config(dataset, out, bootstrap, names)), out)
    assert summary["balanced"] and summary["stopped_by"] == "idle" and summary["runner"] == "PrismRunner"
    assert summary["read"] == len(delivered) == len(lines) + 60
    assert summary["duplicates"] == 60

    scored = read_topic(bootstrap, names["scored"])
    ids = [r["value"]["transaction_id"] for r in scored]
    assert len(ids) == len(set(ids)) == summary["scored"]
    assert set(ids) == valid  # every valid transaction scored exactly once
    assert all(r["key"] == r["value"]["transaction_id"] for r in scored)
    assert all(r["value"]["source"]["topic"] == names["in"] for r in scored)

    alerts = read_topic(bootstrap, names["alerts"])
    expected_alerts = {
        r["value"]["transaction_id"]: r["value"] for r in scored if r["value"]["decision"] in ALERT_DECISIONS
    }
    assert expected_alerts, "the data set has REVIEW and DECLINE records"
    assert {r["value"]["transaction_id"]: r["value"] for r in alerts} == expected_alerts
    assert len(alerts) == len(expected_alerts) == summary["alerts"]

    dead = read_topic(bootstrap, names["dead"])
    assert len(dead) == summary["dead_letters"] == len(lines) - len(valid)
    for record in dead:
        letter = record["value"]
        where = letter["source"]
        assert where["topic"] == names["in"]
        # proto3 JSON leaves out zeros: partition 0 and offset 0 are absent
        position = (int(where.get("partition", 0)), int(where.get("offset", 0)))
        assert base64.b64decode(letter["payload"]) == by_position[position]
        assert (
            record["key"] == letter.get("transaction_id")
            or record["key"] == f"{names['in']}/{position[0]}/{position[1]}"
        )


def test_a_streaming_run_serves_metrics_that_a_scrape_reads_while_records_flow(
    dataset, tmp_path, broker, expansion_jar
):
    """The job in this process (its Prism workers run here), records produced at 100 a second while
    a scraper reads /metrics twice a second: the counters grow while records flow, the consumer
    lag is there, and the endpoint's last figures equal the summary's."""
    from pipeline import runner
    from pipeline.io.kafka_expansion import free_port
    from pipeline.local import monitoring
    from tests.test_monitoring import check_against_summary, samples, scrape

    bootstrap = broker.bootstrap
    names = topics("metrics")
    kafka_tool.create_topics(bootstrap, names.values(), partitions=3)
    lines, _ = labelled_lines(dataset)
    port, out = free_port(), tmp_path / "out"
    config = kafka_job_config(dataset, out, bootstrap, names, run__metrics_port=port)
    producing = threading.Thread(target=kafka_tool.produce, args=(bootstrap, names["in"], lines, 100.0))
    seen: list = []
    stop = threading.Event()

    def scraper():  # the job runs in the main thread (Beam's job service wants it), this one scrapes
        while not stop.wait(0.5):
            text = scrape(port)
            if text is None:
                continue
            found = samples(text)
            if not producing.is_alive() and not seen:
                producing.start()  # the job is up: records flow from now, for about 30 s
            seen.append((producing.is_alive(), found))

    scraping = threading.Thread(target=scraper)
    scraping.start()
    try:
        summary = runner.run(["--config", config])
    finally:
        stop.set()
        scraping.join()
        if producing.ident is not None:
            producing.join()
    assert summary["balanced"] and summary["read"] == len(lines)
    reads = [s[("riskpipe_records_read_total", ())] for _, s in seen]
    assert reads == sorted(reads)
    flowing = [s for alive, s in seen if alive]
    assert any(0 < s[("riskpipe_records_read_total", ())] < len(lines) for s in flowing), "scraped mid-flow"
    assert any(("riskpipe_source_lag_records", ()) in s for _, s in seen)
    assert any(s.get(("riskpipe_scoring_latency_seconds_count", ()), 0) > 0 for _, s in seen)
    check_against_summary(samples(monitoring.last_exposition().decode()), summary)


def test_a_job_stopped_mid_topic_goes_on_from_the_committed_offsets(dataset, tmp_path, broker, expansion_jar):
    bootstrap = broker.bootstrap
    names = topics("restart")
    kafka_tool.create_topics(bootstrap, names.values(), partitions=3)
    lines, valid = labelled_lines(dataset)
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    first = start_job(kafka_job_config(dataset, first_out, bootstrap, names, streaming__stop_after_idle_seconds=0))

    def read_reaches(count: int) -> None:
        deadline = time.time() + 180
        live: dict = {}
        while live.get("read", 0) < count:
            assert time.time() < deadline, f"the job read {live.get('read', 0)} of {count} records in 180 s"
            assert first.poll() is None, first.communicate()[1].decode()[-3000:]
            time.sleep(0.5)
            if (first_out / "summary.json").exists():
                live = json.loads((first_out / "summary.json").read_text())

    # The feed starts once the job reads (a loaded machine may take most of a minute to start it),
    # so that the Ctrl-C below falls mid-topic however long the start took.
    kafka_tool.produce(bootstrap, names["in"], lines[:100])
    read_reaches(100)
    producing = threading.Thread(target=kafka_tool.produce, args=(bootstrap, names["in"], lines[100:], 100.0))
    producing.start()
    read_reaches(300)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: drain, mid-topic, while the producer goes on
    one = finish(first, first_out)
    assert one["stopped_by"] == "drain" and one["balanced"]
    producing.join()
    assert 0 < one["read"] < len(lines)

    two = finish(start_job(kafka_job_config(dataset, second_out, bootstrap, names)), second_out)
    assert two["stopped_by"] == "idle" and two["balanced"]
    assert one["read"] + two["read"] == len(lines)  # nothing read twice, nothing skipped
    ids = [r["value"]["transaction_id"] for r in read_topic(bootstrap, names["scored"])]
    assert len(ids) == len(set(ids)) and set(ids) == valid


def test_the_job_waits_for_a_broker_that_goes_away_and_loses_nothing(dataset, tmp_path, broker, expansion_jar):
    bootstrap = broker.bootstrap
    names = topics("bounce")
    kafka_tool.create_topics(bootstrap, names.values(), partitions=3)
    lines, valid = labelled_lines(dataset)
    out = tmp_path / "out"
    job = start_job(kafka_job_config(dataset, out, bootstrap, names, streaming__stop_after_idle_seconds=20))
    halfway = len(lines) // 2
    kafka_tool.produce(bootstrap, names["in"], lines[:halfway], rate=500.0)
    broker.stop(keep_data=True)
    time.sleep(8)  # the job's consumers and producers find no broker
    assert job.poll() is None, job.communicate()[1].decode()[-3000:]
    assert broker.start() == bootstrap  # the same broker, data and port
    kafka_tool.produce(bootstrap, names["in"], lines[halfway:], rate=500.0)
    summary = finish(job, out, timeout=400)
    assert summary["balanced"] and summary["read"] >= len(lines)
    ids = [r["value"]["transaction_id"] for r in read_topic(bootstrap, names["scored"])]
    assert set(ids) == valid and len(ids) == len(set(ids))


def test_the_job_refuses_kafka_on_a_runner_that_cannot_run_java(dataset, tmp_path):
    names = topics("refused")
    config = kafka_job_config(dataset, tmp_path / "out", "127.0.0.1:9", names)
    done = subprocess.run(
        [PYTHON, "-m", "pipeline.runner", "--config", config, "--runner=FnApiRunner"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "FnApiRunner" in done.stderr


def test_in_ci_the_broker_fixture_never_skips():
    assert not IN_CI or shutil.which("java") is not None


def test_the_lag_that_idle_stop_waits_for_counts_what_the_group_has_not_committed(broker):
    bootstrap = broker.bootstrap
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    kafka_tool.create_topics(bootstrap, [topic], partitions=2)
    delivered = kafka_tool.produce(bootstrap, topic, [b'{"transaction_id":"t-%d"}' % i for i in range(10)])
    middle = delivered[5].produced_at
    time.sleep(1.1)
    after_all = time.time()

    def pending(start: str, group: str = "") -> int:
        section = KafkaConfig(
            bootstrap_servers=bootstrap, group_id=group or f"g-{uuid.uuid4().hex}", topic=topic, start=start
        )
        lag = kafka_client.GroupLag(section, {})
        try:
            return lag.pending()
        finally:
            lag.close()

    assert pending("earliest") == 10 and pending("latest") == 0
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"  # noqa: E731
    assert pending(stamp(after_all)) == 0
    assert 0 < pending(stamp(middle)) <= 10
    group = f"g-{uuid.uuid4().hex}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    consumer.commit(
        offsets=[TopicPartition(topic, p, 100) for p in (0, 1)], asynchronous=False
    )  # past the end: nothing pending
    consumer.close()
    assert pending("earliest", group) == 0


def test_a_topic_of_two_hours_read_from_earliest_is_scored_not_late(dataset, tmp_path, broker, expansion_jar):
    """Event time comes from the data: a backlog whose event times span the two hours before now is
    on time (the partitions' watermarks follow the records), while a record an hour behind the
    records read before it in its partition is really late and follows streaming.late_policy."""
    bootstrap = broker.bootstrap
    names = topics("backlog")
    kafka_tool.create_topics(bootstrap, [names["in"]], partitions=1)
    lines, valid = labelled_lines(dataset)
    lines = lines[:3000]
    start = time.time() - 7200
    step = 7000 / len(lines)
    newest = stream_files.newest_event_time(lines)
    backlog = [
        stream_files.rebase(line, start + i * step, newest, 0.0, random.Random(i)) for i, line in enumerate(lines)
    ]
    # A valid record an hour behind the last records of the backlog: really late.
    first_valid = next(line for line in backlog if (kafka_tool.transaction_key(line) or b"").decode() in valid)
    late = dict(orjson.loads(first_valid), transaction_id="late-one")
    late["event_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 7000 - 3600))
    late_line = orjson.dumps(late)
    kafka_tool.produce(bootstrap, names["in"], [*backlog, late_line])
    out = tmp_path / "out"
    config = kafka_job_config(
        dataset,
        out,
        bootstrap,
        names,
        kafka__scored_topic=None,
        kafka__alerts_topic=None,
        kafka__dead_letter_topic=None,
        velocity__order_wait_seconds=0,
    )
    summary = finish(start_job(config), out)
    assert summary["balanced"] and summary["read"] == len(backlog) + 1
    assert summary["late_records"] == 1 and summary["dead_letters_by_code"].get("ERROR_CODE_LATE_RECORD") == 1
    scored_ids = {orjson.loads(line)["transaction_id"] for line in read_jsonl(out / "scored")}
    backlog_valid = {(kafka_tool.transaction_key(line) or b"").decode() for line in backlog} & valid
    assert backlog_valid <= scored_ids and "late-one" not in scored_ids


def test_a_lone_record_is_scored_without_waiting_for_the_next_one(dataset, tmp_path, broker, expansion_jar):
    """One record on a topic of four partitions: the three empty partitions move on with the wall
    clock instead of holding the watermark at that record's event time, so 20_dedupe and
    35_velocity (which Prism gives their records as the watermark moves) take it at once, not when
    a later record comes. The second record is sent only once the first is scored or 75 s have
    passed: the first must be out before it."""
    bootstrap = broker.bootstrap
    names = topics("lone")
    kafka_tool.create_topics(bootstrap, list(names.values()), partitions=4)
    lines, valid = labelled_lines(dataset)
    first, second = [line for line in lines if (kafka_tool.transaction_key(line) or b"").decode() in valid][:2]
    out = tmp_path / "out"
    job = start_job(kafka_job_config(dataset, out, bootstrap, names, streaming__stop_after_idle_seconds=0))
    try:
        kafka_tool.produce(bootstrap, names["in"], [first])
        early = list(kafka_tool.consume(bootstrap, names["scored"], idle_seconds=75, max_records=1))
        assert job.poll() is None, job.communicate()[1].decode()[-3000:]
        second_sent = time.time()
        kafka_tool.produce(bootstrap, names["in"], [second])
        both = list(kafka_tool.consume(bootstrap, names["scored"], idle_seconds=60, max_records=2))
    finally:
        os.killpg(job.pid, signal.SIGINT)  # Ctrl-C: drain
    summary = finish(job, out)
    assert summary["balanced"] and summary["read"] == 2
    ids = {r["key"]: r["timestamp_ms"] / 1000 for r in both}
    first_id = (kafka_tool.transaction_key(first) or b"").decode()
    assert early and early[0]["key"] == first_id, "the lone record was not scored until another came"
    assert ids[first_id] < second_sent and len(ids) == 2


def test_a_partition_that_catches_up_keeps_its_own_event_time(dataset, tmp_path, broker, expansion_jar):
    """Two days of records sent in event-time order over a few seconds to a running job (an archive
    fed again, a producer catching up): partitions are read one after another, and each reads all
    there is many times, so a partition is often quiet for a moment, by KafkaIO's estimate of its
    backlog, while the others are hours ahead of it in event time. Were such a partition's
    watermark moved to the others' latest event time, its next records would be behind it by more
    than the allowed lateness and refused as LATE_RECORD (873 of 2,000 were, before the rule
    of StoppableKafkaRead.EventTimePolicy's CATCH_UP_AFTER_MS). Every valid record is scored;
    none is late."""
    bootstrap = broker.bootstrap
    names = topics("catchup")
    kafka_tool.create_topics(bootstrap, list(names.values()), partitions=4)
    lines, valid = labelled_lines(dataset)
    lines = lines[:2000]
    start = time.time() - 2 * 86400
    step = (2 * 86400 - 3600) / len(lines)
    newest = stream_files.newest_event_time(lines)
    feed = [stream_files.rebase(line, start + i * step, newest, 0.0, random.Random(i)) for i, line in enumerate(lines)]
    first_valid = next(line for line in feed if (kafka_tool.transaction_key(line) or b"").decode() in valid)
    warm_up = dict(orjson.loads(first_valid), transaction_id="warm-up")
    warm_up["event_time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start - 1))
    out = tmp_path / "out"
    job = start_job(
        kafka_job_config(dataset, out, bootstrap, names, kafka__alerts_topic=None, streaming__stop_after_idle_seconds=0)
    )
    try:
        kafka_tool.produce(bootstrap, names["in"], [orjson.dumps(warm_up)])
        scored = list(kafka_tool.consume(bootstrap, names["scored"], idle_seconds=120, max_records=1))
        assert scored and job.poll() is None, "the job did not score its first record"
        kafka_tool.produce(bootstrap, names["in"], feed, rate=400)  # 5 s: about 10 h of event time a second
        feed_valid = {(kafka_tool.transaction_key(line) or b"").decode() for line in feed} & valid
        list(kafka_tool.consume(bootstrap, names["scored"], idle_seconds=60, max_records=len(feed_valid) + 1))
    finally:
        os.killpg(job.pid, signal.SIGINT)  # Ctrl-C: drain
    summary = finish(job, out)
    assert summary["balanced"] and summary["read"] == len(feed) + 1
    late = summary["dead_letters_by_code"].get("ERROR_CODE_LATE_RECORD", 0)
    assert summary["late_records"] == 0 and late == 0, f"{late} records refused as late"
    assert feed_valid <= {record["key"] for record in read_topic(bootstrap, names["scored"])}


def test_a_new_broker_cluster_id_never_starts_with_a_dash():
    """The storage tool's parser takes an id starting with '-' (1 in 64 of random ids) for an option
    and the broker does not start: scripts/kafka.sh draws again until it does not."""
    script = (ROOT / "scripts" / "kafka.sh").read_text()
    function = script[script.index("cluster_id() {") : script.index("\n}\n", script.index("cluster_id() {")) + 3]
    done = subprocess.run(["bash", "-c", function + "cluster_id 5000"], capture_output=True, text=True, check=True)
    ids = done.stdout.split()
    assert len(ids) == len(set(ids)) == 5000
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 and not i.startswith("-") for i in ids)
