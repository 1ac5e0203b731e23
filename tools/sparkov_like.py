"""A labelled card history in the shape of the public Sparkov simulation (the columns of its
fraudTrain.csv), written by another generator than tools.generate, to try the trainer on data of
another shape than the job's own.

    python -m tools.sparkov_like --customers N --out FILE.csv [--seed S] [--start 2019-01-01] [--days 730]

One CSV row per transaction, with Sparkov's columns: an unnamed row number, trans_date_trans_time
(the card holder's local time), cc_num (a 16-digit card number), merchant ("fraud_" + a name, as
Sparkov writes them), category (Sparkov's 14), amt (dollars), first, last, gender, street, city,
state, zip, lat, long, city_pop, job, dob, trans_num, unix_time (UTC seconds), merch_lat,
merch_long and is_fraud (1/0). `python -m tools.convert_sparkov` turns such a file (or the public
one) into the trainer's folder layout.

What is in it, after Sparkov's description of itself: customers of all ages in cities of 12
states, each with a spending profile by age group (how often, in which categories, how much) and
purchases mostly by day in their own time zone; some cards are compromised for one to three days
(older holders more often), with a burst of purchases at night in the holder's time zone, in the
categories and amounts fraudsters favour (online shopping and miscellaneous, groceries in store),
while the holder's own purchases go on. Beside them: legitimate large online purchases and
legitimate purchases at night. The same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import pathlib
import sys
from zoneinfo import ZoneInfo

import numpy as np

# state, time zone, (city, lat, lon, population) ...
STATES = (
    ("NY", "America/New_York", (("New York", 40.71, -74.01, 8_400_000), ("Albany", 42.65, -73.76, 97_000))),
    ("PA", "America/New_York", (("Philadelphia", 39.95, -75.17, 1_580_000), ("Altoona", 40.52, -78.39, 43_000))),
    ("FL", "America/New_York", (("Miami", 25.76, -80.19, 440_000), ("Ocala", 29.19, -82.14, 63_000))),
    ("OH", "America/New_York", (("Columbus", 39.96, -83.0, 900_000), ("Lima", 40.74, -84.11, 36_000))),
    ("TX", "America/Chicago", (("Houston", 29.76, -95.37, 2_300_000), ("Abilene", 32.45, -99.73, 125_000))),
    ("IL", "America/Chicago", (("Chicago", 41.88, -87.63, 2_700_000), ("Peoria", 40.69, -89.59, 113_000))),
    ("MN", "America/Chicago", (("Minneapolis", 44.98, -93.27, 430_000), ("Bemidji", 47.47, -94.88, 15_000))),
    ("CO", "America/Denver", (("Denver", 39.74, -104.99, 715_000), ("Pueblo", 38.25, -104.61, 112_000))),
    ("AZ", "America/Phoenix", (("Phoenix", 33.45, -112.07, 1_600_000), ("Flagstaff", 35.2, -111.65, 76_000))),
    ("CA", "America/Los_Angeles", (("Los Angeles", 34.05, -118.24, 3_900_000), ("Redding", 40.59, -122.39, 93_000))),
    ("WA", "America/Los_Angeles", (("Seattle", 47.61, -122.33, 740_000), ("Yakima", 46.6, -120.51, 97_000))),
    ("NV", "America/Los_Angeles", (("Las Vegas", 36.17, -115.14, 650_000), ("Elko", 40.83, -115.76, 20_000))),
)
CATEGORIES = (
    "entertainment",
    "food_dining",
    "gas_transport",
    "grocery_net",
    "grocery_pos",
    "health_fitness",
    "home",
    "kids_pets",
    "misc_net",
    "misc_pos",
    "personal_care",
    "shopping_net",
    "shopping_pos",
    "travel",
)
# Legitimate spending: category weight and log-normal amount (median dollars, sigma) by age group
# (under 30, 30 to 59, 60 and over).
WEIGHTS = {
    "young": (8, 9, 12, 3, 10, 7, 6, 4, 5, 6, 6, 10, 8, 2),
    "middle": (6, 8, 12, 4, 13, 6, 9, 9, 4, 6, 6, 7, 9, 2),
    "senior": (5, 7, 8, 2, 15, 8, 10, 5, 3, 7, 7, 4, 8, 4),
}
AMOUNTS = {
    "entertainment": (45, 0.8),
    "food_dining": (35, 0.7),
    "gas_transport": (55, 0.5),
    "grocery_net": (45, 0.6),
    "grocery_pos": (70, 0.6),
    "health_fitness": (40, 0.7),
    "home": (50, 0.9),
    "kids_pets": (40, 0.8),
    "misc_net": (30, 1.0),
    "misc_pos": (35, 0.9),
    "personal_care": (25, 0.8),
    "shopping_net": (45, 1.0),
    "shopping_pos": (50, 0.9),
    "travel": (80, 1.2),
}
# Fraud: category weight and uniform amount range (dollars).
FRAUD = {
    "shopping_net": (35, (650, 1250)),
    "grocery_pos": (28, (260, 360)),
    "misc_net": (17, (600, 1050)),
    "shopping_pos": (10, (600, 1150)),
    "gas_transport": (5, (8, 22)),
    "misc_pos": (5, (180, 600)),
}
# Local hour of day of legitimate purchases: mostly by day.
HOURS = np.array([2, 1, 1, 1, 1, 1, 2, 4, 6, 7, 8, 8, 9, 9, 8, 8, 8, 9, 9, 8, 7, 5, 3, 2], dtype=float)
FIRST = ("James", "Mary", "John", "Linda", "Robert", "Susan", "Ana", "Wei", "Omar", "Grace", "Luis", "Emma")
LAST = ("Smith", "Johnson", "Garcia", "Miller", "Davis", "Lopez", "Nguyen", "Kim", "Brown", "Clark", "Young")
JOBS = ("Teacher", "Nurse", "Engineer", "Accountant", "Chef", "Retired", "Designer", "Driver", "Lawyer")
COLUMNS = (
    "",
    "trans_date_trans_time",
    "cc_num",
    "merchant",
    "category",
    "amt",
    "first",
    "last",
    "gender",
    "street",
    "city",
    "state",
    "zip",
    "lat",
    "long",
    "city_pop",
    "job",
    "dob",
    "trans_num",
    "unix_time",
    "merch_lat",
    "merch_long",
    "is_fraud",
)


def _luhn(body: str) -> str:
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char) * (2 if position % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return body + str((10 - total % 10) % 10)


def _group(age: float) -> str:
    return "young" if age < 30 else "middle" if age < 60 else "senior"


def generate(customers: int, seed: int, out: pathlib.Path, start: dt.date, days: int) -> dict:
    rng = np.random.default_rng(seed)
    merchants = [f"fraud_{LAST[i % len(LAST)]}-{FIRST[(i * 7) % len(FIRST)]} {i}" for i in range(700)]
    merchant_category = rng.integers(0, len(CATEGORIES), len(merchants))
    by_category = {
        c: [m for m, k in zip(merchants, merchant_category, strict=True) if k == i] for i, c in enumerate(CATEGORIES)
    }
    start_utc = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
    rows = []
    counts = {"customers": customers, "records": 0, "fraud": 0, "compromised_cards": 0}
    for _ in range(customers):
        state, zone_name, cities = STATES[rng.integers(len(STATES))]
        city, lat0, lon0, population = cities[rng.integers(len(cities))]
        zone = ZoneInfo(zone_name)
        age = float(rng.uniform(18, 92))
        group = _group(age)
        dob = start - dt.timedelta(days=int(age * 365.25))
        home = (round(lat0 + rng.normal(0, 0.3), 4), round(lon0 + rng.normal(0, 0.3), 4))
        person = {
            "cc_num": _luhn(f"4{rng.integers(10**13, 10**14):014d}"),
            "first": FIRST[rng.integers(len(FIRST))],
            "last": LAST[rng.integers(len(LAST))],
            "gender": "F" if rng.random() < 0.5 else "M",
            "street": f"{rng.integers(1, 9999)} {LAST[rng.integers(len(LAST))]} Street",
            "city": city,
            "state": state,
            "zip": f"{rng.integers(10000, 99999)}",
            "lat": home[0],
            "long": home[1],
            "city_pop": population,
            "job": "Retired" if age >= 67 else JOBS[rng.integers(len(JOBS) - 1)],
            "dob": dob.isoformat(),
        }
        rate = float(rng.uniform(0.4, 3.0))  # purchases a day
        weights = np.array(WEIGHTS[group], dtype=float) * rng.uniform(0.5, 1.5, len(CATEGORIES))
        weights /= weights.sum()
        spend = float(rng.lognormal(0, 0.35))  # this holder's scale
        n = int(rng.poisson(rate * days))
        local_day = rng.integers(0, days, n)
        local_hour = rng.choice(24, size=n, p=HOURS / HOURS.sum())
        second = rng.integers(0, 3600, n)
        category = rng.choice(len(CATEGORIES), size=n, p=weights)
        amount = np.array(
            [rng.lognormal(np.log(AMOUNTS[CATEGORIES[k]][0] * spend), AMOUNTS[CATEGORIES[k]][1]) for k in category]
        )
        fraud = np.zeros(n, dtype=int)
        events = list(zip(local_day, local_hour, second, category, amount, fraud, strict=True))
        # Compromises: older holders more often; each a burst at night in their time zone, 1 to 3 days.
        compromises = int(rng.poisson(1.6 if group == "senior" else 0.9))
        counts["compromised_cards"] += int(compromises > 0)
        fraud_names = list(FRAUD)
        fraud_w = np.array([FRAUD[k][0] for k in fraud_names], dtype=float)
        for _ in range(compromises):
            first_day = int(rng.integers(0, days - 3))
            for _ in range(int(rng.integers(3, 13))):
                name = fraud_names[rng.choice(len(fraud_names), p=fraud_w / fraud_w.sum())]
                low, high = FRAUD[name][1]
                hour = int(rng.choice([22, 23, 0, 1, 2, 3])) if rng.random() < 0.8 else int(rng.integers(6, 22))
                day = first_day + int(rng.integers(0, 3)) + (1 if hour < 4 else 0)
                events.append(
                    (day, hour, int(rng.integers(0, 3600)), CATEGORIES.index(name), rng.uniform(low, high), 1)
                )
        for day, hour, sec, k, amt, is_fraud in events:
            if day >= days:
                continue
            local = dt.datetime(start.year, start.month, start.day) + dt.timedelta(
                days=int(day), hours=int(hour), seconds=int(sec)
            )
            utc = local.replace(tzinfo=zone).astimezone(dt.UTC)
            if utc < start_utc:
                continue
            category_name = CATEGORIES[k]
            pool = by_category[category_name] or merchants
            rows.append(
                (
                    utc,
                    {
                        "trans_date_trans_time": local.strftime("%Y-%m-%d %H:%M:%S"),
                        "merchant": pool[rng.integers(len(pool))],
                        "category": category_name,
                        "amt": f"{max(1.0, float(amt)):.2f}",
                        **person,
                        "unix_time": int(utc.timestamp()),
                        "merch_lat": round(home[0] + rng.uniform(-1, 1), 6),
                        "merch_long": round(home[1] + rng.uniform(-1, 1), 6),
                        "is_fraud": int(is_fraud),
                    },
                )
            )
            counts["fraud"] += int(is_fraud)
    rows.sort(key=lambda row: (row[0], row[1]["cc_num"], row[1]["trans_date_trans_time"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for number, (_, row) in enumerate(rows):
            row["trans_num"] = hashlib.sha256(f"{seed}:{number}".encode()).hexdigest()[:32]
            writer.writerow([number, *(row[name] for name in COLUMNS[1:])])
    counts["records"] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2019, 1, 1))
    parser.add_argument("--days", type=int, default=730)
    args = parser.parse_args(argv)
    if args.customers < 1 or args.days < 7:
        parser.error("--customers must be positive and --days at least 7")
    counts = generate(args.customers, args.seed, args.out, args.start, args.days)
    print(counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
