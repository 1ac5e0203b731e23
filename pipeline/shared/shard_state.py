"""Keyed state that costs a few runner round trips per bundle, not per record: many keys (cards,
transaction ids) held in a few shards, each shard's contents kept in the worker's memory and backed
by Beam state.

Every user-state request of a Python stateful DoFn is a round trip to the runner (on Prism about
250 µs of CPU between the two processes), paid per state object, key and bundle. With one Beam key
per card a record costs several of them; with a Beam key per shard (a hash of the card, mod a small
number) the requests are paid once per shard and bundle, however many records the bundle holds.

A shard's state is two objects:
    LOG      a bag of entries in the order they were added (blind appends: no read to add); the
             contents are the replay of the log. When the log has grown to more than twice its
             size at the last rewrite (plus COMPACT_SLACK), it is rewritten from the contents
             (what is past its horizon forgotten).
    VERSION  who wrote the shard last: a token unique to one writer and one bundle.
The worker keeps each shard's replayed contents with the version it wrote. A bundle reads VERSION
once per shard (a small read); when it equals the version this worker wrote, no one else has
written the shard since (another worker, a retried bundle whose writes were rolled back, a
restart), so the contents in memory are the state's and the log is not read. Otherwise the log is
read and replayed. Either way the bundle writes a new version before it changes anything. So a
shard costs one read, one write and one append per bundle on any runner, with or without the
runner's state cache tokens, and the contents are never stale: a worker that did not write the
last version reads the log again.

On a runner whose state dies with the job (Prism), a `keeper` (pipeline.io.shard_files) also keeps
each shard's log in a file: a shard the job has not written yet starts from its file (and its
entries go to the Beam log, as a rewrite would put them), each bundle's new entries are appended to
the file at the bundle's end, and a rewrite of the log rewrites the file.
"""

from __future__ import annotations

import threading
import uuid
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import apache_beam as beam
from apache_beam.coders import BytesCoder, PickleCoder
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Timestamp

DEFAULT_SHARDS = 16
# The log is rewritten once it holds this many entries more than twice what it held when it was
# last read or rewritten: a rewrite's cost is spread over at least as many appends.
COMPACT_SLACK = 2048


def shard_of(key: str, shards: int) -> int:
    """The shard of `key`: stable across processes and runs (not Python's salted hash)."""
    return zlib.crc32(key.encode()) % shards


class Keeper(Protocol):
    """Where a shard's log is kept beyond the runner's state (pipeline.io.shard_files.ShardFiles)."""

    def load(self, shard: int) -> list[Any]: ...

    def append(self, shard: int, entries: list[Any]) -> None: ...

    def rewrite(self, shard: int, entries: Iterable[Any]) -> None: ...


class Contents:
    """What a shard holds, rebuilt from its log. Subclasses say how an entry is replayed and which
    entries a rewritten log keeps."""

    def replay(self, entry: Any) -> None:
        raise NotImplementedError

    def snapshot(self) -> Iterable[Any]:
        """The entries that rebuild these contents (what is past its horizon left out)."""
        raise NotImplementedError


class _Held:
    __slots__ = ("contents", "floor", "logged", "version")

    def __init__(self, contents: Contents, logged: int, version: bytes | None):
        self.contents = contents
        self.logged = logged  # entries in the log
        self.floor = logged  # entries in the log when it was last read or rewritten
        self.version = version


# Worker memory: cache id (one per stage instance in the graph) -> shard -> what is held. Shared by
# every copy of the DoFn in the process; a runner gives a key to one bundle at a time.
_HELD: dict[str, dict[int, _Held]] = {}
_LOCK = threading.Lock()


def by_shard(pcoll: beam.PCollection, key: Callable[[Any], str], shards: int, element_type: Any) -> beam.PCollection:
    """Each element keyed by the shard of its key, for a ShardedStateFn."""
    return pcoll | "ByShard" >> beam.Map(lambda e: (shard_of(key(e), shards), e)).with_output_types(
        tuple[int, element_type]
    )


class ShardedStateFn(beam.DoFn):
    """A stateful DoFn over (shard, element) whose state is a shard's Contents. A subclass says
    what a shard starts as (`new_contents`) and what one element does to it (`step`: the outputs,
    and the entry its log gets)."""

    LOG = BagStateSpec("log", PickleCoder())
    VERSION = ReadModifyWriteStateSpec("version", BytesCoder())

    def __init__(self, keeper: Keeper | None = None) -> None:
        self._cache_id = uuid.uuid4().hex  # the same in every copy of this DoFn: it is pickled with it
        self._keeper = keeper

    def new_contents(self) -> Contents:
        raise NotImplementedError

    def step(self, contents: Any, element: Any, at: Timestamp) -> tuple[Any, Iterable[Any]]:
        """Takes one element into the shard's contents; returns (the entry that replays it, or None
        when the contents did not change, and the outputs)."""
        raise NotImplementedError

    def process(
        self,
        keyed: tuple[int, Any],
        at=beam.DoFn.TimestampParam,
        log=beam.DoFn.StateParam(LOG),
        version=beam.DoFn.StateParam(VERSION),
    ):
        shard, element = keyed
        entry, outputs = self.step(self.shard(shard, log, version), element, at)
        if entry is not None:
            self.add(shard, entry, log)
        yield from outputs

    def setup(self) -> None:
        with _LOCK:
            self._held = _HELD.setdefault(self._cache_id, {})
        self._writer = uuid.uuid4().hex.encode()
        self._bundles = 0

    def teardown(self) -> None:
        with _LOCK:  # the job is over here (or this copy failed): a later bundle reads the log again
            _HELD.pop(self._cache_id, None)

    def start_bundle(self) -> None:
        self._bundles += 1
        self._in_bundle: dict[int, _Held] = {}
        self._to_keep: dict[int, list[Any]] = {}

    def finish_bundle(self) -> None:
        if self._keeper is not None:
            for shard, entries in self._to_keep.items():
                self._keeper.append(shard, entries)

    def shard(self, shard: int, log, version) -> Contents:
        """The shard's contents, read once per bundle; the bundle's new version is written."""
        held = self._in_bundle.get(shard)
        if held is not None:
            return held.contents
        held = self._held.get(shard)
        stored = version.read()
        if held is None or stored is None or held.version != stored:
            contents = self.new_contents()
            logged = 0
            if stored is not None:  # a shard with no version has never been written
                for entry in log.read():
                    contents.replay(entry)
                    logged += 1
            elif self._keeper is not None:  # what an earlier run of the job kept
                for entry in self._keeper.load(shard):
                    contents.replay(entry)
                    log.add(entry)
                    logged += 1
            held = _Held(contents, logged, None)
        held.version = self._writer + b":%d" % self._bundles
        version.write(held.version)
        self._held[shard] = held
        self._in_bundle[shard] = held
        return held.contents

    def add(self, shard: int, entry: Any, log) -> None:
        """Appends an entry to the shard's log (the contents are the caller's to change); rewrites
        the log from the contents when it has grown well past them."""
        held = self._in_bundle[shard]
        log.add(entry)
        held.logged += 1
        if self._keeper is not None:
            self._to_keep.setdefault(shard, []).append(entry)
        if held.logged > 2 * held.floor + COMPACT_SLACK:
            log.clear()
            held.logged = 0
            snapshot = list(held.contents.snapshot())
            for kept in snapshot:
                log.add(kept)
            held.logged = held.floor = len(snapshot)
            if self._keeper is not None:
                self._keeper.rewrite(shard, snapshot)
                self._to_keep.pop(shard, None)
