"""Fail closed on the model: a score that is not a probability is never a decision, and the model
that scores is the model its card names (sha256), probed on real feature vectors before the job
reads a record."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import orjson
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from onnx import TensorProto, helper

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction
from pipeline import config, runner
from pipeline.shared import feature_sets, features, model_check
from pipeline.stages import s50_predict as predict
from tests.conftest import MODEL, ROOT
from tests.helpers import customer, job_config, merchant, read_jsonl, transaction, with_features

AGE = features.FEATURE_NAMES.index("account_age_days")
POISON_AGE = 4242.0


WIDTH = len(feature_sets.names(feature_sets.DEFAULT))


def fraud_model(path, fraud, width=WIDTH, dynamic_width=False):
    """An ONNX model whose P(fraud) is `fraud`, a function (nodes) of the input's age column."""
    nodes = [
        helper.make_node("Constant", [], ["age_index"], value=helper.make_tensor("i", TensorProto.INT64, [], [AGE])),
        helper.make_node("Gather", ["X", "age_index"], ["age"], axis=1),
        *fraud,
        helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [1], [1])),
        helper.make_node("Unsqueeze", ["p", "axes"], ["p1"]),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.FLOAT, [], [1.0])),
        helper.make_node("Sub", ["one", "p1"], ["q1"]),
        helper.make_node("Concat", ["q1", "p1"], ["probabilities"], axis=1),
    ]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "W" if dynamic_width else width])]
    if dynamic_width:  # a model that needs `width` features but does not say so in its signature
        nodes.insert(
            0, helper.make_node("Constant", [], ["w"], value=helper.make_tensor("w", 1, [width, 1], [0.0] * width))
        )
        nodes.insert(1, helper.make_node("MatMul", ["X", "w"], ["checked"]))
        nodes.append(helper.make_node("Identity", ["checked"], ["checked_out"]))
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])]
    if dynamic_width:
        outputs.append(helper.make_tensor_value_info("checked_out", TensorProto.FLOAT, ["N", 1]))
    graph = helper.make_graph(nodes, "fraud", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


def constant(value):
    return [
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.FLOAT, [], [value])),
        helper.make_node("Mul", ["age", "zero"], ["age0"]),
        helper.make_node("Add", ["age0", "c"], ["p"]),
    ]


def nan_for_age(age):
    return [
        helper.make_node("Constant", [], ["poison"], value=helper.make_tensor("x", TensorProto.FLOAT, [], [age])),
        helper.make_node("Constant", [], ["nan"], value=helper.make_tensor("n", TensorProto.FLOAT, [], [np.nan])),
        helper.make_node("Constant", [], ["low"], value=helper.make_tensor("l", TensorProto.FLOAT, [], [0.1])),
        helper.make_node("Equal", ["age", "poison"], ["hit"]),
        helper.make_node("Where", ["hit", "nan", "low"], ["p"]),
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.01, 1.5, float("-inf")])
def test_a_score_that_is_not_a_probability_becomes_a_dead_letter(clock, bad):
    (enriched,) = with_features(
        clock, [EnrichedTransaction(transaction=transaction(), customer=customer(), merchant=merchant())]
    )
    decider = predict.Decider("m-1", predict.Thresholds("t", 0.5, 0.9), clock)
    letter = decider.decide(enriched, predict.Scored(bad))
    assert isinstance(letter, DeadLetter)
    assert letter.error_code == ErrorCode.ERROR_CODE_INVALID_SCORE and letter.stage == "50_predict"
    assert letter.violations[0].rule_id == "riskpipe.score_is_probability"
    assert letter.payload == enriched.transaction.origin.payload
    assert isinstance(
        decider.decide(enriched, predict.Scored(1.0)), type(decider.decide(enriched, predict.Scored(0.0)))
    )  # bounds are scores


@pytest.mark.slow
def test_records_the_model_gives_nan_are_dead_letters_and_the_rest_is_scored(dataset, tmp_path):
    model = fraud_model(tmp_path / "nan.onnx", nan_for_age(POISON_AGE))
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    customers = [orjson.loads(line) for line in open(data / "customers.jsonl", "rb")]
    poisoned = customers[0]["card_id"]
    customers[0]["account_age_days"] = int(POISON_AGE)
    (data / "customers.jsonl").write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in customers))
    labels = [orjson.loads(line) for line in open(data / "labels.jsonl", "rb")]
    rows = [
        orjson.loads(line)
        for line, label in zip(open(data / "transactions.jsonl", "rb"), labels, strict=True)
        if not label["expected_error_code"]
    ]
    expected = sorted(r["transaction_id"] for r in rows if r["card_id"] == poisoned)
    assert expected, "the poisoned card has transactions"

    out = tmp_path / "out"
    summary = runner.run(
        ["--config", job_config(data, out, predict__model=model)], test_pipeline=TestPipeline(runner="FnApiRunner")
    )
    assert summary["balanced"] and summary["exit_code"] == 0
    assert summary["dead_letters_by_code"]["ERROR_CODE_INVALID_SCORE"] == len(expected)
    letters = [json.loads(line) for line in read_jsonl(out / "dead_letters")]
    assert sorted(d["transaction_id"] for d in letters if d["error_code"] == "ERROR_CODE_INVALID_SCORE") == expected
    scored = [json.loads(line) for line in read_jsonl(out / "scored")]
    assert not {s["transaction_id"] for s in scored} & set(expected)
    assert all(s["score"] == pytest.approx(0.1) and s["decision"] == "DECISION_APPROVE" for s in scored)


@pytest.mark.parametrize(
    ("name", "fraud", "kwargs", "message"),
    [
        ("always_nan", constant(float("nan")), {}, "not probabilities on the probe batch"),
        ("above_one", constant(1.5), {}, "not probabilities on the probe batch"),
        ("dynamic_width_12", constant(0.1), {"width": 12, "dynamic_width": True}, "fails on a probe batch"),
    ],
)
def test_a_model_that_fails_the_probe_stops_the_job_with_exit_2(tmp_path, capsys, name, fraud, kwargs, message):
    model = fraud_model(tmp_path / f"{name}.onnx", fraud, **kwargs)
    out = tmp_path / "out"
    args = ["--config", str(ROOT / "config.yaml"), "--model", model, "--output_dir", str(out)]
    assert runner.main(args) == 2
    err = capsys.readouterr().err
    assert "predict.model" in err and message in err
    assert not out.exists()


def test_the_probe_batch_is_real_feature_vectors_that_the_shipped_model_scores():
    probe = model_check.probe_vectors()
    assert probe.shape == (10, len(feature_sets.names(feature_sets.DEFAULT))) and np.isfinite(probe).all()
    assert len({tuple(row) for row in probe}) == len(probe)
    model_check.check_model(str(MODEL))  # does not raise


@pytest.fixture
def model_copy(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(MODEL.parent, folder)
    return folder


def run_with(model_dir, tmp_path, capsys):
    args = ["--config", str(ROOT / "config.yaml"), "--model", str(model_dir / "model.onnx")]
    code = runner.main([*args, "--output_dir", str(tmp_path / "out")])
    return code, capsys.readouterr().err


def test_a_model_file_that_is_not_the_one_its_card_names_is_refused(model_copy, tmp_path, capsys):
    other = fraud_model(tmp_path / "other.onnx", constant(0.2))
    shutil.copy(other, model_copy / "model.onnx")
    code, err = run_with(model_copy, tmp_path, capsys)
    assert code == 2 and "predict.model" in err and "not the model the card describes" in err


def test_a_card_without_sha256_is_refused(model_copy, tmp_path, capsys):
    card = json.loads((model_copy / "model_card.json").read_text())
    del card["sha256"]
    (model_copy / "model_card.json").write_text(json.dumps(card))
    code, err = run_with(model_copy, tmp_path, capsys)
    assert code == 2 and "has no sha256" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object"), (b"\xff\xfe{}", "is not valid JSON")],
)
def test_a_card_that_is_not_a_json_object_is_exit_2_naming_the_model(model_copy, tmp_path, capsys, text, message):
    card = model_copy / "model_card.json"
    card.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = run_with(model_copy, tmp_path, capsys)
    assert code == 2 and "predict.model" in err and message in err
    with pytest.raises(config.ConfigError, match=r"predict\.model"):
        model_check.read_model_card(str(model_copy / "model.onnx"))


def test_a_worker_refuses_a_model_file_that_changed_after_the_start(tmp_path):
    handler = predict.SingleThreadOnnxModelHandler(
        str(MODEL), providers=["CPUExecutionProvider"], expected_sha256="0" * 64
    )
    with pytest.raises(RuntimeError, match="changed under the running job"):
        handler.load_model()


def test_a_contributions_file_that_is_not_the_one_its_card_names_is_refused(model_copy, tmp_path, capsys):
    (model_copy / "model.txt").write_text((model_copy / "model.txt").read_text().replace("tree_sizes", "tree_sizes "))
    code, err = run_with(model_copy, tmp_path, capsys)
    assert code == 2 and "contributions file" in err and "has sha256" in err


def test_contributions_of_other_trees_are_refused_even_with_a_matching_sha256(model_copy, tmp_path, capsys):
    # the stateless model's trees, named with their true sha256 by the default model's card
    other = ROOT / "models" / "fraud-gbm-stateless-v2" / "model.txt"
    shutil.copy(other, model_copy / "model.txt")
    card = json.loads((model_copy / "model_card.json").read_text())
    card["contributions"]["sha256"] = hashlib.sha256(other.read_bytes()).hexdigest()
    (model_copy / "model_card.json").write_text(json.dumps(card))
    code, err = run_with(model_copy, tmp_path, capsys)
    assert code == 2 and "is not the model that scores" in err


def test_a_model_without_a_contributions_file_scores_without_reasons(model_copy, tmp_path, capsys, caplog):
    card = json.loads((model_copy / "model_card.json").read_text())
    del card["contributions"]
    (model_copy / "model_card.json").write_text(json.dumps(card))
    code, _ = run_with(model_copy, tmp_path, capsys)
    assert code == 0 and "no contributions file" in caplog.text
    lines = (tmp_path / "out" / "scored").glob("*.jsonl")
    rows = [json.loads(line) for path in lines for line in path.read_text().splitlines()]
    assert rows and not any("reasons" in row for row in rows)


def test_contributions_of_other_trees_of_the_same_width_are_refused(model_copy, tmp_path, capsys):
    import lightgbm

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, len(feature_sets.names(feature_sets.DEFAULT))))
    other = lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, x[:, 0] > 0), 5)
    text = other.model_to_string()
    (model_copy / "model.txt").write_text(text)
    card = json.loads((model_copy / "model_card.json").read_text())
    card["contributions"]["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (model_copy / "model_card.json").write_text(json.dumps(card))
    code, err = run_with(model_copy, tmp_path, capsys)
    assert code == 2 and "is not the model that scores" in err


def test_a_malformed_trees_file_is_refused_without_ending_the_process(model_copy, tmp_path, capsys):
    # LightGBM ends the whole process (C++ terminate) on this file: tree sizes no longer match
    lines = (model_copy / "model.txt").read_text().split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("leaf_value="))
    lines[at] = lines[at].replace("leaf_value=", "leaf_value=0.5 ", 1)
    broken = "\n".join(lines)
    (model_copy / "model.txt").write_text(broken)
    card = json.loads((model_copy / "model_card.json").read_text())
    card["contributions"]["sha256"] = hashlib.sha256(broken.encode()).hexdigest()
    (model_copy / "model_card.json").write_text(json.dumps(card))
    code, err = run_with(model_copy, tmp_path, capsys)
    assert code == 2 and "contributions file" in err and "cannot be loaded" in err
