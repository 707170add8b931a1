"""Engine, sessions and migrations for the ticket database (any SQLAlchemy URL)."""
from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import QueuePool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
logger = logging.getLogger(__name__)
T = TypeVar("T")


def _prepare_sqlite(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=16)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _prepare_sqlite(url)
        # A small pool instead of SQLAlchemy's default NullPool for SQLite files: without it every
        # query opened the file, ran the pragmas and closed it again (measured by `guichet bench`:
        # 16.8 -> 24.3 messages/s one conversation at a time, with synchronous=NORMAL below).
        engine = create_engine(url, future=True, poolclass=QueuePool, pool_size=5, max_overflow=10,
                               connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # the Rasa server and action server share the file
            # In WAL mode NORMAL never corrupts and survives a process crash; only a power cut can
            # lose the last transactions (the embedded default; production runs on PostgreSQL).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # pool_pre_ping: a connection broken by a database restart is replaced before use, so the
    # first request after the restart works instead of failing (see README, "Reliability").
    return create_engine(url, future=True, pool_pre_ping=True, pool_size=5, max_overflow=10, pool_recycle=3600)


def is_transient(error: BaseException) -> bool:
    """A database error worth retrying: connection lost or refused, database locked (SQLite)."""
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and bool(getattr(error, "connection_invalidated", False))


def retrying(function: Callable[..., T], *args, attempts: int = 3, delay: float = 0.3, **kwargs) -> T:
    """Call ``function``; on a transient database error wait a little and try again (blocking).

    For short, idempotent-enough steps (reads, recording one message). A real outage still raises
    after ``attempts`` tries, so the caller can fall back (the spool, a technical-problem answer).
    """
    for attempt in range(1, attempts + 1):
        try:
            return function(*args, **kwargs)
        except DBAPIError as error:
            if attempt == attempts or not is_transient(error):
                raise
            logger.warning("database error (attempt %d/%d), retrying: %s", attempt, attempts,
                           str(error).splitlines()[0][:200])
            time.sleep(delay * attempt)
    raise AssertionError("unreachable")


@lru_cache(maxsize=16)
def get_sessionmaker(url: str) -> sessionmaker:
    return sessionmaker(bind=get_engine(url), future=True, expire_on_commit=False)


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


_upgraded: set[str] = set()


def upgrade(url: str) -> None:
    """Bring the schema to the latest migration (idempotent, cheap after the first call)."""
    if url in _upgraded:
        return
    from alembic import command

    if url.startswith("sqlite"):
        _prepare_sqlite(url)
    command.upgrade(alembic_config(url), "head")
    _upgraded.add(url)
