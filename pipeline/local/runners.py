"""Which runner runs the job, never left to Beam (its DirectRunner would first try to download a
Prism binary), and what each needs from this machine (Prism's binary, Flink's checks)."""

from __future__ import annotations

from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from pipeline.local import flink, prism
from pipeline.shared.errors import ConfigError

# The engine Beam's DirectRunner uses for batch pipelines, in this process (or in worker processes
# with --direct_running_mode=multi_processing); faster than Prism on the batch job.
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


def runs_here(runner: str) -> bool:
    """Whether the runner's workers run in this process tree (Prism), where the job can see every
    record written (pipeline.io.progress)."""
    return runner in prism.PRISM_RUNNERS


def choose_runner(options: PipelineOptions, streaming: bool, java: bool = False, source: str = "") -> str:
    """Names the runner (never left to Beam: its DirectRunner would first try to download a Prism
    binary) and gives Prism the project's binary; returns the runner's name. `java`: the job has
    cross-language (Java) transforms, which Prism runs and the FnApiRunner cannot."""
    standard = options.view_as(StandardOptions)
    if standard.streaming and not streaming:
        raise ConfigError(
            "--streaming: a streaming run needs an unbounded source (--source watch, kafka or pubsub); "
            "source.kind files is batch"
        )
    if streaming:
        standard.streaming = True
    if source == "pubsub" and standard.runner is None:
        raise ConfigError(
            "source.kind pubsub: name the runner (--runner=DataflowRunner): Pub/Sub is read by Dataflow, and "
            "no local runner here can reach it"
        )
    if standard.runner is None:
        standard.runner = DEFAULT_STREAMING_RUNNER if (standard.streaming or java) else DEFAULT_RUNNER
    name = standard.runner
    if standard.streaming and name in _BATCH_ONLY_RUNNERS:
        raise ConfigError(
            f"--runner: {name} cannot run an unbounded source; streaming runs on PrismRunner here "
            "(the default for a streaming source), or on Flink or Dataflow"
        )
    if java and name in _BATCH_ONLY_RUNNERS:
        raise ConfigError(
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
        raise ConfigError(refused)
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
                raise ConfigError(f"--runner {name}: {exc}") from None
    return name
