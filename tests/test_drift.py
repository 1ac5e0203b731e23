"""Drift: the population stability index of the score and the features against the model card's reference."""

import json
import math
import shutil

import numpy as np
import pytest

from pipeline import runner
from pipeline import summary as run_summary
from pipeline.shared import drift, feature_sets
from tests.conftest import MODEL
from tests.helpers import job_config


def test_reference_bins_are_the_deciles_and_their_shares():
    ref = drift.reference(np.arange(1000, dtype=np.float64))
    assert ref["edges"] == [100.0 * k - 1 for k in range(1, 10)]
    assert ref["proportions"] == [0.1] * 10
    binary = drift.reference(np.asarray([0.0] * 700 + [1.0] * 300))
    assert binary["edges"] == [0.0, 1.0] and binary["proportions"] == [0.7, 0.3, 0.0]


def test_psi_of_a_known_shifted_sample():
    ref = drift.reference(np.arange(1000, dtype=np.float64))
    assert drift.psi(ref["proportions"], drift.bin_counts(np.arange(1000.0), ref["edges"])) == 0.0
    shifted = drift.bin_counts(np.arange(100, 1100, dtype=np.float64), ref["edges"])  # 100 more, all
    assert list(shifted) == [0] + [100] * 8 + [200]
    # the empty first bin is floored at 0.0001; the last holds twice its share
    expected = (0.0001 - 0.1) * math.log(0.0001 / 0.1) + (0.2 - 0.1) * math.log(0.2 / 0.1)
    assert drift.psi(ref["proportions"], shifted) == pytest.approx(expected, abs=1e-6)
    assert drift.psi(ref["proportions"], [0] * 10) is None


def test_summary_flags_what_is_above_the_threshold():
    ref = drift.reference(np.arange(1000, dtype=np.float64))
    reference = {"score": ref, "features": {"a": ref, "b": ref}}
    same = list(drift.bin_counts(np.arange(1000.0), ref["edges"]))
    moved = list(drift.bin_counts(np.arange(300, 1300, dtype=np.float64), ref["edges"]))
    report = drift.summarize(reference, {"score": same, "a": same, "b": moved}, 0.2)
    assert report["score_psi"] == 0.0 and report["feature_psi"]["a"] == 0.0 and report["feature_psi"]["b"] > 1
    assert report["flagged"] == ["b"] and report["records"] == 1000


def shifted_dataset(dataset, folder, factor):
    """The dataset with every valid line's amount multiplied by `factor`."""
    shutil.copytree(dataset, folder)
    lines = []
    for line in (dataset / "transactions.jsonl").read_bytes().splitlines():
        try:
            row = json.loads(line)
            row["amount"]["minor_units"] = int(row["amount"]["minor_units"]) * factor
            line = json.dumps(row).encode()
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            pass  # the deliberately broken lines stay as they are
        lines.append(line)
    (folder / "transactions.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def run(dataset, out):
    assert runner.main(["--config", job_config(dataset, out), "--runner=FnApiRunner"]) in (0, 1)
    return json.loads((out / "summary.json").read_text())


def test_a_run_reports_drift_against_the_shipped_models_reference(dataset, tmp_path, caplog):
    card = json.loads((MODEL.parent / "model_card.json").read_text())
    assert set(card["drift_reference"]["features"]) == set(feature_sets.names(feature_sets.DEFAULT))
    summary = run(dataset, tmp_path / "out")
    report = summary["drift"]
    assert report["records"] == summary["scored"] and report["threshold"] == 0.2
    assert set(report["feature_psi"]) == set(feature_sets.names(feature_sets.DEFAULT))
    assert all(v is not None and v >= 0 for v in report["feature_psi"].values()) and report["score_psi"] >= 0
    assert "amount_eur_log" not in report["flagged"]

    moved = run(shifted_dataset(dataset, tmp_path / "moved", 40), tmp_path / "moved-out")["drift"]
    assert "amount_eur_log" in moved["flagged"] and moved["feature_psi"]["amount_eur_log"] > 1
    assert moved["feature_psi"]["amount_eur_log"] > 10 * report["feature_psi"]["amount_eur_log"]
    # a feature that does not depend on the amount stays where it was (a few huge amounts are refused)
    assert abs(moved["feature_psi"]["local_hour"] - report["feature_psi"]["local_hour"]) < 0.01
    assert "drift: amount_eur_log has a population stability index" in caplog.text
    printed = [line for line in run_summary.format_summary({**summary, "drift": moved}).splitlines()]
    assert any(line.startswith("drift") and "amount_eur_log" in line for line in printed)


def test_since_gives_the_records_counted_between_two_readings():
    before = {"score": [5, 3], "a": [1]}
    now = {"score": [7, 3, 2], "a": [4, 1], "b": [2]}
    assert drift.since(before, now) == {"score": [2, 0, 2], "a": [3, 1], "b": [2]}
    assert drift.since({}, now) == {k: list(v) for k, v in now.items()}


def test_a_live_reading_with_counters_not_yet_committed_still_summarizes():
    # While a streaming job runs, a counter that bundles have reported but none has committed yet
    # comes with committed=None; the periodic summary must read it as 0, not fail on it.
    from apache_beam.metrics.execution import MetricKey, MetricResult
    from apache_beam.metrics.metricbase import MetricName

    from pipeline.shared import metrics

    def result(name, committed, attempted):
        return MetricResult(MetricKey("50_predict", MetricName(metrics.NAMESPACE, name)), committed, attempted)

    ref = drift.reference(np.arange(1000, dtype=np.float64))
    found = {
        "counters": [
            result(metrics.DRIFT_PREFIX + "score.0", 5, 7),
            result(metrics.DRIFT_PREFIX + "score.3", None, 2),
            result(metrics.DRIFT_PREFIX + "a.1", None, 4),
        ],
        "distributions": [result("query_ms", None, None)],
    }
    counters, distributions = run_summary.committed(found)
    assert counters == {metrics.DRIFT_PREFIX + "score.0": 5, metrics.DRIFT_PREFIX + "score.3": 0,
                        metrics.DRIFT_PREFIX + "a.1": 0}  # fmt: skip
    assert distributions == {}
    counts = run_summary.summarize_counters(counters, distributions)["drift_counts"]
    assert counts == {"score": [5, 0, 0, 0], "a": [0, 0]}
    report = drift.summarize({"score": ref, "features": {"a": ref}}, counts, 0.2)
    assert report["records"] == 5 and report["feature_psi"] == {"a": None}
