"""A challenger in shadow (predict.shadow_model): scored beside the champion, never deciding."""

import json
import math

import numpy as np
import onnxruntime as ort
import pytest

from contracts.riskpipe.v1.scored_transaction_pb2 import Decision
from pipeline import runner
from pipeline.shared import feature_sets
from pipeline.stages import s50_predict as predict
from tests.conftest import MODEL, ROOT
from tests.helpers import job_config, read_jsonl
from tests.test_50_predict import THRESHOLDS, direct_scores, featured

STATELESS = ROOT / "models" / "fraud-gbm-stateless-v2" / "model.onnx"


def stateless_scores(records):
    session = ort.InferenceSession(str(STATELESS), providers=["CPUExecutionProvider"])
    width = len(feature_sets.names(feature_sets.STATELESS))
    x = np.asarray([list(r.features.values)[:width] for r in records], dtype=np.float32)
    return session.run(["probabilities"], {session.get_inputs()[0].name: x})[0][:, 1]


def scored_with(records, clock, shadow):
    """50_predict's batch scoring and decisions (as RunInference runs them), in batches of 4."""
    handler = predict.SingleThreadOnnxModelHandler(
        str(MODEL), providers=["CPUExecutionProvider"], extras=predict.Extras(shadow=shadow)
    )
    scorer = handler.load_model()
    decider = predict.Decider("champ", THRESHOLDS, clock, shadow_version=shadow.version if shadow else "")
    out = {}
    for i in range(0, len(records), 4):
        batch = records[i : i + 4]
        results = predict.score_batch(scorer, [predict.model_input(r)[1] for r in batch])
        for record, result in zip(batch, results, strict=True):
            scored = decider.decide(record, result)
            out[scored.transaction_id] = scored
    return out


def test_the_challenger_scores_every_record_beside_the_champion_and_decides_nothing(clock):
    records = featured(clock, 20)
    width = len(feature_sets.names(feature_sets.STATELESS))
    challenger = predict.Challenger(str(STATELESS), "challenger-1", "", width)
    alone = scored_with(records, clock, None)
    beside = scored_with(records, clock, challenger)
    champion = dict(zip((r.transaction.transaction_id for r in records), direct_scores(records), strict=True))
    shadow = dict(zip((r.transaction.transaction_id for r in records), stateless_scores(records), strict=True))
    assert set(beside) == set(alone) == set(champion)
    for txn_id, s in beside.items():
        assert not alone[txn_id].HasField("shadow")
        # the champion's score and decision are those it gives alone
        assert (s.score, s.decision) == (alone[txn_id].score, alone[txn_id].decision)
        assert s.score == pytest.approx(float(champion[txn_id]), abs=1e-6)
        assert s.shadow.model_version == "challenger-1"
        assert s.shadow.score == pytest.approx(float(shadow[txn_id]), abs=1e-6)
        assert s.shadow.decision == THRESHOLDS.decide(s.shadow.score)
    assert any(s.shadow.decision != s.decision for s in beside.values()), "the two models disagree somewhere"


def test_a_challenger_that_cannot_score_leaves_the_champion_untouched(clock, tmp_path):
    records = featured(clock, 6)
    # a "challenger" of the wrong width: onnxruntime refuses every batch
    challenger = predict.Challenger(str(MODEL), "broken", "", len(feature_sets.names(feature_sets.STATELESS)))
    beside = scored_with(records, clock, challenger)
    alone = scored_with(records, clock, None)
    for txn_id, s in beside.items():
        assert (s.score, s.decision) == (alone[txn_id].score, alone[txn_id].decision)
        assert math.isnan(s.shadow.score) and s.shadow.decision == Decision.DECISION_UNSPECIFIED


def test_the_summary_compares_the_two_models(dataset, tmp_path):
    out = tmp_path / "out"
    config = job_config(dataset, out, predict__shadow_model=str(STATELESS))
    assert runner.main(["--config", config, "--runner=FnApiRunner"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    shadow = summary["shadow"]
    rows = [json.loads(line) for line in read_jsonl(out / "scored")]
    assert shadow["records"] == summary["scored"] == len(rows)
    assert (
        shadow["model_version"]
        == rows[0]["shadow"]["model_version"]
        == json.loads((STATELESS.parent / "model_card.json").read_text())["model_version"]
    )
    short = {"DECISION_APPROVE": "approve", "DECISION_REVIEW": "review", "DECISION_DECLINE": "decline"}
    pairs: dict[str, int] = {}
    for row in rows:
        key = f"{short[row['decision']]}->{short[row['shadow']['decision']]}"
        pairs[key] = pairs.get(key, 0) + 1
    assert shadow["champion_to_challenger"] == dict(sorted(pairs.items()))
    same = sum(n for key, n in pairs.items() if key.split("->")[0] == key.split("->")[1])
    assert shadow["agreement"] == round(same / len(rows), 6)
    severity = {"approve": 0, "review": 1, "decline": 2}
    stricter = sum(n for k, n in pairs.items() if severity[k.split("->")[1]] > severity[k.split("->")[0]])
    assert shadow["flips"]["challenger_stricter"] == stricter
    assert sum(shadow["score_tenths"]["challenger"]) == sum(shadow["score_tenths"]["champion"]) == len(rows)


def test_a_challenger_of_a_longer_feature_set_gets_its_features_and_the_champion_reads_its_own(dataset, tmp_path):
    """Champion stateless (fs-v1), challenger with velocity (fs-v2, which starts with fs-v1's
    features): the job computes fs-v2, each model reads its columns, and the champion's scores and
    decisions are those it gives alone. The path by which a model of a new feature set (fs-v3 beside
    fs-v2) is tried on live traffic before it decides anything."""
    alone, beside = tmp_path / "alone", tmp_path / "beside"
    config = job_config(dataset, alone, predict__model=str(STATELESS))
    assert runner.main(["--config", config, "--runner=FnApiRunner"]) == 0
    config = job_config(
        dataset, beside, predict__model=str(STATELESS), predict__shadow_model=str(MODEL), output__include_features=True
    )
    assert runner.main(["--config", config, "--runner=FnApiRunner"]) == 0
    summary = json.loads((beside / "summary.json").read_text())
    assert summary["feature_set"] == feature_sets.STATELESS and summary["shadow"]["records"] == summary["scored"]
    before = {row["transaction_id"]: row for row in map(json.loads, read_jsonl(alone / "scored"))}
    rows = [json.loads(line) for line in read_jsonl(beside / "scored")]
    assert len(rows) == len(before) > 0
    with_velocity = list(feature_sets.names(feature_sets.WITH_VELOCITY))
    for row in rows:
        was = before[row["transaction_id"]]
        assert (row["score"], row["decision"], row["feature_set_version"]) == (
            was["score"],
            was["decision"],
            feature_sets.STATELESS,
        )
        assert list(row["features"]) == with_velocity  # the vector served, the challenger's
    challenger = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    x = np.asarray([list(row["features"].values()) for row in rows], dtype=np.float32)
    expected = challenger.run(["probabilities"], {challenger.get_inputs()[0].name: x})[0][:, 1]
    assert [row["shadow"]["score"] for row in rows] == pytest.approx(list(map(float, expected)), abs=1e-6)
