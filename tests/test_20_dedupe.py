"""20_dedupe in batch, on the FnApiRunner: redeliveries dropped and counted, conflicts refused,
the first copy chosen the same way whatever the order the copies come in. In streaming on Prism:
the same under streaming.order event_time; on arrival (the default) the first copy to come is kept
at once, and the rest is the same; an id is forgotten only past its horizon. Kept in files
(pipeline/io/shard_files.py), a restarted stage still knows the ids its last run kept: a
redelivery is a duplicate, and the kept copy read again from its own position is kept again."""

from __future__ import annotations

import itertools

import apache_beam as beam
import pytest
from apache_beam.coders import ProtoCoder
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from contracts.riskpipe.v1.dead_letter_pb2 import ErrorCode
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.io.shard_files import ShardFiles
from pipeline.local import runners
from pipeline.shared import metrics
from pipeline.stages import s20_dedupe as dedupe
from tests.helpers import FakeBag, FakeValue, transaction


def at(t: Transaction) -> float:
    return t.event_time.seconds + t.event_time.nanos / 1e9


def run_dedupe(clock, txns, horizon=3600, order=None):
    """Batch on the FnApiRunner, or with `order` streaming on Prism: the copies come one by one in
    the order given (a watermark step, behind all of them, between two)."""
    if order is None:
        p = TestPipeline(runner="FnApiRunner")
        timed = p | beam.Create(txns) | beam.Map(lambda t: beam.window.TimestampedValue(t, at(t)))
    else:
        options = PipelineOptions(["--runner=PrismRunner"])
        runners.choose_runner(options, streaming=True)
        options.view_as(StandardOptions).streaming = True
        p = TestPipeline(runner="PrismRunner", options=options)
        start = min(t.event_time.seconds for t in txns) - 100
        stream = TestStream(coder=ProtoCoder(Transaction)).advance_watermark_to(Timestamp(start))
        for i, txn in enumerate(txns):
            stream = stream.add_elements([beam.window.TimestampedValue(txn, at(txn))])
            stream = stream.advance_watermark_to(Timestamp(start + 1 + i))
        timed = p | stream.advance_watermark_to_infinity()
    timed = timed | "Typed" >> beam.Map(lambda t: t).with_output_types(Transaction)
    kept, refused = timed | dedupe.Dedupe(horizon, clock, order=order or "arrival", shards=3)
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


@pytest.mark.parametrize("order", [None, "arrival", "event_time"])
def test_a_redelivery_is_dropped_and_counted_and_a_conflict_is_a_dead_letter(clock, order, request):
    if order is not None:
        request.getfixturevalue("prism_binary")
    txns = [
        transaction("a", line=1),
        transaction("a", line=7),  # the same content again: a redelivery
        transaction("b", line=2),
        transaction("b", line=9, minor=9999),  # same id, other amount: a producer fault
        transaction("c", line=3),
    ]
    p, got = run_dedupe(clock, txns, order=order)
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


@pytest.mark.parametrize("order", [None, "arrival"])
def test_a_copy_beyond_the_horizon_of_event_time_is_a_new_record_in_batch_and_streaming(clock, order, request):
    if order is not None:
        request.getfixturevalue("prism_binary")
    txns = [
        transaction("h", line=1, seconds=1793712125),
        transaction("h", line=2, seconds=1793712125 + 7200),  # two hours later: after a one-hour horizon
        transaction("h", line=3, seconds=1793712125 + 7200),  # a redelivery of that one
    ]
    p, got = run_dedupe(clock, txns, horizon=3600, order=order)
    assert collect(p, got, [("h", 1, 5000), ("h", 2, 5000)], []) == 1


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 2, 0), (2, 0, 1)])
def test_on_arrival_the_first_copy_to_come_is_kept_at_once(clock, prism_binary, order):
    copies = [
        transaction("x", line=5, seconds=1793712125, minor=100),
        transaction("x", line=2, seconds=1793712130, minor=200),
        transaction("x", line=9, seconds=1793712125, minor=100),  # a redelivery of the first
    ]
    came = [copies[i] for i in order]
    p, got = run_dedupe(clock, came, order="arrival")
    first = came[0]
    kept = [("x", first.origin.source.line, first.amount.minor_units)]
    # The others: a redelivery of the kept copy is counted; one with other content is a conflict.
    conflicts = [
        ("x", t.origin.source.line, "ERROR_CODE_TRANSACTION_ID_CONFLICT")
        for t in came[1:]
        if dedupe.fingerprint(t) != dedupe.fingerprint(first)
    ]
    assert collect(p, got, kept, conflicts) == 2 - len(conflicts)


def test_an_id_is_forgotten_only_once_the_shard_has_seen_its_horizon_and_the_margin_pass():
    hour = 3_600_000_000
    ids = dedupe.IdsShard(horizon_micros=hour, margin_micros=hour // 2)
    assert ids.see("a", b"p", 0) is None
    assert ids.see("a", b"p", hour - 1) == b"p"  # within the horizon of the copy before
    assert ids.see("b", b"q", 2 * hour) is None
    list(ids.snapshot())
    assert "a" in ids.ids  # 2 h: a's latest copy (1 h) + horizon + margin not yet passed
    ids.see("c", b"r", 3 * hour)
    kept = {entry[0] for entry in ids.snapshot()}
    assert kept == {"b", "c"}
    assert ids.see("a", b"other", 3 * hour) is None  # a new record: past the horizon anyway


def test_the_kept_copy_read_again_from_its_own_position_is_kept_again_and_others_are_copies():
    ids = dedupe.IdsShard(horizon_micros=3_600_000_000, margin_micros=0)
    assert ids.see("a", b"p", 0, ("file:x", 1)) is None
    assert ids.see("a", b"p", 0, ("file:x", 1)) is None  # a restart read it again: not a copy of itself
    assert ids.see("a", b"p", 5, ("file:x", 9)) == b"p"  # a redelivery
    assert ids.see("a", b"p", 0, ("file:x", 1)) is None  # still the kept copy's position
    assert [entry[3] for entry in ids.snapshot()] == [("file:x", 1)]


def test_a_restarted_stage_knows_the_ids_its_last_run_kept(clock, tmp_path):
    folder = str(tmp_path / "state" / dedupe.STAGE)

    def bundle(fn, state, txns):
        fn.start_bundle()
        out = []
        for txn in txns:
            log, version = state.setdefault(0, (FakeBag(), FakeValue()))
            out += list(fn.process((0, txn), Timestamp(txn.event_time.seconds), log, version))
        fn.finish_bundle()
        return out

    first = dedupe.ArrivalDedupeFn(3600, clock, keeper=ShardFiles(folder, 1))
    first.setup()
    a, b = transaction("a", line=1), transaction("b", line=2)
    assert bundle(first, {}, [a, b]) == [a, b]
    # A restart: the runner's state is empty. b was not written, so it is read again from its own
    # line; a comes again from another line (a redelivery), and once with other content.
    again = dedupe.ArrivalDedupeFn(3600, clock, keeper=ShardFiles(folder, 1))
    again.setup()
    redelivered, changed = transaction("a", line=7), transaction("a", minor=1, line=8)
    out = bundle(again, {}, [b, redelivered, changed])
    assert out[0] == b  # kept again
    refused = [o.value for o in out[1:]]
    assert [d.error_code for d in refused] == [ErrorCode.ERROR_CODE_TRANSACTION_ID_CONFLICT]
    assert refused[0].source.line == 8
