from contracts.buf.validate import validate_pb2 as _validate_pb2
from contracts.riskpipe.v1 import transaction_pb2 as _transaction_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProfileKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROFILE_KIND_UNSPECIFIED: _ClassVar[ProfileKind]
    PROFILE_KIND_CUSTOMER: _ClassVar[ProfileKind]
    PROFILE_KIND_MERCHANT: _ClassVar[ProfileKind]
PROFILE_KIND_UNSPECIFIED: ProfileKind
PROFILE_KIND_CUSTOMER: ProfileKind
PROFILE_KIND_MERCHANT: ProfileKind

class CustomerProfile(_message.Message):
    __slots__ = ("card_id", "home_country", "home_lat", "home_lon", "usual_amount", "timezone", "account_age_days", "birth_date")
    CARD_ID_FIELD_NUMBER: _ClassVar[int]
    HOME_COUNTRY_FIELD_NUMBER: _ClassVar[int]
    HOME_LAT_FIELD_NUMBER: _ClassVar[int]
    HOME_LON_FIELD_NUMBER: _ClassVar[int]
    USUAL_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_AGE_DAYS_FIELD_NUMBER: _ClassVar[int]
    BIRTH_DATE_FIELD_NUMBER: _ClassVar[int]
    card_id: str
    home_country: str
    home_lat: float
    home_lon: float
    usual_amount: _transaction_pb2.Money
    timezone: str
    account_age_days: int
    birth_date: str
    def __init__(self, card_id: _Optional[str] = ..., home_country: _Optional[str] = ..., home_lat: _Optional[float] = ..., home_lon: _Optional[float] = ..., usual_amount: _Optional[_Union[_transaction_pb2.Money, _Mapping]] = ..., timezone: _Optional[str] = ..., account_age_days: _Optional[int] = ..., birth_date: _Optional[str] = ...) -> None: ...

class MerchantProfile(_message.Message):
    __slots__ = ("merchant_id", "name", "mcc", "country", "lat", "lon", "risk_score", "timezone")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MCC_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    LAT_FIELD_NUMBER: _ClassVar[int]
    LON_FIELD_NUMBER: _ClassVar[int]
    RISK_SCORE_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    name: str
    mcc: str
    country: str
    lat: float
    lon: float
    risk_score: float
    timezone: str
    def __init__(self, merchant_id: _Optional[str] = ..., name: _Optional[str] = ..., mcc: _Optional[str] = ..., country: _Optional[str] = ..., lat: _Optional[float] = ..., lon: _Optional[float] = ..., risk_score: _Optional[float] = ..., timezone: _Optional[str] = ...) -> None: ...

class FeatureVector(_message.Message):
    __slots__ = ("feature_set_version", "names", "values")
    FEATURE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    feature_set_version: str
    names: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, feature_set_version: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class EnrichedTransaction(_message.Message):
    __slots__ = ("transaction", "customer", "merchant", "missing_profiles", "features", "velocity")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_FIELD_NUMBER: _ClassVar[int]
    MISSING_PROFILES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_FIELD_NUMBER: _ClassVar[int]
    transaction: _transaction_pb2.Transaction
    customer: CustomerProfile
    merchant: MerchantProfile
    missing_profiles: _containers.RepeatedScalarFieldContainer[ProfileKind]
    features: FeatureVector
    velocity: FeatureVector
    def __init__(self, transaction: _Optional[_Union[_transaction_pb2.Transaction, _Mapping]] = ..., customer: _Optional[_Union[CustomerProfile, _Mapping]] = ..., merchant: _Optional[_Union[MerchantProfile, _Mapping]] = ..., missing_profiles: _Optional[_Iterable[_Union[ProfileKind, str]]] = ..., features: _Optional[_Union[FeatureVector, _Mapping]] = ..., velocity: _Optional[_Union[FeatureVector, _Mapping]] = ...) -> None: ...
