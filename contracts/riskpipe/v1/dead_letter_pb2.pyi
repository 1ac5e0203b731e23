import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from contracts.riskpipe.v1 import raw_record_pb2 as _raw_record_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_UTF8: _ClassVar[ErrorCode]
    ERROR_CODE_MALFORMED_JSON: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_AN_OBJECT: _ClassVar[ErrorCode]
    ERROR_CODE_WRONG_TYPE: _ClassVar[ErrorCode]
    ERROR_CODE_UNPARSEABLE_VALUE: _ClassVar[ErrorCode]
    ERROR_CODE_MISSING_FIELD: _ClassVar[ErrorCode]
    ERROR_CODE_RULE_VIOLATION: _ClassVar[ErrorCode]
    ERROR_CODE_EVENT_TIME_IN_FUTURE: _ClassVar[ErrorCode]
    ERROR_CODE_PROFILE_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_PROFILE_STORE_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_FEATURE_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_INFERENCE_FAILED: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_SCORE: _ClassVar[ErrorCode]
    ERROR_CODE_SOURCE_UNREADABLE: _ClassVar[ErrorCode]
    ERROR_CODE_RECORD_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_LATE_RECORD: _ClassVar[ErrorCode]
    ERROR_CODE_TRANSACTION_ID_CONFLICT: _ClassVar[ErrorCode]
    ERROR_CODE_SINK_REJECTED: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_NOT_UTF8: ErrorCode
ERROR_CODE_MALFORMED_JSON: ErrorCode
ERROR_CODE_NOT_AN_OBJECT: ErrorCode
ERROR_CODE_WRONG_TYPE: ErrorCode
ERROR_CODE_UNPARSEABLE_VALUE: ErrorCode
ERROR_CODE_MISSING_FIELD: ErrorCode
ERROR_CODE_RULE_VIOLATION: ErrorCode
ERROR_CODE_EVENT_TIME_IN_FUTURE: ErrorCode
ERROR_CODE_PROFILE_NOT_FOUND: ErrorCode
ERROR_CODE_PROFILE_STORE_UNAVAILABLE: ErrorCode
ERROR_CODE_FEATURE_ERROR: ErrorCode
ERROR_CODE_INFERENCE_FAILED: ErrorCode
ERROR_CODE_INTERNAL_ERROR: ErrorCode
ERROR_CODE_INVALID_SCORE: ErrorCode
ERROR_CODE_SOURCE_UNREADABLE: ErrorCode
ERROR_CODE_RECORD_TOO_LARGE: ErrorCode
ERROR_CODE_LATE_RECORD: ErrorCode
ERROR_CODE_TRANSACTION_ID_CONFLICT: ErrorCode
ERROR_CODE_SINK_REJECTED: ErrorCode

class FieldViolation(_message.Message):
    __slots__ = ("field_path", "rule_id", "message", "value")
    FIELD_PATH_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    field_path: str
    rule_id: str
    message: str
    value: str
    def __init__(self, field_path: _Optional[str] = ..., rule_id: _Optional[str] = ..., message: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("stage", "error_code", "message", "violations", "payload", "payload_text", "source", "failed_at", "pipeline_version", "contract_version", "attempt", "exception_type", "stacktrace", "attributes", "transaction_id")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_TEXT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EXCEPTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    STACKTRACE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    stage: str
    error_code: ErrorCode
    message: str
    violations: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    payload: bytes
    payload_text: str
    source: _raw_record_pb2.SourcePosition
    failed_at: _timestamp_pb2.Timestamp
    pipeline_version: str
    contract_version: str
    attempt: int
    exception_type: str
    stacktrace: str
    attributes: _containers.ScalarMap[str, str]
    transaction_id: str
    def __init__(self, stage: _Optional[str] = ..., error_code: _Optional[_Union[ErrorCode, str]] = ..., message: _Optional[str] = ..., violations: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ..., payload: _Optional[bytes] = ..., payload_text: _Optional[str] = ..., source: _Optional[_Union[_raw_record_pb2.SourcePosition, _Mapping]] = ..., failed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pipeline_version: _Optional[str] = ..., contract_version: _Optional[str] = ..., attempt: _Optional[int] = ..., exception_type: _Optional[str] = ..., stacktrace: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., transaction_id: _Optional[str] = ...) -> None: ...
