"""50_predict: EnrichedTransaction (with features) -> ScoredTransaction, with Beam RunInference.

In:  EnrichedTransaction whose FeatureVector matches the model's feature set.
Out: ScoredTransaction: score (probability of fraud), decision from the configured thresholds
     (APPROVE < review <= REVIEW < decline <= DECLINE), model, thresholds and feature-set versions;
     under output.include_features, the FeatureVector it was scored from; under predict.explain
     (REVIEW and DECLINE by default, or all, or none) its reasons: up to predict.reasons features
     that pushed its score up most, each with its value and its contribution to the raw score
     (log-odds), from the model's trees in LightGBM's format (pipeline.shared.explain), computed
     per batch for the records whose score calls for them. Under predict.shadow_model, a
     challenger's score and decision beside the champion's (`shadow`), never deciding.
Per batch it counts the scores and features into the bins of the model card's drift reference
(pipeline.shared.drift), for the run's drift report.
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
import logging
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import apache_beam as beam
import numpy as np
import onnxruntime as ort
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode, FieldViolation
from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction
from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, Reason, ScoredTransaction
from pipeline.shared import drift, metrics, model_versions
from pipeline.shared.clock import RunClock, beam_time, stamped
from pipeline.shared.dead_letter import StageFn, apply_stage, make_dead_letter
from pipeline.shared.explain import Explainer, TreeFile, explainer_of, read_text, tree_file
from pipeline.shared.model_card import file_digest
from pipeline.shared.model_check import PROBABILITIES

STAGE = "50_predict"
_APPROVE, _REVIEW, _DECLINE = Decision.DECISION_APPROVE, Decision.DECISION_REVIEW, Decision.DECISION_DECLINE
_NONE = Decision.DECISION_UNSPECIFIED
_NAMES = {_APPROVE: "approve", _REVIEW: "review", _DECLINE: "decline", _NONE: "none"}


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


class Scored(NamedTuple):
    """A score and its reasons: (feature index, contribution), largest upward push first; under a
    shadow model, the challenger's score (None when it could not score this record)."""

    score: float
    reasons: tuple[tuple[int, float], ...] = ()
    shadow: float | None = None
    model_version: str = ""


class Challenger(NamedTuple):
    """A shadow model (predict.shadow_model) as checked before the run: it takes the first `width`
    features of the vector the job computes (the champion's, or its own when it is the longer; the
    champion's set is then its first columns)."""

    path: str
    version: str
    sha256: str
    width: int
    feature_set: str = ""


class Extras(NamedTuple):
    """What a worker scores with besides the model: the trees for reasons (records scoring at least
    `explain_from` get up to `reasons`), a challenger in shadow, the model card's drift reference,
    and the names of the features (the champion's, in order)."""

    trees: TreeFile | None = None
    explain_from: float = math.inf
    reasons: int = 3
    shadow: Challenger | None = None
    drift_reference: dict[str, Any] | None = None
    feature_names: tuple[str, ...] = ()
    # The champion's feature set and width when the job computes a longer vector for a challenger
    # (0: the whole vector is the champion's).
    feature_set: str = ""
    champion_width: int = 0
    watch: Watch | None = None


class Watch(NamedTuple):
    """predict.model_watch_dir: the folder of model versions, how often it is looked at, the version
    the job started with and the feature set the job computes (pipeline.shared.model_versions)."""

    folder: str
    seconds: float
    started_with: str
    feature_set: str


NO_EXTRAS = Extras()


_REFUSED: dict[str, set[str]] = {}


class ModelWatcher:
    """Looks at the folder of model versions between batches, at most every `seconds`; a newer
    version that passes the start-up checks replaces the running model from the next batch on, a
    refused one is counted and the running model goes on."""

    def __init__(self, watch: Watch, explain: bool, options: ort.SessionOptions):
        self._watch = watch
        self._explain = explain
        self._options = options
        self._current = watch.started_with
        # one set per worker process: a version is refused (and counted) once, whichever instance saw it
        self._refused = _REFUSED.setdefault(watch.folder, set())
        self._looked = -math.inf  # a new instance looks at once: a newer version may be there already
        self._accepted_count = metrics.counter(metrics.MODEL_SWAPS_ACCEPTED)
        self._refused_count = metrics.counter(metrics.MODEL_SWAPS_REFUSED)

    def swap_if_newer(self, scorer: Scorer) -> None:
        now = time.monotonic()
        if now - self._looked < self._watch.seconds:
            return
        self._looked = now
        found, refused = model_versions.newest_valid(
            self._watch.folder, self._watch.feature_set, self._current, self._refused
        )
        if refused:
            self._refused_count.inc(len(refused))
        if found is None:
            return
        # the bytes that were checked, or the load fails
        session = _checked_session(found.model_path, str(found.card["sha256"]).lower(), self._options)
        explainer = _checked_explainer(tree_file(found.model_path, found.card)) if self._explain else None
        scorer.session, scorer.explainer, scorer.version = session, explainer, found.version
        self._current = found.name
        self._accepted_count.inc()
        logging.getLogger(__name__).warning("model version %s now scores (%s)", scorer.version, found.model_path)


@dataclass
class Scorer:
    """What a worker scores with: the ONNX session and, where records are explained, the trees in
    LightGBM's format; records with a score of at least `explain_from` get up to `reasons` reasons."""

    session: ort.InferenceSession
    explainer: Explainer | None = None
    explain_from: float = math.inf
    reasons: int = 3
    shadow: ort.InferenceSession | None = None
    shadow_width: int = 0
    drift: DriftBins | None = None
    # the version stamped on what this scorer scores ("": the job's); a watcher may replace the model
    version: str = ""
    watcher: ModelWatcher | None = None
    width: int = 0  # the champion's first columns of a longer vector (0: all of it)


def _fraud_probabilities(session, inputs: np.ndarray) -> list[float]:
    output = next((o.name for o in session.get_outputs() if o.name == PROBABILITIES), session.get_outputs()[-1].name)
    probabilities = session.run([output], {session.get_inputs()[0].name: inputs})[0]
    return [float(p) for p in np.asarray(probabilities)[:, 1]]


def _shadow_scores(scorer: Scorer, inputs: np.ndarray) -> list[float | None]:
    """The challenger's scores; a batch it cannot score gives none and never fails the champion's."""
    if scorer.shadow is None:
        return [None] * len(inputs)
    try:
        return list(_fraud_probabilities(scorer.shadow, np.ascontiguousarray(inputs[:, : scorer.shadow_width])))
    except Exception:  # noqa: BLE001 - onnxruntime raises several types; the champion's scores stand
        if len(inputs) == 1:
            return [None]
        middle = len(inputs) // 2
        return _shadow_scores(scorer, inputs[:middle]) + _shadow_scores(scorer, inputs[middle:])


class DriftBins:
    """Counts each batch's scores and features into the bins of the model card's drift reference
    (pipeline.shared.drift): one counter per bin, added to once per batch."""

    def __init__(self, reference: dict[str, Any], names: Sequence[str]):
        columns = {name: i for i, name in enumerate(names)}
        self._bins = [(drift.SCORE, None, reference[drift.SCORE]["edges"])] + [
            (name, columns[name], ref["edges"]) for name, ref in reference["features"].items() if name in columns
        ]
        self._counters = {
            name: [metrics.counter(f"{metrics.DRIFT_PREFIX}{name}.{i}") for i in range(len(edges) + 1)]
            for name, _, edges in self._bins
        }

    def count(self, inputs: np.ndarray, scores: Sequence[float]) -> None:
        for name, column, edges in self._bins:
            values = np.asarray(scores, dtype=np.float64) if column is None else inputs[:, column]
            for counter, n in zip(self._counters[name], drift.bin_counts(values, edges), strict=True):
                if n:
                    counter.inc(int(n))


def _scored(scorer: Scorer, batch: Sequence[np.ndarray]) -> list[Scored]:
    if scorer.watcher is not None:
        scorer.watcher.swap_if_newer(scorer)
    computed = np.stack(batch).astype(np.float32, copy=False)
    inputs = np.ascontiguousarray(computed[:, : scorer.width]) if scorer.width else computed
    scores = _fraud_probabilities(scorer.session, inputs)
    if scorer.drift is not None:
        scorer.drift.count(inputs, scores)
    shadows = _shadow_scores(scorer, computed)
    explained = [i for i, score in enumerate(scores) if score >= scorer.explain_from]
    reasons: dict[int, tuple[tuple[int, float], ...]] = {}
    if scorer.explainer is not None and explained:
        reasons = dict(zip(explained, scorer.explainer.top(inputs[explained], scorer.reasons), strict=True))
    pairs = enumerate(zip(scores, shadows, strict=True))
    return [Scored(score, reasons.get(i, ()), shadow, scorer.version) for i, (score, shadow) in pairs]


def score_batch(
    scorer: Scorer, batch: Sequence[np.ndarray], inference_args: Any = None
) -> list[Scored | InferenceFailure]:
    """P(fraud) and reasons per example; a failing batch is bisected so that only failing examples fail."""
    try:
        scores: list[Scored | InferenceFailure] = list(_scored(scorer, batch))
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
        return score_batch(scorer, batch[:middle]) + score_batch(scorer, batch[middle:])


class SingleThreadOnnxModelHandler(OnnxModelHandlerNumpy):
    """OnnxModelHandlerNumpy whose session evaluates the trees on one thread.

    onnxruntime's multi-threaded tree ensemble sums in an order that depends on the batch size,
    so a record's score could differ in the last float bit with the batch it happened to land in
    (BatchElements sizes batches by timing). On one thread a record's score is the same in any
    batch, which keeps the output deterministic; the cost measured here was about 0.3 µs a record.
    Session options are built here, in load_model(), because they cannot be pickled.
    With `expected_sha256`, a model file whose bytes are not those refuses to load; so does a
    trees file (for reasons) whose bytes are not its own checked sha256.
    """

    def __init__(
        self, model_uri: str, *args: Any, expected_sha256: str = "", extras: Extras = NO_EXTRAS, **kwargs: Any
    ):
        super().__init__(model_uri, *args, **kwargs)
        self._expected_sha256 = expected_sha256
        self._extras = extras

    def load_model(self) -> Scorer:  # type: ignore[override]
        _check_digest(self._model_uri, self._expected_sha256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session_options = options
        extras = self._extras
        explain = extras.explain_from != math.inf
        explainer = _checked_explainer(extras.trees) if explain else None
        champion = super().load_model()
        shadow = None
        if extras.shadow is not None:
            shadow = _checked_session(extras.shadow.path, extras.shadow.sha256, options)
        bins = DriftBins(extras.drift_reference, extras.feature_names) if extras.drift_reference else None
        width = extras.shadow.width if extras.shadow is not None else 0
        watcher = None
        if extras.watch is not None:
            watcher = ModelWatcher(extras.watch, explain, options)
        return Scorer(
            champion,
            explainer,
            extras.explain_from,
            extras.reasons,
            shadow,
            width,
            bins,
            "",
            watcher,
            extras.champion_width,
        )


def _checked_session(path: str, sha256: str, options: ort.SessionOptions) -> ort.InferenceSession:
    """An ONNX session of the file, whose bytes must be those checked before (sha256)."""
    _check_digest(path, sha256)
    with FileSystems.open(path) as f:
        return ort.InferenceSession(f.read(), sess_options=options, providers=["CPUExecutionProvider"])


def _checked_explainer(trees: TreeFile | None) -> Explainer | None:
    """The explainer of the model's trees (None: the model has none), whose bytes must be those checked."""
    if trees is None:
        return None
    _check_digest(trees.path, trees.sha256)
    return explainer_of(read_text(trees.path))


def _check_digest(path: str, expected: str) -> None:
    if expected:
        actual = file_digest(path)
        if actual != expected:
            raise RuntimeError(
                f"model file {path} has sha256 {actual}, the job was started with {expected}: "
                "the model changed under the running job"
            )


class RecordKeyedModelHandler(KeyedModelHandler):
    """KeyedModelHandler whose keys are the records themselves (EnrichedTransaction).

    Beam's version measures a batch for its byte-count metric by pickling all its keys, which
    here would cost more than scoring them; the metric counts the bytes the model reads (the
    feature vectors), which are what an inference request holds.
    """

    def get_num_bytes(self, batch: Sequence[tuple[EnrichedTransaction, np.ndarray]]) -> int:
        return sum(example.nbytes for _, example in batch)


def model_handler(
    model_path: str, min_batch_size: int, max_batch_size: int, expected_sha256: str = "", extras: Extras = NO_EXTRAS
) -> KeyedModelHandler:
    return RecordKeyedModelHandler(
        SingleThreadOnnxModelHandler(
            model_path,
            expected_sha256=expected_sha256,
            extras=extras,
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

    def __init__(
        self,
        model_version: str,
        thresholds: Thresholds,
        clock: RunClock,
        include_features: bool = False,
        feature_names: Sequence[str] = (),
        shadow_version: str = "",
        feature_set: str = "",
        by_hour: bool = True,
    ):
        self._names = tuple(feature_names)
        # Decisions by event hour are counters whose names grow with the hours seen. A runner's
        # worker reports every counter it has ever had in each progress and bundle response (Beam
        # never deletes a metric cell): in a streaming job that is a cost growing with its age, and
        # a replay of a month made 2,071 of them and put the job behind. Batch only.
        self._by_hour = by_hour
        self._shadow_version = shadow_version
        self._feature_set = feature_set  # the champion's, when the record's vector is a challenger's longer one
        # champion decision x challenger decision (UNSPECIFIED: no probability), and both scores' tenths
        self._pairs = {
            (a, b): metrics.counter(f"{metrics.SHADOW_PREFIX}{_NAMES[a]}.{_NAMES[b]}")
            for a in (_APPROVE, _REVIEW, _DECLINE)
            for b in (_APPROVE, _REVIEW, _DECLINE, _NONE)
        }
        self._tenths = {
            (who, i): metrics.counter(f"{metrics.SCORE_TENTHS_PREFIX}{who}.{i}")
            for who in ("champion", "shadow")
            for i in range(10)
        }
        self._model_version = model_version
        self._thresholds = thresholds
        self._clock = clock
        self._include_features = include_features
        # Per bundle: the decisions; latency to the decision on the wall clock, from the event time
        # and from the read (its ingest_time, which a pinned run clock makes meaningless: then not
        # counted); the scores and the decisions by event hour, for the run report.
        self._tally = metrics.BundleTally()
        self._read_latency = not clock.pinned

    def flush(self) -> None:
        """Hands what the bundle's decisions counted to the counters (StageFn calls it at bundle end)."""
        self._tally.flush()

    def __call__(self, keyed: tuple[EnrichedTransaction, PredictionResult]) -> ScoredTransaction | DeadLetter:
        enriched, result = keyed
        return self.decide(enriched, cast(Scored | InferenceFailure, result.inference))

    def decide(
        self, enriched: EnrichedTransaction, scored: Scored | InferenceFailure
    ) -> ScoredTransaction | DeadLetter:
        txn = enriched.transaction
        if isinstance(scored, InferenceFailure):
            letter = make_dead_letter(
                STAGE,
                ErrorCode.ERROR_CODE_INFERENCE_FAILED,
                f"model {self._model_version}: {scored.message}",
                txn.origin,
                self._clock.timestamp(),
                transaction_id=txn.transaction_id,
            )
            letter.exception_type = scored.exception_type
            letter.stacktrace = scored.stacktrace
            return letter
        score, reasons = scored.score, scored.reasons
        version = scored.model_version or self._model_version
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
        out = ScoredTransaction(
            transaction_id=txn.transaction_id,
            card_id=txn.card_id,
            merchant_id=txn.merchant_id,
            amount=txn.amount,
            event_time=txn.event_time,
            score=score,
            decision=self._thresholds.decide(score),
            model_version=version,
            thresholds_version=self._thresholds.version,
            feature_set_version=self._feature_set or enriched.features.feature_set_version,
            scored_at=self._clock.timestamp(),
            missing_profiles=enriched.missing_profiles,
            source=txn.origin.source,
            late=txn.late,
        )
        tally, now = self._tally, time.time()
        decision = _NAMES[out.decision]
        tally.add(metrics.DECISIONS_PREFIX + decision)
        tally.observe_latency("event", now - (txn.event_time.seconds + txn.event_time.nanos * 1e-9))
        ingest = txn.origin.ingest_time
        if self._read_latency and ingest.seconds:
            tally.observe_latency("read", now - (ingest.seconds + ingest.nanos * 1e-9))
        tally.add(f"{metrics.SCORE_BINS_PREFIX}{min(int(score * metrics.SCORE_BINS), metrics.SCORE_BINS - 1)}")
        if self._by_hour:
            tally.add(f"{metrics.DECISIONS_BY_HOUR_PREFIX}{txn.event_time.seconds // 3600}.{decision}")
        if self._shadow_version:
            self._shadow(out, scored.shadow)
        if reasons:
            features = enriched.features
            out.reasons.extend(
                Reason(feature=self._names[i], value=features.values[i], contribution=c) for i, c in reasons
            )
        if self._include_features:
            out.features.CopyFrom(enriched.features)
        return out

    def _shadow(self, out: ScoredTransaction, score: float | None) -> None:
        """The challenger's verdict beside the champion's, and the counts the summary compares."""
        valid = score is not None and math.isfinite(score) and 0.0 <= score <= 1.0
        decision = self._thresholds.decide(cast(float, score)) if valid else _NONE
        out.shadow.model_version = self._shadow_version
        out.shadow.score = cast(float, score) if score is not None else math.nan
        out.shadow.decision = decision
        self._pairs[(out.decision, decision)].inc()
        self._tenths[("champion", tenth(out.score))].inc()
        if valid:
            self._tenths[("shadow", tenth(cast(float, score)))].inc()


def tenth(score: float) -> int:
    """The score's tenth of [0, 1]: 0 for [0, 0.1), ..., 9 for [0.9, 1]."""
    return min(9, max(0, int(score * 10)))


def explain_from(explain: str, thresholds: Thresholds) -> float:
    """The lowest score that gets reasons: REVIEW's threshold for decisions, every score for all."""
    return {"decisions": thresholds.review, "all": -math.inf}.get(explain, math.inf)


def record_time(keyed: tuple[EnrichedTransaction, PredictionResult], now: RunClock):
    """A prediction at its record's Beam timestamp again (RunInference's batching stamps its
    outputs with the end of the window): the event_time, or now for a record scored late."""
    txn = keyed[0].transaction
    return stamped(keyed, beam_time(now.timestamp() if txn.late else txn.event_time))


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
        extras: Extras = NO_EXTRAS,
        decisions_by_hour: bool = True,
    ):
        super().__init__()
        self._handler = model_handler(model_path, min_batch_size, max_batch_size, expected_sha256, extras)
        shadow = extras.shadow.version if extras.shadow is not None else ""
        self._decider = functools.partial(
            Decider,
            model_version,
            thresholds,
            clock,
            include_features,
            extras.feature_names,
            shadow,
            extras.feature_set,
            decisions_by_hour,
        )
        self._clock = clock

    def expand(self, enriched: beam.PCollection):
        predictions = (
            enriched
            | "ToModelInput" >> beam.Map(model_input)
            | "RunInference" >> RunInference(self._handler)
            | "RecordTime" >> beam.Map(record_time, self._clock)
        )
        return apply_stage(predictions, "Decide", StageFn(STAGE, self._decider, self._clock), ScoredTransaction)
