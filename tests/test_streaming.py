"""The job unbounded, on Beam's Prism runner (built by scripts/prism.sh; under CI a missing Prism
fails these tests instead of skipping them).

- A TestStream through 10_validate's event time, 20_dedupe and the windowed sinks.
- The watched folder: files dropped while the job runs (some written slowly) all scored exactly
  once, the job stopping by idleness, balanced, and the same records as a batch run over the same
  files.
- Ctrl-C drains: every record read is written before the process exits.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import threading
import time

import apache_beam as beam
import orjson
import pytest
from apache_beam.coders import ProtoCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
from pipeline import graph, runner
from pipeline import summary as run_summary
from pipeline.io.windowed_files import compact_time
from pipeline.local import runners
from tests.conftest import AS_OF, ROOT
from tests.helpers import GOOD, job_config, read_jsonl, typed_config
from tools import stream_files

PYTHON = sys.executable


def record(line: int, txn_id: str, event: float, **changes) -> RawRecord:
    obj = dict(GOOD, transaction_id=txn_id, **changes)
    obj["event_time"] = dt.datetime.fromtimestamp(event, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return RawRecord(payload=orjson.dumps(obj), source=SourcePosition(uri="stream", line=line))


def run_stream(dataset, out: pathlib.Path, stream: TestStream, **settings):
    """The whole job on Prism with `stream` in place of the source; returns the result."""
    watch = out.parent / "watch"
    out.mkdir()
    watch.mkdir()
    config = typed_config(dataset, out, source__kind="watch", source__watch_dir=str(watch), **settings)
    options = PipelineOptions(["--runner=PrismRunner"])
    runners.choose_runner(options, streaming=True)
    p = TestPipeline(runner="PrismRunner", options=options)
    graph.build_pipeline(p, config, graph.Model("v-test"), graph.Run(run_id="r1"), raw_records=p | "Stream" >> stream)
    result = p.run()
    result.wait_until_finish()
    return result


def test_teststream_through_event_time_dedupe_and_windowed_sinks(dataset, tmp_path, prism_binary):
    out = tmp_path / "out"
    t0 = int(AS_OF.timestamp()) - 86400  # on a minute: the first window is [t0, t0 + 60)
    stream = (
        TestStream(coder=ProtoCoder(RawRecord))
        .advance_watermark_to(Timestamp(t0))
        .add_elements(
            [
                beam.window.TimestampedValue(record(1, "a", t0), t0 + 1),
                beam.window.TimestampedValue(record(2, "b", t0), t0 + 2),
                beam.window.TimestampedValue(record(3, "a", t0), t0 + 5),  # a redelivery
                beam.window.TimestampedValue(record(4, "b", t0, device_id="d-other"), t0 + 6),  # a conflict
            ]
        )
        .advance_watermark_to(Timestamp(t0 + 200))  # window 1 closes; a and b are forgotten at t0 + 120
        .add_elements(
            [
                beam.window.TimestampedValue(record(5, "a", t0), t0 + 250),  # after the horizon: a new record
                beam.window.TimestampedValue(record(6, "l", t0 - 700), t0 + 300),  # 1,000 s behind: late
            ]
        )
        .advance_watermark_to_infinity()
    )
    result = run_stream(
        dataset,
        out,
        stream,
        streaming__window_seconds=60,
        streaming__allowed_lateness_seconds=600,
        dedupe__horizon_seconds=120,
        streaming__order="event_time",  # dedupe's horizon by the watermark, as this test means it
        # Released as soon as the watermark passes them, so that the record that comes after its
        # window closed lands in a later pane (the default wait would hold all three until then).
        velocity__order_wait_seconds=0,
    )

    scored = [orjson.loads(line) for line in read_jsonl(out / "scored")]
    assert sorted((s["transaction_id"], int(s["source"]["line"])) for s in scored) == [("a", 1), ("a", 5), ("b", 2)]
    letters = [orjson.loads(line) for line in read_jsonl(out / "dead_letters")]
    assert sorted((d["transaction_id"], d["error_code"]) for d in letters) == [
        ("b", "ERROR_CODE_TRANSACTION_ID_CONFLICT"),
        ("l", "ERROR_CODE_LATE_RECORD"),
    ]
    summary = run_summary.summarize(result)
    assert summary["duplicates"] == 1 and summary["late_records"] == 1
    # One file set per window, the window in the name; the record that came after its window
    # closed is in a later pane beside the first, never in a replaced file.
    window = f"{compact_time(Timestamp(t0))}-{compact_time(Timestamp(t0 + 60))}"
    names = sorted(os.path.basename(f) for f in glob.glob(str(out / "scored" / "*.jsonl")))
    assert all(name.startswith(window) and ".r1." in name for name in names), names
    assert {name.split(".")[1] for name in names} == {"pane0", "pane1"}
    assert not [n for n in os.listdir(out / "scored") if n.startswith(".")]


def test_the_late_policy_score_flags_a_late_record_and_scores_it(dataset, tmp_path, prism_binary):
    out = tmp_path / "out"
    t0 = int(AS_OF.timestamp()) - 86400
    stream = (
        TestStream(coder=ProtoCoder(RawRecord))
        .advance_watermark_to(Timestamp(t0))
        .add_elements([beam.window.TimestampedValue(record(1, "on-time", t0), t0 + 1)])
        .advance_watermark_to(Timestamp(t0 + 500))
        .add_elements([beam.window.TimestampedValue(record(2, "late", t0), t0 + 500)])
        .advance_watermark_to_infinity()
    )
    result = run_stream(dataset, out, stream, streaming__allowed_lateness_seconds=60, streaming__late_policy="score")
    scored = {s["transaction_id"]: s for s in map(orjson.loads, read_jsonl(out / "scored"))}
    assert set(scored) == {"on-time", "late"}
    assert scored["late"].get("late") is True and "late" not in scored["on-time"]
    assert run_summary.summarize(result)["late_records"] == 1


def watch_config(dataset, out, watch, **overrides):
    settings = {
        "source__kind": "watch",
        "source__watch_dir": str(watch),
        "source__poll_interval_seconds": 0.2,
        "source__settle_seconds": 1.0,
        "streaming__window_seconds": 5,
        "streaming__stop_after_idle_seconds": 6,
        "streaming__summary_interval_seconds": 1,
        "run__as_of": None,
    }
    settings.update(overrides)
    return job_config(dataset, out, **settings)


def start_job(config: str, *extra: str) -> subprocess.Popen:
    """The job in a process group of its own, as a terminal starts it."""
    return subprocess.Popen(
        [PYTHON, "-m", "pipeline.runner", "--config", config, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def slow_lines(prefix: str, count: int) -> bytes:
    now = time.time()
    return b"".join(record(i, f"{prefix}-{i}", now, card_id="c0000001").payload + b"\n" for i in range(1, count + 1))


def write_slowly(path: pathlib.Path, data: bytes, pieces: int, pause: float) -> None:
    """Writes `data` in `pieces` chunks that cut lines in the middle, pausing between them."""
    step = max(1, len(data) // pieces + 1)
    with open(path, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            time.sleep(pause)


@pytest.mark.parametrize("order", ["event_time", "arrival"])
def test_a_watched_folder_scores_every_dropped_file_once_and_matches_batch(dataset, tmp_path, prism_binary, order):
    """Under streaming.order event_time the scored records equal batch's; on arrival the same
    records are scored and refused, and a scored record differs from batch's only when records
    were scored out of order (counted)."""
    watch, out, batch_out = tmp_path / "watch", tmp_path / "stream-out", tmp_path / "batch-out"
    watch.mkdir()
    job = start_job(watch_config(dataset, out, watch, streaming__order=order))
    fed: dict = {}

    def feed():
        fed.update(stream_files.stream(dataset, watch, rate=1500, file_seconds=0.5, redeliver=0.02))
        # A writer that takes 3 s, under a temporary name, then renames: never read half.
        temporary = watch / "slow.jsonl.tmp"
        write_slowly(temporary, slow_lines("slow", 40), pieces=6, pause=0.5)
        os.replace(temporary, watch / "slow.jsonl")
        # A writer that writes under the final name, pausing less than source.settle_seconds.
        write_slowly(watch / "direct.jsonl", slow_lines("direct", 40), pieces=6, pause=0.3)

    feeder = threading.Thread(target=feed)
    time.sleep(2)  # the job is starting: the first files arrive while it runs
    feeder.start()
    feeder.join()
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    lines_in_folder = sum(1 for f in glob.glob(str(watch / "*.jsonl")) for line in open(f, "rb") if line.strip())
    assert summary["balanced"] and summary["read"] == lines_in_folder == fed["lines_written"] + 80
    assert summary["stopped_by"] == "idle" and summary["mode"] == "streaming" and summary["runner"] == "PrismRunner"
    assert summary["duplicates"] > 0 and summary["source_errors"] == 0, summary
    # the run report, kept current as the run went: its last version is the final summary's
    page = (out / "report.html").read_text()
    assert f'data-key="read">{summary["read"]:,}<' in page and 'data-chart="throughput"' in page

    scored_ids = [orjson.loads(line)["transaction_id"] for line in read_jsonl(out / "scored")]
    assert len(scored_ids) == len(set(scored_ids)) == summary["scored"]
    assert {f"{p}-{i}" for p in ("slow", "direct") for i in range(1, 41)} <= set(scored_ids)
    labels = [orjson.loads(line) for line in open(dataset / "labels.jsonl", "rb")]
    valid = {row["transaction_id"] for row in labels if not row["expected_error_code"]}
    assert valid <= set(scored_ids)
    # Nothing was read half: the only dead letters are the generator's invalid records.
    expected_codes = {row["expected_error_code"] for row in labels if row["expected_error_code"]}
    assert set(summary["dead_letters_by_code"]) <= expected_codes

    batch = runner.run(
        [
            "--config",
            job_config(dataset, batch_out, input__transactions=str(watch / "*.jsonl"), run__as_of=None),
            "--runner=FnApiRunner",
        ]
    )
    assert batch["balanced"]
    for key in ("read", "scored", "dead_letters", "duplicates", "dead_letters_by_code"):
        assert batch[key] == summary[key], key

    def without(folder, field):
        rows = []
        for line in read_jsonl(folder):
            row = orjson.loads(line)
            row.pop(field, None)
            rows.append(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
        return sorted(rows)

    assert without(out / "dead_letters", "failed_at") == without(batch_out / "dead_letters", "failed_at")
    streamed, batched = without(out / "scored", "scored_at"), without(batch_out / "scored", "scored_at")
    if order == "event_time" or summary["out_of_order"] == 0:
        assert streamed == batched
    else:
        differ = len(set(streamed) - set(batched))
        # Each record scored out of order changes its own features and its card's later ones'.
        assert differ <= summary["out_of_order"] * 30, (differ, summary["out_of_order"])


def test_ctrl_c_drains_the_job_and_loses_nothing(dataset, tmp_path, prism_binary):
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    stream_files.stream(dataset, watch, rate=100_000, limit=500)
    job = start_job(watch_config(dataset, out, watch, streaming__stop_after_idle_seconds=0))
    deadline = time.time() + 120
    live: dict = {}
    while time.time() < deadline and not (glob.glob(str(out / "scored" / "*.jsonl")) and live.get("scored")):
        assert job.poll() is None, job.communicate()[1].decode()[-3000:]
        time.sleep(0.5)
        if (out / "summary.json").exists():
            live = json.loads((out / "summary.json").read_text())
    # While it runs, summary.json is refreshed (every second here) with the counts so far.
    assert live["running"] is True and 0 < live["read"] <= 500
    os.killpg(job.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group, Prism included
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 0, stderr.decode()[-3000:]
    assert b"draining" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "drain" and summary["balanced"] and summary["read"] == 500
    assert len(read_jsonl(out / "scored")) == summary["scored"]
    assert len(read_jsonl(out / "dead_letters")) == summary["dead_letters"]


def test_a_late_redelivery_is_a_duplicate_and_a_late_new_record_follows_the_policy(dataset, tmp_path, prism_binary):
    out = tmp_path / "out"
    t0 = int(AS_OF.timestamp()) - 86400
    stream = (
        TestStream(coder=ProtoCoder(RawRecord))
        .advance_watermark_to(Timestamp(t0))
        .add_elements([beam.window.TimestampedValue(record(1, "a", t0), t0 + 1)])
        .advance_watermark_to(Timestamp(t0 + 1000))  # "a" is scored; the watermark moves 1,000 s on
        .add_elements(
            [
                beam.window.TimestampedValue(record(2, "a", t0), t0 + 1000),  # a redelivery, 1,000 s late
                beam.window.TimestampedValue(record(3, "l", t0), t0 + 1000),  # a new record, as late
            ]
        )
        .advance_watermark_to_infinity()
    )
    result = run_stream(
        dataset,
        out,
        stream,
        streaming__allowed_lateness_seconds=600,
        dedupe__horizon_seconds=3600,
        velocity__order_wait_seconds=0,
    )
    scored = [orjson.loads(line) for line in read_jsonl(out / "scored")]
    assert [(s["transaction_id"], int(s["source"]["line"])) for s in scored] == [("a", 1)]
    letters = [orjson.loads(line) for line in read_jsonl(out / "dead_letters")]
    assert [(d["transaction_id"], d["error_code"], d["stage"]) for d in letters] == [
        ("l", "ERROR_CODE_LATE_RECORD", "25_lateness")
    ]
    summary = run_summary.summarize(result)
    assert summary["duplicates"] == 1 and summary["late_records"] == 1


def test_yesterdays_files_dropped_into_a_watched_folder_are_scored_not_late(dataset, tmp_path, prism_binary):
    """The watched folder's watermark follows the event times of the files taken: a day's old files
    dropped while the job runs (after it has watched an empty folder for a while) are on time."""
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    job = start_job(
        watch_config(dataset, out, watch, streaming__stop_after_idle_seconds=8, velocity__order_wait_seconds=0)
    )
    lines = [line.rstrip(b"\n") for line in open(dataset / "transactions.jsonl", "rb") if line.strip()][:3000]
    newest = stream_files.newest_event_time(lines)
    yesterday = time.time() - 86400
    rng = random.Random(5)
    old = [stream_files.rebase(line, yesterday + i, newest, 0.0, rng) for i, line in enumerate(lines)]
    time.sleep(4)  # the job watches an empty folder first
    for part in range(3):
        stream_files.write_file(
            watch, f"yesterday-{part}.jsonl", [line + b"\n" for line in old[part * 1000 : (part + 1) * 1000]]
        )
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["balanced"] and summary["read"] == 3000
    assert summary["late_records"] == 0 and "ERROR_CODE_LATE_RECORD" not in summary["dead_letters_by_code"]
    labels = [orjson.loads(line) for line in open(dataset / "labels.jsonl", "rb")]
    valid = {row["transaction_id"] for row in labels if not row["expected_error_code"]}
    ids = {m.group(1).decode() for line in old if (m := re.search(rb'"transaction_id":"([^"]+)"', line))}
    scored = {orjson.loads(line)["transaction_id"] for line in read_jsonl(out / "scored")}
    assert scored == ids & valid


def test_a_restarted_watch_job_goes_on_with_what_its_stateful_stages_remembered(dataset, tmp_path, prism_binary):
    """Prism's state dies with the job; the shards kept beside the outputs (pipeline.io.shard_files)
    do not: started again on the same output folder, the job knows the ids 20_dedupe kept (a
    redelivery of a record the first run scored is a duplicate) and the card histories of
    35_velocity (a card's next transaction counts the ones scored before the restart). A done
    file is not read again, but a new file put under its name, even of the same size, is."""
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    t0 = time.time() - 3600
    first = [
        record(1, "k-1", t0, card_id="c-restart"),
        record(2, "k-2", t0 + 30, card_id="c-restart"),
        record(3, "once", t0 + 40, card_id="c-other"),
    ]
    # the next file: the card's third transaction, and "once" redelivered byte for byte
    second = [record(1, "k-3", t0 + 90, card_id="c-restart"), first[2]]
    # then a new file under the first one's name, of the same size: new records, read
    third = [
        record(1, "k-4", t0 + 150, card_id="c-restart"),
        record(2, "k-5", t0 + 180, card_id="c-restart"),
        record(3, "more", t0 + 200, card_id="c-other"),
    ]
    assert sum(len(r.payload) for r in third) == sum(len(r.payload) for r in first)
    config = watch_config(dataset, out, watch, output__include_features=True, streaming__stop_after_idle_seconds=4)
    runs = []
    for name, records in (("a.jsonl", first), ("b.jsonl", second), ("a.jsonl", third)):
        stream_files.write_file(watch, name, [r.payload + b"\n" for r in records])
        _, stderr = start_job(config).communicate(timeout=300)
        runs.append((json.loads((out / "summary.json").read_text()), stderr.decode()))
        assert runs[-1][0]["balanced"], stderr.decode()[-3000:]
    (before, _), (after, said), (last, _) = runs
    assert before["scored"] == 3 and before["duplicates"] == 0
    assert after["read"] == 2 and after["scored"] == 1 and after["duplicates"] == 1
    assert after["restart"]["state_files"] >= 2 and "kept shard files" in said
    assert last["read"] == 3 and last["scored"] == 3
    scored = [orjson.loads(line) for line in read_jsonl(out / "scored")]
    assert sorted(s["transaction_id"] for s in scored) == ["k-1", "k-2", "k-3", "k-4", "k-5", "more", "once"]
    features = {s["transaction_id"]: s["features"] for s in scored}
    assert features["k-3"]["v_count_10m"] == 2 and features["k-3"]["v_seconds_since_prev"] == 60
    assert features["k-5"]["v_count_10m"] == 4 and features["k-5"]["v_seconds_since_prev"] == 30
