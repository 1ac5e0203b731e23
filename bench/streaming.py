"""Benchmark: the watched-folder job on Prism, its sustained rate and its latency, against the batch
job and the plain loop on the same data.

    python -m bench.streaming --records 200000 [--latency-seconds 60] [--window-seconds 10]
                              [--order-wait SECONDS]

In one run, on one generated data set (cached under .bench/):
1. bench.plain and bench.job (the batch job, FnApiRunner, one process) on the data, as bench.run.
2. Sustained: the data is dropped into a folder as files of --file-records lines (event times
   rebased to now, as tools.stream_files does), then the streaming job (Prism, default settings but
   --window-seconds and --order-wait, 35_velocity's hold) is started on it and stops when idle.
   Sustained records/s = records scored / the time between the first and the last scored_at.
3. Latency: tools.stream_files offers the data at half the sustained rate, one file a second, for
   --latency-seconds, while a second streaming job runs. A record's latency is the time from its
   file's appearance (its rename into the folder) to the appearance of the output file that holds
   it (that file's rename, after its window closed); p50 and p99 over all scored records.
Prints a table; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import orjson
import yaml

from bench.run import ROOT, run_side_by_side, side_by_side_parser, write_config
from pipeline.shared.clock import parse_rfc3339
from tools import stream_files


def streaming_config(
    work: pathlib.Path,
    batch_config: pathlib.Path,
    watch: pathlib.Path,
    window: int,
    idle: float = 5,
    order_wait: int | None = None,
    order: str = "arrival",
) -> pathlib.Path:
    config = yaml.safe_load(batch_config.read_text())
    config.setdefault("velocity", {})["order_wait_seconds"] = order_wait
    config["streaming"]["order"] = order
    config["source"]["kind"] = "watch"
    config["source"]["watch_dir"] = str(watch)
    config["streaming"]["window_seconds"] = window
    config["streaming"]["stop_after_idle_seconds"] = idle
    config["run"]["as_of"] = None  # live event times: the wall clock judges them
    path = work / f"stream-config-{watch.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_job(config: pathlib.Path, out: pathlib.Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.runner", "--config", str(config), "--output_dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"the streaming job failed with exit code {done.returncode}")
    return json.loads((out / "summary.json").read_text())


def scored_files(out: pathlib.Path):
    folder = out / "scored"
    for name in sorted(os.listdir(folder)):
        if not name.startswith("."):
            path = folder / name
            yield path, os.stat(path).st_mtime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = side_by_side_parser(__doc__, records=200_000, seed=17, invalid_fraction=0.02)
    parser.add_argument("--window-seconds", type=int, default=10)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--file-records", type=int, default=10_000)
    parser.add_argument("--order-wait", type=int, default=None, help="velocity.order_wait_seconds (default: the job's)")
    args = parser.parse_args(argv)
    work = args.work_dir
    side = run_side_by_side(work, args.records, args.seed, args.invalid_fraction, args.job_args, "stream-batch")
    shutil.rmtree(side.plain_out, ignore_errors=True)
    shutil.rmtree(side.job_out, ignore_errors=True)
    n = side.plain["records"]
    plain_rps, batch_rps = n / side.plain["seconds"], side.job["records"] / side.job["seconds"]
    batch_config = write_config(work, side.data)

    # Sustained: every file present before the job starts.
    watch = work / "stream-sustained-in"
    shutil.rmtree(watch, ignore_errors=True)
    per_file = args.file_records
    stream_files.stream(side.data, watch, rate=per_file, file_seconds=0.0, redeliver=0.0, per_file=per_file)
    out = work / "stream-sustained-out"
    summary = run_job(streaming_config(work, batch_config, watch, args.window_seconds, order_wait=args.order_wait), out)
    times = [
        parse_rfc3339(orjson.loads(line)["scored_at"]).timestamp()
        for path, _ in scored_files(out)
        for line in path.read_bytes().splitlines()
    ]
    span = max(times) - min(times)
    sustained = summary["scored"] / span

    # Latency at half the sustained rate.
    offered = sustained / 2
    watch = work / "stream-latency-in"
    shutil.rmtree(watch, ignore_errors=True)
    watch.mkdir(parents=True)
    out = work / "stream-latency-out"
    config = streaming_config(work, batch_config, watch, args.window_seconds, idle=20, order_wait=args.order_wait)
    fed: dict = {}
    limit = int(offered * args.latency_seconds)

    def feed() -> None:
        time.sleep(8)  # the job is starting (Prism, the model); it waits 20 s for a first file
        fed.update(stream_files.stream(side.data, watch, rate=offered, file_seconds=1.0, redeliver=0.0, limit=limit))

    feeder = threading.Thread(target=feed)
    feeder.start()
    latency_summary = run_job(config, out)
    feeder.join()
    appeared = {str(watch / f["name"]): f["appeared"] for f in fed["files"]}
    latencies = []
    for path, written in scored_files(out):
        for line in path.read_bytes().splitlines():
            latencies.append(written - appeared[orjson.loads(line)["source"]["uri"]])
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)

    print(f"records: {n:,}   window: {args.window_seconds} s   Prism streaming vs FnApiRunner batch, one process\n")
    print(f"| {'run':<40} | {'records/s':>10} | {'seconds':>8} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 10}|")
    print(f"| {'plain Python loop':<40} | {plain_rps:>10,.0f} | {side.plain['seconds']:>8.2f} |")
    print(f"| {'batch job (FnApiRunner, one process)':<40} | {batch_rps:>10,.0f} | {side.job['seconds']:>8.2f} |")
    print(f"| {'streaming job, sustained (Prism)':<40} | {sustained:>10,.0f} | {span:>8.2f} |")
    print(f"\nstreaming / batch job: {sustained / batch_rps:.2f}   streaming / plain loop: {sustained / plain_rps:.2f}")
    print(
        f"latency at {offered:,.0f} records/s offered for {args.latency_seconds:.0f} s "
        f"({latency_summary['scored']:,} scored): p50 {p50:.1f} s, p99 {p99:.1f} s "
        f"(target: window + 5 s = {args.window_seconds + 5} s)"
    )
    print(
        json.dumps(
            {
                "records": n,
                "window_seconds": args.window_seconds,
                "plain_records_per_s": round(plain_rps),
                "batch_job_records_per_s": round(batch_rps),
                "streaming_sustained_records_per_s": round(sustained),
                "streaming_over_batch": round(sustained / batch_rps, 3),
                "streaming_over_plain": round(sustained / plain_rps, 3),
                "sustained_balanced": summary["balanced"],
                "offered_records_per_s": round(offered),
                "latency_records": len(latencies),
                "latency_p50_s": round(p50, 2),
                "latency_p99_s": round(p99, 2),
                "latency_balanced": latency_summary["balanced"],
            }
        )
    )
    return 0 if summary["balanced"] and latency_summary["balanced"] else 1


if __name__ == "__main__":
    sys.exit(main())
