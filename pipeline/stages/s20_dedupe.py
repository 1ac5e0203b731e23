"""20_dedupe: Transaction -> Transaction, each transaction_id once within the dedupe horizon.

In:  Transaction, with its event_time as its Beam timestamp (10_validate).
Out: Transaction: of the copies of a transaction_id, the first (earliest event_time, then source
     position, then content), once the watermark has passed its event time, so that the choice
     does not depend on the order in which copies arrive.
Dropped and counted (duplicates_dropped, part of the balance): a later copy with the same
     content, a redelivery by an at-least-once source.
Dead letters (stage 20_dedupe):
  TRANSACTION_ID_CONFLICT   a copy with the same transaction_id and different content (any field
                            but the source position): a producer fault; the first copy is kept.
An id is remembered until dedupe.horizon_seconds after the event_time of its latest copy; a copy
that comes later than that is a new record.
Unbounded input (streaming), streaming.order `arrival` (the default): the first copy of an id to
come is kept and goes on at once (no wait for the watermark); a later copy within the horizon of
the id's copies is a duplicate or a conflict as above. The ids live in the worker's memory, keyed
by a shard of the id (streaming.state_shards) and backed by Beam state
(pipeline/shared/shard_state.py): a few runner round trips per shard and bundle. An id is
forgotten once the shard has seen event times the horizon plus the allowed lateness past it.
Unbounded input, streaming.order `event_time`: state per transaction_id (Beam state and event-time
timers) holds the copies waiting for the watermark, then the kept copy's fingerprint, until a
timer clears it when the watermark passes the horizon. Bounded input (batch): the copies of an id
are grouped (GroupByKey) and taken in the same order, a copy more than the horizon after the one
before it in event time being a new record, as in streaming. Batch and streaming give the same
records when copies arrive within the horizon (on arrival, the kept copy is the first to come, so
its source position may differ).
State and timers cost a round trip to the runner per call, which a multi-process batch run cannot
afford; the grouping does the same work in one pass. Idempotent: the same copies give the same
kept record, duplicates and conflicts, in any order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.coders import BytesCoder, StrUtf8Coder, TupleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.io import progress, shard_files
from pipeline.io.shard_files import ShardFiles
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock, beam_time, stamped
from pipeline.shared.dead_letter import DEAD_LETTER, apply_stage, make_dead_letter
from pipeline.shared.shard_state import DEFAULT_SHARDS, Contents, ShardedStateFn, by_shard

STAGE = "20_dedupe"


def fingerprint(txn: Transaction) -> bytes:
    """The content of a transaction: every field but where it was read from and the late flag."""
    content = Transaction()
    content.CopyFrom(txn)
    content.ClearField("origin")
    content.ClearField("late")
    return hashlib.blake2b(content.SerializeToString(deterministic=True), digest_size=16).digest()


def order(txn: Transaction) -> tuple:
    """Which copy comes first: earliest event_time, then source position, then content (the last
    part of the key is the copy's fingerprint)."""
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


def ranked(copies: Iterable[Transaction]) -> list[tuple[tuple, Transaction]]:
    """The copies in `order`, each with its order key (whose last part is its fingerprint)."""
    return sorted(((order(txn), txn) for txn in copies), key=lambda pair: pair[0])


class _FirstCopyFn(beam.DoFn):
    """What both ways of finding the first copy share: judging a later copy against the kept one."""

    def __init__(self, horizon_seconds: int, clock: RunClock):
        self._horizon = Duration(seconds=horizon_seconds)
        self._horizon_seconds = horizon_seconds
        self._clock = clock

    def setup(self) -> None:
        self._duplicates = metrics.counter(metrics.DUPLICATES_DROPPED)

    def _judge(self, txn: Transaction, its_print: bytes, kept: bytes):
        """A later copy: a redelivery (counted) or a conflict (a dead letter)."""
        if its_print == kept:
            self._duplicates.inc()
            progress.handed(txn.origin.source)  # accounted for: a restart need not read it again
        else:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, conflict(txn, self._horizon_seconds, self._clock))


class DedupeFn(_FirstCopyFn):
    """Keyed by transaction_id, unbounded input. A bag per id holds the copies waiting for the
    watermark and, once one is kept, its fingerprint. A state read is a round trip to the runner
    (about a quarter of a millisecond on Prism, which caches nothing between bundles), so a copy is
    only appended as it comes (no read) and the bag is read once, when the release timer fires.
    Every copy moves the forget timer to its event time plus the horizon."""

    COPIES = BagStateSpec("copies", TupleCoder([StrUtf8Coder(), BytesCoder()]))
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def process(
        self,
        keyed: tuple[str, Transaction],
        at=beam.DoFn.TimestampParam,
        copies=beam.DoFn.StateParam(COPIES),
        release=beam.DoFn.TimerParam(RELEASE),
        forget=beam.DoFn.TimerParam(FORGET),
    ):
        copies.add((_COPY, keyed[1].SerializeToString()))
        release.set(at)
        forget.set(at + self._horizon)

    @on_timer(RELEASE)
    def release(self, copies=beam.DoFn.StateParam(COPIES)):
        kept = None
        waiting = []
        for kind, data in copies.read():
            if kind == _KEPT:
                kept = data
            else:
                waiting.append(Transaction.FromString(data))
        if not waiting:
            return
        judged = ranked(waiting)
        if kept is None:
            (key, first), judged = judged[0], judged[1:]
            kept = key[-1]
            yield first
        for key, txn in judged:
            yield from self._judge(txn, key[-1], kept)
        copies.clear()
        copies.add((_KEPT, kept))

    @on_timer(FORGET)
    def forget(self, copies=beam.DoFn.StateParam(COPIES)):
        copies.clear()


_COPY, _KEPT = "copy", "kept"


class FirstCopiesFn(_FirstCopyFn):
    """(transaction_id, all its copies) -> the copies kept; duplicates counted, conflicts refused."""

    def process(self, grouped: tuple[str, Iterable[Transaction]]):
        kept_print, forget_at = b"", None
        for key, txn in ranked(grouped[1]):
            event = beam_time(txn.event_time)
            remembered = forget_at is not None and event < forget_at
            forget_at = event + self._horizon
            if remembered:
                yield from self._judge(txn, key[-1], kept_print)
                continue
            kept_print = key[-1]
            yield stamped(txn, event)


class IdsShard(Contents):
    """A shard's transaction ids: id -> (the kept copy's fingerprint, the latest event time in
    microseconds of a copy seen, the kept copy's source position). The log's entries are (id,
    fingerprint, event micros, source position), one per copy as it came; the clock is the latest
    event time seen, by which a rewrite of the log forgets the ids whose horizon (plus
    `margin_micros`, the allowed lateness) has passed. The kept copy read again from its own source
    position (a restart reads again what it had not written) is kept again, not judged a copy."""

    def __init__(self, horizon_micros: int, margin_micros: int):
        self.ids: dict[str, tuple[bytes, int, tuple[str, int] | None]] = {}
        self.clock = 0
        self._horizon = horizon_micros
        self._margin = margin_micros

    def see(self, txn_id: str, its_print: bytes, micros: int, where: tuple[str, int] | None = None) -> bytes | None:
        """Remembers a copy; returns the kept copy's fingerprint when the id is within the horizon of
        one seen before (a later copy), None when this copy is kept."""
        self.clock = max(self.clock, micros)
        known = self.ids.get(txn_id)
        if known is not None and abs(micros - known[1]) < self._horizon:
            if where is not None and where == known[2]:
                return None  # the kept copy itself, read again
            self.ids[txn_id] = (known[0], max(known[1], micros), known[2])
            return known[0]
        self.ids[txn_id] = (its_print, micros, where)
        return None

    def replay(self, entry) -> None:
        self.see(*entry)

    def snapshot(self):
        past = self.clock - self._horizon - self._margin
        self.ids = {txn_id: kept for txn_id, kept in self.ids.items() if kept[1] > past}
        for txn_id, (its_print, micros, where) in self.ids.items():
            yield txn_id, its_print, micros, where


class ArrivalDedupeFn(_FirstCopyFn, ShardedStateFn):
    """Keyed by shard of transaction_id, unbounded input: the first copy of an id to come is kept
    and goes on at once; a later copy within the horizon of the id's copies is judged against it
    (pipeline.shared.shard_state: the shard read once per bundle at most, its log appended blind)."""

    def __init__(
        self, horizon_seconds: int, clock: RunClock, margin_seconds: int = 0, keeper: ShardFiles | None = None
    ):
        _FirstCopyFn.__init__(self, horizon_seconds, clock)
        ShardedStateFn.__init__(self, keeper)
        self._margin_micros = margin_seconds * 1_000_000

    def setup(self) -> None:
        _FirstCopyFn.setup(self)
        ShardedStateFn.setup(self)

    def new_contents(self) -> IdsShard:
        return IdsShard(self._horizon_seconds * 1_000_000, self._margin_micros)

    def step(self, ids: IdsShard, txn: Transaction, at: Timestamp):
        its_print = fingerprint(txn)
        entry = (txn.transaction_id, its_print, at.micros, progress.unit_of(txn.origin.source))
        kept = ids.see(*entry)
        return entry, [txn] if kept is None else list(self._judge(txn, its_print, kept))


def _id_of(txn: Transaction) -> str:
    return txn.transaction_id


class Dedupe(beam.PTransform):
    """Transactions -> (Transactions, DeadLetters): redeliveries dropped and counted, conflicts refused.
    Streaming `order`: arrival (the first copy to come is kept, state in `shards` shards; ids are
    remembered `margin_seconds` past their horizon; with `state_dir`, the shards are also kept in
    files there for a restart, pipeline.io.shard_files) or event_time (copies held until the
    watermark, the earliest kept)."""

    def __init__(
        self,
        horizon_seconds: int,
        clock: RunClock,
        order: str = "arrival",
        shards: int = DEFAULT_SHARDS,
        margin_seconds: int = 0,
        state_dir: str = "",
    ):
        super().__init__()
        self._state_dir = state_dir
        self._horizon = horizon_seconds
        self._clock = clock
        self._order = order
        self._shards = shards
        self._margin = margin_seconds

    def expand(self, transactions: beam.PCollection):
        if not transactions.is_bounded and self._order == "arrival":
            keyed_by_shard = by_shard(transactions, _id_of, self._shards, Transaction)
            keeper = shard_files.for_stage(self._state_dir, STAGE, self._shards)
            fn = ArrivalDedupeFn(self._horizon, self._clock, self._margin, keeper)
            return apply_stage(keyed_by_shard, "FirstToCome", fn, Transaction)
        keyed = transactions | "ById" >> beam.Map(lambda t: (t.transaction_id, t)).with_output_types(
            tuple[str, Transaction]
        )
        if transactions.is_bounded:
            grouped = keyed | "GroupById" >> beam.GroupByKey()
            return apply_stage(grouped, "FirstCopies", FirstCopiesFn(self._horizon, self._clock), Transaction)
        return apply_stage(keyed, "FirstCopy", DedupeFn(self._horizon, self._clock), Transaction)
