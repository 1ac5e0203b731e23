"""Benchmark: a Kafka job stopped while the feed goes on, then restarted: how long it takes to catch up.

    python -m bench.catchup [--rate 200] [--live-seconds 60] [--down-seconds 900] [--after-seconds 120]

With a broker of its own (scripts/kafka.sh, on a free port of 127.0.0.1, stopped at the end), a
producer writes the sample's transactions (each id made unique per pass over the file, event times
set to the moment of producing) at --rate records/s to a topic of --partitions partitions, the whole
time. The job (Prism, --source kafka, file outputs, --window-seconds windows, velocity's order wait
--order-wait) runs for --live-seconds, is stopped (Ctrl-C: it drains), stays down --down-seconds
while the producer goes on, and is restarted with the same group and output folder.

Reported: the backlog at the restart; the catch-up time (from the restart until every record
produced before it is on disk); the time until the job is back to live latency (the first output
file after which every file's records are on disk within --live-latency seconds of being
produced); the latency percentiles before the stop and after the catch-up; and, over both runs,
records produced, scored, dead letters, late, lost (must be 0) and written twice (must be 0).
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import calendar
import itertools
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import orjson
import yaml

from bench.streaming import percentile
from pipeline.io import progress
from tools import kafka as kafka_tool
from tools import stream_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
_ID = re.compile(rb'"transaction_id":"([^"]*)"')


def feed(lines: list[bytes], rate: float, stop: threading.Event, bootstrap: str, topic: str, sent: list) -> None:
    """Produces the lines over and over (ids suffixed with the pass) at `rate` until `stop`."""
    newest = stream_files.newest_event_time(lines)
    producer = kafka_tool.producer(bootstrap)
    rng = random.Random(11)
    started = time.monotonic()
    for n, (cycle, line) in enumerate((c, line) for c in itertools.count() for line in lines):
        if stop.is_set():
            break
        due = started + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        now = time.time()
        unique = _ID.sub(b'"transaction_id":"\\1-%d"' % cycle, line, count=1)
        value = stream_files.rebase(unique, now, newest, 0.0, rng)
        key = kafka_tool.transaction_key(value)
        producer.produce(topic, value, key)
        sent.append(now)
        producer.poll(0)
    producer.flush(30)


def job_config(work: pathlib.Path, bootstrap: str, topic: str, window: int, order_wait: int) -> pathlib.Path:
    settings = yaml.safe_load((ROOT / "config.yaml").read_text())
    settings["source"]["kind"] = "kafka"
    settings["kafka"].update(bootstrap_servers=bootstrap, topic=topic, group_id=f"g-{topic}")
    settings["streaming"].update(window_seconds=window, summary_interval_seconds=5, stop_after_idle_seconds=0)
    settings["velocity"]["order_wait_seconds"] = order_wait
    settings["output"]["dir"] = str(work / "out")
    for section, name in (("reference", "customers"), ("reference", "merchants"), ("predict", "model")):
        settings[section][name] = str((ROOT / settings[section][name]).resolve())
    settings["input"]["transactions"] = str((ROOT / settings["input"]["transactions"]).resolve())
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def start(config: pathlib.Path) -> subprocess.Popen:
    with open(config.parent / "job.log", "ab") as log:
        return _start(config, log)


def _start(config: pathlib.Path, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.runner", "--config", str(config)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _event_and_id(line: bytes) -> tuple[float, str]:
    obj = orjson.loads(line)
    event = obj.get("event_time", "")
    at = calendar.timegm(time.strptime(event[:19], "%Y-%m-%dT%H:%M:%S")) if event else 0.0
    return at, obj.get("transaction_id", "")


def _is_live(files: list, limit: float) -> bool:
    """Every record of these files was on disk within `limit` seconds of its event time."""
    return bool(files) and all(appeared - max(at for at, _ in rows) <= limit for appeared, rows in files if rows)


class FileWatch:
    """Output files as they appear: (appeared at, [(event time, id)])."""

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.seen: dict[str, tuple[float, list[tuple[float, str]]]] = {}

    def poll(self) -> None:
        for path in sorted(self.folder.glob("*.jsonl")) if self.folder.is_dir() else ():
            if path.name in self.seen:
                continue
            appeared = path.stat().st_mtime
            self.seen[path.name] = (appeared, [_event_and_id(line) for line in path.read_bytes().splitlines()])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--live-seconds", type=float, default=60.0)
    parser.add_argument("--down-seconds", type=float, default=900.0)
    parser.add_argument("--after-seconds", type=float, default=120.0)
    parser.add_argument("--window-seconds", type=int, default=5)
    parser.add_argument("--order-wait", type=int, default=0)
    parser.add_argument("--live-latency", type=float, default=15.0, help="seconds that count as live")
    args = parser.parse_args(argv)

    lines = [line for line in (ROOT / "data/sample/transactions.jsonl").read_bytes().splitlines() if line.strip()]
    work = pathlib.Path(tempfile.mkdtemp(prefix="riskpipe-catchup-"))
    with kafka_tool.Broker(str(work / "kafka")) as broker:
        topic = f"catchup-{os.getpid()}"
        kafka_tool.create_topics(broker.bootstrap, [topic], partitions=args.partitions)
        config = job_config(work, broker.bootstrap, topic, args.window_seconds, args.order_wait)
        scored = FileWatch(work / "out" / "scored")
        stop, sent = threading.Event(), list[float]()
        producer = threading.Thread(target=feed, args=(lines, args.rate, stop, broker.bootstrap, topic, sent))
        job = start(config)
        producer.start()
        time.sleep(args.live_seconds)
        os.killpg(job.pid, signal.SIGINT)  # stopped: drained, as an operator stops it
        job.communicate(timeout=600)
        produced_at_stop = len(sent)
        scored.poll()
        live_files = dict(scored.seen)
        print(f"catchup: stopped after {args.live_seconds:.0f} s; down for {args.down_seconds:.0f} s", file=sys.stderr)
        time.sleep(args.down_seconds)
        restarted = time.time()
        backlog_produced = len(sent)
        job = start(config)
        caught_up_at = live_again_at = None
        deadline = restarted + args.down_seconds * 3 + 600
        while time.time() < deadline:
            time.sleep(0.5)
            assert job.poll() is None, (work / "job.log").read_text()[-3000:]
            scored.poll()
            after = {k: v for k, v in scored.seen.items() if k not in live_files}
            latest_event = max((at for _, rows in after.values() for at, _ in rows), default=0.0)
            if caught_up_at is None and latest_event >= restarted:
                # every record produced before the restart is behind the newest one written
                caught_up_at = max(appeared for appeared, _ in after.values())
            if caught_up_at is not None and live_again_at is None:
                recent = sorted((appeared, rows) for appeared, rows in after.values() if appeared >= caught_up_at)
                if len(recent) >= 3 and _is_live(recent[-3:], args.live_latency):
                    live_again_at = recent[-3][0]
            if live_again_at is not None and time.time() - live_again_at >= args.after_seconds:
                break
        stop.set()
        producer.join()
        time.sleep(args.window_seconds + args.order_wait + 5)
        os.killpg(job.pid, signal.SIGINT)
        job.communicate(timeout=900)
        summary = json.loads((work / "out" / "summary.json").read_text())
        scored.poll()

    def latencies(files) -> list[float]:
        return [appeared - at for appeared, rows in files for at, _ in rows]

    before = latencies(live_files.values())
    after_live = latencies(v for v in scored.seen.values() if live_again_at and v[0] >= live_again_at)
    ids = [tid for _, rows in scored.seen.values() for _, tid in rows]
    dead = [
        orjson.loads(line)
        for path in (work / "out" / "dead_letters").glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    written = len(ids) + len(dead)
    late = sum(1 for d in dead if d.get("error_code") == "ERROR_CODE_LATE_RECORD")
    positions = [p for p in (progress.unit_of(d.get("source") or {}) for d in dead) if p]
    result = {
        "rate": args.rate,
        "partitions": args.partitions,
        "down_seconds": args.down_seconds,
        "backlog_at_restart": backlog_produced - produced_at_stop,
        "catch_up_seconds": round(caught_up_at - restarted, 1) if caught_up_at else None,
        "back_to_live_seconds": round(live_again_at - restarted, 1) if live_again_at else None,
        "latency_before_p50_p99": [round(percentile(before, q), 2) for q in (50, 99)] if before else None,
        "latency_after_p50_p99": [round(percentile(after_live, q), 2) for q in (50, 99)] if after_live else None,
        "produced": len(sent),
        "scored": len(ids),
        "dead_letters": len(dead),
        "late": late,
        "lost": len(sent) - written,
        "scored_twice": len(ids) - len(set(ids)),
        "dead_letters_twice": len(positions) - len(set(positions)),
        "last_run_restart": summary.get("restart"),
    }
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["scored_twice"] == 0 and late == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
