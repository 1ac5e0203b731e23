"""Benchmark: the watched-folder job on Prism, its sustained rate and its latency, against the batch
job and the plain loop on the same data.

    python -m bench.streaming --records 200000 [--latency-seconds 60] [--window-seconds 10]
                              [--offered 1000 2000 5000] [--order arrival|event_time] [--order-wait SECONDS]
                              [--settle-seconds S] [--poll-seconds S]

In one run, on one generated data set (cached under .bench/):
1. bench.plain and bench.job (the batch job, FnApiRunner, one process) on the data, as bench.run.
2. Sustained: the data is dropped into a folder as files of --file-records lines (event times
   rebased to now, as tools.stream_files does), then the streaming job (Prism, default settings but
   --window-seconds, --order and --order-wait) is started on it and stops when idle.
   Sustained records/s = records scored / the time between the first and the last scored_at.
3. Latency, at each --offered rate: a streaming job of its own is started (with its metrics
   endpoint) and given a file of one record; once the endpoint counts it scored (the job's start,
   reported apart), tools.stream_files offers the data at that rate, one file a second, for
   --latency-seconds. A record's latency is the
   time from its file's appearance (its rename into the folder) to the appearance of the output
   file that holds it (that file's rename, after its window closed); p50, p95 and p99 over all
   scored records, and p50 over the first and the last third of the feed: a job that keeps up
   has about the same latency at the end as at the start. The feed renames each file into the
   folder when it is whole, so --settle-seconds 0 (the settle guard is for writers that do not)
   and a shorter --poll-seconds show what such a writer's files wait; unset, the job's defaults.
Prints a table; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import orjson
import yaml

from bench.run import ROOT, run_side_by_side, side_by_side_parser, write_config
from pipeline.io.kafka_expansion import free_port
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
    metrics_port: int = 0,
    source: dict | None = None,
) -> pathlib.Path:
    config = yaml.safe_load(batch_config.read_text())
    config["source"].update(source or {})
    config["run"]["metrics_port"] = metrics_port
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


def latency_run(
    work: pathlib.Path,
    data: pathlib.Path,
    batch_config: pathlib.Path,
    offered: float,
    seconds: float,
    window: int,
    order: str,
    source: dict | None = None,
) -> dict:
    """The data offered at `offered` records/s, one file a second, for `seconds`, while a streaming
    job runs; each scored record's latency from its file's appearance to its output file's."""
    watch = work / f"stream-latency-{offered:.0f}-in"
    shutil.rmtree(watch, ignore_errors=True)
    watch.mkdir(parents=True)
    out = work / f"stream-latency-{offered:.0f}-out"
    port = free_port()
    config = streaming_config(work, batch_config, watch, window, idle=20, order=order, metrics_port=port, source=source)
    fed: dict = {}
    startup: list[float] = []
    limit = int(offered * seconds)

    def feed() -> None:
        # The feed starts once the job scores: a file of one record of its own first, then the feed
        # as soon as the job's metrics endpoint counts that record scored. What is measured is the
        # running job's latency; its start (Prism, the model and its checks) is reported apart.
        launched = time.time()
        stream_files.write_file(watch, WARM_UP, [warm_up_line(data)])
        startup.append(wait_until_scored(port, launched))
        fed.update(stream_files.stream(data, watch, rate=offered, file_seconds=1.0, redeliver=0.0, limit=limit))

    feeder = threading.Thread(target=feed)
    feeder.start()
    summary = run_job(config, out)
    feeder.join()
    appeared = {str(watch / f["name"]): f["appeared"] for f in fed["files"]}
    first = min(appeared.values())
    timed = []
    for path, written in scored_files(out):
        for line in path.read_bytes().splitlines():
            uri = orjson.loads(line)["source"]["uri"]
            if uri in appeared:  # not the warm-up record
                came = appeared[uri]
                timed.append((came - first, written - came))
    figures = latency_figures(timed, seconds)
    return {
        "offered_records_per_s": round(offered),
        "seconds": seconds,
        "scored": summary["scored"],
        "with_reasons_share": with_reasons_share(summary),
        "startup_s": round(startup[0], 1) if startup else None,
        **figures,
        # Keeping up: the latency at the end of the feed is not growing past the start's by more
        # than a window (a job that falls behind adds the backlog to every later record), and no
        # record waits more than three windows (a job behind from its first files has a high but
        # flat latency).
        "kept_up": figures["p50_last_third_s"] <= figures["p50_first_third_s"] + window
        and figures["p99_s"] <= 3 * window,
        "balanced": summary["balanced"],
        "summary": summary,
    }


WARM_UP = "warm-up.jsonl"


def first_valid_line(data: pathlib.Path, after: int = 0) -> int:
    """The index of the first line from `after` on that the generator made valid (labels.jsonl)."""
    with open(data / "labels.jsonl", "rb") as f:
        for number, line in enumerate(f):
            if number >= after and orjson.loads(line)["expected_error_code"] is None:
                return number
    raise SystemExit(f"{data}: no valid record after line {after}")


def warm_up_line(data: pathlib.Path) -> bytes:
    """The data's first valid record under a transaction_id of its own (so that no record of the
    feed is its duplicate), its event time made live."""
    wanted = first_valid_line(data)
    with open(data / "transactions.jsonl", "rb") as lines:
        line = next(line for number, line in enumerate(lines) if number == wanted)
    record = orjson.loads(line)
    record["transaction_id"] = "warm-up-" + record["transaction_id"]
    return stream_files.rebase(orjson.dumps(record), time.time(), time.time(), 0.0, random.Random(0)) + b"\n"


def wait_until_scored(port: int, launched: float, timeout: float = 300.0) -> float:
    """Seconds from `launched` until the job's metrics endpoint counts a scored record."""
    while time.time() - launched < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith("riskpipe_records_scored_total ") and float(line.split()[1]) >= 1:
                        return time.time() - launched
        except OSError:
            pass  # not serving yet
        time.sleep(0.2)
    raise RuntimeError(f"the job scored nothing within {timeout:.0f} s of its start")


def with_reasons_share(summary: dict) -> float:
    """The share of scored records that were REVIEW or DECLINE, and so carry reasons (TreeSHAP, the
    default predict.explain): a live feed built from the generated data puts a card's month of
    history into the minutes of the feed, which makes its velocity features, and so its
    decisions, much more alarming than the batch job's."""
    decisions = summary.get("decisions") or {}
    scored = summary.get("scored") or 0
    return round((decisions.get("review", 0) + decisions.get("decline", 0)) / scored, 3) if scored else 0.0


def decisions_in(folder: pathlib.Path) -> dict:
    """{"scored": n, "decisions": {...}} counted from a folder of scored JSON lines."""
    counts = {"approve": 0, "review": 0, "decline": 0}
    for path in folder.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            counts[orjson.loads(line)["decision"].removeprefix("DECISION_").lower()] += 1
    return {"scored": sum(counts.values()), "decisions": counts}


def latency_figures(timed: list[tuple[float, float]], seconds: float) -> dict:
    """From (seconds into the feed, latency) pairs over a feed of `seconds`: p50, p95 and p99,
    and p50 over the feed's first and last thirds."""
    latencies = [latency for _, latency in timed] or [0.0]
    early = [latency for at, latency in timed if at < seconds / 3] or [0.0]
    late = [latency for at, latency in timed if at >= 2 * seconds / 3] or [0.0]
    return {
        "p50_s": round(percentile(latencies, 0.50), 3),
        "p95_s": round(percentile(latencies, 0.95), 3),
        "p99_s": round(percentile(latencies, 0.99), 3),
        "p50_first_third_s": round(percentile(early, 0.5), 3),
        "p50_last_third_s": round(percentile(late, 0.5), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = side_by_side_parser(__doc__, records=200_000, seed=17, invalid_fraction=0.02)
    parser.add_argument("--window-seconds", type=int, default=10)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--file-records", type=int, default=10_000)
    parser.add_argument("--order-wait", type=int, default=None, help="velocity.order_wait_seconds (default: the job's)")
    parser.add_argument("--order", choices=("arrival", "event_time"), default="arrival", help="streaming.order")
    parser.add_argument("--offered", type=float, nargs="+", default=[1000.0, 2000.0, 5000.0])
    parser.add_argument("--settle-seconds", type=float, default=None, help="source.settle_seconds (default: the job's)")
    parser.add_argument(
        "--poll-seconds", type=float, default=None, help="source.poll_interval_seconds (default: the job's)"
    )
    args = parser.parse_args(argv)
    source = {
        key: value
        for key, value in (("settle_seconds", args.settle_seconds), ("poll_interval_seconds", args.poll_seconds))
        if value is not None
    }
    args.records = max(args.records, int(max(args.offered) * args.latency_seconds))
    work = args.work_dir
    side = run_side_by_side(work, args.records, args.seed, args.invalid_fraction, args.job_args, "stream-batch")
    batch_reasons = with_reasons_share(decisions_in(side.job_out / "scored"))
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
    window = args.window_seconds
    config = streaming_config(
        work, batch_config, watch, window, order_wait=args.order_wait, order=args.order, source=source
    )
    summary = run_job(config, out)
    times = [
        parse_rfc3339(orjson.loads(line)["scored_at"]).timestamp()
        for path, _ in scored_files(out)
        for line in path.read_bytes().splitlines()
    ]
    span = max(times) - min(times)
    sustained = summary["scored"] / span

    # Latency at each offered rate, each run for --latency-seconds while its own job runs.
    latency_rows = [
        latency_run(work, side.data, batch_config, rate, args.latency_seconds, args.window_seconds, args.order, source)
        for rate in args.offered
    ]
    latency_summaries = [row.pop("summary") for row in latency_rows]

    print(f"records: {n:,}   window: {args.window_seconds} s   Prism streaming vs FnApiRunner batch, one process")
    folder_settings = source or "the job's settle and poll times"
    print(f"watched folder: {folder_settings}\n")
    print(f"| {'run':<40} | {'records/s':>10} | {'seconds':>8} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 10}|")
    print(f"| {'plain Python loop':<40} | {plain_rps:>10,.0f} | {side.plain['seconds']:>8.2f} |")
    print(f"| {'batch job (FnApiRunner, one process)':<40} | {batch_rps:>10,.0f} | {side.job['seconds']:>8.2f} |")
    print(f"| {'streaming job, sustained (Prism)':<40} | {sustained:>10,.0f} | {span:>8.2f} |")
    print(f"\nstreaming / batch job: {sustained / batch_rps:.2f}   streaming / plain loop: {sustained / plain_rps:.2f}")
    print(f"REVIEW or DECLINE (with reasons): batch {batch_reasons:.1%}, streaming {with_reasons_share(summary):.1%}")
    print(
        "\n| offered records/s | seconds | scored | with reasons | p50 s | p95 s | p99 s "
        "| p50 s, first / last third | kept up | job start s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in latency_rows:
        print(
            f"| {row['offered_records_per_s']:,} | {row['seconds']:.0f} | {row['scored']:,} | "
            f"{row['with_reasons_share']:.1%} | {row['p50_s']:.2f} | "
            f"{row['p95_s']:.2f} | {row['p99_s']:.2f} | "
            f"{row['p50_first_third_s']:.2f} / {row['p50_last_third_s']:.2f} | {'yes' if row['kept_up'] else 'no'} | "
            f"{row['startup_s']} |"
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
                "batch_with_reasons_share": batch_reasons,
                "sustained_with_reasons_share": with_reasons_share(summary),
                "order": args.order,
                "source": source,
                "latency": latency_rows,
            }
        )
    )
    return 0 if summary["balanced"] and all(s["balanced"] for s in latency_summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
