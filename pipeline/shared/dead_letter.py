"""Dead letters: building the DeadLetter contract message and the guarded DoFn every stage uses.

A stage's DoFn yields its main output, or a DeadLetter on the DEAD_LETTER tag. An exception that
the stage did not expect becomes an INTERNAL_ERROR dead letter with its stack trace as text: no
Python type or traceback object ever reaches a sink, and the job goes on.
"""

from __future__ import annotations

import contextlib
import math
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.typehints.native_type_compatibility import convert_to_beam_type
from google.protobuf.timestamp_pb2 import Timestamp

from contracts import CONTRACT_VERSION
from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode, FieldViolation
from contracts.riskpipe.v1.enriched_transaction_pb2 import EnrichedTransaction
from contracts.riskpipe.v1.raw_record_pb2 import RawRecord
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared import metrics
from pipeline.shared.card_numbers import mask_pans, mask_pans_bytes
from pipeline.shared.version import PIPELINE_VERSION

# What a written dead letter keeps of the original bytes: see docs/input.md, "Card numbers".
PAYLOAD_POLICIES = ("raw", "masked", "none")
DEAD_LETTER = "dead_letter"
MAIN = "main"
_MAX_MESSAGE = 500


def _transaction_of(element: Any) -> Transaction | None:
    """The Transaction inside an in-flight element (keyed tuples carry it in their key)."""
    if isinstance(element, tuple) and element:
        element = element[0]
    if isinstance(element, Transaction):
        return element
    if isinstance(element, EnrichedTransaction):
        return element.transaction
    return None


def origin_of(element: Any) -> RawRecord | None:
    """The RawRecord an in-flight element was parsed from, if it carries one."""
    if isinstance(element, RawRecord):
        return element
    txn = _transaction_of(element)
    return None if txn is None else txn.origin


def transaction_id_of(element: Any) -> str:
    txn = _transaction_of(element)
    return "" if txn is None else txn.transaction_id


def make_dead_letter(
    stage: str,
    code: ErrorCode,
    message: str,
    origin: RawRecord | None,
    failed_at: Timestamp,
    violations: Sequence[FieldViolation] = (),
    transaction_id: str = "",
    exception: BaseException | None = None,
) -> DeadLetter:
    letter = DeadLetter(
        stage=stage,
        error_code=code,
        message=message[:_MAX_MESSAGE],
        violations=violations,
        pipeline_version=PIPELINE_VERSION,
        contract_version=CONTRACT_VERSION,
        attempt=1,
        transaction_id=transaction_id,
    )
    letter.failed_at.CopyFrom(failed_at)
    if origin is not None:
        letter.payload = origin.payload  # payload_text is added by redact(), as the letter is written
        letter.source.CopyFrom(origin.source)
        letter.attributes.update(origin.attributes)
        if origin.attributes.get("attempt", "").isdigit():
            letter.attempt = int(origin.attributes["attempt"]) + 1
    if exception is not None:
        letter.exception_type = f"{type(exception).__module__}.{type(exception).__qualname__}"
        letter.stacktrace = "".join(traceback.format_exception(exception))
    return letter


def internal_error(stage: str, element: Any, exc: BaseException, failed_at: Timestamp) -> DeadLetter:
    """The INTERNAL_ERROR letter for an exception a stage did not expect, with its stack trace."""
    return make_dead_letter(
        stage,
        ErrorCode.ERROR_CODE_INTERNAL_ERROR,
        f"{type(exc).__name__}: {exc}",
        origin_of(element),
        failed_at,
        transaction_id=transaction_id_of(element),
        exception=exc,
    )


def feature_error(
    stage: str,
    group: str,
    names: Sequence[str],
    values: Sequence[float],
    txn: Transaction,
    now: Callable[[], Timestamp],
) -> DeadLetter | None:
    """A FEATURE_ERROR naming every non-finite value (NaN, infinite) of named features, one
    violation each at `group.name`, failed at `now()`; None when all are finite."""
    if len(names) != len(values):
        raise ValueError(f"{len(values)} values for {len(names)} {group} features")
    if math.isfinite(sum(values)):  # every value finite (one NaN or infinity makes the sum so)
        return None
    bad = [(name, value) for name, value in zip(names, values, strict=True) if not math.isfinite(value)]
    if not bad:
        return None
    return make_dead_letter(
        stage,
        ErrorCode.ERROR_CODE_FEATURE_ERROR,
        f"non-finite {group}: " + ", ".join(name for name, _ in bad),
        txn.origin,
        now(),
        [
            FieldViolation(
                field_path=f"{group}.{name}",
                rule_id="riskpipe.feature_finite",
                message="must be a finite number",
                value=repr(value),
            )
            for name, value in bad
        ],
        txn.transaction_id,
    )


def redact(letter: DeadLetter, payload_policy: str) -> DeadLetter:
    """A copy of `letter` fit to be written: `payload_text` filled in from the payload where it is
    UTF-8 (in flight a letter carries its bytes once), card numbers masked in every text field, and
    the payload bytes kept as they are (raw), with card numbers masked (masked) or dropped (none)."""
    if payload_policy not in PAYLOAD_POLICIES:
        raise ValueError(f"payload policy must be one of {PAYLOAD_POLICIES}, got {payload_policy!r}")
    out = DeadLetter()
    out.CopyFrom(letter)
    out.message = mask_pans(out.message)
    text = out.payload_text
    if not text and out.payload:
        with contextlib.suppress(UnicodeDecodeError):
            text = out.payload.decode("utf-8")
    out.payload_text = mask_pans(text)
    out.transaction_id = mask_pans(out.transaction_id)
    out.stacktrace = mask_pans(out.stacktrace)
    for violation in out.violations:
        violation.value = mask_pans(violation.value)
        violation.message = mask_pans(violation.message)
    if payload_policy == "masked":
        out.payload = mask_pans_bytes(out.payload)
    elif payload_policy == "none":
        out.ClearField("payload")
    return out


class StageFn(beam.DoFn):
    """Runs one stage's per-record function with dead-letter routing and an exception guard.

    `make_fn` is called once per DoFn instance in setup(), so heavy resources (a compiled
    validator, a model) are built once per worker, never per element. The function it returns
    takes one element plus any side inputs and returns either the stage's output message, a
    DeadLetter, or None when the stage consumed the record without output (counted by the stage).
    """

    def __init__(self, stage: str, make_fn: Callable[[], Callable[..., Any]], failed_at: Callable[[], Timestamp]):
        self._stage = stage
        self._make_fn = make_fn
        self._failed_at = failed_at
        self._fn: Callable[..., Any] | None = None

    def setup(self) -> None:
        self._fn = self._make_fn()
        self._internal_errors = metrics.counter(f"{self._stage}.internal_errors")

    def process(self, element, *side_inputs):  # no annotations: Beam would read them as type hints
        assert self._fn is not None
        try:
            result = self._fn(element, *side_inputs)
        except Exception as exc:  # noqa: BLE001 - every unexpected failure becomes a dead letter
            self._internal_errors.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, internal_error(self._stage, element, exc, self._failed_at()))
            return
        if result is None:
            return
        if isinstance(result, DeadLetter):
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, result)
        else:
            yield result

    def finish_bundle(self) -> None:
        flush = getattr(self._fn, "flush", None)  # a stage function that counts per bundle
        if flush is not None:
            flush()


def apply_stage(
    pcoll: beam.PCollection,
    label: str,
    fn: beam.DoFn,
    output_type: Any,
    side_inputs: Iterable[Any] = (),
) -> tuple[beam.PCollection, beam.PCollection]:
    """Apply a DoFn with a dead-letter output (a StageFn, or a stage's own) and return (main
    output, dead letters), both typed. `output_type` may be a builtin generic such as
    tuple[bytes, bytes]: it is given to Beam as its own type hint, so that the output gets the
    coder Beam infers for it (a key-value coder for that one, which cross-language transforms
    need), not a pickled one."""
    outputs = pcoll | label >> beam.ParDo(fn, *side_inputs).with_outputs(DEAD_LETTER, main=MAIN)
    main = outputs[MAIN]
    main.element_type = convert_to_beam_type(output_type)
    dead = outputs[DEAD_LETTER]
    dead.element_type = DeadLetter
    return main, dead
