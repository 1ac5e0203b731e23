r"""The job's entry point: the command line and the printed summary.

    python -m pipeline.runner --config config.yaml [--input GLOB] [--output_dir DIR] [Beam options]

    source -> validate -> dedupe -> lateness -> enrich -> velocity -> features -> predict -> sink
                 \__________\__________\__________\__________\___________\__________\________\--> dead letters

`--render_graph PATH.svg` (or .dot) draws the job's graph as built for the configuration (its stages,
contracts and dead-letter paths) and exits without running it.
Every config key has an option (`--help` lists them by section, with their defaults); Beam's own
options (--runner, --direct_num_workers, --flink_master, ...) pass through; an option that neither
the job nor Beam knows is an error. Every run names its runner: the FnApiRunner for batch, Prism
(scripts/prism.sh) for streaming. The graph is pipeline.graph; the checks, the run and the output
folder pipeline.launch; the summary and exit codes pipeline.summary.
Exit codes: 0 every record accounted for and the whole input read; 1 a run that did not account
for every record; 2 a configuration that cannot run (nothing read or written); 3 balanced, but part
of the input could not be read (source errors); 4 the run failed (a worker died, the runner failed)
and nothing was published.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import apache_beam as beam

from pipeline import config as job_config
from pipeline import launch, options
from pipeline.summary import EXIT_CONFIG, EXIT_OK, EXIT_RUN_FAILED, exit_code, format_summary


def render(argv: Sequence[str], path: str) -> str:
    """--render_graph: the job's graph for these options, drawn to `path`; nothing runs."""
    parsed = options.parse_options(list(argv))
    config_file, overrides = options.overrides(parsed)
    return launch.render_graph(parsed, job_config.load(config_file, overrides), path)


def _render_target(args: list[str]) -> tuple[list[str], str | None]:
    """(the arguments without --render_graph PATH, PATH or None)."""
    for i, arg in enumerate(args):
        if arg == "--render_graph" and i + 1 < len(args):
            return args[:i] + args[i + 2 :], args[i + 1]
        if arg.startswith("--render_graph="):
            return args[:i] + args[i + 1 :], arg.split("=", 1)[1]
    return args, None


def run(argv: Sequence[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Parse options, validate the configuration, run the job, publish the output, return the summary.

    Raises ConfigError before anything is read or written, RunFailedError when the job did not
    finish (nothing is published then).
    """
    parsed = options.parse_options(list(argv if argv is not None else sys.argv[1:]))
    config_file, overrides = options.overrides(parsed)
    config = job_config.load(config_file, overrides)
    return launch.launch(parsed, config, config_file, test_pipeline)


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
        options.help_parser("python -m pipeline.runner", __doc__ or "").print_help()
        return EXIT_OK
    args, graph_path = _render_target(args)
    try:
        if graph_path is not None:
            render(args, graph_path)
            print(f"the job's graph: {graph_path}")
            return EXIT_OK
        summary = run(args)
    except job_config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # a runner failure or a bug: say so, publish nothing
        if not isinstance(exc, launch.RunFailedError):
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
