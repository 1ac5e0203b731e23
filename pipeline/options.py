"""The command line's options: the job's (generated from the config sections, one per setting,
grouped by section) and Beam's own, which pass through to Beam.

Beam only warns about an option it does not know and drops it; here an option that neither the job
nor Beam knows is a ConfigError, with the closest known name.
"""

from __future__ import annotations

import argparse
import difflib
import textwrap
from collections.abc import Sequence
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import create_runner

from pipeline import config as job_config
from pipeline.shared.errors import ConfigError

BEAM_OPTIONS_NOTE = (
    "Beam's own pipeline options pass through to Beam unchanged: --runner, --streaming, --direct_num_workers, "
    "--direct_running_mode, --flink_master, --environment_type, --job_endpoint, --project, --region, "
    "--temp_location, --dry_run, ... (Beam's PipelineOptions list them all). An option that neither the job nor "
    "Beam knows stops the job (exit 2)."
)


class JobOptions(PipelineOptions):
    """The job's own options: --config plus one option per setting (pipeline.config.sections)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", default=None, help="config.yaml to start from")
        add_setting_options(parser)


def add_setting_options(parser: argparse.ArgumentParser, grouped: bool = False) -> None:
    """One option per setting; `grouped`: under a heading per config section (for --help)."""
    groups: dict[str, Any] = {}
    for setting in job_config.settings():
        target: Any = parser
        if grouped:
            if setting.section not in groups:
                groups[setting.section] = parser.add_argument_group(f"{setting.section} (config section)")
            target = groups[setting.section]
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if setting.kind == "bool" else {}
        text = f"{setting.key}: {setting.help} (default: {_shown(setting.default)})".replace("%", "%%")
        shape = "{" + ",".join(setting.choices) + "}" if setting.choices else setting.kind.upper()
        target.add_argument(f"--{setting.option}", default=None, help=text, metavar=shape, **extra)


def _shown(default: Any) -> str:
    if default is None or default == "":
        return "none"
    return str(default).lower() if isinstance(default, bool) else str(default)


def help_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=textwrap.fill(BEAM_OPTIONS_NOTE, width=100),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None, help="config.yaml to start from")
    add_setting_options(parser, grouped=True)
    return parser


def parse_options(argv: Sequence[str]) -> PipelineOptions:
    """Beam's options plus the job's, refusing what neither knows."""
    args = list(argv)
    options = PipelineOptions(args)
    known = PipelineOptions([]).get_all_options()  # every option Beam and the job declare, with no flags given
    given = options.get_all_options(retain_unknown_options=True)
    problems = []
    names = [f"--{name}" for name in known]
    for name in [n for n in given if n not in known]:
        close = difflib.get_close_matches(f"--{name}", names, n=1)
        problems.append(f"unknown option --{name}" + (f" (did you mean {close[0]}?)" if close else ""))
    for before, arg in zip([None, *args], args, strict=False):
        takes_value = before is not None and before.startswith("--") and "=" not in before
        if not arg.startswith("-") and not takes_value:
            problems.append(f"unexpected argument {arg!r} (options take the form --name=value)")
    if problems:
        raise ConfigError("; ".join(problems))
    standard = options.view_as(StandardOptions)
    if standard.runner is not None:
        try:
            create_runner(standard.runner)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"--runner: {standard.runner!r} is not a runner Beam knows: {exc}") from None
    return options


def overrides(options: PipelineOptions) -> tuple[str | None, dict[str, Any]]:
    """The --config file and the setting options given on the command line, by option name."""
    job = options.view_as(JobOptions)
    return job.config, {s.option: getattr(job, s.option) for s in job_config.settings()}
