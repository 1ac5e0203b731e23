"""What a record costs end to end, by kind: valid, and each malformed kind with its dead-letter code.

    python -m bench.by_code [--per-kind 20000] [--seed 31] [--kinds valid,unknown_currency,...]

A file of records that are all broken in one way must not be a cheap way to slow the job down:
every malformed kind should cost at most three times a valid record, which goes through every
stage. For each kind this writes a file of --per-kind records of that kind only (from the
generator, same reference files), then, in this one process, times the Beam job (runner.run on the
FnApiRunner) and the plain-Python loop (bench.plain) over it, and over an empty file for their fixed
costs (reading reference files, loading the model, building the graph); per-record cost =
(time - fixed) / records. Prints a table (µs per record, job / plain, and each kind's job cost
over a valid record's) and a JSON line. Timings vary with the machine's load: compare within a run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import pathlib
import shutil
import sys
import time

import orjson

from bench import plain
from bench.run import ROOT, write_config
from pipeline import config as job_config
from pipeline import launch, runner
from tools import generate


def split_by_kind(folder: pathlib.Path, per_kind: int, seed: int) -> dict[str, pathlib.Path]:
    """One file per malformed kind (and one of valid records), over one set of reference files: the
    same seed and count give the generator the same customers and merchants."""
    mixed, valid = folder / "mixed", folder / "valid"
    records = per_kind * len(generate.INVALID_KINDS)
    generate.generate(records, seed, 1.0, mixed)
    generate.generate(records, seed, 0.0, valid)
    files: dict[str, pathlib.Path] = {"valid": folder / "valid.jsonl"}
    with open(valid / "transactions.jsonl", "rb") as source, open(files["valid"], "wb") as target:
        for _, line in zip(range(per_kind), source, strict=False):
            target.write(line)
    handles = {}
    with open(mixed / "transactions.jsonl", "rb") as lines, open(mixed / "labels.jsonl", "rb") as labels:
        for line, label in zip(lines, labels, strict=True):
            kind = orjson.loads(label)["invalid_kind"]
            if kind not in handles:
                files[kind] = folder / f"{kind}.jsonl"
                handles[kind] = open(files[kind], "wb")  # noqa: SIM115 - closed below
            handles[kind].write(line)
    for handle in handles.values():
        handle.close()
    (folder / "empty.jsonl").write_bytes(b"")
    for name in ("customers.jsonl", "merchants.jsonl"):
        shutil.copy(valid / name, folder / name)
    shutil.rmtree(mixed)
    shutil.rmtree(valid)
    return files


def timed_job(config_path: pathlib.Path, data: pathlib.Path, out: pathlib.Path) -> tuple[float, dict]:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        summary = runner.run(["--config", str(config_path), "--input", str(data), "--output_dir", str(out)])
    return time.perf_counter() - started, summary


def timed_plain(config_path: pathlib.Path, data: pathlib.Path, out: pathlib.Path) -> float:
    config = job_config.load(config_path, {"input": str(data)})
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    plain.run(config, launch.resolve_model_version(config), str(out))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--kinds", default="", help="comma-separated kinds (default: valid and every malformed kind)")
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / ".bench" / "by_code")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().addFilter(runner._KnownNoise())

    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    kinds = ["valid", *(k for k, _ in generate.INVALID_KINDS)]
    if args.kinds:
        kinds = [k for k in args.kinds.split(",") if k]
    codes = {"valid": "scored", **dict(generate.INVALID_KINDS)}
    files = split_by_kind(args.work_dir, args.per_kind, args.seed)
    config_path = write_config(args.work_dir, args.work_dir)
    out, plain_out = args.work_dir / "out-job", args.work_dir / "out-plain"

    fixed_job = min(timed_job(config_path, args.work_dir / "empty.jsonl", out)[0] for _ in range(2))
    fixed_plain = min(timed_plain(config_path, args.work_dir / "empty.jsonl", plain_out) for _ in range(2))
    rows = []
    for kind in kinds:
        job_seconds, summary = timed_job(config_path, files[kind], out)
        plain_seconds = timed_plain(config_path, files[kind], plain_out)
        n = summary["read"]
        rows.append(
            {
                "kind": kind,
                "outcome": codes[kind],
                "records": n,
                "job_us": max(0.0, job_seconds - fixed_job) / n * 1e6,
                "plain_us": max(0.0, plain_seconds - fixed_plain) / n * 1e6,
                "balanced": summary["balanced"],
            }
        )
    valid = next((r for r in rows if r["kind"] == "valid"), None)
    print(f"fixed costs: job {fixed_job:.2f} s, plain loop {fixed_plain:.2f} s (subtracted)")
    print(f"| {'kind':<30} | {'outcome':<32} | {'plain µs':>8} | {'job µs':>8} | {'job/plain':>9} | {'x valid':>7} |")
    print(f"|{'-' * 32}|{'-' * 34}|{'-' * 10}|{'-' * 10}|{'-' * 11}|{'-' * 9}|")
    for row in rows:
        row["job_over_plain"] = row["job_us"] / row["plain_us"] if row["plain_us"] else None
        row["times_valid"] = row["job_us"] / valid["job_us"] if valid and valid["job_us"] else None
        ratio = f"{row['job_over_plain']:.2f}" if row["job_over_plain"] else "-"
        times = f"{row['times_valid']:.2f}" if row["times_valid"] is not None else "-"
        print(
            f"| {row['kind']:<30} | {row['outcome']:<32} | {row['plain_us']:>8.1f} | {row['job_us']:>8.1f} "
            f"| {ratio:>9} | {times:>7} |"
        )
    worst = max((r for r in rows if r["kind"] != "valid" and r["times_valid"] is not None),
                key=lambda r: r["times_valid"], default=None)  # fmt: skip
    if worst:
        print(f"\ncostliest malformed kind: {worst['kind']}, {worst['times_valid']:.2f} x a valid record")
    print(json.dumps({"per_kind": args.per_kind, "fixed_job_s": fixed_job, "fixed_plain_s": fixed_plain, "rows": rows}))
    return 0 if all(r["balanced"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
