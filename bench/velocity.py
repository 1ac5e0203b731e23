"""What the velocity features cost: the job with and without them, and its memory as records grow
over a fixed set of cards.

    python -m bench.velocity [--records 1000000] [--scale 3] [--cards 50000] [--seed 19]

Generates (cached under .bench/) N and SCALE x N records over the same number of cards. On N, each
in its own process, one after the other: the plain-Python loop and the job with the default model
(fs-v2: 35_velocity in the graph), with its stateless twin (models/fraud-gbm-stateless-v2,
fs-v1: no 35_velocity) and with models/fraud-gbm-v3 (fs-v3: the holder features and the card
summary besides); the plain loop's and the job's outputs must be identical for each model.
On SCALE x N: the plain loop and the job with velocity again, for their peak memory and for what
35_velocity's state holds at the end (cards with a history and their events, counted by the plain
loop, which keeps the same histories). Prints a table and one JSON line.
Timings vary with the machine's load: compare figures from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from bench.run import ROOT, dataset, plain_and_job, write_config

STATELESS_MODEL = "models/fraud-gbm-stateless-v2/model.onnx"
HOLDER_MODEL = "models/fraud-gbm-v3/model.onnx"


def side(work: pathlib.Path, data: pathlib.Path, name: str, model: str | None) -> dict:
    return plain_and_job(work, write_config(work, data, model, name), name)


def rps(figures: dict) -> float:
    return figures["records"] / figures["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--cards", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / ".bench")
    args = parser.parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    small, _ = dataset(work, args.records, args.seed, 0.02, args.cards)
    large, _ = dataset(work, args.records * args.scale, args.seed, 0.02, args.cards)
    with_v = side(work, small, "velocity", None)
    without = side(work, small, "stateless", STATELESS_MODEL)
    holder = side(work, small, "fs-v3", HOLDER_MODEL)
    scaled = side(work, large, "velocity-scaled", None)

    cost = 1 - rps(with_v["job"]) / rps(without["job"])
    growth = scaled["job"]["peak_rss_mb"] / with_v["job"]["peak_rss_mb"] - 1
    print(f"{args.records:,} records over {args.cards:,} cards (2% invalid); FnApiRunner, one process\n")
    print(f"| {'run':<34} | {'seconds':>8} | {'records/s':>10} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 12}|{'-' * 13}|")
    rows = (
        ("plain loop, stateless (fs-v1)", without["plain"]),
        ("plain loop, with velocity (fs-v2)", with_v["plain"]),
        ("Beam job, stateless (fs-v1)", without["job"]),
        ("Beam job, with velocity (fs-v2)", with_v["job"]),
        ("plain loop, fs-v3", holder["plain"]),
        ("Beam job, fs-v3", holder["job"]),
        (f"plain loop, with velocity, {args.scale}x records", scaled["plain"]),
        (f"Beam job, with velocity, {args.scale}x records", scaled["job"]),
    )
    for name, figures in rows:
        seconds, rss = figures["seconds"], figures["peak_rss_mb"]
        print(f"| {name:<34} | {seconds:>8.1f} | {rps(figures):>10,.0f} | {rss:>11,.0f} |")
    print(f"\nvelocity cost in the job's records/s: {cost:.1%} (target: at most 30%)")
    holder_cost = 1 - rps(holder["job"]) / rps(with_v["job"])
    print(f"fs-v3's cost over fs-v2 in the job's records/s: {holder_cost:.1%}")
    print(f"peak RSS growth from {args.records:,} to {args.records * args.scale:,} records: {growth:.1%} (target: 20%)")
    print(
        f"outputs identical to the plain loop: with velocity {with_v['identical']}, stateless {without['identical']}, "
        f"fs-v3 {holder['identical']}, {args.scale}x {scaled['identical']}"
    )
    for label, run in ((f"{args.records:,}", with_v), (f"{args.records * args.scale:,}", scaled)):
        held, cards = run["plain"]["velocity_events_held"], run["plain"]["velocity_cards"]
        print(f"velocity state after {label} records: {held:,} events over {cards:,} cards")
    print(
        json.dumps(
            {
                "records": args.records,
                "cards": args.cards,
                "job_velocity_records_per_s": round(rps(with_v["job"])),
                "job_stateless_records_per_s": round(rps(without["job"])),
                "plain_velocity_records_per_s": round(rps(with_v["plain"])),
                "plain_stateless_records_per_s": round(rps(without["plain"])),
                "ratio_job_plain_velocity": round(rps(with_v["job"]) / rps(with_v["plain"]), 3),
                "velocity_cost": round(cost, 3),
                "job_fs_v3_records_per_s": round(rps(holder["job"])),
                "plain_fs_v3_records_per_s": round(rps(holder["plain"])),
                "ratio_job_plain_fs_v3": round(rps(holder["job"]) / rps(holder["plain"]), 3),
                "fs_v3_cost_over_fs_v2": round(holder_cost, 3),
                "peak_rss_mb": round(with_v["job"]["peak_rss_mb"]),
                "peak_rss_mb_scaled": round(scaled["job"]["peak_rss_mb"]),
                "scaled_records": args.records * args.scale,
                "peak_rss_growth": round(growth, 3),
                "outputs_identical": all(run["identical"] for run in (with_v, without, holder, scaled)),
                "velocity_events_held": with_v["plain"]["velocity_events_held"],
                "velocity_events_held_scaled": scaled["plain"]["velocity_events_held"],
                "velocity_cards": with_v["plain"]["velocity_cards"],
                "balanced": all(run["job"]["balanced"] for run in (with_v, without, holder, scaled)),
                "job_stage_msecs": with_v["job"]["stage_msecs"],
                "plain_stage_seconds": with_v["plain"]["stage_seconds"],
            }
        )
    )
    return 0 if all(run["identical"] for run in (with_v, without, holder, scaled)) else 1


if __name__ == "__main__":
    sys.exit(main())
