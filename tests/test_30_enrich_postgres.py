"""30_enrich with the PostgreSQL profile store (enrich.backend postgres), against a real server.

Each test module starts its own PostgreSQL (initdb into a temporary folder, a free port on
127.0.0.1, password authentication; tools/postgres_server.py) and stops it by its PID after. Each
test loads a fresh database with tools.load_reference. Where the server binaries are missing the
tests are skipped, and under CI=true they fail.
"""

from __future__ import annotations

import glob
import json
import pathlib
import shutil
import threading
import time
import uuid
from collections import Counter

import orjson
import pytest

from pipeline import config as job_config_module
from pipeline import runner
from pipeline.config import PostgresConfig
from pipeline.io import profile_store
from tests.conftest import need
from tests.helpers import job_config, read_jsonl
from tests.test_streaming import start_job, watch_config
from tools import load_reference, replay
from tools.postgres_server import PostgresMissingError, PostgresServer

UNAVAILABLE = "ERROR_CODE_PROFILE_STORE_UNAVAILABLE"


@pytest.fixture(scope="module")
def pg():
    try:
        server = PostgresServer()
        server.start()
    except PostgresMissingError as exc:
        need(False, f"PostgreSQL cannot be started here: {exc}")
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def password(pg, monkeypatch) -> str:
    """The job finds the password where a user puts it: PGPASSWORD."""
    monkeypatch.setenv("PGPASSWORD", pg.password)
    return pg.password


def fresh_store(pg, data: pathlib.Path) -> str:
    """A new database with `data`'s reference files loaded; its DSN."""
    dsn = pg.create_database(f"riskpipe_{uuid.uuid4().hex[:12]}")
    load_reference.load(dsn, data)
    return dsn


@pytest.fixture
def store(pg, password, dataset) -> str:
    return fresh_store(pg, dataset)


def run_job(dataset, out, *extra: str, **settings) -> dict:
    return runner.run(["--config", job_config(dataset, out, **settings), "--runner=FnApiRunner", *extra])


def postgres(dsn: str, **settings) -> dict:
    """The config overrides for the postgres backend (job_config's enrich__postgres)."""
    return {"enrich__backend": "postgres", "enrich__postgres": {"dsn": dsn, **settings}}


def rows(folder: pathlib.Path) -> list[bytes]:
    return sorted(read_jsonl(folder))


def valid_ids(dataset) -> set[str]:
    labels = [orjson.loads(line) for line in open(dataset / "labels.jsonl", "rb")]
    return {row["transaction_id"] for row in labels if not row["expected_error_code"]}


def letters(out: pathlib.Path) -> list[dict]:
    return [orjson.loads(line) for line in read_jsonl(out / "dead_letters")]


def test_the_job_scores_the_same_with_the_store_as_with_the_files(dataset, tmp_path, store):
    files = run_job(dataset, tmp_path / "files")
    store_run = run_job(dataset, tmp_path / "postgres", **postgres(store, batch_size=200))
    assert files["balanced"] and store_run["balanced"]
    assert rows(tmp_path / "postgres" / "scored") == rows(tmp_path / "files" / "scored")
    assert rows(tmp_path / "postgres" / "dead_letters") == rows(tmp_path / "files" / "dead_letters")
    assert store_run["enrich_backend"] == "postgres" and "profile_store" not in files
    looked = store_run["profile_store"]
    # Every record that reached 30_enrich was looked up, a batch at a time: at most one query per
    # profile kind per 200 records, and each key fetched at most once (the cache holds the rest).
    assert looked["lookups"] == store_run["scored"] + store_run["dead_letters_by_code"].get(
        "ERROR_CODE_PROFILE_NOT_FOUND", 0
    )
    assert 2 <= looked["queries"] <= 2 * (-(-looked["lookups"] // 200) + 1)
    assert looked["cache_hits"] > looked["cache_misses"] == looked["keys_fetched"] > 0
    assert looked["failures"] == looked["retries"] == 0
    assert looked["query_ms"]["answered"] == looked["queries"]


@pytest.mark.parametrize("policy", ["default", "dead_letter"])
def test_a_key_the_store_lacks_follows_the_missing_profile_policy_as_with_files(
    dataset, tmp_path, pg, password, policy
):
    # The same reference data without one busy card's profile and one merchant's, as files and in
    # the store: both backends give the same output under the policy.
    txns = [row for row in map(_parsed, open(dataset / "transactions.jsonl", "rb")) if row]
    card = Counter(t.get("card_id") for t in txns if isinstance(t.get("card_id"), str)).most_common(1)[0][0]
    merchant = Counter(t.get("merchant_id") for t in txns if isinstance(t.get("merchant_id"), str)).most_common(1)[0][0]
    data = tmp_path / "data"
    data.mkdir()
    for name, key, gone in (("customers", "card_id", card), ("merchants", "merchant_id", merchant)):
        kept = [line for line in open(dataset / f"{name}.jsonl", "rb") if orjson.loads(line)[key] != gone]
        (data / f"{name}.jsonl").write_bytes(b"".join(kept))
    shutil.copy(dataset / "transactions.jsonl", data / "transactions.jsonl")
    dsn = fresh_store(pg, data)

    common = {"enrich__missing_profile_policy": policy}
    files = run_job(data, tmp_path / "files", **common)
    store_run = run_job(data, tmp_path / "postgres", **common, **postgres(dsn))
    assert rows(tmp_path / "postgres" / "scored") == rows(tmp_path / "files" / "scored")
    assert rows(tmp_path / "postgres" / "dead_letters") == rows(tmp_path / "files" / "dead_letters")
    assert store_run["balanced"]
    if policy == "default":
        used = store_run["default_profiles_used"]
        assert used == files["default_profiles_used"] and used["customer"] > 0 and used["merchant"] > 0
    else:
        not_found = store_run["dead_letters_by_code"]["ERROR_CODE_PROFILE_NOT_FOUND"]
        assert not_found == files["dead_letters_by_code"]["ERROR_CODE_PROFILE_NOT_FOUND"] > 0
    assert UNAVAILABLE not in store_run["dead_letters_by_code"]


def test_a_store_that_is_down_makes_dead_letters_the_job_finishes_and_replay_scores_them(
    dataset, tmp_path, pg, store, password, capfd, caplog
):
    quick = {"retries": 2, "backoff_seconds": 0.01, "connect_timeout_seconds": 1}
    pg.stop()
    try:
        down = run_job(dataset, tmp_path / "down", **postgres(store, **quick))
    finally:
        pg.start()
    assert down["balanced"] and down["scored"] == 0
    unavailable = down["dead_letters_by_code"][UNAVAILABLE]
    assert unavailable == down["profile_store"]["lookups"] > 0
    failed = [d for d in letters(tmp_path / "down") if d["error_code"] == UNAVAILABLE]
    assert len(failed) == unavailable and {d["transaction_id"] for d in failed} <= valid_ids(dataset)
    assert all(d["stage"] == "30_enrich" and "after 3 attempt(s)" in d["message"] for d in failed)
    assert {v["field_path"] for d in failed for v in d["violations"]} == {"card_id", "merchant_id"}
    assert down["profile_store"]["retries"] == 2 * down["profile_store"]["failures"] > 0

    # Once the store is back, the dead letters replayed are scored, every one.
    replay_file = tmp_path / "replay.jsonl"
    assert replay.main(["--dead-letters", str(tmp_path / "down/dead_letters/*.jsonl"), "--out", str(replay_file),
                        "--code", UNAVAILABLE]) == 0  # fmt: skip
    again = run_job(dataset, tmp_path / "again", **postgres(store, **quick), input__transactions=str(replay_file))
    assert again["balanced"] and again["scored"] == unavailable and again["dead_letters"] == 0
    assert {orjson.loads(r)["transaction_id"] for r in read_jsonl(tmp_path / "again/scored")} == {
        d["transaction_id"] for d in failed
    }

    # The password is nowhere: not in the output, the summaries, the logs or the terminal.
    captured = capfd.readouterr()
    seen = [captured.out, captured.err, caplog.text, json.dumps(down), json.dumps(again)]
    seen += [pathlib.Path(f).read_text() for f in glob.glob(str(tmp_path / "**" / "*"), recursive=True) if
             pathlib.Path(f).is_file() and not f.endswith(".yaml")]  # fmt: skip
    assert not [text for text in seen if password in text]
    assert "cannot be reached" in caplog.text  # the run said so before it started


def test_a_slow_store_times_out_is_retried_as_configured_then_is_used_again(dataset, tmp_path, pg, store, password):
    # A held lock makes every customer lookup wait: the statement timeout cancels it, the lookup is
    # retried `retries` times with back-off, then its records are dead letters.
    settings = {"statement_timeout_ms": 150, "retries": 2, "backoff_seconds": 0.05, "backoff_max_seconds": 0.1}
    holder = pg.connect(database_of(store))
    holder.autocommit = False
    holder.execute("LOCK TABLE customer_profiles IN ACCESS EXCLUSIVE MODE")
    try:
        slow = run_job(dataset, tmp_path / "slow", **postgres(store, **settings))
    finally:
        holder.rollback()
        holder.close()
    assert slow["balanced"] and slow["scored"] == 0
    looked = slow["profile_store"]
    assert looked["failures"] > 0 and looked["retries"] == 2 * looked["failures"]
    failed = [d for d in letters(tmp_path / "slow") if d["error_code"] == UNAVAILABLE]
    assert len(failed) == slow["dead_letters_by_code"][UNAVAILABLE] == looked["lookups"]
    # Only the customer lookups timed out; the merchants' table was not locked.
    assert all("customers lookup" in d["message"] and "merchants lookup" not in d["message"] for d in failed)
    assert all("statement timeout" in d["message"] for d in failed)

    # The lock released, the same job is enriched again.
    fast = run_job(dataset, tmp_path / "fast", **postgres(store, **settings))
    assert fast["balanced"] and UNAVAILABLE not in fast["dead_letters_by_code"] and fast["scored"] > 0


def test_a_lookup_retries_until_a_lock_is_released_within_its_retries(pg, store, password):
    """The store comes back between two retries: the lookup succeeds, having retried."""
    holder = pg.connect(database_of(store))
    holder.autocommit = False
    holder.execute("LOCK TABLE merchant_profiles IN ACCESS EXCLUSIVE MODE")
    retries = []
    settings = PostgresConfig(
        dsn=store, statement_timeout_ms=100, retries=20, backoff_seconds=0.05, backoff_max_seconds=0.1
    )
    lookups = profile_store.ProfileStore(settings, on_retry=lambda: retries.append(1))
    timer = threading.Timer(0.6, holder.rollback)
    timer.start()
    try:
        found = lookups.fetch(profile_store.MERCHANTS, ["m000000", "no-such-merchant"])
    finally:
        timer.join()
        holder.close()
        lookups.close()
    assert found["m000000"] is not None and found["m000000"].merchant_id == "m000000"
    assert found["no-such-merchant"] is None
    assert 1 <= len(retries) < 20


def test_the_store_stopped_mid_run_then_started_again_in_a_streaming_job(
    dataset, tmp_path, pg, store, password, prism_binary
):
    """A watched folder on Prism: file 1 enriched, the store stopped, file 2's records dead
    letters, the store started again, file 3 enriched; the job drains, balanced, nothing lost."""
    watch, out = tmp_path / "watch", tmp_path / "out"
    watch.mkdir()
    valid = valid_ids(dataset)
    lines = [line for line in open(dataset / "transactions.jsonl", "rb") if line.strip()]
    good = [line for line in lines if _transaction_id(line) in valid]
    now = time.time()
    parts = [good[0:300], good[300:600], good[600:900]]
    rebased = [[_at(line, now - 120 + i * 0.1) for i, line in enumerate(part)] for part in parts]
    config = watch_config(
        dataset,
        out,
        watch,
        streaming__stop_after_idle_seconds=15,
        **postgres(store, cache_size=0, retries=1, backoff_seconds=0.01, connect_timeout_seconds=1),
    )
    job = start_job(config)
    try:
        _drop(watch, "part1.jsonl", rebased[0])
        _wait_for_lookups(out, 300)
        pg.stop()
        _drop(watch, "part2.jsonl", rebased[1])
        _wait_for_lookups(out, 600)
    finally:
        pg.start()
    _drop(watch, "part3.jsonl", rebased[2])
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    assert password.encode() not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["balanced"] and summary["read"] == 900
    assert summary["dead_letters_by_code"] == {UNAVAILABLE: 300}
    ids = [[_transaction_id(line) for line in part] for part in parts]
    scored = {orjson.loads(r)["transaction_id"] for r in read_jsonl(out / "scored")}
    assert scored == set(ids[0]) | set(ids[2])
    assert {d["transaction_id"] for d in letters(out)} == set(ids[1])


def _parsed(line: bytes) -> dict | None:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return row if isinstance(row, dict) else None


def _transaction_id(line: bytes) -> str | None:
    return (_parsed(line) or {}).get("transaction_id")


def database_of(dsn: str) -> str:
    return dsn.split("dbname=")[1].split()[0]


def _at(line: bytes, seconds: float) -> bytes:
    row = orjson.loads(line)
    row["event_time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"
    return orjson.dumps(row) + b"\n"


def _drop(folder: pathlib.Path, name: str, lines: list[bytes]) -> None:
    (folder / f"{name}.tmp").write_bytes(b"".join(lines))
    (folder / f"{name}.tmp").rename(folder / name)


def _wait_for_lookups(out: pathlib.Path, count: int, timeout: float = 120.0) -> None:
    """Until the running job's summary says `count` records went through the store's lookups."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = json.loads((out / "summary.json").read_text())["profile_store"]["lookups"]
        except (OSError, ValueError, KeyError):
            seen = None
        if seen is not None and seen >= count:
            assert seen == count, f"{seen} records looked up, {count} expected"
            return
        time.sleep(0.3)
    raise AssertionError(f"the job looked up {seen} records in {timeout} s, {count} expected")


def test_the_config_refuses_a_password_in_the_dsn_and_a_table_the_store_lacks(dataset, tmp_path, store, password):
    secret = "s3cret-in-the-dsn"
    with pytest.raises(job_config_module.ConfigError) as refused:
        run_job(dataset, tmp_path / "a", **postgres(store + f" password={secret}"))
    assert "holds a password" in str(refused.value) and secret not in str(refused.value)
    with pytest.raises(job_config_module.ConfigError) as missing:
        run_job(dataset, tmp_path / "b", **postgres(store, customers_table="no_such_table"))
    assert "customers query failed" in str(missing.value) and "no_such_table" in str(missing.value)
    with pytest.raises(job_config_module.ConfigError, match="%\\(keys\\)s"):
        run_job(dataset, tmp_path / "c", **postgres(store, merchants_query="SELECT * FROM merchant_profiles"))


def test_a_query_in_place_of_the_table(dataset, tmp_path, store, password):
    query = (
        "SELECT card_id, home_country, home_lat, home_lon, usual_amount_minor_units, usual_amount_currency, "
        "timezone, account_age_days, 'ignored' AS extra FROM customer_profiles WHERE card_id = ANY(%(keys)s)"
    )
    files = run_job(dataset, tmp_path / "files")
    queried = run_job(dataset, tmp_path / "query", **postgres(store, customers_query=query))
    assert queried["balanced"] and queried["scored"] == files["scored"]
    assert rows(tmp_path / "query" / "scored") == rows(tmp_path / "files" / "scored")


def test_loading_again_replaces_the_data_without_duplicates(pg, tmp_path, password, dataset):
    dsn = pg.create_database(f"riskpipe_{uuid.uuid4().hex[:12]}")
    first = load_reference.load(dsn, dataset)
    second = load_reference.load(dsn, dataset)
    assert first == second and first["customer_profiles"] > 0
    with pg.connect(database_of(dsn)) as conn:
        for table, key in (("customer_profiles", "card_id"), ("merchant_profiles", "merchant_id")):
            total, distinct = conn.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {table}").fetchone()
            assert total == distinct == first[table]
            primary = conn.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (table,),
            ).fetchall()
            assert primary == [(key,)]
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables == {"customer_profiles", "merchant_profiles"}  # no *_loading table left behind


def test_a_row_that_breaks_the_contract_is_not_a_profile(pg, store, password):
    with pg.connect(database_of(store)) as conn:
        conn.execute("UPDATE customer_profiles SET home_lat = 123.0 WHERE card_id = 'c0000001'")
    rejected = []
    lookups = profile_store.ProfileStore(PostgresConfig(dsn=store), on_rejected=lambda: rejected.append(1))
    try:
        found = lookups.fetch(profile_store.CUSTOMERS, ["c0000001", "c0000002"])
    finally:
        lookups.close()
    assert found["c0000001"] is None and found["c0000002"] is not None and rejected == [1]


def test_the_cache_evicts_the_least_recently_used_and_expires_entries():
    now = [0.0]
    cache = profile_store.TTLCache(size=2, ttl=10, now=lambda: now[0])
    cache.put_all([("a", 1), ("b", None)])
    assert cache.get("b") is None and cache.get("a") == 1  # None: the store has no such key
    cache.put_all([("c", 3)])  # "a" was used after "b": "b" goes
    assert cache.get("b") is profile_store.MISS and cache.get("a") == 1 and cache.get("c") == 3
    now[0] = 10.0
    assert cache.get("a") is profile_store.MISS and len(cache) == 1
    off = profile_store.TTLCache(size=0, ttl=10)
    off.put_all([("a", 1)])
    assert off.get("a") is profile_store.MISS


def test_the_back_off_doubles_with_jitter_up_to_its_ceiling():
    store = profile_store.ProfileStore(
        PostgresConfig(dsn="host=127.0.0.1", backoff_seconds=0.1, backoff_max_seconds=0.5)
    )
    for attempt, ceiling in ((0, 0.1), (1, 0.2), (2, 0.4), (3, 0.5), (8, 0.5)):
        waits = [store.backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 10  # jittered, not one fixed wait
