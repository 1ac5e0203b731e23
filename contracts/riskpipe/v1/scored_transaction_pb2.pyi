import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from contracts.riskpipe.v1 import enriched_transaction_pb2 as _enriched_transaction_pb2
from contracts.riskpipe.v1 import raw_record_pb2 as _raw_record_pb2
from contracts.riskpipe.v1 import transaction_pb2 as _transaction_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_APPROVE: _ClassVar[Decision]
    DECISION_REVIEW: _ClassVar[Decision]
    DECISION_DECLINE: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_APPROVE: Decision
DECISION_REVIEW: Decision
DECISION_DECLINE: Decision

class Reason(_message.Message):
    __slots__ = ("feature", "contribution", "value")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    feature: str
    contribution: float
    value: float
    def __init__(self, feature: _Optional[str] = ..., contribution: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class ShadowScore(_message.Message):
    __slots__ = ("model_version", "score", "decision")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    score: float
    decision: Decision
    def __init__(self, model_version: _Optional[str] = ..., score: _Optional[float] = ..., decision: _Optional[_Union[Decision, str]] = ...) -> None: ...

class ScoredTransaction(_message.Message):
    __slots__ = ("transaction_id", "card_id", "merchant_id", "amount", "event_time", "score", "decision", "model_version", "thresholds_version", "feature_set_version", "scored_at", "reasons", "missing_profiles", "source", "late", "features", "shadow")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORED_AT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    MISSING_PROFILES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    card_id: str
    merchant_id: str
    amount: _transaction_pb2.Money
    event_time: _timestamp_pb2.Timestamp
    score: float
    decision: Decision
    model_version: str
    thresholds_version: str
    feature_set_version: str
    scored_at: _timestamp_pb2.Timestamp
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    missing_profiles: _containers.RepeatedScalarFieldContainer[_enriched_transaction_pb2.ProfileKind]
    source: _raw_record_pb2.SourcePosition
    late: bool
    features: _enriched_transaction_pb2.FeatureVector
    shadow: ShadowScore
    def __init__(self, transaction_id: _Optional[str] = ..., card_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., amount: _Optional[_Union[_transaction_pb2.Money, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., score: _Optional[float] = ..., decision: _Optional[_Union[Decision, str]] = ..., model_version: _Optional[str] = ..., thresholds_version: _Optional[str] = ..., feature_set_version: _Optional[str] = ..., scored_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., missing_profiles: _Optional[_Iterable[_Union[_enriched_transaction_pb2.ProfileKind, str]]] = ..., source: _Optional[_Union[_raw_record_pb2.SourcePosition, _Mapping]] = ..., late: _Optional[bool] = ..., features: _Optional[_Union[_enriched_transaction_pb2.FeatureVector, _Mapping]] = ..., shadow: _Optional[_Union[ShadowScore, _Mapping]] = ...) -> None: ...
