r"""The job's entry point: composes the stages into one PCollection graph and runs it.

    python -m pipeline.runner --config config.yaml [--input GLOB] [--output_dir DIR] [Beam options]

    source -> validate -> dedupe -> enrich -> features -> predict -> sink
                 \__________\_________\_________\___________\________\--> dead-letter sink

Every config key has a pipeline option (see `--help` and README); Beam's own options (--runner,
--direct_num_workers, --flink_master, ...) pass through; an option that neither the job nor Beam
knows is an error. A batch run's results are published into <output_dir> only when the job has
finished (pipeline.shared.output_folder); the run summary goes to <output_dir>/summary.json,
written last, and to stdout. A streaming run (source.kind watch) adds one file set per window to
<output_dir> as windows close, refreshes summary.json every streaming.summary_interval_seconds,
and drains and stops after streaming.stop_after_idle_seconds without input, or on Ctrl-C.
Every run names its runner: the FnApiRunner for batch, Prism (scripts/prism.sh) for streaming.
Exit codes: 0 every record accounted for and the whole input read; 1 a run that
did not account for every record; 2 a configuration that cannot run (nothing read or written);
3 balanced, but part of the input could not be read (source errors); 4 the run failed (a worker
died, the runner failed) and nothing was published.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
    TestOptions,
    _BeamArgumentParser,
)
from apache_beam.runners.runner import create_runner

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from pipeline.shared import (
    bigquery,
    drain,
    feature_sets,
    flink,
    kafka,
    metrics,
    model_check,
    prism,
    profile_store,
    progress,
)
from pipeline.shared import config as job_config
from pipeline.shared.clock import RunClock
from pipeline.shared.model_card import file_digest
from pipeline.shared.output_folder import OutputFolder
from pipeline.shared.version import PIPELINE_VERSION
from pipeline.shared.windowed_files import Windowing, new_run_id
from pipeline.stage_loader import STAGES, load_stage

source = load_stage("00_source")
validate = load_stage("10_validate")
dedupe = load_stage("20_dedupe")
lateness = load_stage("25_lateness")
enrich = load_stage("30_enrich")
velocity = load_stage("35_velocity")
featurize_stage = load_stage("40_features")
predict = load_stage("50_predict")
sink = load_stage("60_sink")
dead_letter_sink = load_stage("90_dead_letter")

# The engine Beam's DirectRunner uses for batch pipelines, in this process (or in worker processes
# with --direct_running_mode=multi_processing); faster than Prism on the batch job (README).
DEFAULT_RUNNER = "FnApiRunner"
# Beam's local runner for unbounded input (the FnApiRunner and the classic DirectRunner cannot run
# an unbounded source here).
DEFAULT_STREAMING_RUNNER = "PrismRunner"
_BEAM_JOB_SERVER_TIMEOUT = 300  # Beam's default --job_server_timeout
JOB_STREAM_TIMEOUT_SECONDS = 365 * 24 * 3600
_BATCH_ONLY_RUNNERS = ("FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
# Runners whose job outlives this process: the job is submitted, its workers write the outputs
# themselves, and the run's figures are the service's (its console and metrics), not a summary here.
SUBMIT_ONLY_RUNNERS = ("DataflowRunner",)
EXIT_OK = 0
EXIT_UNBALANCED = 1
EXIT_CONFIG = 2
EXIT_INPUT_INCOMPLETE = 3
EXIT_RUN_FAILED = 4
_SOURCE_UNREADABLE = ErrorCode.Name(ErrorCode.ERROR_CODE_SOURCE_UNREADABLE)
_MAX_SOURCE_ERROR_DETAILS = 50


class RunFailedError(RuntimeError):
    """The job did not finish (a worker died, the runner failed): nothing was published."""


class JobOptions(PipelineOptions):
    """The job's own options: --config plus one option per config key."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", default=None, help="config.yaml to start from")
        for setting in job_config.SETTINGS:
            extra: dict[str, Any] = {"nargs": "?", "const": "true"} if setting.kind == "bool" else {}
            text = f"{setting.key}: {setting.help}".replace("%", "%%")  # argparse formats help with %
            parser.add_argument(f"--{setting.option}", default=None, help=text, **extra)


def parse_options(argv: Sequence[str]) -> PipelineOptions:
    """Beam's options plus the job's, refusing what neither knows (Beam would only warn and drop it)."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    known: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        known.setdefault(str(cls), cls)
    for cls in known.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(list(argv))
    if unknown:
        names = [a for action in parser._actions for a in action.option_strings if a.startswith("--")]
        problems = []
        for arg in unknown:
            if arg.startswith("-"):
                name = arg.split("=", 1)[0]
                close = difflib.get_close_matches(name, names, n=1)
                problems.append(f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else ""))
            else:
                problems.append(f"unexpected argument {arg!r} (options take the form --name=value)")
        raise job_config.ConfigError("; ".join(problems))
    options = PipelineOptions(list(argv))
    standard = options.view_as(StandardOptions)
    if standard.runner is not None:
        try:
            create_runner(standard.runner)
        except (ValueError, ImportError) as exc:
            raise job_config.ConfigError(f"--runner: {standard.runner!r} is not a runner Beam knows: {exc}") from None
    return options


def choose_runner(options: PipelineOptions, streaming: bool, java: bool = False, source: str = "") -> str:
    """Names the runner (never left to Beam: its DirectRunner would first try to download a Prism
    binary) and gives Prism the project's binary; returns the runner's name. `java`: the job has
    cross-language (Java) transforms, which Prism runs and the FnApiRunner cannot."""
    standard = options.view_as(StandardOptions)
    if standard.streaming and not streaming:
        raise job_config.ConfigError(
            "--streaming: a streaming run needs an unbounded source (--source watch, kafka or pubsub); "
            "source.kind files is batch"
        )
    if streaming:
        standard.streaming = True
    if source == "pubsub" and standard.runner is None:
        raise job_config.ConfigError(
            "source.kind pubsub: name the runner (--runner=DataflowRunner): Pub/Sub is read by Dataflow, and "
            "no local runner here can reach it"
        )
    if standard.runner is None:
        standard.runner = DEFAULT_STREAMING_RUNNER if (standard.streaming or java) else DEFAULT_RUNNER
    name = standard.runner
    if standard.streaming and name in _BATCH_ONLY_RUNNERS:
        raise job_config.ConfigError(
            f"--runner: {name} cannot run an unbounded source; streaming runs on PrismRunner here "
            "(the default for a streaming source), or on Flink or Dataflow"
        )
    if java and name in _BATCH_ONLY_RUNNERS:
        raise job_config.ConfigError(
            f"--runner: {name} cannot run Kafka's Java transforms; use PrismRunner (the default when Kafka is used)"
        )
    portable = options.view_as(PortableOptions)
    if portable.job_server_timeout == _BEAM_JOB_SERVER_TIMEOUT:
        # Beam opens the job's state and message streams with this as their deadline: a job on
        # Prism or another portable runner that runs longer (any streaming job) would fail
        # with DEADLINE_EXCEEDED after five minutes.
        portable.job_server_timeout = JOB_STREAM_TIMEOUT_SECONDS
    refused = flink.check(options)
    if refused:
        raise job_config.ConfigError(refused)
    if name in prism.PRISM_RUNNERS:
        # Prism splits a bundle that seems slow and can then fire a split-off timer a second time,
        # concurrently with the first (github.com/apache/beam/issues/35771): 20_dedupe would
        # release a record twice. Its splitting is switched off.
        options.view_as(DebugOptions).add_experiment(prism.NO_SPLITS)
        located = options.view_as(PrismRunnerOptions)
        if not located.prism_location:
            try:
                located.prism_location = prism.find()
            except prism.PrismMissingError as exc:
                raise job_config.ConfigError(f"--runner {name}: {exc}") from None
    return name


def check_model(config: job_config.JobConfig) -> dict[str, Any] | None:
    """Load and probe the model before the job starts, so that a broken model stops it with exit 2;
    returns its model card (None when it has none), checked against the file."""
    return model_check.check_model(config.model)


def check_store(config: job_config.JobConfig) -> None:
    """Run each profile query once, with no key, before the job starts: a query the store refuses
    (no such table or column) stops the job with exit 2; a store that cannot be reached yet only
    warns (its records become PROFILE_STORE_UNAVAILABLE dead letters until it can)."""
    settings = config.profile_store
    if settings is None:
        return
    store = profile_store.ProfileStore(settings)
    try:
        reason = store.check()
    except profile_store.StoreQueryError as exc:
        raise job_config.ConfigError(f"enrich.postgres: {exc}") from None
    finally:
        store.close()
    if reason is not None:
        logging.getLogger(__name__).warning("the profile store cannot be reached: %s", reason)


def model_version(config: job_config.JobConfig, card: dict[str, Any] | None, digest: str = "") -> str:
    """The version to stamp on scores: the configured one, the card's, or the file's sha256."""
    if config.model_version:
        return config.model_version
    if card is not None and card.get("model_version"):
        return str(card["model_version"])
    return "sha256:" + (digest or file_digest(config.model))[:12]


def resolve_model_version(config: job_config.JobConfig) -> str:
    """The version to stamp on scores, without loading the model; fails when the card is not the
    model's or its feature set is not the job's."""
    card = model_check.read_model_card(config.model)
    if card is not None:
        model_check.check_card(config.model, card)
    return model_version(config, card)


def windowing(config: job_config.JobConfig, run_id: str = "") -> Windowing | None:
    """How a streaming run writes its windows; None for batch."""
    if not config.streaming:
        return None
    return Windowing(
        config.window_seconds, config.allowed_lateness_seconds, run_id or new_run_id(), max(config.num_shards, 1)
    )


def kafka_read(
    config: job_config.JobConfig, expansion: kafka.JavaExpansion, runner: str, properties: dict[str, str]
) -> Any:
    """What 00_source's Kafka read is asked for, from the config, the client properties and the
    run's expansion service."""
    commit = kafka_commit(config, runner)
    if commit == "finalize" and runner in prism.PRISM_RUNNERS:
        raise job_config.ConfigError(
            "kafka.commit finalize: Prism cannot run KafkaIO's commit on finalize (it needs stable input); "
            "use written (the default on Prism)"
        )
    if commit == "written" and not tracks_progress(config, runner):
        raise job_config.ConfigError(
            f"kafka.commit written: {runner}'s workers run elsewhere and their writes cannot be seen from "
            "here; use finalize (the default there), with the runner's checkpoints"
        )
    consumer = kafka.consumer_config(
        config.kafka_bootstrap_servers or "", config.kafka_group_id, config.kafka_start, properties
    )
    return source.KafkaRead(
        consumer_config=consumer,
        topics=config.kafka_topics,
        start_read_time_ms=kafka.start_position(config.kafka_start)[1],
        commit_in_finalize=commit == "finalize",
        expansion_service=expansion.address,
        stop_file=expansion.stop_file,
        commit_in_bundles=commit == "bundle",
    )


def kafka_commit(config: job_config.JobConfig, runner: str) -> str:
    """kafka.commit as it applies on `runner`: auto is written on Prism (whose workers run in this
    process, where pipeline.shared.progress sees every record written), finalize elsewhere."""
    if config.kafka_commit != "auto":
        return config.kafka_commit
    return "written" if runner in prism.PRISM_RUNNERS else "finalize"


def tracks_progress(config: job_config.JobConfig, runner: str) -> bool:
    """A streaming run whose workers run in this process: its records are tracked from read to
    written (pipeline.shared.progress), for the Kafka commit and for a restart."""
    return config.streaming and runner in prism.PRISM_RUNNERS and "://" not in config.output_dir


def _outputs(config: job_config.JobConfig) -> tuple[tuple[str, str | None, str | None, str], ...]:
    """Each output of the job: (name, its Kafka topic, its BigQuery table, its folder); the
    topic or the table, where one is set, takes the place of the folder."""
    out = config.output_dir.rstrip("/")
    return (
        ("scored", config.kafka_scored_topic, config.bigquery_scored_table, f"{out}/scored/"),
        ("dead letters", config.kafka_dead_letter_topic, config.bigquery_dead_letter_table, f"{out}/dead_letters/"),
    )


def written_to(config: job_config.JobConfig) -> dict[str, str]:
    """Where each output of the run goes: a folder, a topic or a table."""
    places = {
        what: f"kafka topic {topic}" if topic else f"bigquery table {table}" if table else folder
        for what, topic, table, folder in _outputs(config)
    }
    if config.kafka_alerts_topic:
        places["alerts"] = f"kafka topic {config.kafka_alerts_topic}"
    if config.pubsub_alerts_topic:
        places["alerts (Pub/Sub)"] = config.pubsub_alerts_topic
    places["summary"] = f"{config.output_dir.rstrip('/')}/summary.json"
    return places


def kafka_lag(config: job_config.JobConfig) -> kafka.GroupLag:
    return kafka.GroupLag(
        config.kafka_bootstrap_servers or "",
        config.kafka_group_id,
        config.kafka_topics,
        config.kafka_start,
        kafka.client_properties(config.kafka_properties_file),
    )


def topic_sink(
    config: job_config.JobConfig,
    topic: str | None,
    expansion: kafka.JavaExpansion | None,
    properties: dict[str, str],
) -> Any:
    if topic is None:
        return None
    assert expansion is not None, "a Kafka sink needs the run's expansion service"
    return kafka.TopicSink(
        topic, kafka.producer_config(config.kafka_bootstrap_servers or "", properties), expansion.address
    )


def table_sink(table: str | None, config: job_config.JobConfig) -> bigquery.TableSink | None:
    return bigquery.TableSink(table, config.bigquery_method) if table is not None else None


def featurize(
    raw: beam.PCollection, config: job_config.JobConfig, clock: RunClock, feature_set: str = feature_sets.DEFAULT
) -> tuple[beam.PCollection, list[beam.PCollection]]:
    """10_validate to 40_features: raw records -> EnrichedTransactions with the feature set's
    vector, and the dead letters of each stage. The job and the trainer (tools.train) both compute
    their features with this, so a model is trained on what the job computes."""
    transactions, refused_10 = raw | "10_validate" >> validate.Validate(
        clock, config.max_future_skew_seconds, config.allowed_lateness_seconds
    )
    unique, refused_20 = transactions | "20_dedupe" >> dedupe.Dedupe(config.dedupe_horizon_seconds, clock)
    on_time, refused_25 = unique | "25_lateness" >> lateness.ApplyLatePolicy(
        config.allowed_lateness_seconds, config.late_policy, clock
    )
    enriched, refused_30 = on_time | "30_enrich" >> enrich.Enrich(
        config.customers, config.merchants, config.missing_profile_policy, clock, config.profile_store
    )
    refused = [refused_10, refused_20, refused_25, refused_30]
    if feature_sets.uses_velocity(feature_set):
        enriched, refused_35 = enriched | "35_velocity" >> velocity.Velocity(clock, config.order_wait_seconds)
        refused.append(refused_35)
    featured, refused_40 = enriched | "40_features" >> featurize_stage.ComputeFeatures(clock, feature_set)
    return featured, [*refused, refused_40]


def build_pipeline(
    p: beam.Pipeline,
    config: job_config.JobConfig,
    model_version: str,
    model_sha256: str = "",
    run_id: str = "",
    raw_records: beam.PCollection | None = None,
    expansion: kafka.JavaExpansion | None = None,
    runner: str = DEFAULT_STREAMING_RUNNER,
    feature_set: str = feature_sets.DEFAULT,
    resume: progress.Resume | None = None,
) -> dict[str, beam.PCollection]:
    """Adds the whole job to `p` and returns its named PCollections (for tests). `raw_records`
    replaces the source (a TestStream in tests); `expansion` is the run's Kafka expansion service
    (needed when the job reads or writes Kafka); `feature_set` is the model's (its card's);
    `resume` is what an earlier streaming run of the same output folder wrote."""
    clock = RunClock(config.as_of)
    thresholds = predict.Thresholds(config.thresholds_version, config.review_threshold, config.decline_threshold)
    windows = windowing(config, run_id)
    # Read once for the Kafka read and every topic sink (a file and the environment).
    properties = kafka.client_properties(config.kafka_properties_file) if config.uses_kafka else {}
    if raw_records is not None:
        raw, refused_00 = raw_records, p | "00_source" >> beam.Create([]).with_output_types(DeadLetter)
    elif config.source == "kafka":
        assert expansion is not None, "a Kafka source needs the run's expansion service"
        raw, refused_00 = p | "00_source" >> source.ReadKafkaTransactions(
            kafka_read(config, expansion, runner, properties), clock, config.max_record_bytes, resume
        )
    elif config.source == "pubsub":
        raw, refused_00 = p | "00_source" >> source.ReadPubSubTransactions(
            config.pubsub_subscription or "",
            clock,
            config.pubsub_id_label,
            config.pubsub_timestamp_attribute,
            config.max_record_bytes,
        )
    elif config.streaming:
        raw, refused_00 = p | "00_source" >> source.WatchTransactions(
            config.watch_dir or "",
            clock,
            config.poll_interval_seconds,
            config.settle_seconds,
            config.stop_after_idle_seconds,
            max_record_bytes=config.max_record_bytes,
            resume=resume,
        )
    else:
        raw, refused_00 = p | "00_source" >> source.ReadTransactions(
            config.transactions or "", clock, max_record_bytes=config.max_record_bytes
        )
    featured, refused = featurize(raw, config, clock, feature_set)
    scored, refused_50 = featured | "50_predict" >> predict.Predict(
        config.model,
        model_version,
        thresholds,
        config.min_batch_size,
        config.max_batch_size,
        clock,
        model_sha256,
        config.include_features,
    )
    topics = sink.Topics(
        topic_sink(config, config.kafka_scored_topic, expansion, properties),
        topic_sink(config, config.kafka_alerts_topic, expansion, properties),
        config.pubsub_alerts_topic,
        config.kafka_value_format,
    )
    refused_60 = scored | "60_sink" >> sink.WriteScored(
        config.output_dir,
        config.num_shards,
        config.parquet,
        clock,
        windows,
        topics,
        table_sink(config.bigquery_scored_table, config),
    )
    dead_letters = (
        refused_00,
        *refused,
        refused_50,
        refused_60,
    ) | "AllDeadLetters" >> beam.Flatten()
    dead_letters | "90_dead_letter" >> dead_letter_sink.WriteDeadLetters(
        config.output_dir,
        config.num_shards,
        config.dead_letter_payload,
        windows,
        topic_sink(config, config.kafka_dead_letter_topic, expansion, properties),
        config.kafka_value_format,
        table_sink(config.bigquery_dead_letter_table, config),
    )
    return {
        "raw": raw,
        "featured": featured,
        "scored": scored,
        "dead_letters": dead_letters,
    }


def summarize(result: Any) -> dict[str, Any]:
    if hasattr(result, "_metrics"):
        result._metrics = None  # the portable runner keeps its first answer (a live one): ask again
    found = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    counters = {r.key.metric.name: r.committed for r in found["counters"]}
    distributions = {r.key.metric.name: r.committed for r in found["distributions"]}
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
        "already_written": counters.get(metrics.ALREADY_WRITTEN, 0),
        "alerts": counters.get(metrics.ALERTS_WRITTEN, 0),
        "dead_letters_rejected_by_sink": counters.get(metrics.DEAD_LETTERS_REJECTED_BY_SINK, 0),
        "profile_store": store_summary(counters, distributions.get(metrics.STORE_QUERY_MS)),
    }
    written_out = on_disk(counters)
    if written_out:
        summary["on_disk"] = written_out
    return summary


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


_EXECUTION_TIME = "beam:metric:ptransform_execution_time:total_msecs:v1"


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


def format_summary(summary: dict[str, Any]) -> str:
    rows = [
        ("records read", summary["read"]),
        ("blank lines skipped", summary.get("blank_lines_skipped", 0)),
        ("scored", summary["scored"]),
        ("dead letters", summary["dead_letters"]),
    ]
    rows += [(f"  {code}", n) for code, n in sorted(summary["dead_letters_by_code"].items())]
    rows += [
        ("duplicates dropped", summary["duplicates"]),
        ("late records", summary.get("late_records", 0)),
        ("alerts written to a topic", summary.get("alerts", 0)),
        ("default customer profiles", summary["default_profiles_used"]["customer"]),
        ("default merchant profiles", summary["default_profiles_used"]["merchant"]),
        ("reference rows rejected", summary["reference_rows_rejected"]),
        ("source errors", summary.get("source_errors", 0)),
    ]
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
    if summary.get("source_errors", 0):
        lines.append(f"{'input complete':<{width}}  {'NO':>10}   (part of the input could not be read:)")
        lines += [f"  {d['uri']}: {d['message'].split(': ', 2)[-1]}" for d in summary.get("source_error_details", [])]
    return "\n".join(lines)


def worker_processes(root: int) -> set[int]:
    """Live descendants of process `root` that are Beam Python SDK workers (not the shells that
    start them), found through /proc; empty where there is no /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            todo.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"apache_beam.runners.worker.sdk_worker_main" in args and not args[0].endswith(b"sh"):
                found.add(child)
    return found


class WorkerWatchdog:
    """Ends a run whose worker process died instead of letting the runner wait on it.

    With --direct_running_mode=multi_processing the FnApiRunner's workers are child processes
    (`sdk_worker_main`); when one is killed the runner can wait minutes for it. The watchdog looks
    at them twice a second; when one has gone and the job has not finished `grace` seconds later,
    it calls `on_lost` (which must not return: it abandons the output and exits).
    """

    def __init__(self, on_lost, grace: float = 10.0, interval: float = 0.5):
        self._on_lost = on_lost
        self._grace = grace
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="riskpipe-worker-watchdog", daemon=True)

    def __enter__(self) -> WorkerWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _watch(self) -> None:
        seen: set[int] = set()
        while not self._done.wait(self._interval):
            alive = worker_processes(os.getpid())
            lost = seen - alive
            seen |= alive
            if lost and not self._done.wait(self._grace):
                self._on_lost(sorted(lost))
                return


def live_summary(result: Any) -> dict[str, Any] | None:
    """The summary of a job still running, from the runner's metrics so far; None where the runner
    cannot tell yet."""
    try:
        return summarize(result)
    except Exception:  # noqa: BLE001 - a runner without live metrics: no refresh, the final summary still comes
        return None


class StreamingWatch:
    """While a streaming job runs: summary.json refreshed every `interval` seconds, and Ctrl-C asks
    the job to drain (a second Ctrl-C stops at once, losing what is in flight)."""

    def __init__(self, result: Any, interval: float, write, idle_seconds: float = 0.0, pending=None):
        self._result = result
        self._interval = interval
        self._write = write
        self._idle = idle_seconds
        self._pending = pending  # () -> records waiting at the source (-1: unknown); None: not asked
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="riskpipe-summary", daemon=True)
        self._idle_thread = threading.Thread(target=self._stop_when_idle, name="riskpipe-idle", daemon=True)
        self._previous: Any = None

    def __enter__(self) -> StreamingWatch:
        self._thread.start()
        if self._idle:
            self._idle_thread.start()
        if _in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()  # a refresh in flight must not outlive the run (nor overwrite its summary)
        if self._idle_thread.is_alive():
            self._idle_thread.join()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _interrupted(self, signum: int, frame: Any) -> None:
        if drain.requested():
            raise KeyboardInterrupt
        drain.request()
        print(
            "draining: no new input is taken; the job stops once every record read is written "
            "(Ctrl-C again stops at once)",
            file=sys.stderr,
            flush=True,
        )

    def _stop_when_idle(self) -> None:
        """Drains the job once no record has come for the idle time and none waits at the source
        (a busy job with a backlog is not idle)."""
        while not self._done.wait(1.0):
            if drain.requested():
                return
            if self._pending is not None and self._pending() != 0:
                drain.saw_input()
            elif drain.idle_for() >= self._idle:
                drain.request("idle")
                return

    def _refresh(self) -> None:
        while not self._done.wait(self._interval):
            summary = live_summary(self._result)
            if summary is not None:
                summary["running"] = True
                self._write(summary)


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Parse options, validate the configuration, run the job, publish the output, return the summary.

    Raises ConfigError before anything is read or written, RunFailedError when the job did not
    finish (nothing is published then).
    """
    options = parse_options(list(argv if argv is not None else sys.argv[1:]))
    job = options.view_as(JobOptions)
    overrides = {s.option: getattr(job, s.option) for s in job_config.SETTINGS}
    config = job_config.load(job.config, overrides)
    runner_name = choose_runner(options, config.streaming, config.uses_kafka, config.source)
    card = check_model(config)
    # The card's sha256 has just been checked against the file: no need to read the file again.
    # Workers refuse a model file whose bytes are not these (one replaced after the start).
    model_sha256 = card["sha256"].lower() if card is not None else file_digest(config.model)
    version = model_version(config, card, model_sha256)
    feature_set = model_check.feature_set(card)
    check_store(config)
    if runner_name in SUBMIT_ONLY_RUNNERS:
        return submit(options, config, runner_name, version, model_sha256, feature_set)
    read_from = {"watch": config.watch_dir, "files": os.path.dirname(config.transactions or "") or "."}
    protected = (
        *([read_from[config.source]] if config.source in read_from else []),
        *(path for path in (config.customers, config.merchants) if path is not None),
        config.model,
        *([job.config] if job.config else []),
    )
    folder = OutputFolder(config.output_dir, config.overwrite, protected, appending=config.streaming)
    staging = folder.prepare()

    def worker_lost(pids: list[int]) -> None:
        for pid in worker_processes(os.getpid()):  # the survivors would wait on a runner that is gone
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        folder.abandon()
        print(
            f"run failed: worker process {', '.join(map(str, pids))} ended while the job was running "
            f"(killed, or out of memory); nothing was published to {config.output_dir}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_RUN_FAILED)

    def finish(summary: dict[str, Any]) -> dict[str, Any]:
        summary["output_dir"] = config.output_dir
        summary["written_to"] = written_to(config)
        summary["model_version"] = version
        summary["feature_set"] = feature_set
        summary["enrich_backend"] = config.enrich_backend
        if config.enrich_backend != "postgres":
            summary.pop("profile_store", None)
        summary["runner"] = runner_name
        summary["mode"] = "streaming" if config.streaming else "batch"
        summary["exit_code"] = exit_code(summary)
        return summary

    def write_summary(summary: dict[str, Any]) -> None:
        folder.write_summary(json.dumps(finish(summary), indent=2, sort_keys=True).encode() + b"\n")

    expansion = (
        kafka.JavaExpansion(config.kafka_expansion_service, local_worker=runner_name in prism.PRISM_RUNNERS)
        if config.uses_kafka
        else contextlib.nullcontext()
    )
    try:
        folder.retire_previous()
        drain.reset()
        resume = None
        if tracks_progress(config, runner_name):
            resume = restart_point(config)
            progress.enable(staging)
        else:
            progress.disable()
        pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
        with expansion as java:
            if java is not None:
                drain.on_request(java.stop_reading)
            build_pipeline(
                pipeline,
                dataclasses.replace(config, output_dir=staging),
                version,
                model_sha256,
                expansion=java,
                runner=runner_name,
                feature_set=feature_set,
                resume=resume,
            )
            committer = (
                progress.KafkaCommitter(
                    config.kafka_bootstrap_servers or "",
                    config.kafka_group_id,
                    kafka.client_properties(config.kafka_properties_file),
                )
                if config.source == "kafka" and kafka_commit(config, runner_name) == "written"
                else contextlib.nullcontext()
            )
            with committer:
                result = _run_to_end(pipeline, config, write_summary, worker_lost)
        summary = summarize(result)
        if resume is not None:
            summary["restart"] = {**resume.describe(), "already_written_skipped": summary.pop("already_written", 0)}
        else:
            summary.pop("already_written", None)
        summary["source_error_details"] = source_error_details(staging) if summary["source_errors"] else []
        summary["stage_msecs"] = stage_msecs(result)
        if config.streaming:
            summary["running"] = False
            summary["stopped_by"] = drain.reason() or "idle"
        write_summary(summary)
        folder.publish()
    except kafka.KafkaSetupError as exc:
        folder.abandon()
        raise job_config.ConfigError(f"kafka: {exc}") from None
    except BaseException:
        folder.abandon()
        raise
    return summary


def restart_point(config: job_config.JobConfig) -> progress.Resume:
    """What an earlier streaming run of this output folder left (pipeline.shared.progress), said in
    the log: a restart goes on from there, reading nothing it wrote again."""
    committed = None
    if config.source == "kafka":
        with contextlib.closing(kafka_lag(config)) as lag:
            try:
                committed = lag.committed()
            except Exception as exc:  # noqa: BLE001 - no broker yet: every output file is read back
                logging.getLogger(__name__).warning("the group's committed offsets cannot be read: %s", exc)
    resume = progress.Resume.load(config.output_dir, committed)
    if not resume.fresh:
        facts = resume.describe()
        previous = facts["previous_run"]
        how = "finished" if facts["previous_run_finished"] else "did not finish (killed or crashed)"
        print(
            f"restart: an earlier run of {config.output_dir} {how}"
            + (f" (read {previous.get('read', 0):,}, scored {previous.get('scored', 0):,})" if previous else "")
            + f"; {facts['inputs_done']:,} input files done, {facts['output_files']:,} output files, "
            f"{facts['output_files_read_back']:,} read back, {facts['unfinished_window_files_removed']:,} unfinished "
            f"window files removed: {facts['positions_already_written']:,} records already written are skipped if "
            "read again",
            file=sys.stderr,
            flush=True,
        )
    return resume


def submit(
    options: PipelineOptions,
    config: job_config.JobConfig,
    runner_name: str,
    version: str,
    model_sha256: str,
    feature_set: str,
) -> dict[str, Any]:
    """Builds the job and submits it to a runner that runs it elsewhere (Dataflow); returns what
    was submitted. With --dry_run the job description is built and nothing is submitted."""
    to_files = [what for what, topic, table, _ in _outputs(config) if not (topic or table)]
    if to_files and "://" not in config.output_dir:
        raise job_config.ConfigError(
            f"output.dir: {runner_name}'s workers write the {' and '.join(to_files)} output and cannot reach "
            f"{config.output_dir!r} on this machine; give a gs:// folder (or BigQuery tables)"
        )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, version, model_sha256, runner=runner_name, feature_set=feature_set)
    try:
        result = pipeline.run()
    except Exception as exc:
        raise RunFailedError(f"{type(exc).__name__}: {str(exc)[:2000]}") from exc
    job = getattr(result, "job", None)
    read_id = getattr(result, "job_id", None)  # a submitted Dataflow job's; a dry run has none
    job_id = read_id() if callable(read_id) else ""
    return {
        "submitted": not options.view_as(TestOptions).dry_run,
        "runner": runner_name,
        "mode": "streaming" if config.streaming else "batch",
        "job_id": job_id,
        "job_name": job.proto.name if job is not None else "",
        "state": str(result.state),
        "model_version": version,
        "feature_set": feature_set,
        "output_dir": config.output_dir,
        # No summary.json: the job's figures are the service's (its console and metrics).
        "written_to": {what: where for what, where in written_to(config).items() if what != "summary"},
    }


def _run_to_end(pipeline: beam.Pipeline, config: job_config.JobConfig, write_summary, worker_lost) -> Any:
    """Runs the job until it finishes (a streaming one: until it drains); RunFailedError otherwise."""
    try:
        with WorkerWatchdog(worker_lost):
            if config.streaming:
                # Prism starts now and inherits an ignored SIGINT: a Ctrl-C in the terminal
                # reaches only this process, which drains the job instead of losing it.
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _in_main_thread() else None
                try:
                    result = pipeline.run()
                finally:
                    if previous is not None:
                        signal.signal(signal.SIGINT, previous)
                # The watched folder stops itself when idle; a source read elsewhere (Kafka) is
                # stopped from here once its group's lag is nil and no record has come (counted
                # from now that the job runs).
                drain.saw_input()
                idle = config.stop_after_idle_seconds if config.source == "kafka" else 0.0
                with contextlib.closing(kafka_lag(config)) if idle else contextlib.nullcontext() as lag:
                    pending = (lambda: lag.pending(progress.read_positions())) if lag is not None else None
                    with StreamingWatch(result, config.summary_interval_seconds, write_summary, idle, pending):
                        result.wait_until_finish()
            else:
                result = pipeline.run()
                result.wait_until_finish()
    except Exception as exc:
        raise RunFailedError(f"{type(exc).__name__}: {str(exc)[:2000]}") from exc
    return result


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class _KnownNoise(logging.Filter):
    """Drops a warning RunInference prints for every bundle on this platform (its memory probe)."""

    _PREFIXES = ("Resource module is not available",)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._PREFIXES)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().addFilter(_KnownNoise())
    args = list(argv if argv is not None else sys.argv[1:])
    if "-h" in args or "--help" in args:
        parser = argparse.ArgumentParser(
            prog="python -m pipeline.runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        JobOptions._add_argparse_args(parser)
        parser.print_help()
        print("\nBeam's own pipeline options (--runner, --direct_num_workers, --flink_master, ...) pass through.")
        return EXIT_OK
    try:
        summary = run(args)
    except job_config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # a runner failure or a bug: say so, publish nothing
        if not isinstance(exc, RunFailedError):
            logging.getLogger(__name__).error("the run failed", exc_info=exc)
        print(f"run failed, nothing was published: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    submitted = "submitted" in summary
    if submitted:
        what = "submitted" if summary["submitted"] else "described (--dry_run: nothing submitted)"
        print(
            f"{summary['mode']} job {summary['job_name'] or summary['job_id']} {what} to {summary['runner']} "
            f"(state {summary['state']}); model {summary['model_version']}"
        )
    else:
        print(format_summary(summary))
    places = summary.get("written_to") or {"output": summary["output_dir"]}
    print("output: " + ", ".join(f"{what} -> {where}" for what, where in places.items()))
    return EXIT_OK if submitted else exit_code(summary)


if __name__ == "__main__":
    sys.exit(main())
