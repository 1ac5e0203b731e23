"""60_sink and 90_dead_letter: proto3 JSON lines, Parquet, and the dead-letter stage guard."""

import base64
import glob
import pickle

import apache_beam as beam
import orjson
import pyarrow.parquet as pq
import pytest
from apache_beam.coders import ProtoCoder
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.protobuf import json_format

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode, FieldViolation
from contracts.riskpipe.v1.enriched_transaction_pb2 import ProfileKind
from contracts.riskpipe.v1.raw_record_pb2 import SourcePosition
from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, ScoredTransaction
from contracts.riskpipe.v1.transaction_pb2 import Money
from pipeline.shared import json_codec
from pipeline.shared.dead_letter import StageFn, apply_stage, make_dead_letter
from pipeline.shared.json_codec import dead_letter_json, scored_json, timestamp_text
from pipeline.stages import s60_sink as sink
from pipeline.stages import s90_dead_letter as dead_letter_sink
from tests.helpers import transaction


def scored(i=1, nanos=0, missing=()):
    s = ScoredTransaction(
        transaction_id=f"t-{i}",
        card_id="c-1",
        merchant_id="m-1",
        amount=Money(minor_units=1234 + i, currency="JPY"),
        score=0.125 * (i % 8),
        decision=Decision.DECISION_REVIEW,
        model_version="m",
        thresholds_version="t",
        feature_set_version="fs-v1",
        missing_profiles=missing,
    )
    s.event_time.seconds, s.event_time.nanos = 1793712125 + i, nanos
    s.scored_at.seconds = 1794700000
    s.source.uri, s.source.line = "in.jsonl", i
    return s


def test_scored_json_is_the_proto3_json_mapping():
    samples = [
        scored(0),
        scored(3, nanos=5_000_000),
        scored(4, nanos=123_456_000, missing=[ProfileKind.PROFILE_KIND_CUSTOMER]),
        scored(5, nanos=7),
        ScoredTransaction(transaction_id="bare"),
    ]
    for partition, offset in ((0, 0), (3, 0), (0, 9_000_000_000), (2, 17)):  # a Kafka record's position
        kafka = scored(6)
        kafka.source.Clear()
        kafka.source.topic, kafka.source.partition, kafka.source.offset = "in", partition, offset
        samples.append(kafka)
    pubsub = scored(7)
    pubsub.source.Clear()
    pubsub.source.message_id = "m-1"
    samples.append(pubsub)
    for s in samples:
        assert orjson.loads(scored_json(s)) == json_format.MessageToDict(s, preserving_proto_field_name=True)
        assert json_format.Parse(scored_json(s), ScoredTransaction()) == s


def test_the_source_position_encoder_knows_every_field_of_the_contract():
    fields = [(f.name, f.type in (f.TYPE_INT64, f.TYPE_UINT64)) for f in SourcePosition.DESCRIPTOR.fields]
    assert fields == list(json_codec._SOURCE_FIELDS)


def test_timestamp_text():
    s = scored(0, nanos=120_000_000)
    assert timestamp_text(s.event_time) == "2026-11-03T13:22:05.120Z"


def test_dead_letter_json_round_trips_with_payload_bytes(clock):
    letter = make_dead_letter(
        "10_validate",
        ErrorCode.ERROR_CODE_NOT_UTF8,
        "bad bytes",
        transaction().origin,
        clock.timestamp(),
        [FieldViolation(field_path="x", rule_id="r", value="v")],
    )
    letter.payload = b"\xff\x00raw"
    parsed = orjson.loads(dead_letter_json(letter))
    assert base64.b64decode(parsed["payload"]) == b"\xff\x00raw"
    assert parsed["error_code"] == "ERROR_CODE_NOT_UTF8"
    assert json_format.Parse(dead_letter_json(letter), DeadLetter()) == letter


def test_write_scored_writes_jsonl_and_parquet(tmp_path, clock):
    from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, Reason

    records = [scored(i) for i in range(1, 6)]
    records[0].reasons.extend([Reason(feature="v_count_1h", value=7.0, contribution=2.5)])
    records[1].shadow.model_version, records[1].shadow.score = "challenger", 0.25
    records[1].shadow.decision = Decision.DECISION_APPROVE
    with TestPipeline(runner="FnApiRunner") as p:
        dead = p | beam.Create(records) | sink.WriteScored(str(tmp_path), 0, True, clock)
        assert_that(dead, equal_to([]))
    lines = [orjson.loads(line) for f in glob.glob(str(tmp_path / "scored" / "*.jsonl")) for line in open(f, "rb")]
    assert sorted(row["transaction_id"] for row in lines) == [f"t-{i}" for i in range(1, 6)]
    table = pq.ParquetDataset(str(tmp_path / "scored_parquet")).read().to_pylist()
    assert sorted((r["transaction_id"], r["amount_minor_units"], r["decision"]) for r in table) == [
        (f"t-{i}", 1234 + i, "DECISION_REVIEW") for i in range(1, 6)
    ]
    by_id = {r["transaction_id"]: r for r in table}
    assert by_id["t-1"]["reasons"] == [{"feature": "v_count_1h", "value": 7.0, "contribution": 2.5}]
    assert by_id["t-2"]["shadow"] == {"model_version": "challenger", "score": 0.25, "decision": "DECISION_APPROVE"}
    assert by_id["t-3"]["reasons"] == [] and by_id["t-3"]["shadow"] is None
    as_json = {row["transaction_id"]: row for row in lines}
    assert as_json["t-1"]["reasons"] == [{"feature": "v_count_1h", "value": 7.0, "contribution": 2.5}]
    assert as_json["t-2"]["shadow"] == {"model_version": "challenger", "score": 0.25, "decision": "DECISION_APPROVE"}
    assert "reasons" not in as_json["t-3"] and "shadow" not in as_json["t-3"]


def test_write_dead_letters_writes_every_letter(tmp_path, clock):
    letters = [
        make_dead_letter(
            "10_validate", ErrorCode.ERROR_CODE_MALFORMED_JSON, f"m{i}", transaction(line=i).origin, clock.timestamp()
        )
        for i in range(3)
    ]
    with TestPipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create(letters) | dead_letter_sink.WriteDeadLetters(str(tmp_path), 1)
    rows = [json_format.Parse(line, DeadLetter()) for line in open(glob.glob(str(tmp_path / "dead_letters/*"))[0])]
    assert sorted(r.message for r in rows) == ["m0", "m1", "m2"]


def _explode(txn):
    if txn.transaction_id == "t-bad":
        raise ZeroDivisionError("boom")
    return txn


def test_stage_guard_turns_an_unexpected_exception_into_an_internal_error(clock):
    with TestPipeline(runner="FnApiRunner") as p:
        main, dead = apply_stage(
            p | beam.Create([transaction("t-ok"), transaction("t-bad", line=9)]),
            "Guarded",
            StageFn("99_test", lambda: _explode, clock),
            object,
        )
        assert_that(main | beam.Map(lambda t: t.transaction_id), equal_to(["t-ok"]), label="main")

        def check(letters):
            (letter,) = letters
            assert letter.error_code == ErrorCode.ERROR_CODE_INTERNAL_ERROR and letter.stage == "99_test"
            assert letter.exception_type == "builtins.ZeroDivisionError"
            assert "ZeroDivisionError: boom" in letter.stacktrace and "_explode" in letter.stacktrace
            assert letter.source.line == 9 and letter.transaction_id == "t-bad"
            # plain data only: survives the proto coder and pickling
            assert ProtoCoder(DeadLetter).decode(ProtoCoder(DeadLetter).encode(letter)) == letter
            assert pickle.loads(pickle.dumps(letter)) == letter

        assert_that(dead, check, label="dead")


# --- card numbers never travel in clear -------------------------------------------------------

PAN_PAYLOAD = b'{"transaction_id": "t-9", "card_id": "4111 1111 1111 1111", "note": "5500-0000-0000-0004"}'


def pan_letter(clock):
    from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition

    return make_dead_letter(
        "10_validate",
        ErrorCode.ERROR_CODE_RULE_VIOLATION,
        "card_id: is a card number in clear (4111 1111 1111 1111)",
        RawRecord(payload=PAN_PAYLOAD, source=SourcePosition(uri="in.jsonl", line=3)),
        clock.timestamp(),
        [FieldViolation(field_path="card_id", rule_id="riskpipe.pan_in_clear", value="4111 1111 1111 1111")],
    )


@pytest.mark.parametrize(
    ("policy", "payload"),
    [
        ("raw", PAN_PAYLOAD),
        ("masked", b'{"transaction_id": "t-9", "card_id": "4111 11** **** 1111", "note": "5500-00**-****-0004"}'),
        ("none", b""),
    ],
)
def test_written_dead_letters_mask_card_numbers_and_keep_the_payload_by_policy(tmp_path, clock, policy, payload):
    with TestPipeline(runner="FnApiRunner") as p:
        _ = p | beam.Create([pan_letter(clock)]) | dead_letter_sink.WriteDeadLetters(str(tmp_path), 1, policy)
    (line,) = open(glob.glob(str(tmp_path / "dead_letters/*"))[0], encoding="utf-8").read().splitlines()
    assert "4111 1111 1111 1111" not in line and "5500-0000-0000-0004" not in line
    written = json_format.Parse(line, DeadLetter())
    assert written.payload_text == (
        '{"transaction_id": "t-9", "card_id": "4111 11** **** 1111", "note": "5500-00**-****-0004"}'
    )
    assert written.violations[0].value == "4111 11** **** 1111"
    assert "4111 11** **** 1111" in written.message
    assert written.payload == payload


def test_masking_keeps_what_is_not_a_card_number(clock):
    from pipeline.shared.card_numbers import mask_pans, mask_pans_bytes

    text = '{"t": "2026-11-03T14:22:05Z", "amount": 12345678901234, "id": "t0042-00001234", "x": "4111111111111112"}'
    assert mask_pans(text) == text
    assert mask_pans("pan 4111111111111111 end") == "pan 411111******1111 end"
    assert mask_pans_bytes(b"\xff4111111111111111") == b"\xff411111******1111"
