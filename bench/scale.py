"""Every malformed kind at scale: a run over N generated records, part of them broken in each of
the generator's ways, must balance, and give every broken record the code the generator says, kind
by kind.

    python -m bench.scale --records 1000000 [--invalid-fraction 0.1] [--seed 23] [--job-args "..."]

Generates the data once (cached under .bench/), runs the job (bench.job: the Beam job, timed in its
own process) and the plain-Python loop (bench.plain) on it, then joins the job's dead letters and
scored records with labels.jsonl by line. Prints one row per malformed kind (injected, got the
expected code, got another outcome) and a JSON line; exits 1 when any kind is off, the run is not
balanced, or the two outputs differ.
"""

from __future__ import annotations

import collections
import json
import pathlib
import shutil
import sys

import orjson

from bench.run import run_side_by_side, side_by_side_parser, sorted_lines
from tools.generate import INVALID_KINDS


def outcomes(output: pathlib.Path) -> dict[int, str]:
    """Source line -> 'scored' or the error code, from the job's output files."""
    seen: dict[int, str] = {}
    for sub, code_of in (("scored", lambda r: "scored"), ("dead_letters", lambda r: r["error_code"])):
        for line in sorted_lines(output / sub):
            record = orjson.loads(line)
            number = int(record["source"]["line"])
            if number in seen:
                raise SystemExit(f"line {number} has two outcomes: {seen[number]} and {code_of(record)}")
            seen[number] = code_of(record)
    return seen


def check(data: pathlib.Path, got: dict[int, str]) -> tuple[list[dict], int]:
    """Rows per kind (valid records as 'valid'), and the number of lines that are off."""
    rows: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    codes: dict[str, str] = {"valid": "scored"}
    with open(data / "labels.jsonl", "rb") as f:
        for label in map(orjson.loads, f):
            kind = label.get("invalid_kind") or "valid"
            expected = label["expected_error_code"] or "scored"
            codes[kind] = expected
            outcome = got.get(label["line"], "missing")
            rows[kind]["injected"] += 1
            rows[kind]["expected" if outcome == expected else f"got {outcome}"] += 1
    table, off = [], 0
    for kind in ["valid", *(k for k, _ in INVALID_KINDS)]:
        if kind not in rows:
            continue
        counts = rows[kind]
        others = {k: v for k, v in counts.items() if k.startswith("got ")}
        off += sum(others.values())
        table.append(
            {
                "kind": kind,
                "code": codes[kind],
                "injected": counts["injected"],
                "expected": counts["expected"],
                **others,
            }
        )
    return table, off


def main(argv: list[str] | None = None) -> int:
    args = side_by_side_parser(__doc__, records=1_000_000, seed=23, invalid_fraction=0.1).parse_args(argv)

    run = run_side_by_side(args.work_dir, args.records, args.seed, args.invalid_fraction, args.job_args, "scale")
    plain, job, identical, generate_seconds = run.plain, run.job, run.identical, run.generate_seconds
    plain_out, job_out = run.plain_out, run.job_out
    summary = json.loads((job_out / "summary.json").read_text())
    table, off = check(run.data, outcomes(job_out))
    injected: collections.Counter[str] = collections.Counter()
    for row in table:
        if row["kind"] != "valid":
            injected[row["code"]] += row["injected"]
    by_code_equal = dict(injected) == summary["dead_letters_by_code"]
    shutil.rmtree(plain_out, ignore_errors=True)
    shutil.rmtree(job_out, ignore_errors=True)

    print(f"records: {args.records:,}, invalid fraction {args.invalid_fraction}, seed {args.seed}")
    print(f"| {'kind':<30} | {'expected outcome':<32} | {'injected':>9} | {'as expected':>11} | other |")
    print(f"|{'-' * 32}|{'-' * 34}|{'-' * 11}|{'-' * 13}|-------|")
    for row in table:
        other = ", ".join(f"{k[4:]}: {v}" for k, v in row.items() if k.startswith("got ")) or "-"
        print(f"| {row['kind']:<30} | {row['code']:<32} | {row['injected']:>9,} | {row['expected']:>11,} | {other} |")
    n = summary["read"]
    print(
        f"\nbalanced: {'yes' if summary['balanced'] else 'NO'}   dead letters by code = injected by code: "
        f"{'yes' if by_code_equal else 'NO'}   lines off: {off}   job and loop outputs identical: "
        f"{'yes' if identical else 'NO'}"
    )
    print(
        f"plain loop {plain['seconds']:.1f} s ({n / plain['seconds']:,.0f} records/s), "
        f"job {job['seconds']:.1f} s ({n / job['seconds']:,.0f} records/s), "
        f"ratio job / plain {plain['seconds'] / job['seconds']:.2f}"
    )
    ok = summary["balanced"] and by_code_equal and off == 0 and identical and n == args.records
    print(
        json.dumps(
            {
                "records": n,
                "balanced": summary["balanced"],
                "by_code_equal_injected": by_code_equal,
                "lines_off": off,
                "outputs_identical": identical,
                "dead_letters_by_code": summary["dead_letters_by_code"],
                "plain_seconds": round(plain["seconds"], 2),
                "job_seconds": round(job["seconds"], 2),
                "generator_seconds": None if generate_seconds is None else round(generate_seconds, 2),
                "kinds": table,
                "ok": ok,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
