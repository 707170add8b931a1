"""Shared fixtures: a fresh SQLite database per test, the trained model, a running stack."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The "town's database" of the test session: anything that falls back to the settings instead of
# using its own database lands here, and the session fails at the end if it changed (eval, soak,
# bench and the tests must write only to their own databases). It also keeps the developer's
# var/guichet.db out of reach of the tests.
TOWN_DIR = Path(tempfile.mkdtemp(prefix="guichet-town-"))
TOWN_DATABASE_URL = f"sqlite:///{TOWN_DIR / 'guichet.db'}"
os.environ["GUICHET_VAR_DIR"] = str(TOWN_DIR)
os.environ["GUICHET_DATABASE_URL"] = TOWN_DATABASE_URL
os.environ.pop("GUICHET_SPOOL_DIR", None)


def _free_port_now() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# `guichet run` started by tests also starts the website chat: never on the developer's port 8090.
os.environ["GUICHET_WEBCHAT_PORT"] = str(_free_port_now())
os.environ["GUICHET_OPEN311_PORT"] = str(_free_port_now())

# Property tests draw the same examples on every run (a CI run must not fail by luck); set
# GUICHET_HYPOTHESIS_RANDOM=1 to explore new ones locally.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("guichet", derandomize=os.environ.get("GUICHET_HYPOTHESIS_RANDOM") != "1")
_hypothesis_settings.load_profile("guichet")


def town_state() -> dict[str, str]:
    """A digest of every table of the town's database and of every file of its folder (spool...)."""
    state: dict[str, str] = {}
    connection = sqlite3.connect(TOWN_DIR / "guichet.db")
    try:
        tables = [row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")]
        for table in sorted(tables):
            rows = connection.execute(f'select * from "{table}" order by rowid').fetchall()
            state[f"table {table}"] = hashlib.sha256(repr(rows).encode()).hexdigest()
    finally:
        connection.close()
    for path in sorted(TOWN_DIR.rglob("*")):
        if path.is_file() and not path.name.startswith("guichet.db") and path.suffix != ".lock":
            state[f"file {path.relative_to(TOWN_DIR)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def town_fingerprint() -> str:
    return hashlib.sha256(repr(sorted(town_state().items())).encode()).hexdigest()


@pytest.fixture(scope="session", autouse=True)
def town_database_untouched():
    from bot import db
    from bot.tickets import NewTicket, TicketStore

    db.upgrade(TOWN_DATABASE_URL)
    TicketStore(TOWN_DATABASE_URL).create(NewTicket(kind="report", queue="voirie", conversation_id="tg-1",
                                                    channel="telegram", summary="lampadaire éteint"))
    before = town_state()
    yield
    after = town_state()
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    if changed:
        pytest.fail(f"a tool or a test wrote into the town's database or folder ({TOWN_DIR}) instead of its own: "
                    + ", ".join(changed))


@pytest.fixture
def database_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'tickets.db'}"


@pytest.fixture
def store(database_url):
    from bot.tickets import TicketStore

    return TicketStore(database_url)


@pytest.fixture
def profile():
    from bot.profile import load_profile

    return load_profile(ROOT / "collectivite.yml")


@pytest.fixture
def assistant(store, profile):
    from bot.assistant import Assistant
    from bot.hours import StaffHours
    from bot.replies import Replies

    replies = Replies.load(ROOT / "bot" / "replies.fr.yml", profile)
    return Assistant(profile, store, replies, StaffHours.from_town(profile.town))


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The trained model (trained here if `make test` did not already do it)."""
    from bot.stack import latest_model

    try:
        return latest_model(ROOT / "models")
    except FileNotFoundError:
        subprocess.run([str(Path(sys.executable).parent / "guichet"), "train"], cwd=ROOT, check=True)
        return latest_model(ROOT / "models")


@pytest.fixture(scope="module")
def stack(model_path, tmp_path_factory):
    """Action server + Rasa server on loopback, with their own SQLite database."""
    from bot.stack import running_stack

    var_dir = tmp_path_factory.mktemp("stack")
    url = f"sqlite:///{var_dir / 'guichet.db'}"
    with running_stack(model_path, url, var_dir, GUICHET_NOTICES_CACHE_SECONDS="0") as running:
        yield running


# --- PostgreSQL: a throw-away cluster on loopback, started by the test session itself ------------
# The ticket-table tests that must hold on PostgreSQL too (tests/test_postgres.py) use these.
# GUICHET_TEST_POSTGRES_URL=postgresql+psycopg2://user@host:port/db uses an existing server instead
# (its schema "public" is dropped and recreated for every test: give it a database of its own).
PG_DATABASE = "guichet_test"


def _postgres_bindir() -> Path | None:
    from bot.pg_cluster import postgres_bindir

    return postgres_bindir()


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cluster_class():
    """bot.pg_cluster.Cluster (initdb + pg_ctl in a temporary folder), whose errors end the test run
    with what to install (pytest.fail) instead of a traceback."""
    from bot import pg_cluster

    class Cluster(pg_cluster.Cluster):
        def __init__(self, bindir: Path):
            try:
                super().__init__(bindir, database=PG_DATABASE)
            except pg_cluster.ClusterError as error:
                pytest.fail(f"PostgreSQL tests: {error}", pytrace=False)

        def _fail(self, what: str, result=None) -> None:
            try:
                super()._fail(what, result)
            except pg_cluster.ClusterError as error:
                pytest.fail(f"PostgreSQL tests: {error}", pytrace=False)

    return Cluster


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server: GUICHET_TEST_POSTGRES_URL, or a cluster started here on 127.0.0.1.

    Never skipped: without the server binaries the tests fail and say how to install them.
    """
    url = os.environ.get("GUICHET_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL tests: no server binaries (/usr/lib/postgresql/*/bin/initdb, pg_ctl). "
                    "Run `bash scripts/test-deps.sh` (or `make test-deps`), which installs the Debian package "
                    "postgresql, or set GUICHET_TEST_POSTGRES_URL to a throw-away database.", pytrace=False)
    cluster = _cluster_class()(bindir)
    try:
        url = cluster.start()
        yield url
    finally:
        from bot import db

        if cluster.port is not None:  # close pooled connections so the shutdown has nothing to wait for
            db.get_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{cluster.port}/{PG_DATABASE}").dispose()
        cluster.stop()


def reset_postgres_schema(url: str) -> None:
    """Drop every table (schema public) and forget that bot.db already migrated this URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from bot import db

    db.get_engine(url).dispose()  # no pooled connection may hold a lock on the tables being dropped
    engine = create_engine(url, future=True, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '20s'"))
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    db._upgraded.discard(url)


@pytest.fixture
def pg_store(postgres_url):
    """A TicketStore on PostgreSQL with a fresh schema (Alembic migrations run by TicketStore)."""
    from bot.tickets import TicketStore

    reset_postgres_schema(postgres_url)
    return TicketStore(postgres_url)


# --- Faults: a PostgreSQL cluster the tests may stop and start, and the whole stack on it --------
@pytest.fixture(scope="module")
def restartable_postgres():
    """A PostgreSQL cluster of its own (``.url``, ``.pause()``, ``.resume()``) for the fault tests.

    With GUICHET_TEST_POSTGRES_URL (an external server the tests cannot stop) these tests are skipped.
    """
    if os.environ.get("GUICHET_TEST_POSTGRES_URL"):
        pytest.skip("database-restart tests need the throw-away cluster (GUICHET_TEST_POSTGRES_URL is set)")
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL tests: no server binaries. Run `bash scripts/test-deps.sh`.", pytrace=False)
    cluster = _cluster_class()(bindir)  # .pause() and .resume() keep its data and port
    try:
        cluster.start()
        yield cluster
    finally:
        from bot import db

        if cluster.port is not None:
            db.get_engine(cluster.url).dispose() if hasattr(cluster, "url") else None
        if not cluster.data.joinpath("postmaster.pid").exists() and cluster.data.exists():
            cluster.resume()  # a test failed while the server was paused: start it so stop() is clean
        cluster.stop()


@pytest.fixture(scope="module")
def pg_stack(model_path, tmp_path_factory, restartable_postgres):
    """The real stack (action server + Rasa server) on PostgreSQL: tracker store, tickets, transcript."""
    from bot.stack import running_stack

    var_dir = tmp_path_factory.mktemp("pgstack")
    with running_stack(model_path, restartable_postgres.url, var_dir) as running:
        running.postgres = restartable_postgres
        yield running


def staff_web_client(desk, username: str, password: str):
    """The staff web (Flask test client) logged in as ``username``; returns (client, csrf token)."""
    from bot.accounts import Accounts
    from bot.web import create_app

    app = create_app(desk_factory=lambda: desk, accounts=Accounts(desk.store, desk.profile), secret_key="clé de test",
                     session_minutes=60)
    app.config["TESTING"] = True
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        token = session["csrf_token"]
    client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    with client.session_transaction() as session:
        return client, session["csrf_token"]  # a new session (and token) after login


def cli_runner(env: dict):
    """``run(*args, code=0)``: the ``guichet`` command in-process with ``env``, its exit code checked."""
    from typer.testing import CliRunner

    from bot.cli import app as cli_app

    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(cli_app, [str(a) for a in args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code == code, result.output
        return result
    return run


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis server (Debian's redis-server) on a free loopback port, for the whole session."""
    from bot.local_services import MissingProgram, start_redis
    from bot.stack import stop

    port = _free_port()
    try:
        process = start_redis(port, tmp_path_factory.mktemp("redis"))
    except MissingProgram as error:
        pytest.fail(f"{error} (`bash scripts/test-deps.sh` installs it)", pytrace=False)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)
