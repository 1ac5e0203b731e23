"""20_dedupe: Transaction -> Transaction, each transaction_id once within the dedupe horizon.

In:  Transaction, with its event_time as its Beam timestamp (10_validate).
Out: Transaction: of the copies of a transaction_id, the first (earliest event_time, then source
     position, then content), once the watermark has passed its event time, so that the choice
     does not depend on the order in which copies arrive.
Dropped and counted (00 duplicates_dropped, part of the balance): a later copy with the same
     content, a redelivery by an at-least-once source.
Dead letters (stage 20_dedupe):
  TRANSACTION_ID_CONFLICT   a copy with the same transaction_id and different content (any field
                            but the source position): a producer fault; the first copy is kept.
Unbounded input (streaming): state per transaction_id (Beam state and event-time timers) holds the
copies waiting for the watermark, then the kept copy's fingerprint until the watermark passes its
event_time plus dedupe.horizon_seconds, when a timer clears it; a copy that comes after that is a
new record. Bounded input (batch): the copies of an id are grouped (GroupByKey) and taken in the
same order; a copy whose event_time lies more than the horizon after the kept one's is a new
record, as it would be in streaming (it comes after the watermark has cleared the state). Batch
and streaming give the same records when copies arrive within the horizon of their event time.
State and timers cost a round trip to the runner per call, which a multi-process batch run cannot
afford; the grouping does the same work in one pass. Idempotent: the same copies give the same
kept record, duplicates and conflicts, in any order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.coders import BytesCoder, ProtoCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import DEAD_LETTER, MAIN, make_dead_letter

STAGE = "20_dedupe"


def fingerprint(txn: Transaction) -> bytes:
    """The content of a transaction: every field but where it was read from and the late flag."""
    content = Transaction()
    content.CopyFrom(txn)
    content.ClearField("origin")
    content.ClearField("late")
    return hashlib.blake2b(content.SerializeToString(deterministic=True), digest_size=16).digest()


def order(txn: Transaction) -> tuple:
    """Which copy comes first: earliest event_time, then source position, then content."""
    source = txn.origin.source
    return (
        txn.event_time.seconds,
        txn.event_time.nanos,
        source.uri,
        source.line,
        source.topic,
        source.partition,
        source.offset,
        source.message_id,
        fingerprint(txn),
    )


def event_timestamp(txn: Transaction) -> Timestamp:
    return Timestamp(seconds=txn.event_time.seconds, micros=txn.event_time.nanos // 1000)


def conflict(txn: Transaction, horizon_seconds: int, clock: RunClock) -> DeadLetter:
    return make_dead_letter(
        STAGE,
        ErrorCode.ERROR_CODE_TRANSACTION_ID_CONFLICT,
        f"transaction_id {txn.transaction_id!r} was seen before with different content, within "
        f"dedupe.horizon_seconds ({horizon_seconds} s) of event time: the first copy was kept",
        txn.origin,
        clock.timestamp(),
        transaction_id=txn.transaction_id,
    )


class DedupeFn(beam.DoFn):
    PENDING = BagStateSpec("pending", ProtoCoder(Transaction))
    KEPT = ReadModifyWriteStateSpec("kept", BytesCoder())
    RELEASE_AT = ReadModifyWriteStateSpec("release_at", VarIntCoder())
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, horizon_seconds: int, clock: RunClock):
        self._horizon = horizon_seconds
        self._clock = clock

    def setup(self) -> None:
        self._duplicates = metrics.counter(metrics.DUPLICATES_DROPPED)

    def _judge(self, txn: Transaction, kept: bytes):
        if fingerprint(txn) == kept:
            self._duplicates.inc()
        else:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, conflict(txn, self._horizon, self._clock))

    def process(
        self,
        keyed: tuple[str, Transaction],
        at=beam.DoFn.TimestampParam,
        pending=beam.DoFn.StateParam(PENDING),
        kept=beam.DoFn.StateParam(KEPT),
        release_at=beam.DoFn.StateParam(RELEASE_AT),
        release=beam.DoFn.TimerParam(RELEASE),
    ):
        txn = keyed[1]
        first = kept.read()
        if first is not None:
            yield from self._judge(txn, first)
            return
        pending.add(txn)
        waiting_until = release_at.read()
        if waiting_until is None or at.micros < waiting_until:
            release_at.write(at.micros)
            release.set(at)

    @on_timer(RELEASE)
    def release(
        self,
        pending=beam.DoFn.StateParam(PENDING),
        kept=beam.DoFn.StateParam(KEPT),
        release_at=beam.DoFn.StateParam(RELEASE_AT),
        forget=beam.DoFn.TimerParam(FORGET),
    ):
        copies = sorted(pending.read(), key=order)
        pending.clear()
        release_at.clear()
        if not copies:
            return
        first, rest = copies[0], copies[1:]
        kept_print = fingerprint(first)
        kept.write(kept_print)
        forget.set(event_timestamp(first) + Duration(seconds=self._horizon))
        yield first
        for txn in rest:
            yield from self._judge(txn, kept_print)

    @on_timer(FORGET)
    def forget(self, kept=beam.DoFn.StateParam(KEPT)):
        kept.clear()


class FirstCopiesFn(beam.DoFn):
    """(transaction_id, all its copies) -> the copies kept; duplicates counted, conflicts refused."""

    def __init__(self, horizon_seconds: int, clock: RunClock):
        self._horizon = horizon_seconds
        self._clock = clock

    def setup(self) -> None:
        self._duplicates = metrics.counter(metrics.DUPLICATES_DROPPED)

    def process(self, grouped: tuple[str, Iterable[Transaction]]):
        kept_print, forget_at = b"", None
        for txn in sorted(grouped[1], key=order):
            if forget_at is not None and event_timestamp(txn) <= forget_at:
                if fingerprint(txn) == kept_print:
                    self._duplicates.inc()
                else:
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER, conflict(txn, self._horizon, self._clock))
                continue
            kept_print = fingerprint(txn)
            forget_at = event_timestamp(txn) + Duration(seconds=self._horizon)
            yield TimestampedValue(txn, event_timestamp(txn))


class Dedupe(beam.PTransform):
    """Transactions -> (Transactions, DeadLetters): redeliveries dropped and counted, conflicts refused."""

    def __init__(self, horizon_seconds: int, clock: RunClock):
        super().__init__()
        self._horizon = horizon_seconds
        self._clock = clock

    def expand(self, transactions: beam.PCollection):
        keyed = transactions | "ById" >> beam.Map(lambda t: (t.transaction_id, t)).with_output_types(
            tuple[str, Transaction]
        )
        if transactions.is_bounded:
            out = (
                keyed
                | "GroupById" >> beam.GroupByKey()
                | "FirstCopies"
                >> beam.ParDo(FirstCopiesFn(self._horizon, self._clock)).with_outputs(DEAD_LETTER, main=MAIN)
            )
        else:
            out = keyed | "FirstCopy" >> beam.ParDo(DedupeFn(self._horizon, self._clock)).with_outputs(
                DEAD_LETTER, main=MAIN
            )
        kept = out[MAIN]
        kept.element_type = Transaction
        refused = out[DEAD_LETTER]
        refused.element_type = DeadLetter
        return kept, refused
