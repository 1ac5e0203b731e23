"""40_features: the stateless features, their order and version, the velocity features appended
for fs-v2, and FEATURE_ERROR."""

import datetime as dt
import math
from zoneinfo import ZoneInfo

import pytest

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction, ProfileKind
from contracts.riskpipe.v1.transaction_pb2 import Channel
from pipeline.shared import feature_sets, features, velocity
from pipeline.shared.dead_letter import feature_error
from pipeline.stages import s40_features as stage
from tests.helpers import customer, merchant, transaction


def named(values):
    return dict(zip(features.FEATURE_NAMES, values, strict=True))


def test_features_of_a_domestic_purchase():
    # 13:22:05 UTC on 2026-11-03 is 14:22 in Paris (CET).
    txn = transaction(minor=5000, currency="EUR", channel=Channel.CHANNEL_ECOMMERCE, mcc="5732")
    f = named(features.compute(txn, customer(usual_minor=2500), merchant(risk=0.3), False, False))
    assert f["amount_eur_log"] == pytest.approx(math.log1p(50.0))
    assert f["amount_to_usual"] == pytest.approx(2.0)
    assert f["local_hour"] == 14
    assert f["is_foreign"] == 0
    assert f["home_distance_km"] == pytest.approx(392, abs=3)  # Paris to Lyon
    assert f["merchant_risk"] == pytest.approx(0.3)
    assert f["channel"] == Channel.CHANNEL_ECOMMERCE
    assert f["mcc_group"] == 16  # electronics
    assert f["account_age_days"] == 400
    assert f["customer_profile_missing"] == 0 and f["merchant_profile_missing"] == 0


def test_currencies_are_compared_in_euros_with_their_minor_units():
    # 1,000 JPY (no minor unit) against a usual 25.00 EUR.
    txn = transaction(minor=1000, currency="JPY", country="JP")
    f = named(features.compute(txn, customer(usual_minor=2500), merchant(timezone="Asia/Tokyo"), False, False))
    assert f["amount_eur_log"] == pytest.approx(math.log1p(1000 * 0.0061))
    assert f["amount_to_usual"] == pytest.approx(1000 * 0.0061 / 25.0)
    assert f["is_foreign"] == 1
    assert f["local_hour"] == 22  # 13:22 UTC in Tokyo
    kwd = named(features.compute(transaction(minor=1500, currency="KWD"), customer(), merchant(), False, False))
    assert kwd["amount_eur_log"] == pytest.approx(math.log1p(1.5 * 3.0))  # three decimals


def test_missing_profiles_give_missing_values_and_flags():
    f = named(features.compute(transaction(), customer(), merchant(), True, True))
    assert f["amount_to_usual"] == features.MISSING and f["is_foreign"] == features.MISSING
    assert f["home_distance_km"] == features.MISSING and f["merchant_risk"] == features.MISSING
    assert f["customer_profile_missing"] == 1 and f["merchant_profile_missing"] == 1
    assert f["local_hour"] == 13  # no time zone known: UTC


def test_currency_without_reference_rate_is_missing():
    f = named(features.compute(transaction(currency="ISK"), customer(), merchant(), False, False))
    assert f["amount_eur_log"] == features.MISSING and f["amount_to_usual"] == features.MISSING


def test_mcc_groups():
    assert [features.mcc_group(m) for m in ("6051", "7995", "5411", "3001", "0742", "abcd")] == [10, 11, 4, 1, 0, 0]


def test_stage_attaches_a_versioned_named_vector_without_touching_its_input(clock):
    enriched = EnrichedTransaction(transaction=transaction(), customer=customer(), merchant=merchant())
    before = enriched.SerializeToString()
    out = stage.FeatureComputer(clock, feature_sets.STATELESS)(enriched)
    assert enriched.SerializeToString() == before
    assert out.features.feature_set_version == feature_sets.STATELESS
    assert tuple(out.features.names) == features.FEATURE_NAMES
    assert len(out.features.values) == len(features.FEATURE_NAMES)
    assert stage.FeatureComputer(clock, feature_sets.STATELESS)(enriched) == out  # idempotent


def test_fs_v2_appends_the_records_velocity_features(clock):
    enriched = EnrichedTransaction(transaction=transaction(), customer=customer(), merchant=merchant())
    stateless = stage.FeatureComputer(clock, feature_sets.STATELESS)(enriched).features.values
    enriched.velocity.names.extend(velocity.ALL_NAMES)
    enriched.velocity.values.extend(float(i) for i in range(len(velocity.ALL_NAMES)))
    out = stage.FeatureComputer(clock, feature_sets.WITH_VELOCITY)(enriched)
    assert out.features.feature_set_version == feature_sets.WITH_VELOCITY
    assert tuple(out.features.names) == features.FEATURE_NAMES + velocity.VELOCITY_NAMES
    assert list(out.features.values) == list(stateless) + list(enriched.velocity.values)[: len(velocity.VELOCITY_NAMES)]


def test_non_finite_feature_is_a_feature_error(clock):
    broken = customer()
    broken.home_lat = float("nan")
    enriched = EnrichedTransaction(transaction=transaction(), customer=broken, merchant=merchant())
    letter = stage.FeatureComputer(clock, feature_sets.STATELESS)(enriched)
    assert isinstance(letter, DeadLetter)
    assert letter.error_code == ErrorCode.ERROR_CODE_FEATURE_ERROR
    assert [v.field_path for v in letter.violations] == ["features.home_distance_km"]
    assert letter.payload == transaction().origin.payload


def test_default_profile_flags_come_from_the_enriched_record(clock):
    enriched = EnrichedTransaction(
        transaction=transaction(),
        customer=customer(),
        merchant=merchant(),
        missing_profiles=[ProfileKind.PROFILE_KIND_MERCHANT],
    )
    f = named(stage.FeatureComputer(clock, feature_sets.STATELESS)(enriched).features.values)
    assert f["merchant_profile_missing"] == 1 and f["customer_profile_missing"] == 0


def test_local_hour_follows_daylight_saving():
    summer = int(dt.datetime(2026, 7, 1, 12, tzinfo=dt.UTC).timestamp())
    winter = int(dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC).timestamp())
    assert features.local_hour(summer, "Europe/Paris") == 14
    assert features.local_hour(winter, "Europe/Paris") == 13
    assert features.local_hour(winter, "Not/AZone") == 12


def test_fs_v3_adds_the_holder_features_and_the_card_summary(clock):
    holder = customer()
    holder.birth_date = "1990-06-15"
    holder.timezone = "America/New_York"
    txn = transaction()
    txn.mcc = "5947"
    enriched = EnrichedTransaction(transaction=txn, customer=holder, merchant=merchant())
    enriched.velocity.names.extend(velocity.ALL_NAMES)
    enriched.velocity.values.extend(float(i) for i in range(len(velocity.ALL_NAMES)))
    fs_v2 = stage.FeatureComputer(clock, feature_sets.WITH_VELOCITY)(enriched).features
    out = stage.FeatureComputer(clock, feature_sets.WITH_HOLDER)(enriched).features
    assert tuple(out.names) == feature_sets.names(feature_sets.WITH_HOLDER)
    assert list(out.values)[: len(fs_v2.values)] == list(fs_v2.values)  # fs-v2 is its prefix
    extra = dict(zip(out.names[len(fs_v2.values) :], out.values[len(fs_v2.values) :], strict=True))
    when = dt.datetime.fromtimestamp(txn.event_time.seconds, dt.UTC)
    age = when.year - 1990 - ((when.month, when.day) < (6, 15))
    assert extra == {
        "holder_age_years": age,
        "holder_local_hour": when.astimezone(ZoneInfo("America/New_York")).hour,
        "mcc_code": 5947.0,
        "v_amount_log_z": float(len(velocity.VELOCITY_NAMES)),
        "v_days_since_first": float(len(velocity.VELOCITY_NAMES) + 1),
    }


def test_holder_age_counts_birthdays_and_is_missing_when_unknown():
    day = int(dt.datetime(2026, 3, 14, 12, tzinfo=dt.UTC).timestamp())
    assert features.age_years("1961-03-14", day) == 65  # the birthday itself
    assert features.age_years("1961-03-15", day) == 64
    assert features.age_years("2000-02-29", day) == 26
    for unknown in ("", "1961-13-01", "14/03/1961", "2027-01-01"):
        assert features.age_years(unknown, day) == features.MISSING
    missing = features.holder(transaction(), customer(), customer_missing=True)
    assert missing[:2] == [features.MISSING, features.MISSING]


def test_feature_error_names_each_non_finite_value_and_passes_finite_values_whose_sum_overflows(clock):
    names = ["a", "b", "c", "d"]
    txn = transaction()
    assert feature_error("40_features", "features", names, [1.0, -2.0, 0.0, 3.5], txn, clock.timestamp) is None
    # finite values whose sum is infinite: each is checked, none refused
    assert feature_error("40_features", "features", names, [1e308, 1e308, -0.0, 1.0], txn, clock.timestamp) is None
    letter = feature_error("40_features", "features", names, [math.inf, 1.0, math.nan, -math.inf], txn, clock.timestamp)
    assert [v.field_path for v in letter.violations] == ["features.a", "features.c", "features.d"]
    assert letter.failed_at == clock.timestamp()
    with pytest.raises(ValueError):
        feature_error("40_features", "features", names, [1.0], txn, clock.timestamp)
