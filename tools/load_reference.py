"""Load a folder's reference files into the PostgreSQL profile store (enrich.backend postgres).

    PGPASSWORD=... python -m tools.load_reference --dsn 'host=H port=P dbname=D user=U' --data data/sample

Reads DIR/customers.jsonl and DIR/merchants.jsonl with the same parser and rules as the files
backend (a row that does not parse or breaks the contract is left out and counted; a key given
twice keeps its last row), and loads each into its table: one column per contract field
(pipeline/shared/profile_store.py), the key as primary key (the index the lookups use).

A table is loaded beside the live one (`<table>_loading`, with COPY), indexed and analysed, then
swapped in within one transaction: running the loader again replaces the data without duplicates,
and a running job sees the old profiles or the new ones, never half of them.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from pipeline.config import PostgresConfig
from pipeline.io import profile_store
from pipeline.stages import s30_enrich as enrich


def _split(table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    return (schema or None), name


def load_kind(conn, kind: profile_store.ProfileKind, table: str, path: pathlib.Path) -> int:
    """Replaces `table` with the profiles of one reference file; the number of rows loaded."""
    from psycopg import sql

    profiles = enrich.read_profile_file(str(path), kind.message_type, kind.key)
    schema, name = _split(table)

    def qualified(n: str) -> sql.Composable:
        return sql.Identifier(schema, n) if schema else sql.Identifier(n)

    layout = profile_store.columns(kind)
    loading = f"{name}_loading"
    definition = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in layout)
    names = sql.SQL(", ").join(sql.Identifier(c) for c, _ in layout)
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(loading)))
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(qualified(loading), definition))
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(qualified(loading), names)
        with conn.cursor() as cur, cur.copy(copy_in) as copy:
            for profile in profiles.values():
                copy.write_row(profile_store.row_of(kind, profile))
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})").format(
                qualified(loading), sql.Identifier(f"{loading}_pkey"), sql.Identifier(kind.key)
            )
        )
    conn.execute(sql.SQL("ANALYZE {}").format(qualified(loading)))
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(qualified(name)))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(qualified(loading), sql.Identifier(name)))
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                qualified(name), sql.Identifier(f"{loading}_pkey"), sql.Identifier(f"{name}_pkey")
            )
        )
    return len(profiles)


def load(
    dsn: str,
    data: pathlib.Path,
    password_env: str = PostgresConfig().password_env,
    customers_table: str = profile_store.CUSTOMERS.table,
    merchants_table: str = profile_store.MERCHANTS.table,
) -> dict[str, int]:
    """Loads both reference files of `data`; rows loaded per table."""
    import psycopg

    loaded = {}
    with psycopg.connect(dsn, password=profile_store.password(password_env), autocommit=True) as conn:
        for kind, table in ((profile_store.CUSTOMERS, customers_table), (profile_store.MERCHANTS, merchants_table)):
            loaded[table] = load_kind(conn, kind, table, data / f"{kind.name}.jsonl")
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="libpq connection string, without the password")
    parser.add_argument("--data", required=True, type=pathlib.Path, help="folder with customers.jsonl, merchants.jsonl")
    parser.add_argument("--password-env", default=PostgresConfig().password_env)
    parser.add_argument("--customers-table", default=profile_store.CUSTOMERS.table)
    parser.add_argument("--merchants-table", default=profile_store.MERCHANTS.table)
    args = parser.parse_args(argv)
    for kind in profile_store.KINDS:
        if not (args.data / f"{kind.name}.jsonl").is_file():
            parser.error(f"{args.data / (kind.name + '.jsonl')}: no such file")
    started = time.perf_counter()
    import psycopg

    try:
        loaded = load(args.dsn, args.data, args.password_env, args.customers_table, args.merchants_table)
    except psycopg.Error as exc:
        secret = profile_store.password(args.password_env)
        print(f"load_reference: {profile_store.scrub(str(exc).strip(), secret)}", file=sys.stderr)
        return 1
    for table, rows in loaded.items():
        print(f"{table:<40} {rows:>10,} rows")
    print(f"{'loaded in':<40} {time.perf_counter() - started:>10.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
