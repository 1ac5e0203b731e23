"""Metric names shared by the stages and the run summary, and the job's counters.

Every counter is a Beam counter (the runner aggregates it; the summary reads it from the result).
While the live tally is on (`live()`: a run that serves metrics or shows progress,
pipeline.local.monitoring, and every run on Prism, whose workers run in this process), each
increment is also added to a tally in this process: what a scrape or a progress line reads while
the job runs, and what a Prism run's summary counts (pipeline.summary: Prism v2.77's metrics store
keeps one value per counter it has not yet learnt the name of, so that a second bundle's value
overwrites the first's and the runner's total comes out short). The tally counts what the workers
did, retried bundles included (Prism and the FnApiRunner retry none).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Iterator, Mapping

from apache_beam.metrics import Metrics

NAMESPACE = "riskpipe"

RECORDS_READ = "records_read"
BLANK_LINES_SKIPPED = "blank_lines_skipped"
SOURCE_ERRORS = "source_errors"
DUPLICATES_DROPPED = "duplicates_dropped"
# Records a restarted streaming run read again where an earlier run had already written them: skipped.
ALREADY_WRITTEN = "already_written"
LATE_RECORDS = "late_records"
SCORED_WRITTEN = "scored_written"
ALERTS_WRITTEN = "alerts_written"
DEAD_LETTERS_WRITTEN = "dead_letters_written"
DEAD_LETTERS_REJECTED_BY_SINK = "dead_letters_rejected_by_sink"  # dead letters BigQuery refused
DEAD_LETTER_CODE_PREFIX = "dead_letters."
ON_DISK_PREFIX = "on_disk."  # + scored / dead_letters: lines in window files renamed into place (streaming)
DEFAULT_PROFILE_USED_PREFIX = "default_profile_used."
REFERENCE_ROWS_REJECTED = "reference_rows_rejected"
VELOCITY_CARDS_FORGOTTEN = "velocity_cards_forgotten"
VELOCITY_OUT_OF_ORDER = "velocity_out_of_order"
# 50_predict under a shadow model: + <champion decision>.<challenger decision> (none: no probability)
SHADOW_PREFIX = "shadow."
# + champion|shadow.<tenth>: scores in [0, 0.1), ..., [0.9, 1] (under a shadow model)
SCORE_TENTHS_PREFIX = "score_tenths."
# 50_predict, for drift: + <score|feature>.<bin>: records in each bin of the model card's drift reference
DRIFT_PREFIX = "drift."
# 50_predict under predict.model_watch_dir: versions that replaced the running model, versions refused
MODEL_SWAPS_ACCEPTED = "model_swaps.accepted"
MODEL_SWAPS_REFUSED = "model_swaps.refused"
# The profile store (enrich.backend postgres).
STORE_LOOKUPS = "profile_store.lookups"  # records whose profiles were looked up
STORE_QUERIES = "profile_store.queries"
STORE_KEYS_FETCHED = "profile_store.keys_fetched"
STORE_CACHE_HITS = "profile_store.cache_hits"
STORE_CACHE_MISSES = "profile_store.cache_misses"
STORE_RETRIES = "profile_store.retries"
STORE_FAILURES = "profile_store.failures"
STORE_QUERY_MS = "profile_store.query_ms"
# 90_dead_letter: + <stage>/<ERROR_CODE_NAME>: dead letters by the stage that refused them and code
DEAD_LETTER_STAGE_PREFIX = "dead_letters_at."
# 50_predict: + approve / review / decline
DECISIONS_PREFIX = "decisions."
# 50_predict, for the run report: + <i>: scores in [i/20, (i+1)/20) (the last bin holds 1.0); and
# + <hour>.<decision>: decisions by the hour of their event time (Unix hours).
SCORE_BINS_PREFIX = "score_bins."
SCORE_BINS = 20
DECISIONS_BY_HOUR_PREFIX = "decisions_by_hour."
# 50_predict: latency from a record's event time (event) and from its read (read) to its decision.
# + <kind>.<i>: decisions whose latency fell in LATENCY_BOUNDS_SECONDS bucket i (the last: above
# every bound); LATENCY_MS_SUM + <kind>: their latencies' sum in milliseconds.
LATENCY_BUCKET_PREFIX = "latency."
LATENCY_MS_SUM_PREFIX = "latency_ms_sum."
LATENCY_KINDS = ("event", "read")
LATENCY_BOUNDS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
# Live only (pipeline.io; not Beam counters): input bytes read, files read to their end, and files a
# watched folder took (taken - read: files waiting).
BYTES_READ = "bytes_read"
FILES_READ = "files_read"
FILES_TAKEN = "files_taken"
LIVE_ONLY = frozenset((BYTES_READ, FILES_READ, FILES_TAKEN))

_LOCK = threading.Lock()
_LIVE: dict[str, int] | None = None
_USERS = [0]


@contextlib.contextmanager
def live() -> Iterator[None]:
    """The process's live tally, on while any user is inside this block: the first to enter turns
    it on from zero, the last to leave turns it off (a run's summary and its metrics endpoint share
    one tally)."""
    global _LIVE
    with _LOCK:
        _USERS[0] += 1
        if _USERS[0] == 1:
            _LIVE = {}
    try:
        yield
    finally:
        with _LOCK:
            _USERS[0] -= 1
            if _USERS[0] == 0:
                _LIVE = None


def live_counts() -> dict[str, int]:
    """A copy of the live tally ({} while it is off)."""
    with _LOCK:
        return dict(_LIVE) if _LIVE is not None else {}


def live_add(name: str, n: int = 1) -> None:
    """Adds to the live tally only (figures the runner does not need to aggregate)."""
    if _LIVE is not None:
        with _LOCK:
            _LIVE[name] = _LIVE.get(name, 0) + n


class Counter:
    """A Beam counter in the job's namespace, mirrored in the live tally while it is on."""

    __slots__ = ("_beam", "_name")

    def __init__(self, name: str):
        self._name = name
        self._beam = Metrics.counter(NAMESPACE, name)

    def inc(self, n: int = 1) -> None:
        self._beam.inc(n)
        if _LIVE is not None:
            live_add(self._name, n)

    def dec(self, n: int = 1) -> None:
        self.inc(-n)


class BundleTally:
    """Counts kept in plain ints and handed to their counters by flush() (once a bundle): a record
    costs a few additions, not a counter call per figure. Counters are made on first use."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._counters: dict[str, Counter] = {}

    def add(self, name: str, n: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + n

    def observe_latency(self, kind: str, seconds: float) -> None:
        self.add(f"{LATENCY_BUCKET_PREFIX}{kind}.{bisect.bisect_left(LATENCY_BOUNDS_SECONDS, seconds)}")
        self.add(LATENCY_MS_SUM_PREFIX + kind, round(seconds * 1000.0))

    def flush(self) -> None:
        counts, self._counts = self._counts, {}
        for name, n in counts.items():
            found = self._counters.get(name)
            if found is None:
                found = self._counters[name] = counter(name)
            found.inc(n)


def latency_buckets(counters: Mapping[str, int], kind: str) -> list[int]:
    """The bucket counts of `kind` (one per bound, then the overflow) from a counters mapping."""
    width = len(LATENCY_BOUNDS_SECONDS) + 1
    return [int(counters.get(f"{LATENCY_BUCKET_PREFIX}{kind}.{i}", 0)) for i in range(width)]


def latency_quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile of a bucketed latency, interpolated within its bucket (as Prometheus's
    histogram_quantile does); None without observations; the last bound when it is beyond them."""
    total = sum(buckets)
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for i, n in enumerate(buckets):
        if i == len(LATENCY_BOUNDS_SECONDS):
            return LATENCY_BOUNDS_SECONDS[-1]
        upper = LATENCY_BOUNDS_SECONDS[i]
        if n and seen + n >= rank:
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        lower = upper
    return LATENCY_BOUNDS_SECONDS[-1]


def distribution(name: str):
    """A Beam distribution (count, sum, min, max) in the job's namespace."""
    return Metrics.distribution(NAMESPACE, name)


def counter(name: str) -> Counter:
    """A counter in the job's namespace (mirrored live while that is on); declare it once per DoFn,
    not per element."""
    return Counter(name)
