"""While a job runs here: Prometheus metrics on run.metrics_port, and a batch run's progress line.

Both read the live tally of pipeline.shared.metrics: every counter the stages increment, mirrored
in this process, where the workers of a local run (FnApiRunner, Prism) run. On Flink and Dataflow
the workers are elsewhere: their runner's own metrics are the place to look.

The metrics follow Prometheus's conventions (units in the names, counters ending in _total); the
table in docs/monitoring.md lists them. A scrape computes them from the tally at that moment:
nothing is collected between scrapes, so an endpoint nobody scrapes costs only the tally.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from pipeline.shared import drift, metrics
from pipeline.shared.periodic import Every
from pipeline.shared.version import PIPELINE_VERSION
from pipeline.summary import summarize_counters

_LAST_EXPOSITION: list[bytes] = [b""]


def last_exposition() -> bytes:
    """What the last run's endpoint served at its end (its final figures), for tests and tools."""
    return _LAST_EXPOSITION[0]


class Facts:
    """What the metrics say besides the counters: the model, the run, the source's lag."""

    def __init__(
        self,
        model_version: str,
        feature_set: str,
        shadow_version: str,
        mode: str,
        runner: str,
        drift_reference: dict[str, Any] | None = None,
        lag: Callable[[], int] | None = None,
        close: Callable[[], None] | None = None,
    ):
        self.model_version = model_version
        self.feature_set = feature_set
        self.shadow_version = shadow_version
        self.mode = mode
        self.runner = runner
        self.drift_reference = drift_reference
        self.lag = lag
        self.close = close or (lambda: None)  # what the lag holds (a consumer), at the end of the run
        self.started = time.time()


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, buckets: list[int], sum_ms: int) -> HistogramMetricFamily:
    cumulative, running = [], 0
    for bound, n in zip([*map(str, metrics.LATENCY_BOUNDS_SECONDS), "+Inf"], buckets, strict=True):
        running += n
        cumulative.append((bound, running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=sum_ms / 1000.0)


class JobCollector:
    """The riskpipe_* metrics from the live tally, computed at each scrape."""

    def __init__(self, facts: Facts):
        self._facts = facts

    def describe(self) -> list:
        return []  # computed at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        counts = metrics.live_counts()
        s = summarize_counters(counts)
        facts = self._facts
        yield _counter("riskpipe_records_read", "Records the source read.", s["read"])
        yield _counter("riskpipe_blank_lines_skipped", "Blank input lines (not records).", s["blank_lines_skipped"])
        yield _counter("riskpipe_records_scored", "Records scored and handed to the scored output.", s["scored"])
        letters = CounterMetricFamily(
            "riskpipe_dead_letters",
            "Records refused, by the stage that refused them and code.",
            labels=["code", "stage"],
        )
        for stage, codes in s["dead_letters_by_stage"].items():
            for code, n in codes.items():
                letters.add_metric([code, stage], n)
        yield letters
        yield _counter("riskpipe_source_errors", "Parts of the input that could not be read.", s["source_errors"])
        yield _counter("riskpipe_duplicates", "Redeliveries 20_dedupe dropped.", s["duplicates"])
        yield _counter("riskpipe_late_records", "Records later than the allowed lateness.", s["late_records"])
        yield _counter(
            "riskpipe_out_of_order", "Records 35_velocity scored after a later one of their card.", s["out_of_order"]
        )
        decisions = CounterMetricFamily("riskpipe_decisions", "Decisions made by 50_predict.", labels=["decision"])
        for decision, n in s["decisions"].items():
            decisions.add_metric([decision], n)
        yield decisions
        yield _counter("riskpipe_alerts", "REVIEW and DECLINE records written to an alerts topic.", s["alerts"])
        model = GaugeMetricFamily(
            "riskpipe_model_info", "The model that scores (1), its feature set and challenger.",
            labels=["model_version", "feature_set", "shadow_model_version"],
        )  # fmt: skip
        model.add_metric([facts.model_version, facts.feature_set, facts.shadow_version], 1)
        yield model
        swaps = CounterMetricFamily("riskpipe_model_swaps", "Model versions swapped in or refused.", labels=["result"])
        for result, n in s["model_swaps"].items():
            swaps.add_metric([result], n)
        yield swaps
        store = s["profile_store"]
        yield _counter("riskpipe_profile_store_lookups", "Records whose profiles were looked up.", store["lookups"])
        yield _counter("riskpipe_profile_store_failures", "Profile lookups that failed.", store["failures"])
        yield _counter("riskpipe_profile_store_queries", "Queries sent to the profile store.", store["queries"])
        yield _histogram(
            "riskpipe_scoring_latency_seconds",
            "Wall-clock seconds from a record's event time to its decision.",
            metrics.latency_buckets(counts, "event"),
            counts.get(metrics.LATENCY_MS_SUM_PREFIX + "event", 0),
        )
        yield _histogram(
            "riskpipe_read_to_decision_latency_seconds",
            "Wall-clock seconds from a record's read to its decision.",
            metrics.latency_buckets(counts, "read"),
            counts.get(metrics.LATENCY_MS_SUM_PREFIX + "read", 0),
        )
        yield _counter(
            "riskpipe_input_bytes_read",
            "Bytes of input files read (uncompressed files).",
            counts.get(metrics.BYTES_READ, 0),
        )
        yield _counter("riskpipe_input_files_read", "Input files read to their end.", counts.get(metrics.FILES_READ, 0))
        waiting = counts.get(metrics.FILES_TAKEN, 0) - counts.get(metrics.FILES_READ, 0)
        yield GaugeMetricFamily(
            "riskpipe_source_files_waiting", "Watched-folder files taken, not yet read.", value=max(0, waiting)
        )
        if facts.lag is not None:
            with contextlib.suppress(Exception):  # a broker not reachable right now: no lag this scrape
                lag = facts.lag()
                if lag >= 0:
                    yield GaugeMetricFamily(
                        "riskpipe_source_lag_records", "Kafka consumer lag of the job's group.", value=lag
                    )
        if facts.drift_reference is not None:
            report = drift.summarize(facts.drift_reference, s.pop("drift_counts", {}), math.inf)
            psi = GaugeMetricFamily(
                "riskpipe_drift_psi",
                "Population stability index against the model card's reference.",
                labels=["feature"],
            )
            if report.get("score_psi") is not None:
                psi.add_metric(["score"], report["score_psi"])
            for name, value in (report.get("feature_psi") or {}).items():
                if value is not None:
                    psi.add_metric([name], value)
            yield psi
        run = GaugeMetricFamily("riskpipe_run_info", "The run (1).", labels=["mode", "runner", "pipeline_version"])
        run.add_metric([facts.mode, facts.runner, PIPELINE_VERSION], 1)
        yield run
        yield GaugeMetricFamily(
            "riskpipe_run_start_time_seconds", "When the run started (Unix time).", value=facts.started
        )


class Monitor:
    """The live tally on, the metrics endpoint up (port > 0), the progress line (`progress`), for
    the length of a run; at the end the endpoint's last figures are kept (last_exposition)."""

    def __init__(self, facts: Facts, port: int, host: str, progress: ProgressLine | None = None):
        self._facts = facts
        self._port = port
        self._host = host
        self._progress = progress
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(JobCollector(facts))
        self._server: Any = None

    def __enter__(self) -> Monitor:
        self._tally = contextlib.ExitStack()
        self._tally.enter_context(metrics.live())
        if self._port:
            self._server, _ = start_http_server(self._port, addr=self._host, registry=self._registry)
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        _LAST_EXPOSITION[0] = generate_latest(self._registry)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._facts.close()
        self._tally.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class ProgressLine:
    """A batch run's progress on a terminal, one line rewritten every `interval` seconds: files read
    of all, records read, their rate, and the time left by the input bytes (uncompressed files) or
    by the files."""

    def __init__(self, files: int, total_bytes: int, stream: Any = None, interval: float = 0.5):
        self._files = files
        self._bytes = total_bytes
        self._stream = stream if stream is not None else sys.stderr
        self._ticks = Every(interval, self._show, "riskpipe-progress")
        self._started = 0.0
        self._width = 0

    def start(self) -> None:
        self._started = time.monotonic()
        self._ticks.start()

    def stop(self) -> None:
        self._ticks.stop()
        self._write(self.line(metrics.live_counts(), time.monotonic() - self._started, final=True) + "\n")

    def _show(self) -> None:
        self._write(self.line(metrics.live_counts(), time.monotonic() - self._started))

    def _write(self, text: str) -> None:
        pad = max(0, self._width - len(text.rstrip("\n")))
        self._width = len(text.rstrip("\n"))
        self._stream.write("\r" + text.rstrip("\n") + " " * pad + ("\n" if text.endswith("\n") else ""))
        self._stream.flush()

    def line(self, counts: dict[str, int], elapsed: float, final: bool = False) -> str:
        read = counts.get(metrics.RECORDS_READ, 0)
        files = counts.get(metrics.FILES_READ, 0)
        rate = read / elapsed if elapsed > 0 else 0.0
        done_bytes = counts.get(metrics.BYTES_READ, 0)
        parts = [
            f"files {files:,}/{self._files:,}",
            f"records {read:,}",
            f"{rate:,.0f}/s",
            f"elapsed {_duration(elapsed)}",
        ]
        if final:
            return "read: " + ", ".join(parts)
        left = None
        if self._bytes and 0 < done_bytes < self._bytes:
            left = elapsed * (self._bytes - done_bytes) / done_bytes
        elif self._files and 0 < files < self._files:
            left = elapsed * (self._files - files) / files
        if left is not None:
            parts.append(f"left about {_duration(left)}")
        return "reading: " + ", ".join(parts)


def progress_wanted(setting: str, streaming: bool, stream: Any = None) -> bool:
    """run.progress: on, off, or auto (a batch run whose stderr is a terminal)."""
    if streaming or setting == "off":
        return False
    if setting == "on":
        return True
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
