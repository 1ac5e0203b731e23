"""The feature sets the job can compute, by version. A model is trained on exactly one of them, and
its model card names it: the job computes the set the model was trained on and refuses a model of
any other.

    fs-v1   the stateless features of pipeline/shared/features.py
    fs-v2   fs-v1, then the per-card velocity features of pipeline/shared/velocity.py (stage
            35_velocity keeps the card histories in Beam state)
    fs-v3   fs-v2, then the card holder's age and local hour and the exact merchant category
            (features.HOLDER_NAMES), then the card's amount z-score and days since first use
            (velocity.CARD_NAMES)

Each set starts with the one before it, so a model of an earlier set reads a prefix of a later
one's vector (the trainer compares them on one feature table).
"""

from __future__ import annotations

from collections.abc import Sequence

from contracts.riskpipe.v1.enriched_transaction_pb2 import CustomerProfile, MerchantProfile
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared import features
from pipeline.shared.features import FEATURE_NAMES as STATELESS_NAMES
from pipeline.shared.features import HOLDER_NAMES
from pipeline.shared.velocity import CARD_NAMES, VELOCITY_NAMES

STATELESS = "fs-v1"
WITH_VELOCITY = "fs-v2"
WITH_HOLDER = "fs-v3"
DEFAULT = WITH_VELOCITY
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    STATELESS: STATELESS_NAMES,
    WITH_VELOCITY: STATELESS_NAMES + VELOCITY_NAMES,
    WITH_HOLDER: STATELESS_NAMES + VELOCITY_NAMES + HOLDER_NAMES + CARD_NAMES,
}
WIDEST = WITH_HOLDER
_VELOCITY_WIDTH = len(VELOCITY_NAMES)


def names(feature_set: str) -> tuple[str, ...]:
    return FEATURE_SETS[feature_set]


def uses_velocity(feature_set: str) -> bool:
    return feature_set in (WITH_VELOCITY, WITH_HOLDER)


def vector(
    feature_set: str,
    txn: Transaction,
    customer: CustomerProfile,
    merchant: MerchantProfile,
    customer_missing: bool,
    merchant_missing: bool,
    velocity_values: Sequence[float] = (),
) -> list[float]:
    """The values of `feature_set`, in its order. `velocity_values` are 35_velocity's
    (velocity.ALL_NAMES), needed by the sets that use velocity."""
    values = features.compute(txn, customer, merchant, customer_missing, merchant_missing)
    if feature_set == STATELESS:
        return values
    values.extend(velocity_values[:_VELOCITY_WIDTH])
    if feature_set == WITH_HOLDER:
        values.extend(features.holder(txn, customer, customer_missing))
        values.extend(velocity_values[_VELOCITY_WIDTH:])
    return values
