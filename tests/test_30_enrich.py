"""30_enrich: profiles joined from reference files; the missing-profile policy; bad reference rows."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.protobuf import json_format

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.enriched_transaction_pb2 import (
    CustomerProfile,
    EnrichedTransaction,
    MerchantProfile,
    ProfileKind,
)
from pipeline.stages import s30_enrich as enrich
from tests.helpers import customer, merchant, transaction


def _jsonl(path, messages, extra_lines=()):
    lines = [json_format.MessageToJson(m, indent=None, preserving_proto_field_name=True) for m in messages]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return str(path)


@pytest.fixture
def reference(tmp_path):
    customers = _jsonl(
        tmp_path / "customers.jsonl",
        [customer("c-1"), customer("c-2", country="DE")],
        extra_lines=['{"card_id": "c-3", "home_lat": 123}', "not json", '{"card_id": ""}'],
    )
    merchants = _jsonl(tmp_path / "merchants.jsonl", [merchant("m-1")], extra_lines=['{"merchant_id": "m-9", "x": 1}'])
    return customers, merchants


def test_joiner_attaches_both_profiles(clock):
    join = enrich.ProfileJoiner("default", clock)
    out = join(transaction(), {"c-1": customer()}, {"m-1": merchant()})
    assert isinstance(out, EnrichedTransaction)
    assert out.customer.home_country == "FR" and out.merchant.risk_score == pytest.approx(0.02)
    assert list(out.missing_profiles) == []
    assert out.transaction.origin.source.line == 1


def test_default_policy_uses_an_empty_profile_and_says_which(clock):
    join = enrich.ProfileJoiner("default", clock)
    out = join(transaction(card="c-404", merchant="m-404"), {}, {})
    assert list(out.missing_profiles) == [ProfileKind.PROFILE_KIND_CUSTOMER, ProfileKind.PROFILE_KIND_MERCHANT]
    assert out.customer.card_id == "c-404" and out.merchant.merchant_id == "m-404"


def test_dead_letter_policy_refuses_with_profile_not_found(clock):
    join = enrich.ProfileJoiner("dead_letter", clock)
    letter = join(transaction(card="c-404"), {}, {"m-1": merchant()})
    assert isinstance(letter, DeadLetter)
    assert letter.error_code == ErrorCode.ERROR_CODE_PROFILE_NOT_FOUND and letter.stage == "30_enrich"
    assert [(v.field_path, v.value) for v in letter.violations] == [("card_id", "c-404")]
    assert letter.transaction_id == "t-1" and letter.payload == transaction().origin.payload


def test_unknown_policy_is_refused(clock):
    with pytest.raises(ValueError, match="missing_profile_policy"):
        enrich.ProfileJoiner("guess", clock)


def test_profile_parser_rejects_rows_that_break_the_profile_rules():
    parse = enrich.ProfileParser(CustomerProfile, "card_id")
    assert parse('{"card_id": "c-3", "home_lat": 123}') is None
    assert parse("{") is None
    assert parse('{"card_id": "c-1", "home_country": "FR", "unknown_field": 1}')[0] == "c-1"
    assert parse('{"card_id": "c-1"}') is None  # home_country is two letters
    assert enrich.ProfileParser(MerchantProfile, "merchant_id")('{"merchant_id": "m", "risk_score": 2}') is None


@pytest.mark.parametrize("policy", ["default", "dead_letter"])
def test_enrich_transform_joins_side_inputs(reference, clock, policy):
    customers, merchants = reference
    txns = [transaction("t-1", card="c-1"), transaction("t-2", card="c-2"), transaction("t-3", card="c-3")]
    with TestPipeline(runner="FnApiRunner") as p:
        enriched, dead = p | beam.Create(txns) | enrich.Enrich(customers, merchants, policy, clock)
        if policy == "default":
            expected = [("t-1", "FR", ()), ("t-2", "DE", ()), ("t-3", "", (ProfileKind.PROFILE_KIND_CUSTOMER,))]
            dead_expected = []
        else:
            expected = [("t-1", "FR", ()), ("t-2", "DE", ())]
            dead_expected = [("t-3", "ERROR_CODE_PROFILE_NOT_FOUND")]
        assert_that(
            enriched
            | beam.Map(lambda e: (e.transaction.transaction_id, e.customer.home_country, tuple(e.missing_profiles))),
            equal_to(expected),
            label="enriched",
        )
        assert_that(
            dead | beam.Map(lambda d: (d.transaction_id, ErrorCode.Name(d.error_code))),
            equal_to(dead_expected),
            label="dead",
        )


def test_joining_is_idempotent(clock):
    join = enrich.ProfileJoiner("default", clock)
    for txn in (transaction(), transaction(card="c-404")):
        assert join(txn, {"c-1": customer()}, {"m-1": merchant()}) == join(
            txn, {"c-1": customer()}, {"m-1": merchant()}
        )
