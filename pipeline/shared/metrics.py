"""Metric names shared by the stages and the run summary."""

from __future__ import annotations

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


def distribution(name: str):
    """A Beam distribution (count, sum, min, max) in the job's namespace."""
    return Metrics.distribution(NAMESPACE, name)


def counter(name: str):
    """A Beam counter in the job's namespace; declare it once per DoFn, not per element."""
    return Metrics.counter(NAMESPACE, name)
