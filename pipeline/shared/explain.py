"""Reasons for a score: exact per-feature contributions of the model's trees (TreeSHAP).

A model trained by tools.train ships its trees twice: model.onnx, which scores, and model.txt, the
same trees in LightGBM's format, which the model card names (`contributions`: file, sha256).
LightGBM's `pred_contrib` gives, for one feature vector, each feature's signed contribution to the
model's raw score (log-odds) and the base value; they add up to the raw score, whose logistic is
the probability the ONNX model gives (pipeline.shared.model_check checks this on a probe batch
before the job starts). A record's reasons are its features with the largest upward contributions.
"""

from __future__ import annotations

import hashlib
import logging
import math
import subprocess
import sys
import threading
from typing import Any, NamedTuple

import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipeline.shared.model_card import card_path
from pipeline.shared.tree_shap import PathTables, split_probe

log = logging.getLogger(__name__)
# The tables and LightGBM add the same terms in another order: they agree to about 1e-14.
TABLES_TOLERANCE = 1e-9


class TreeFile(NamedTuple):
    """Where the model's trees in LightGBM's format are, and the sha256 the model card gives them."""

    path: str
    sha256: str


def tree_file(model_path: str, card: dict[str, Any] | None) -> TreeFile | None:
    """The card's contributions file, beside the model; None when the card names none."""
    named = (card or {}).get("contributions")
    if not isinstance(named, dict) or not named.get("file"):
        return None
    card_at = card_path(model_path)
    folder = card_at[: -len("model_card.json")] if card_at.endswith("model_card.json") else ""
    return TreeFile(folder + str(named["file"]), str(named.get("sha256", "")).lower())


_LOAD_CHECK = (
    "import sys, lightgbm; booster = lightgbm.Booster(model_str=sys.stdin.read()); print(booster.num_feature())"
)


def loads_in_a_child(model_text: str, timeout: float = 120.0) -> str | None:
    """None when LightGBM loads the text in a process of its own; else what went wrong. LightGBM
    ends the whole process (C++ terminate, not an exception) on some malformed model files, so a
    file is tried in a child before the job or a worker loads it."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LOAD_CHECK], input=model_text, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"LightGBM did not load it within {timeout:.0f} s"
    if done.returncode == 0:
        return None
    last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit code {done.returncode}"]
    return f"LightGBM cannot load it ({last[0][:300]})"


def read_text(path: str) -> str:
    with FileSystems.open(path) as f:
        return f.read().decode("utf-8")


class Explainer:
    """Contributions of each feature to the raw score, from the model's trees in LightGBM's format.

    They are computed from per-leaf tables (pipeline.shared.tree_shap: the same TreeSHAP numbers,
    13 times faster on batches) once the tables have given LightGBM's own `pred_contrib` numbers on
    probe records; a model whose tables cannot be built or differ is explained by LightGBM."""

    def __init__(self, model_text: str):
        import lightgbm  # imported where used: only a job that explains pays for it

        self._booster = lightgbm.Booster(model_str=model_text)
        self.width = self._booster.num_feature()
        self.tables = self._checked_tables()

    def _lightgbm(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._booster.predict(x, pred_contrib=True, num_threads=1))

    def _checked_tables(self) -> PathTables | None:
        model = self._booster.dump_model()
        tables = PathTables.build(model)
        if tables is None:
            log.info("reasons: the model has a split the tables do not decide; LightGBM explains it")
            return None
        probe = split_probe(model, self.width)
        expected = self._lightgbm(probe)
        # both ways of computing them: a few records (record by record) and a batch (leaf by leaf)
        few = tables.contributions(probe[:2]) - expected[:2]
        worst = float(max(np.max(np.abs(few)), np.max(np.abs(tables.contributions(probe) - expected))))
        if not worst <= TABLES_TOLERANCE:
            log.warning("reasons: the tables differ from LightGBM's contributions by %.3g; LightGBM explains", worst)
            return None
        return tables

    def contributions(self, vectors: np.ndarray) -> np.ndarray:
        """(rows, width + 1): each feature's contribution to the raw score, then the base value.

        The vectors are taken as the ONNX model takes them (float32), so both see the same values;
        one thread, so that the job's other work keeps the other cores."""
        x = np.asarray(vectors, dtype=np.float32).astype(np.float64)
        return self.tables.contributions(x) if self.tables is not None else self._lightgbm(x)

    def top(self, vectors: np.ndarray, count: int) -> list[tuple[tuple[int, float], ...]]:
        """Per row, up to `count` (feature index, contribution) with the largest upward push first;
        features that pushed the score down or not at all are not reasons."""
        if len(vectors) == 0:
            return []
        contributions = self.contributions(vectors)[:, : self.width]
        order = np.argsort(-contributions, axis=1, kind="stable")[:, :count]
        return [
            tuple((int(i), float(row[i])) for i in ranked if row[i] > 0.0)
            for row, ranked in zip(contributions, order, strict=True)
        ]


_LOADED: dict[str, Explainer] = {}
_LOADED_LOCK = threading.Lock()
_KEEP = 4  # models whose explainer a process keeps (the running one, a challenger, swaps)


def explainer_of(model_text: str) -> Explainer:
    """The process's Explainer of these trees, built the first time. A worker runs several instances
    of 50_predict (one per bundle processor the runner asks for), and a model's tables take about a
    second to build and check; the checks before the run (model_check) build the same one."""
    key = hashlib.sha256(model_text.encode()).hexdigest()
    with _LOADED_LOCK:
        found = _LOADED.get(key)
        if found is None:
            found = _LOADED[key] = Explainer(model_text)
            while len(_LOADED) > _KEEP:
                _LOADED.pop(next(iter(_LOADED)))
        return found


def raw_score(probability: float) -> float:
    """The log-odds whose logistic is `probability` (the model's raw score)."""
    p = min(max(probability, 1e-15), 1 - 1e-15)
    return math.log(p / (1 - p))
