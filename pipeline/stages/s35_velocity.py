"""35_velocity: EnrichedTransaction -> EnrichedTransaction with the card's velocity features.

In:  EnrichedTransaction (profiles joined), with its event_time as its Beam timestamp (10_validate;
     a late record under streaming.late_policy score carries its arrival time).
Out: the same record with `velocity` set: ALL_NAMES of pipeline/shared/velocity.py (the velocity
     features, then the card summary's), computed from the same card's transactions that come
     before it in event time (then transaction_id), never from itself or a later one; it keeps its
     Beam timestamp.
Dead letters (stage 35_velocity):
  FEATURE_ERROR   a velocity feature came out non-finite; the violation names it
The card's history is bounded (the last 24 hours and at least the last 10 transactions) and
forgotten when the card has been quiet for 7 days (counted: velocity_cards_forgotten), with the
summary of its amounts and first use.

Unbounded input (streaming), streaming.order `arrival` (the default): each record is scored as it
comes, from its card's history as it stands, and then joins it. A record that comes after a later
one of its card is scored from the earlier ones that have come and joins the history for the
card's later records (counted: velocity_out_of_order); records already scored are not revised. The
state is keyed by a shard of the card (streaming.state_shards) and held in the worker's memory,
backed by Beam state (pipeline/shared/shard_state.py): a bundle reads a shard's version once and
appends to its log blind, a few runner round trips per shard and bundle whatever the records.

Unbounded input, streaming.order `event_time` (replays and backfills): keyed by card, the records
of a card wait in Beam state until the watermark passes their time plus the order wait
(velocity.order_wait_seconds; an event-time timer at the earliest waiting one), then go out in
event-time order, whatever order they came in. With the wait at least the allowed lateness (the
default), a record that is on time always comes before its card's later records are released, so
streaming gives the batch results; a shorter wait scores sooner, and a record that comes within the
lateness but after a later one of its card was released is scored from the history before it
(counted: velocity_out_of_order). A late record (streaming.late_policy score) is scored from the
history earlier than it that the card still holds, then remembered.

Bounded input (batch): a card's records are grouped (GroupByKey) and taken in event-time order
through the same code; the results are those of streaming in event-time order with no late record,
and those of streaming on arrival when every card's records come in event-time order. Idempotent:
the same records give the same features in any order (batch, event_time), or in the same order
(arrival).
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder, TupleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction
from pipeline.io import shard_files
from pipeline.io.shard_files import ShardFiles
from pipeline.shared import metrics, velocity
from pipeline.shared.clock import RunClock, beam_time, stamped
from pipeline.shared.dead_letter import DEAD_LETTER, apply_stage, feature_error
from pipeline.shared.shard_state import DEFAULT_SHARDS, Contents, ShardedStateFn, by_shard

STAGE = "35_velocity"


class _ReleaseFn(beam.DoFn):
    """What both ways of ordering a card's records share: scoring one against the history."""

    def __init__(self, clock: RunClock):
        self._clock = clock

    def setup(self) -> None:
        self._out_of_order = metrics.counter(metrics.VELOCITY_OUT_OF_ORDER)

    def _release(self, history: velocity.CardHistory, records: Iterable[tuple[Timestamp, EnrichedTransaction]]):
        """Each record in event-time order, with its features, then remembered; it keeps its Beam
        timestamp (its event_time, or its arrival time when it came late). A record earlier than
        what the card already holds, without being late, is counted as out of order."""
        ordered = sorted(((velocity.event_of(e), at, e) for at, e in records), key=lambda item: item[0])
        for event, at, enriched in ordered:
            held = history.events
            if held and event[:3] < held[-1][:3] and not enriched.transaction.late:
                self._out_of_order.inc()
            yield self._with_features(enriched, history.take(event), at)

    def _with_features(self, enriched: EnrichedTransaction, values: list[float], at: Timestamp):
        txn = enriched.transaction
        refused = feature_error(STAGE, "velocity", velocity.ALL_NAMES, values, txn, self._clock.timestamp)
        if refused is not None:
            return beam.pvalue.TaggedOutput(DEAD_LETTER, refused)
        out = EnrichedTransaction()
        out.CopyFrom(enriched)
        velocity.attach(out, values)  # idempotent: a record that already has them gets them anew
        return stamped(out, at)


class CardHistoryFn(_ReleaseFn):
    """(card_id, all its records) -> each record with its velocity features (bounded input)."""

    def process(self, grouped: tuple[str, Iterable[EnrichedTransaction]]):
        # Grouping drops the Beam timestamps; in batch none is late, so each is its event_time.
        records = [(beam_time(e.transaction.event_time), e) for e in grouped[1]]
        yield from self._release(velocity.CardHistory(), records)


class VelocityFn(_ReleaseFn):
    """Keyed by card_id, unbounded input. WAITING holds the records not released yet (their Beam
    timestamp in microseconds, their bytes), NEXT the earliest of those timestamps (the release
    timer is set for it plus the wait), HISTORY the card's remembered events. A record is appended
    without reading WAITING; the bag is read when the release timer fires."""

    def __init__(self, clock: RunClock, wait_seconds: int = 0):
        super().__init__(clock)
        self._wait = Duration(seconds=wait_seconds)
        self._wait_micros = wait_seconds * 1_000_000

    def setup(self) -> None:
        super().setup()
        self._forgotten = metrics.counter(metrics.VELOCITY_CARDS_FORGOTTEN)

    WAITING = BagStateSpec("waiting", TupleCoder([VarIntCoder(), BytesCoder()]))
    NEXT = ReadModifyWriteStateSpec("next", VarIntCoder())
    HISTORY = ReadModifyWriteStateSpec("history", PickleCoder())
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def process(
        self,
        keyed: tuple[str, EnrichedTransaction],
        at=beam.DoFn.TimestampParam,
        waiting=beam.DoFn.StateParam(WAITING),
        next_release=beam.DoFn.StateParam(NEXT),
        release=beam.DoFn.TimerParam(RELEASE),
    ):
        micros = at.micros
        waiting.add((micros, keyed[1].SerializeToString()))
        current = next_release.read()
        if current is None or micros < current:
            next_release.write(micros)
            release.set(at + self._wait)

    @on_timer(RELEASE)
    def release(
        self,
        fired=beam.DoFn.TimestampParam,
        waiting=beam.DoFn.StateParam(WAITING),
        next_release=beam.DoFn.StateParam(NEXT),
        stored=beam.DoFn.StateParam(HISTORY),
        release=beam.DoFn.TimerParam(RELEASE),
        forget=beam.DoFn.TimerParam(FORGET),
    ):
        due, later = [], []
        for micros, data in waiting.read():
            (due if micros + self._wait_micros <= fired.micros else later).append((micros, data))
        waiting.clear()
        next_release.clear()
        if later:
            for item in later:
                waiting.add(item)
            earliest = min(micros for micros, _ in later)
            next_release.write(earliest)
            release.set(Timestamp(micros=earliest) + self._wait)
        if not due:
            return
        history = velocity.CardHistory.restored(stored.read())
        records = [(Timestamp(micros=micros), EnrichedTransaction.FromString(data)) for micros, data in due]
        yield from self._release(history, records)
        stored.write(history.stored())
        latest = history.events[-1]
        forget.set(Timestamp(seconds=latest.seconds) + Duration(seconds=velocity.FORGET_AFTER_SECONDS))

    @on_timer(FORGET)
    def forget(
        self,
        fired=beam.DoFn.TimestampParam,
        next_release=beam.DoFn.StateParam(NEXT),
        stored=beam.DoFn.StateParam(HISTORY),
    ):
        if next_release.read() is not None:
            return  # records are waiting: their release moves this timer on
        history = velocity.CardHistory.restored(stored.read())
        if history.forgotten_by(int(fired.micros // 1_000_000)):
            stored.clear()
            self._forgotten.inc()


class CardsShard(Contents):
    """A shard's cards: card_id -> its CardHistory. The log's entries are (card_id, Event as a
    tuple), remembered in turn; a rewrite writes each card's events, then (card_id, None, summary):
    the summary of all the card remembered, which its kept events alone would not give. The clock
    is the latest event time the shard has seen, by which a rewrite of the log forgets the cards
    quiet for 7 days (counted)."""

    def __init__(self, forgotten):
        self.cards: dict[str, velocity.CardHistory] = {}
        self.clock = 0
        self._forgotten = forgotten

    def history(self, card: str) -> velocity.CardHistory:
        history = self.cards.get(card)
        if history is None:
            history = self.cards[card] = velocity.CardHistory()
        return history

    def replay(self, entry) -> None:
        if len(entry) == 3:  # a rewrite's summary of the card, after its events
            card, _, summary = entry
            self.history(card).set_summary(tuple(summary))
            return
        card, event = entry
        event = velocity.Event(*event)
        self.history(card).remember(event)
        self.clock = max(self.clock, event.seconds)

    def snapshot(self):
        quiet = [card for card, history in self.cards.items() if history.forgotten_by(self.clock)]
        for card in quiet:
            del self.cards[card]
            self._forgotten.inc()
        for card, history in self.cards.items():
            for event in history.events:
                yield card, tuple(event)
            yield card, None, history.summary()


class ArrivalVelocityFn(_ReleaseFn, ShardedStateFn):
    """Keyed by shard of card_id, unbounded input: each record scored as it comes, from its card's
    history as it stands (pipeline.shared.shard_state: the shard read once per bundle at most, its
    log appended blind)."""

    def __init__(self, clock: RunClock, keeper: ShardFiles | None = None):
        _ReleaseFn.__init__(self, clock)
        ShardedStateFn.__init__(self, keeper)

    def setup(self) -> None:
        _ReleaseFn.setup(self)
        ShardedStateFn.setup(self)
        self._forgotten = metrics.counter(metrics.VELOCITY_CARDS_FORGOTTEN)

    def new_contents(self) -> CardsShard:
        return CardsShard(self._forgotten)

    def step(self, cards: CardsShard, enriched: EnrichedTransaction, at: Timestamp):
        card = enriched.transaction.card_id
        event = velocity.event_of(enriched)
        history = cards.history(card)
        if history.holds(event):  # read again after a restart: scored from the history before it
            return None, [self._with_features(enriched, history.score_again(event), at)]
        outputs = list(self._release(history, [(at, enriched)]))
        cards.clock = max(cards.clock, event.seconds)
        return (card, tuple(event)), outputs


def _card_of(enriched: EnrichedTransaction) -> str:
    return enriched.transaction.card_id


class Velocity(beam.PTransform):
    """EnrichedTransactions -> (EnrichedTransactions with velocity features, DeadLetters).
    Streaming `order`: arrival (each record scored as it comes, state in `shards` shards) or
    event_time (held `order_wait_seconds` past its event time, a card's records released in
    event-time order); batch is always in event-time order."""

    def __init__(
        self,
        clock: RunClock,
        order_wait_seconds: int = 0,
        order: str = "arrival",
        shards: int = DEFAULT_SHARDS,
        state_dir: str = "",
    ):
        super().__init__()
        self._state_dir = state_dir
        self._clock = clock
        self._wait = order_wait_seconds
        self._order = order
        self._shards = shards

    def expand(self, enriched: beam.PCollection):
        if not enriched.is_bounded and self._order == "arrival":
            keyed_by_shard = by_shard(enriched, _card_of, self._shards, EnrichedTransaction)
            keeper = shard_files.for_stage(self._state_dir, STAGE, self._shards)
            fn = ArrivalVelocityFn(self._clock, keeper)
            return apply_stage(keyed_by_shard, "OnArrival", fn, EnrichedTransaction)
        keyed = enriched | "ByCard" >> beam.Map(lambda e: (e.transaction.card_id, e)).with_output_types(
            tuple[str, EnrichedTransaction]
        )
        if enriched.is_bounded:
            grouped = keyed | "GroupByCard" >> beam.GroupByKey()
            return apply_stage(grouped, "InOrder", CardHistoryFn(self._clock), EnrichedTransaction)
        return apply_stage(keyed, "InEventTimeOrder", VelocityFn(self._clock, self._wait), EnrichedTransaction)
