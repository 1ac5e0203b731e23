"""40_features: EnrichedTransaction -> EnrichedTransaction with its FeatureVector.

In:  EnrichedTransaction (profiles joined; with `velocity` set by 35_velocity when the feature set
     has velocity features).
Out: the same record with `features` set: the names of the model's feature set
     (pipeline/shared/feature_sets.py), the stateless ones computed by the plain functions of
     pipeline/shared/features.py, then the record's velocity features (fs-v2), then the holder
     features and the card summary's (fs-v3), as feature_sets.vector orders them.
Dead letters (stage 40_features):
  FEATURE_ERROR   a feature came out non-finite (NaN or infinite); the violation names it
"""

from __future__ import annotations

import functools

import apache_beam as beam

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter
from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction, ProfileKind
from pipeline.shared import feature_sets
from pipeline.shared.clock import RunClock
from pipeline.shared.dead_letter import StageFn, apply_stage, feature_error

STAGE = "40_features"
_CUSTOMER = ProfileKind.PROFILE_KIND_CUSTOMER
_MERCHANT = ProfileKind.PROFILE_KIND_MERCHANT


class FeatureComputer:
    def __init__(self, clock: RunClock, feature_set: str = feature_sets.DEFAULT):
        self._clock = clock
        self._set = feature_set
        self._names = feature_sets.names(feature_set)

    def __call__(self, enriched: EnrichedTransaction) -> EnrichedTransaction | DeadLetter:
        missing = enriched.missing_profiles
        values = feature_sets.vector(
            self._set,
            enriched.transaction,
            enriched.customer,
            enriched.merchant,
            _CUSTOMER in missing,
            _MERCHANT in missing,
            enriched.velocity.values,
        )
        txn = enriched.transaction
        refused = feature_error(STAGE, "features", self._names, values, txn, self._clock.timestamp)
        if refused is not None:
            return refused
        # Elements are immutable in Beam: the output is a new message.
        out = EnrichedTransaction()
        out.CopyFrom(enriched)
        vector = out.features  # filled in place: a FeatureVector built and then copied costs half again
        if out.HasField("features"):
            vector.Clear()
        vector.feature_set_version = self._set
        vector.names.extend(self._names)
        vector.values.extend(values)
        return out


class ComputeFeatures(beam.PTransform):
    """EnrichedTransactions -> (EnrichedTransactions with features, DeadLetters)."""

    def __init__(self, clock: RunClock, feature_set: str = feature_sets.DEFAULT):
        super().__init__()
        self._clock = clock
        self._set = feature_set

    def expand(self, enriched: beam.PCollection):
        clock = self._clock
        make = functools.partial(FeatureComputer, clock, self._set)
        return apply_stage(enriched, "Compute", StageFn(STAGE, make, clock), EnrichedTransaction)
