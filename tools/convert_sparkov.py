"""Turn a labelled card history in Sparkov's shape (the columns of the public fraudTrain.csv and
fraudTest.csv, or `python -m tools.sparkov_like`'s) into the trainer's folder layout.

    python -m tools.convert_sparkov FILE.csv [FILE.csv ...] --out DIR [--profile-days 120]

writes DIR/transactions.jsonl (the job's input format), DIR/customers.jsonl, DIR/merchants.jsonl
and DIR/labels.jsonl, then `python -m tools.train --data DIR` trains on it. What is mapped:

- transaction_id is trans_num; card_id is "sp-" and the first 20 hex digits of the sha256 of
  cc_num (the job refuses card numbers in clear); merchant_id "spm-" and a hash of the name;
- amt is US dollars (minor units of USD); country US;
- event_time is trans_date_trans_time read as the card holder's local time in their state's time
  zone (unix_time is ignored: the public files shift it by years);
- category gives the channel (`_net` online, otherwise in store) and a merchant category code
  (CATEGORY_MCC), so that the job's features see the category;
- customers: home from lat/long, time zone from the state, birth_date from dob;
- merchants: category's MCC, location the mean of merch_lat/merch_long; no time zone (Sparkov
  gives none: the job's local_hour is then the UTC hour, holder_local_hour the holder's).

Profiles hold what a bank would know when the history starts being scored: the card holder's usual
amount (median), account age and each merchant's smoothed fraud rate come only from the first
--profile-days days of the history, so that nothing of the months a model is evaluated on leaks
into them. Rows that the job would refuse stay in (it refuses them with a reason).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import pathlib
import statistics
import sys
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import orjson

CATEGORY_MCC = {
    "entertainment": "7832",
    "food_dining": "5812",
    "gas_transport": "5541",
    "grocery_net": "5499",
    "grocery_pos": "5411",
    "health_fitness": "7997",
    "home": "5712",
    "kids_pets": "5995",
    "misc_net": "5969",
    "misc_pos": "5999",
    "personal_care": "7230",
    "shopping_net": "5964",
    "shopping_pos": "5311",
    "travel": "4722",
}
STATE_ZONE = {
    **dict.fromkeys(
        ("CT", "DE", "DC", "FL", "GA", "IN", "KY", "ME", "MD", "MA", "MI", "NH", "NJ", "NY", "NC", "OH", "PA", "RI"),
        "America/New_York",
    ),
    **dict.fromkeys(("SC", "VT", "VA", "WV"), "America/New_York"),
    **dict.fromkeys(
        ("AL", "AR", "IL", "IA", "KS", "LA", "MN", "MS", "MO", "NE", "ND", "OK", "SD", "TN", "TX", "WI"),
        "America/Chicago",
    ),
    **dict.fromkeys(("CO", "ID", "MT", "NM", "UT", "WY"), "America/Denver"),
    "AZ": "America/Phoenix",
    **dict.fromkeys(("CA", "NV", "OR", "WA"), "America/Los_Angeles"),
    "AK": "America/Anchorage",
    "HI": "Pacific/Honolulu",
}
# A merchant's fraud rate, smoothed towards PRIOR_RATE with the weight of PRIOR_COUNT transactions.
PRIOR_RATE, PRIOR_COUNT = 0.005, 200


def card_id(cc_num: str) -> str:
    return "sp-" + hashlib.sha256(cc_num.encode()).hexdigest()[:20]


def merchant_id(name: str) -> str:
    return "spm-" + hashlib.sha256(name.encode()).hexdigest()[:16]


def event_time(local: str, state: str) -> dt.datetime:
    zone = ZoneInfo(STATE_ZONE.get(state, "America/Chicago"))
    return dt.datetime.fromisoformat(local).replace(tzinfo=zone).astimezone(dt.UTC)


def convert(files: list[pathlib.Path], out: pathlib.Path, profile_days: int) -> dict:
    rows: list[dict] = []
    for path in files:
        with open(path, newline="", encoding="utf-8") as f:
            rows.extend(csv.DictReader(f))
    if not rows:
        raise ValueError("no rows in " + ", ".join(map(str, files)))
    for row in rows:
        row["_at"] = event_time(row["trans_date_trans_time"], row["state"])
    rows.sort(key=lambda row: (row["_at"], row["trans_num"]))
    start = rows[0]["_at"]
    known_until = start + dt.timedelta(days=profile_days)
    out.mkdir(parents=True, exist_ok=True)

    amounts: dict[str, list[float]] = defaultdict(list)
    first_seen: dict[str, dt.datetime] = {}
    holders: dict[str, dict] = {}
    merchant_rows: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    merchant_place: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    merchant_category: dict[str, Counter] = defaultdict(Counter)
    merchant_name: dict[str, str] = {}
    with open(out / "transactions.jsonl", "wb") as tf, open(out / "labels.jsonl", "wb") as lf:
        for row in rows:
            card, shop, at = card_id(row["cc_num"]), merchant_id(row["merchant"]), row["_at"]
            category = row["category"]
            fraud = int(row["is_fraud"])
            minor = round(float(row["amt"]) * 100)
            txn = {
                "transaction_id": row["trans_num"],
                "card_id": card,
                "merchant_id": shop,
                "amount": {"minor_units": minor, "currency": "USD"},
                "event_time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "channel": "ECOMMERCE" if category.endswith("_net") else "POS",
                "mcc": CATEGORY_MCC.get(category, "5999"),
                "country": "US",
            }
            tf.write(orjson.dumps(txn) + b"\n")
            lf.write(orjson.dumps({"transaction_id": row["trans_num"], "is_fraud": fraud}) + b"\n")
            holders.setdefault(card, row)
            merchant_name.setdefault(shop, row["merchant"])
            first_seen.setdefault(card, at)
            merchant_category[shop][category] += 1
            place = merchant_place[shop]
            place[0] += float(row["merch_lat"])
            place[1] += float(row["merch_long"])
            place[2] += 1
            if at < known_until:
                amounts[card].append(float(row["amt"]))
                merchant_rows[shop][0] += 1
                merchant_rows[shop][1] += fraud

    with open(out / "customers.jsonl", "wb") as f:
        for card, row in holders.items():
            usual = statistics.median(amounts[card]) if amounts[card] else 50.0
            profile = {
                "card_id": card,
                "home_country": "US",
                "home_lat": float(row["lat"]),
                "home_lon": float(row["long"]),
                "usual_amount": {"minor_units": str(max(1, round(usual * 100))), "currency": "USD"},
                "timezone": STATE_ZONE.get(row["state"], "America/Chicago"),
                "account_age_days": max(0, (known_until - first_seen[card]).days),
                "birth_date": row["dob"],
            }
            f.write(orjson.dumps(profile) + b"\n")
    with open(out / "merchants.jsonl", "wb") as f:
        for shop, (lat, lon, n) in merchant_place.items():
            seen, frauds = merchant_rows[shop]
            profile = {
                "merchant_id": shop,
                "name": merchant_name[shop],
                "mcc": CATEGORY_MCC.get(merchant_category[shop].most_common(1)[0][0], "5999"),
                "country": "US",
                "lat": round(lat / n, 4),
                "lon": round(lon / n, 4),
                "risk_score": round((frauds + PRIOR_RATE * PRIOR_COUNT) / (seen + PRIOR_COUNT), 5),
            }
            f.write(orjson.dumps(profile) + b"\n")
    return {
        "records": len(rows),
        "fraud": sum(1 for r in rows if int(r["is_fraud"])),
        "customers": len(holders),
        "merchants": len(merchant_place),
        "profiles_from": start.date().isoformat(),
        "profiles_until": known_until.date().isoformat(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", type=pathlib.Path, nargs="+")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--profile-days", type=int, default=120)
    args = parser.parse_args(argv)
    try:
        counts = convert(args.files, args.out, args.profile_days)
    except (OSError, KeyError, ValueError) as exc:
        parser.error(f"{exc.__class__.__name__}: {exc}")
    print(orjson.dumps(counts).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
