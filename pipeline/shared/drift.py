"""Drift: does the traffic still look like the data the model learnt from?

The trainer stores in the model card, for the score and for every feature, the bins of a reference
sample (the held-out period: the latest part of the history, scored out of sample): up to nine
inner edges at its deciles, each a value of the sample (repeated edges merged, so a binary feature
has three bins, one of them empty) and the share of the sample in each bin. The job counts its
own records into the same bins (50_predict, per batch) and reports the population stability index
of each against the reference:

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with every share floored at 0.0001 so that an empty bin gives a large finite value. Rules of thumb
used in credit risk: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a shift that needs
a look (predict.drift_threshold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SCORE = "score"
FLOOR = 1e-4
_DECILES = np.arange(1, 10) / 10


def edges_of(values: np.ndarray) -> list[float]:
    """Inner bin edges at the deciles of `values`, repeated edges merged."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    return sorted({float(e) for e in np.quantile(finite.astype(np.float64), _DECILES, method="inverted_cdf")})


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """How many values fall in each of the len(edges) + 1 bins: (-inf, e0], (e0, e1], ..., (e_last, inf);
    NaN goes to the last bin."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values.astype(np.float64), side="left")
    return np.bincount(index, minlength=len(edges) + 1)


def reference(values: np.ndarray) -> dict[str, list[float]]:
    """A reference sample's bins: {"edges": [...], "proportions": [...]}."""
    edges = edges_of(values)
    counts = bin_counts(values, edges)
    return {"edges": edges, "proportions": [round(float(c) / max(1, len(values)), 6) for c in counts]}


def card_reference(scores: np.ndarray, features: np.ndarray, names: Sequence[str], rows: str) -> dict[str, Any]:
    """The model card's `drift_reference`: the score's bins and every feature's."""
    return {
        "sample": rows,
        "records": len(scores),
        SCORE: reference(scores),
        "features": {name: reference(features[:, i]) for i, name in enumerate(names)},
    }


def psi(expected: Sequence[float], actual_counts: Sequence[int]) -> float | None:
    """The population stability index of `actual_counts` against the `expected` shares (None: no records)."""
    total = sum(actual_counts)
    if total == 0 or len(actual_counts) > len(expected):
        return None
    actual_counts = [*actual_counts, *[0] * (len(expected) - len(actual_counts))]  # bins never counted
    value = 0.0
    for e, count in zip(expected, actual_counts, strict=True):
        e, a = max(e, FLOOR), max(count / total, FLOOR)
        value += (a - e) * math.log(a / e)
    return round(value, 6)


def since(before: Mapping[str, Sequence[int]], now: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The records counted into each bin between two readings of the same counters."""
    out = {}
    for name, counts in now.items():
        earlier = list(before.get(name, ()))
        earlier += [0] * (len(counts) - len(earlier))
        out[name] = [c - e for c, e in zip(counts, earlier, strict=False)]
    return out


def summarize(reference_bins: Mapping[str, Any], counts: Mapping[str, Sequence[int]], threshold: float) -> dict:
    """The summary's `drift`: the score's PSI, each feature's, the threshold and what is above it."""
    score_psi = psi(reference_bins[SCORE]["proportions"], counts.get(SCORE, ()))
    feature_psi = {
        name: psi(ref["proportions"], counts.get(name, ())) for name, ref in reference_bins["features"].items()
    }
    flagged = [
        name for name, value in ((SCORE, score_psi), *feature_psi.items()) if value is not None and value > threshold
    ]
    return {
        "score_psi": score_psi,
        "feature_psi": feature_psi,
        "threshold": threshold,
        "flagged": flagged,
        "records": sum(counts.get(SCORE, ())),
        "reference": reference_bins.get("sample", ""),
    }
