"""A throwaway PostgreSQL server on 127.0.0.1, for the tests and the benchmarks.

    with PostgresServer() as pg:        # initdb into a new folder, a free port, password auth
        pg.dsn                          # 'host=127.0.0.1 port=... dbname=postgres user=riskpipe'
        pg.password                     # give it to the job in PGPASSWORD
        pg.stop(); pg.start()           # the same data and port again

The server binaries come from Debian's `postgresql` package (scripts/postgres.sh installs it where
it is missing). initdb and postgres refuse to run as root: as root they run as the `postgres`
user, in a folder that user owns. The server is stopped by its PID, and its folder removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

from pipeline.io.kafka_expansion import free_port

BIN_ENV = "RISKPIPE_PG_BIN"
SERVICE_USER = "postgres"


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server binaries on this machine, or they cannot run."""


def bin_dir() -> pathlib.Path:
    """The folder holding initdb and postgres: $RISKPIPE_PG_BIN, else the newest
    /usr/lib/postgresql/N/bin, else the folder of `pg_ctl` on PATH."""
    candidates = [os.environ[BIN_ENV]] if os.environ.get(BIN_ENV) else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    candidates += versions
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(pathlib.Path(on_path).parent))
    for folder in candidates:
        path = pathlib.Path(folder)
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    raise PostgresMissingError(
        "PostgreSQL server binaries (initdb, postgres) not found: run scripts/postgres.sh "
        f"(installs Debian's postgresql package) or set {BIN_ENV}"
    )


class PostgresServer:
    """One server: `start()` creates it on first use; `stop()` keeps its data for the next start."""

    def __init__(self, user: str = "riskpipe", password: str | None = None, settings: dict[str, str] | None = None):
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.port = free_port()
        self._settings = {"fsync": "off", "full_page_writes": "off", **(settings or {})}
        self._bin = bin_dir()
        self._as_root = os.geteuid() == 0
        self._folder = pathlib.Path(tempfile.mkdtemp(prefix="riskpipe-pg-"))
        self._data = self._folder / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._initialized = False

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={database} user={self.user}"

    def _command(self, *args: str) -> list[str]:
        if not self._as_root:
            return list(args)
        runuser = shutil.which("runuser")
        if runuser is None:
            raise PostgresMissingError("running as root needs runuser to start PostgreSQL as the postgres user")
        return [runuser, "-u", SERVICE_USER, "--", *args]

    def _initdb(self) -> None:
        if self._as_root:
            try:
                shutil.chown(self._folder, SERVICE_USER, SERVICE_USER)
            except LookupError:
                raise PostgresMissingError(
                    f"running as root, PostgreSQL needs the {SERVICE_USER!r} user (Debian's postgresql package "
                    "creates it)"
                ) from None
        pwfile = self._folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            shutil.chown(pwfile, SERVICE_USER, SERVICE_USER)
        pwfile.chmod(0o600)
        done = subprocess.run(
            self._command(
                str(self._bin / "initdb"),
                "-D",
                str(self._data),
                "-U",
                self.user,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
            ),
            capture_output=True,
            check=False,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresMissingError(f"initdb failed: {done.stderr.decode(errors='replace')[-1000:]}")
        self._initialized = True

    def start(self, timeout: float = 30.0) -> PostgresServer:
        if self._process is not None:
            return self
        if not self._initialized:
            self._initdb()
        options = [f"-c{name}={value}" for name, value in self._settings.items()]
        log = open(self._folder / "server.log", "ab")  # noqa: SIM115 - the server writes it while it runs
        self._process = subprocess.Popen(
            self._command(
                str(self._bin / "postgres"),
                "-D",
                str(self._data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self._folder}",
                *options,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = (self._folder / "server.log").read_text(errors="replace")[-1500:]
                self.stop()
                raise PostgresMissingError(f"PostgreSQL did not start on 127.0.0.1:{self.port}: {tail}")
            time.sleep(0.1)
        return self

    def _accepting(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.dsn, password=self.password, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """A fast shutdown (SIGINT: sessions are cut), waited for; killed if it does not end."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def connect(self, database: str = "postgres", **kwargs):
        import psycopg

        return psycopg.connect(self.dsn_for(database), password=self.password, autocommit=True, **kwargs)

    def create_database(self, name: str) -> str:
        """A new, empty database; its DSN."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
