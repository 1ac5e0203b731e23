"""The model card that travels with every model file: models/<name>/model_card.json.

The job reads it to stamp the model version on every score, to refuse a model that was trained on
another feature set than the one the job computes, and to refuse a model file whose sha256 is not
the card's (pipeline.shared.model_check).
"""

from __future__ import annotations

import hashlib
import os
import pathlib

from apache_beam.io.filesystems import FileSystems

CARD_NAME = "model_card.json"


def card_path(model_path: str) -> str:
    return (
        FileSystems.join(os.path.dirname(model_path) or ".", CARD_NAME)
        if "://" in model_path
        else str(pathlib.Path(model_path).with_name(CARD_NAME))
    )


def read_card_bytes(model_path: str) -> bytes | None:
    path = card_path(model_path)
    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read()


def file_digest(model_path: str) -> str:
    digest = hashlib.sha256()
    with FileSystems.open(model_path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
