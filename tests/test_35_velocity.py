"""35_velocity: per-card features from earlier transactions only, in event-time order.

- A card history worked out by hand (ties in event time, out-of-order arrival, a gap longer than
  every horizon, a record without a merchant profile, a second card) gives exactly the expected
  features, in batch on the FnApiRunner.
- The same records in shuffled arrival orders, in batch and through TestStream on Prism
  (streaming.order event_time: state and event-time timers), give identical features; a late
  record follows streaming.late_policy; a card's state is forgotten once it has gone quiet (counted).
- Streaming on arrival (the default) on Prism: in event-time order it gives the batch features; in
  a shuffled order each record is scored from its card's records that came before it, only the
  records that came after a later one of their card differ from batch, and those are counted.
- The sharded state (pipeline/shared/shard_state.py): a shard is read back only when another
  writer wrote it last, its log is rewritten when it outgrows its contents, quiet cards are
  forgotten then (counted). Kept in files (pipeline/io/shard_files.py), a restarted stage goes on
  from its cards' histories, and a record read again is scored as before and remembered once.
"""

from __future__ import annotations

import math
import random
import statistics

import apache_beam as beam
import pytest
from apache_beam.coders import ProtoCoder
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction, MerchantProfile, ProfileKind
from pipeline.io.shard_files import ShardFiles
from pipeline.local import runners
from pipeline.shared import metrics, shard_state, velocity
from pipeline.shared.features import MISSING, haversine_km
from pipeline.stages import s35_velocity as stage
from tests.helpers import FakeBag, FakeValue, transaction

T0 = 1793700000  # 2026-11-03T11:20:00Z
PLACES = {  # merchant -> (country, lat, lon)
    "m1": ("FR", 48.85, 2.35),
    "m2": ("FR", 45.76, 4.83),
    "m3": ("DE", 52.52, 13.40),
}
DAY = 86400


def enriched(txn_id: str, offset: int, eur: float, merchant: str, card: str = "k", located: bool = True):
    country, lat, lon = PLACES[merchant]
    txn = transaction(txn_id, card=card, merchant=merchant, minor=round(eur * 100), seconds=T0 + offset)
    txn.country = country
    out = EnrichedTransaction(transaction=txn)
    if located:
        out.merchant.CopyFrom(MerchantProfile(merchant_id=merchant, country=country, lat=lat, lon=lon))
    else:
        out.missing_profiles.append(ProfileKind.PROFILE_KIND_MERCHANT)
    return out


def km(a: str, b: str) -> float:
    return haversine_km(PLACES[a][1], PLACES[a][2], PLACES[b][1], PLACES[b][2])


NONE = [0.0] * 10 + [MISSING] * 4 + [MISSING, 0.0]


def card(earlier: list[float], eur: float, seconds_since_first: int) -> list[float]:
    """The card summary's features, worked out with the statistics module: the z-score of
    log(1 + eur) against the earlier amounts' logs (spread at least 0.1), days since first use."""
    logs = [math.log1p(a) for a in earlier]
    z = (math.log1p(eur) - statistics.mean(logs)) / max(statistics.stdev(logs), 0.1) if len(logs) >= 2 else MISSING
    return [z, seconds_since_first / DAY]


HISTORY = [
    enriched("a", 0, 10, "m1"),
    enriched("b", 0, 20, "m2"),  # same event time as a: b comes after a (transaction_id)
    enriched("c", 300, 30, "m1"),
    enriched("d", 1800, 40, "m3"),
    enriched("e", 7200, 50, "m1"),
    enriched("f", 7200 + 8 * DAY, 60, "m2"),  # quiet for more than every horizon: forgotten
    enriched("g", 7200 + 8 * DAY + 120, 30, "m1", located=False),
    enriched("q", 100, 99, "m3", card="other"),  # another card sees nothing of k
]
# Hand-worked: counts 10m/1h/24h, sums 10m/1h/24h, merchants 1h/24h, countries 1h/24h, seconds since
# the previous one, amount / median of the last 10, distance and speed from the previous merchant.
EXPECTED = {
    "a": NONE,
    "b": [1, 1, 1, 10, 10, 10, 1, 1, 1, 1, 0, 20 / 10, km("m1", "m2"), km("m1", "m2") / 60 * 3600, *card([10], 20, 0)],
    "c": [
        2,
        2,
        2,
        30,
        30,
        30,
        2,
        2,
        1,
        1,
        300,
        30 / 15,
        km("m2", "m1"),
        km("m2", "m1") / 300 * 3600,
        *card([10, 20], 30, 300),
    ],
    "d": [
        0,
        3,
        3,
        0,
        60,
        60,
        2,
        2,
        1,
        1,
        1500,
        40 / 20,
        km("m1", "m3"),
        km("m1", "m3") / 1500 * 3600,
        *card([10, 20, 30], 40, 1800),
    ],
    "e": [
        0,
        0,
        4,
        0,
        0,
        100,
        0,
        3,
        0,
        2,
        5400,
        50 / 25,
        km("m3", "m1"),
        km("m3", "m1") / 5400 * 3600,
        *card([10, 20, 30, 40], 50, 7200),
    ],
    "f": NONE,
    "g": [1, 1, 1, 60, 60, 60, 1, 1, 1, 1, 120, 30 / 60, MISSING, MISSING, *card([60], 30, 120)],
    "q": NONE,
}


def view(e: EnrichedTransaction) -> tuple:
    return e.transaction.transaction_id, tuple(round(v, 6) for v in e.velocity.values)


def expected_view() -> list[tuple]:
    return [(txn_id, tuple(round(float(v), 6) for v in values)) for txn_id, values in EXPECTED.items()]


def timed(records):
    return [beam.window.TimestampedValue(r, r.transaction.event_time.seconds) for r in records]


def test_the_core_gives_the_hand_worked_features():
    histories: dict[str, velocity.CardHistory] = {}
    for record in HISTORY:
        event = velocity.event_of(record)
        history = histories.setdefault(record.transaction.card_id, velocity.CardHistory())
        assert history.take(event) == pytest.approx(EXPECTED[record.transaction.transaction_id])
    # Bounded: after f the card holds f and g only, everything before was forgotten.
    assert [e.transaction_id for e in histories["k"].events] == ["f", "g"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_long_histories_give_the_same_bits_sliced_as_looped(seed):
    # Beyond velocity.LOOP_UP_TO remembered transactions the windows are bisected and summed in C;
    # on random busy cards (ties in seconds and nanos, window edges to the nanosecond, unknown and
    # negative amounts, repeated merchants and countries) both ways give the same floats.
    rng = random.Random(seed)
    for _ in range(200):
        now = T0 + rng.randrange(0, 10**6)
        nanos = rng.choice([0, 999_999_999, rng.randrange(10**9)])
        edges = [velocity.TEN_MINUTES, velocity.HOUR, velocity.KEEP_SECONDS]
        events = []
        for i in range(rng.randrange(0, 300)):
            gap = rng.choice([rng.randrange(0, velocity.KEEP_SECONDS + 600), rng.choice(edges), rng.randrange(0, 900)])
            past_nanos = rng.choice([nanos, nanos + rng.choice([-1, 1]), rng.randrange(10**9)])
            seconds, past_nanos = divmod((now - gap) * 10**9 + past_nanos, 10**9)
            eur = rng.choice([velocity.MISSING, -3.5, 0.0, rng.uniform(0, 5000), rng.lognormvariate(3, 1)])
            events.append(
                velocity.Event(
                    seconds, past_nanos, f"t{i:04d}", eur, f"m{rng.randrange(9)}", rng.choice("ABC"), 0, 0, False
                )
            )
        event = velocity.Event(now, nanos, "t9999", 10.0, "m0", "A", 0.0, 0.0, False)
        earlier = sorted(e for e in events if e[:3] < event[:3])
        looped = velocity._looped_windows(earlier, event)
        sliced = velocity._sliced_windows(earlier, event)
        assert [repr(v) for v in sliced] == [repr(v) for v in looped]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_in_any_arrival_order_gives_the_hand_worked_features(clock, seed):
    shuffled = HISTORY[:]
    random.Random(seed).shuffle(shuffled)
    with TestPipeline(runner="FnApiRunner") as p:
        records = p | beam.Create(timed(shuffled)) | beam.Map(lambda t: t).with_output_types(EnrichedTransaction)
        out, refused = records | stage.Velocity(clock)
        assert_that(out | "View" >> beam.Map(view), equal_to(expected_view()))
        assert_that(refused, equal_to([]), label="NoDeadLetters")
        times = out | "Times" >> beam.Map(
            lambda e, at=beam.DoFn.TimestampParam: at.seconds() == e.transaction.event_time.seconds
        )
        assert_that(times, equal_to([True] * len(HISTORY)), label="EventTimes")


def test_a_history_much_longer_than_the_horizons_stays_bounded():
    history = velocity.CardHistory()
    for i in range(5000):
        history.remember(velocity.Event(T0 + i * 60, 0, f"t{i:05d}", 5.0, "m1", "FR", 0.0, 0.0, True))
    # 24 hours at one a minute, and never fewer than the last 10.
    assert len(history.events) == 24 * 60
    sparse = velocity.CardHistory()
    for i in range(50):
        sparse.remember(velocity.Event(T0 + i * 2 * DAY, 0, f"s{i:02d}", 5.0, "m1", "FR", 0.0, 0.0, True))
    assert len(sparse.events) == velocity.KEEP_LAST


def prism_pipeline() -> TestPipeline:
    options = PipelineOptions(["--runner=PrismRunner"])
    runners.choose_runner(options, streaming=True)
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(runner="PrismRunner", options=options)


def forgotten(result) -> int:
    query = result.metrics().query(MetricsFilter().with_name(metrics.VELOCITY_CARDS_FORGOTTEN))["counters"]
    return sum(c.committed for c in query)


@pytest.mark.parametrize("seed", [4, 5])
def test_streaming_on_prism_in_any_arrival_order_gives_the_batch_features_and_forgets_quiet_cards(
    clock, prism_binary, seed
):
    shuffled = HISTORY[:]
    random.Random(seed).shuffle(shuffled)
    # Arrival in two bursts, the watermark held before the earliest record of each, so that a
    # record may come after a later one of its card: the release order must not depend on it.
    first, second = shuffled[:4], shuffled[4:]
    stream = (
        TestStream(coder=ProtoCoder(EnrichedTransaction))
        .advance_watermark_to(Timestamp(T0 - 1))
        .add_elements(timed(first))
        .add_elements(timed(second))
        .advance_watermark_to(Timestamp(T0 + 7200 + 8 * DAY + 200))
        .advance_watermark_to_infinity()
    )
    p = prism_pipeline()
    records = p | stream | beam.Map(lambda t: t).with_output_types(EnrichedTransaction)
    out, refused = records | stage.Velocity(clock, order="event_time")
    assert_that(out | "View" >> beam.Map(view), equal_to(expected_view()))
    assert_that(refused, equal_to([]), label="NoDeadLetters")
    result = p.run()
    result.wait_until_finish()
    # Both cards went quiet for longer than FORGET_AFTER_SECONDS before the end of time.
    assert forgotten(result) == 2


# c scored after d and e: its window features from a and b, the card's summary as it stands (a, b, d, e)
C_AFTER_D_AND_E = EXPECTED["c"][:14] + card([10, 20, 40, 50], 30, 300)
D_WITHOUT_C = [
    0,
    2,
    2,
    0,
    30,
    30,
    2,
    2,
    1,
    1,
    1800,
    40 / 15,
    km("m2", "m3"),
    km("m2", "m3") / 1800 * 3600,
    *card([10, 20], 40, 1800),
]
E_WITHOUT_C = [
    0,
    0,
    3,
    0,
    0,
    70,
    0,
    3,
    0,
    2,
    5400,
    50 / 20,
    km("m3", "m1"),
    km("m3", "m1") / 5400 * 3600,
    *card([10, 20, 40], 50, 7200),
]


def test_a_late_record_is_scored_from_the_history_before_it_and_later_ones_are_not_revised(clock, prism_binary):
    on_time = [r for r in HISTORY if r.transaction.card_id == "k" and r.transaction.transaction_id in "abde"]
    late = enriched("c", 300, 30, "m1")
    late.transaction.late = True  # 10_validate under late_policy score: flagged, at its arrival time
    arrival = T0 + 7300
    stream = (
        TestStream(coder=ProtoCoder(EnrichedTransaction))
        .advance_watermark_to(Timestamp(T0 - 1))
        .add_elements(timed(on_time))
        .advance_watermark_to(Timestamp(arrival - 1))
        .add_elements([beam.window.TimestampedValue(late, arrival)])
        .advance_watermark_to_infinity()
    )
    p = prism_pipeline()
    records = p | stream | beam.Map(lambda t: t).with_output_types(EnrichedTransaction)
    out, _ = records | stage.Velocity(clock, order="event_time")
    expected = {
        "a": EXPECTED["a"],
        "b": EXPECTED["b"],
        # sees a and b, not d and e, which come after it in event time
        "c": C_AFTER_D_AND_E,
        "d": D_WITHOUT_C,
        "e": E_WITHOUT_C,
    }
    assert_that(
        out | "View" >> beam.Map(view),
        equal_to([(k, tuple(round(float(v), 6) for v in vals)) for k, vals in expected.items()]),
    )
    stamps = out | "Stamps" >> beam.Map(
        lambda e, at=beam.DoFn.TimestampParam: (e.transaction.transaction_id, at.seconds())
    )
    assert_that(
        stamps,
        equal_to([("a", T0), ("b", T0), ("c", arrival), ("d", T0 + 1800), ("e", T0 + 7200)]),
        label="LateKeepsArrivalTime",
    )
    result = p.run()
    result.wait_until_finish()


def c_after_d_and_e(clock, watermark: int, order_wait_seconds: int):
    """Card k's a, b, d and e on time, then the watermark moved to `watermark`, then c (not flagged
    late), through 35_velocity on Prism with the given order wait; returns (pipeline, output)."""
    card = [r for r in HISTORY if r.transaction.card_id == "k" and r.transaction.transaction_id in "abde"]
    late_c = [r for r in HISTORY if r.transaction.transaction_id == "c"]
    stream = (
        TestStream(coder=ProtoCoder(EnrichedTransaction))
        .advance_watermark_to(Timestamp(T0 - 1))
        .add_elements(timed(card))
        .advance_watermark_to(Timestamp(watermark))
        .add_elements(timed(late_c))
        .advance_watermark_to_infinity()
    )
    p = prism_pipeline()
    records = p | stream | beam.Map(lambda t: t).with_output_types(EnrichedTransaction)
    out, _ = records | stage.Velocity(clock, order_wait_seconds=order_wait_seconds, order="event_time")
    return p, out


def test_an_on_time_record_behind_the_watermark_is_taken_in_order_when_the_wait_covers_it(clock, prism_binary):
    """c comes 50 minutes behind the watermark (on time under an allowed lateness of an hour) and
    after d and e; with an order wait of an hour, d and e are still waiting, so every record gets
    the batch features and none is out of order."""
    p, out = c_after_d_and_e(clock, watermark=T0 + 3300, order_wait_seconds=3600)
    expected = [row for row in expected_view() if row[0] in "abcde"]
    assert_that(out | "View" >> beam.Map(view), equal_to(expected))
    result = p.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_name(metrics.VELOCITY_OUT_OF_ORDER))["counters"]
    assert sum(c.committed for c in query) == 0


def test_a_merchant_without_a_finite_location_gives_missing_distances_not_nan(clock):
    """A profile with a NaN coordinate (40_features refuses the record for its own distance) is no
    location for the velocity features: the distance to and from it is MISSING, never NaN."""
    broken = enriched("y", 60, 10, "m2", card="z")
    broken.merchant.lat = float("nan")
    history = velocity.CardHistory()
    rows = {}
    for record in (enriched("x", 0, 10, "m1", card="z"), broken, enriched("w", 120, 10, "m1", card="z")):
        event = velocity.event_of(record)
        rows[record.transaction.transaction_id] = history.take(event)
    assert rows["y"][12:14] == [MISSING, MISSING] and rows["w"][12:14] == [MISSING, MISSING]
    assert rows["w"][:3] == [2.0, 2.0, 2.0]  # y still counts


def test_without_an_order_wait_an_on_time_record_behind_a_released_one_is_counted_out_of_order(clock, prism_binary):
    """The same arrival as above with no wait: d and e are released before c comes, so c is scored
    from a and b only (what came before it), d and e are not revised, and c is counted."""
    p, out = c_after_d_and_e(clock, watermark=T0 + 7200 + 60, order_wait_seconds=0)
    got_c = out | "C" >> beam.Filter(lambda e: e.transaction.transaction_id == "c") | "ViewC" >> beam.Map(view)
    assert_that(got_c, equal_to([("c", tuple(round(float(v), 6) for v in C_AFTER_D_AND_E))]))
    result = p.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_name(metrics.VELOCITY_OUT_OF_ORDER))["counters"]
    assert sum(c.committed for c in query) == 1


def arrival_pipeline(clock, arrivals: list[list[EnrichedTransaction]], shards: int = 4):
    """The records through 35_velocity on Prism on arrival, each list of `arrivals` one TestStream
    step (a bundle or more), the watermark kept behind all of them."""
    stream = TestStream(coder=ProtoCoder(EnrichedTransaction)).advance_watermark_to(Timestamp(T0 - 100))
    for i, step in enumerate(arrivals):
        # Prism takes what waits at a stage in event-time order: a watermark step (still behind
        # every record) between two arrivals makes it take the first before the second comes.
        stream = stream.add_elements(timed(step)).advance_watermark_to(Timestamp(T0 - 99 + i))
    stream = stream.advance_watermark_to_infinity()
    p = prism_pipeline()
    records = p | stream | beam.Map(lambda t: t).with_output_types(EnrichedTransaction)
    out, refused = records | stage.Velocity(clock, order="arrival", shards=shards)
    return p, out, refused


def out_of_order(result) -> int:
    query = result.metrics().query(MetricsFilter().with_name(metrics.VELOCITY_OUT_OF_ORDER))["counters"]
    return sum(c.committed for c in query)


def test_on_arrival_in_event_time_order_gives_the_batch_features(clock, prism_binary):
    # One record a step, so that they come in this order whatever the bundles.
    p, out, refused = arrival_pipeline(clock, [[r] for r in HISTORY])
    assert_that(out | "View" >> beam.Map(view), equal_to(expected_view()))
    assert_that(refused, equal_to([]), label="NoDeadLetters")
    result = p.run()
    result.wait_until_finish()
    assert out_of_order(result) == 0


@pytest.mark.parametrize("seed", [4, 5])
def test_on_arrival_in_a_shuffled_order_only_the_records_behind_a_later_one_differ_and_are_counted(
    clock, prism_binary, seed
):
    shuffled = HISTORY[:]
    random.Random(seed).shuffle(shuffled)
    # What arrival promises: each record scored from its card's records that came before it.
    histories: dict[str, velocity.CardHistory] = {}
    promised, behind, ahead = {}, set(), set()
    for i, record in enumerate(shuffled):
        history = histories.setdefault(record.transaction.card_id, velocity.CardHistory())
        event = velocity.event_of(record)
        if history.events and event[:3] < history.events[-1][:3]:
            behind.add(record.transaction.transaction_id)  # came after a later one of its card
        if any(r.transaction.card_id == record.transaction.card_id and velocity.event_of(r)[:3] < event[:3]
               for r in shuffled[i + 1 :]):  # fmt: skip
            ahead.add(record.transaction.transaction_id)  # came before an earlier one of its card
        promised[record.transaction.transaction_id] = tuple(round(float(v), 6) for v in history.take(event))
    assert behind, "the shuffle puts some record behind a later one of its card"
    batch = dict(expected_view())
    differ = {txn_id for txn_id, values in promised.items() if values != batch[txn_id]}
    assert differ and differ <= behind | ahead  # only the records of an out-of-order pair differ
    p, out, _ = arrival_pipeline(clock, [[r] for r in shuffled], shards=2)
    assert_that(out | "View" >> beam.Map(view), equal_to(sorted(promised.items())))
    result = p.run()
    result.wait_until_finish()
    assert out_of_order(result) == len(behind)


def run_bundle(fn, state, records):
    fn.start_bundle()
    out = []
    for shard, record in records:
        log, version = state.setdefault(shard, (FakeBag(), FakeValue()))
        for item in fn.process((shard, record), Timestamp(record.transaction.event_time.seconds), log, version):
            out.append(item.value)
    fn.finish_bundle()
    return out


def test_a_shard_is_read_back_only_when_another_writer_wrote_it_last(clock):
    state: dict = {}
    one, other = stage.ArrivalVelocityFn(clock), stage.ArrivalVelocityFn(clock)
    for fn in (one, other):
        fn.setup()
    first = run_bundle(one, state, [(0, r) for r in HISTORY[:3]])
    second = run_bundle(one, state, [(0, HISTORY[3])])
    assert state[0][0].reads == 0  # new, then written by this worker: held in memory
    # Another worker (a rebalanced key, a restart) takes the shard: it reads the log back ...
    third = run_bundle(other, state, [(0, HISTORY[4])])
    assert state[0][0].reads == 1
    # ... and the first worker, no longer the last writer, reads it back too.
    fourth = run_bundle(one, state, [(0, HISTORY[5])])
    assert state[0][0].reads == 2
    got = [view(e) for e in first + second + third + fourth]
    assert got == [row for row in expected_view() if row[0] in "abcdef"]


def test_the_log_is_rewritten_when_it_outgrows_the_contents_and_quiet_cards_are_forgotten(clock, monkeypatch):
    monkeypatch.setattr(shard_state, "COMPACT_SLACK", 8)
    fn = stage.ArrivalVelocityFn(clock)
    fn.setup()
    state: dict = {}
    many = [enriched(f"t{i:03d}", i * 1800, 10, "m1", card=f"c{i % 3}") for i in range(200)]
    run_bundle(fn, state, [(0, r) for r in many])
    log = state[0][0]
    # 200 appends over 100 hours; each card keeps its last 24 hours (16 transactions): the log is
    # rewritten whenever it passes twice what it last kept, plus 8.
    assert len(log.items) <= 2 * 48 + 8
    rebuilt = stage.CardsShard(metrics.counter(metrics.VELOCITY_CARDS_FORGOTTEN))
    for entry in log.items:
        rebuilt.replay(entry)
    held = fn.shard(0, log, state[0][1])
    assert {c: h.events for c, h in rebuilt.cards.items()} == {c: h.events for c, h in held.cards.items()}
    # the summary of amounts and first use spans more than the kept events, and survives the rewrite
    assert {c: h.summary() for c, h in rebuilt.cards.items()} == {c: h.summary() for c, h in held.cards.items()}
    assert all(h.count > len(h.events) for h in held.cards.values())
    # A card quiet for 7 days by the shard's clock is dropped at the next rewrite.
    later = [enriched(f"u{i:03d}", 200 * 1800 + 8 * DAY + i, 10, "m1", card="c0") for i in range(300)]
    run_bundle(fn, state, [(0, r) for r in later])
    cards = {entry[0] for entry in state[0][0].items}
    assert cards == {"c0"}


def test_a_restarted_stage_goes_on_from_the_kept_shards_and_remembers_a_record_read_again_once(clock, tmp_path):
    folder = str(tmp_path / "state" / stage.STAGE)
    first = stage.ArrivalVelocityFn(clock, ShardFiles(folder, 2))
    first.setup()
    before = run_bundle(first, {}, [(0, r) for r in HISTORY[:4]])
    # A restart: a new worker, the runner's state empty; what was not written is read again.
    again = stage.ArrivalVelocityFn(clock, ShardFiles(folder, 2))
    again.setup()
    state: dict = {}
    reread = run_bundle(again, state, [(0, HISTORY[3])])
    after = run_bundle(again, state, [(0, r) for r in HISTORY[4:]])
    assert [view(e) for e in before + after] == expected_view()  # as one run
    # scored as the first time (the amount's z-score to rounding: its own amount taken back out)
    assert [view(e) for e in reread] == [view(before[3])]
    # The kept entries went to the runner's state too, and the records read again were not added.
    entries = state[0][0].items
    assert len(entries) == len(HISTORY) and len({entry[1][2] for entry in entries}) == len(HISTORY)
    rebuilt = stage.CardsShard(metrics.counter(metrics.VELOCITY_CARDS_FORGOTTEN))
    for entry in ShardFiles(folder, 2).load(0):
        rebuilt.replay(entry)
    held = again.shard(0, state[0][0], state[0][1])
    assert {c: h.events for c, h in rebuilt.cards.items()} == {c: h.events for c, h in held.cards.items()}


def test_a_rewritten_log_rewrites_the_kept_file(clock, monkeypatch, tmp_path):
    monkeypatch.setattr(shard_state, "COMPACT_SLACK", 8)
    keeper = ShardFiles(str(tmp_path / "state"), 1)
    fn = stage.ArrivalVelocityFn(clock, keeper)
    fn.setup()
    state: dict = {}
    many = [enriched(f"t{i:03d}", i * 1800, 10, "m1", card=f"c{i % 3}") for i in range(200)]
    for part in range(0, 200, 20):  # ten bundles
        run_bundle(fn, state, [(0, r) for r in many[part : part + 20]])
    # the file holds what the runner's log holds: rewritten with it, appended after it
    assert keeper.load(0) == state[0][0].items
    assert len(state[0][0].items) < 200
