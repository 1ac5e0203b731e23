"""Exact path-dependent TreeSHAP for a LightGBM model, from tables built once per model.

LightGBM's `pred_contrib` runs Lundberg's algorithm (TreeSHAP, Algorithm 2) for every record: per
leaf it extends and unwinds the path's weights, O(depth²) a leaf, about 0.8 ms a record for the
shipped models (150 trees of 31 leaves, 12 to 17 deep). The same numbers can be computed once.

For one leaf with value v whose path splits on the k distinct features P, each feature j has a
zero fraction z_j (the share of the training records that follow the path at every split on j:
the product of child count / parent count) and, for a record x, a one fraction o_j, 1 when x
follows the path at every split on j, else 0. The leaf adds to feature i's contribution

    v (o_i - z_i) Σ_{S ⊆ P∖{i}} |S|! (k - |S| - 1)! / k!  Π_{j∈S} o_j  Π_{j∈P∖{i}∖S} z_j

(the Shapley value of i in the game S -> v Π_{j∈S} o_j Π_{j∉S} z_j, which is what TreeSHAP
computes). The o_j are 0 or 1, so for a leaf everything but the pattern of which o_j are 1 is
fixed: the leaf's k contributions for each of its 2^k patterns are computed once, when the model is
loaded (vectorised over the leaves of the same k; 0.8 s and 22 MB for fs-v2's model, 39 MB for
fs-v3's). A record then costs one decision per split node, a pattern per leaf and k additions per
leaf: a compiled loop (numba) of about 60,000 steps, tens of µs instead of 0.8 ms.

The base value is Σ over leaves of v × leaf count / root count, as LightGBM gives it. Decisions
follow LightGBM's numerical split rules (missing types None, Zero and NaN, default_left); a model
with a categorical split, or whose tables would be too large, is left to LightGBM
(`PathTables.build` returns None). pipeline.shared.explain checks the tables against LightGBM's
own `pred_contrib` on probe records when it loads a model, and uses LightGBM when they differ.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import numba
import numpy as np

# Missing types as LightGBM's model dump names them, and as the kernel reads them.
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}
_ZERO_THRESHOLD = 1e-35  # LightGBM's kZeroThreshold
MAX_TABLE_VALUES = 50_000_000  # 400 MB of float64: beyond that, LightGBM's own algorithm
# Compiled code is cached beside this file (__pycache__) when the folder is writable, so that a job
# starts without compiling (about 1.4 s); elsewhere each process compiles on first use.
_CACHE = os.access(os.path.dirname(os.path.abspath(__file__)), os.W_OK)
BATCH_FROM = 8  # from this many records, leaf by leaf (_by_leaf); fewer, record by record (_by_record)


class PathTables(NamedTuple):
    """A model's split nodes, its leaves' paths and their contribution tables (see the module)."""

    width: int  # features
    base_value: float
    node_feature: np.ndarray  # int32 per split node
    node_threshold: np.ndarray  # float64
    node_missing: np.ndarray  # int8: _MISSING
    node_default_left: np.ndarray  # bool
    leaf_cond_start: np.ndarray  # int64, per leaf + 1: its conditions in cond_*
    cond_node: np.ndarray  # int32: the split node
    cond_left: np.ndarray  # bool: the path goes left there
    cond_bit: np.ndarray  # int64: 1 << the position of the condition's feature in the leaf's P
    leaf_k: np.ndarray  # int64
    leaf_offset: np.ndarray  # int64: the leaf's table in `table` (2^k rows of k values)
    leaf_feature_start: np.ndarray  # int64, per leaf + 1: its features in leaf_feature
    leaf_feature: np.ndarray  # int32
    table: np.ndarray  # float64

    @staticmethod
    def build(model: dict[str, Any]) -> PathTables | None:
        """Tables for a LightGBM model dump (`Booster.dump_model()`); None when the model has a split
        this module does not decide (categorical) or its tables would exceed MAX_TABLE_VALUES."""
        nodes: list[tuple[int, float, int, bool]] = []
        leaves: list[tuple[float, list[tuple[int, bool, int, float]]]] = []
        base = 0.0
        for tree in model["tree_info"]:
            root = tree["tree_structure"]
            if "leaf_index" in root or "split_index" not in root:
                base += float(root.get("leaf_value", 0.0))  # a tree of one leaf: a constant
                continue
            total = float(root["internal_count"])
            stack: list[tuple[dict[str, Any], list[tuple[int, bool, int, float]]]] = [(root, [])]
            while stack:
                node, path = stack.pop()
                if "leaf_index" in node:
                    value = float(node["leaf_value"])
                    base += value * float(node["leaf_count"]) / total
                    leaves.append((value, path))
                    continue
                if node.get("decision_type") != "<=" or node.get("missing_type") not in _MISSING:
                    return None
                index = len(nodes)
                feature = int(node["split_feature"])
                missing = _MISSING[node["missing_type"]]
                nodes.append((feature, float(node["threshold"]), missing, bool(node["default_left"])))
                count = float(node["internal_count"])
                for child, left in ((node["right_child"], False), (node["left_child"], True)):
                    child_count = float(child["internal_count"] if "internal_count" in child else child["leaf_count"])
                    stack.append((child, [*path, (index, left, feature, child_count / count if count else 0.0)]))
        return _tables(int(model["max_feature_idx"]) + 1, base, nodes, leaves)

    def contributions(self, vectors: np.ndarray) -> np.ndarray:
        """(rows, width + 1): each feature's contribution to the raw score, then the base value."""
        x = np.ascontiguousarray(vectors, dtype=np.float64)
        arrays = (
            self.node_feature, self.node_threshold, self.node_missing, self.node_default_left, self.leaf_cond_start,
            self.cond_node, self.cond_left, self.cond_bit, self.leaf_k, self.leaf_offset, self.leaf_feature_start,
            self.leaf_feature, self.table,
        )  # fmt: skip
        if len(x) < BATCH_FROM:
            out = np.zeros((len(x), self.width + 1))
            _by_record(x, *arrays, out)
        else:
            by_feature = np.zeros((self.width + 1, len(x)))
            _by_leaf(x, *arrays, by_feature)
            out = np.ascontiguousarray(by_feature.T)
        out[:, -1] = self.base_value
        return out


def split_probe(model: dict[str, Any], width: int, rows: int = 64, seed: int = 0) -> np.ndarray:
    """Records that take every side of the model's splits: each feature's value drawn from its split
    thresholds, just below or just above one, with some zeros and NaNs (the missing-value rules)."""
    thresholds: list[list[float]] = [[] for _ in range(width)]
    stack = [tree["tree_structure"] for tree in model["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            if isinstance(node.get("threshold"), (int, float)):
                thresholds[int(node["split_feature"])].append(float(node["threshold"]))
            stack += [node["left_child"], node["right_child"]]
    rng = np.random.default_rng(seed)
    out = np.zeros((rows, width))
    for feature, values in enumerate(thresholds):
        points = np.array(values or [0.0])
        picked = rng.choice(points, rows) + rng.choice([-1e-6, 1e-6], rows) * np.maximum(1.0, np.abs(points).max())
        out[:, feature] = np.where(rng.random(rows) < 0.05, 0.0, picked)
        out[rng.random(rows) < 0.03, feature] = np.nan
    # As the job passes them: float32, then float64.
    return out.astype(np.float32).astype(np.float64)


def _tables(
    width: int,
    base: float,
    nodes: list[tuple[int, float, int, bool]],
    leaves: list[tuple[float, list[tuple[int, bool, int, float]]]],
) -> PathTables | None:
    """The tables of the leaves' paths; None when they would hold more than MAX_TABLE_VALUES."""
    cond_start, cond_node, cond_left, cond_bit = [0], [], [], []
    feature_start, leaf_feature, leaf_k, leaf_offset = [0], [], [], []
    by_k: dict[int, list[tuple[int, float, list[float]]]] = {}
    offset = 0
    for number, (value, path) in enumerate(leaves):
        features: list[int] = []
        zero: dict[int, float] = {}
        for _, _, feature, fraction in path:
            if feature not in zero:
                features.append(feature)
                zero[feature] = 1.0
            zero[feature] *= fraction
        for node, left, feature, _ in path:
            cond_node.append(node)
            cond_left.append(left)
            cond_bit.append(1 << features.index(feature))
        cond_start.append(len(cond_node))
        leaf_feature.extend(features)
        feature_start.append(len(leaf_feature))
        k = len(features)
        leaf_k.append(k)
        leaf_offset.append(offset)
        offset += (2**k) * k
        by_k.setdefault(k, []).append((number, value, [zero[f] for f in features]))
    if offset > MAX_TABLE_VALUES:
        return None
    table = np.zeros(offset)
    for k, items in by_k.items():
        if k == 0:
            continue
        values = _pattern_contributions(k, np.array([v for _, v, _ in items]), np.array([z for _, _, z in items]))
        for row, (number, _, _) in enumerate(items):
            start = leaf_offset[number]
            table[start : start + (2**k) * k] = values[row].ravel()
    return PathTables(
        width=width,
        base_value=base,
        node_feature=np.array([n[0] for n in nodes], dtype=np.int32),
        node_threshold=np.array([n[1] for n in nodes], dtype=np.float64),
        node_missing=np.array([n[2] for n in nodes], dtype=np.int8),
        node_default_left=np.array([n[3] for n in nodes], dtype=np.bool_),
        leaf_cond_start=np.array(cond_start, dtype=np.int64),
        cond_node=np.array(cond_node, dtype=np.int32),
        cond_left=np.array(cond_left, dtype=np.bool_),
        cond_bit=np.array(cond_bit, dtype=np.int64),
        leaf_k=np.array(leaf_k, dtype=np.int64),
        leaf_offset=np.array(leaf_offset, dtype=np.int64),
        leaf_feature_start=np.array(feature_start, dtype=np.int64),
        leaf_feature=np.array(leaf_feature, dtype=np.int32),
        table=table,
    )


def _pattern_contributions(k: int, values: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    """(leaves, 2^k, k): for leaves with k distinct path features (values (m,), zero fractions
    (m, k)), each feature's contribution under each pattern of one fractions (bit j: o_j = 1).

    With Q = O∖{i} (O: the features whose o is 1), the sum over S ⊆ P∖{i} keeps only S ⊆ Q, and
    Σ_{S⊆Q} w(|S|) Π_{Q∖S} z = Σ_t w(|Q| - t) e_t(z_Q), e_t the elementary symmetric polynomials
    (the coefficients of Π_{j∈Q} (1 + z_j x)); the features outside O contribute Π z_j."""
    m = len(values)
    patterns = ((np.arange(2**k)[:, None] >> np.arange(k)[None, :]) & 1).astype(bool)  # (2^k, k)
    weights = np.array([math.factorial(s) * math.factorial(k - 1 - s) / math.factorial(k) for s in range(k)])
    out = np.zeros((m, 2**k, k))
    degree = np.arange(k)
    for i in range(k):
        coefficients = np.zeros((m, 2**k, k))
        coefficients[:, :, 0] = 1.0
        outside = np.ones((m, 2**k))
        for j in range(k):
            if j == i:
                continue
            on = patterns[None, :, j]
            z = zeros[:, j][:, None]
            shifted = np.zeros_like(coefficients)
            shifted[:, :, 1:] = coefficients[:, :, :-1]
            coefficients = np.where(on[..., None], coefficients + z[..., None] * shifted, coefficients)
            outside = outside * np.where(on, 1.0, z)
        q = patterns.sum(axis=1) - patterns[:, i]
        w = np.where(degree[None, :] <= q[:, None], weights[np.clip(q[:, None] - degree[None, :], 0, k - 1)], 0.0)
        summed = (coefficients * w[None]).sum(axis=2)
        out[:, :, i] = values[:, None] * (patterns[None, :, i] - zeros[:, i][:, None]) * outside * summed
    return out


@numba.njit(nogil=True, cache=_CACHE)
def _go_left(value, threshold, missing, default_left):
    """LightGBM's numerical decision (tree.h, NumericalDecision)."""
    if np.isnan(value) and missing != 2:
        value = 0.0
    if (missing == 1 and -_ZERO_THRESHOLD <= value <= _ZERO_THRESHOLD) or (missing == 2 and np.isnan(value)):
        return default_left
    return value <= threshold


@numba.njit(nogil=True, cache=_CACHE)
def _by_record(
    x, node_feature, node_threshold, node_missing, node_default_left, leaf_cond_start, cond_node, cond_left,
    cond_bit, leaf_k, leaf_offset, leaf_feature_start, leaf_feature, table, out,
):  # fmt: skip
    """One record at a time: out (rows, width + 1)."""
    left = np.empty(len(node_feature), dtype=np.bool_)
    for row in range(x.shape[0]):
        for node in range(len(node_feature)):
            left[node] = _go_left(
                x[row, node_feature[node]], node_threshold[node], node_missing[node], node_default_left[node]
            )
        for leaf in range(len(leaf_k)):
            k = leaf_k[leaf]
            pattern = (1 << k) - 1
            for c in range(leaf_cond_start[leaf], leaf_cond_start[leaf + 1]):
                if left[cond_node[c]] != cond_left[c]:
                    pattern &= ~cond_bit[c]
            base = leaf_offset[leaf] + pattern * k
            first = leaf_feature_start[leaf]
            for j in range(k):
                out[row, leaf_feature[first + j]] += table[base + j]


@numba.njit(nogil=True, cache=_CACHE)
def _by_leaf(
    x, node_feature, node_threshold, node_missing, node_default_left, leaf_cond_start, cond_node, cond_left,
    cond_bit, leaf_k, leaf_offset, leaf_feature_start, leaf_feature, table, out,
):  # fmt: skip
    """All records leaf by leaf: a leaf's table and conditions stay in the cache while every record
    reads them (one record at a time, each leaf's table is a cache miss). out (width + 1, rows)."""
    n = x.shape[0]
    left = np.empty((len(node_feature), n), dtype=np.bool_)
    for node in range(len(node_feature)):
        feature = node_feature[node]
        for row in range(n):
            left[node, row] = _go_left(
                x[row, feature], node_threshold[node], node_missing[node], node_default_left[node]
            )
    patterns = np.empty(n, dtype=np.int64)
    for leaf in range(len(leaf_k)):
        k = leaf_k[leaf]
        full = (1 << k) - 1
        for row in range(n):
            patterns[row] = full
        for c in range(leaf_cond_start[leaf], leaf_cond_start[leaf + 1]):
            node = cond_node[c]
            want = cond_left[c]
            keep = ~cond_bit[c]
            for row in range(n):
                if left[node, row] != want:
                    patterns[row] &= keep
        offset = leaf_offset[leaf]
        first = leaf_feature_start[leaf]
        for row in range(n):
            base = offset + patterns[row] * k
            for j in range(k):
                out[leaf_feature[first + j], row] += table[base + j]
