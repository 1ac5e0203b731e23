"""deploy/dataflow/metadata.json, the Flex Template's parameters, generated from the job's own options.

    python -m tools.template_metadata            # write it
    python -m tools.template_metadata --check    # exit 1 when the file is not what the options give

Every parameter is one of the job's options (--config and one per setting of pipeline.config.sections),
with the setting's help text, and a regex where the option has a fixed form (numbers, true or
false, a choice, a Pub/Sub or BigQuery name). All are optional: the config.yaml baked into the image
gives the defaults. Beam's and Dataflow's own options (project, region, temp_location,
sdk_container_image, ...) are the template's standard parameters and are not listed. CI runs
--check, so a parameter the job does not accept, or an option the template lacks, cannot ship.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
from typing import Any

import yaml

from pipeline import config as job_config
from pipeline.config import Setting
from tools import generated

ROOT = pathlib.Path(__file__).resolve().parents[1]
METADATA = ROOT / "deploy" / "dataflow" / "metadata.json"
_NUMBER = {
    "int": r"^[-+]?[0-9]+$",
    "float": r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$",
    "bool": r"^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$",
    "timestamp": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[-+][0-9]{2}:[0-9]{2})$",
}


def regexes(setting: Setting) -> list[str]:
    if setting.kind == "choice":
        return ["^(" + "|".join(re.escape(choice) for choice in setting.choices) + ")$"]
    if setting.kind in _NUMBER:
        return [_NUMBER[setting.kind]]
    return [f"^{setting.pattern}$"] if setting.pattern else []


def image_defaults() -> dict[str, Any]:
    """The values of the config.yaml the image carries, by dotted key."""
    return job_config.flatten(yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8")))


def help_text(setting: Setting, defaults: dict[str, Any]) -> str:
    default = defaults.get(setting.key, setting.default)
    if default is None or default == "":
        shown = "none"
    elif setting.kind in ("path", "glob", "dir"):
        shown = f"{default} (in the image, under /template)"
    else:
        shown = json.dumps(default) if not isinstance(default, str) else default
    return f"{setting.help} Config key {setting.key}; default: {shown}."


def parameter(setting: Setting, defaults: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": setting.option,
        "label": setting.key,
        "helpText": help_text(setting, defaults),
        "isOptional": True,
    }
    found = regexes(setting)
    if found:
        entry["regexes"] = found
    return entry


def metadata() -> dict[str, Any]:
    defaults = image_defaults()
    return {
        "name": "riskpipe fraud scoring",
        "description": (
            "Scores card transactions for fraud (validate, dedupe, enrich, velocity and features, ONNX model) "
            "from files (batch) or Pub/Sub (streaming) to files or BigQuery; every record that cannot be "
            "scored is a dead letter with its reason."
        ),
        "sdkInfo": {"language": "PYTHON"},
        "parameters": [
            {
                "name": "config",
                "label": "config file",
                "helpText": "A config.yaml (a gs:// path or one in the image) to start from instead of the "
                "image's /template/config.yaml; every other parameter overrides one of its keys.",
                "isOptional": True,
            },
            *(parameter(setting, defaults) for setting in job_config.settings()),
        ],
    }


def render() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated.main(argv, "tools.template_metadata", __doc__ or "", METADATA, render, "the job's options")


if __name__ == "__main__":
    sys.exit(main())
