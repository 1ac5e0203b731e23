"""Benchmark: the job on the FnApiRunner against a plain-Python loop doing the same work.

    python -m bench.run --records 1000000 [--seed 17] [--invalid-fraction 0.02]
                        [--job-args "--direct_num_workers=2 --direct_running_mode=multi_processing"]

Generates the data once (cached under .bench/), then runs, each in its own process, one after
the other: bench.plain (the stage functions in one loop) and bench.job (the Beam job). Both are
timed from inside their process after imports, from reading the reference files to the last
output line. Their outputs are compared (sorted lines of scored/ and dead_letters/ must be
identical, the run's clock is pinned), so both did the same work. Prints a table; the last line is
one JSON object with records, plain_records_per_s, job_records_per_s, ratio (job / plain) and
peak_rss_mb (of the job's main process; job_largest_worker_rss_mb is the largest of its worker
processes in multi-processing mode), among others. Timings vary with the machine's load: compare
figures from one run, not across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import yaml

from pipeline.stages import STAGES
from tools.generate import GENERATOR_VERSION

ROOT = pathlib.Path(__file__).resolve().parent.parent


def dataset(
    work: pathlib.Path, records: int, seed: int, invalid: float, cards: int | None = None
) -> tuple[pathlib.Path, float | None]:
    folder = work / (f"data-v{GENERATOR_VERSION}-{records}-{seed}-{invalid}" + (f"-{cards}cards" if cards else ""))
    if (folder / "labels.jsonl").exists():
        return folder, None
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.generate",
            "--records",
            str(records),
            "--seed",
            str(seed),
            "--invalid-fraction",
            str(invalid),
            "--out",
            str(folder),
            *(["--cards", str(cards)] if cards else []),
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return folder, time.perf_counter() - started


def write_config(
    work: pathlib.Path, data: pathlib.Path, model: str | None = None, name: str = "bench", root: pathlib.Path = ROOT
) -> pathlib.Path:
    """The bench's config on `data`, from the config.yaml of the project at `root` (its keys)."""
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["input"]["transactions"] = str(data / "transactions.jsonl")
    config["reference"]["customers"] = str(data / "customers.jsonl")
    config["reference"]["merchants"] = str(data / "merchants.jsonl")
    config["predict"]["model"] = str(root / (model or config["predict"]["model"]))
    config["run"]["as_of"] = "2026-11-15T00:00:00Z"
    path = work / f"{name}-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_child(module: str, args: list[str], cwd: pathlib.Path = ROOT) -> dict:
    """`python -m module args` run from the project at `cwd` (its code, this environment): its last line's JSON."""
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"{module} at {cwd} failed with exit code {result.returncode}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def plain_and_job(work: pathlib.Path, config: pathlib.Path, name: str, inspect=None) -> dict:
    """The plain loop and the job on one config, each in its own process, one after the other: their
    figures, whether their outputs are identical, and `inspect(job output folder)` under "inspected";
    the outputs are removed afterwards."""
    out: dict = {}
    for kind, module in (("plain", "bench.plain"), ("job", "bench.job")):
        folder = work / f"{name}-{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        out[kind] = run_child(module, ["--config", str(config), "--output_dir", str(folder)])
    out["identical"] = all(
        sorted_lines(work / f"{name}-plain" / d) == sorted_lines(work / f"{name}-job" / d)
        for d in ("scored", "dead_letters")
    )
    if inspect is not None:
        out["inspected"] = inspect(work / f"{name}-job")
    for kind in ("plain", "job"):
        shutil.rmtree(work / f"{name}-{kind}", ignore_errors=True)
    return out


@dataclasses.dataclass
class SideBySide:
    """The plain loop and the job, run one after the other on one generated data set."""

    data: pathlib.Path
    generate_seconds: float | None
    plain: dict
    job: dict
    plain_out: pathlib.Path
    job_out: pathlib.Path
    identical: bool


def side_by_side_parser(doc: str | None, records: int, seed: int, invalid_fraction: float) -> argparse.ArgumentParser:
    """The options of a script that runs the plain loop and the job on generated data."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=records)
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--invalid-fraction", type=float, default=invalid_fraction)
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / ".bench")
    parser.add_argument("--job-args", default="", help="extra Beam options for the job, one string")
    return parser


def run_side_by_side(
    work_dir: pathlib.Path, records: int, seed: int, invalid: float, job_args: str, name: str
) -> SideBySide:
    work_dir.mkdir(parents=True, exist_ok=True)
    data, generate_seconds = dataset(work_dir, records, seed, invalid)
    config = write_config(work_dir, data)
    plain_out, job_out = work_dir / f"{name}-plain", work_dir / f"{name}-job"
    for folder in (plain_out, job_out):
        shutil.rmtree(folder, ignore_errors=True)
    plain = run_child("bench.plain", ["--config", str(config), "--output_dir", str(plain_out)])
    job = run_child("bench.job", ["--config", str(config), "--output_dir", str(job_out), *shlex.split(job_args)])
    identical = all(sorted_lines(plain_out / d) == sorted_lines(job_out / d) for d in ("scored", "dead_letters"))
    return SideBySide(data, generate_seconds, plain, job, plain_out, job_out, identical)


def sorted_lines(folder: pathlib.Path) -> list[str]:
    lines: list[str] = []
    for path in glob.glob(str(folder / "*.jsonl")):
        with open(path, encoding="utf-8") as f:
            lines.extend(f)
    return sorted(lines)


def main(argv: list[str] | None = None) -> int:
    parser = side_by_side_parser(__doc__, records=100_000, seed=17, invalid_fraction=0.02)
    parser.add_argument("--keep-output", action="store_true")
    args = parser.parse_args(argv)

    run = run_side_by_side(args.work_dir, args.records, args.seed, args.invalid_fraction, args.job_args, "out")
    plain, job, identical, generate_seconds = run.plain, run.job, run.identical, run.generate_seconds
    plain_out, job_out = run.plain_out, run.job_out
    if not args.keep_output:
        shutil.rmtree(plain_out, ignore_errors=True)
        shutil.rmtree(job_out, ignore_errors=True)

    n = plain["records"]
    plain_rps = n / plain["seconds"]
    job_rps = job["records"] / job["seconds"]
    options = args.job_args or "(defaults: FnApiRunner, one process)"
    print(f"records: {n:,} ({plain['dead_letters']:,} invalid)   job options: {options}")
    if generate_seconds is not None:
        print(f"generator: {generate_seconds:.1f} s ({args.records / generate_seconds:,.0f} records/s)")
    print()
    print(f"| {'run':<24} | {'seconds':>8} | {'records/s':>10} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 12}|{'-' * 13}|")
    for name, figures, rps in (("plain Python loop", plain, plain_rps), ("Beam job", job, job_rps)):
        print(f"| {name:<24} | {figures['seconds']:>8.2f} | {rps:>10,.0f} | {figures['peak_rss_mb']:>11,.0f} |")
    if job["largest_worker_rss_mb"]:
        print(f"(the job's worker processes: largest peak RSS {job['largest_worker_rss_mb']:,.0f} MB each)")
    print(f"\nratio job / plain: {job_rps / plain_rps:.2f}    outputs identical: {'yes' if identical else 'NO'}")
    print("\ntime per record by stage, µs; the job's from Beam's execution-time samples (one per 200 ms,")
    print("summed over workers), so short runs give rough figures:")
    print(f"| {'stage':<16} | {'plain loop':>10} | {'Beam job':>10} |")
    print(f"|{'-' * 18}|{'-' * 12}|{'-' * 12}|")
    job_stage_us = {k: v * 1000 / n for k, v in job["stage_msecs"].items()}
    for stage in ("setup", *STAGES):
        plain_us = plain["stage_seconds"].get(stage, 0.0) / n * 1e6
        job_us = f"{job_stage_us[stage]:.2f}" if stage in job_stage_us else "-"
        print(f"| {stage:<16} | {plain_us:>10.2f} | {job_us:>10} |")
    print(
        json.dumps(
            {
                "records": n,
                "plain_seconds": round(plain["seconds"], 3),
                "job_seconds": round(job["seconds"], 3),
                "plain_records_per_s": round(plain_rps),
                "job_records_per_s": round(job_rps),
                "ratio": round(job_rps / plain_rps, 3),
                "peak_rss_mb": round(job["peak_rss_mb"]),
                "job_largest_worker_rss_mb": round(job["largest_worker_rss_mb"]),
                "plain_peak_rss_mb": round(plain["peak_rss_mb"]),
                "outputs_identical": identical,
                "job_balanced": job["balanced"],
                "generator_seconds": None if generate_seconds is None else round(generate_seconds, 2),
                "job_args": args.job_args,
                "plain_stage_us_per_record": {k: round(v / n * 1e6, 2) for k, v in plain["stage_seconds"].items()},
                "job_stage_us_per_record": {k: round(v, 2) for k, v in job_stage_us.items()},
            }
        )
    )
    return 0 if identical and job["balanced"] else 1


if __name__ == "__main__":
    sys.exit(main())
