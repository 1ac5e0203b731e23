"""A watched folder (local streaming): each new complete file in it is read once, as pipeline.io.files
reads a file, and the folder's watermark follows the event times of the files taken.

A file is taken only when it is complete: names that writers use while writing (`*.tmp`, `*.part`,
`*.partial`, `*.inprogress`, `*~`, hidden `.NAME`) are never taken, so a writer writes under such a
name and renames the file when it is whole; as a second guard a file is taken only when it has not
changed for `settle_seconds`. Sub-folders are not entered. Each name is taken once per run (Beam
state keyed by path). Beam's fileio.MatchContinuously lists a folder too, but has neither the
in-progress rule, nor the settle guard, nor a watermark from the data, nor a drain.
"""

from __future__ import annotations

import os
import re
import stat
import time

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from contracts.riskpipe.v1.raw_record_pb2 import RawRecord
from pipeline.io import drain, progress
from pipeline.io.files import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_SPLIT_BYTES,
    FileEntry,
    LineRange,
    display_uri,
    read_files,
    read_range,
)
from pipeline.shared import metrics
from pipeline.shared.clock import RunClock, parse_rfc3339_timestamp

# Names a writer uses while a file is incomplete; never taken.
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".inprogress", "~")


def in_progress(name: str) -> bool:
    return name.startswith(".") or name.endswith(IN_PROGRESS_SUFFIXES)


def list_folder(folder: str, settle_seconds: float, now: float) -> tuple[list[FileEntry], float]:
    """The complete files in `folder` (by name), and the latest change time of anything in it
    (files still being written included), for the idleness check."""
    complete: list[FileEntry] = []
    latest = 0.0
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return complete, latest
    for name in names:
        path = os.path.join(folder, name)
        try:
            info = os.lstat(path)
        except OSError:
            continue  # gone since the listing (renamed by its writer)
        changed = max(info.st_mtime, info.st_ctime)
        latest = max(latest, changed)
        if in_progress(name) or not stat.S_ISREG(info.st_mode):
            continue
        if now - changed >= settle_seconds:
            complete.append(FileEntry(path, info.st_size, info.st_mtime_ns))
    return complete, latest


_POLLS = 2**62  # the poll sequence is unbounded in practice


class _PollTracker(OffsetRestrictionTracker):
    """One poller per folder: the runner may checkpoint it (split at 0) but never split it in two."""

    def try_split(self, fraction_of_remainder):
        return super().try_split(0) if fraction_of_remainder == 0 else None


class _PollRestrictions(beam.transforms.core.RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, _POLLS)

    def create_tracker(self, restriction):
        return _PollTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction

    def truncate(self, element, restriction):
        return None  # a runner's drain: stop polling at once


_POLL_RESTRICTIONS = _PollRestrictions()
_POLL_WATERMARK = ManualWatermarkEstimator.default_provider()


_YEAR_2000 = Timestamp(seconds=946684800)  # the contract's earliest event_time
_EVENT_TIME = re.compile(rb'"event_time"\s*:\s*"([^"]{1,64})"')


def event_time_bounds(
    entry: FileEntry, clock: RunClock, max_record_bytes: int
) -> tuple[Timestamp | None, Timestamp | None]:
    """The earliest and latest event_time among a file's records (None when none has one that
    parses): what the watched folder's watermark follows. A quick look, not a validation
    (10_validate judges). An event time ahead of the wall clock or before 2000 is left out: it must
    not move the watermark (one bad record would make every record behind it late)."""
    earliest: Timestamp | None = None
    latest: Timestamp | None = None
    now = Timestamp.of(time.time())
    for record in read_range(LineRange(entry.path, 0, -1, 1), clock, max_record_bytes):
        if not isinstance(record, RawRecord):
            continue
        found = _EVENT_TIME.search(record.payload)
        if found is None:
            continue
        try:
            at = parse_rfc3339_timestamp(found.group(1).decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        event = Timestamp(seconds=at.seconds, micros=at.nanos // 1000)
        if event < _YEAR_2000 or event > now:
            continue
        if latest is None or event > latest:
            latest = event
        if earliest is None or event < earliest:
            earliest = event
    return earliest, latest


class EventTimeWatermark:
    """A source's watermark from the event times it reads: the latest event time taken. When the
    source has nothing new it moves on with the wall clock from there (as if event time went on at
    the speed of the clock since the last record was taken), never past the wall clock, so that a
    quiet source does not hold the watermark back forever and yesterday's records, once taken, are
    not late. Shared by the watched folder; KafkaIO's partitions follow the same rule in Java
    (StoppableKafkaRead.EventTimePolicy)."""

    def __init__(self) -> None:
        self.latest: Timestamp | None = None
        self._taken_at = 0.0

    def took(self, latest: Timestamp | None, now: float) -> None:
        if latest is not None and (self.latest is None or latest > self.latest):
            self.latest = latest
        self._taken_at = now

    def idle(self, now: float) -> Timestamp | None:
        if self.latest is None:
            return None
        moved = self.latest + Duration.of(max(0.0, now - self._taken_at))
        return max(self.latest, min(moved, Timestamp.of(now)))


class WatchFolderFn(beam.DoFn):
    """folder -> the FileEntry of every complete file in it, at each poll. The watermark follows
    the event times of the files taken (EventTimeWatermark); a file's records carry the watermark
    as it stood when it was taken (or the file's own event times, where they are later) as their
    Beam timestamp, so that a record is late only when it is behind the records taken before it.
    A file that an earlier run wrote out whole (`done`: path -> (size, modification time in ns),
    from the output folder's ledger) is not taken again; a file put under its name since (another
    modification time) is. Ends after `idle_seconds` without a change in the folder (0:
    never) or when a drain is requested."""

    def __init__(
        self,
        poll_seconds: float,
        settle_seconds: float,
        idle_seconds: float,
        clock: RunClock | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        done: dict[str, tuple[int, int]] | None = None,
    ):
        self._poll = poll_seconds
        self._settle = settle_seconds
        self._idle = idle_seconds
        self._clock = clock or RunClock(None)
        self._max_record_bytes = max_record_bytes
        self._done = dict(done or {})

    def setup(self) -> None:
        self._started = time.time()
        self._emitted: set[tuple[str, int]] = set()  # (display path, size)
        self._event_time = EventTimeWatermark()

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        folder: str,
        tracker=beam.DoFn.RestrictionParam(_POLL_RESTRICTIONS),
        watermark=beam.DoFn.WatermarkEstimatorParam(_POLL_WATERMARK),
    ):
        position = tracker.current_restriction().start
        if not tracker.try_claim(position):
            return
        now = time.time()
        files, latest_change = list_folder(folder, self._settle, now)
        current = watermark.current_watermark()
        listed = [e for e in files if (display_uri(e.path), e.size) not in self._emitted]
        self._emitted.update((display_uri(e.path), e.size) for e in listed)
        new = [e for e in listed if not self._was_done(e)]
        metrics.live_add(metrics.FILES_TAKEN, len(new))  # files waiting: taken, not yet read to their end
        for entry in new:
            earliest, latest = event_time_bounds(entry, self._clock, self._max_record_bytes)
            at = current if current is not None else MIN_TIMESTAMP
            if earliest is not None and earliest > at:
                at = earliest
            yield TimestampedValue(entry, at)
            self._event_time.took(latest, now)
        moved = self._event_time.latest if new else self._event_time.idle(now)
        if moved is not None and (current is None or moved > current):
            watermark.set_watermark(moved)
        idle_for = now - max(self._started, latest_change)
        if drain.requested() or (self._idle and idle_for >= self._idle):
            tracker.try_claim(_POLLS - 1)  # the rest of the sequence: the input ends here
            return
        tracker.defer_remainder(Duration.of(self._poll))

    def _was_done(self, entry: FileEntry) -> bool:
        done = self._done.get(display_uri(entry.path))
        # a ledger line without a modification time (an older run's): the size alone
        return done is not None and done[0] == entry.size and done[1] in (0, entry.mtime_ns)


class TakeOnceFn(beam.DoFn):
    """(path, FileEntry) -> the FileEntry the first time its path is seen; Beam state remembers."""

    TAKEN = ReadModifyWriteStateSpec("taken", BooleanCoder())

    def process(self, keyed: tuple[str, FileEntry], taken=beam.DoFn.StateParam(TAKEN)):
        if not taken.read():
            taken.write(True)
            yield keyed[1]


class WatchTransactions(beam.PTransform):
    """Every line of every file that appears in `folder`, as a RawRecord, unbounded; returns
    (records, source errors) as ReadTransactions does. `resume`: what an earlier run of the same
    output folder wrote (files done are not taken; lines written are skipped)."""

    def __init__(
        self,
        folder: str,
        clock: RunClock,
        poll_seconds: float = 1.0,
        settle_seconds: float = 1.0,
        idle_seconds: float = 0.0,
        split_bytes: int = DEFAULT_SPLIT_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        resume: progress.Resume | None = None,
    ):
        super().__init__()
        self._folder = folder
        self._clock = clock
        done = resume.done_inputs if resume is not None else {}
        self._watch = WatchFolderFn(poll_seconds, settle_seconds, idle_seconds, clock, max_record_bytes, done)
        self._split_bytes = split_bytes
        self._max_record_bytes = max_record_bytes
        self._resume = resume

    def expand(self, pbegin: beam.pvalue.PBegin):
        files = (
            pbegin
            | "Folder" >> beam.Create([self._folder])
            | "Watch" >> beam.ParDo(self._watch).with_output_types(FileEntry)
            | "ByPath" >> beam.Map(lambda entry: (entry.path, entry)).with_output_types(tuple[str, FileEntry])
            | "TakeOnce" >> beam.ParDo(TakeOnceFn()).with_output_types(FileEntry)
        )
        return read_files(files, self._clock, self._split_bytes, self._max_record_bytes, self._resume)
