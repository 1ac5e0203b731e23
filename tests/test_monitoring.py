"""Metrics for monitoring (run.metrics_port) and a batch run's progress line (run.progress)."""

import io
import json
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from pipeline import runner
from pipeline import summary as run_summary
from pipeline.io.kafka_expansion import free_port
from pipeline.local import monitoring
from pipeline.shared import metrics
from tests.helpers import job_config


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def check_against_summary(found: dict, summary: dict) -> None:
    """The endpoint's figures are the summary's: read, scored, dead letters by code and stage,
    decisions, duplicates; the model named."""
    assert found[("riskpipe_records_read_total", ())] == summary["read"]
    assert found[("riskpipe_records_scored_total", ())] == summary["scored"]
    assert found[("riskpipe_duplicates_total", ())] == summary["duplicates"]
    by_code: dict[str, float] = {}
    for (name, labels), value in found.items():
        if name == "riskpipe_dead_letters_total":
            label = dict(labels)
            by_code[label["code"]] = by_code.get(label["code"], 0) + value
            assert summary["dead_letters_by_stage"][label["stage"]][label["code"]] == value
    assert by_code == summary["dead_letters_by_code"]
    for decision, n in summary["decisions"].items():
        assert found[("riskpipe_decisions_total", (("decision", decision),))] == n
    assert sum(summary["decisions"].values()) == summary["scored"]
    model = [labels for name, labels in found if name == "riskpipe_model_info"]
    assert model and dict(model[0])["model_version"] == summary["model_version"]


def test_a_batch_run_serves_its_metrics_while_it_runs_and_they_end_equal_to_the_summary(dataset, tmp_path):
    port, out = free_port(), tmp_path / "out"
    config = job_config(dataset, out, run__metrics_port=port)
    done: dict = {}
    job = threading.Thread(target=lambda: done.update(summary=runner.run(["--config", config, "--runner=FnApiRunner"])))
    job.start()
    seen = []
    while job.is_alive():
        text = scrape(port)
        if text is not None:
            seen.append(samples(text))
        time.sleep(0.05)
    job.join()
    summary = done["summary"]
    assert seen, "the endpoint answered while the job ran"
    assert all(
        (
            "riskpipe_run_info",
            (("mode", "batch"), ("pipeline_version", summary["pipeline_version"]), ("runner", "FnApiRunner")),
        )
        in s
        for s in seen
    )
    reads = [s[("riskpipe_records_read_total", ())] for s in seen]
    assert reads == sorted(reads)  # counters only go up
    check_against_summary(samples(monitoring.last_exposition().decode()), summary)
    assert scrape(port) is None, "the endpoint stops with the run"
    assert metrics.live_counts() == {}, "the live tally is off again"


def test_no_metrics_port_no_endpoint_and_no_tally(dataset, tmp_path):
    out = tmp_path / "out"
    summary = runner.run(["--config", job_config(dataset, out), "--runner=FnApiRunner"])
    assert summary["balanced"] and metrics.live_counts() == {}
    assert json.loads((out / "summary.json").read_text())["decisions"] == summary["decisions"]


def test_latency_quantiles_interpolate_within_their_bucket():
    bounds = metrics.LATENCY_BOUNDS_SECONDS
    buckets = [0] * (len(bounds) + 1)
    buckets[bounds.index(1.0)] = 100  # 100 decisions in (0.5, 1]
    assert metrics.latency_quantile(buckets, 0.5) == 0.75
    assert metrics.latency_quantile(buckets, 0.99) == 0.5 + 0.5 * 0.99
    buckets[-1] = 100  # and 100 beyond the last bound
    assert metrics.latency_quantile(buckets, 0.99) == bounds[-1]
    assert metrics.latency_quantile([0] * len(buckets), 0.5) is None


def test_the_progress_line_says_files_records_rate_and_time_left():
    line = monitoring.ProgressLine(files=4, total_bytes=1000, stream=io.StringIO())
    counts = {metrics.RECORDS_READ: 5000, metrics.FILES_READ: 1, metrics.BYTES_READ: 250}
    assert line.line(counts, 10.0) == "reading: files 1/4, records 5,000, 500/s, elapsed 0:10, left about 0:30"
    assert line.line(counts, 10.0, final=True) == "read: files 1/4, records 5,000, 500/s, elapsed 0:10"
    by_files = monitoring.ProgressLine(files=4, total_bytes=0, stream=io.StringIO())  # compressed input
    assert by_files.line(counts, 10.0).endswith("left about 0:30")


def test_progress_shows_on_a_terminal_only_in_batch():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert monitoring.progress_wanted("auto", False, Tty())
    assert not monitoring.progress_wanted("auto", False, io.StringIO())  # a file or a pipe: nothing extra
    assert not monitoring.progress_wanted("auto", True, Tty())  # streaming has its summary refresh
    assert monitoring.progress_wanted("on", False, io.StringIO())
    assert not monitoring.progress_wanted("off", False, Tty())


def test_progress_on_writes_a_final_line(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    summary = runner.run(["--config", job_config(dataset, out, run__progress="on"), "--runner=FnApiRunner"])
    err = capsys.readouterr().err
    assert f"read: files 1/1, records {summary['read']:,}" in err


def test_the_live_tally_is_shared_and_off_once_its_last_user_leaves():
    with metrics.live():
        metrics.counter("a").inc(2)
        with metrics.live():  # a metrics endpoint inside a Prism run's tally: the same one
            metrics.counter("a").inc(3)
        assert metrics.live_counts() == {"a": 5}, "the inner user leaving does not turn it off"
    assert metrics.live_counts() == {}
    with metrics.live():
        assert metrics.live_counts() == {}, "a new first user starts from zero"


def test_the_summary_gives_the_workers_counts_and_says_where_the_runner_differs(caplog):
    here = {
        metrics.RECORDS_READ: 10,
        metrics.SCORED_WRITTEN: 8,
        metrics.DEAD_LETTERS_WRITTEN: 2,
        metrics.BYTES_READ: 900,
    }
    runner_view = {metrics.RECORDS_READ: 10, metrics.SCORED_WRITTEN: 8, metrics.DEAD_LETTERS_WRITTEN: 1}
    with caplog.at_level("WARNING", logger="pipeline.summary"):
        counts = run_summary.worker_counts(runner_view, here)
    assert counts == {metrics.RECORDS_READ: 10, metrics.SCORED_WRITTEN: 8, metrics.DEAD_LETTERS_WRITTEN: 2}
    assert run_summary.summarize_counters(counts)["balanced"]
    assert not run_summary.summarize_counters(runner_view)["balanced"]
    assert [r.getMessage() for r in caplog.records] == [
        "the runner's metrics differ from what the job's workers counted: dead_letters_written 1 (counted 2); "
        "the summary gives the workers' counts"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.summary"):
        assert run_summary.worker_counts(counts, here) == counts
    assert not caplog.records, "nothing said when they agree"


def test_a_live_summary_on_prism_counts_from_the_workers_tally():
    class NothingCommittedYet:  # a running job whose runner has committed no bundle yet
        def metrics(self):
            return self

        def query(self, _filter):
            return {"counters": [], "distributions": []}

    here = {metrics.RECORDS_READ: 40, metrics.SCORED_WRITTEN: 30, metrics.FILES_TAKEN: 2}
    live = run_summary.live_summary(NothingCommittedYet(), lambda: here)
    assert (live["read"], live["scored"]) == (40, 30)
    assert run_summary.live_summary(NothingCommittedYet())["read"] == 0, "without the tally: the runner's figures"
