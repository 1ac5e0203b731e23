"""Dataflow, up to submission: Dataflow itself cannot be reached from here.

- The job's Dataflow job description, built by Beam's DataflowRunner with --dry_run (nothing is
  submitted), for the batch shape (files in, BigQuery out) and the streaming shape (Pub/Sub in,
  BigQuery out): the job type, every stage's step, the workers' container image, and no transform
  or environment Dataflow refuses.
- The BigQuery table schemas are the contracts' fields, and the rows the sinks write fit them, as
  Beam's own Storage Write API conversion reads them.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import apache_beam as beam
import pytest
from apache_beam.coders import RowCoder
from apache_beam.io.gcp import bigquery_tools
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.typehints.row_type import RowTypeConstraint
from apache_beam.utils.timestamp import Timestamp as BeamTimestamp
from google.protobuf.descriptor import FieldDescriptor

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.enriched_transaction_pb2 import FeatureVector, ProfileKind
from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, Reason, ScoredTransaction
from pipeline import config as job_config_module
from pipeline import launch, runner
from pipeline import summary as run_summary
from pipeline.io import bigquery
from pipeline.stages import STAGES
from pipeline.stages import s60_sink as sink
from tests.conftest import ROOT
from tests.helpers import DATAFLOW_IMAGE, dataflow_dry_run, job_config, typed_config

SCORED_TABLE = "riskpipe-test:fraud.scored"
DEAD_TABLE = "riskpipe-test:fraud.dead_letters"

# URNs that only a local runner runs: a Dataflow job holding one is refused.
LOCAL_ONLY = {"beam:transform:teststream:v1", "beam:transform:read:v1"}
JOB_TYPE_BATCH, JOB_TYPE_STREAMING = 1, 2


def check_dataflow_accepts(job) -> dict[str, beam_runner_api_pb2.PTransform]:
    """The steps of a job description, after checking what Dataflow would refuse; by name."""
    pipeline = job.proto_pipeline
    transforms = pipeline.components.transforms
    leaves = [t for t in transforms.values() if not t.subtransforms]
    refused = [t.unique_name for t in leaves if t.spec.urn in LOCAL_ONLY or not t.spec.urn]
    assert not refused, f"transforms Dataflow does not run: {refused}"
    for environment in pipeline.components.environments.values():
        assert environment.urn == "beam:env:docker:v1"  # no LOOPBACK or embedded workers
        assert beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image == DATAFLOW_IMAGE
    for leaf in leaves:
        if leaf.spec.urn == "beam:transform:pardo:v1":
            assert leaf.environment_id in pipeline.components.environments
    (root,) = pipeline.root_transform_ids
    return {transforms[t].unique_name: transforms[t] for t in transforms[root].subtransforms}


def names_under(job, step: str) -> list[str]:
    return [t.unique_name for t in job.proto_pipeline.components.transforms.values() if t.unique_name.startswith(step)]


@pytest.mark.slow
def test_the_batch_job_description_for_dataflow(dataset, tmp_path):
    config = job_config(
        dataset,
        tmp_path / "out",
        bigquery__scored_table=SCORED_TABLE,
        bigquery__dead_letter_table=DEAD_TABLE,
    )
    _, job = dataflow_dry_run(config, "--input=gs://riskpipe-test/transactions/*.jsonl")
    assert job.proto.type == JOB_TYPE_BATCH
    steps = check_dataflow_accepts(job)
    assert [s for s in STAGES if s in steps] == list(STAGES)  # every stage is a step, the velocity one too
    assert any("WriteToBigQuery" in n for n in names_under(job, "60_sink/"))
    assert any("WriteToBigQuery" in n for n in names_under(job, "90_dead_letter/"))
    assert not any("WriteJsonl" in n for n in names_under(job, "60_sink/"))  # BigQuery instead of files


@pytest.mark.slow
def test_the_streaming_job_description_for_dataflow(dataset, tmp_path):
    config = job_config(
        dataset,
        tmp_path / "out",
        source__kind="pubsub",
        pubsub__subscription="projects/riskpipe-test/subscriptions/transactions",
        bigquery__scored_table=SCORED_TABLE,
        bigquery__dead_letter_table=DEAD_TABLE,
        run__as_of=None,
    )
    _, job = dataflow_dry_run(config, "--streaming")
    assert job.proto.type == JOB_TYPE_STREAMING
    steps = check_dataflow_accepts(job)
    assert [s for s in STAGES if s in steps] == list(STAGES)
    urns = {t.spec.urn for t in job.proto_pipeline.components.transforms.values()}
    assert "beam:transform:pubsub_read:v1" in urns
    assert any("WriteToBigQuery" in n for n in names_under(job, "60_sink/"))
    # Rows BigQuery refuses (streaming inserts) come back as 60_sink's dead letters.
    transforms = job.proto_pipeline.components.transforms
    (rejected,) = [t for t in transforms.values() if t.unique_name == "60_sink/RejectedByBigQuery"]
    (flatten,) = [t for t in transforms.values() if t.unique_name == "AllDeadLetters"]
    (sink_out,) = steps["60_sink"].outputs.values()
    assert sink_out in flatten.inputs.values()
    (refused_flatten,) = [t for t in transforms.values() if t.unique_name == "60_sink/Refused"]
    assert set(rejected.outputs.values()) <= set(refused_flatten.inputs.values())


def test_the_storage_write_api_is_what_the_sinks_ask_for_where_configured():
    # Expanding it needs Beam's Java GCP expansion service, fetched when the job is built on
    # Dataflow's launcher; here only the transform's configuration is checked.
    write = bigquery.write(bigquery.TableSink(SCORED_TABLE, "storage_write_api"), ScoredTransaction.DESCRIPTOR, True)
    assert write.method == beam.io.WriteToBigQuery.Method.STORAGE_WRITE_API
    assert write.create_disposition == beam.io.BigQueryDisposition.CREATE_IF_NEEDED
    assert write.write_disposition == beam.io.BigQueryDisposition.WRITE_APPEND
    auto = bigquery.TableSink(SCORED_TABLE)
    assert bigquery.write(auto, ScoredTransaction.DESCRIPTOR, False).method == beam.io.WriteToBigQuery.Method.FILE_LOADS
    inserts = bigquery.write(auto, ScoredTransaction.DESCRIPTOR, True)
    assert inserts.method == beam.io.WriteToBigQuery.Method.STREAMING_INSERTS
    assert inserts.insert_retry_strategy == "RETRY_ON_TRANSIENT_ERROR"  # refused rows come back
    assert not bigquery.reports_refusals(auto, False) and bigquery.reports_refusals(auto, True)


def field_names(descriptor) -> list:
    names: list = []
    for field in descriptor.fields:
        message = field.message_type
        if message is None or message.full_name == "google.protobuf.Timestamp":
            names.append(field.name)
        else:
            names.append((field.name, field_names(message)))
    return names


def schema_names(fields) -> list:
    return [(f["name"], schema_names(f["fields"])) if f["type"] == "RECORD" else f["name"] for f in fields]


@pytest.mark.parametrize("message", [ScoredTransaction, DeadLetter])
def test_the_table_schemas_are_the_contracts_fields(message):
    schema = bigquery.table_schema(message.DESCRIPTOR)
    assert schema_names(schema["fields"]) == field_names(message.DESCRIPTOR)
    by_name = {f["name"]: f for f in schema["fields"]}
    for field in message.DESCRIPTOR.fields:
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
        assert by_name[field.name]["mode"] == ("REPEATED" if repeated else "NULLABLE"), field.name


def scored() -> ScoredTransaction:
    s = ScoredTransaction(
        transaction_id="t-1",
        card_id="card-9",
        merchant_id="m-3",
        score=0.93,
        decision=Decision.DECISION_DECLINE,
        model_version="v2",
        reasons=[Reason(feature="amount_ratio", contribution=0.4)],
        missing_profiles=[ProfileKind.PROFILE_KIND_MERCHANT],
        features=FeatureVector(feature_set_version="fs-v2", names=["a", "b"], values=[1.5, 2.0]),
        late=True,
    )
    s.amount.minor_units = 1250
    s.amount.currency = "EUR"
    s.event_time.FromDatetime(dt.datetime(2026, 11, 15, 10, 30, 0, 250000))
    s.source.uri = "gs://riskpipe-test/transactions/a.jsonl"
    s.source.line = 7
    return s


def letter() -> DeadLetter:
    d = DeadLetter(
        stage="10_validate",
        error_code=ErrorCode.ERROR_CODE_MALFORMED_JSON,
        message="not JSON",
        payload=b"\xff{not json",
        attributes={"origin": "issuer-7", "b": "2"},
    )
    d.failed_at.FromDatetime(dt.datetime(2026, 11, 15, 10, 31, 0))
    d.violations.add(field_path="amount", rule_id="required", message="missing", value="")
    return d


def test_rows_for_the_json_write_methods_fit_the_schema():
    row = bigquery.to_row(scored())
    assert row["decision"] == "DECISION_DECLINE" and row["missing_profiles"] == ["PROFILE_KIND_MERCHANT"]
    assert row["event_time"] == "2026-11-15T10:30:00.250Z" and row["scored_at"] is None  # unset: NULL, not the epoch
    assert row["amount"] == {"minor_units": 1250, "currency": "EUR"}
    assert row["features"] == {"feature_set_version": "fs-v2", "names": ["a", "b"], "values": [1.5, 2.0]}
    assert row["reasons"] == [{"feature": "amount_ratio", "contribution": 0.4, "value": 0.0}]
    dead = bigquery.to_row(letter())
    assert base64.b64decode(dead["payload"]) == b"\xff{not json"
    assert dead["attributes"] == [{"key": "b", "value": "2"}, {"key": "origin", "value": "issuer-7"}]
    assert dead["error_code"] == "ERROR_CODE_MALFORMED_JSON" and dead["violations"][0]["rule_id"] == "required"
    unset = bigquery.to_row(ScoredTransaction(transaction_id="t-2"))
    assert unset["amount"] is None and unset["features"] is None and unset["score"] == 0.0


@pytest.mark.parametrize("message", [scored(), letter(), ScoredTransaction(transaction_id="t-2")])
def test_rows_for_the_storage_write_api_are_what_beam_converts_and_encodes(message):
    schema = bigquery_tools.get_bq_tableschema(bigquery.table_schema(message.DESCRIPTOR))
    row = bigquery.to_row(message, storage_write=True)
    beam_row = bigquery_tools.beam_row_from_dict(row, schema)  # what WriteToBigQuery does before the Java write
    row_type = RowTypeConstraint.from_fields(bigquery_tools.get_beam_typehints_from_tableschema(schema))
    coder = RowCoder.from_type_hint(row_type, None)
    data = coder.encode(beam_row)  # fails on a value the schema's type does not allow
    decoded = coder.decode(data)
    assert coder.encode(decoded) == data
    first = message.DESCRIPTOR.fields[0].name
    assert getattr(decoded, first) == getattr(message, first)
    for field in message.DESCRIPTOR.fields:
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            assert isinstance(row[field.name], BeamTimestamp) or (
                row[field.name] is None and not message.HasField(field.name)
            )


def test_bigquery_tables_are_checked_before_the_job(dataset, tmp_path):
    def refused(**overrides) -> str:
        with pytest.raises(job_config_module.ConfigError) as caught:
            typed_config(dataset, tmp_path / "out", **overrides)
        return str(caught.value)

    assert "bigquery.scored_table" in refused(bigquery__scored_table="scored")
    assert "bigquery.dead_letter_table" in refused(bigquery__dead_letter_table="a b.c")
    kafka = {"kafka__scored_topic": "scored", "kafka__bootstrap_servers": "127.0.0.1:9092"}
    assert "not both" in refused(bigquery__scored_table=SCORED_TABLE, **kafka)
    assert "bigquery.method" in refused(bigquery__method="fast")
    for table in ("riskpipe-test:fraud.scored", "riskpipe-test.fraud.scored", "fraud.scored", "example.com:p-1:d.t"):
        config = typed_config(dataset, tmp_path / "out", bigquery__scored_table=table)
        assert launch.written_to(config)["scored"] == f"bigquery table {table}"


@pytest.mark.slow
def test_a_dataflow_run_refuses_a_folder_its_workers_cannot_reach(capsys):
    options = [
        "--config",
        str(ROOT / "config.yaml"),
        "--runner=DataflowRunner",
        "--project=riskpipe-test",
        "--region=europe-west1",
        "--temp_location=gs://riskpipe-test/tmp",
        "--dry_run=true",
    ]
    assert runner.main(options) == run_summary.EXIT_CONFIG
    assert "give a gs:// folder" in capsys.readouterr().err
    # Both outputs in BigQuery: no folder needed.
    tables = [f"--bigquery_scored_table={SCORED_TABLE}", f"--bigquery_dead_letter_table={DEAD_TABLE}"]
    assert runner.main([*options, *tables]) == run_summary.EXIT_OK
    out = capsys.readouterr().out
    assert "nothing submitted" in out and f"bigquery table {SCORED_TABLE}" in out


@pytest.mark.parametrize(
    "failure",
    [
        # streaming inserts: (table, row, errors)
        (
            "riskpipe-test:fraud.scored",
            bigquery.to_row(scored()),
            [{"reason": "invalid", "message": "no such field: extra"}],
        ),
        # Storage Write API: the row comes back as a Beam Row, with the error's text
        {
            "error_message": "no such field: extra",
            "failed_row": bigquery_tools.beam_row_from_dict(
                bigquery.to_row(scored(), storage_write=True),
                bigquery_tools.get_bq_tableschema(bigquery.table_schema(ScoredTransaction.DESCRIPTOR)),
            ),
        },
    ],
)
def test_a_row_bigquery_refuses_is_a_sink_rejected_dead_letter(failure, clock):
    letter = sink.RejectedRow(clock)(failure)
    assert letter.stage == "60_sink" and letter.error_code == ErrorCode.ERROR_CODE_SINK_REJECTED
    assert "no such field: extra" in letter.message and letter.transaction_id == "t-1"
    row = json.loads(letter.payload)
    assert row["transaction_id"] == "t-1" and row["amount"] == {"minor_units": 1250, "currency": "EUR"}
    assert row["event_time"].startswith("2026-11-15T10:30:00.25")
    assert letter.source.uri == "gs://riskpipe-test/transactions/a.jsonl" and letter.source.line == 7


def test_a_dead_letter_bigquery_refuses_is_logged_and_taken_off_the_count(caplog):
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipeline.stages import s90_dead_letter as dead_letter_sink

    failure = (DEAD_TABLE, bigquery.to_row(letter()), [{"reason": "invalid", "message": "row too large"}])
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | beam.Create([failure]) | beam.ParDo(dead_letter_sink.RejectedLetterFn())
    with caplog.at_level("ERROR"):
        result = p.run()
        result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("riskpipe"))["counters"]
    }
    assert counters["dead_letters_rejected_by_sink"] == 1 and counters["dead_letters_written"] == -1
    assert counters["dead_letters.ERROR_CODE_MALFORMED_JSON"] == -1
    assert "row too large" in caplog.text and "10_validate" in caplog.text
