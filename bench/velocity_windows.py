"""What a busy card costs 35_velocity: the velocity step on a live feed, windows looped against sliced.

    python -m bench.velocity_windows [--records 100000] [--rate 1000 5000] [--seed 17]

A live feed gives each record the moment it is sent as its event time (tools.kafka --live, the
Kafka and streaming benchmarks): a generated data set of weeks then arrives within minutes, and its
busiest cards hold hundreds of transactions in their 24-hour window. On the generated records
(cached under .bench/), in file order, with event times one record every 1/rate s and amounts
in EUR as the job converts them (merchant locations left out: they feed no window), the velocity
step (velocity.CardHistory.take: the features, then the record remembered), each record in turn in
one loop: once with every window counted by the plain loop over the card's history, once as the
job counts them (the loop up to velocity.LOOP_UP_TO remembered transactions, bisected slices
beyond). The features must be identical. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict

import orjson

from bench.run import ROOT, dataset
from pipeline.shared import velocity
from pipeline.shared.features import amount_eur

T0 = 1793700000  # 2026-11-03T11:20:00Z


def events(path, rate: float) -> list[tuple[str, velocity.Event]]:
    """(card, Event) for each valid record of the file, in file order, one every 1/rate s."""
    out: list[tuple[str, velocity.Event]] = []
    with open(path, "rb") as f:
        for line in f:
            try:
                record = orjson.loads(line)
                card, money = record["card_id"], record["amount"]
                amount = amount_eur(money["minor_units"], money["currency"])
                merchant, country, txn = record["merchant_id"], record.get("country", ""), record["transaction_id"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            at = len(out) / rate
            seconds, nanos = T0 + int(at), int(at % 1 * 1e9)
            out.append((card, velocity.Event(seconds, nanos, txn, amount, merchant, country, 0.0, 0.0, False)))
    return out


def run(feed: list[tuple[str, velocity.Event]], loop_up_to: int) -> tuple[float, list[list[float]]]:
    kept = velocity.LOOP_UP_TO
    velocity.LOOP_UP_TO = loop_up_to
    try:
        histories: dict[str, velocity.CardHistory] = defaultdict(velocity.CardHistory)
        started = time.perf_counter()
        values = [histories[card].take(event) for card, event in feed]
        return time.perf_counter() - started, values
    finally:
        velocity.LOOP_UP_TO = kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rate", type=float, nargs="+", default=[1000.0, 5000.0], help="records/s of the feed")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)
    data, _ = dataset(ROOT / ".bench", args.records, args.seed, 0.02)
    rows = []
    for rate in args.rate:
        feed = events(data / "transactions.jsonl", rate)
        busiest = Counter(card for card, _ in feed).most_common(1)[0][1]
        looped_s, looped = run(feed, sys.maxsize)
        job_s, job = run(feed, velocity.LOOP_UP_TO)
        rows.append(
            {
                "rate": rate,
                "records": len(feed),
                "busiest_card_records": busiest,
                "looped_us": round(looped_s / len(feed) * 1e6, 1),
                "job_us": round(job_s / len(feed) * 1e6, 1),
                "ratio": round(looped_s / job_s, 2),
                "identical": [list(map(repr, v)) for v in looped] == [list(map(repr, v)) for v in job],
            }
        )
    print("| feed records/s | records | busiest card | looped µs a record | job µs a record | looped / job | same |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rate']:,.0f} | {r['records']:,} | {r['busiest_card_records']:,} | {r['looped_us']} | "
            f"{r['job_us']} | {r['ratio']} | {'yes' if r['identical'] else 'NO'} |"
        )
    print(json.dumps({"loop_up_to": velocity.LOOP_UP_TO, "runs": rows}))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
