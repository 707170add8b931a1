"""Bench-only experiments (never loaded by the assistant itself).

`python -m bot.bench --lever NAME` starts the stack with this directory first on PYTHONPATH and
GUICHET_BENCH_LEVERS=NAME[,NAME]; Python imports this file at start-up in the Rasa server and the
action server, which changes their SQLite engines before anything creates one:
- sqlite-pool: keep SQLite connections in a pool (SQLAlchemy 1.4 uses NullPool for SQLite files:
  a new connection, pragmas and a close, with a WAL checkpoint, for every session);
- sqlite-normal: PRAGMA synchronous=NORMAL (WAL: no fsync at each commit, only at checkpoints;
  a power cut may lose the last transactions, an application crash loses nothing).
"""
import os

_LEVERS = {name.strip() for name in os.environ.get("GUICHET_BENCH_LEVERS", "").split(",") if name.strip()}

if _LEVERS & {"sqlite-pool", "sqlite-normal"}:
    import sqlalchemy
    import sqlalchemy.engine
    from sqlalchemy import event
    from sqlalchemy.pool import QueuePool

    _original = sqlalchemy.create_engine

    def create_engine(url, *args, **kwargs):
        text = str(url)
        is_file = text.startswith("sqlite") and ":memory:" not in text and text not in ("sqlite://", "sqlite:///")
        if is_file and "sqlite-pool" in _LEVERS:
            kwargs.setdefault("poolclass", QueuePool)
            kwargs.setdefault("pool_size", 8)
            kwargs.setdefault("max_overflow", 16)
            connect_args = dict(kwargs.get("connect_args") or {})
            connect_args.setdefault("check_same_thread", False)
            kwargs["connect_args"] = connect_args
        engine = _original(url, *args, **kwargs)
        if is_file and "sqlite-normal" in _LEVERS:
            @event.listens_for(engine, "connect")
            def _normal(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        return engine

    sqlalchemy.create_engine = create_engine
    sqlalchemy.engine.create_engine = create_engine
