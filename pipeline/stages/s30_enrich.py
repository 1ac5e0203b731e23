"""30_enrich: Transaction -> EnrichedTransaction, joining the customer and merchant profiles.

In:  Transaction; side inputs: customer profiles by card_id, merchant profiles by merchant_id,
     read from the reference files (JSONL, one profile per line, contract CustomerProfile /
     MerchantProfile in proto3 JSON; unknown fields are ignored).
Out: EnrichedTransaction with both profiles. Under missing_profile_policy=default a missing
     profile is replaced by an empty default one and named in `missing_profiles`.
     With a profile store (enrich.backend postgres, pipeline/shared/profile_store.py) the
     profiles are looked up instead: one query per profile kind for a batch of records (up to
     enrich.postgres.batch_size, never held past the bundle), through the worker's LRU/TTL cache.
Dead letters (stage 30_enrich):
  PROFILE_NOT_FOUND             a profile is missing and missing_profile_policy=dead_letter
  PROFILE_STORE_UNAVAILABLE     the store did not answer a lookup the record needs, after the
                                retries; the record is unchanged, to replay once the store is back
A reference row that is not UTF-8, does not parse or breaks the profile's rules is not a
transaction: it is left out of the lookup, counted (reference_rows_rejected) and logged, and the
run goes on. A UTF-8 byte-order mark at the start of a file is not part of its first row.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

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
from pipeline.config import PostgresConfig
from pipeline.io import profile_store
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import DEAD_LETTER, StageFn, apply_stage, internal_error, make_dead_letter

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
        self._rejected = f"{message_type.__name__}: rejected reference row"

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
        profile = profile_store.parse_profile(
            self._type,
            lambda p: json_format.Parse(line, p, ignore_unknown_fields=True),
            self._validator,
            self._rejected,
            line,
        )
        return None if profile is None else (getattr(profile, self._key), profile)


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


class StoreJoiner:
    """A batch of Transactions -> EnrichedTransactions or DeadLetters, the profiles from the
    profile store: the keys the worker's cache does not hold are fetched with one query per
    profile kind. A failed lookup fails only the records that needed one of its keys; the next
    batch tries the store again. `metric(kind, name)` gives a counter or distribution (Beam's in
    the job, plain tallies in the benchmark's loop)."""

    def __init__(
        self,
        settings: PostgresConfig,
        policy: str,
        clock: RunClock,
        metric: Callable[[str, str], Any] = lambda kind, name: (
            metrics.counter(name) if kind == "counter" else metrics.distribution(name)
        ),
    ):
        self._join = ProfileJoiner(policy, clock)
        self._clock = clock
        latency = metric("distribution", metrics.STORE_QUERY_MS)
        self.store = profile_store.ProfileStore(
            settings,
            on_query=lambda ms: latency.update(round(ms)),
            on_retry=metric("counter", metrics.STORE_RETRIES).inc,
            on_rejected=metric("counter", metrics.REFERENCE_ROWS_REJECTED).inc,
        )
        self._caches = {kind.name: profile_store.worker_cache(settings, kind) for kind in profile_store.KINDS}
        self._lookups, self._queries, self._keys, self._hits, self._misses, self._failures, self._internal_errors = (
            metric("counter", name)
            for name in (
                metrics.STORE_LOOKUPS,
                metrics.STORE_QUERIES,
                metrics.STORE_KEYS_FETCHED,
                metrics.STORE_CACHE_HITS,
                metrics.STORE_CACHE_MISSES,
                metrics.STORE_FAILURES,
                f"{STAGE}.internal_errors",
            )
        )

    def __call__(self, txns: Sequence[Transaction]) -> list[EnrichedTransaction | DeadLetter]:
        self._lookups.inc(len(txns))
        found: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        for kind in profile_store.KINDS:  # a profile's key is the transaction field of its name
            found[kind.name], reason = self._lookup(kind, {getattr(t, kind.key) for t in txns})
            if reason:
                failed[kind.name] = reason
        # What the joiner sees: a key the store has no profile for is absent, as with the files.
        present = {name: {k: v for k, v in profiles.items() if v is not None} for name, profiles in found.items()}
        out: list[EnrichedTransaction | DeadLetter] = []
        for txn in txns:
            try:
                out.append(self._join_one(txn, found, failed, present))
            except Exception as exc:  # noqa: BLE001 - every unexpected failure becomes a dead letter
                self._internal_errors.inc()
                out.append(internal_error(STAGE, txn, exc, self._clock.timestamp()))
        return out

    def _lookup(self, kind: profile_store.ProfileKind, keys: set[str]) -> tuple[dict[str, Any], str]:
        """The profiles of `keys` from the cache, the rest from the store; a non-empty reason when
        the store failed (the keys it could not answer are then absent from the result)."""
        cache = self._caches[kind.name]
        result: dict[str, Any] = {}
        wanted = []
        for key in keys:
            value = cache.get(key)
            if value is profile_store.MISS:
                wanted.append(key)
            else:
                result[key] = value
        self._hits.inc(len(result))
        if not wanted:
            return result, ""
        self._misses.inc(len(wanted))
        self._queries.inc()
        self._keys.inc(len(wanted))
        try:
            fetched = self.store.fetch(kind, sorted(wanted))
        except profile_store.StoreUnavailableError as exc:
            self._failures.inc()
            _LOG.warning("%s: %s lookup of %d key(s) failed: %s", STAGE, kind.name, len(wanted), exc)
            return result, str(exc)
        cache.put_all(fetched.items())
        result.update(fetched)
        return result, ""

    def _join_one(
        self,
        txn: Transaction,
        found: dict[str, dict[str, Any]],
        failed: dict[str, str],
        present: dict[str, dict[str, Any]],
    ) -> EnrichedTransaction | DeadLetter:
        unanswered = [kind for kind in profile_store.KINDS if getattr(txn, kind.key) not in found[kind.name]]
        if unanswered:
            return make_dead_letter(
                STAGE,
                ErrorCode.ERROR_CODE_PROFILE_STORE_UNAVAILABLE,
                "profile store unavailable: "
                + "; ".join(f"{kind.name} lookup {failed[kind.name]}" for kind in unanswered),
                txn.origin,
                self._clock.timestamp(),
                [
                    FieldViolation(
                        field_path=kind.key,
                        rule_id="riskpipe.profile_store_available",
                        message=f"the {kind.name} profile could not be looked up",
                        value=getattr(txn, kind.key),
                    )
                    for kind in unanswered
                ],
                txn.transaction_id,
            )
        return self._join(txn, present["customers"], present["merchants"])


class StoreJoinFn(beam.DoFn):
    """StoreJoiner in the job: records are held until batch_size of them are waiting or the bundle
    ends, never longer; each leaves with its own timestamp and window."""

    def __init__(self, settings: PostgresConfig, policy: str, clock: RunClock):
        check_policy(policy)
        self._settings = settings
        self._policy = policy
        self._clock = clock

    def setup(self) -> None:
        self._joiner = StoreJoiner(self._settings, self._policy, self._clock)
        self._held: list[Any] = []
        reason = self._joiner.store.try_connect()
        if reason is not None:  # not fatal: every lookup tries again
            _LOG.warning("%s: the profile store is not reachable yet: %s", STAGE, reason)

    def teardown(self) -> None:
        self._joiner.store.close()

    def start_bundle(self) -> None:
        self._held = []

    def process(self, txn: Transaction, held=beam.DoFn.WindowedValueParam):
        self._held.append(held)
        if len(self._held) >= self._settings.batch_size:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self) -> Iterator[Any]:
        held, self._held = self._held, []
        if not held:
            return
        for windowed, out in zip(held, self._joiner([w.value for w in held]), strict=True):
            if isinstance(out, DeadLetter):
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, windowed.with_value(out))
            else:
                yield windowed.with_value(out)


class Enrich(beam.PTransform):
    """Transactions -> (EnrichedTransactions, DeadLetters): profiles from the reference files
    (side inputs) or, when `store` is given, from the profile store."""

    def __init__(
        self,
        customers_path: str | None,
        merchants_path: str | None,
        policy: str,
        clock: RunClock,
        store: PostgresConfig | None = None,
    ):
        super().__init__()
        check_policy(policy)
        if store is None and not (customers_path and merchants_path):
            raise ValueError("the files backend needs both reference files")
        self._customers_path = customers_path or ""
        self._merchants_path = merchants_path or ""
        self._policy = policy
        self._clock = clock
        self._store = store

    def expand(self, transactions: beam.PCollection):
        if self._store is not None:
            return apply_stage(
                transactions, "LookUpProfiles", StoreJoinFn(self._store, self._policy, self._clock), EnrichedTransaction
            )
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
