"""Pub/Sub: there is no emulator here. The graph is built for the DataflowRunner (nothing is
submitted: Beam's dry run), and what the job does around the read runs on Prism with a TestStream
of Pub/Sub messages in its place."""

from __future__ import annotations

import base64
import datetime as dt

import apache_beam as beam
import orjson
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage, WriteToPubSub
from apache_beam.pipeline import PipelineVisitor
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from pipeline import config as job_config_module
from pipeline import graph
from pipeline import options as job_options
from pipeline import summary as run_summary
from pipeline.io import messages
from pipeline.io import pubsub as pubsub_io
from pipeline.local import runners
from tests.conftest import AS_OF
from tests.helpers import GOOD, dataflow_dry_run, job_config, read_jsonl

SUBSCRIPTION = "projects/riskpipe-test/subscriptions/transactions"
ALERTS = "projects/riskpipe-test/topics/alerts"


def pubsub_config(dataset, out, **overrides):
    settings = {
        "source__kind": "pubsub",
        "pubsub__subscription": SUBSCRIPTION,
        "pubsub__id_label": "txn_uuid",
        "pubsub__timestamp_attribute": "event_ms",
        "pubsub__alerts_topic": ALERTS,
        "streaming__window_seconds": 10,
        "run__as_of": None,
    }
    settings.update(overrides)
    return job_config(dataset, out, **settings)


def message(txn_id: str, event: float, message_id: str, **changes) -> PubsubMessage:
    obj = dict(GOOD, transaction_id=txn_id, **changes)
    obj["event_time"] = dt.datetime.fromtimestamp(event, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return PubsubMessage(orjson.dumps(obj), {"origin": "issuer-7"}, message_id=message_id)


@pytest.mark.slow
def test_the_graph_builds_for_dataflow_with_the_subscription_id_label_and_alerts_topic(dataset, tmp_path):
    config_path = pubsub_config(dataset, tmp_path / "out")
    p, _ = dataflow_dry_run(config_path)  # the job is translated for Dataflow, nothing is submitted

    transforms = p.to_runner_api().components.transforms.values()
    (read_transform,) = [t for t in transforms if t.spec.urn == "beam:transform:pubsub_read:v1"]
    read = beam_runner_api_pb2.PubSubReadPayload.FromString(read_transform.spec.payload)
    assert read.subscription == SUBSCRIPTION and read.id_attribute == "txn_uuid"
    assert read.timestamp_attribute == "event_ms" and read.with_attributes

    writes: list = []

    class FindWrites(PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, WriteToPubSub):
                writes.append(node)

    p.visit(FindWrites())
    (write,) = writes
    assert write.full_label.endswith("WriteAlertsToPubSub")
    assert write.transform.full_topic == ALERTS and write.transform.with_attributes


def test_pubsub_needs_a_named_runner_and_a_well_formed_subscription(dataset, tmp_path):
    config = job_config_module.load(pubsub_config(dataset, tmp_path / "out"))
    with pytest.raises(job_config_module.ConfigError, match="DataflowRunner"):
        runners.choose_runner(job_options.parse_options([]), config.is_streaming, config.uses_kafka, config.source.kind)
    with pytest.raises(job_config_module.ConfigError, match="projects/PROJECT/subscriptions/NAME"):
        job_config_module.load(pubsub_config(dataset, tmp_path / "out2", pubsub__subscription="transactions"))
    with pytest.raises(job_config_module.ConfigError, match="projects/PROJECT/topics/NAME"):
        job_config_module.load(pubsub_config(dataset, tmp_path / "out3", pubsub__alerts_topic="alerts"))


def test_messages_become_records_with_their_id_and_attributes_and_flow_through_the_job(
    dataset, tmp_path, clock, prism_binary
):
    out = tmp_path / "out"
    out.mkdir()
    t0 = int(AS_OF.timestamp()) - 86400
    stream = (
        TestStream()
        .advance_watermark_to(Timestamp(t0))
        .add_elements(
            [
                beam.window.TimestampedValue(message("p-1", t0 + 1, "m-1"), t0 + 1),
                beam.window.TimestampedValue(message("p-2", t0 + 2, "m-2"), t0 + 2),
                # Pub/Sub redelivers without id_label (here: the read is replaced): 20_dedupe drops it.
                beam.window.TimestampedValue(message("p-1", t0 + 1, "m-3"), t0 + 3),
                beam.window.TimestampedValue(PubsubMessage(b"not json", {"origin": "issuer-7"}, "m-4"), t0 + 4),
            ]
        )
        .advance_watermark_to_infinity()
    )
    config = job_config_module.load(pubsub_config(dataset, out, pubsub__alerts_topic=None))
    options = job_options.parse_options(["--runner=PrismRunner"])
    runners.choose_runner(options, streaming=True)
    p = TestPipeline(runner="PrismRunner", options=options)
    raw, _ = p | "Stream" >> stream | "FromPubSub" >> messages.MessagesToRecords(pubsub_io.pubsub_raw_record, clock)
    graph.build_pipeline(p, config, graph.Model("v-test"), graph.Run(run_id="r1"), raw_records=raw)
    result = p.run()
    result.wait_until_finish()

    summary = run_summary.summarize(result)
    assert summary["read"] == 4 and summary["scored"] == 2 and summary["duplicates"] == 1
    assert summary["dead_letters"] == 1 and summary["balanced"]
    scored = {row["transaction_id"]: row for row in map(orjson.loads, read_jsonl(out / "scored"))}
    assert scored["p-1"]["source"] == {"message_id": "m-1"} and scored["p-2"]["source"] == {"message_id": "m-2"}
    (letter,) = map(orjson.loads, read_jsonl(out / "dead_letters"))
    assert letter["source"] == {"message_id": "m-4"} and letter["attributes"] == {"origin": "issuer-7"}
    assert base64.b64decode(letter["payload"]) == b"not json"
