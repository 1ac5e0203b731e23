"""The stateless fraud features: one implementation for serving (40_features) and training.

FEATURE_NAMES are those of every feature set; HOLDER_NAMES are fs-v3's additions (the card
holder's age and local hour, the exact merchant category code), computed by `holder`.

Every feature is a plain function of the transaction and its two profiles, deterministic and free
of I/O. The list is named and ordered; a model is trained on exactly FEATURE_NAMES of
FEATURE_SET_VERSION and the predict stage refuses a model card that names another version.
Unknown inputs (a missing profile, a currency without a reference rate) are MISSING (-1.0), a
value the model sees in training too.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from contracts.riskpipe.v1.enriched_transaction_pb2 import CustomerProfile, MerchantProfile
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared.reference import currency_minor_units, eur_per_unit

FEATURE_NAMES = (
    "amount_eur_log",  # log(1 + amount in EUR)
    "amount_to_usual",  # amount / the card holder's usual amount, both in EUR
    "local_hour",  # hour of day where the card was used (merchant's time zone)
    "is_foreign",  # 1 when the country differs from the card holder's home country
    "home_distance_km",  # great-circle distance from the card holder's home to the merchant
    "merchant_risk",  # the merchant's smoothed fraud rate
    "channel",  # Channel enum number
    "mcc_group",  # coarse merchant-category group, see MCC_GROUPS
    "account_age_days",  # age of the card holder's account
    "customer_profile_missing",
    "merchant_profile_missing",
)
HOLDER_NAMES = (
    "holder_age_years",  # the card holder's age in whole years on the day of the transaction
    "holder_local_hour",  # hour of day where the card holder lives (their profile's time zone)
    "mcc_code",  # the merchant category code itself, finer than mcc_group
)
MISSING = -1.0
EARTH_RADIUS_KM = 6371.0088

# (first mcc, last mcc, group). Earlier rows win; the single-code rows are the categories that
# fraud rings favour (cash-like, gambling, transfers, digital goods).
MCC_GROUPS: tuple[tuple[int, int, int], ...] = (
    (6051, 6051, 10),  # quasi-cash, crypto
    (7995, 7995, 11),  # gambling
    (4829, 4829, 12),  # money transfer
    (5816, 5816, 13),  # digital games
    (5967, 5967, 14),  # direct marketing, inbound telemarketing
    (6010, 6011, 15),  # cash disbursement, ATM
    (5732, 5732, 16),  # electronics
    (5944, 5944, 17),  # jewellery
    (3000, 3999, 1),  # airlines, car rental, hotels (brand codes)
    (4000, 4799, 2),  # transport
    (4800, 4999, 3),  # telecom, utilities
    (5000, 5499, 4),  # wholesale, grocery
    (5500, 5599, 5),  # automotive, fuel
    (5600, 5699, 6),  # clothing
    (5700, 5999, 7),  # other retail
    (7000, 7999, 8),  # lodging, services, entertainment
    (8000, 9999, 9),  # professional, government
)


@functools.lru_cache(maxsize=16384)
def mcc_group(mcc: str) -> int:
    if not mcc.isdigit():
        return 0
    code = int(mcc)
    for first, last, group in MCC_GROUPS:
        if first <= code <= last:
            return group
    return 0


@functools.cache
def _zone(name: str) -> dt.tzinfo:
    if not name:
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def amount_eur(minor_units: int, currency: str) -> float:
    rate = eur_per_unit().get(currency)
    exponent = currency_minor_units().get(currency)
    if rate is None or exponent is None:
        return MISSING
    return minor_units / (10**exponent) * rate


def local_hour(epoch_seconds: int, timezone: str) -> float:
    return float(dt.datetime.fromtimestamp(epoch_seconds, _zone(timezone)).hour)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    if a > 1.0:  # rounding; written so that a NaN input stays NaN (min() would hide it)
        a = 1.0
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def compute(
    txn: Transaction,
    customer: CustomerProfile,
    merchant: MerchantProfile,
    customer_missing: bool,
    merchant_missing: bool,
) -> list[float]:
    """The feature values, in FEATURE_NAMES order."""
    eur = amount_eur(txn.amount.minor_units, txn.amount.currency)
    amount_log = math.log1p(eur) if eur >= 0 else MISSING
    if customer_missing:
        to_usual = is_foreign = distance = age = MISSING
    else:
        usual = amount_eur(customer.usual_amount.minor_units, customer.usual_amount.currency)
        to_usual = eur / usual if eur >= 0 and usual > 0 else MISSING
        is_foreign = float(txn.country != customer.home_country)
        distance = (
            MISSING
            if merchant_missing
            else haversine_km(customer.home_lat, customer.home_lon, merchant.lat, merchant.lon)
        )
        age = float(customer.account_age_days)
    if merchant_missing:
        risk = MISSING
        timezone = customer.timezone if not customer_missing else ""
    else:
        risk = merchant.risk_score
        timezone = merchant.timezone
    return [
        amount_log,
        to_usual,
        local_hour(txn.event_time.seconds, timezone),
        is_foreign,
        distance,
        risk,
        float(txn.channel),
        float(mcc_group(txn.mcc)),
        age,
        float(customer_missing),
        float(merchant_missing),
    ]


@functools.lru_cache(maxsize=65536)
def _birth(birth_date: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(birth_date) if len(birth_date) == 10 else None
    except ValueError:
        return None


def age_years(birth_date: str, epoch_seconds: int) -> float:
    """Whole years from `birth_date` (YYYY-MM-DD) to the UTC day of `epoch_seconds`; MISSING when
    the date is empty, not a date, or after the transaction."""
    born = _birth(birth_date)
    if born is None:
        return MISSING
    day = dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).date()
    years = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
    return float(years) if years >= 0 else MISSING


def holder(txn: Transaction, customer: CustomerProfile, customer_missing: bool) -> list[float]:
    """fs-v3's holder features, in HOLDER_NAMES order."""
    mcc = float(txn.mcc) if txn.mcc.isdigit() else MISSING
    if customer_missing:
        return [MISSING, MISSING, mcc]
    seconds = txn.event_time.seconds
    hour = local_hour(seconds, customer.timezone) if customer.timezone else MISSING
    return [age_years(customer.birth_date, seconds), hour, mcc]
