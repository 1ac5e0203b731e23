"""The per-leaf tables give LightGBM's own TreeSHAP contributions (pipeline.shared.tree_shap)."""

import logging

import lightgbm
import numpy as np
import pytest

from pipeline.shared import tree_shap
from pipeline.shared.explain import Explainer
from pipeline.shared.tree_shap import PathTables, split_probe
from tests.conftest import ROOT

SHIPPED = sorted((ROOT / "models").glob("*/model.txt"))


def lightgbm_contributions(booster: lightgbm.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(x, pred_contrib=True, num_threads=1))


def realistic(booster: lightgbm.Booster, rows: int, seed: int) -> np.ndarray:
    """Records drawn around the model's own thresholds, as split_probe, with another seed."""
    return split_probe(booster.dump_model(), booster.num_feature(), rows=rows, seed=seed)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("rows", [1, 5, 8, 300])  # record by record below BATCH_FROM, leaf by leaf from it
def test_the_tables_give_lightgbms_contributions_for_every_shipped_model(path, rows):
    assert SHIPPED, "the project ships models with their trees"
    booster = lightgbm.Booster(model_file=str(path))
    tables = PathTables.build(booster.dump_model())
    assert tables is not None
    x = realistic(booster, rows, seed=rows + 11)
    got = tables.contributions(x)
    expected = lightgbm_contributions(booster, x)
    assert got.shape == expected.shape == (rows, booster.num_feature() + 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    # and they add up to the raw score, as LightGBM's do
    np.testing.assert_allclose(got.sum(axis=1), booster.predict(x, raw_score=True), rtol=0, atol=1e-9)


def trained(missing: str, categorical: bool = False) -> lightgbm.Booster:
    """A small model on data with zeros and NaNs, trained with the given missing-value handling."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 6))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.1] = 0.0
    x[:, 5] = rng.integers(0, 6, 3000)
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * (x[:, 5] > 2) + rng.normal(size=3000) * 0.3) > 0.5
    params = {
        "objective": "binary", "num_leaves": 15, "verbose": -1, "min_data_in_leaf": 5,
        "use_missing": missing != "none", "zero_as_missing": missing == "zero",
    }  # fmt: skip
    data = lightgbm.Dataset(x, y.astype(int), categorical_feature=[5] if categorical else "auto")
    return lightgbm.train(params, data, num_boost_round=20)


@pytest.mark.parametrize("missing", ["none", "zero", "nan"])
def test_the_missing_value_rules_are_lightgbms(missing):
    booster = trained(missing)
    kinds = {node["missing_type"] for node in _splits(booster.dump_model())}
    assert {"none": "None", "zero": "Zero", "nan": "NaN"}[missing] in kinds  # the rule under test is in the trees
    tables = PathTables.build(booster.dump_model())
    assert tables is not None
    rng = np.random.default_rng(9)
    x = rng.normal(size=(200, 6))
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(x.shape) < 0.15] = 0.0
    x[:, 5] = rng.integers(0, 6, 200)
    for rows in (x[:3], x):
        np.testing.assert_allclose(
            tables.contributions(rows), lightgbm_contributions(booster, rows), rtol=0, atol=1e-10
        )


def _splits(model):
    stack = [tree["tree_structure"] for tree in model["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            yield node
            stack += [node["left_child"], node["right_child"]]


def test_a_model_with_a_categorical_split_is_explained_by_lightgbm(caplog):
    booster = trained("nan", categorical=True)
    assert any(node["decision_type"] == "==" for node in _splits(booster.dump_model()))
    assert PathTables.build(booster.dump_model()) is None
    with caplog.at_level(logging.INFO):
        explainer = Explainer(booster.model_to_string())
    assert explainer.tables is None and "LightGBM explains it" in caplog.text
    x = np.random.default_rng(1).normal(size=(10, 6)).astype(np.float32)
    x[:, 5] = 3
    expected = lightgbm_contributions(booster, x.astype(np.float64))
    np.testing.assert_allclose(explainer.contributions(x), expected, rtol=0, atol=1e-12)


def test_tables_that_differ_from_lightgbm_are_not_used(monkeypatch, caplog):
    text = SHIPPED[0].read_text()
    built = PathTables.build

    def off_by_a_little(model):
        tables = built(model)
        return tables._replace(table=tables.table * (1 + 1e-6))

    monkeypatch.setattr(tree_shap.PathTables, "build", staticmethod(off_by_a_little))
    with caplog.at_level(logging.WARNING):
        explainer = Explainer(text)
    assert explainer.tables is None and "differ from LightGBM" in caplog.text
    booster = lightgbm.Booster(model_str=text)
    x = realistic(booster, 4, seed=3)
    np.testing.assert_allclose(explainer.contributions(x), lightgbm_contributions(booster, x), rtol=0, atol=1e-12)


def test_the_shipped_model_is_explained_from_its_tables():
    assert Explainer(SHIPPED[0].read_text()).tables is not None


def test_a_process_builds_a_models_explainer_once():
    from pipeline.shared.explain import explainer_of

    text = SHIPPED[0].read_text()
    assert explainer_of(text) is explainer_of(text)
    assert explainer_of(SHIPPED[1].read_text()) is not explainer_of(text)
