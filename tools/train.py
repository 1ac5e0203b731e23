"""Train the fraud model on generator data and export it as ONNX with its model card.

    python -m tools.train --data DIR --out models/fraud-gbm-v1 [--seed S] [--max-iter N]

Reads DIR/transactions.jsonl, customers.jsonl, merchants.jsonl and labels.jsonl; parses and
checks every record with the job's own 10_validate parser, joins profiles like 30_enrich (default
profiles for missing ones) and computes the features with pipeline/shared/features.py, so the
model sees exactly what the job computes. Trains a HistGradientBoostingClassifier, exports ONNX
(skl2onnx, plain probabilities tensor, no ZipMap) and writes OUT/model.onnx,
OUT/model_card.json and OUT/MODEL_CARD.md with ROC-AUC and PR-AUC on a held-out split, the
feature list and version, the seed and the ONNX-vs-scikit-learn agreement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort
import orjson
from skl2onnx import to_onnx
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split

from contracts.riskpipe.v1.enriched_transaction_pb2 import CustomerProfile, MerchantProfile
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared import features
from pipeline.shared.clock import RunClock
from pipeline.stage_loader import load_stage


def feature_matrix(data: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every valid record of a generator folder."""
    parser = load_stage("10_validate").TransactionParser(RunClock(dt.datetime.now(dt.UTC)), 300)
    read_profiles = load_stage("30_enrich").read_profile_file
    customers = read_profiles(str(data / "customers.jsonl"), CustomerProfile, "card_id")
    merchants = read_profiles(str(data / "merchants.jsonl"), MerchantProfile, "merchant_id")
    labels = {}
    with open(data / "labels.jsonl", "rb") as f:
        for line in f:
            row = orjson.loads(line)
            labels[row["line"]] = row["is_fraud"]
    rows, ys = [], []
    with open(data / "transactions.jsonl", "rb") as f:
        for number, line in enumerate(f, start=1):
            txn = parser(RawRecord(payload=line.rstrip(b"\n")))
            if not isinstance(txn, Transaction):
                continue
            customer, merchant = customers.get(txn.card_id), merchants.get(txn.merchant_id)
            rows.append(
                features.compute(
                    txn,
                    customer or CustomerProfile(),
                    merchant or MerchantProfile(),
                    customer is None,
                    merchant is None,
                )
            )
            ys.append(int(labels[number]))
    return np.asarray(rows, dtype=np.float32), np.asarray(ys, dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-iter", type=int, default=150)
    parser.add_argument("--test-size", type=float, default=0.25)
    args = parser.parse_args(argv)

    x, y = feature_matrix(args.data)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=args.test_size, random_state=args.seed, stratify=y
    )
    model = HistGradientBoostingClassifier(
        max_iter=args.max_iter,
        learning_rate=0.08,
        max_leaf_nodes=31,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=args.seed,
    )
    model.fit(x_train, y_train)
    sk_scores = model.predict_proba(x_test)[:, 1]

    onnx_model = to_onnx(model, x_train[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    onnx_bytes = onnx_model.SerializeToString()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_scores = session.run(["probabilities"], {session.get_inputs()[0].name: x_test})[0][:, 1]
    max_diff = float(np.max(np.abs(onnx_scores - sk_scores)))

    digest = hashlib.sha256(onnx_bytes).hexdigest()
    version = f"fraud-gbm-{features.FEATURE_SET_VERSION}-{digest[:10]}"
    card = {
        "model_version": version,
        "model_type": "sklearn.ensemble.HistGradientBoostingClassifier",
        "format": "onnx",
        "sha256": digest,
        "feature_set_version": features.FEATURE_SET_VERSION,
        "features": list(features.FEATURE_NAMES),
        "inputs": {session.get_inputs()[0].name: f"float32[batch, {len(features.FEATURE_NAMES)}]"},
        "outputs": {"probabilities": "float32[batch, 2]; column 1 is P(fraud)"},
        "seed": args.seed,
        "hyperparameters": {
            "max_iter": args.max_iter,
            "learning_rate": 0.08,
            "max_leaf_nodes": 31,
            "l2_regularization": 1.0,
        },
        "training_data": {
            "folder": args.data.name,
            "generator": json.loads((args.data / "generator.json").read_text())
            if (args.data / "generator.json").exists()
            else None,
            "records_used": len(y),
            "fraud_rate": round(float(y.mean()), 5),
            "train_records": len(y_train),
            "held_out_records": len(y_test),
        },
        "held_out": {
            "roc_auc": round(float(roc_auc_score(y_test, onnx_scores)), 4),
            "pr_auc": round(float(average_precision_score(y_test, onnx_scores)), 4),
        },
        "onnx_vs_sklearn_max_abs_diff": max_diff,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.onnx").write_bytes(onnx_bytes)
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(
        f"# {version}\n\n"
        f"Gradient-boosted trees (scikit-learn HistGradientBoostingClassifier, {args.max_iter} iterations), "
        f"exported to ONNX. Input: the {len(features.FEATURE_NAMES)} features of feature set "
        f"`{features.FEATURE_SET_VERSION}` in this order: {', '.join(features.FEATURE_NAMES)}. "
        f"Output: `probabilities[:, 1]` = P(fraud).\n\n"
        f"Trained on synthetic data from `python -m tools.generate` ({card['training_data']['records_used']:,} valid "
        f"records, fraud rate {card['training_data']['fraud_rate']:.2%}), seed {args.seed}.\n\n"
        f"| held-out metric | value |\n|---|---|\n"
        f"| ROC-AUC | {card['held_out']['roc_auc']} |\n| PR-AUC | {card['held_out']['pr_auc']} |\n"
        f"| records | {len(y_test):,} |\n\n"
        f"ONNX and scikit-learn probabilities agree within {max_diff:.1e}.\n\n"
        f"Limits: the data is synthetic and its fraud patterns are the generator's; re-train on real labels "
        f"before relying on the scores.\n"
    )
    print(json.dumps({"model_version": version, **card["held_out"], "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
