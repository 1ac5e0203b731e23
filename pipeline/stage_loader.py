"""Loads a stage module by its file name.

Stage files start with their sequence number (00_source.py, 10_validate.py, ...), which keeps the
flow order visible in a directory listing but makes them impossible to `import` by name. This is
the one place that loads them; stages themselves never load each other.
"""

from __future__ import annotations

import importlib
from types import ModuleType

STAGES = (
    "00_source",
    "10_validate",
    "20_dedupe",
    "25_lateness",
    "30_enrich",
    "35_velocity",
    "40_features",
    "50_predict",
    "60_sink",
    "90_dead_letter",
)


def load_stage(name: str) -> ModuleType:
    """Return the module pipeline.stages.<name>, e.g. load_stage("10_validate")."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; known stages: {', '.join(STAGES)}")
    return importlib.import_module(f"pipeline.stages.{name}")
