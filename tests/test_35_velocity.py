"""35_velocity: per-card features from earlier transactions only, in event-time order.

- A card history worked out by hand (ties in event time, out-of-order arrival, a gap longer than
  every horizon, a record without a merchant profile, a second card) gives exactly the expected
  features, in batch on the FnApiRunner.
- The same records in shuffled arrival orders, in batch and through TestStream on Prism
  (streaming: state and event-time timers), give identical features; a late record follows
  streaming.late_policy; a card's state is forgotten once it has gone quiet (counted).
"""

from __future__ import annotations

import random

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
from pipeline.local import runners
from pipeline.shared import metrics, velocity
from pipeline.shared.features import MISSING, haversine_km
from pipeline.stages import s35_velocity as stage
from tests.helpers import transaction

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


NONE = [0.0] * 10 + [MISSING] * 4
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
    "b": [1, 1, 1, 10, 10, 10, 1, 1, 1, 1, 0, 20 / 10, km("m1", "m2"), km("m1", "m2") / 60 * 3600],
    "c": [2, 2, 2, 30, 30, 30, 2, 2, 1, 1, 300, 30 / 15, km("m2", "m1"), km("m2", "m1") / 300 * 3600],
    "d": [0, 3, 3, 0, 60, 60, 2, 2, 1, 1, 1500, 40 / 20, km("m1", "m3"), km("m1", "m3") / 1500 * 3600],
    "e": [0, 0, 4, 0, 0, 100, 0, 3, 0, 2, 5400, 50 / 25, km("m3", "m1"), km("m3", "m1") / 5400 * 3600],
    "f": NONE,
    "g": [1, 1, 1, 60, 60, 60, 1, 1, 1, 1, 120, 30 / 60, MISSING, MISSING],
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
    out, refused = records | stage.Velocity(clock)
    assert_that(out | "View" >> beam.Map(view), equal_to(expected_view()))
    assert_that(refused, equal_to([]), label="NoDeadLetters")
    result = p.run()
    result.wait_until_finish()
    # Both cards went quiet for longer than FORGET_AFTER_SECONDS before the end of time.
    assert forgotten(result) == 2


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
    out, _ = records | stage.Velocity(clock)
    d_without_c = [0, 2, 2, 0, 30, 30, 2, 2, 1, 1, 1800, 40 / 15, km("m2", "m3"), km("m2", "m3") / 1800 * 3600]
    e_without_c = [0, 0, 3, 0, 0, 70, 0, 3, 0, 2, 5400, 50 / 20, km("m3", "m1"), km("m3", "m1") / 5400 * 3600]
    expected = {
        "a": EXPECTED["a"],
        "b": EXPECTED["b"],
        "c": EXPECTED["c"],  # sees a and b, not d and e, which come after it in event time
        "d": d_without_c,
        "e": e_without_c,
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
    out, _ = records | stage.Velocity(clock, order_wait_seconds=order_wait_seconds)
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
    assert rows["y"][-2:] == [MISSING, MISSING] and rows["w"][-2:] == [MISSING, MISSING]
    assert rows["w"][:3] == [2.0, 2.0, 2.0]  # y still counts


def test_without_an_order_wait_an_on_time_record_behind_a_released_one_is_counted_out_of_order(clock, prism_binary):
    """The same arrival as above with no wait: d and e are released before c comes, so c is scored
    from a and b only (what came before it), d and e are not revised, and c is counted."""
    p, out = c_after_d_and_e(clock, watermark=T0 + 7200 + 60, order_wait_seconds=0)
    got_c = out | "C" >> beam.Filter(lambda e: e.transaction.transaction_id == "c") | "ViewC" >> beam.Map(view)
    assert_that(got_c, equal_to([row for row in expected_view() if row[0] == "c"]))
    result = p.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_name(metrics.VELOCITY_OUT_OF_ORDER))["counters"]
    assert sum(c.committed for c in query) == 1
