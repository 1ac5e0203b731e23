r"""The job's entry point: composes the stages into one PCollection graph and runs it.

    python -m pipeline.runner --config config.yaml [--input GLOB] [--output_dir DIR] [Beam options]

    source -> validate -> enrich -> features -> predict -> sink
                 \__________\_________\___________\________\--> dead-letter sink

Every config key has a pipeline option (see `--help` and README); Beam's own options (--runner,
--direct_num_workers, --flink_master, ...) pass through. The run summary goes to
<output_dir>/summary.json and to stdout; the exit code is 2 for a configuration that cannot run,
1 for a run that did not account for every record, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import onnxruntime as ort
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from contracts.riskpipe.v1.dead_letter_pb2 import ErrorCode
from pipeline.shared import config as job_config
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock
from pipeline.shared.features import FEATURE_NAMES, FEATURE_SET_VERSION
from pipeline.shared.model_card import file_digest, read_card
from pipeline.shared.version import PIPELINE_VERSION
from pipeline.stage_loader import STAGES, load_stage

source = load_stage("00_source")
validate = load_stage("10_validate")
enrich = load_stage("30_enrich")
featurize = load_stage("40_features")
predict = load_stage("50_predict")
sink = load_stage("60_sink")
dead_letter_sink = load_stage("90_dead_letter")


class JobOptions(PipelineOptions):
    """The job's own options: --config plus one option per config key."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", default=None, help="config.yaml to start from")
        for setting in job_config.SETTINGS:
            parser.add_argument(f"--{setting.option}", default=None, help=f"{setting.key}: {setting.help}")


def check_model(config: job_config.JobConfig) -> None:
    """Load the model once before the job starts, so that a broken model stops it with exit 2."""
    if "://" in config.model:
        return  # loaded by the workers; remote files are not read at submission
    try:
        session = ort.InferenceSession(config.model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise job_config.ConfigError(f"predict.model: {config.model} cannot be loaded: {exc}") from None
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    width = inputs[0].shape[-1] if inputs and inputs[0].shape else None
    if len(inputs) != 1 or (isinstance(width, int) and width != len(FEATURE_NAMES)):
        raise job_config.ConfigError(
            f"predict.model: {config.model} takes {[(i.name, i.shape) for i in inputs]}, "
            f"the job gives one float tensor of {len(FEATURE_NAMES)} features"
        )
    if "probabilities" not in outputs:
        raise job_config.ConfigError(
            f"predict.model: {config.model} has no 'probabilities' output (outputs: {', '.join(outputs)}); "
            "export classifiers without ZipMap"
        )


def resolve_model_version(config: job_config.JobConfig) -> str:
    """The version to stamp on scores; fails when the model's feature set is not the job's."""
    card = read_card(config.model)
    if card is not None and (
        card.get("feature_set_version") != FEATURE_SET_VERSION or tuple(card.get("features", ())) != FEATURE_NAMES
    ):
        raise job_config.ConfigError(
            f"predict.model: {config.model} was trained on feature set "
            f"{card.get('feature_set_version')!r}, the job computes {FEATURE_SET_VERSION!r}"
        )
    if config.model_version:
        return config.model_version
    if card is not None and card.get("model_version"):
        return str(card["model_version"])
    return "sha256:" + file_digest(config.model)[:12]


def build_pipeline(p: beam.Pipeline, config: job_config.JobConfig, model_version: str) -> dict[str, beam.PCollection]:
    """Adds the whole job to `p` and returns its named PCollections (for tests)."""
    clock = RunClock(config.as_of)
    thresholds = predict.Thresholds(config.thresholds_version, config.review_threshold, config.decline_threshold)
    raw = p | "00_source" >> source.ReadTransactions(config.transactions, clock)
    transactions, refused_10 = raw | "10_validate" >> validate.Validate(clock, config.max_future_skew_seconds)
    enriched, refused_30 = transactions | "30_enrich" >> enrich.Enrich(
        config.customers, config.merchants, config.missing_profile_policy, clock
    )
    featured, refused_40 = enriched | "40_features" >> featurize.ComputeFeatures(clock)
    scored, refused_50 = featured | "50_predict" >> predict.Predict(
        config.model, model_version, thresholds, config.min_batch_size, config.max_batch_size, clock
    )
    refused_60 = scored | "60_sink" >> sink.WriteScored(config.output_dir, config.num_shards, config.parquet, clock)
    dead_letters = (refused_10, refused_30, refused_40, refused_50, refused_60) | "AllDeadLetters" >> beam.Flatten()
    dead_letters | "90_dead_letter" >> dead_letter_sink.WriteDeadLetters(config.output_dir, config.num_shards)
    return {
        "raw": raw,
        "transactions": transactions,
        "featured": featured,
        "scored": scored,
        "dead_letters": dead_letters,
    }


def summarize(result: Any) -> dict[str, Any]:
    counters = {
        r.key.metric.name: r.committed
        for r in result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))["counters"]
    }
    by_code = {
        name: counters.get(metrics.DEAD_LETTER_CODE_PREFIX + name, 0)
        for name in ErrorCode.keys()  # noqa: SIM118 - protobuf enum wrapper
        if counters.get(metrics.DEAD_LETTER_CODE_PREFIX + name, 0)
    }
    read = counters.get(metrics.RECORDS_READ, 0)
    scored = counters.get(metrics.SCORED_WRITTEN, 0)
    dead = counters.get(metrics.DEAD_LETTERS_WRITTEN, 0)
    duplicates = counters.get(metrics.DUPLICATES_DROPPED, 0)
    return {
        "pipeline_version": PIPELINE_VERSION,
        "read": read,
        "scored": scored,
        "dead_letters": dead,
        "dead_letters_by_code": by_code,
        "duplicates": duplicates,
        "balanced": read == scored + dead + duplicates,
        "default_profiles_used": {
            kind: counters.get(metrics.DEFAULT_PROFILE_USED_PREFIX + kind, 0) for kind in ("customer", "merchant")
        },
        "reference_rows_rejected": counters.get(metrics.REFERENCE_ROWS_REJECTED, 0),
    }


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


def format_summary(summary: dict[str, Any]) -> str:
    rows = [("records read", summary["read"]), ("scored", summary["scored"]), ("dead letters", summary["dead_letters"])]
    rows += [(f"  {code}", n) for code, n in sorted(summary["dead_letters_by_code"].items())]
    rows += [
        ("duplicates dropped", summary["duplicates"]),
        ("default customer profiles", summary["default_profiles_used"]["customer"]),
        ("default merchant profiles", summary["default_profiles_used"]["merchant"]),
        ("reference rows rejected", summary["reference_rows_rejected"]),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value:>10,}" for name, value in rows]
    verdict = "yes" if summary["balanced"] else "NO"
    lines.append(f"{'balanced':<{width}}  {verdict:>10}   (read = scored + dead letters + duplicates)")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Parse options, validate the configuration, run the job, write and return the summary."""
    options = PipelineOptions(argv)
    job = options.view_as(JobOptions)
    overrides = {s.option: getattr(job, s.option) for s in job_config.SETTINGS}
    config = job_config.load(job.config, overrides)
    check_model(config)
    model_version = resolve_model_version(config)
    pipeline = test_pipeline if test_pipeline is not None else beam.Pipeline(options=options)
    build_pipeline(pipeline, config, model_version)
    result = pipeline.run()
    result.wait_until_finish()
    summary = summarize(result)
    summary["stage_msecs"] = stage_msecs(result)
    summary["output_dir"] = config.output_dir
    summary["model_version"] = model_version
    if "://" not in config.output_dir:
        os.makedirs(config.output_dir, exist_ok=True)
    with FileSystems.create(f"{config.output_dir.rstrip('/')}/summary.json") as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")
    return summary


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
        return 0
    try:
        summary = run(args)
    except job_config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"output: {summary['output_dir']}  (scored/, dead_letters/, summary.json)")
    return 0 if summary["balanced"] else 1


if __name__ == "__main__":
    sys.exit(main())
