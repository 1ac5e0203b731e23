"""Per-card velocity features: one implementation for 35_velocity (batch and streaming) and training.

A transaction's velocity features come only from the same card's transactions that come before it
in event time (ties broken by transaction_id): a transaction never sees itself or a later one.

    v_count_{10m,1h,24h}        earlier transactions less than 10 min / 1 h / 24 h before it
    v_sum_eur_{10m,1h,24h}      their amounts in EUR (unknown rates count as 0)
    v_merchants_{1h,24h}        distinct merchants among them
    v_countries_{1h,24h}        distinct countries among them
    v_seconds_since_prev        event time since the card's previous transaction
    v_amount_to_median10        this amount / the median of the card's last 10 amounts, in EUR
    v_prev_distance_km          great-circle distance from the previous transaction's merchant
    v_prev_speed_kmh            that distance over the time between them (at least one minute)

and, from a summary of every transaction the card remembers (fs-v3; CARD_NAMES):

    v_amount_log_z              log(1 + amount in EUR) as a z-score against the card's earlier
                                amounts (their mean and standard deviation, the latter at least
                                0.1); MISSING before the card has two amounts
    v_days_since_first          days since the card's first remembered transaction (0 for its first)

What a card remembers is bounded: the transactions of the 24 hours before its latest one, and at
least its last 10, and the summary (first use, count, mean and spread of its log amounts) of all
it has remembered. A card quiet for FORGET_AFTER_SECONDS (7 days) is forgotten, summary included:
its next transaction has no history (MISSING where a feature needs one). The history is a list of plain
tuples, `Event`, kept sorted, so that it is cheap to hold in Beam state.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from functools import reduce
from operator import add, itemgetter
from typing import NamedTuple

from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction, ProfileKind
from pipeline.shared.features import MISSING, amount_eur, haversine_km

VELOCITY_NAMES = (
    "v_count_10m",
    "v_count_1h",
    "v_count_24h",
    "v_sum_eur_10m",
    "v_sum_eur_1h",
    "v_sum_eur_24h",
    "v_merchants_1h",
    "v_merchants_24h",
    "v_countries_1h",
    "v_countries_24h",
    "v_seconds_since_prev",
    "v_amount_to_median10",
    "v_prev_distance_km",
    "v_prev_speed_kmh",
)
CARD_NAMES = ("v_amount_log_z", "v_days_since_first")
ALL_NAMES = VELOCITY_NAMES + CARD_NAMES  # what 35_velocity attaches, whatever the feature set
VERSION = "velocity-v2"  # the velocity part of a record, 35_velocity's FeatureVector
MIN_LOG_STD = 0.1
TEN_MINUTES, HOUR, DAY = 600, 3600, 86400
KEEP_SECONDS = DAY  # the longest horizon
KEEP_LAST = 10  # the median of the last 10 amounts
FORGET_AFTER_SECONDS = 7 * 86400
MIN_SPEED_SECONDS = 60.0
_MERCHANT = ProfileKind.PROFILE_KIND_MERCHANT


class Event(NamedTuple):
    """What a card remembers of one transaction. Sorted by (seconds, nanos, transaction_id)."""

    seconds: int
    nanos: int
    transaction_id: str
    eur: float  # MISSING when the currency has no reference rate
    merchant_id: str
    country: str
    lat: float
    lon: float
    located: bool  # the merchant's profile was found with a finite lat/lon


def attach(enriched: EnrichedTransaction, values: list[float]) -> None:
    """Sets `enriched.velocity` to `values` (replacing any it had), named and versioned."""
    enriched.ClearField("velocity")
    vector = enriched.velocity
    vector.feature_set_version = VERSION
    vector.names.extend(ALL_NAMES)
    vector.values.extend(values)


def event_of(enriched: EnrichedTransaction) -> Event:
    txn = enriched.transaction
    merchant = enriched.merchant
    located = _MERCHANT not in enriched.missing_profiles and math.isfinite(merchant.lat) and math.isfinite(merchant.lon)
    return Event(
        txn.event_time.seconds,
        txn.event_time.nanos,
        txn.transaction_id,
        amount_eur(txn.amount.minor_units, txn.amount.currency),
        txn.merchant_id,
        txn.country,
        merchant.lat if located else 0.0,
        merchant.lon if located else 0.0,
        located,
    )


def seconds_between(later: Event, earlier: Event) -> float:
    return (later.seconds - earlier.seconds) + (later.nanos - earlier.nanos) / 1e9


def _median(values: list[float]) -> float:
    """The median (0.0 for none), as statistics.median gives it."""
    if not values:
        return 0.0
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def features(earlier: Sequence[Event], event: Event) -> list[float]:
    """The velocity features of `event` from `earlier`: the card's remembered transactions that
    come before it, sorted. In VELOCITY_NAMES order."""
    if earlier and seconds_between(event, earlier[-1]) >= FORGET_AFTER_SECONDS:
        earlier = ()
    windows = _looped_windows if len(earlier) <= LOOP_UP_TO else _sliced_windows
    values = windows(earlier, event)
    since = distance = speed = to_median = MISSING
    if earlier:
        previous = earlier[-1]
        since = seconds_between(event, previous)
        if event.located and previous.located:
            distance = haversine_km(previous.lat, previous.lon, event.lat, event.lon)
            speed = distance / max(since, MIN_SPEED_SECONDS) * 3600.0
        median = _median([past.eur for past in earlier[-KEEP_LAST:] if past.eur >= 0])
        if event.eur >= 0 and median > 0:
            to_median = event.eur / median
    values += (since, to_median, distance, speed)
    return values


# Up to this many remembered transactions, the windows are counted in one loop over them; beyond,
# by bisecting for each window's start and summing and counting its slices with C loops (map, set,
# reduce): about a third of the loop's time for a busy card (a card under a testing attack, a
# backlog squeezed into minutes: 44 µs against 119 for 300 transactions in the day, 137 against 394
# for 1,000; the two cross at about 12). Both give the same bits: the sums add the same amounts in
# the same order (latest first).
LOOP_UP_TO = 12
_EUR, _MERCHANT_ID, _COUNTRY = itemgetter(3), itemgetter(4), itemgetter(5)


def _looped_windows(earlier: Sequence[Event], event: Event) -> list[float]:
    """Counts, sums and distinct merchants and countries of the 10 min, 1 h and 24 h windows, in
    VELOCITY_NAMES order."""
    count_10m = count_1h = count_24h = 0
    sum_10m = sum_1h = sum_24h = 0.0
    merchants_1h: set[str] = set()
    merchants_24h: set[str] = set()
    countries_1h: set[str] = set()
    countries_24h: set[str] = set()
    for past in reversed(earlier):
        gap = seconds_between(event, past)
        if gap >= KEEP_SECONDS:
            break
        eur = past.eur if past.eur > 0 else 0.0
        count_24h += 1
        sum_24h += eur
        merchants_24h.add(past.merchant_id)
        countries_24h.add(past.country)
        if gap < HOUR:
            count_1h += 1
            sum_1h += eur
            merchants_1h.add(past.merchant_id)
            countries_1h.add(past.country)
            if gap < TEN_MINUTES:
                count_10m += 1
                sum_10m += eur
    return [
        float(count_10m),
        float(count_1h),
        float(count_24h),
        sum_10m,
        sum_1h,
        sum_24h,
        float(len(merchants_1h)),
        float(len(merchants_24h)),
        float(len(countries_1h)),
        float(len(countries_24h)),
    ]


def _sliced_windows(earlier: Sequence[Event], event: Event) -> list[float]:
    """What _looped_windows gives, from each window's slice. A transaction is in the window of W
    seconds when its (seconds, nanos) is after (event seconds - W, event nanos): the first such is
    found by bisecting for (event seconds - W, event nanos + 1) (an Event sorts after the pair it
    starts with)."""
    n = len(earlier)
    seconds, after = event.seconds, event.nanos + 1
    i24 = bisect.bisect_left(earlier, (seconds - KEEP_SECONDS, after))
    i1 = bisect.bisect_left(earlier, (seconds - HOUR, after), i24)
    i10 = bisect.bisect_left(earlier, (seconds - TEN_MINUTES, after), i1)
    amounts = list(map(_EUR, reversed(earlier[i24:n])))  # latest first
    sums = _window_sums(amounts, n - i10, n - i1)
    if not (min(amounts, default=1.0) > 0.0 and sums[-1] == sums[-1]):  # an unknown (MISSING), 0 or NaN amount
        sums = _window_sums([x if x > 0 else 0.0 for x in amounts], n - i10, n - i1)  # as the loop counts them
    sum_10m, sum_1h, sum_24h = sums
    hour, older = earlier[i1:n], earlier[i24:i1]
    merchants_1h, countries_1h = set(map(_MERCHANT_ID, hour)), set(map(_COUNTRY, hour))
    return [
        float(n - i10),
        float(n - i1),
        float(n - i24),
        sum_10m,
        sum_1h,
        sum_24h,
        float(len(merchants_1h)),
        float(len(merchants_1h.union(map(_MERCHANT_ID, older)))),
        float(len(countries_1h)),
        float(len(countries_1h.union(map(_COUNTRY, older)))),
    ]


def _window_sums(amounts: list[float], in_10m: int, in_1h: int) -> tuple[float, float, float]:
    """The 10 min, 1 h and 24 h sums of `amounts` (latest first; the first `in_10m` are in the 10
    min window, the first `in_1h` in the hour), each added one by one in that order, as the loop."""
    sum_10m = reduce(add, amounts[:in_10m], 0.0)
    sum_1h = reduce(add, amounts[in_10m:in_1h], sum_10m)
    return sum_10m, sum_1h, reduce(add, amounts[in_1h:], sum_1h)


class CardHistory:
    """One card's remembered transactions, sorted, bounded by `remember`, and the summary of all
    it has remembered: (first event seconds, count of known amounts, mean and sum of squared
    deviations of their log amounts), kept by Welford's update."""

    __slots__ = ("count", "events", "first", "m2", "mean")

    def __init__(self, events: Sequence[Event] = (), summary: tuple[int, int, float, float] | None = None):
        self.events: list[Event] = list(events)
        if summary is None:
            summary = _summary_of(self.events)
        self.first, self.count, self.mean, self.m2 = summary

    @classmethod
    def restored(cls, stored) -> CardHistory:
        """The history from `stored()`'s value: None (no history) or (events, summary)."""
        if stored is None:
            return cls()
        events, summary = stored
        return cls(events, tuple(summary))

    def stored(self) -> tuple[list[Event], tuple[int, int, float, float]]:
        return self.events, self.summary()

    def summary(self) -> tuple[int, int, float, float]:
        return self.first, self.count, self.mean, self.m2

    def set_summary(self, summary: tuple[int, int, float, float]) -> None:
        self.first, self.count, self.mean, self.m2 = summary

    def score(self, event: Event) -> list[float]:
        """Features of `event` from the transactions before it (a late one sees only those; the
        summary is the card's as it stands)."""
        before = bisect.bisect_left(self.events, event[:3])
        earlier = self.events[:before] if before < len(self.events) else self.events
        values = features(earlier, event)
        if self.events and seconds_between(event, self.events[-1]) >= FORGET_AFTER_SECONDS:
            return [*values, MISSING, 0.0]  # forgotten: the card starts again
        z = MISSING
        if self.count >= 2 and event.eur >= 0:
            spread = math.sqrt(self.m2 / (self.count - 1))
            z = (math.log1p(event.eur) - self.mean) / max(spread, MIN_LOG_STD)
        days = max(0.0, (event.seconds - self.first) / DAY) if self.events else 0.0
        return [*values, z, days]

    def holds(self, event: Event) -> bool:
        """The card remembers this very transaction (same event time and transaction_id)."""
        at = bisect.bisect_left(self.events, event[:3])
        return at < len(self.events) and self.events[at][:3] == event[:3]

    def score_again(self, event: Event) -> list[float]:
        """Features of a transaction the card already remembers (read again after a restart): from
        the transactions before it, and the amount's z-score against the summary less its own
        amount (the summary cannot drop the card's later transactions it has taken since)."""
        values = self.score(event)
        if event.eur >= 0:
            n = self.count - 1
            z = MISSING
            if n >= 2:
                x = math.log1p(event.eur)
                mean = (self.count * self.mean - x) / n
                m2 = max(self.m2 - (x - mean) * (x - self.mean), 0.0)
                z = (x - mean) / max(math.sqrt(m2 / (n - 1)), MIN_LOG_STD)
            values[-2] = z
        return values

    def take(self, event: Event) -> list[float]:
        """Features of `event`, which is then remembered: the step every caller takes, in order."""
        values = self.score(event)
        self.remember(event)
        return values

    def remember(self, event: Event) -> None:
        """Adds `event` in order, then forgets what no feature of a later transaction needs."""
        events = self.events
        if events and seconds_between(event, events[-1]) >= FORGET_AFTER_SECONDS:
            events.clear()
            self.first, self.count, self.mean, self.m2 = _EMPTY
        bisect.insort(events, event)
        self._add(event)
        latest = events[-1]
        drop = 0
        while len(events) - drop > KEEP_LAST and seconds_between(latest, events[drop]) >= KEEP_SECONDS:
            drop += 1
        if drop:
            del events[:drop]

    def _add(self, event: Event) -> None:
        if event.seconds < self.first:  # _EMPTY's first is later than any event
            self.first = event.seconds
        if event.eur >= 0:
            self.count += 1
            x = math.log1p(event.eur)
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)

    def forgotten_by(self, now_seconds: int) -> bool:
        """The card has been quiet long enough to be forgotten at event time `now_seconds`."""
        return not self.events or now_seconds - self.events[-1].seconds >= FORGET_AFTER_SECONDS


_EMPTY = (2**62, 0, 0.0, 0.0)


def _summary_of(events: Sequence[Event]) -> tuple[int, int, float, float]:
    history = CardHistory((), _EMPTY)
    for event in events:
        history._add(event)
    return history.summary()
