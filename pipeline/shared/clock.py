"""The run's clock.

Batch runs can pin "now" (run.as_of): the future-skew check, scored_at and failed_at then depend
only on the input and the configuration, so a re-run gives byte-identical output. Without as_of the
clock is the wall clock, read per call.
"""

from __future__ import annotations

import datetime as dt
import time

from google.protobuf.timestamp_pb2 import Timestamp


class RunClock:
    def __init__(self, as_of: dt.datetime | None = None):
        if as_of is not None and as_of.tzinfo is None:
            raise ValueError("as_of must carry a time zone")
        self._as_of_ns = None if as_of is None else int(as_of.timestamp()) * 1_000_000_000 + as_of.microsecond * 1000

    @property
    def pinned(self) -> bool:
        return self._as_of_ns is not None

    def now_ns(self) -> int:
        return self._as_of_ns if self._as_of_ns is not None else time.time_ns()

    def now_seconds(self) -> float:
        return self.now_ns() / 1e9

    def timestamp(self) -> Timestamp:
        ns = self.now_ns()
        return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)

    __call__ = timestamp


def parse_rfc3339(text: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp (Z or an offset); raises ValueError without a time zone."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith(("Z", "z")) else text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone offset")
    return value
