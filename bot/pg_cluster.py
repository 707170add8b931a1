"""A throw-away PostgreSQL cluster on loopback (initdb + pg_ctl in a temporary folder).

What ``python -m bot.data_bench`` starts when it is given no database URL; the same recipe as the
test session's cluster (tests/conftest.py): Debian's /usr/lib/postgresql/<version>/bin, trust
authentication on 127.0.0.1 only, no fsync (nothing here needs to survive a crash), and as root
everything runs as the ``postgres`` user (the server refuses to run as root).
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

DATABASE = "guichet_bench"
# The cluster is thrown away: durability is not what is measured.
FAST_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"


class ClusterError(RuntimeError):
    """The cluster could not be created or started (the message says why and what to install)."""


def postgres_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and postgres."""
    def version(path: str) -> tuple:
        parts = Path(path).parent.name.split(".")
        return tuple(int(p) if p.isdigit() else 0 for p in parts)

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(bindir) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(bindir)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """``start()`` returns a SQLAlchemy URL; ``stop()`` stops the server and removes its folder."""

    def __init__(self, bindir: Path | None = None, options: str = "", database: str = DATABASE):
        self.database = database
        self.bindir = bindir or postgres_bindir()
        if self.bindir is None:
            raise ClusterError("No PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl): run "
                               "`bash scripts/test-deps.sh` (Debian package postgresql), or give --database-url.")
        self.options = options
        self.as_postgres: list[str] = []
        self.owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            import pwd

            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError("Running as root without a `postgres` user to run the server as: run "
                                   "`bash scripts/test-deps.sh`.") from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ClusterError("Running as root and `runuser` is missing (util-linux).")
            self.as_postgres = [runuser, "-u", "postgres", "--"]
            self.owner = (account.pw_uid, account.pw_gid)
        # A short path (the socket's must fit in 107 bytes) that `postgres` can reach: /tmp when root.
        self.root = Path(tempfile.mkdtemp(prefix="guichet-pg-", dir="/tmp" if self.owner else None))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port: int | None = None
        if self.owner:
            os.chown(self.root, *self.owner)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_postgres, *args], cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "LC_ALL": "C", "TZ": "UTC"})

    def _fail(self, what: str, result: subprocess.CompletedProcess | None = None) -> None:
        details = (result.stdout or "") + (result.stderr or "") if result is not None else ""
        if self.log.exists():
            details += "\n--- server log ---\n" + self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise ClusterError(f"PostgreSQL: {what}\n{details.strip()}")

    def start(self) -> str:
        result = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                           "-E", "UTF8", "--locale=C", "--no-sync")
        if result.returncode != 0:
            self._fail("initdb failed.", result)
        for _attempt in range(5):  # the free port may be taken by someone else in between
            self.port = _free_port()
            result = self._pg_ctl_start()
            if result.returncode == 0:
                break
        else:
            self._fail("pg_ctl start failed.", result)
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {self.database} ENCODING 'UTF8' TEMPLATE template0")
        finally:
            connection.close()
        return self.url

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} {FAST_OPTIONS} {self.options}"
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                         "-t", "60", "-o", options, "start")

    def pause(self) -> None:
        """Stop the server, keeping its data and port (the fault tests: the database goes away)."""
        result = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        if result.returncode != 0:
            self._fail("pg_ctl stop (pause) failed.", result)

    def resume(self) -> None:
        """Start it again after ``pause``, on the same port."""
        result = self._pg_ctl_start()
        if result.returncode != 0:
            self._fail("pg_ctl start (resume) failed.", result)

    def stop(self) -> None:
        if self.data.joinpath("postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
