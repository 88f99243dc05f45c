"""A throw-away PostgreSQL 15 server for tests: real ``initdb`` and ``postgres``, loopback only.

:func:`start_postgres` creates a cluster (trust authentication, loopback TCP on a free port, a
unix socket inside its own directory, no fsync), starts it, waits until it accepts connections
and creates the ``sketchwatch`` database. The returned :class:`PostgresServer` can be stopped and
started again on the same data directory and port (outage tests), or killed.

``initdb`` refuses to run as root: as root the server runs as the ``postgres`` OS user, in a
private directory under the system temp dir (pytest's own temp dirs are ``0700 root``, which the
``postgres`` user cannot enter); as any other user it runs as that user under ``workdir``.

The session fixture :func:`postgres_server` fails (never skips) when the server cannot start.
Import it into a test module (``from tests.services.postgres import postgres_server``), or list
``tests.services.postgres`` in ``pytest_plugins`` of the root ``conftest.py`` to share one
server between modules.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

__all__ = ["PG_BIN", "PostgresServer", "postgres_server", "start_postgres"]

PG_BIN = Path(os.environ.get("SKETCHWATCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
"""Where ``initdb`` and ``postgres`` live (``SKETCHWATCH_PG_BIN`` overrides)."""

DATABASE = "sketchwatch"
_SERVICE_USER = "postgres"
_LIVE: set[PostgresServer] = set()  # killed at interpreter exit if a test run forgot them


@atexit.register
def _kill_live() -> None:
    for server in list(_LIVE):
        server.kill()
        if server._owned_root:
            shutil.rmtree(server.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no server log: {e})"
    return "\n".join(text.splitlines()[-lines:])


class PostgresServer:
    """A running (or stopped) test server; build it with :func:`start_postgres`.

    Attributes
    ----------
    root : Path
        Directory holding ``data/`` (the cluster), ``sock/`` (unix socket) and ``server.log``.
    port : int
        Loopback TCP port, the same across :meth:`stop` / :meth:`start`.
    url : str
        ``postgresql+psycopg://postgres@127.0.0.1:PORT/sketchwatch`` (trust auth, no password).
    """

    def __init__(self, root: Path, port: int, *, as_user: str | None, owned_root: bool) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.sock = root / "sock"
        self.log = root / "server.log"
        self._as_user = as_user
        self._owned_root = owned_root
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``sketchwatch`` database."""
        return self.url_for(DATABASE)

    def url_for(self, database: str, user: str = "postgres") -> str:
        """SQLAlchemy URL of another database (or user) on this server."""
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = DATABASE) -> str:
        """A libpq connection string (for ``psycopg.connect``)."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database} connect_timeout=2"

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # ---------------------------------------------------------------------------------------

    def _popen_user(self) -> dict[str, Any]:
        if self._as_user is None:
            return {}
        pw = pwd.getpwnam(self._as_user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> None:
        """Run a server binary as the service user; RuntimeError with its output on failure."""
        proc = subprocess.run(
            [str(PG_BIN / args[0]), *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            check=False,
            **self._popen_user(),
        )
        if proc.returncode != 0:
            out = proc.stdout.decode(errors="replace").strip().splitlines()[-20:]
            raise RuntimeError(
                f"postgres test server: {args[0]} failed ({proc.returncode}):\n" + "\n".join(out)
            )

    def init(self) -> None:
        """``initdb`` the data directory (trust auth for loopback and the unix socket)."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-host=trust",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the server on the same data directory and port and wait until it is ready.

        Raises
        ------
        RuntimeError
            The server exited or was not ready within ``timeout`` s; the message ends with the
            tail of the server log.
        """
        if self.running:
            return
        self._close_log()
        self._log_file = open(self.log, "ab")  # noqa: SIM115  (kept open while the server runs)
        self._proc = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.sock}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            start_new_session=True,  # kill() takes the backends down with the postmaster
            **self._popen_user(),
        )
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"postgres test server exited with code {self._proc.returncode} while starting "
                    f"on 127.0.0.1:{self.port}; server log tail:\n{_tail(self.log)}"
                )
            try:
                with psycopg.connect(self.dsn("postgres")) as conn:
                    conn.execute("select 1")
                return
            except psycopg.Error as e:
                last = e
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"postgres test server not ready on 127.0.0.1:{self.port} after {timeout:.0f} s "
            f"(last error: {last}); server log tail:\n{_tail(self.log)}"
        )

    def create_database(self, name: str = DATABASE) -> None:
        """``CREATE DATABASE name`` unless it exists."""
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')

    def add_password_role(self, name: str, password: str) -> None:
        """Create login role ``name`` that must authenticate with ``password`` over TCP.

        Every other role keeps trust authentication; the new ``pg_hba.conf`` line goes first and
        the configuration is reloaded.
        """
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
            hba = self.data / "pg_hba.conf"
            line = f"host all {name} 127.0.0.1/32 scram-sha-256\n"
            text = hba.read_text()
            if line not in text:
                hba.write_text(line + text)
            conn.execute("select pg_reload_conf()")
        time.sleep(0.2)  # the postmaster re-reads pg_hba.conf asynchronously

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: open connections are cut, the data is kept); waits for exit."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            _LIVE.discard(self)
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._proc = None
        _LIVE.discard(self)
        self._close_log()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (a crash; the next start runs recovery)."""
        proc = self._proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._proc = None
        _LIVE.discard(self)
        self._close_log()

    def cleanup(self) -> None:
        """Stop the server and delete its directory if :func:`start_postgres` made it privately."""
        self.stop()
        if self._owned_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"PostgresServer({self.url!r}, {state}, root={str(self.root)!r})"


def start_postgres(workdir: Path | str, *, timeout: float = 30.0) -> PostgresServer:
    """Create, start and prepare a PostgreSQL server with a ``sketchwatch`` database.

    Parameters
    ----------
    workdir : path
        Directory for the cluster when not running as root (``workdir/postgres``). As root the
        cluster lives in a private directory under the system temp dir, owned by ``postgres``
        (removed by :meth:`PostgresServer.cleanup`); ``workdir/postgres-root`` names it.
    timeout : float, default 30
        Seconds to wait for the server to accept connections.

    Returns
    -------
    PostgresServer
        Running, with the database created; ``.url`` connects to it.

    Raises
    ------
    RuntimeError
        The binaries are missing, ``initdb`` failed, or the server did not start; the message
        includes the tail of the server log.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (PG_BIN / "postgres").exists():
        raise RuntimeError(
            f"postgres test server: no PostgreSQL binaries in {PG_BIN} (set SKETCHWATCH_PG_BIN)"
        )
    as_user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            raise RuntimeError(
                f"postgres test server: running as root but there is no {_SERVICE_USER!r} user to run "
                "initdb/postgres as"
            ) from None
        as_user = _SERVICE_USER
        root = Path(tempfile.mkdtemp(prefix="sketchwatch-pg-"))
        os.chown(root, pw.pw_uid, pw.pw_gid)
        (workdir / "postgres-root").write_text(f"{root}\n")
        owned = True
    else:
        root = workdir / "postgres"
        root.mkdir(exist_ok=True)
        owned = False
    sock = root / "sock"
    sock.mkdir(mode=0o700, exist_ok=True)
    if as_user is not None:
        pw = pwd.getpwnam(as_user)
        os.chown(sock, pw.pw_uid, pw.pw_gid)
    errors: list[str] = []
    for _attempt in range(3):  # a free port can be taken between the probe and the bind
        server = PostgresServer(root, _free_port(), as_user=as_user, owned_root=owned)
        if not server.data.exists():
            server.init()
        try:
            server.start(timeout)
        except RuntimeError as e:
            errors.append(str(e))
            if "already in use" in str(e) or "could not bind" in str(e):
                continue
            raise
        try:
            server.create_database()
        except psycopg.Error as e:
            server.kill()
            raise RuntimeError(f"postgres test server: cannot create database {DATABASE!r}: {e}") from e
        return server
    raise RuntimeError("postgres test server: no free port after 3 attempts:\n" + "\n".join(errors))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server for the test session; the test fails if it cannot start."""
    try:
        server = start_postgres(tmp_path_factory.mktemp("postgres"))
    except RuntimeError as e:
        pytest.fail(f"cannot start the PostgreSQL test server: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()
