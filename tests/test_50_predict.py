"""50_predict: RunInference on the shipped ONNX model, decisions, and poison records in a batch."""

import apache_beam as beam
import numpy as np
import onnxruntime as ort
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction
from contracts.riskpipe.v1.scored_transaction_pb2 import Decision, ScoredTransaction
from pipeline.shared import feature_sets
from pipeline.stages import s50_predict as predict
from tests.conftest import MODEL
from tests.helpers import customer, merchant, transaction, with_features

THRESHOLDS = predict.Thresholds("t-test", review=0.5, decline=0.9)


def featured(clock, n=20):
    records = [
        EnrichedTransaction(
            transaction=transaction(f"t-{i}", minor=1000 + 5000 * i, mcc="6051" if i % 3 else "5411", line=i + 1),
            customer=customer(age=10 + 100 * i),
            merchant=merchant(risk=min(0.6, 0.03 * i)),
        )
        for i in range(n)
    ]
    return with_features(clock, records)


def direct_scores(records):
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    x = np.asarray([list(r.features.values) for r in records], dtype=np.float32)
    return session.run(["probabilities"], {session.get_inputs()[0].name: x})[0][:, 1]


@pytest.mark.parametrize(
    ("score", "decision"),
    [
        (0.0, Decision.DECISION_APPROVE),
        (0.4999, Decision.DECISION_APPROVE),
        (0.5, Decision.DECISION_REVIEW),
        (0.8999, Decision.DECISION_REVIEW),
        (0.9, Decision.DECISION_DECLINE),
        (1.0, Decision.DECISION_DECLINE),
    ],
)
def test_thresholds(score, decision):
    assert THRESHOLDS.decide(score) == decision


def test_score_batch_bisects_down_to_the_failing_examples():
    session = predict.SingleThreadOnnxModelHandler(str(MODEL), providers=["CPUExecutionProvider"]).load_model()
    good = [np.zeros(len(feature_sets.names(feature_sets.DEFAULT)), dtype=np.float32) + i for i in range(7)]
    poison = np.zeros(3, dtype=np.float32)
    batch = [*good[:3], poison, *good[3:]]
    results = predict.score_batch(session, batch)
    assert len(results) == 8
    assert isinstance(results[3], predict.InferenceFailure)
    assert all(isinstance(r, predict.Scored) for i, r in enumerate(results) if i != 3)
    assert results[:3] + results[4:] == predict.score_batch(session, good)


def test_decider_builds_the_scored_record(clock):
    record = featured(clock, 1)[0]
    scored = predict.Decider("m-1", THRESHOLDS, clock).decide(record, predict.Scored(0.95))
    assert isinstance(scored, ScoredTransaction)
    assert (scored.transaction_id, scored.decision, scored.model_version, scored.thresholds_version) == (
        "t-0",
        Decision.DECISION_DECLINE,
        "m-1",
        "t-test",
    )
    assert scored.feature_set_version == feature_sets.DEFAULT
    assert scored.scored_at == clock.timestamp() and scored.source.line == 1 and not scored.reasons
    failure = predict.InferenceFailure("onnxruntime.Fail", "bad input", "Traceback ...")
    letter = predict.Decider("m-1", THRESHOLDS, clock).decide(record, failure)
    assert isinstance(letter, DeadLetter) and letter.error_code == ErrorCode.ERROR_CODE_INFERENCE_FAILED
    assert letter.exception_type == "onnxruntime.Fail" and letter.stacktrace == "Traceback ..."


def test_predict_transform_scores_like_onnxruntime_and_isolates_a_poison_record(clock):
    records = featured(clock, 20)
    poison = EnrichedTransaction()
    poison.CopyFrom(records[5])
    poison.transaction.transaction_id = "t-poison"
    del poison.features.values[4:]
    expected = {r.transaction.transaction_id: float(s) for r, s in zip(records, direct_scores(records), strict=True)}
    with TestPipeline(runner="FnApiRunner") as p:
        scored, dead = (
            p
            | beam.Create([*records[:10], poison, *records[10:]])
            | predict.Predict(str(MODEL), "m-test", THRESHOLDS, 4, 8, clock)
        )
        assert_that(
            scored | beam.Map(lambda s: (s.transaction_id, round(s.score, 6), s.model_version)),
            equal_to([(k, round(v, 6), "m-test") for k, v in expected.items()]),
            label="scored",
        )
        assert_that(
            dead | beam.Map(lambda d: (d.transaction_id, ErrorCode.Name(d.error_code), d.stage)),
            equal_to([("t-poison", "ERROR_CODE_INFERENCE_FAILED", "50_predict")]),
            label="dead",
        )


def test_scoring_is_idempotent_and_batch_independent(clock):
    session = predict.SingleThreadOnnxModelHandler(str(MODEL), providers=["CPUExecutionProvider"]).load_model()
    records = featured(clock, 20)
    examples = [predict.model_input(r)[1] for r in records]
    whole = predict.score_batch(session, examples)
    assert whole == predict.score_batch(session, examples)
    assert whole == [s for i in range(0, 20, 3) for s in predict.score_batch(session, examples[i : i + 3])]
    decider = predict.Decider("m", THRESHOLDS, clock)
    assert decider.decide(records[0], whole[0]) == decider.decide(records[0], whole[0])


def test_decisions_by_event_hour_are_counted_in_batch_only(clock, monkeypatch):
    """A counter per event hour: a batch run's report charts them; a streaming job would carry every
    hour it ever saw in each of its worker's progress responses, so it counts none."""
    from pipeline.shared import metrics

    named: list[str] = []

    class Recorder:
        def __init__(self, name: str):
            named.append(name)

        def inc(self, n: int = 1) -> None:
            pass

    monkeypatch.setattr(metrics, "counter", Recorder)
    records = featured(clock, 6)
    for i, record in enumerate(records):  # six records, six hours apart
        record.transaction.event_time.seconds += i * 6 * 3600
    for by_hour, expected_hours in ((True, 6), (False, 0)):
        named.clear()
        decider = predict.Decider("m", THRESHOLDS, clock, by_hour=by_hour)
        for record in records:
            decider.decide(record, predict.Scored(0.5))
        decider.flush()
        hours = {name.split(".")[1] for name in named if name.startswith(metrics.DECISIONS_BY_HOUR_PREFIX)}
        assert len(hours) == expected_hours
        assert any(name.startswith(metrics.DECISIONS_PREFIX) for name in named)  # the decisions, either way


def shipped_trees():
    from pipeline.shared.explain import tree_file
    from pipeline.shared.model_check import read_model_card

    trees = tree_file(str(MODEL), read_model_card(str(MODEL)))
    assert trees is not None, "the shipped model's card names its trees in LightGBM's format"
    return trees


def test_contributions_add_up_to_the_models_raw_score_on_real_records(clock):
    from pipeline.shared.explain import Explainer, raw_score, read_text

    records = featured(clock, 20)
    explainer = Explainer(read_text(shipped_trees().path))
    x = np.asarray([list(r.features.values) for r in records], dtype=np.float32)
    contributions = explainer.contributions(x)
    assert contributions.shape == (20, len(feature_sets.names(feature_sets.DEFAULT)) + 1)
    scores = direct_scores(records)
    assert len({round(float(s), 3) for s in scores}) > 5  # the records span the score range
    for row, score in zip(contributions, scores, strict=True):
        # the features' contributions plus the base value (last column) are the raw score (log-odds)
        assert float(row.sum()) == pytest.approx(raw_score(float(score)), abs=1e-4)


@pytest.mark.parametrize("explain", ["decisions", "all", "none"])
def test_reasons_name_the_features_that_pushed_the_score_up(clock, explain):
    records = featured(clock, 20)
    names = feature_sets.names(feature_sets.DEFAULT)
    values = {r.transaction.transaction_id: list(r.features.values) for r in records}
    with TestPipeline(runner="FnApiRunner") as p:
        scored, _ = (
            p
            | beam.Create(records)
            | predict.Predict(
                str(MODEL), "m", THRESHOLDS, 4, 8, clock,
                extras=predict.Extras(shipped_trees(), predict.explain_from(explain, THRESHOLDS), 3, feature_names=names),
            )
        )  # fmt: skip

        def check(out):
            assert len(out) == 20
            flagged = [s for s in out if s.decision != Decision.DECISION_APPROVE]
            assert flagged and len(flagged) < 20, "the records give both kinds of decision"
            for s in out:
                wanted = explain == "all" or (explain == "decisions" and s.decision != Decision.DECISION_APPROVE)
                assert bool(s.reasons) == wanted, (s.transaction_id, s.decision, list(s.reasons))
                pushes = [r.contribution for r in s.reasons]
                assert len(pushes) <= 3 and pushes == sorted(pushes, reverse=True) and all(c > 0 for c in pushes)
                for r in s.reasons:
                    assert r.value == values[s.transaction_id][names.index(r.feature)]

        assert_that(scored, check)
