"""Synthetic card transactions with ground truth, for the sample data, the tests and the benchmark.

    python -m tools.generate --records N --seed S --invalid-fraction F --out DIR [--cards C]

writes DIR/transactions.jsonl, DIR/customers.jsonl, DIR/merchants.jsonl and DIR/labels.jsonl,
and DIR/generator.json (how it was made, so a model card can name its training data).
The same seed gives the same bytes. What is in it:
- customers in 16 countries with their currency, time zone and home location, each with a
  log-normal usual purchase; cards and merchants follow power-law popularity;
- transactions mostly at home, in the merchant's currency, at local times of day that peak in
  the afternoon; amounts log-normal around the card holder's usual;
- about 1.5% fraud in four patterns the stateless features can see (card-not-present sprees,
  mostly at risky merchants; night-time ATM withdrawals abroad; new-account take-overs buying
  electronics or jewellery; skimmed cards used far from home) and a fifth, "stealth", that no
  feature can;
- about 1.5% more in three patterns that only a card's history shows: card testing (several tiny
  online amounts a minute or two apart, then a large one within minutes), bursts of ordinary
  purchases at many merchants within an hour, and impossible travel (an ordinary purchase in
  another country minutes after one at home);
- about 0.9% more in three patterns that need fs-v3's holder features: money transfers and gift
  cards bought for scammers by older card holders in their daytime, online purchases abroad at
  the card holder's night (the merchant's daytime), and gift-card shops (an MCC that shares its
  coarse group with ordinary retail); beside them, legitimate transfers by younger holders;
- customers carry a birth date (ages 18 to 90);
- legitimate look-alikes: large purchases, travellers abroad at any hour, noisy merchant risk,
  shopping sprees of a few purchases within two hours;
- a few cards without a customer profile (0.2%), to exercise the missing-profile policy;
- with F > 0, that fraction of lines made invalid in the INVALID_KINDS ways (broken JSON, NaN,
  control characters, lone surrogates, deep nesting, not UTF-8, not an object, wrong types,
  missing fields, rule violations, unknown codes, card numbers in clear, oversized fields,
  timestamps that are not RFC 3339, event times far in the future or before 2000), in turn, each
  labelled with its kind and the error code the job must give it.

labels.jsonl has one row per line of transactions.jsonl: line, transaction_id, is_fraud,
pattern, missing_profile and expected_error_code (null for a valid record).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import sys
import time
from zoneinfo import ZoneInfo

import numpy as np
import orjson

# Bumped whenever the same seed would give other data (the benchmark caches data by it).
GENERATOR_VERSION = 5

# country, currency, minor-unit exponent, time zone, lat, lon, weight
COUNTRIES = (
    ("FR", "EUR", 2, "Europe/Paris", 46.6, 2.4, 14),
    ("DE", "EUR", 2, "Europe/Berlin", 51.1, 10.4, 14),
    ("GB", "GBP", 2, "Europe/London", 53.0, -1.5, 12),
    ("US", "USD", 2, "America/New_York", 39.8, -86.0, 16),
    ("ES", "EUR", 2, "Europe/Madrid", 40.2, -3.6, 7),
    ("IT", "EUR", 2, "Europe/Rome", 42.8, 12.5, 7),
    ("NL", "EUR", 2, "Europe/Amsterdam", 52.2, 5.3, 5),
    ("SE", "SEK", 2, "Europe/Stockholm", 60.1, 15.0, 3),
    ("CH", "CHF", 2, "Europe/Zurich", 46.8, 8.2, 3),
    ("JP", "JPY", 0, "Asia/Tokyo", 36.2, 138.3, 5),
    ("PL", "PLN", 2, "Europe/Warsaw", 52.1, 19.4, 4),
    ("CA", "CAD", 2, "America/Toronto", 45.5, -75.0, 3),
    ("AU", "AUD", 2, "Australia/Sydney", -33.9, 151.0, 2),
    ("BR", "BRL", 2, "America/Sao_Paulo", -23.5, -46.6, 2),
    ("KW", "KWD", 3, "Asia/Kuwait", 29.3, 47.9, 1),
    ("TH", "THB", 2, "Asia/Bangkok", 13.7, 100.5, 2),
)
EUR_PER_UNIT = {
    "EUR": 1.0,
    "GBP": 1.17,
    "USD": 0.92,
    "SEK": 0.087,
    "CHF": 1.05,
    "JPY": 0.0061,
    "PLN": 0.23,
    "CAD": 0.68,
    "AUD": 0.61,
    "BRL": 0.17,
    "KWD": 3.0,
    "THB": 0.026,
}
# mcc, weight, share of e-commerce
MCCS = (
    ("5411", 22, 0.05),
    ("5812", 14, 0.02),
    ("5541", 9, 0.0),
    ("5311", 7, 0.2),
    ("5999", 6, 0.4),
    ("5732", 4, 0.5),
    ("5651", 5, 0.3),
    ("4111", 5, 0.2),
    ("4121", 3, 0.6),
    ("7011", 3, 0.5),
    ("4511", 2, 0.8),
    ("5816", 2, 1.0),
    ("5967", 1, 1.0),
    ("6051", 1, 0.9),
    ("7995", 1, 0.9),
    ("5944", 1, 0.3),
    ("4829", 1, 0.8),
    ("6011", 6, 0.0),
    ("5912", 4, 0.1),
    ("4814", 2, 0.7),
    ("5947", 2, 0.3),
)
RISKY_CNP = ("5816", "5967", "6051", "7995", "4829")
TAKEOVER = ("5732", "5944")
# "stealth" fraud looks like the card holder's ordinary purchases: no feature can see it.
PATTERNS = (
    "cnp_spree",
    "atm_night_abroad",
    "account_takeover",
    "skimmed_card",
    "stealth",
    "card_testing",
    "merchant_burst",
    "impossible_travel",
    "elder_transfer",
    "holder_night_online",
    "gift_cards",
)
CARD_TESTING, MERCHANT_BURST, IMPOSSIBLE_TRAVEL = 5, 6, 7
ELDER_TRANSFER, HOLDER_NIGHT_ONLINE, GIFT_CARDS = 8, 9, 10
# Per record: (elder transfers, holder-night online, gift cards, legitimate transfers by younger holders).
HOLDER_RATES = (0.003, 0.003, 0.0025, 0.004)
# Episodes per record: (card testing, merchant bursts, impossible travel, legitimate sprees).
EPISODE_RATES = (0.003, 0.0025, 0.008, 0.004)
START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
DAYS = 30
# Local time-of-day profile of card use: quiet at night, peak in the afternoon.
HOUR_WEIGHTS = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 4, 5, 5.5, 6, 6.5, 6, 5.8, 5.8, 6, 6.5, 6.5, 6, 5, 4, 3, 1.8]
)
INVALID_KINDS = (
    ("broken_json", "ERROR_CODE_MALFORMED_JSON"),
    ("not_utf8", "ERROR_CODE_NOT_UTF8"),
    ("not_an_object", "ERROR_CODE_NOT_AN_OBJECT"),
    ("amount_as_decimal_string", "ERROR_CODE_WRONG_TYPE"),
    ("missing_card_id", "ERROR_CODE_MISSING_FIELD"),
    ("unknown_currency", "ERROR_CODE_RULE_VIOLATION"),
    ("unknown_country", "ERROR_CODE_RULE_VIOLATION"),
    ("negative_amount", "ERROR_CODE_RULE_VIOLATION"),
    ("unknown_channel", "ERROR_CODE_UNPARSEABLE_VALUE"),
    ("unparseable_event_time", "ERROR_CODE_UNPARSEABLE_VALUE"),
    ("event_time_far_future", "ERROR_CODE_EVENT_TIME_IN_FUTURE"),
    ("card_number_in_clear", "ERROR_CODE_RULE_VIOLATION"),
    ("event_time_iso_basic_format", "ERROR_CODE_UNPARSEABLE_VALUE"),
    ("event_time_without_offset", "ERROR_CODE_UNPARSEABLE_VALUE"),
    ("missing_amount", "ERROR_CODE_MISSING_FIELD"),
    ("amount_as_float", "ERROR_CODE_WRONG_TYPE"),
    ("amount_beyond_int64", "ERROR_CODE_RULE_VIOLATION"),
    ("nan_literal", "ERROR_CODE_MALFORMED_JSON"),
    ("control_character_in_string", "ERROR_CODE_MALFORMED_JSON"),
    ("lone_surrogate_escape", "ERROR_CODE_MALFORMED_JSON"),
    ("deeply_nested", "ERROR_CODE_MALFORMED_JSON"),
    ("transaction_id_too_long", "ERROR_CODE_RULE_VIOLATION"),
    ("mcc_not_four_digits", "ERROR_CODE_RULE_VIOLATION"),
    ("event_time_before_2000", "ERROR_CODE_RULE_VIOLATION"),
    ("huge_payload", "ERROR_CODE_RULE_VIOLATION"),
)
CHANNELS = ("POS", "ECOMMERCE", "ATM", "CONTACTLESS", "MOTO")


def _utc_offsets() -> np.ndarray:
    mid = dt.datetime(2026, 10, 15, 12)
    return np.array([(ZoneInfo(c[3]).utcoffset(mid) or dt.timedelta()).total_seconds() for c in COUNTRIES])


def _power_law(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    weights /= weights.sum()
    order = rng.permutation(n)
    return order[rng.choice(n, size=size, p=weights)]


def generate(records: int, seed: int, invalid_fraction: float, out: pathlib.Path, cards: int | None = None) -> dict:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    n_countries = len(COUNTRIES)
    country_w = np.array([c[6] for c in COUNTRIES], dtype=float)
    country_w /= country_w.sum()
    offsets = _utc_offsets()

    # Customers (one card each).
    n_cust = cards or max(200, records // 20)
    cust_country = rng.choice(n_countries, size=n_cust, p=country_w)
    cust_lat = np.array([COUNTRIES[c][4] for c in cust_country]) + rng.normal(0, 1.5, n_cust)
    cust_lon = np.array([COUNTRIES[c][5] for c in cust_country]) + rng.normal(0, 2.0, n_cust)
    usual_eur = rng.lognormal(np.log(35), 0.6, n_cust)
    age_days = rng.integers(5, 4000, n_cust)
    # A stream of its own, so that birth dates do not move the draws above.
    holder_rng = np.random.default_rng([seed, GENERATOR_VERSION])
    birth = (START - dt.timedelta(days=1)).date().toordinal() - (holder_rng.uniform(18, 90, n_cust) * 365.25).astype(
        int
    )
    with open(out / "customers.jsonl", "wb") as f:
        for i in range(n_cust):
            c = COUNTRIES[cust_country[i]]
            usual_minor = max(1, int(round(usual_eur[i] / EUR_PER_UNIT[c[1]] * 10 ** c[2])))
            f.write(
                orjson.dumps(
                    {
                        "card_id": f"c{i:07d}",
                        "home_country": c[0],
                        "home_lat": round(float(np.clip(cust_lat[i], -90, 90)), 4),
                        "home_lon": round(float(np.clip(cust_lon[i], -180, 180)), 4),
                        "usual_amount": {"minor_units": str(usual_minor), "currency": c[1]},
                        "timezone": c[3],
                        "account_age_days": int(age_days[i]),
                        "birth_date": dt.date.fromordinal(int(birth[i])).isoformat(),
                    }
                )
                + b"\n"
            )

    # Merchants.
    n_merch = max(100, records // 100)
    merch_country = rng.choice(n_countries, size=n_merch, p=country_w)
    mcc_w = np.array([m[1] for m in MCCS], dtype=float)
    mcc_w /= mcc_w.sum()
    merch_mcc = rng.choice(len(MCCS), size=n_merch, p=mcc_w)
    merch_lat = np.array([COUNTRIES[c][4] for c in merch_country]) + rng.normal(0, 1.5, n_merch)
    merch_lon = np.array([COUNTRIES[c][5] for c in merch_country]) + rng.normal(0, 2.0, n_merch)
    risky = rng.random(n_merch) < 0.06
    # The merchant's observed fraud rate: higher for the risky ones, but a noisy estimate (small
    # merchants have few transactions), so some risky merchants look clean and the reverse.
    merch_risk = np.where(risky, rng.beta(2, 12, n_merch), rng.beta(1.2, 120, n_merch))
    merch_risk = np.clip(merch_risk * rng.lognormal(0, 0.5, n_merch), 0, 1)
    with open(out / "merchants.jsonl", "wb") as f:
        for j in range(n_merch):
            c = COUNTRIES[merch_country[j]]
            f.write(
                orjson.dumps(
                    {
                        "merchant_id": f"m{j:06d}",
                        "name": f"Merchant {j}",
                        "mcc": MCCS[merch_mcc[j]][0],
                        "country": c[0],
                        "lat": round(float(np.clip(merch_lat[j], -90, 90)), 4),
                        "lon": round(float(np.clip(merch_lon[j], -180, 180)), 4),
                        "risk_score": round(float(merch_risk[j]), 4),
                        "timezone": c[3],
                    }
                )
                + b"\n"
            )
    merchants_by_country = [np.flatnonzero(merch_country == k) for k in range(n_countries)]
    merchants_by_mcc = {m[0]: np.flatnonzero(merch_mcc == i) for i, m in enumerate(MCCS)}
    risky_cnp = np.flatnonzero(np.isin(merch_mcc, [i for i, m in enumerate(MCCS) if m[0] in RISKY_CNP]) & risky)
    if len(risky_cnp) == 0:
        risky_cnp = np.flatnonzero(np.isin(merch_mcc, [i for i, m in enumerate(MCCS) if m[0] in RISKY_CNP]))
    online = np.flatnonzero(np.array([MCCS[i][2] >= 0.5 for i in merch_mcc]))
    takeover = np.flatnonzero(np.isin(merch_mcc, [i for i, m in enumerate(MCCS) if m[0] in TAKEOVER]))
    atms = merchants_by_mcc["6011"]

    # Transactions: legitimate first, then fraud overrides.
    card = _power_law(rng, n_cust, records, 0.6)
    traveller = rng.random(records) < 0.015  # legitimate: abroad, at any hour, spending more
    foreign = (rng.random(records) < 0.06) | traveller
    home = cust_country[card]
    txn_country = np.where(foreign, rng.choice(n_countries, size=records, p=country_w), home)
    merchant = np.empty(records, dtype=np.int64)
    for k in range(n_countries):
        rows = np.flatnonzero(txn_country == k)
        pool = merchants_by_country[k] if len(merchants_by_country[k]) else np.arange(n_merch)
        merchant[rows] = pool[_power_law(rng, len(pool), len(rows), 0.8)]
    ratio = rng.lognormal(0.0, 0.7, records)
    big_ticket = rng.random(records) < 0.03  # legitimate large purchases look like fraud too
    ratio[big_ticket] *= rng.uniform(3, 10, int(big_ticket.sum()))
    day = rng.integers(0, DAYS, records)
    hour = rng.choice(24, size=records, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    second_of_hour = rng.integers(0, 3600, records)
    hour[traveller] = rng.integers(0, 24, int(traveller.sum()))
    ratio[traveller] *= rng.uniform(1, 4, int(traveller.sum()))
    fraud = np.zeros(records, dtype=np.int8)
    pattern = np.full(records, -1, dtype=np.int8)
    is_fraud = rng.random(records) < 0.015
    fraud_rows = np.flatnonzero(is_fraud)
    fraud_kind = rng.choice(CARD_TESTING, size=len(fraud_rows), p=[0.24, 0.22, 0.24, 0.22, 0.08])
    for row, kind in zip(fraud_rows, fraud_kind, strict=True):
        fraud[row], pattern[row] = 1, kind
        if kind == 0:  # card-not-present spree, mostly at a risky merchant, sometimes anywhere online
            pool = risky_cnp if rng.random() < 0.6 else online
            merchant[row] = pool[rng.integers(len(pool))]
            ratio[row] = rng.uniform(1.0, 10)
        elif kind == 1:  # night-time ATM abroad
            abroad = atms[merch_country[atms] != home[row]]
            merchant[row] = (abroad if len(abroad) else atms)[rng.integers(len(abroad) if len(abroad) else len(atms))]
            ratio[row] = rng.uniform(1.5, 12)
            if rng.random() < 0.7:
                hour[row] = rng.integers(1, 5)
        elif kind == 2:  # account take-over: new account, electronics or jewellery
            young = np.flatnonzero(age_days < 90)
            if len(young):
                card[row] = young[rng.integers(len(young))]
            merchant[row] = takeover[rng.integers(len(takeover))]
            ratio[row] = rng.uniform(1.5, 15)
        elif kind == 3:  # skimmed card used far from home
            far = np.flatnonzero(merch_country != cust_country[card[row]])
            merchant[row] = far[rng.integers(len(far))]
            ratio[row] = rng.uniform(1.0, 6)
            if rng.random() < 0.6:
                hour[row] = rng.choice([0, 1, 2, 3, 21, 22, 23])
    m_country = merch_country[merchant]
    m_mcc = merch_mcc[merchant]
    event_seconds = (START.timestamp() + day * 86400 + hour * 3600 + second_of_hour - offsets[m_country]).astype(
        np.int64
    )
    _episodes(
        rng,
        (card, merchant, ratio, event_seconds, fraud, pattern),
        usual_eur,
        cust_country,
        merch_country,
        online,
        merchants_by_country,
    )
    _holder_patterns(
        holder_rng,
        (card, merchant, ratio, event_seconds, fraud, pattern),
        birth,
        cust_country,
        merch_country,
        merch_mcc,
        offsets,
    )
    m_country = merch_country[merchant]
    m_mcc = merch_mcc[merchant]
    ecommerce_share = np.array([MCCS[i][2] for i in m_mcc])
    channel_roll = rng.random(records)
    channel = np.where(
        np.array([MCCS[i][0] == "6011" for i in m_mcc]),
        2,
        np.where(channel_roll < ecommerce_share, 1, np.where(rng.random(records) < 0.45, 3, 0)),
    )
    online_fraud = (pattern == 0) | (pattern == CARD_TESTING) | (pattern == HOLDER_NIGHT_ONLINE)
    channel = np.where((fraud == 1) & online_fraud, 1, channel)
    channel = np.where((channel == 1) & (rng.random(records) < 0.03), 4, channel)
    no_profile = rng.random(records) < 0.002

    n_invalid = int(round(records * invalid_fraction))
    invalid_rows = set(rng.choice(records, size=n_invalid, replace=False).tolist()) if n_invalid else set()
    invalid_kind = {row: i % len(INVALID_KINDS) for i, row in enumerate(sorted(invalid_rows))}

    counts = {
        "records": records,
        "fraud": 0,
        "invalid": n_invalid,
        "missing_profile": 0,
        "customers": n_cust,
        "merchants": n_merch,
    }
    with open(out / "transactions.jsonl", "wb") as tf, open(out / "labels.jsonl", "wb") as lf:
        for i in range(records):
            c = COUNTRIES[m_country[i]]
            usual_minor_eur = usual_eur[card[i]] * ratio[i]
            minor = max(1, int(round(usual_minor_eur / EUR_PER_UNIT[c[1]] * 10 ** c[2])))
            card_id = f"c{card[i]:07d}" if not no_profile[i] else f"x{card[i]:07d}"
            txn = {
                "transaction_id": f"t{seed:04d}-{i:08d}",
                "card_id": card_id,
                "merchant_id": f"m{merchant[i]:06d}",
                "amount": {"minor_units": minor, "currency": c[1]},
                "event_time": dt.datetime.fromtimestamp(int(event_seconds[i]), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "channel": CHANNELS[channel[i]],
                "mcc": MCCS[m_mcc[i]][0],
                "country": c[0],
            }
            if channel[i] in (1, 3):
                txn["device_id"] = f"d{(card[i] * 7919) % 1000003:07d}"
            label = {
                "line": i + 1,
                "transaction_id": txn["transaction_id"],
                "is_fraud": bool(fraud[i]),
                "pattern": PATTERNS[pattern[i]] if fraud[i] else None,
                "missing_profile": bool(no_profile[i]),
                "expected_error_code": None,
            }
            if i in invalid_rows:
                kind, code = INVALID_KINDS[invalid_kind[i]]
                line = _corrupt(kind, txn)
                label["expected_error_code"] = code
                label["invalid_kind"] = kind
            else:
                line = orjson.dumps(txn)
                counts["fraud"] += int(fraud[i])
                counts["missing_profile"] += int(no_profile[i])
            tf.write(line + b"\n")
            lf.write(orjson.dumps(label) + b"\n")
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "records": records,
        "seed": seed,
        "invalid_fraction": invalid_fraction,
        "counts": counts,
    }
    (out / "generator.json").write_text(orjson.dumps(manifest, option=orjson.OPT_INDENT_2).decode() + "\n")
    return counts


class _FreeRows:
    """The rows still legitimate, in a random order, handed out without repeats."""

    def __init__(self, rng: np.random.Generator, fraud: np.ndarray):
        self._free = rng.permutation(np.flatnonzero(fraud == 0))
        self._taken = 0

    def take(self, n: int) -> np.ndarray:
        picked = self._free[self._taken : self._taken + n]
        self._taken += n
        return picked


def _episodes(rng, rows, usual_eur, cust_country, merch_country, online, merchants_by_country) -> None:
    """Rewrites some legitimate rows in place into episodes that only a card's history shows (and
    legitimate sprees that look a little like them). `rows` are the per-row arrays card, merchant,
    ratio, event_seconds, fraud and pattern."""
    card, merchant, ratio, event_seconds, fraud, pattern = rows
    records = len(card)
    take = _FreeRows(rng, fraud).take
    testing, bursts, travel, sprees = (int(records * rate) for rate in EPISODE_RATES)
    for _ in range(testing):
        group = take(int(rng.integers(5, 10)))
        if len(group) < 2:
            return
        who, start = card[group[0]], event_seconds[group[0]]
        card[group] = who
        steps = np.cumsum(rng.uniform(20, 150, len(group)))
        steps[-1] += rng.uniform(60, 600)
        event_seconds[group] = start + steps.astype(np.int64)
        merchant[group] = online[rng.integers(len(online), size=len(group))]
        ratio[group[:-1]] = rng.uniform(0.3, 2.0, len(group) - 1) / usual_eur[who]
        ratio[group[-1]] = rng.uniform(3, 12)
        fraud[group], pattern[group] = 1, CARD_TESTING
    for is_fraud, count, size, span in ((1, bursts, (5, 10), 3600), (0, sprees, (2, 5), 7200)):
        for _ in range(count):
            group = take(int(rng.integers(*size)))
            if len(group) < 2:
                return
            who, start = card[group[0]], event_seconds[group[0]]
            card[group] = who
            event_seconds[group] = start + np.sort(rng.integers(0, span, len(group)))
            pool = merchants_by_country[cust_country[who]]
            if len(pool) >= len(group):
                merchant[group] = rng.choice(pool, size=len(group), replace=False)
            ratio[group] = rng.lognormal(0.5 if is_fraud else 0.2, 0.5, len(group))
            if is_fraud:
                fraud[group], pattern[group] = 1, MERCHANT_BURST
    for _ in range(travel):
        picked = take(2)
        if len(picked) < 2:
            return
        anchor, row = picked
        who = card[anchor]
        far = np.flatnonzero(merch_country != merch_country[merchant[anchor]])
        card[row] = who
        merchant[row] = far[rng.integers(len(far))]
        event_seconds[row] = event_seconds[anchor] + int(rng.uniform(300, 5400))
        ratio[row] = rng.lognormal(0.1, 0.5)
        fraud[row], pattern[row] = 1, IMPOSSIBLE_TRAVEL


def _holder_patterns(rng, rows, birth, cust_country, merch_country, merch_mcc, offsets) -> None:
    """Rewrites some legitimate rows in place into the patterns that need the card holder's age and
    local hour and the exact MCC, and legitimate transfers that look like the first. `rows` are the
    per-row arrays card, merchant, ratio, event_seconds, fraud and pattern."""
    card, merchant, ratio, event_seconds, fraud, pattern = rows
    records = len(card)
    take = _FreeRows(rng, fraud).take
    elder_n, night_n, gift_n, legit_n = (int(records * rate) for rate in HOLDER_RATES)
    start_day = START.date().toordinal()
    age = (start_day - birth) / 365.25
    elders, younger = np.flatnonzero(age >= 68), np.flatnonzero(age < 60)
    transfers = np.flatnonzero(np.isin(merch_mcc, [i for i, m in enumerate(MCCS) if m[0] in ("4829", "5947")]))
    gift_shops = np.flatnonzero(merch_mcc == next(i for i, m in enumerate(MCCS) if m[0] == "5947"))
    online = np.flatnonzero(np.array([MCCS[i][2] >= 0.5 for i in merch_mcc]))
    if not (len(elders) and len(younger) and len(transfers) and len(gift_shops)):
        return

    def at_holder_hour(row: int, hours) -> None:
        day = (event_seconds[row] - int(START.timestamp())) // 86400
        hour = rng.choice(hours)
        home = cust_country[card[row]]
        local = START.timestamp() + day * 86400 + hour * 3600 + rng.integers(0, 3600)
        event_seconds[row] = int(local - offsets[home])

    for row in take(elder_n):
        card[row] = elders[rng.integers(len(elders))]
        merchant[row] = transfers[rng.integers(len(transfers))]
        ratio[row] = rng.uniform(2, 8)
        at_holder_hour(row, np.arange(9, 18))
        fraud[row], pattern[row] = 1, ELDER_TRANSFER
    for row in take(legit_n):
        card[row] = younger[rng.integers(len(younger))]
        merchant[row] = transfers[rng.integers(len(transfers))]
        ratio[row] = rng.uniform(1, 8)
        at_holder_hour(row, np.arange(8, 23))
    for row in take(night_n):
        abroad = online[merch_country[online] != cust_country[card[row]]]
        merchant[row] = abroad[rng.integers(len(abroad))] if len(abroad) else online[rng.integers(len(online))]
        ratio[row] = rng.lognormal(0.3, 0.5)
        at_holder_hour(row, np.arange(1, 5))
        fraud[row], pattern[row] = 1, HOLDER_NIGHT_ONLINE
    for row in take(gift_n):
        merchant[row] = gift_shops[rng.integers(len(gift_shops))]
        ratio[row] = rng.uniform(1.5, 6)
        fraud[row], pattern[row] = 1, GIFT_CARDS


def _card_number(seed_digits: str) -> str:
    """A 16-digit number that passes the Luhn check, as a card number in clear would."""
    body = ("4" + seed_digits)[:15].ljust(15, "0")
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


def _corrupt(kind: str, txn: dict) -> bytes:
    raw = _corrupt_raw(kind, txn)
    if raw is not None:
        return raw
    bad = {**txn, "amount": dict(txn["amount"])}
    _mutate(kind, bad, txn)
    return orjson.dumps(bad)


def _corrupt_raw(kind: str, txn: dict) -> bytes | None:
    """Kinds that are broken at the byte level; None for the others."""
    if kind == "nan_literal":
        return orjson.dumps(txn).replace(b'"minor_units":%d' % txn["amount"]["minor_units"], b'"minor_units":NaN')
    if kind == "control_character_in_string":
        return orjson.dumps(txn).replace(b'"merchant_id":"', b'"merchant_id":"\x00')
    if kind == "lone_surrogate_escape":
        return orjson.dumps(txn).replace(b'"merchant_id":"', b'"merchant_id":"\\ud800')
    if kind == "deeply_nested":
        return orjson.dumps(txn)[:-1] + b',"extra":' + b"[" * 5000 + b"]" * 5000 + b"}"
    if kind == "broken_json":
        return orjson.dumps(txn)[:-7]
    if kind == "not_utf8":
        return orjson.dumps(txn).replace(b'"country":"', b'"country":"\xff\xfe')
    if kind == "not_an_object":
        return orjson.dumps([txn["transaction_id"], txn["amount"]["minor_units"]])
    return None


def _mutate(kind: str, bad: dict, txn: dict) -> None:
    if kind == "amount_as_decimal_string":
        bad["amount"]["minor_units"] = f"{txn['amount']['minor_units'] / 100:.2f}"
    elif kind == "missing_card_id":
        del bad["card_id"]
    elif kind == "unknown_currency":
        bad["amount"]["currency"] = "EUX"
    elif kind == "unknown_country":
        bad["country"] = "QQ"  # not an assigned ISO-3166 code
    elif kind == "negative_amount":
        bad["amount"]["minor_units"] = -abs(txn["amount"]["minor_units"])
    elif kind == "unknown_channel":
        bad["channel"] = "CARRIER_PIGEON"
    elif kind == "unparseable_event_time":
        bad["event_time"] = txn["event_time"].replace("T", " at ").replace("Z", "")
    elif kind == "event_time_far_future":
        bad["event_time"] = "2099" + txn["event_time"][4:]
    elif kind == "card_number_in_clear":
        bad["card_id"] = _card_number("".join(ch for ch in txn["card_id"] + txn["transaction_id"] if ch.isdigit()))
    elif kind == "event_time_iso_basic_format":
        bad["event_time"] = txn["event_time"].replace("-", "").replace(":", "")
    elif kind == "event_time_without_offset":
        bad["event_time"] = txn["event_time"].removesuffix("Z")
    elif kind == "missing_amount":
        del bad["amount"]
    elif kind == "amount_as_float":
        bad["amount"]["minor_units"] = txn["amount"]["minor_units"] + 0.5
    elif kind == "amount_beyond_int64":
        bad["amount"]["minor_units"] = 2**63 + txn["amount"]["minor_units"]
    elif kind == "transaction_id_too_long":
        bad["transaction_id"] = (txn["transaction_id"] + "-") * 8
    elif kind == "mcc_not_four_digits":
        bad["mcc"] = txn["mcc"] + "0"
    elif kind == "event_time_before_2000":
        bad["event_time"] = "1999" + txn["event_time"][4:]
    elif kind == "huge_payload":
        bad["device_id"] = "d" * 8_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--invalid-fraction", type=float, default=0.0)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--cards", type=int, default=None, help="cards (customers); default records / 20")
    args = parser.parse_args(argv)
    if args.records < 1 or not 0 <= args.invalid_fraction <= 1:
        parser.error("--records must be positive and --invalid-fraction in [0, 1]")
    started = time.perf_counter()
    counts = generate(args.records, args.seed, args.invalid_fraction, args.out, args.cards)
    elapsed = time.perf_counter() - started
    print(orjson.dumps({**counts, "seconds": round(elapsed, 2), "out": os.fspath(args.out)}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
