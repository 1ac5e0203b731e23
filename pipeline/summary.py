"""The run summary: what happened to every record, from the runner's metrics; the printed table
and the exit code. summary.json, the printed table and docs/outputs.md all follow FIELDS."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from apache_beam.metrics.metric import MetricsFilter

from contracts.riskpipe.v1.dead_letter_pb2 import ErrorCode
from pipeline import beam_compat
from pipeline.shared import metrics
from pipeline.shared.version import PIPELINE_VERSION
from pipeline.stages import STAGES

_LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNBALANCED = 1
EXIT_CONFIG = 2
EXIT_INPUT_INCOMPLETE = 3
EXIT_RUN_FAILED = 4
EXIT_CODES = (
    (EXIT_OK, "every record accounted for (read = scored + dead letters + duplicates) and the whole input read"),
    (EXIT_UNBALANCED, "a run that did not account for every record"),
    (EXIT_CONFIG, "a configuration that cannot run: nothing read or written"),
    (EXIT_INPUT_INCOMPLETE, "balanced, but part of the input could not be read (source errors)"),
    (EXIT_RUN_FAILED, "the run failed (a worker died, the runner failed): nothing published"),
)
_SOURCE_UNREADABLE = ErrorCode.Name(ErrorCode.ERROR_CODE_SOURCE_UNREADABLE)
_MAX_SOURCE_ERROR_DETAILS = 50
_EXECUTION_TIME = "beam:metric:ptransform_execution_time:total_msecs:v1"


class Field(NamedTuple):
    key: str  # in summary.json; a/b: key b of the object a
    label: str  # in the printed table ("" : not printed as a row)
    meaning: str


FIELDS = (
    Field("read", "records read", "Records the source read (non-blank lines, Kafka records, messages)."),
    Field("blank_lines_skipped", "blank lines skipped", "Blank lines: not records, counted."),
    Field("scored", "scored", "Records scored and handed to the scored output."),
    Field("dead_letters", "dead letters", "Records refused by a stage, each with its reason (source errors apart)."),
    Field("dead_letters_by_code", "", "Dead letters per error code (printed under `dead letters`)."),
    Field("dead_letters_by_stage", "", "Dead letters per stage that refused them, then per error code."),
    Field("decisions", "", "Scored records by decision: approve, review, decline."),
    Field("score_histogram", "", "Scores in 20 bins of width 0.05 over [0, 1] (the last holds 1.0)."),
    Field(
        "decisions_by_hour",
        "",
        "Batch: decisions by the hour of the records' event time (UTC), then by decision (streaming: empty).",
    ),
    Field("duplicates", "duplicates dropped", "Redeliveries 20_dedupe dropped (same transaction_id and content)."),
    Field("late_records", "late records", "Records later than streaming.allowed_lateness_seconds."),
    Field(
        "out_of_order",
        "scored out of order",
        "Streaming: records 35_velocity scored after a later one of their card had been scored (on arrival, or "
        "past the order wait), from the earlier ones only.",
    ),
    Field("cards_forgotten", "", "Streaming: cards 35_velocity forgot after 7 quiet days."),
    Field("alerts", "alerts written to a topic", "REVIEW and DECLINE records written to an alerts topic."),
    Field("default_profiles_used/customer", "default customer profiles", "Records enriched with a default profile."),
    Field("default_profiles_used/merchant", "default merchant profiles", "The same for merchant profiles."),
    Field("reference_rows_rejected", "reference rows rejected", "Rows of the reference files that were not profiles."),
    Field("source_errors", "source errors", "Parts of the input that could not be read (SOURCE_UNREADABLE)."),
    Field("balanced", "balanced", "read = scored + dead_letters + duplicates."),
    Field("input_complete", "", "No source error: the whole input was read."),
    Field("profile_store", "", "Profile-store lookups, queries, cache hits and misses, retries, failures (postgres)."),
    Field("on_disk", "", "Streaming: lines in window files already renamed into place, per output folder."),
    Field(
        "restart",
        "",
        "Streaming: what an earlier run of the output folder left (its last summary, input files done, output "
        "files read back, the stateful stages' kept shard files: state_files), and what was skipped.",
    ),
    Field("stage_msecs", "", "Milliseconds spent in each stage (runners that sample execution time)."),
    Field(
        "latency",
        "",
        "Wall-clock time from a record's event time (event_to_decision) and from its read (read_to_decision, "
        "not with a pinned run.as_of) to its decision in 50_predict: decisions, mean, p50/p90/p99 estimated "
        "from the buckets (seconds, bucket upper bounds). Meaningful on a live feed; a replay's event times "
        "are old.",
    ),
    Field("model_version", "model", "The model version stamped on every score, and its feature set."),
    Field(
        "model_swaps",
        "",
        "Under predict.model_watch_dir: swaps to a newer version (accepted, once per model instance that "
        "swapped) and versions refused by the checks (once per worker process).",
    ),
    Field(
        "drift",
        "",
        "Population stability index of the score and of each feature against the model card's reference "
        "(score_psi, feature_psi, threshold, flagged: those above it); streaming: since the run started, "
        "and under last_interval the same over the records since the previous summary refresh.",
    ),
    Field(
        "shadow",
        "",
        "Under predict.shadow_model: the challenger's version, records compared, agreement (same decision), "
        "decisions that would flip each way, champion -> challenger decision counts, each model's decisions "
        "and scores by tenth of [0, 1].",
    ),
    Field("exit_code", "", "The run's exit code (below)."),
)


def summarize(result: Any, counted_here: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The run's summary from the runner's committed metrics; with `counted_here` (the live tally
    of a run whose workers ran in this process: Prism), its counters from that tally instead, and
    any counter on which the runner's total differs logged."""
    counters, distributions = runner_metrics(result)
    if counted_here is not None:
        counters = worker_counts(counters, counted_here)
    return summarize_counters(counters, distributions)


def runner_metrics(result: Any) -> tuple[dict[str, int], dict[str, Any]]:
    found = beam_compat.fresh_metrics(result).query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    return committed(found)


def counted(here: Mapping[str, int]) -> dict[str, int]:
    """The live tally's job counters (without the figures only a live view has)."""
    return {name: n for name, n in here.items() if name not in metrics.LIVE_ONLY}


def worker_counts(runner: Mapping[str, int], here: Mapping[str, int]) -> dict[str, int]:
    """The counters as the workers in this process counted them. Where the runner's total differs
    (Prism v2.77 keeps one pending value per counter whose name it has not learnt yet, so that the
    value of a second bundle that reports the counter before the name comes overwrites the first's),
    the difference is logged: the runner's own view of the job (its metrics) is short."""
    workers = counted(here)
    differing = sorted(name for name in workers.keys() | runner.keys() if workers.get(name, 0) != runner.get(name, 0))
    if differing:
        shown = ", ".join(f"{name} {runner.get(name, 0)} (counted {workers.get(name, 0)})" for name in differing[:8])
        more = f" and {len(differing) - 8} more" if len(differing) > 8 else ""
        _LOG.warning(
            "the runner's metrics differ from what the job's workers counted: %s%s; "
            "the summary gives the workers' counts",
            shown,
            more,
        )
    return workers


def committed(found: dict[str, list]) -> tuple[dict[str, int], dict[str, Any]]:
    """Counters and distributions by name, as committed. While a streaming job runs, a metric a bundle
    has reported but no finished bundle has committed yet has no committed value (None): a counter
    reads 0 and a distribution is left out, as if not yet reported."""
    counters = {r.key.metric.name: r.committed or 0 for r in found["counters"]}
    distributions = {r.key.metric.name: r.committed for r in found["distributions"] if r.committed is not None}
    return counters, distributions


def summarize_counters(counters: dict[str, int], distributions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary from the job's counters by name (the runner's, or the live tally's)."""
    distributions = distributions or {}
    by_code = {
        name: counters.get(metrics.DEAD_LETTER_CODE_PREFIX + name, 0)
        for name in ErrorCode.keys()  # noqa: SIM118 - protobuf enum wrapper
        if counters.get(metrics.DEAD_LETTER_CODE_PREFIX + name, 0) and name != _SOURCE_UNREADABLE
    }
    read = counters.get(metrics.RECORDS_READ, 0)
    scored = counters.get(metrics.SCORED_WRITTEN, 0)
    source_errors = counters.get(metrics.DEAD_LETTER_CODE_PREFIX + _SOURCE_UNREADABLE, 0)
    dead = counters.get(metrics.DEAD_LETTERS_WRITTEN, 0) - source_errors
    duplicates = counters.get(metrics.DUPLICATES_DROPPED, 0)
    summary = {
        "pipeline_version": PIPELINE_VERSION,
        "read": read,
        "blank_lines_skipped": counters.get(metrics.BLANK_LINES_SKIPPED, 0),
        "scored": scored,
        "dead_letters": dead,
        "dead_letters_by_code": by_code,
        "duplicates": duplicates,
        "balanced": read == scored + dead + duplicates,
        "source_errors": source_errors,
        "input_complete": source_errors == 0,
        "default_profiles_used": {
            kind: counters.get(metrics.DEFAULT_PROFILE_USED_PREFIX + kind, 0) for kind in ("customer", "merchant")
        },
        "reference_rows_rejected": counters.get(metrics.REFERENCE_ROWS_REJECTED, 0),
        "late_records": counters.get(metrics.LATE_RECORDS, 0),
        "out_of_order": counters.get(metrics.VELOCITY_OUT_OF_ORDER, 0),
        "cards_forgotten": counters.get(metrics.VELOCITY_CARDS_FORGOTTEN, 0),
        "already_written": counters.get(metrics.ALREADY_WRITTEN, 0),
        "alerts": counters.get(metrics.ALERTS_WRITTEN, 0),
        "dead_letters_rejected_by_sink": counters.get(metrics.DEAD_LETTERS_REJECTED_BY_SINK, 0),
        "profile_store": store_summary(counters, distributions.get(metrics.STORE_QUERY_MS)),
        "model_swaps": {
            "accepted": counters.get(metrics.MODEL_SWAPS_ACCEPTED, 0),
            "refused": counters.get(metrics.MODEL_SWAPS_REFUSED, 0),
        },
        "decisions": {
            name: counters.get(metrics.DECISIONS_PREFIX + name, 0) for name in ("approve", "review", "decline")
        },
        "dead_letters_by_stage": dead_letters_by_stage(counters),
        "latency": latency_summary(counters),
        "score_histogram": [counters.get(f"{metrics.SCORE_BINS_PREFIX}{i}", 0) for i in range(metrics.SCORE_BINS)],
        "decisions_by_hour": decisions_by_hour(counters),
    }
    written_out = on_disk(counters)
    if written_out:
        summary["on_disk"] = written_out
    summary["drift_counts"] = drift_counts(counters)
    compared = shadow_summary(counters)
    if compared is not None:
        summary["shadow"] = compared
    return summary


def dead_letters_by_stage(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """{stage: {code: dead letters}} (source errors apart: not records)."""
    out: dict[str, dict[str, int]] = {}
    for name, n in sorted(counters.items()):
        if name.startswith(metrics.DEAD_LETTER_STAGE_PREFIX) and n:
            stage, _, code = name[len(metrics.DEAD_LETTER_STAGE_PREFIX) :].partition("/")
            if code != _SOURCE_UNREADABLE:
                out.setdefault(stage, {})[code] = n
    return out


def decisions_by_hour(counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """{hour of event time (UTC, RFC 3339): {decision: records}}, in time order."""
    out: dict[int, dict[str, int]] = {}
    for name, n in counters.items():
        if name.startswith(metrics.DECISIONS_BY_HOUR_PREFIX) and n:
            hour, _, decision = name[len(metrics.DECISIONS_BY_HOUR_PREFIX) :].partition(".")
            out.setdefault(int(hour), {})[decision] = n
    return {
        dt.datetime.fromtimestamp(hour * 3600, dt.UTC).strftime("%Y-%m-%dT%H:00:00Z"): dict(sorted(found.items()))
        for hour, found in sorted(out.items())
    }


def latency_summary(counters: dict[str, int]) -> dict[str, Any]:
    """From event time and from the read to the decision, on the wall clock: decisions counted,
    mean, and p50 / p90 / p99 estimated from the buckets (seconds)."""
    out: dict[str, Any] = {}
    for kind, key in (("event", "event_to_decision"), ("read", "read_to_decision")):
        buckets = metrics.latency_buckets(counters, kind)
        count = sum(buckets)
        if not count:
            continue
        quantiles = {f"p{round(q * 100)}": metrics.latency_quantile(buckets, q) for q in (0.5, 0.9, 0.99)}
        out[key] = {
            "decisions": count,
            "mean_seconds": round(counters.get(metrics.LATENCY_MS_SUM_PREFIX + kind, 0) / count / 1000.0, 3),
            **{name: round(value, 3) for name, value in quantiles.items() if value is not None},
            "buckets": dict(zip([*map(str, metrics.LATENCY_BOUNDS_SECONDS), "+Inf"], buckets, strict=True)),
        }
    return out


def drift_counts(counters: dict[str, int]) -> dict[str, list[int]]:
    """50_predict's drift bins: {score or feature: [records in bin 0, 1, ...]} (the launch turns them
    into PSI against the model card's reference, pipeline.shared.drift)."""
    bins: dict[str, dict[int, int]] = {}
    for name, n in counters.items():
        if name.startswith(metrics.DRIFT_PREFIX):
            what, _, index = name[len(metrics.DRIFT_PREFIX) :].rpartition(".")
            bins.setdefault(what, {})[int(index)] = n
    return {what: [found.get(i, 0) for i in range(max(found) + 1)] for what, found in bins.items()}


_SEVERITY = {"approve": 0, "review": 1, "decline": 2}


def shadow_summary(counters: dict[str, int]) -> dict[str, Any] | None:
    """The champion against the challenger, from 50_predict's counts; None without a shadow model."""
    pairs = {
        tuple(name[len(metrics.SHADOW_PREFIX) :].split(".")): n
        for name, n in counters.items()
        if name.startswith(metrics.SHADOW_PREFIX) and n
    }
    if not pairs:
        return None
    total = sum(pairs.values())
    same = sum(n for (a, b), n in pairs.items() if a == b)
    stricter = sum(n for (a, b), n in pairs.items() if b in _SEVERITY and _SEVERITY[b] > _SEVERITY[a])
    laxer = sum(n for (a, b), n in pairs.items() if b in _SEVERITY and _SEVERITY[b] < _SEVERITY[a])

    def decisions(side: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for pair, n in pairs.items():
            out[pair[side]] = out.get(pair[side], 0) + n
        return dict(sorted(out.items()))

    def tenths(who: str) -> list[int]:
        return [counters.get(f"{metrics.SCORE_TENTHS_PREFIX}{who}.{i}", 0) for i in range(10)]

    return {
        "records": total,
        "agreement": round(same / total, 6),
        "flips": {"challenger_stricter": stricter, "challenger_laxer": laxer},
        "no_score": sum(n for (_, b), n in pairs.items() if b == "none"),
        "champion_to_challenger": {f"{a}->{b}": n for (a, b), n in sorted(pairs.items())},
        "decisions": {"champion": decisions(0), "challenger": decisions(1)},
        "score_tenths": {"champion": tenths("champion"), "challenger": tenths("shadow")},
    }


def live_summary(result: Any, counted_here: Callable[[], Mapping[str, int]] | None = None) -> dict[str, Any] | None:
    """The summary of a job still running, from the runner's metrics so far, or with `counted_here`
    from the workers' live tally (ahead of the runner's committed figures while bundles run: not
    compared); None where the runner cannot tell yet."""
    try:
        counters, distributions = runner_metrics(result)
        if counted_here is not None:
            counters = counted(counted_here())
        return summarize_counters(counters, distributions)
    except Exception:  # noqa: BLE001 - a runner without live metrics: no refresh, the final summary still comes
        return None


def on_disk(counters: dict[str, int]) -> dict[str, int]:
    """Streaming file outputs: the lines in window files already renamed into place, per folder
    (`scored` and `dead_letters` of the summary count what was encoded for the sink, which runs up
    to a window ahead of the files)."""
    return {
        name[len(metrics.ON_DISK_PREFIX) :]: value
        for name, value in counters.items()
        if name.startswith(metrics.ON_DISK_PREFIX)
    }


def store_summary(counters: dict[str, int], latency: Any) -> dict[str, Any]:
    """What 30_enrich asked of the profile store (enrich.backend postgres)."""
    count = latency.count if latency is not None else 0
    return {
        "lookups": counters.get(metrics.STORE_LOOKUPS, 0),
        "queries": counters.get(metrics.STORE_QUERIES, 0),
        "keys_fetched": counters.get(metrics.STORE_KEYS_FETCHED, 0),
        "cache_hits": counters.get(metrics.STORE_CACHE_HITS, 0),
        "cache_misses": counters.get(metrics.STORE_CACHE_MISSES, 0),
        "retries": counters.get(metrics.STORE_RETRIES, 0),
        "failures": counters.get(metrics.STORE_FAILURES, 0),
        "query_ms": {
            "answered": count,
            "mean": round(latency.sum / count, 2) if count else 0.0,
            "min": latency.min if count else 0,
            "max": latency.max if count else 0,
        },
    }


def source_error_details(output_dir: str) -> list[dict[str, Any]]:
    """File, last good line and reason of each source error, read back from the dead letters."""
    if "://" in output_dir:
        return []
    folder = os.path.join(output_dir, "dead_letters")
    details: list[dict[str, Any]] = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if name.startswith("."):
            continue  # a window file still being written
        with open(os.path.join(folder, name), "rb") as f:
            for line in f:
                if _SOURCE_UNREADABLE.encode() in line:
                    letter = json.loads(line)
                    details.append(
                        {
                            "uri": letter.get("source", {}).get("uri", ""),
                            "last_line": int(letter.get("source", {}).get("line", 0)),
                            "message": letter.get("message", ""),
                        }
                    )
    details.sort(key=lambda d: (d["uri"], d["last_line"]))
    return details[:_MAX_SOURCE_ERROR_DETAILS]


def stage_msecs(result: Any) -> dict[str, int]:
    """Milliseconds spent in each stage, from the runner's sampled execution-time metrics.

    Reported by the DirectRunner (and other portable runners that sample state); {} where the
    runner has no such metric.
    """
    try:
        results = result.monitoring_metrics().query()
    except (AttributeError, NotImplementedError):
        return {}
    totals: dict[str, int] = {}
    for kind in results.values():
        for item in kind:
            urn = getattr(item.key.metric, "urn", None) or f"beam:{item.key.metric.name}"
            stage = (item.key.step or "").split("/")[0]
            if urn == _EXECUTION_TIME and stage in STAGES:
                totals[stage] = totals.get(stage, 0) + int(item.committed or 0)
    return dict(sorted(totals.items()))


def exit_code(summary: dict[str, Any]) -> int:
    if not summary["balanced"]:
        return EXIT_UNBALANCED
    if summary.get("source_errors", 0):
        return EXIT_INPUT_INCOMPLETE
    return EXIT_OK


def _value(summary: dict[str, Any], key: str) -> Any:
    node: Any = summary
    for part in key.split("/"):
        node = node.get(part, 0) if isinstance(node, dict) else 0
    return node


def format_summary(summary: dict[str, Any]) -> str:
    rows: list[tuple[str, int]] = []
    for field in FIELDS:
        if not field.label or field.key in ("balanced", "model_version"):
            continue
        rows.append((field.label, _value(summary, field.key)))
        if field.key == "dead_letters":
            rows += [(f"  {code}", n) for code, n in sorted(summary["dead_letters_by_code"].items())]
    store = summary.get("profile_store")
    if store is not None:
        rows += [
            ("profile store lookups", store["lookups"]),
            ("  queries", store["queries"]),
            ("  keys fetched", store["keys_fetched"]),
            ("  cache hits", store["cache_hits"]),
            ("  cache misses", store["cache_misses"]),
            ("  retries", store["retries"]),
            ("  failed lookups", store["failures"]),
        ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value:>10,}" for name, value in rows]
    if store is not None and store["query_ms"]["answered"]:
        ms = store["query_ms"]
        lines.append(f"{'  query ms':<{width}}  {ms['mean']:>10}   (mean; min {ms['min']}, max {ms['max']})")
    verdict = "yes" if summary["balanced"] else "NO"
    lines.append(f"{'balanced':<{width}}  {verdict:>10}   (read = scored + dead letters + duplicates)")
    if summary.get("model_version"):
        lines.append(f"{'model':<{width}}  {summary['model_version']} (feature set {summary.get('feature_set', '?')})")
    report = summary.get("drift")
    if report and report.get("score_psi") is not None:
        flagged = ", ".join(report["flagged"]) or "none"
        lines.append(f"{'drift':<{width}}  score PSI {report['score_psi']:.3f}; above {report['threshold']}: {flagged}")
    shadow = summary.get("shadow")
    if shadow:
        flips = shadow["flips"]
        lines.append(
            f"{'shadow':<{width}}  {shadow.get('model_version', '?')}: agrees on {shadow['agreement']:.2%} of "
            f"{shadow['records']:,}; would flip {flips['challenger_stricter']:,} stricter, "
            f"{flips['challenger_laxer']:,} laxer"
        )
    if summary.get("source_errors", 0):
        lines.append(f"{'input complete':<{width}}  {'NO':>10}   (part of the input could not be read:)")
        lines += [f"  {d['uri']}: {d['message'].split(': ', 2)[-1]}" for d in summary.get("source_error_details", [])]
    return "\n".join(lines)


def reference_markdown() -> str:
    """The summary's fields and the exit codes, as docs/outputs.md shows them."""
    lines = ["| field | printed as | meaning |", "|---|---|---|"]
    lines += [f"| `{f.key}` | {f.label or '—'} | {f.meaning} |" for f in FIELDS]
    lines += ["", "| exit code | meaning |", "|---|---|"]
    lines += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES]
    return "\n".join(lines) + "\n"
