"""The one place the job touches a Beam internal, pinned to the Beam version by tests/test_beam_compat.py.

A portable runner's result (Prism, the portable Job API) keeps the first metrics it was asked for:
asked while the job runs, it would answer with those live figures after the job ended too. Beam has
no public way to ask it again, so the cached answer is dropped here before each question.
"""

from __future__ import annotations

from typing import Any

PINNED_BEAM_VERSION = "2.77.0"


def fresh_metrics(result: Any) -> Any:
    """result.metrics(), asked again rather than taken from the result's cache."""
    if hasattr(result, "_metrics"):
        result._metrics = None
    return result.metrics()
