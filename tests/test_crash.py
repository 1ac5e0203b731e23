"""A crash loses nothing and scores nothing twice: the job's whole process group killed with
SIGKILL (as a machine failure would) at several moments, restarted with the same configuration,
output folder and consumer group, on a live feed; a real Kafka broker and a real watched folder.

Across all the runs, every record fed is in the outputs exactly once (scored or dead letter, found
by its source position), and no process the job started outlives a kill.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import signal
import subprocess
import threading
import time
import uuid

import orjson

from pipeline.io import progress
from tests.helpers import read_jsonl
from tests.test_kafka import broker, expansion_jar, kafka_job_config, labelled_lines  # noqa: F401 - fixtures
from tests.test_streaming import start_job, watch_config
from tools import kafka as kafka_tool
from tools import stream_files

# Short windows and a short order wait, so that windows close (and offsets are committed) within
# seconds; the crash guarantee does not depend on them.
FAST = {
    "streaming__window_seconds": 2,
    "streaming__allowed_lateness_seconds": 120,
    "velocity__order_wait_seconds": 1,  # streaming.order event_time
    "streaming__summary_interval_seconds": 1,
}
JAVA_CLASSES = (
    "org.apache.beam.fn.harness.ExternalWorkerService",
    "org.apache.beam.sdk.expansion.service.ExpansionService",
)


def job_java(job: subprocess.Popen) -> list[int]:
    """Java processes whose parent is the job."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                parent = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if parent == job.pid and any(name.encode() in cmdline for name in JAVA_CLASSES):
            children.append(int(entry))
    return children


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def kill_when(job: subprocess.Popen, ready, timeout: float = 180) -> list[int]:
    """Waits until `ready()` holds, then kills the job's whole process group with SIGKILL; returns
    the Java processes it had started (all gone a few seconds later)."""
    deadline = time.time() + timeout
    while not ready():
        assert job.poll() is None, job.communicate()[1].decode()[-3000:]
        assert time.time() < deadline, "the moment to kill never came"
        time.sleep(0.2)
    java = job_java(job)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    return java


def outputs(out: pathlib.Path) -> tuple[list[dict], list[dict]]:
    scored = [orjson.loads(line) for line in read_jsonl(out / "scored")]
    dead = [orjson.loads(line) for line in read_jsonl(out / "dead_letters")]
    return scored, dead


def positions(rows: list[dict]) -> list[tuple[str, int]]:
    return [p for p in (progress.unit_of(r.get("source") or {}) for r in rows) if p is not None]


def window_files(out: pathlib.Path) -> int:
    return len(glob.glob(str(out / "scored" / "*.jsonl")))


def finish(job: subprocess.Popen, out: pathlib.Path, timeout: float = 400) -> dict:
    _, stderr = job.communicate(timeout=timeout)
    assert job.returncode == 0, stderr.decode()[-4000:]
    return json.loads((out / "summary.json").read_text())


def test_kafka_job_killed_three_times_loses_nothing_and_scores_nothing_twice(
    dataset,
    tmp_path,
    broker,  # noqa: F811 - a fixture
    expansion_jar,  # noqa: F811 - a fixture
):
    bootstrap = broker.bootstrap
    tag = uuid.uuid4().hex[:8]
    names = {"in": f"crash-in-{tag}", "scored": None, "alerts": None, "dead": None}
    kafka_tool.create_topics(bootstrap, [names["in"]], partitions=3)
    lines, _ = labelled_lines(dataset)
    lines = lines[:6000]
    out = tmp_path / "out"
    settings = {
        **FAST,
        "kafka__scored_topic": None,
        "kafka__alerts_topic": None,
        "kafka__dead_letter_topic": None,
        "streaming__stop_after_idle_seconds": 0,
    }
    config = kafka_job_config(dataset, out, bootstrap, names, **settings)
    delivered: list = []

    def produce(part: list[bytes], rate: float) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: delivered.extend(
                kafka_tool.produce(bootstrap, names["in"], kafka_tool.live(part), rate=rate)
            )
        )
        thread.start()
        return thread

    # Two thirds before the kills; the rest while the third run runs, so that it has records of
    # its own to score (a job on arrival catches up with a backlog within seconds).
    split = len(lines) * 2 // 3
    producing = produce(lines[:split], rate=300.0)
    kills = []
    # 1: once the first scored window is on disk (records in flight in dedupe and velocity).
    job = start_job(config)
    kills.append(kill_when(job, lambda: window_files(out) >= 1))
    # 2: early in the second run, while it starts up and reads the backlog the kill left.
    job = start_job(config)
    started = time.time()
    kills.append(kill_when(job, lambda: time.time() - started > 12 and bool(job_java(job))))
    # 3: mid-stream, once the third run has written windows of its own.
    producing.join()
    job = start_job(config)
    before = window_files(out)
    producing = produce(lines[split:], rate=100.0)
    kills.append(kill_when(job, lambda: window_files(out) >= before + 3))
    time.sleep(3)
    assert all(not alive(pid) for pids in kills for pid in pids), "a Java process outlived the kill of its job"
    assert all(kills), "every killed run had started its Java processes"
    producing.join()
    # The last run goes to the end of the topic and stops by idleness.
    summary = finish(
        start_job(
            kafka_job_config(dataset, out, bootstrap, names, **{**settings, "streaming__stop_after_idle_seconds": 8})
        ),
        out,
    )
    assert summary["balanced"] and summary["stopped_by"] == "idle"
    assert "restart" in summary and summary["restart"]["previous_run_finished"] is False

    scored, dead = outputs(out)
    written = positions(scored) + positions(dead)
    fed = {(progress.kafka_unit(names["in"], d.partition), d.offset) for d in delivered}
    assert len(delivered) == len(lines)
    assert len(written) == len(set(written)), "a record was written twice"
    assert set(written) == fed, f"lost: {len(fed - set(written))}, unexpected: {len(set(written) - fed)}"
    ids = [s["transaction_id"] for s in scored]
    assert len(ids) == len(set(ids))
    print(
        f"kafka crash: {len(lines)} produced, 3 kills, {len(scored)} scored, {len(dead)} dead letters, "
        f"lost {len(fed - set(written))}, twice {len(written) - len(set(written))}; last run: {summary['restart']}"
    )


def test_watched_folder_job_killed_twice_loses_nothing_and_scores_nothing_twice(dataset, tmp_path, prism_binary):
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    # The held records of streaming.order event_time (the Kafka test runs on arrival, the default).
    settings = {**FAST, "streaming__stop_after_idle_seconds": 0, "streaming__order": "event_time"}
    config = watch_config(dataset, out, watch, **settings)
    fed: dict = {}
    feeding = threading.Thread(
        target=lambda: fed.update(
            stream_files.stream(dataset, watch, rate=400, file_seconds=1.0, limit=6000, redeliver=0.0)
        )
    )
    job = start_job(config)
    feeding.start()
    job_kills = 0
    # 1: once windows are on disk, with files still arriving and records in flight.
    kill_when(job, lambda: window_files(out) >= 2)
    job_kills += 1
    # 2: soon after the restart, while it reads the files the kill left half written out.
    job = start_job(config)
    started = time.time()
    kill_when(job, lambda: time.time() - started > 6)
    job_kills += 1
    feeding.join()
    summary = finish(
        start_job(watch_config(dataset, out, watch, **{**settings, "streaming__stop_after_idle_seconds": 6})), out
    )
    assert summary["balanced"]
    assert summary["restart"]["previous_run_finished"] is False

    scored, dead = outputs(out)
    written = positions(scored) + positions(dead)
    in_folder = {
        (f"file:{path}", number)
        for path in glob.glob(str(watch / "*.jsonl"))
        for number, line in enumerate(open(path, "rb"), start=1)
        if line.strip()
    }
    assert len(written) == len(set(written)), "a record was written twice"
    assert set(written) == in_folder, f"lost: {len(in_folder - set(written))}"
    ids = [s["transaction_id"] for s in scored]
    assert len(ids) == len(set(ids))
    # A file written out whole is not read again by the next run.
    ledger = [orjson.loads(line) for line in open(out / progress.LEDGER, "rb")]
    assert any("done" in entry for entry in ledger)
    print(
        f"watch crash: {len(in_folder)} lines, {job_kills} kills, {len(scored)} scored, {len(dead)} dead letters, "
        f"lost 0, twice 0; last run: {summary['restart']}"
    )
