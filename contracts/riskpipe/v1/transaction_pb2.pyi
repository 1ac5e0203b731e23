import datetime

from contracts.buf.validate import validate_pb2 as _validate_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from contracts.riskpipe.v1 import raw_record_pb2 as _raw_record_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_POS: _ClassVar[Channel]
    CHANNEL_ECOMMERCE: _ClassVar[Channel]
    CHANNEL_ATM: _ClassVar[Channel]
    CHANNEL_CONTACTLESS: _ClassVar[Channel]
    CHANNEL_MOTO: _ClassVar[Channel]
CHANNEL_UNSPECIFIED: Channel
CHANNEL_POS: Channel
CHANNEL_ECOMMERCE: Channel
CHANNEL_ATM: Channel
CHANNEL_CONTACTLESS: Channel
CHANNEL_MOTO: Channel

class Money(_message.Message):
    __slots__ = ("minor_units", "currency")
    MINOR_UNITS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    minor_units: int
    currency: str
    def __init__(self, minor_units: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("transaction_id", "card_id", "merchant_id", "amount", "event_time", "channel", "mcc", "country", "device_id", "late", "origin")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    MCC_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    card_id: str
    merchant_id: str
    amount: Money
    event_time: _timestamp_pb2.Timestamp
    channel: Channel
    mcc: str
    country: str
    device_id: str
    late: bool
    origin: _raw_record_pb2.RawRecord
    def __init__(self, transaction_id: _Optional[str] = ..., card_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., amount: _Optional[_Union[Money, _Mapping]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., channel: _Optional[_Union[Channel, str]] = ..., mcc: _Optional[str] = ..., country: _Optional[str] = ..., device_id: _Optional[str] = ..., late: _Optional[bool] = ..., origin: _Optional[_Union[_raw_record_pb2.RawRecord, _Mapping]] = ...) -> None: ...
