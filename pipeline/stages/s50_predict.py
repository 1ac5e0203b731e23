"""50_predict: EnrichedTransaction (with features) -> ScoredTransaction, with Beam RunInference.

In:  EnrichedTransaction whose FeatureVector matches the model's feature set.
Out: ScoredTransaction: score (probability of fraud), decision from the configured thresholds
     (APPROVE < review <= REVIEW < decline <= DECLINE), model, thresholds and feature-set versions;
     under output.include_features, the FeatureVector it was scored from.
The model is ONNX, run by onnxruntime on the CPU through Beam's OnnxModelHandlerNumpy, keyed so
each score finds its record, in batches of predict.min_batch_size..predict.max_batch_size.
A batch that fails is split in halves until the failing records are alone; only they become
dead letters, the rest of the batch is scored.
A score that is not a probability (NaN, infinite, outside [0, 1]) is never turned into a decision:
the record becomes a dead letter (fail closed). Each worker checks, as it loads the model, that the
file's sha256 is the one the runner checked against the model card.
Each output keeps its record's event_time as its Beam timestamp (a late one scored under
streaming.late_policy score: the time it is scored), for the windows of the streaming sinks.
Dead letters (stage 50_predict):
  INFERENCE_FAILED   the model could not score this record on its own
  INVALID_SCORE      the model gave this record a score that is not a probability
"""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import apache_beam as beam
import numpy as np
import onnxruntime as ort
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy
from apache_beam.transforms.window import TimestampedValue

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode, FieldViolation
from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction
from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, ScoredTransaction
from pipeline.shared.clock import RunClock, beam_time
from pipeline.shared.dead_letter import StageFn, apply_stage, make_dead_letter
from pipeline.shared.model_card import file_digest
from pipeline.shared.model_check import PROBABILITIES

STAGE = "50_predict"
_APPROVE, _REVIEW, _DECLINE = Decision.DECISION_APPROVE, Decision.DECISION_REVIEW, Decision.DECISION_DECLINE


@dataclass(frozen=True)
class Thresholds:
    version: str
    review: float
    decline: float

    def decide(self, score: float) -> Decision:
        if score >= self.decline:
            return _DECLINE
        if score >= self.review:
            return _REVIEW
        return _APPROVE


@dataclass(frozen=True)
class InferenceFailure:
    """Stands in for a score the model could not give; plain strings, so it pickles anywhere."""

    exception_type: str
    message: str
    stacktrace: str


def _fraud_probabilities(session, batch: Sequence[np.ndarray]) -> list[float]:
    inputs = np.stack(batch).astype(np.float32, copy=False)
    output = next((o.name for o in session.get_outputs() if o.name == PROBABILITIES), session.get_outputs()[-1].name)
    probabilities = session.run([output], {session.get_inputs()[0].name: inputs})[0]
    return [float(p) for p in np.asarray(probabilities)[:, 1]]


def score_batch(session, batch: Sequence[np.ndarray], inference_args: Any = None) -> list[float | InferenceFailure]:
    """P(fraud) per example; a failing batch is bisected so that only failing examples fail."""
    try:
        scores: list[float | InferenceFailure] = list(_fraud_probabilities(session, batch))
        return scores
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types; all mean "split"
        if len(batch) == 1:
            return [
                InferenceFailure(
                    f"{type(exc).__module__}.{type(exc).__qualname__}",
                    str(exc)[:500],
                    "".join(traceback.format_exception(exc)),
                )
            ]
        middle = len(batch) // 2
        return score_batch(session, batch[:middle]) + score_batch(session, batch[middle:])


class SingleThreadOnnxModelHandler(OnnxModelHandlerNumpy):
    """OnnxModelHandlerNumpy whose session evaluates the trees on one thread.

    onnxruntime's multi-threaded tree ensemble sums in an order that depends on the batch size,
    so a record's score could differ in the last float bit with the batch it happened to land in
    (BatchElements sizes batches by timing). On one thread a record's score is the same in any
    batch, which keeps the output deterministic; the cost measured here was about 0.3 µs a record.
    Session options are built here, in load_model(), because they cannot be pickled.
    With `expected_sha256`, a model file whose bytes are not those refuses to load.
    """

    def __init__(self, model_uri: str, *args: Any, expected_sha256: str = "", **kwargs: Any):
        super().__init__(model_uri, *args, **kwargs)
        self._expected_sha256 = expected_sha256

    def load_model(self) -> ort.InferenceSession:
        if self._expected_sha256:
            actual = file_digest(self._model_uri)
            if actual != self._expected_sha256:
                raise RuntimeError(
                    f"model file {self._model_uri} has sha256 {actual}, the job was started with "
                    f"{self._expected_sha256}: the model changed under the running job"
                )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session_options = options
        return super().load_model()


class RecordKeyedModelHandler(KeyedModelHandler):
    """KeyedModelHandler whose keys are the records themselves (EnrichedTransaction).

    Beam's version measures a batch for its byte-count metric by pickling all its keys, which
    here would cost more than scoring them; the records' protobuf sizes give the same metric.
    """

    def get_num_bytes(self, batch: Sequence[tuple[EnrichedTransaction, np.ndarray]]) -> int:
        return sum(record.ByteSize() + example.nbytes for record, example in batch)


def model_handler(
    model_path: str, min_batch_size: int, max_batch_size: int, expected_sha256: str = ""
) -> KeyedModelHandler:
    return RecordKeyedModelHandler(
        SingleThreadOnnxModelHandler(
            model_path,
            expected_sha256=expected_sha256,
            providers=["CPUExecutionProvider"],
            # Beam types inference_fn as returning PredictionResults, but run_inference() zips its
            # result with the batch itself; a list of scores is what the default function returns too.
            inference_fn=score_batch,  # type: ignore[arg-type]
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
        )
    )


def model_input(enriched: EnrichedTransaction) -> tuple[EnrichedTransaction, np.ndarray]:
    return enriched, np.asarray(enriched.features.values, dtype=np.float32)


class Decider:
    """(EnrichedTransaction, PredictionResult) -> ScoredTransaction or DeadLetter."""

    def __init__(self, model_version: str, thresholds: Thresholds, clock: RunClock, include_features: bool = False):
        self._model_version = model_version
        self._thresholds = thresholds
        self._clock = clock
        self._include_features = include_features

    def __call__(self, keyed: tuple[EnrichedTransaction, PredictionResult]) -> ScoredTransaction | DeadLetter:
        enriched, result = keyed
        return self.decide(enriched, cast(float | InferenceFailure, result.inference))

    def decide(self, enriched: EnrichedTransaction, score: float | InferenceFailure) -> ScoredTransaction | DeadLetter:
        txn = enriched.transaction
        if isinstance(score, InferenceFailure):
            letter = make_dead_letter(
                STAGE,
                ErrorCode.ERROR_CODE_INFERENCE_FAILED,
                f"model {self._model_version}: {score.message}",
                txn.origin,
                self._clock.timestamp(),
                transaction_id=txn.transaction_id,
            )
            letter.exception_type = score.exception_type
            letter.stacktrace = score.stacktrace
            return letter
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            return make_dead_letter(
                STAGE,
                ErrorCode.ERROR_CODE_INVALID_SCORE,
                f"model {self._model_version} gave {score!r}, not a probability in [0, 1]: no decision made",
                txn.origin,
                self._clock.timestamp(),
                [
                    FieldViolation(
                        field_path="score",
                        rule_id="riskpipe.score_is_probability",
                        message="must be a finite number in [0, 1]",
                        value=repr(score),
                    )
                ],
                txn.transaction_id,
            )
        scored = ScoredTransaction(
            transaction_id=txn.transaction_id,
            card_id=txn.card_id,
            merchant_id=txn.merchant_id,
            amount=txn.amount,
            event_time=txn.event_time,
            score=score,
            decision=self._thresholds.decide(score),
            model_version=self._model_version,
            thresholds_version=self._thresholds.version,
            feature_set_version=enriched.features.feature_set_version,
            scored_at=self._clock.timestamp(),
            missing_profiles=enriched.missing_profiles,
            source=txn.origin.source,
            late=txn.late,
        )
        if self._include_features:
            scored.features.CopyFrom(enriched.features)
        return scored


def record_time(keyed: tuple[EnrichedTransaction, PredictionResult], now: RunClock):
    """A prediction at its record's Beam timestamp again (RunInference's batching stamps its
    outputs with the end of the window): the event_time, or now for a record scored late."""
    txn = keyed[0].transaction
    return TimestampedValue(keyed, beam_time(now.timestamp() if txn.late else txn.event_time))


class Predict(beam.PTransform):
    """EnrichedTransactions with features -> (ScoredTransactions, DeadLetters)."""

    def __init__(
        self,
        model_path: str,
        model_version: str,
        thresholds: Thresholds,
        min_batch_size: int,
        max_batch_size: int,
        clock: RunClock,
        expected_sha256: str = "",
        include_features: bool = False,
    ):
        super().__init__()
        self._handler = model_handler(model_path, min_batch_size, max_batch_size, expected_sha256)
        self._decider = functools.partial(Decider, model_version, thresholds, clock, include_features)
        self._clock = clock

    def expand(self, enriched: beam.PCollection):
        predictions = (
            enriched
            | "ToModelInput" >> beam.Map(model_input)
            | "RunInference" >> RunInference(self._handler)
            | "RecordTime" >> beam.Map(record_time, self._clock)
        )
        return apply_stage(predictions, "Decide", StageFn(STAGE, self._decider, self._clock), ScoredTransaction)
