"""Train the fraud model on a labelled history and export it as ONNX with its model card.

    python -m tools.train --data DIR --out models/NAME [--feature-set fs-v2] [--seed S] [--max-iter N]
                          [--served OUTPUT_DIR] [--ablation]

DIR is any folder in the generator's layout: transactions.jsonl (the job's input format),
customers.jsonl, merchants.jsonl and labels.jsonl (one row per transaction: transaction_id and
is_fraud); generator.json is optional. A team can train on its own labelled history.

The features are the job's own: the trainer runs the job's stages 10_validate to 40_features
(pipeline.graph.featurize) over the history in Beam, so the velocity features are computed by the
same transform, point in time (each transaction sees only the card's earlier ones), as in serving.
Records the job would refuse are left out, as are those without a label. With --served, the
features are instead those a job served, read from its scored records (written with
--include_features true): a model trained on what the live job saw.

Evaluation, the way fraud teams do it: held out by event time (the latest --holdout share of the
history; the velocity features of the training part see nothing of that period), with a random
split beside it; ROC-AUC, PR-AUC and recall at 1% and 0.1% false-positive rate, for every feature
set on the same split. The exported model is the one trained on the earlier part and evaluated on
the held-out part. With --ablation, the held-out split also measures each of fs-v3's additions
(the holder's age and local hour, the exact MCC, the card's amount z-score and days since first
use): fs-v2 with each one added, and fs-v3 with each one left out (model card: `ablation`).

The learner is LightGBM. The job scores with the ONNX export (OUT/model.onnx) and explains its
REVIEW and DECLINE decisions with the same trees in LightGBM's own format (OUT/model.txt): exact
TreeSHAP contributions, which with the base value add up to the model's raw score. Writes
OUT/model.onnx, OUT/model.txt, OUT/model_card.json (both files' sha256) and OUT/MODEL_CARD.md.
A folder's own generator.json is recorded as it is; only one written by tools.generate is read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import pathlib
import sys
import tempfile
from typing import Any

import apache_beam as beam
import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import orjson
from apache_beam.coders import BytesCoder
from apache_beam.options.pipeline_options import PipelineOptions
from onnx.helper import make_opsetid
from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
from skl2onnx import to_onnx, update_registered_converter
from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split

from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction
from pipeline import config as job_config
from pipeline import graph
from pipeline.io import files
from pipeline.shared import drift, feature_sets, velocity
from pipeline.shared import features as features_module
from pipeline.shared.clock import RunClock, parse_rfc3339

ROOT = pathlib.Path(__file__).resolve().parent.parent
HYPERPARAMETERS: dict[str, Any] = {"learning_rate": 0.08, "num_leaves": 31, "reg_lambda": 1.0, "min_child_samples": 20}
MODEL_TYPE = f"lightgbm.LGBMClassifier {lgb.__version__}"

update_registered_converter(
    lgb.LGBMClassifier,
    "LightGbmLGBMClassifier",
    calculate_linear_classifier_output_shapes,
    convert_lightgbm,
    options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
)


class FeatureTable:
    """Feature vectors of the job's feature set, by transaction, with their event times."""

    def __init__(self, ids: list[str], seconds: np.ndarray, values: np.ndarray):
        self.ids, self.seconds, self.values = ids, seconds, values


def _row(enriched: EnrichedTransaction) -> bytes:
    txn = enriched.transaction
    return orjson.dumps([txn.transaction_id, txn.event_time.seconds, list(enriched.features.values)])


def feature_table(data: pathlib.Path, feature_set: str = feature_sets.WIDEST) -> FeatureTable:
    """Runs the job's stages 10_validate to 40_features over DIR/transactions.jsonl (FnApiRunner)."""
    config = job_config.load(
        ROOT / "config.yaml",
        {
            "input": str(data / "transactions.jsonl"),
            "customers": str(data / "customers.jsonl"),
            "merchants": str(data / "merchants.jsonl"),
            "missing_profile_policy": "default",
        },
        check_files=False,
    )
    clock = RunClock(dt.datetime.now(dt.UTC))
    with tempfile.TemporaryDirectory(prefix="riskpipe-train-") as work:
        options = PipelineOptions(["--runner=FnApiRunner"])
        with beam.Pipeline(options=options) as p:
            raw, _ = p | "00_source" >> files.ReadTransactions(config.input.transactions or "", clock)
            featured, _ = graph.featurize(raw, config, clock, feature_set)
            _ = (
                featured
                | "Rows" >> beam.Map(_row)
                | "Write" >> beam.io.WriteToText(f"{work}/features", file_name_suffix=".jsonl", coder=BytesCoder())
            )
        rows = [orjson.loads(line) for path in sorted(pathlib.Path(work).glob("features*")) for line in path.open("rb")]
    rows.sort(key=lambda row: (row[1], row[0]))
    width = len(feature_sets.names(feature_set))
    values = np.asarray([row[2] for row in rows], dtype=np.float32).reshape(len(rows), width)
    return FeatureTable([row[0] for row in rows], np.asarray([row[1] for row in rows], dtype=np.int64), values)


def served_table(folder: pathlib.Path) -> tuple[str, FeatureTable]:
    """The feature vectors a job served, from its output folder: the scored records it wrote with
    output.include_features (files under scored/, batch or streaming), and their feature set. What
    the live job saw, not what a replay in event-time order would compute (see
    docs/model-and-data.md)."""
    by_names = {names: name for name, names in feature_sets.FEATURE_SETS.items()}
    served: str | None = None
    rows = []
    for path in sorted((folder / "scored").glob("*.jsonl")):
        with path.open("rb") as f:
            for line in f:
                row = orjson.loads(line)
                features = row.get("features")
                found = by_names.get(tuple(features or ()))
                if found is None or found == feature_sets.STATELESS or served not in (None, found):
                    raise ValueError(
                        f"{path}: a scored record without the features of one feature set with velocity "
                        f"({', '.join(n for n in feature_sets.FEATURE_SETS if feature_sets.uses_velocity(n))}; run "
                        "the job with --include_features true and a model of that set)"
                    )
                served = found
                seconds = int(parse_rfc3339(row["event_time"]).timestamp())
                rows.append((row["transaction_id"], seconds, list(features.values())))
    rows.sort(key=lambda row: (row[1], row[0]))
    width = len(feature_sets.names(served or feature_sets.WIDEST))
    values = np.asarray([row[2] for row in rows], dtype=np.float32).reshape(len(rows), width)
    table = FeatureTable([row[0] for row in rows], np.asarray([row[1] for row in rows], dtype=np.int64), values)
    return served or feature_sets.WIDEST, table


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def label_value(value: Any) -> int:
    """is_fraud as another source may write it: true/false, 1/0, or those as text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return int(value.strip().lower() in _TRUE)
    raise ValueError(f"is_fraud must be true/false or 1/0, got {value!r}")


def read_labels(data: pathlib.Path) -> dict[str, int]:
    labels = {}
    with open(data / "labels.jsonl", "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                labels[str(row["transaction_id"])] = label_value(row["is_fraud"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{data / 'labels.jsonl'} line {number}: {exc!s}") from None
    return labels


def recall_at(y: np.ndarray, scores: np.ndarray, fpr_limit: float) -> float:
    fpr, tpr, _ = roc_curve(y, scores)
    return float(tpr[fpr <= fpr_limit].max())


def metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": round(float(roc_auc_score(y, scores)), 4),
        "pr_auc": round(float(average_precision_score(y, scores)), 4),
        "recall_at_1pct_fpr": round(recall_at(y, scores, 0.01), 4),
        "recall_at_0.1pct_fpr": round(recall_at(y, scores, 0.001), 4),
    }


def fit(x: np.ndarray, y: np.ndarray, seed: int, max_iter: int) -> lgb.LGBMClassifier:
    model = lgb.LGBMClassifier(
        n_estimators=max_iter,
        random_state=seed,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
        **HYPERPARAMETERS,
    )
    return model.fit(x, y)


def evaluate(
    x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, columns: list[int], seed: int, max_iter: int
) -> tuple[lgb.LGBMClassifier, dict[str, float]]:
    """A model on the given feature columns of the training rows, scored on the test rows."""
    model = fit(x[train][:, columns], y[train], seed, max_iter)
    return model, metrics(y[test], np.asarray(model.predict_proba(x[test][:, columns]))[:, 1])


def columns_of(table_names: tuple[str, ...], names: tuple[str, ...]) -> list[int]:
    return [table_names.index(name) for name in names]


ADDITIONS = features_module.HOLDER_NAMES + velocity.CARD_NAMES  # what fs-v3 adds to fs-v2


def ablation(x, y, train, test, table_names, seed, max_iter, known: dict[str, dict]) -> list[dict[str, Any]]:
    """fs-v2, fs-v2 with each of fs-v3's additions, fs-v3 without each, fs-v3: held-out metrics.
    `known`: the held-out metrics of the feature sets already trained on this split (not again)."""
    base = feature_sets.names(feature_sets.WITH_VELOCITY)
    full = feature_sets.names(feature_sets.WITH_HOLDER)
    variants = [(feature_sets.WITH_VELOCITY, base)]
    variants += [(f"{feature_sets.WITH_VELOCITY} + {name}", (*base, name)) for name in ADDITIONS]
    variants += [(f"{feature_sets.WITH_HOLDER} - {name}", tuple(n for n in full if n != name)) for name in ADDITIONS]
    variants.append((feature_sets.WITH_HOLDER, full))
    rows = []
    for label, names in variants:
        scores = known.get(label) or evaluate(x, y, train, test, columns_of(table_names, names), seed, max_iter)[1]
        rows.append({"features": label, **scores})
        print(f"ablation: {label}: {scores}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--feature-set", choices=tuple(feature_sets.FEATURE_SETS), default=feature_sets.DEFAULT)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-iter", type=int, default=150)
    parser.add_argument("--holdout", type=float, default=0.2, help="share of the history held out, by event time")
    parser.add_argument(
        "--served",
        type=pathlib.Path,
        help="train on the features a job served: its output folder, written with --include_features true "
        "(labels still from DIR/labels.jsonl)",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also measure each of fs-v3's additions on the held-out split: fs-v2 with it, fs-v3 without it",
    )
    args = parser.parse_args(argv)

    # The widest set the source gives: every other set's columns are picked from it by name.
    try:
        if args.served:
            served, table = served_table(args.served)
        else:
            served, table = feature_sets.WIDEST, feature_table(args.data)
    except ValueError as exc:
        parser.error(str(exc))
    table_names = feature_sets.names(served)
    if not set(feature_sets.names(args.feature_set)) <= set(table_names):
        parser.error(f"--served gives the features of {served}, not those of --feature-set {args.feature_set}")
    try:
        labels = read_labels(args.data)
    except ValueError as exc:
        parser.error(str(exc))
    if not table.ids:
        parser.error(f"{args.data}: no transaction passed the job's validation (run the job on it to see why)")
    known = np.asarray([txn_id in labels for txn_id in table.ids], dtype=bool)
    x, seconds = table.values[known], table.seconds[known]
    y = np.asarray([labels[txn_id] for txn_id, k in zip(table.ids, known, strict=True) if k], dtype=np.int64)
    if len(y) == 0 or y.min() == y.max():
        parser.error(f"{args.data}: need labelled transactions of both classes, found {len(y)} rows")

    cutoff = int(np.quantile(seconds, 1 - args.holdout))
    by_time = (np.flatnonzero(seconds < cutoff), np.flatnonzero(seconds >= cutoff))
    by_chance = train_test_split(np.arange(len(y)), test_size=args.holdout, random_state=args.seed, stratify=y)
    chosen = columns_of(table_names, feature_sets.names(args.feature_set))
    comparison: dict[str, Any] = {}
    shipped = None
    for split, (train, test) in (("by_time", by_time), ("random", by_chance)):
        for name, names in feature_sets.FEATURE_SETS.items():
            if not set(names) <= set(table_names):
                continue
            model, scores = evaluate(x, y, train, test, columns_of(table_names, names), args.seed, args.max_iter)
            comparison.setdefault(split, {})[name] = scores
            if split == "by_time" and name == args.feature_set:
                shipped = model
    assert shipped is not None
    ablated = None
    if args.ablation:
        if served != feature_sets.WITH_HOLDER:
            parser.error(f"--ablation needs the features of {feature_sets.WITH_HOLDER}; --served gives {served}")
        known = comparison["by_time"]
        ablated = ablation(x, y, by_time[0], by_time[1], table_names, args.seed, args.max_iter, known)
    x_train, x_test = x[by_time[0]][:, chosen], x[by_time[1]][:, chosen]
    card = export(args, shipped, x_train, x_test, comparison, y, by_time, ablated)
    print(json.dumps({"model_version": card["model_version"], **card["held_out"], "out": str(args.out)}))
    return 0


def generator_of(data: pathlib.Path) -> tuple[dict | None, Any]:
    """(tools.generate's description of the folder, or None; the folder's generator.json as it is).

    A folder written by another source may hold a generator.json of its own shape: it is kept in
    the model card for the record and never read for anything."""
    path = data / "generator.json"
    if not path.exists():
        return None, None
    try:
        found = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError):
        return None, path.read_bytes()[:2000].decode("utf-8", "replace")
    ours = isinstance(found, dict) and isinstance(found.get("generator_version"), int) and "seed" in found
    return (found if ours else None), found


def export(
    args, model, x_train: np.ndarray, x_test: np.ndarray, comparison: dict, y: np.ndarray, by_time, ablated=None
) -> dict:
    names = feature_sets.names(args.feature_set)
    onnx_model = to_onnx(
        model, x_train[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3}
    )
    # the converter lists the opsets from a set: in a fixed order, the same model is the same bytes
    opsets = sorted((o.domain, o.version) for o in onnx_model.opset_import)
    del onnx_model.opset_import[:]
    onnx_model.opset_import.extend(make_opsetid(domain, version) for domain, version in opsets)
    onnx_bytes = onnx_model.SerializeToString()
    trees = model.booster_.model_to_string().encode()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    onnx_scores = session.run(["probabilities"], {session.get_inputs()[0].name: x_test})[0][:, 1]
    max_diff = float(np.max(np.abs(onnx_scores - model.predict_proba(x_test)[:, 1])))
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    version = f"fraud-gbm-{args.feature_set}-{digest[:10]}"
    generator, folder_metadata = generator_of(args.data)
    train_rows, test_rows = by_time
    card = {
        "model_version": version,
        "model_type": MODEL_TYPE,
        "format": "onnx",
        "sha256": digest,
        "contributions": {
            "file": "model.txt",
            "format": "lightgbm",
            "sha256": hashlib.sha256(trees).hexdigest(),
            "method": "TreeSHAP (LightGBM pred_contrib): contributions plus the base value add up to the raw score",
        },
        "feature_set_version": args.feature_set,
        "features": list(names),
        "inputs": {session.get_inputs()[0].name: f"float32[batch, {len(names)}]"},
        "outputs": {"probabilities": "float32[batch, 2]; column 1 is P(fraud)"},
        "seed": args.seed,
        "hyperparameters": {"n_estimators": args.max_iter, **HYPERPARAMETERS},
        "training_data": {
            "folder": args.data.name,
            "generator": generator,
            **({"folder_metadata": folder_metadata} if folder_metadata is not None and generator is None else {}),
            "records_used": len(y),
            "fraud_rate": round(float(y.mean()), 5),
            "train_records": len(train_rows),
            "held_out_records": len(test_rows),
            "held_out": f"the latest {args.holdout:.0%} of the history by event time",
        },
        "held_out": metrics(y[test_rows], onnx_scores),
        # the bins the job's drift report compares its traffic with (pipeline.shared.drift)
        "drift_reference": drift.card_reference(
            onnx_scores, x_test, names, f"the held-out period ({args.holdout:.0%} latest), scored out of sample"
        ),
        "comparison": comparison,
        **({"ablation": ablated} if ablated is not None else {}),
        "onnx_vs_lightgbm_max_abs_diff": max_diff,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.onnx").write_bytes(onnx_bytes)
    (args.out / "model.txt").write_bytes(trees)
    (args.out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(model_card_text(card, args))
    return card


def model_card_text(card: dict, args) -> str:
    data = card["training_data"]
    source = (
        f"synthetic data from `python -m tools.generate` (generator version {data['generator']['generator_version']}, "
        f"seed {data['generator']['seed']})"
        if data["generator"]
        else f"the labelled history in `{data['folder']}`"
    )
    rows = []
    kinds = {feature_sets.STATELESS: "stateless", feature_sets.WITH_VELOCITY: "with velocity"}
    for split, label in (("by_time", "held out by time"), ("random", "random split")):
        for name, scores in card["comparison"][split].items():
            kind = kinds.get(name, "with holder and card summary")
            rows.append(
                f"| {label} | {name} ({kind}) | {scores['roc_auc']} | {scores['pr_auc']} | "
                f"{scores['recall_at_1pct_fpr']} | {scores['recall_at_0.1pct_fpr']} |"
            )
    ablation_text = ""
    if card.get("ablation"):
        ablation_text = (
            "Ablation, held out by time (each of fs-v3's additions to fs-v2, and fs-v3 without each):\n\n"
            + ablation_table(card["ablation"])
            + "\n\n"
        )
    return (
        f"# {card['model_version']}\n\n"
        f"Gradient-boosted trees ({card['model_type']}, {args.max_iter} trees), exported to ONNX "
        "(model.onnx, which scores); the same trees in LightGBM's format (model.txt) give each REVIEW and "
        "DECLINE its reasons (TreeSHAP contributions to the raw score). "
        f"Input: the {len(card['features'])} features of feature set "
        f"`{card['feature_set_version']}` in this order: {', '.join(card['features'])}. "
        f"Output: `probabilities[:, 1]` = P(fraud).\n\n"
        f"Trained on {source}: {data['records_used']:,} labelled records, fraud rate {data['fraud_rate']:.2%}, "
        f"seed {args.seed}. Trained on the earliest {data['train_records']:,} records by event time and "
        f"evaluated on {data['held_out']} ({data['held_out_records']:,} records); the velocity features of the "
        "training records see only earlier transactions, so nothing of the held-out period.\n\n"
        "| evaluation | feature set | ROC-AUC | PR-AUC | recall at 1% FPR | recall at 0.1% FPR |\n"
        "|---|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        + ablation_text
        + f"ONNX and LightGBM probabilities agree within {card['onnx_vs_lightgbm_max_abs_diff']:.1e}.\n\n"
        "Limits: "
        + (
            "the data is synthetic and the model knows only the generator's fraud patterns; re-train on "
            "real labels (`python -m tools.train --data YOUR_FOLDER`) before relying on the scores.\n"
            if data["generator"]
            else "the model knows only the patterns of its training history.\n"
        )
    )


def ablation_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| features | ROC-AUC | PR-AUC | recall at 1% FPR | recall at 0.1% FPR |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['features']} | {r['roc_auc']} | {r['pr_auc']} | {r['recall_at_1pct_fpr']} "
        f"| {r['recall_at_0.1pct_fpr']} |"
        for r in rows
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
