"""20_dedupe in batch, on the FnApiRunner: redeliveries dropped and counted, conflicts refused,
the first copy chosen the same way whatever the order the copies come in."""

from __future__ import annotations

import itertools

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from contracts.riskpipe.v1.dead_letter_pb2 import ErrorCode
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared import metrics
from pipeline.stages import s20_dedupe as dedupe
from tests.helpers import transaction


def run_dedupe(clock, txns, horizon=3600):
    p = TestPipeline(runner="FnApiRunner")
    timed = (
        p
        | beam.Create(txns)
        | beam.Map(
            lambda t: beam.window.TimestampedValue(t, t.event_time.seconds + t.event_time.nanos / 1e9)
        ).with_output_types(Transaction)
    )
    kept, refused = timed | dedupe.Dedupe(horizon, clock)
    got: dict = {}
    kept_view = kept | "KeptKey" >> beam.Map(lambda t: (t.transaction_id, t.origin.source.line, t.amount.minor_units))
    refused_view = refused | "RefusedKey" >> beam.Map(
        lambda d: (d.transaction_id, d.source.line, ErrorCode.Name(d.error_code))
    )
    got["kept"], got["refused"] = kept_view, refused_view
    return p, got


def collect(p, got, expected_kept, expected_refused):
    assert_that(got["kept"], equal_to(expected_kept), label="kept")
    assert_that(got["refused"], equal_to(expected_refused), label="refused")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name(metrics.DUPLICATES_DROPPED))["counters"]
    return sum(c.committed for c in counters)


def test_a_redelivery_is_dropped_and_counted_and_a_conflict_is_a_dead_letter(clock):
    txns = [
        transaction("a", line=1),
        transaction("a", line=7),  # the same content again: a redelivery
        transaction("b", line=2),
        transaction("b", line=9, minor=9999),  # same id, other amount: a producer fault
        transaction("c", line=3),
    ]
    p, got = run_dedupe(clock, txns)
    duplicates = collect(
        p,
        got,
        [("a", 1, 5000), ("b", 2, 5000), ("c", 3, 5000)],
        [("b", 9, "ERROR_CODE_TRANSACTION_ID_CONFLICT")],
    )
    assert duplicates == 1


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_first_copy_is_chosen_by_event_time_then_source_position_in_any_order(clock, order):
    copies = [
        transaction("x", line=5, seconds=1793712125, minor=100),
        transaction("x", line=2, seconds=1793712130, minor=200),  # later event time: not first
        transaction("x", line=9, seconds=1793712125, minor=300),  # same time, later line: not first
    ]
    p, got = run_dedupe(clock, [copies[i] for i in order])
    collect(
        p,
        got,
        [("x", 5, 100)],
        [("x", 2, "ERROR_CODE_TRANSACTION_ID_CONFLICT"), ("x", 9, "ERROR_CODE_TRANSACTION_ID_CONFLICT")],
    )


def test_the_fingerprint_ignores_where_a_copy_was_read_and_nothing_else():
    first = transaction("a", line=1)
    again = transaction("a", line=99)
    again.origin.source.uri = "other.jsonl"
    again.late = True
    assert dedupe.fingerprint(first) == dedupe.fingerprint(again)
    changed = transaction("a", line=1)
    changed.device_id = "d-2"
    assert dedupe.fingerprint(first) != dedupe.fingerprint(changed)


def test_in_batch_a_copy_beyond_the_horizon_of_event_time_is_a_new_record_as_in_streaming(clock):
    txns = [
        transaction("h", line=1, seconds=1793712125),
        transaction("h", line=2, seconds=1793712125 + 7200),  # two hours later: after a one-hour horizon
        transaction("h", line=3, seconds=1793712125 + 7200),  # a redelivery of that one
    ]
    p, got = run_dedupe(clock, txns, horizon=3600)
    assert collect(p, got, [("h", 1, 5000), ("h", 2, 5000)], []) == 1
