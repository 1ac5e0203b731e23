"""10_validate: bytes -> Transaction, every dead-letter code it can emit, every violation listed."""

import copy
import datetime as dt

import apache_beam as beam
import orjson
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from contracts.riskpipe.v1.transaction_pb2 import Channel, Transaction
from pipeline.stages import s10_validate as validate
from tests.helpers import GOOD


def raw(payload, line=7) -> RawRecord:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawRecord(payload=data, source=SourcePosition(uri="in.jsonl", line=line))


def variant(**changes):
    record = copy.deepcopy(GOOD)
    for path, value in changes.items():
        target = record
        *parents, leaf = path.split("__")
        for name in parents:
            target = target[name]
        if value is KeyError:
            del target[leaf]
        else:
            target[leaf] = value
    return record


@pytest.fixture(scope="module")
def parse(request):
    from pipeline.shared.clock import RunClock
    from tests.conftest import AS_OF

    return validate.TransactionParser(RunClock(AS_OF), max_future_skew_seconds=300)


def test_valid_record_becomes_a_transaction_carrying_its_origin(parse):
    txn = parse(raw(GOOD))
    assert isinstance(txn, Transaction)
    assert txn.amount.minor_units == 1999 and txn.amount.currency == "EUR"
    assert txn.channel == Channel.CHANNEL_ECOMMERCE
    utc = dt.datetime(2026, 11, 3, 13, 22, 5, tzinfo=dt.UTC)  # 14:22:05.25 at +01:00
    assert txn.event_time.seconds == int(utc.timestamp()) and txn.event_time.nanos == 250_000_000
    assert txn.origin.payload == orjson.dumps(GOOD) and txn.origin.source.line == 7


def test_channel_accepts_the_enum_name_too(parse):
    assert parse(raw(variant(channel="CHANNEL_ATM"))).channel == Channel.CHANNEL_ATM


CASES = [
    ("not_utf8", b'{"transaction_id": "\xff"}', ErrorCode.ERROR_CODE_NOT_UTF8, []),
    ("broken_json", b'{"transaction_id": "t-1",', ErrorCode.ERROR_CODE_MALFORMED_JSON, []),
    ("empty_object_text", b"nul", ErrorCode.ERROR_CODE_MALFORMED_JSON, []),
    ("array", b"[1, 2]", ErrorCode.ERROR_CODE_NOT_AN_OBJECT, []),
    ("string", b'"hello"', ErrorCode.ERROR_CODE_NOT_AN_OBJECT, []),
    (
        "decimal_amount",
        variant(amount__minor_units="19.99"),
        ErrorCode.ERROR_CODE_WRONG_TYPE,
        [("amount.minor_units", "riskpipe.wrong_type")],
    ),
    (
        "float_amount",
        variant(amount__minor_units=19.99),
        ErrorCode.ERROR_CODE_WRONG_TYPE,
        [("amount.minor_units", "riskpipe.wrong_type")],
    ),
    ("amount_not_object", variant(amount=1999), ErrorCode.ERROR_CODE_WRONG_TYPE, [("amount", "riskpipe.wrong_type")]),
    ("numeric_card", variant(card_id=42), ErrorCode.ERROR_CODE_WRONG_TYPE, [("card_id", "riskpipe.wrong_type")]),
    (
        "bad_timestamp",
        variant(event_time="03/11/2026 14:22"),
        ErrorCode.ERROR_CODE_UNPARSEABLE_VALUE,
        [("event_time", "riskpipe.timestamp_format")],
    ),
    (
        "naive_timestamp",
        variant(event_time="2026-11-03T14:22:05"),
        ErrorCode.ERROR_CODE_UNPARSEABLE_VALUE,
        [("event_time", "riskpipe.timestamp_format")],
    ),
    (
        "unknown_channel",
        variant(channel="TELEPATHY"),
        ErrorCode.ERROR_CODE_UNPARSEABLE_VALUE,
        [("channel", "riskpipe.enum_name")],
    ),
    ("missing_card", variant(card_id=KeyError), ErrorCode.ERROR_CODE_MISSING_FIELD, [("card_id", "required")]),
    ("empty_merchant", variant(merchant_id=""), ErrorCode.ERROR_CODE_MISSING_FIELD, [("merchant_id", "required")]),
    (
        "missing_amount_units",
        variant(amount__minor_units=KeyError),
        ErrorCode.ERROR_CODE_MISSING_FIELD,
        [("amount.minor_units", "required")],
    ),
    ("missing_amount", variant(amount=KeyError), ErrorCode.ERROR_CODE_MISSING_FIELD, [("amount", "required")]),
    (
        "missing_event_time",
        variant(event_time=KeyError),
        ErrorCode.ERROR_CODE_MISSING_FIELD,
        [("event_time", "required")],
    ),
    (
        "unknown_currency",
        variant(amount__currency="EUX"),
        ErrorCode.ERROR_CODE_RULE_VIOLATION,
        [("amount.currency", "string.in")],
    ),
    (
        "currency_without_minor_unit",
        variant(amount__currency="XAU"),
        ErrorCode.ERROR_CODE_RULE_VIOLATION,
        [("amount.currency", "string.in")],
    ),
    ("lowercase_country", variant(country="fr"), ErrorCode.ERROR_CODE_RULE_VIOLATION, [("country", "string.in")]),
    ("unknown_country", variant(country="QQ"), ErrorCode.ERROR_CODE_RULE_VIOLATION, [("country", "string.in")]),
    (
        "zero_amount",
        variant(amount__minor_units=0),
        ErrorCode.ERROR_CODE_RULE_VIOLATION,
        [("amount.minor_units", "int64.gt_lte")],
    ),
    ("bad_mcc", variant(mcc="54a1"), ErrorCode.ERROR_CODE_RULE_VIOLATION, [("mcc", "string.pattern")]),
    (
        "id_with_space",
        variant(transaction_id="t 1"),
        ErrorCode.ERROR_CODE_RULE_VIOLATION,
        [("transaction_id", "string.pattern")],
    ),
    (
        "before_2000",
        variant(event_time="1999-12-31T23:59:59Z"),
        ErrorCode.ERROR_CODE_RULE_VIOLATION,
        [("event_time", "timestamp.gt")],
    ),
    (
        "far_future",
        variant(event_time="2099-01-01T00:00:00Z"),
        ErrorCode.ERROR_CODE_EVENT_TIME_IN_FUTURE,
        [("event_time", "riskpipe.event_time.max_future_skew")],
    ),
]


@pytest.mark.parametrize(("payload", "code", "violations"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_records_carry_code_violations_and_original_bytes(parse, payload, code, violations):
    letter = parse(raw(payload))
    assert isinstance(letter, DeadLetter), letter
    assert ErrorCode.Name(letter.error_code) == ErrorCode.Name(code)
    assert [(v.field_path, v.rule_id) for v in letter.violations] == violations
    assert letter.stage == "10_validate"
    assert letter.payload == raw(payload).payload
    assert letter.source.uri == "in.jsonl" and letter.source.line == 7
    assert letter.message and letter.contract_version == "riskpipe.v1" and letter.attempt == 1


def test_every_problem_of_a_record_is_listed_and_the_worst_names_the_code(parse):
    letter = parse(raw(variant(amount__minor_units="12", country="QQ", mcc=KeyError, channel="PIGEON")))
    assert letter.error_code == ErrorCode.ERROR_CODE_WRONG_TYPE
    assert sorted((v.field_path, v.rule_id) for v in letter.violations) == [
        ("amount.minor_units", "riskpipe.wrong_type"),
        ("channel", "riskpipe.enum_name"),
        ("country", "string.in"),
        ("mcc", "required"),
    ]
    country = next(v for v in letter.violations if v.field_path == "country")
    assert country.value == "QQ" and "ISO-3166" in country.message


def test_skew_inside_the_allowance_is_accepted(parse):
    assert isinstance(parse(raw(variant(event_time="2026-11-15T00:04:00Z"))), Transaction)
    assert isinstance(parse(raw(variant(event_time="2026-11-15T00:06:00Z"))), DeadLetter)


def test_parsing_is_idempotent(parse):
    for payload in (GOOD, variant(country="QQ"), b"{"):
        assert parse(raw(payload)) == parse(raw(payload))


def test_validate_transform_routes_to_main_and_dead_letter_outputs(clock):
    records = [raw(GOOD, line=1), raw(b"{", line=2), raw(variant(transaction_id="t-2", country="QQ"), line=3)]
    with TestPipeline(runner="FnApiRunner") as p:
        transactions, dead = p | beam.Create(records) | validate.Validate(clock, 300)
        assert_that(transactions | beam.Map(lambda t: t.transaction_id), equal_to(["t-1"]), label="main")
        assert_that(
            dead | beam.Map(lambda d: (d.source.line, ErrorCode.Name(d.error_code))),
            equal_to([(2, "ERROR_CODE_MALFORMED_JSON"), (3, "ERROR_CODE_RULE_VIOLATION")]),
            label="dead",
        )


# --- RFC 3339, exactly ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [
        ("2026-11-03t14:22:05z", 1793715725, 0),
        ("2026-11-03T14:22:05.123456789Z", 1793715725, 123456789),
        ("2026-11-03T14:22:05.1Z", 1793715725, 100_000_000),
        ("2026-11-03T15:22:05+01:00", 1793715725, 0),
        ("2026-11-03T14:22:05-00:00", 1793715725, 0),
        # a leap second is the last nanosecond of its UTC day (Timestamps have no leap seconds)
        ("2016-12-31T23:59:60Z", 1483228799, 999_999_999),
        ("2016-12-31T18:59:60.5-05:00", 1483228799, 999_999_999),
    ],
)
def test_rfc3339_forms_are_accepted_to_the_nanosecond(parse, text, seconds, nanos):
    txn = parse(raw(variant(event_time=text)))
    assert isinstance(txn, Transaction), txn
    assert (txn.event_time.seconds, txn.event_time.nanos) == (seconds, nanos)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-03X14:22:05Z",  # another separator than T
        "2026-11-03 14:22:05Z",
        "20261103T142205Z",  # ISO 8601 basic format
        "2026-W45-2T14:22:05Z",  # week date
        "2026-307T14:22:05Z",  # ordinal date
        "2026-11-03T14Z",  # hour only
        "2026-11-03T14:22Z",  # no seconds
        "2026-11-03T14:22:05+0100",  # offset without colon
        "2026-11-03T14:22:05+01",
        "2026-11-03T14:22:05,5Z",  # decimal comma
        "2026-11-03T14:22:05.Z",
        "2026-11-03T14:22:05.1234567891Z",  # finer than a nanosecond
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-11-03T24:00:00Z",
        "2026-11-03T12:59:60Z",  # a leap second only ends a UTC day
        "٢٠٢٦-11-03T14:22:05Z",  # non-ASCII digits
        "+2026-11-03T14:22:05Z",
    ],
)
def test_iso8601_forms_that_are_not_rfc3339_are_unparseable(parse, text):
    letter = parse(raw(variant(event_time=text)))
    assert isinstance(letter, DeadLetter)
    assert letter.error_code == ErrorCode.ERROR_CODE_UNPARSEABLE_VALUE
    assert [(v.field_path, v.rule_id) for v in letter.violations] == [("event_time", "riskpipe.timestamp_format")]


# --- card numbers in clear -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("card_id", "4111111111111111"),
        ("card_id", "4111-1111-1111-1111"),
        ("card_id", "5500 0000 0000 0004"),
        ("card_id", "378282246310005"),  # 15 digits
        ("device_id", "6011000990139424"),
        ("card_id", "4222222222222"),  # 13 digits
    ],
)
def test_a_card_number_in_clear_is_refused_with_its_own_rule(parse, field, value):
    letter = parse(raw(variant(**{field: value})))
    assert isinstance(letter, DeadLetter)
    assert letter.error_code == ErrorCode.ERROR_CODE_RULE_VIOLATION
    assert (field, "riskpipe.pan_in_clear") in [(v.field_path, v.rule_id) for v in letter.violations]


@pytest.mark.parametrize("value", ["4111111111111112", "c0000042", "123456789012", "41111111111111111111"])
def test_tokens_that_only_look_numeric_are_not_card_numbers(parse, value):
    assert isinstance(parse(raw(variant(card_id=value))), Transaction)


# --- bad records are not a denial of service ----------------------------------------------------


def test_unknown_codes_are_refused_without_asking_protovalidate_to_list_every_code(parse, monkeypatch):
    """protovalidate spends ~0.5 ms writing out the 165-value `in` list of a miss; the stage checks
    the contract's list itself first, so the validator never sees an unknown code."""
    seen = []

    class Spy:
        def __init__(self, validator):
            self._validator = validator

        def collect_violations(self, message):
            seen.append((message.amount.currency, message.country))
            return self._validator.collect_violations(message)

    monkeypatch.setattr(parse, "_validator", Spy(parse._validator))
    letter = parse(raw(variant(amount__currency="EUX", country="QQ")))
    assert [(v.field_path, v.rule_id, v.value) for v in letter.violations] == [
        ("amount.currency", "string.in", "EUX"),
        ("country", "string.in", "QQ"),
    ]
    assert seen == [("", "")]


def test_the_stage_checks_the_contracts_own_in_lists():
    from pipeline.shared.reference import countries, currency_minor_units

    assert frozenset(currency_minor_units()) == validate._CURRENCIES
    assert countries() == validate._COUNTRIES
