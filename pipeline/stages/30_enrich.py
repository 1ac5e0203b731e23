"""30_enrich: Transaction -> EnrichedTransaction, joining the customer and merchant profiles.

In:  Transaction; side inputs: customer profiles by card_id, merchant profiles by merchant_id,
     read from the reference files (JSONL, one profile per line, contract CustomerProfile /
     MerchantProfile in proto3 JSON; unknown fields are ignored).
Out: EnrichedTransaction with both profiles. Under missing_profile_policy=default a missing
     profile is replaced by an empty default one and named in `missing_profiles`.
Dead letters (stage 30_enrich):
  PROFILE_NOT_FOUND   a profile is missing and missing_profile_policy=dead_letter
A reference row that is not UTF-8, does not parse or breaks the profile's rules is not a
transaction: it is left out of the lookup, counted (reference_rows_rejected) and logged, and the
run goes on. A UTF-8 byte-order mark at the start of a file is not part of its first row.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping

import apache_beam as beam
import protovalidate
from apache_beam.io.filesystems import FileSystems
from google.protobuf import json_format

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode, FieldViolation
from contracts.riskpipe.v1.enriched_transaction_pb2 import (
    CustomerProfile,
    EnrichedTransaction,
    MerchantProfile,
    ProfileKind,
)
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import StageFn, apply_stage, make_dead_letter

STAGE = "30_enrich"
POLICIES = ("default", "dead_letter")
_LOG = logging.getLogger(__name__)


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"missing_profile_policy must be one of {POLICIES}, got {policy!r}")


class ProfileParser:
    """One JSONL reference row -> (key, profile), or None when the row is unusable."""

    def __init__(self, message_type: type, key_field: str):
        self._type = message_type
        self._key = key_field
        self._validator = protovalidate.Validator()

    def __call__(self, row: bytes | str) -> tuple[str, object] | None:
        if isinstance(row, bytes):
            try:
                row = row.decode("utf-8")
            except UnicodeDecodeError as exc:
                _LOG.warning("%s: rejected reference row %.200r: not UTF-8: %s", self._type.__name__, row, exc)
                return None
        line = row.removeprefix("\ufeff")
        if not line.strip():
            return None
        profile = self._type()
        try:
            json_format.Parse(line, profile, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            _LOG.warning("%s: rejected reference row %.200r: %s", self._type.__name__, line, exc)
            return None
        violations = self._validator.collect_violations(profile)
        if violations:
            _LOG.warning(
                "%s: rejected reference row %.200r: %s",
                self._type.__name__,
                line,
                "; ".join(v.proto.message for v in violations),
            )
            return None
        return getattr(profile, self._key), profile


def read_profile_file(path: str, message_type: type, key_field: str) -> dict[str, object]:
    """A whole reference file as key -> profile, without Beam (training, the benchmark's loop)."""
    parse = ProfileParser(message_type, key_field)
    with FileSystems.open(path) as f:
        return dict(p for p in map(parse, f) if p is not None)


class ParseProfilesFn(beam.DoFn):
    def __init__(self, message_type: type, key_field: str):
        self._type = message_type
        self._key = key_field

    def setup(self) -> None:
        self._parse = ProfileParser(self._type, self._key)
        self._rejected = metrics.counter(metrics.REFERENCE_ROWS_REJECTED)

    def process(self, row: bytes) -> Iterator[tuple[str, object]]:
        parsed = self._parse(row)
        if parsed is None:
            if row.strip().removeprefix(b"\xef\xbb\xbf"):
                self._rejected.inc()
            return
        yield parsed


class ProfileJoiner:
    """Transaction + profile lookups -> EnrichedTransaction or DeadLetter."""

    def __init__(self, policy: str, clock: RunClock):
        check_policy(policy)
        self._policy = policy
        self._clock = clock
        self._default_customer = metrics.counter(metrics.DEFAULT_PROFILE_USED_PREFIX + "customer")
        self._default_merchant = metrics.counter(metrics.DEFAULT_PROFILE_USED_PREFIX + "merchant")

    def __call__(
        self,
        txn: Transaction,
        customers: Mapping[str, CustomerProfile],
        merchants: Mapping[str, MerchantProfile],
    ) -> EnrichedTransaction | DeadLetter:
        customer = customers.get(txn.card_id)
        merchant = merchants.get(txn.merchant_id)
        if customer is not None and merchant is not None:
            return EnrichedTransaction(transaction=txn, customer=customer, merchant=merchant)
        if self._policy == "dead_letter":
            violations = []
            if customer is None:
                violations.append(
                    FieldViolation(
                        field_path="card_id",
                        rule_id="riskpipe.customer_profile_exists",
                        message="no customer profile for this card",
                        value=txn.card_id,
                    )
                )
            if merchant is None:
                violations.append(
                    FieldViolation(
                        field_path="merchant_id",
                        rule_id="riskpipe.merchant_profile_exists",
                        message="no merchant profile",
                        value=txn.merchant_id,
                    )
                )
            return make_dead_letter(
                STAGE,
                ErrorCode.ERROR_CODE_PROFILE_NOT_FOUND,
                "; ".join(f"{v.field_path} {v.value}: {v.message}" for v in violations),
                txn.origin,
                self._clock.timestamp(),
                violations,
                txn.transaction_id,
            )
        missing = []
        if customer is None:
            customer = CustomerProfile(card_id=txn.card_id)
            missing.append(ProfileKind.PROFILE_KIND_CUSTOMER)
            self._default_customer.inc()
        if merchant is None:
            merchant = MerchantProfile(merchant_id=txn.merchant_id)
            missing.append(ProfileKind.PROFILE_KIND_MERCHANT)
            self._default_merchant.inc()
        return EnrichedTransaction(transaction=txn, customer=customer, merchant=merchant, missing_profiles=missing)


class ReadProfiles(beam.PTransform):
    """A reference file -> (key, profile) pairs."""

    def __init__(self, path: str, message_type: type, key_field: str):
        super().__init__()
        self._path = path
        self._type = message_type
        self._key = key_field

    def expand(self, pbegin):
        return (
            pbegin
            # Bytes, not text: a row that is not UTF-8 is rejected by the parser, not a crashed job.
            | "ReadRows" >> beam.io.ReadFromText(self._path, coder=beam.coders.BytesCoder())
            | "ParseRows"
            >> beam.ParDo(ParseProfilesFn(self._type, self._key)).with_output_types(tuple[str, self._type])
        )


class Enrich(beam.PTransform):
    """Transactions -> (EnrichedTransactions, DeadLetters)."""

    def __init__(self, customers_path: str, merchants_path: str, policy: str, clock: RunClock):
        super().__init__()
        check_policy(policy)
        self._customers_path = customers_path
        self._merchants_path = merchants_path
        self._policy = policy
        self._clock = clock

    def expand(self, transactions: beam.PCollection):
        p = transactions.pipeline
        customers = p | "ReadCustomers" >> ReadProfiles(self._customers_path, CustomerProfile, "card_id")
        merchants = p | "ReadMerchants" >> ReadProfiles(self._merchants_path, MerchantProfile, "merchant_id")
        policy, clock = self._policy, self._clock
        fn = StageFn(STAGE, functools.partial(ProfileJoiner, policy, clock), clock)
        return apply_stage(
            transactions,
            "JoinProfiles",
            fn,
            EnrichedTransaction,
            side_inputs=(beam.pvalue.AsDict(customers), beam.pvalue.AsDict(merchants)),
        )
