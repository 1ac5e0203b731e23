"""10_validate: RawRecord -> Transaction, checked against the contract's rules.

In:  RawRecord (payload bytes: one JSON object in the job's input format, see docs/input.md).
Out: Transaction, with the RawRecord it came from in `origin`.
Dead letters (stage 10_validate), every problem of the record listed in `violations`:
  NOT_UTF8, MALFORMED_JSON, NOT_AN_OBJECT   the payload cannot be read as a JSON object
  WRONG_TYPE                                a field has the wrong JSON type
  UNPARSEABLE_VALUE                         a timestamp that is not RFC 3339, an unknown channel
  MISSING_FIELD                             a required field is absent or empty
  RULE_VIOLATION                            a protovalidate rule of transaction.proto is broken, or
                                            a card number in clear in card_id or device_id
                                            (rule riskpipe.pan_in_clear)
  EVENT_TIME_IN_FUTURE                      event_time is ahead of the run's clock by more than
                                            validate.max_future_skew_seconds
Event time: a valid transaction leaves with its event_time as its Beam timestamp. One whose
event_time lies behind the source's watermark (the record's Beam timestamp as read) by more than
streaming.allowed_lateness_seconds keeps its arrival time instead (so it lands in the window being
written, not one already closed) and is flagged `late`; 25_lateness applies the late policy after
20_dedupe has dropped redeliveries. In batch the records are read at the start of time, so none is
late.
The rules themselves live in contracts/riskpipe/v1/transaction.proto (buf.validate annotations).
The `in` lists of that file (currencies, countries) are also checked here first, from the same
annotations: protovalidate spends half a millisecond writing out a 165-value list for a miss, which
would make a file of unknown codes a cheap way to slow the job down.
"""

from __future__ import annotations

import functools
from typing import Any

import apache_beam as beam
import orjson
import protovalidate
from apache_beam.utils.timestamp import Duration
from google.protobuf.descriptor import Descriptor

from contracts.buf.validate import validate_pb2
from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode, FieldViolation
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord
from contracts.riskpipe.v1.transaction_pb2 import Channel, Money, Transaction
from pipeline.shared.card_numbers import looks_like_pan
from pipeline.shared.clock import RunClock, beam_time, parse_rfc3339_timestamp, stamped
from pipeline.shared.dead_letter import StageFn, apply_stage, make_dead_letter

STAGE = "10_validate"
_STRING_FIELDS = ("transaction_id", "card_id", "merchant_id", "mcc", "country", "device_id")
_CHANNELS = {name: number for name, number in Channel.items() if number}
_CHANNELS.update({name.removeprefix("CHANNEL_"): number for name, number in Channel.items() if number})
_SHORT_MESSAGES = {
    ("amount.currency", "string.in"): "must be an ISO-4217 currency code with a minor unit",
    ("country", "string.in"): "must be an ISO-3166-1 alpha-2 country code",
}
# Precedence of the record's error code when it has several problems: the first that applies.
_PRECEDENCE = (
    ErrorCode.ERROR_CODE_WRONG_TYPE,
    ErrorCode.ERROR_CODE_UNPARSEABLE_VALUE,
    ErrorCode.ERROR_CODE_MISSING_FIELD,
    ErrorCode.ERROR_CODE_RULE_VIOLATION,
    ErrorCode.ERROR_CODE_EVENT_TIME_IN_FUTURE,
)
_RULE_CODES = {
    "riskpipe.wrong_type": ErrorCode.ERROR_CODE_WRONG_TYPE,
    "riskpipe.timestamp_format": ErrorCode.ERROR_CODE_UNPARSEABLE_VALUE,
    "riskpipe.enum_name": ErrorCode.ERROR_CODE_UNPARSEABLE_VALUE,
    "required": ErrorCode.ERROR_CODE_MISSING_FIELD,
    "riskpipe.event_time.max_future_skew": ErrorCode.ERROR_CODE_EVENT_TIME_IN_FUTURE,
}
_PAN_FIELDS = ("card_id", "device_id")


def contract_in_list(message: Descriptor, field: str) -> frozenset[str]:
    """The `string.in` list that the contract's buf.validate annotation gives `field`."""
    options = message.fields_by_name[field].GetOptions()
    return frozenset(getattr(options.Extensions[validate_pb2.field].string, "in"))  # type: ignore[attr-defined]


_CURRENCIES = contract_in_list(Money.DESCRIPTOR, "currency")
_COUNTRIES = contract_in_list(Transaction.DESCRIPTOR, "country")


def _type_name(value: Any) -> str:
    return (
        "null"
        if value is None
        else {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
            type(value), type(value).__name__
        )
    )


def _wrong_type(path: str, expected: str, value: Any) -> FieldViolation:
    return FieldViolation(
        field_path=path,
        rule_id="riskpipe.wrong_type",
        message=f"must be {expected}, got {_type_name(value)}",
        value=_text(value),
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value[:200]
    return orjson.dumps(value).decode()[:200] if value is not None else ""


def _not_in(path: str, value: str) -> FieldViolation:
    return FieldViolation(
        field_path=path, rule_id="string.in", message=_SHORT_MESSAGES[(path, "string.in")], value=value[:200]
    )


class TransactionParser:
    """Bytes -> Transaction or DeadLetter. Build once (it compiles the contract's rules), reuse."""

    def __init__(self, clock: RunClock, max_future_skew_seconds: int):
        self._clock = clock
        self._max_skew = max_future_skew_seconds
        self._validator = protovalidate.Validator()

    def __call__(self, raw: RawRecord) -> Transaction | DeadLetter:
        try:
            obj = orjson.loads(raw.payload)
        except orjson.JSONDecodeError as exc:
            try:
                raw.payload.decode("utf-8")
            except UnicodeDecodeError as utf8_error:
                return self._refuse(raw, ErrorCode.ERROR_CODE_NOT_UTF8, f"payload is not UTF-8: {utf8_error}")
            return self._refuse(raw, ErrorCode.ERROR_CODE_MALFORMED_JSON, f"payload is not JSON: {exc}")
        if not isinstance(obj, dict):
            return self._refuse(
                raw, ErrorCode.ERROR_CODE_NOT_AN_OBJECT, f"payload is JSON {_type_name(obj)}, not an object"
            )

        violations: list[FieldViolation] = []
        fields: dict[str, Any] = {}
        for name in _STRING_FIELDS:
            value = obj.get(name)
            if value is None:
                continue
            if isinstance(value, str):
                fields[name] = value
            else:
                violations.append(_wrong_type(name, "a string", value))

        amount = obj.get("amount")
        if isinstance(amount, dict):
            money = Money()
            minor = amount.get("minor_units")
            if isinstance(minor, int) and not isinstance(minor, bool):
                if -(2**63) <= minor < 2**63:
                    money.minor_units = minor
                else:
                    violations.append(
                        FieldViolation(
                            field_path="amount.minor_units",
                            rule_id="int64.lte",
                            message="must fit in 64 bits",
                            value=str(minor),
                        )
                    )
            elif minor is not None:
                violations.append(_wrong_type("amount.minor_units", "an integer number of minor units", minor))
            currency = amount.get("currency")
            if isinstance(currency, str):
                if currency in _CURRENCIES or not currency:
                    money.currency = currency
                else:
                    violations.append(_not_in("amount.currency", currency))
            elif currency is not None:
                violations.append(_wrong_type("amount.currency", "a string", currency))
            fields["amount"] = money
        elif amount is not None:
            violations.append(_wrong_type("amount", "an object {minor_units, currency}", amount))

        event_time = obj.get("event_time")
        if isinstance(event_time, str):
            try:
                fields["event_time"] = parse_rfc3339_timestamp(event_time)
            except ValueError as exc:
                violations.append(
                    FieldViolation(
                        field_path="event_time",
                        rule_id="riskpipe.timestamp_format",
                        message=f"must be an RFC 3339 date-time: {exc}",
                        value=event_time[:200],
                    )
                )
        elif event_time is not None:
            violations.append(_wrong_type("event_time", "an RFC 3339 string", event_time))

        channel = obj.get("channel")
        if isinstance(channel, str):
            number = _CHANNELS.get(channel)
            if number is None:
                violations.append(
                    FieldViolation(
                        field_path="channel",
                        rule_id="riskpipe.enum_name",
                        message=f"must be one of {', '.join(n for n in _CHANNELS if not n.startswith('CHANNEL_'))}",
                        value=channel[:200],
                    )
                )
            else:
                fields["channel"] = number
        elif channel is not None:
            violations.append(_wrong_type("channel", "a string", channel))

        country = fields.get("country")
        if country and country not in _COUNTRIES:
            violations.append(_not_in("country", country))
            del fields["country"]
        for name in _PAN_FIELDS:
            if name in fields and looks_like_pan(fields[name]):
                violations.append(
                    FieldViolation(
                        field_path=name,
                        rule_id="riskpipe.pan_in_clear",
                        message="is a card number in clear; send the card's token",
                        value=fields[name][:200],
                    )
                )

        txn = Transaction(**fields)
        already = {v.field_path for v in violations}
        for violation in self._validator.collect_violations(txn):
            proto = violation.proto
            path = ".".join(element.field_name for element in (proto.field.elements if proto.field else ()))
            if path in already:
                continue  # the field could not be read; its parse violation says why
            value = violation.field_value
            violations.append(
                FieldViolation(
                    field_path=path,
                    rule_id=proto.rule_id,
                    message=_SHORT_MESSAGES.get((path, proto.rule_id), proto.message[:200]),
                    value=""
                    if proto.rule_id == "required"
                    else _text(value)
                    if isinstance(value, str | int | float)
                    else str(value)[:200],
                )
            )
        if not violations and txn.event_time.seconds > self._clock.now_seconds() + self._max_skew:
            violations.append(
                FieldViolation(
                    field_path="event_time",
                    rule_id="riskpipe.event_time.max_future_skew",
                    message=f"lies more than {self._max_skew} s after the run's clock",
                    value=event_time,
                )
            )
        if violations:
            code = min(
                (_RULE_CODES.get(v.rule_id, ErrorCode.ERROR_CODE_RULE_VIOLATION) for v in violations),
                key=_PRECEDENCE.index,
            )
            summary = "; ".join(f"{v.field_path}: {v.message}" for v in violations)
            return self._refuse(raw, code, summary, violations, txn.transaction_id)
        txn.origin.CopyFrom(raw)
        return txn

    def _refuse(
        self, raw: RawRecord, code: ErrorCode, message: str, violations=(), transaction_id: str = ""
    ) -> DeadLetter:
        return make_dead_letter(STAGE, code, message, raw, self._clock.timestamp(), violations, transaction_id)


class EventTimeFn(beam.DoFn):
    """Transaction -> the same, timestamped with its event_time; or, when it is later than
    allowed, flagged `late` at its arrival time (25_lateness applies the policy)."""

    def __init__(self, allowed_lateness_seconds: int):
        self._allowed = Duration(seconds=allowed_lateness_seconds)

    def process(self, txn: Transaction, arrival=beam.DoFn.TimestampParam):
        event = beam_time(txn.event_time)
        if arrival - event <= self._allowed:
            yield stamped(txn, event)
            return
        flagged = Transaction()
        flagged.CopyFrom(txn)
        flagged.late = True
        yield flagged


class Validate(beam.PTransform):
    """RawRecords -> (Transactions at their event time, DeadLetters)."""

    def __init__(self, clock: RunClock, max_future_skew_seconds: int, allowed_lateness_seconds: int = 300):
        super().__init__()
        self._clock = clock
        self._max_skew = max_future_skew_seconds
        self._allowed_lateness = allowed_lateness_seconds

    def expand(self, raw_records: beam.PCollection):
        clock, max_skew = self._clock, self._max_skew
        fn = StageFn(STAGE, functools.partial(TransactionParser, clock, max_skew), clock)
        parsed, refused = apply_stage(raw_records, "ParseAndCheck", fn, Transaction)
        transactions = parsed | "EventTime" >> beam.ParDo(EventTimeFn(self._allowed_lateness))
        transactions.element_type = Transaction
        return transactions, refused
