"""What the PostgreSQL profile store costs: the job with enrich.backend postgres against the files
backend on the same records, each beside the plain-Python loop doing the same work.

    python -m bench.postgres [--records 1000000] [--cards 50000] [--seed 19] [--batch-size 500]

Generates the data (cached under .bench/), starts a PostgreSQL server on 127.0.0.1
(tools/postgres_server.py: initdb into a temporary folder, stopped after) and loads the reference
files with tools.load_reference (timed). Then, each in its own process, one after the other: the
plain loop with the files, the plain loop with the store (30_enrich's StoreJoiner on the same
batches), the job with the files, and the job with the store run twice in one process: cold (an
empty cache) and warm (the second run finds the worker's cache filled by the first, within its
TTL); the files job also runs twice, so that each store run is compared with the files run in the
same position in its process. Every output must be identical to the plain loop's with files. Prints a table, the store's
queries per 10,000 records, and one JSON line. Timings vary with the machine's load: compare
figures from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time

import yaml

from bench.run import ROOT, dataset, run_child, sorted_lines, write_config
from tools import load_reference
from tools.postgres_server import PostgresServer


def rps(figures: dict) -> float:
    return figures["records"] / figures["seconds"]


def store_config(work: pathlib.Path, files_config: pathlib.Path, dsn: str, batch_size: int) -> pathlib.Path:
    config = yaml.safe_load(files_config.read_text())
    config["enrich"]["backend"] = "postgres"
    config["enrich"]["postgres"] = {"dsn": dsn, "batch_size": batch_size}
    path = work / "postgres-config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--cards", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--work-dir", type=pathlib.Path, default=ROOT / ".bench")
    args = parser.parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    data, _ = dataset(work, args.records, args.seed, 0.02, args.cards)
    files_config = write_config(work, data, None, "files")

    with PostgresServer() as pg:
        os.environ["PGPASSWORD"] = pg.password  # the children read it, as the job does
        started = time.perf_counter()
        loaded = load_reference.load(pg.dsn, data)
        load_seconds = time.perf_counter() - started
        pg_config = store_config(work, files_config, pg.dsn, args.batch_size)
        outs = {name: work / f"postgres-bench-{name}" for name in ("plain-files", "plain-pg", "job-files", "job-pg")}
        for folder in outs.values():
            shutil.rmtree(folder, ignore_errors=True)
        plain_files = run_child(
            "bench.plain", ["--config", str(files_config), "--output_dir", str(outs["plain-files"])]
        )
        plain_pg = run_child("bench.plain", ["--config", str(pg_config), "--output_dir", str(outs["plain-pg"])])
        job_files, job_files_again = run_child(
            "bench.job", ["--config", str(files_config), "--output_dir", str(outs["job-files"]), "--bench_runs=2"]
        )["runs"]
        # The store's second run replaces the first's output: the warm run's is compared.
        job_runs = run_child(
            "bench.job", ["--config", str(pg_config), "--output_dir", str(outs["job-pg"]), "--bench_runs=2"]
        )["runs"]
        expected = {d: sorted_lines(outs["plain-files"] / d) for d in ("scored", "dead_letters")}
        identical = {
            name: all(sorted_lines(outs[name] / d) == lines for d, lines in expected.items())
            for name in ("plain-pg", "job-files", "job-pg")
        }
    for folder in outs.values():
        shutil.rmtree(folder, ignore_errors=True)
    cold, warm = job_runs

    n = plain_files["records"]
    print(
        f"{n:,} records over {args.cards:,} cards (2% invalid); FnApiRunner, one process; store batch {args.batch_size}"
    )
    print(f"reference data loaded with COPY in {load_seconds:.1f} s: {loaded}\n")
    print(f"| {'run':<36} | {'seconds':>8} | {'records/s':>10} | {'queries / 10k records':>21} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 12}|{'-' * 23}|")

    def per_10k(store: dict | None, records: int) -> str:
        if not store:
            return "-"
        return f"{store.get('queries', 0) * 10_000 / records:.2f}"

    rows = (
        ("plain loop, files", plain_files, None),
        ("plain loop, postgres (cold cache)", plain_pg, plain_pg["profile_store"]),
        ("Beam job, files", job_files, None),
        ("Beam job, files, second run", job_files_again, None),
        ("Beam job, postgres, cold cache", cold, cold["profile_store"]),
        ("Beam job, postgres, warm cache", warm, warm["profile_store"]),
    )
    for name, figures, store in rows:
        print(f"| {name:<36} | {figures['seconds']:>8.1f} | {rps(figures):>10,.0f} | {per_10k(store, n):>21} |")
    # Each against the files job's run in the same position in its process (first, second).
    cold_share, warm_share = rps(cold) / rps(job_files), rps(warm) / rps(job_files_again)
    print(f"\njob with postgres / job with files: cold {cold_share:.1%}, warm {warm_share:.1%} (target: at least 70%)")
    print(f"plain loop with postgres / with files: {rps(plain_pg) / rps(plain_files):.1%}")
    print(f"cold run's store: {json.dumps(cold['profile_store'])}")
    print(f"outputs identical to the plain loop's with files: {identical}")
    print(
        json.dumps(
            {
                "records": n,
                "cards": args.cards,
                "batch_size": args.batch_size,
                "load_seconds": round(load_seconds, 2),
                "plain_files_records_per_s": round(rps(plain_files)),
                "plain_postgres_records_per_s": round(rps(plain_pg)),
                "job_files_records_per_s": round(rps(job_files)),
                "job_files_second_run_records_per_s": round(rps(job_files_again)),
                "job_postgres_cold_records_per_s": round(rps(cold)),
                "job_postgres_warm_records_per_s": round(rps(warm)),
                "cold_share_of_files": round(cold_share, 3),
                "warm_share_of_files": round(warm_share, 3),
                "queries_per_10k_cold": round(cold["profile_store"]["queries"] * 10_000 / n, 2),
                "queries_per_10k_warm": round(warm["profile_store"]["queries"] * 10_000 / n, 2),
                "cold_store": cold["profile_store"],
                "warm_store": warm["profile_store"],
                "outputs_identical": identical,
                "balanced": all(r["balanced"] for r in (job_files, job_files_again, cold, warm)),
            }
        )
    )
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
