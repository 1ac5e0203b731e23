"""25_lateness: Transaction -> Transaction, the late-record policy applied after dedupe.

In:  Transaction from 20_dedupe. A record that came later than allowed carries `late` (10_validate
     set it, with its arrival time as its Beam timestamp).
Out: every record that is not late, unchanged; a late one under streaming.late_policy score,
     unchanged (it keeps `late` and is scored, see 35_velocity); each late record is counted
     (late_records).
Dead letters (stage 25_lateness):
  LATE_RECORD   streaming: event_time lies behind the source's watermark (the record's Beam
                timestamp as read) by more than streaming.allowed_lateness_seconds, and
                streaming.late_policy is dead_letter
Why after 20_dedupe: a redelivered copy of a record already scored is a duplicate whatever its
lateness (counted in duplicates, never a LATE_RECORD); only a late record seen for the first time
within the dedupe horizon is judged here. Idempotent: the same record gives the same result.
"""

from __future__ import annotations

import apache_beam as beam

from contracts.riskpipe.v1.dead_letter_pb2 import DeadLetter, ErrorCode
from contracts.riskpipe.v1.transaction_pb2 import Transaction
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock, beam_time
from pipeline.shared.dead_letter import DEAD_LETTER, MAIN, make_dead_letter

STAGE = "25_lateness"
LATE_POLICIES = ("dead_letter", "score")


class LatePolicyFn(beam.DoFn):
    def __init__(self, allowed_lateness_seconds: int, late_policy: str, clock: RunClock):
        if late_policy not in LATE_POLICIES:
            raise ValueError(f"unknown late policy {late_policy!r}")
        self._allowed_seconds = allowed_lateness_seconds
        self._policy = late_policy
        self._clock = clock

    def setup(self) -> None:
        self._late = metrics.counter(metrics.LATE_RECORDS)

    def process(self, txn: Transaction, arrival=beam.DoFn.TimestampParam):
        if not txn.late:
            yield txn
            return
        self._late.inc()
        if self._policy == "score":
            yield txn
            return
        event = beam_time(txn.event_time)
        behind = (arrival - event).micros / 1e6
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER,
            make_dead_letter(
                STAGE,
                ErrorCode.ERROR_CODE_LATE_RECORD,
                f"event_time {event.to_rfc3339()} is {behind:,.0f} s behind the source's watermark "
                f"({arrival.to_rfc3339()}, when the record was taken), more than "
                f"streaming.allowed_lateness_seconds ({self._allowed_seconds})",
                txn.origin,
                self._clock.timestamp(),
                transaction_id=txn.transaction_id,
            ),
        )


class ApplyLatePolicy(beam.PTransform):
    """Transactions -> (Transactions, LATE_RECORD DeadLetters)."""

    def __init__(self, allowed_lateness_seconds: int, late_policy: str, clock: RunClock):
        super().__init__()
        self._fn = LatePolicyFn(allowed_lateness_seconds, late_policy, clock)

    def expand(self, transactions: beam.PCollection):
        judged = transactions | "LatePolicy" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER, main=MAIN)
        kept, late = judged[MAIN], judged[DEAD_LETTER]
        kept.element_type = Transaction
        late.element_type = DeadLetter
        return kept, late
