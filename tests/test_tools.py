"""The data generator and the model trainer."""

import hashlib
import json

import numpy as np
import onnxruntime as ort
import orjson
from sklearn.metrics import roc_auc_score

from pipeline.shared import features
from tests.conftest import MODEL
from tools import generate, train


def digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


def test_generator_is_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate.generate(2000, seed=3, invalid_fraction=0.1, out=a)
    generate.generate(2000, seed=3, invalid_fraction=0.1, out=b)
    generate.generate(2000, seed=4, invalid_fraction=0.1, out=c)
    assert digest(a) == digest(b)
    assert digest(a)["transactions.jsonl"] != digest(c)["transactions.jsonl"]
    assert set(digest(a)) == {
        "transactions.jsonl",
        "customers.jsonl",
        "merchants.jsonl",
        "labels.jsonl",
        "generator.json",
    }


def test_generator_output_has_fraud_invalid_records_and_ground_truth(tmp_path):
    counts = generate.generate(20000, seed=8, invalid_fraction=0.05, out=tmp_path)
    labels = [orjson.loads(line) for line in open(tmp_path / "labels.jsonl", "rb")]
    lines = open(tmp_path / "transactions.jsonl", "rb").read().splitlines()
    assert len(labels) == len(lines) == 20000 == counts["records"]
    assert [r["line"] for r in labels] == list(range(1, 20001))
    invalid = [r for r in labels if r["expected_error_code"]]
    assert len(invalid) == 1000
    assert {r["invalid_kind"] for r in invalid} == {kind for kind, _ in generate.INVALID_KINDS}
    fraud = [r for r in labels if r["is_fraud"] and not r["expected_error_code"]]
    assert 0.008 < len(fraud) / 19000 < 0.025
    assert {r["pattern"] for r in fraud} == set(generate.PATTERNS)
    valid = [orjson.loads(lines[r["line"] - 1]) for r in labels if not r["expected_error_code"]]
    currencies = {v["amount"]["currency"] for v in valid}
    assert {"EUR", "USD", "JPY", "KWD"} <= currencies
    assert len({v["card_id"] for v in valid}) > 500
    homes = {c["card_id"]: c["home_country"] for c in map(orjson.loads, open(tmp_path / "customers.jsonl", "rb"))}
    abroad = np.mean([v["country"] != homes[v["card_id"]] for v in valid if v["card_id"] in homes])
    assert 0.03 < abroad < 0.2
    assert sum(r["missing_profile"] for r in labels) > 0


def test_trainer_writes_an_onnx_model_and_its_card(tmp_path):
    data, out = tmp_path / "data", tmp_path / "model"
    generate.generate(20000, seed=21, invalid_fraction=0.01, out=data)
    assert train.main(["--data", str(data), "--out", str(out), "--max-iter", "40", "--seed", "3"]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["features"] == list(features.FEATURE_NAMES)
    assert card["feature_set_version"] == features.FEATURE_SET_VERSION
    assert card["seed"] == 3 and card["held_out"]["roc_auc"] > 0.9 and 0 < card["held_out"]["pr_auc"] <= 1
    assert card["onnx_vs_sklearn_max_abs_diff"] < 1e-5
    assert card["model_version"].startswith("fraud-gbm-fs-v1-")
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == card["sha256"]
    assert "ROC-AUC" in (out / "MODEL_CARD.md").read_text()


def test_shipped_model_separates_fraud_on_fresh_generator_data(tmp_path):
    generate.generate(30000, seed=1234, invalid_fraction=0.0, out=tmp_path)
    x, y = train.feature_matrix(tmp_path)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    scores = session.run(["probabilities"], {"X": x})[0][:, 1]
    assert roc_auc_score(y, scores) >= 0.90
    card = json.loads((MODEL.parent / "model_card.json").read_text())
    assert card["held_out"]["roc_auc"] >= 0.90
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == card["sha256"]


def test_shipped_model_is_reproduced_by_its_card(tmp_path):
    """The card says how the model was made; doing it again gives the same bytes. Changing the
    feature code or the generator without re-training the shipped model fails here."""
    card = json.loads((MODEL.parent / "model_card.json").read_text())
    recipe = card["training_data"]["generator"]
    assert recipe["generator_version"] == generate.GENERATOR_VERSION
    data = tmp_path / "data"
    generate.generate(recipe["records"], recipe["seed"], recipe["invalid_fraction"], data)
    out = tmp_path / "model"
    assert (
        train.main(
            [
                "--data",
                str(data),
                "--out",
                str(out),
                "--seed",
                str(card["seed"]),
                "--max-iter",
                str(card["hyperparameters"]["max_iter"]),
            ]
        )
        == 0
    )
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == card["sha256"]


def test_replay_leaves_out_source_errors_and_letters_without_payload(tmp_path, capsys, clock):
    from contracts.riskpipe.v1.dead_letter_pb2 import ErrorCode
    from contracts.riskpipe.v1.raw_record_pb2 import RawRecord, SourcePosition
    from pipeline.shared.dead_letter import make_dead_letter
    from pipeline.shared.json_codec import dead_letter_json
    from tools import replay

    def letter(code, payload, line):
        origin = RawRecord(payload=payload, source=SourcePosition(uri="in.jsonl", line=line))
        return dead_letter_json(make_dead_letter("10_validate", code, "m", origin, clock.timestamp()))

    letters = tmp_path / "dead.jsonl"
    letters.write_text(
        "\n".join(
            [
                letter(ErrorCode.ERROR_CODE_MALFORMED_JSON, b'{"broken', 2),
                letter(ErrorCode.ERROR_CODE_SOURCE_UNREADABLE, b'{"cut sh', 7),
                letter(ErrorCode.ERROR_CODE_MALFORMED_JSON, b"", 9),
            ]
        )
        + "\n"
    )
    out = tmp_path / "replay.jsonl"
    assert replay.main(["--dead-letters", str(letters), "--out", str(out)]) == 0
    assert out.read_bytes() == b'{"broken\n'
    printed = capsys.readouterr().out
    assert "source errors (not records)" in printed and "without payload" in printed
