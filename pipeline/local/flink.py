"""Beam's FlinkRunner: the Flink options the job accepts, and what a run on Flink must be given.

Beam's Python SDK knows only the FlinkRunner's submission options (--flink_master, --flink_version,
--flink_job_server_jar, --parallelism, ...). The options that shape the run on the cluster
(checkpoints, savepoints, the state backend) belong to the Java job server, which describes them
to the SDK only once it runs; the job refuses an option it does not know before that, so they are
declared here and passed through to the job server under the same names.
"""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

FLINK_RUNNER = "FlinkRunner"
_EMBEDDED = ("[auto]", "[local]")  # a mini-cluster inside the job server, where Beam picks LOOPBACK itself


class FlinkClusterOptions(PipelineOptions):
    """Flink job-server options (Beam's FlinkPipelineOptions), passed to the job server by name."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("Flink (passed to Beam's Flink job server)")
        group.add_argument(
            "--checkpointing_interval",
            type=int,
            default=None,
            help="FlinkRunner: milliseconds between checkpoints; a streaming job needs it",
        )
        group.add_argument(
            "--checkpointing_mode",
            default=None,
            choices=["EXACTLY_ONCE", "AT_LEAST_ONCE"],
            help="FlinkRunner: checkpointing mode (EXACTLY_ONCE by default)",
        )
        group.add_argument(
            "--checkpoint_timeout_millis", type=int, default=None, help="FlinkRunner: a checkpoint's time limit"
        )
        group.add_argument(
            "--min_pause_between_checkpoints",
            type=int,
            default=None,
            help="FlinkRunner: milliseconds between the end of one checkpoint and the start of the next",
        )
        group.add_argument("--savepoint_path", default=None, help="FlinkRunner: start from this savepoint (an upgrade)")
        group.add_argument(
            "--allow_non_restored_state",
            default=None,
            action="store_true",
            help="FlinkRunner: start from a savepoint that holds state of steps the new job lacks",
        )
        group.add_argument("--state_backend", default=None, help="FlinkRunner: state backend, e.g. rocksdb or hashmap")
        group.add_argument(
            "--state_backend_storage_path",
            default=None,
            help="FlinkRunner: where the state backend keeps checkpoints (a durable file system path)",
        )
        group.add_argument(
            "--number_of_execution_retries",
            type=int,
            default=None,
            help="FlinkRunner: how often a failed job is restarted from its last checkpoint",
        )
        group.add_argument(
            "--execution_retry_delay", type=int, default=None, help="FlinkRunner: milliseconds before a restart"
        )


def check(options: PipelineOptions) -> str | None:
    """What stops a FlinkRunner run before it is submitted; None when it can go."""
    standard = options.view_as(StandardOptions)
    if standard.runner != FLINK_RUNNER:
        return None
    submission = options.view_as(FlinkRunnerOptions)
    if not submission.flink_job_server_jar:
        # Beam would download it from Maven Central at submission; a run here downloads nothing
        # unless told where from.
        return (
            f"--flink_job_server_jar: give Beam's Flink job server, beam-runners-flink-{submission.flink_version}"
            "-job-server-<beam>.jar (a path; deploy/flink/submit.sh finds it), or its Maven Central URL to let "
            "Beam download it at submission"
        )
    flink = options.view_as(FlinkClusterOptions)
    if standard.streaming and not flink.checkpointing_interval:
        return (
            "--checkpointing_interval: a streaming job on Flink needs checkpoints (milliseconds, e.g. 10000): "
            "without them a restarted job replays its source and Kafka offsets are never committed"
        )
    embedded = submission.flink_master in _EMBEDDED
    if not embedded and not options.view_as(PortableOptions).environment_type:
        # Beam's default for a cluster address is DOCKER, which starts a container per worker.
        return (
            "--environment_type: name where the Python stages run: LOOPBACK for a cluster on this machine "
            "(deploy/flink/submit.sh does), EXTERNAL with a Beam worker pool beside each TaskManager "
            "(--environment_config=localhost:50000), or DOCKER where the TaskManagers can start containers"
        )
    return None
