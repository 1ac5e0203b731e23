"""The model card that travels with every model file: models/<name>/model_card.json.

The predict stage reads it to stamp the model version on every score and to refuse a model that
was trained on another feature set than the one the job computes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any

from apache_beam.io.filesystems import FileSystems

CARD_NAME = "model_card.json"


def card_path(model_path: str) -> str:
    return (
        FileSystems.join(os.path.dirname(model_path) or ".", CARD_NAME)
        if "://" in model_path
        else str(pathlib.Path(model_path).with_name(CARD_NAME))
    )


def read_card(model_path: str) -> dict[str, Any] | None:
    path = card_path(model_path)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def file_digest(model_path: str) -> str:
    with FileSystems.open(model_path) as f:
        return hashlib.sha256(f.read()).hexdigest()
