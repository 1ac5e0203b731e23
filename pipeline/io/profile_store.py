"""The PostgreSQL profile store 30_enrich reads with `enrich.backend: postgres`.

One query per profile kind for many keys (`key = ANY(%(keys)s)`), a connection per worker, a
per-worker LRU cache with a TTL (shared by the worker's threads), a statement timeout, and retries
with exponential back-off and jitter for the errors a store recovers from (connection lost or
refused, statement timeout, server shutting down). After the retries a lookup raises
StoreUnavailableError and the caller turns the affected records into PROFILE_STORE_UNAVAILABLE dead
letters; the next lookup tries the store again, so a store that comes back is used again.
(Beam's utils.retry.with_exponential_backoff retries a function the same way, but its waits and
retry count are fixed when the function is decorated and it reports no retry; here they come from
the enrich.postgres section and each retry is counted in the run's metrics.)

The password is never in the DSN or the config: it comes from the environment variable the config
names (PGPASSWORD by default, which libpq also reads itself) or from a pgpass or service file.
Every message this module produces has the password replaced by `***`.

Rows are profiles: a column is the contract field of its name (CustomerProfile, MerchantProfile);
a message field is spread over `<field>_<subfield>` columns (usual_amount_minor_units,
usual_amount_currency). Unknown columns are ignored, NULL is an unset field, and a row that breaks
the contract's rules is not a profile: it is left out (the key is missing), counted and logged.
"""

from __future__ import annotations

import dataclasses
import decimal
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import protovalidate
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from contracts.riskpipe.v1.enriched_transaction_pb2 import CustomerProfile, MerchantProfile
from pipeline.config.sections import KEYS_PLACEHOLDER, PostgresConfig

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ProfileKind:
    """One kind of profile: its contract message, its key field and its default table."""

    name: str
    message_type: type[Message]
    key: str
    table: str


CUSTOMERS = ProfileKind("customers", CustomerProfile, "card_id", "customer_profiles")
MERCHANTS = ProfileKind("merchants", MerchantProfile, "merchant_id", "merchant_profiles")
KINDS = (CUSTOMERS, MERCHANTS)


class StoreUnavailableError(Exception):
    """The store did not answer after the retries (or cannot answer this query at all)."""


class StoreQueryError(ValueError):
    """The store refuses a profile query (no such table or column, bad SQL): a configuration error."""


def query(settings: PostgresConfig, kind: ProfileKind) -> str:
    """The SQL for one kind: the configured query, or a select on the configured table."""
    custom = settings.customers_query if kind is CUSTOMERS else settings.merchants_query
    if custom:
        return custom
    table = settings.customers_table if kind is CUSTOMERS else settings.merchants_table
    return f"SELECT * FROM {quote_table(table)} WHERE {quote_identifier(kind.key)} = ANY({KEYS_PLACEHOLDER})"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    """`schema.table` or `table`, each part quoted as an identifier."""
    return ".".join(quote_identifier(part) for part in table.split("."))


def password(env: str) -> str | None:
    """The password from the environment variable `env` names; None: libpq's pgpass or service file."""
    return os.environ.get(env) or None


def scrub(text: str, secret: str | None) -> str:
    """`text` with the password replaced, fit for a log line or a dead letter."""
    return text.replace(secret, "***") if secret else text


class TTLCache:
    """A least-recently-used cache whose entries expire `ttl` seconds after they were stored.
    A stored None is an answer too (the store has no such key). Thread-safe."""

    _ABSENT = object()

    def __init__(self, size: int, ttl: float, now: Callable[[], float] = time.monotonic):
        self._size = size
        self._ttl = ttl
        self._now = now
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The cached value, or MISS."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return MISS
            if entry[0] <= self._now():
                del self._entries[key]
                return MISS
            self._entries.move_to_end(key)
            return entry[1]

    def put_all(self, values: Iterable[tuple[str, Any]]) -> None:
        if self._size <= 0 or self._ttl <= 0:
            return
        expires = self._now() + self._ttl
        with self._lock:
            for key, value in values:
                self._entries[key] = (expires, value)
                self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


MISS: Any = object()
_CACHES: dict[tuple[Any, ...], TTLCache] = {}
_CACHES_LOCK = threading.Lock()


def worker_cache(settings: PostgresConfig, kind: ProfileKind) -> TTLCache:
    """The process's cache for one kind of profile from one store: every DoFn instance of the
    worker shares it, and a second run in the same process finds it warm (within the TTL)."""
    key = (settings.dsn, query(settings, kind), settings.cache_size, settings.cache_ttl_seconds)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = TTLCache(settings.cache_size, settings.cache_ttl_seconds)
        return cache


_SQL_TYPES = {
    FieldDescriptor.TYPE_STRING: "text",
    FieldDescriptor.TYPE_DOUBLE: "double precision",
    FieldDescriptor.TYPE_FLOAT: "real",
    FieldDescriptor.TYPE_INT32: "integer",
    FieldDescriptor.TYPE_INT64: "bigint",
    FieldDescriptor.TYPE_BOOL: "boolean",
}


def columns(kind: ProfileKind) -> list[tuple[str, str]]:
    """The table layout of a profile: (column, SQL type), one column per scalar field of the
    contract and one per scalar field of a message field (`<field>_<subfield>`)."""
    out = []
    for field in kind.message_type.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            out += [(f"{field.name}_{sub.name}", _SQL_TYPES[sub.type]) for sub in field.message_type.fields]
        else:
            out.append((field.name, _SQL_TYPES[field.type]))
    return out


def row_of(kind: ProfileKind, profile: Message) -> tuple[Any, ...]:
    """A profile as the values of columns(kind); an unset message field is NULLs."""
    values: list[Any] = []
    for field in kind.message_type.DESCRIPTOR.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            values.append(getattr(profile, field.name))
            continue
        inner = getattr(profile, field.name) if profile.HasField(field.name) else None
        for sub in field.message_type.fields:
            has = inner is not None and (not sub.has_presence or inner.HasField(sub.name))
            values.append(getattr(inner, sub.name) if has else None)
    return tuple(values)


class RowConverter:
    """A store row (column name -> value) -> a profile message, or None when it breaks the rules."""

    def __init__(self, kind: ProfileKind):
        self._kind = kind
        self._validator = protovalidate.Validator()
        descriptor = kind.message_type.DESCRIPTOR
        self._nested = {
            f"{f.name}_{sub.name}": (f.name, sub.name)
            for f in descriptor.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE
            for sub in f.message_type.fields
        }

    def __call__(self, row: dict[str, Any]) -> Message | None:
        data: dict[str, Any] = {}
        for column, value in row.items():
            if value is None:
                continue
            if isinstance(value, decimal.Decimal):
                value = int(value) if value == value.to_integral_value() else float(value)
            if column in self._nested:
                outer, inner = self._nested[column]
                data.setdefault(outer, {})[inner] = value
            else:
                data[column] = value
        return parse_profile(
            self._kind.message_type,
            lambda profile: json_format.ParseDict(data, profile, ignore_unknown_fields=True),
            self._validator,
            f"{self._kind.name}: rejected store row",
            row,
        )


def parse_profile(
    message_type: type[Message], fill: Callable[[Message], object], validator: Any, rejected: str, row: object
) -> Message | None:
    """A profile filled in by `fill` (a JSON parse), or None, logged as `rejected <row>: why`
    (the row formatted only then), when it does not parse or breaks the contract's rules. The one
    rule for a reference row, from a file or from the store."""
    profile = message_type()
    try:
        fill(profile)
    except json_format.ParseError as exc:
        _LOG.warning("%s %.200r: %s", rejected, row, exc)
        return None
    violations = validator.collect_violations(profile)
    if violations:
        _LOG.warning("%s %.200r: %s", rejected, row, "; ".join(v.proto.message for v in violations))
        return None
    return profile


class ProfileStore:
    """A connection to the store, and batched lookups with retries. Not thread-safe: one per
    DoFn instance. `on_query(ms)`, `on_retry()` and `on_rejected()` are called as things happen
    (the stage counts them)."""

    def __init__(
        self,
        settings: PostgresConfig,
        on_query: Callable[[float], None] = lambda ms: None,
        on_retry: Callable[[], None] = lambda: None,
        on_rejected: Callable[[], None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._settings = settings
        self._on_query = on_query
        self._on_retry = on_retry
        self._on_rejected = on_rejected
        self._sleep = sleep
        self._password = password(settings.password_env)
        self._conn: Any = None
        self._converters = {kind.name: RowConverter(kind) for kind in KINDS}
        self._queries = {kind.name: query(settings, kind) for kind in KINDS}

    def connect(self) -> None:
        """Opens the connection if there is none; psycopg's errors propagate."""
        if self._conn is not None and not self._conn.closed:
            return
        import psycopg  # imported here: the files backend never needs the driver

        conn = psycopg.connect(
            self._settings.dsn or "",
            password=self._password,
            connect_timeout=self._settings.connect_timeout_seconds,
            autocommit=True,
            application_name="riskpipe-30_enrich",
        )
        conn.execute(f"SET statement_timeout = {int(self._settings.statement_timeout_ms)}")
        self._conn = conn

    def try_connect(self) -> str | None:
        """Connects now; the reason it could not (password scrubbed), or None."""
        import psycopg

        try:
            self.connect()
        except psycopg.Error as exc:
            return self.describe(exc)
        return None

    def check(self) -> str | None:
        """Runs each profile query once with no key. Raises StoreQueryError for a query the store
        refuses or one without the key column; returns why the store cannot be reached, or None."""
        import psycopg

        reason = self.try_connect()
        if reason is not None:
            return reason
        for kind in KINDS:
            try:
                with self._conn.cursor() as cur:
                    cur.execute(self._queries[kind.name], {"keys": []})
                    columns = [c.name for c in cur.description or ()]
            except psycopg.OperationalError as exc:
                return self.describe(exc)
            except psycopg.Error as exc:
                raise StoreQueryError(f"the {kind.name} query failed: {self.describe(exc)}") from None
            if kind.key not in columns:
                raise StoreQueryError(f"the {kind.name} query returns no {kind.key} column (it returns {columns})")
        return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def describe(self, exc: BaseException) -> str:
        return scrub(f"{type(exc).__name__}: {str(exc).strip()}", self._password)

    def fetch(self, kind: ProfileKind, keys: list[str]) -> dict[str, Message | None]:
        """Every key -> its profile, or None when the store has none (or only a rejected row).
        Raises StoreUnavailableError after the configured retries."""
        import psycopg

        attempts = self._settings.retries + 1
        for attempt in range(attempts):
            try:
                return self._fetch_once(kind, keys)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # Connection refused or lost, statement timeout, server shutting down: retry on a
                # fresh connection when the old one is broken.
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self.close()
                if attempt + 1 == attempts:
                    raise StoreUnavailableError(f"after {attempts} attempt(s): {self.describe(exc)}") from None
                self._on_retry()
                self._sleep(self.backoff(attempt))
            except psycopg.Error as exc:
                # A wrong table, column or query: no retry helps; the records say what is wrong.
                raise StoreUnavailableError(f"the {kind.name} query failed: {self.describe(exc)}") from None
        raise AssertionError("unreachable")

    def backoff(self, attempt: int) -> float:
        """Exponential back-off with jitter: between half and all of base * 2^attempt, capped."""
        ceiling = min(self._settings.backoff_max_seconds, self._settings.backoff_seconds * (2**attempt))
        return ceiling * (0.5 + random.random() / 2)

    def _fetch_once(self, kind: ProfileKind, keys: list[str]) -> dict[str, Message | None]:
        from psycopg.rows import dict_row

        self.connect()
        started = time.perf_counter()
        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self._queries[kind.name], {"keys": keys})
            rows = cur.fetchall()
        self._on_query((time.perf_counter() - started) * 1000.0)
        found: dict[str, Message | None] = dict.fromkeys(keys)
        convert = self._converters[kind.name]
        for row in rows:
            key = row.get(kind.key)
            if key not in found:
                continue
            profile = convert(row)
            if profile is None:
                self._on_rejected()
            found[key] = profile
        return found
