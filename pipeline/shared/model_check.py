"""The checks a model passes before the job reads a record: the model that scores is the one named.

- Its model card (model_card.json beside it), when there is one, must be a JSON object naming a
  feature set the job computes (with exactly its feature names) and the sha256 of the model file;
  a file that does not match is refused, so the version stamped on a score is the version of the
  model that produced it.
- The model must load, take one float tensor of its feature set's width (a model without a card:
  the default set's), have a `probabilities` output, and, run once on a probe batch of real feature
  vectors (the job's own feature code over a set of representative transactions), give one
  probability in [0, 1] per row.
- When the card names the same trees in LightGBM's format (`contributions`, for the reasons of each
  decision), that file must have the card's sha256, load, and on the probe batch give contributions
  that add up to the raw score of the ONNX model's probabilities.

Every failure is a ConfigError naming the setting that gave the model (predict.model, or
predict.shadow_model): the job stops with exit 2 before reading.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import onnxruntime as ort
from apache_beam.io.filesystems import FileSystems

from contracts.riskpipe.v1.enriched_transaction_pb2 import (
    CustomerProfile,
    EnrichedTransaction,
    MerchantProfile,
    ProfileKind,
)
from contracts.riskpipe.v1.transaction_pb2 import Channel, Money, Transaction
from pipeline.shared import feature_sets, velocity
from pipeline.shared.errors import ConfigError
from pipeline.shared.explain import explainer_of, loads_in_a_child, raw_score, read_text, tree_file
from pipeline.shared.model_card import card_path, file_digest, read_card_bytes

PROBABILITIES = "probabilities"
MODEL_KEY = "predict.model"  # the setting a failure names, unless told another
# ONNX evaluates the trees in float32 with float32 thresholds, LightGBM in float64: their raw scores
# agree to about 1e-5 here; a contributions file of other trees is off by far more.
RAW_SCORE_TOLERANCE = 1e-3
_NOV_2026 = 1793750400  # 2026-11-04T00:00:00Z


def probe_vectors(feature_set: str = feature_sets.DEFAULT) -> np.ndarray:
    """Feature vectors of representative transactions, computed by the job's own feature code:
    domestic and foreign, every channel, tiny and huge amounts, night and day, zero-decimal and
    three-decimal currencies, missing customer and merchant profiles; for fs-v2 and fs-v3 with the
    velocity features of each card's probe history, taken in event-time order."""
    home = CustomerProfile(
        card_id="probe-card",
        home_country="FR",
        home_lat=48.85,
        home_lon=2.35,
        usual_amount=Money(minor_units=3500, currency="EUR"),
        timezone="Europe/Paris",
        account_age_days=900,
        birth_date="1961-03-14",
    )
    young = CustomerProfile(
        card_id="probe-young",
        home_country="US",
        home_lat=40.7,
        home_lon=-74.0,
        usual_amount=Money(minor_units=2000, currency="USD"),
        timezone="America/New_York",
        account_age_days=3,
        birth_date="2004-11-30",
    )
    shop = MerchantProfile(
        merchant_id="probe-shop",
        mcc="5411",
        country="FR",
        lat=45.76,
        lon=4.83,
        risk_score=0.01,
        timezone="Europe/Paris",
    )
    risky = MerchantProfile(
        merchant_id="probe-risky",
        mcc="6051",
        country="TH",
        lat=13.7,
        lon=100.5,
        risk_score=0.6,
        timezone="Asia/Bangkok",
    )
    cases = [
        (1999, "EUR", Channel.CHANNEL_POS, "5411", "FR", home, shop, False, False, 14 * 3600),
        (5, "EUR", Channel.CHANNEL_ECOMMERCE, "5816", "FR", home, shop, False, False, 3 * 3600),
        (250000, "THB", Channel.CHANNEL_ATM, "6011", "TH", home, risky, False, False, 2 * 3600),
        (99999999999, "EUR", Channel.CHANNEL_ECOMMERCE, "5732", "FR", young, risky, False, False, 20 * 3600),
        (1500, "JPY", Channel.CHANNEL_CONTACTLESS, "5812", "JP", young, shop, False, False, 9 * 3600),
        (12500, "KWD", Channel.CHANNEL_MOTO, "4829", "KW", home, risky, False, False, 23 * 3600),
        (4200, "USD", Channel.CHANNEL_ECOMMERCE, "5944", "US", young, shop, True, False, 12 * 3600),
        (4200, "EUR", Channel.CHANNEL_POS, "5999", "DE", home, risky, False, True, 7 * 3600),
        (100, "EUR", Channel.CHANNEL_ATM, "6011", "FR", home, shop, True, True, 0),
        (7, "XTS", Channel.CHANNEL_POS, "0000", "ZZ", young, risky, False, False, 11 * 3600),
    ]
    rows = []
    histories: dict[str, velocity.CardHistory] = {}
    for minor, currency, channel, mcc, country, customer, merchant, no_customer, no_merchant, offset in sorted(
        cases, key=lambda case: case[-1]
    ):
        txn = Transaction(
            transaction_id="probe",
            card_id=customer.card_id,
            merchant_id=merchant.merchant_id,
            amount=Money(minor_units=minor, currency=currency),
            channel=channel,
            mcc=mcc,
            country=country,
        )
        txn.event_time.seconds = _NOV_2026 + offset
        values: list[float] = []
        if feature_sets.uses_velocity(feature_set):
            missing = [ProfileKind.PROFILE_KIND_MERCHANT] if no_merchant else []
            event = velocity.event_of(EnrichedTransaction(transaction=txn, merchant=merchant, missing_profiles=missing))
            values = histories.setdefault(txn.card_id, velocity.CardHistory()).take(event)
        rows.append(feature_sets.vector(feature_set, txn, customer, merchant, no_customer, no_merchant, values))
    return np.asarray(rows, dtype=np.float32)


def feature_set(card: dict[str, Any] | None) -> str:
    """The feature set a model was trained on: its card's, or the default for a model without one."""
    return feature_sets.DEFAULT if card is None else str(card.get("feature_set_version"))


def read_model_card(model_path: str, key: str = MODEL_KEY) -> dict[str, Any] | None:
    """The model's card as a dict; None when the model has none; ConfigError when it is unreadable."""
    data = read_card_bytes(model_path)
    if data is None:
        return None
    where = f"{key}: {card_path(model_path)}"
    try:
        card = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(card, dict):
        raise ConfigError(f"{where} must hold a JSON object, not {type(card).__name__}")
    return card


def check_card(model_path: str, card: dict[str, Any], key: str = MODEL_KEY) -> None:
    """The card names a feature set the job computes and the model file's exact bytes."""
    where = f"{key}: {model_path}"
    named = card.get("feature_set_version")
    if named not in feature_sets.FEATURE_SETS or tuple(card.get("features", ())) != feature_sets.names(named):
        raise ConfigError(
            f"{where} was trained on feature set {named!r} with features {card.get('features')!r}; "
            f"the job computes {', '.join(feature_sets.FEATURE_SETS)} (pipeline/shared/feature_sets.py)"
        )
    expected = card.get("sha256")
    if not isinstance(expected, str) or not expected:
        raise ConfigError(f"{where}: its model card has no sha256 of the model file")
    actual = file_digest(model_path)
    if actual != expected.lower():
        raise ConfigError(
            f"{where}: the file's sha256 is {actual}, its model card names {expected}: "
            "this is not the model the card describes"
        )


def probe_scores(session: ort.InferenceSession, batch: np.ndarray) -> list[float]:
    output = session.run([PROBABILITIES], {session.get_inputs()[0].name: batch})[0]
    probabilities = np.asarray(output)
    if probabilities.ndim != 2 or probabilities.shape != (len(batch), 2):
        raise ValueError(f"'probabilities' has shape {probabilities.shape}, expected ({len(batch)}, 2)")
    return [float(p) for p in probabilities[:, 1]]


def check_session(
    model_path: str, session: ort.InferenceSession, named_set: str = feature_sets.DEFAULT, key: str = MODEL_KEY
) -> None:
    """The model's signature, then one run on the probe batch (and on a batch of one)."""
    where = f"{key}: {model_path}"
    inputs, outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    width = inputs[0].shape[-1] if inputs and inputs[0].shape else None
    expected = len(feature_sets.names(named_set))
    if len(inputs) != 1 or (isinstance(width, int) and width != expected):
        raise ConfigError(
            f"{where} takes {[(i.name, i.shape) for i in inputs]}, "
            f"the job gives one float tensor of {expected} features ({named_set})"
        )
    if PROBABILITIES not in outputs:
        raise ConfigError(
            f"{where} has no 'probabilities' output (outputs: {', '.join(outputs)}); export classifiers without ZipMap"
        )
    probe = probe_vectors(named_set)
    try:
        scores = probe_scores(session, probe) + probe_scores(session, probe[:1])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ConfigError(f"{where} fails on a probe batch of {len(probe)} feature vectors: {exc}") from None
    bad = [s for s in scores if not (math.isfinite(s) and 0.0 <= s <= 1.0)]
    if bad:
        raise ConfigError(
            f"{where} gives scores that are not probabilities on the probe batch: {bad[:5]} (fail closed: not run)"
        )


def check_trees(
    model_path: str, card: dict[str, Any] | None, session: ort.InferenceSession, key: str = MODEL_KEY
) -> None:
    """The contributions file the card names: its bytes, and that it is the same model."""
    trees = tree_file(model_path, card)
    if trees is None:
        return
    where = f"{key}: {model_path}: its contributions file {trees.path}"
    if not FileSystems.exists(trees.path):
        raise ConfigError(f"{where} does not exist (the model card names it)")
    actual = file_digest(trees.path)
    if actual != trees.sha256:
        raise ConfigError(f"{where} has sha256 {actual}, the model card names {trees.sha256 or 'none'}")
    probe = probe_vectors(feature_set(card))
    text = read_text(trees.path)
    failure = loads_in_a_child(text)
    if failure is not None:
        raise ConfigError(f"{where} cannot be loaded: {failure}")
    try:
        trees_explainer = explainer_of(text)
    except Exception as exc:  # noqa: BLE001 - LightGBM raises its own error types
        raise ConfigError(f"{where} cannot be loaded: {exc}") from None
    if trees_explainer.width != probe.shape[1]:
        raise ConfigError(
            f"{where} is not the model that scores: its trees take {trees_explainer.width} features, "
            f"the model {probe.shape[1]}"
        )
    try:
        contributions = trees_explainer.contributions(probe)
    except Exception as exc:  # noqa: BLE001 - LightGBM raises its own error types
        raise ConfigError(f"{where} fails on the probe batch: {exc}") from None
    expected = [raw_score(p) for p in probe_scores(session, probe)]
    worst = max(abs(float(row.sum()) - raw) for row, raw in zip(contributions, expected, strict=True))
    if contributions.shape != (len(probe), probe.shape[1] + 1) or worst > RAW_SCORE_TOLERANCE:
        raise ConfigError(
            f"{where} is not the model that scores: on the probe batch its contributions add up to raw "
            f"scores up to {worst:.3g} away from the ONNX model's"
        )


def check_model(model_path: str, key: str = MODEL_KEY) -> dict[str, Any] | None:
    """All the checks; returns the model card (None when the model has none)."""
    card = read_model_card(model_path, key)
    if card is not None:
        check_card(model_path, card, key)
    try:
        # A remote model (gs://) is read through Beam's file systems, as the workers read it.
        source: str | bytes = model_path
        if "://" in model_path:
            with FileSystems.open(model_path) as f:
                source = f.read()
        session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ConfigError(f"{key}: {model_path} cannot be loaded: {exc}") from None
    check_session(model_path, session, feature_set(card), key)
    check_trees(model_path, card, session, key)
    return card
