"""Benchmark: user-state requests per record of each stateful stage, streaming on Prism, for each
streaming.order.

    python -m bench.state_requests --records 50000 [--orders arrival event_time] [--file-records 5000]
                                   [--rate RECORDS_PER_S]

In one run, on one generated data set (cached under .bench/): the data is dropped into a folder
as files of --file-records lines (event times rebased to now, as tools.stream_files does), then
the watched-folder job (Prism, default settings) runs on it until idle, once per order; with
--rate, the job starts on an empty folder and the data comes at that rate, one file a second (a
live feed: smaller bundles, so more requests per record). Each job
runs in a child process that counts every state request its SDK worker sends to Prism (the
worker runs in the job's process on Prism), by stage and kind (get, append, clear), and its
wall time. Every request is a blocking round trip of about 250 µs of CPU between the two
processes (../docs/performance.md), so requests per record bound the streaming rate.
Prints a table; the last line is one JSON object with the figures.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

from bench.run import ROOT, dataset, side_by_side_parser, write_config
from bench.streaming import streaming_config
from tools import stream_files

STATEFUL = ("20_dedupe", "35_velocity")


def count_requests(counts_file: str) -> None:
    """Counts the state requests of this process's SDK worker, by stage and kind, into
    `counts_file` at exit."""
    from apache_beam.runners.worker import sdk_worker

    counts: collections.Counter = collections.Counter()
    names: dict[str, str] = {}
    original = sdk_worker.GrpcStateHandler._request

    def counted(self, request):
        key = request.state_key
        transform = key.WhichOneof("type") and getattr(key, key.WhichOneof("type")).transform_id
        stage = names.get(transform)
        if stage is None:
            stage = names[transform] = next((s for s in STATEFUL if f"_{s}-" in transform), transform or "other")
        counts[(stage, request.WhichOneof("request"))] += 1
        return original(self, request)

    setattr(sdk_worker.GrpcStateHandler, "_request", counted)  # noqa: B010 - a benchmark's probe
    atexit.register(lambda: pathlib.Path(counts_file).write_text(json.dumps([[*k, v] for k, v in counts.items()])))


def run_counted(config: pathlib.Path, out: pathlib.Path, counts: pathlib.Path) -> tuple[dict, dict, float]:
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import sys; from bench.state_requests import count_requests; "
        f"count_requests({str(counts)!r}); from pipeline import runner; "
        "sys.exit(runner.main(sys.argv[1:]))"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, "--config", str(config), "--output_dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-5000:])
        raise SystemExit(f"the streaming job failed with exit code {done.returncode}")
    by_stage: dict = collections.defaultdict(collections.Counter)
    for stage, kind, n in json.loads(counts.read_text()):
        by_stage[stage][kind] += n
    return json.loads((out / "summary.json").read_text()), by_stage, seconds


def feed_live(data: pathlib.Path, watch: pathlib.Path, rate: float) -> None:
    time.sleep(8)  # the job starts; it waits 20 s for a first file
    stream_files.stream(data, watch, rate=rate, file_seconds=1.0, redeliver=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = side_by_side_parser(__doc__, records=50_000, seed=17, invalid_fraction=0.02)
    parser.add_argument("--file-records", type=int, default=5_000)
    parser.add_argument("--orders", nargs="+", default=["event_time", "arrival"])
    parser.add_argument(
        "--rate", type=float, default=0.0, help="records/s: a live feed (one file a second) instead of a backlog"
    )
    args = parser.parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    data, _ = dataset(work, args.records, args.seed, args.invalid_fraction)
    batch_config = write_config(work, data)
    rows = []
    for order in args.orders:
        watch = work / f"state-{order}-in"
        shutil.rmtree(watch, ignore_errors=True)
        watch.mkdir(parents=True)
        feeder = None
        if args.rate:
            feeder = threading.Thread(target=feed_live, args=(data, watch, args.rate))
            feeder.start()
        else:
            per_file = args.file_records
            stream_files.stream(data, watch, rate=per_file, file_seconds=0.0, redeliver=0.0, per_file=per_file)
        config = streaming_config(work, batch_config, watch, window=10, idle=20 if args.rate else 5, order=order)
        summary, by_stage, seconds = run_counted(config, work / f"state-{order}-out", work / f"state-{order}.json")
        if feeder is not None:
            feeder.join()
        read = summary["read"]
        row = {"order": order, "records": read, "seconds": round(seconds, 1), "balanced": summary["balanced"]}
        for stage in STATEFUL:
            kinds = by_stage.get(stage, {})
            row[stage] = {kind: kinds[kind] for kind in sorted(kinds)}
            row[f"{stage}_per_record"] = round(sum(kinds.values()) / read, 3)
        rows.append(row)

    feed = f"fed at {args.rate:,.0f} records/s" if args.rate else f"a backlog in files of {args.file_records:,}"
    print(f"records: {args.records:,}, {feed}, watched folder, Prism, default model\n")
    print(
        "| streaming.order | job s | 20_dedupe requests/record | 35_velocity requests/record "
        "| requests (get/append/clear) |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        detail = "; ".join(
            f"{stage}: " + "/".join(str(row[stage].get(k, 0)) for k in ("get", "append", "clear")) for stage in STATEFUL
        )
        print(
            f"| {row['order']} | {row['seconds']} | {row['20_dedupe_per_record']} | "
            f"{row['35_velocity_per_record']} | {detail} |"
        )
    print(json.dumps(rows))
    return 0 if all(row["balanced"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
