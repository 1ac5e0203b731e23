"""Property-based tests on hostile input: 10_validate alone, then the whole job.

Whatever the bytes of a line, the job gives it exactly one outcome: a scored record, or a dead
letter with a specific code (never INTERNAL_ERROR for a malformed payload, never a crash), and the
run balances. Inputs: arbitrary bytes, arbitrary JSON values, valid records with one field mutated
(type, range, encoding, length), huge and deeply nested payloads, duplicate keys, NaN/Infinity,
BOMs, NUL bytes, lone surrogates, CR/CRLF endings. 10,000 generated records go through 10_validate
and 3,000 more through the whole job on every test run.
"""

import json
import math

import orjson
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline import runner
from pipeline.shared.clock import TIMESTAMP_MAX_SECONDS, RunClock
from pipeline.shared.dead_letter import redact
from pipeline.shared.json_codec import dead_letter_json
from pipeline.stages import s10_validate as validate
from tests.conftest import AS_OF, ROOT
from tests.helpers import GOOD, job_config, read_jsonl

FIELDS = [*GOOD, "amount.minor_units", "amount.currency"]
NOT_FOR_PAYLOADS = {ErrorCode.ERROR_CODE_INTERNAL_ERROR, ErrorCode.ERROR_CODE_UNSPECIFIED}


class Pairs(list):
    """A JSON object written from a list of (key, value) pairs, so that keys can repeat."""


def to_json(value, ascii_only: bool) -> str:
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{to_json(k, ascii_only)}:{to_json(v, ascii_only)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return to_json(Pairs(value.items()), ascii_only)
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)  # NaN, Infinity as their literals


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8


any_text = st.text(st.characters(codec=None, exclude_characters="\n"), max_size=30)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(any_text, inner, max_size=4),
        st.lists(st.tuples(st.sampled_from(list(GOOD)), inner), max_size=4).map(Pairs),
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, 10**11, 10**11 + 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.sampled_from([1e300, -0.0, 1.5, 2.0**63, 1e-320]),
    st.sampled_from(["", " ", "\x00", "\ufeff", "ｃ０", "EUR ", "fr", "2026-11-03T14:22:05", "4111111111111111"]),
    st.text(min_size=60, max_size=300),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "9", "é", "\ud800"]), st.integers(0, 5000)),
)


@st.composite
def mutated_records(draw):
    record = json.loads(json.dumps(GOOD))
    field = draw(st.sampled_from(FIELDS))
    target, name = (record["amount"], field.split(".")[1]) if "." in field else (record, field)
    if draw(st.booleans()) and draw(st.booleans()):
        del target[name]
    else:
        target[name] = draw(field_values)
    if draw(st.integers(0, 9)) == 0:
        record = Pairs([*record.items(), (draw(st.sampled_from(list(GOOD))), draw(field_values))])
    return encode(to_json(record, draw(st.booleans())))


@st.composite
def nested(draw):
    depth = draw(st.integers(1, 3000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return encode(opener * depth + "1" + closer * depth)


@st.composite
def decorated(draw, payloads):
    payload = draw(payloads)
    prefix = draw(st.sampled_from([b"", b"", b"\xef\xbb\xbf", b" ", b"\x00"]))
    suffix = draw(st.sampled_from([b"", b"", b"\r", b" \t", b"\x00"]))
    return prefix + payload + suffix


lines = decorated(
    st.one_of(
        mutated_records(),
        mutated_records(),
        st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
        json_values.flatmap(lambda v: st.booleans().map(lambda a: encode(to_json(v, a)))),
        nested(),
        st.just(orjson.dumps(GOOD)),
        st.builds(lambda n: orjson.dumps({**GOOD, "device_id": "d" * n}), st.integers(100, 300_000)),
    )
)


def check_outcome(out, payload: bytes) -> None:
    if isinstance(out, Transaction):
        assert out.origin.payload == payload
        assert 946684800 < out.event_time.seconds <= TIMESTAMP_MAX_SECONDS
        assert out.transaction_id and out.card_id and out.merchant_id and out.amount.minor_units > 0
        return
    assert isinstance(out, DeadLetter), out
    assert out.error_code not in NOT_FOR_PAYLOADS, (out.message, payload[:200])
    assert (out.payload == payload and out.violations) or out.error_code in (
        ErrorCode.ERROR_CODE_NOT_UTF8,
        ErrorCode.ERROR_CODE_MALFORMED_JSON,
        ErrorCode.ERROR_CODE_NOT_AN_OBJECT,
    )
    for policy in ("raw", "masked", "none"):
        json_format_line = dead_letter_json(redact(out, policy))
        assert "\n" not in json_format_line


PARSER = validate.TransactionParser(RunClock(AS_OF), 300)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines)
def test_every_payload_gets_exactly_one_specific_outcome_from_10_validate(line):
    payload = line.rstrip(b"\r\n")
    check_outcome(PARSER(RawRecord(payload=payload, source=SourcePosition(uri="h.jsonl", line=1))), payload)


@pytest.mark.slow
def test_the_whole_job_on_generated_hostile_input_balances_with_one_outcome_per_line_or_a_counted_duplicate(tmp_path):
    corpus: list[bytes] = []

    @settings(
        max_examples=3_000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(lines, st.sampled_from([b"\n", b"\r\n"]))
    def collect(line, ending):
        corpus.append(line + ending)

    collect()
    assert len(corpus) >= 3_000
    data = tmp_path / "data"
    data.mkdir()
    for name in ("customers.jsonl", "merchants.jsonl"):
        (data / name).write_bytes((ROOT / "data" / "sample" / name).read_bytes())
    (data / "transactions.jsonl").write_bytes(b"".join(corpus))
    non_blank = {
        number
        for number, line in enumerate(corpus, start=1)
        if (line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line).rstrip(b"\r\n").strip()
    }

    out = tmp_path / "out"
    summary = runner.run(["--config", job_config(data, out)], test_pipeline=TestPipeline(runner="FnApiRunner"))
    assert summary["balanced"] and summary["exit_code"] == 0
    assert summary["read"] == len(non_blank) and summary["blank_lines_skipped"] == len(corpus) - len(non_blank)
    assert "ERROR_CODE_INTERNAL_ERROR" not in summary["dead_letters_by_code"]
    outcomes: dict[int, list[str]] = {}
    for line in read_jsonl(out / "scored"):
        scored = orjson.loads(line)
        assert 0.0 <= scored.get("score", 0.0) <= 1.0 and not math.isnan(scored.get("score", 0.0))
        outcomes.setdefault(int(scored["source"]["line"]), []).append("scored")
    for line in read_jsonl(out / "dead_letters"):
        letter = orjson.loads(line)
        outcomes.setdefault(int(letter["source"]["line"]), []).append(letter["error_code"])
    # A line whose transaction (all but where it was read) repeats an earlier one is a redelivery:
    # 20_dedupe drops and counts it.
    assert set(outcomes) <= non_blank
    dropped = non_blank - set(outcomes)
    assert len(dropped) == summary["duplicates"]
    assert all(len(found) == 1 for found in outcomes.values()), {k: v for k, v in outcomes.items() if len(v) > 1}
