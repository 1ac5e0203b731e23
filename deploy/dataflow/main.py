"""The Flex Template's entry point: the Dataflow launcher runs this file with the template's
parameters as --name=value options (deploy/dataflow/metadata.json lists them).

It is the job's own entry point (python -m pipeline.runner) with two defaults: the config.yaml
baked into the image (so a parameter overrides one key of it), and the DataflowRunner. The job is
submitted and this process ends; the image's workers run it.
"""

from __future__ import annotations

import pathlib
import sys

from pipeline import runner

IMAGE_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "config.yaml"


def with_defaults(argv: list[str]) -> list[str]:
    named = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    defaults = []
    if "--config" not in named:
        defaults += ["--config", str(IMAGE_CONFIG)]
    if "--runner" not in named:
        defaults.append("--runner=DataflowRunner")
    return defaults + argv


if __name__ == "__main__":
    sys.exit(runner.main(with_defaults(sys.argv[1:])))
