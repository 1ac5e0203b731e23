"""The feature sets the job can compute, by version. A model is trained on exactly one of them, and
its model card names it: the job computes the set the model was trained on and refuses a model of
any other.

    fs-v1   the stateless features of pipeline/shared/features.py
    fs-v2   fs-v1, then the per-card velocity features of pipeline/shared/velocity.py (stage
            35_velocity keeps the card histories in Beam state)
"""

from __future__ import annotations

from pipeline.shared.features import FEATURE_NAMES as STATELESS_NAMES
from pipeline.shared.velocity import VELOCITY_NAMES

STATELESS = "fs-v1"
WITH_VELOCITY = "fs-v2"
DEFAULT = WITH_VELOCITY
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    STATELESS: STATELESS_NAMES,
    WITH_VELOCITY: STATELESS_NAMES + VELOCITY_NAMES,
}


def names(feature_set: str) -> tuple[str, ...]:
    return FEATURE_SETS[feature_set]


def uses_velocity(feature_set: str) -> bool:
    return feature_set == WITH_VELOCITY
