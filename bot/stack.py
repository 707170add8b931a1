"""Start and stop the assistant's processes (action server, Rasa server) on loopback."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import requests
import yaml
from sqlalchemy.engine import make_url

from bot.settings import PROJECT_ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tracker_store_config(database_url: str) -> dict:
    """Rasa's SQL tracker store settings from one SQLAlchemy URL (same database as the tickets)."""
    url = make_url(database_url)
    # Rasa's SQLTrackerStore with pool_pre_ping and retries (survives a database restart).
    store_type = "bot.integrations.tracker_store.GuichetSQLTrackerStore"
    if url.get_backend_name() == "sqlite":
        return {"type": store_type, "dialect": "sqlite", "db": url.database}
    config = {"type": store_type, "dialect": url.drivername, "url": url.host, "db": url.database}
    if url.port:
        config["port"] = url.port
    if url.username:
        config["username"] = url.username
    if url.password:
        config["password"] = url.password
    return config


def write_endpoints(path: Path, action_port: int, database_url: str, persist_tracker: bool = True,
                    redis_url: str | None = None) -> Path:
    """Rasa's endpoints.yml. ``redis_url``: several Rasa servers share their conversation locks there
    (``bot.integrations.lock_store``; ``action_port`` is then the proxy's, before the action servers)."""
    endpoints = {
        "action_endpoint": {"url": f"http://127.0.0.1:{action_port}/webhook"},
        # The transcript broker + Rasa speed-ups measured by `guichet bench` (README "Speed").
        "event_broker": {"type": "bot.integrations.rasa_speedups.TranscriptBroker", "url": database_url},
    }
    if persist_tracker:
        endpoints["tracker_store"] = tracker_store_config(database_url)
    if redis_url:
        endpoints["lock_store"] = {"type": "bot.integrations.lock_store.SharedLockStore", "url": redis_url}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(endpoints, sort_keys=False), encoding="utf-8")
    return path


def wait_http(url: str, process: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with code {process.returncode} before {url} answered\n{tail}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


@contextmanager
def own_database(database_url: str, work_dir: Path) -> Iterator[None]:
    """For the tools that run conversations inside this process (``guichet eval``, the bench
    profile): whatever falls back to the settings (broker, spool, notifications) uses the tool's
    own database and folder, never the town's."""
    overrides = {"GUICHET_DATABASE_URL": database_url, "GUICHET_SPOOL_DIR": str(Path(work_dir) / "spool")}
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def base_env(database_url: str, **extra: str) -> dict:
    env = dict(os.environ)
    env.update({"GUICHET_DATABASE_URL": database_url, "PYTHONPATH": str(PROJECT_ROOT),
                "SQLALCHEMY_SILENCE_UBER_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    env.update(extra)
    return env


def start_action_server(port: int, env: dict, log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(BIN / "python"), "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
        cwd=PROJECT_ROOT, env={**env, "SANIC_HOST": "127.0.0.1"},  # rasa_sdk binds 0.0.0.0 otherwise
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/health", process, 60, log)
    return process


def start_rasa_server(port: int, model: Path, endpoints: Path, env: dict, log: Path,
                      token: str | None = None) -> subprocess.Popen:
    command = [str(BIN / "rasa"), "run", "--enable-api", "--interface", "127.0.0.1", "--port", str(port),
               "--model", str(model), "--endpoints", str(endpoints),
               "--credentials", str(PROJECT_ROOT / "credentials.yml"), "--log-file", str(log)]
    if token:
        command += ["--auth-token", token]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log.with_suffix(".out").open("ab"),
                               stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/status" + (f"?token={token}" if token else ""), process, 180,
              log.with_suffix(".out"))
    return process


class StopRequested(KeyboardInterrupt):
    """SIGTERM, SIGINT or SIGHUP arrived: unwind, so that every ``finally`` stops its children."""


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM (``systemctl stop``, ``docker stop``), SIGHUP and SIGINT into a clean stop.

    Python's default SIGTERM ends the process at once (no ``finally``: the Rasa and action servers
    were left running without a parent), and a shell that starts a job in the background makes it
    ignore SIGINT, which Python then keeps. Here the first signal unwinds the stack; later ones
    only say that the stop is under way, so they cannot interrupt it half-way.
    """
    import signal

    names = ("SIGTERM", "SIGINT", "SIGHUP")
    previous = {name: signal.getsignal(getattr(signal, name)) for name in names}

    def while_stopping(signum, frame) -> None:
        print("Arrêt déjà en cours : les serveurs finissent les messages en cours.", file=sys.stderr, flush=True)

    def first(signum, frame) -> None:
        for name in names:
            signal.signal(getattr(signal, name), while_stopping)
        raise StopRequested(signal.Signals(signum).name)

    for name in names:
        signal.signal(getattr(signal, name), first)
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler if handler is not None else signal.SIG_DFL)


def stop(process: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds. Sanic (Rasa, the action server) finishes
    the requests in flight on SIGTERM (its graceful shutdown lasts up to 15 s)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@dataclass
class Stack:
    action_port: int
    rasa_port: int
    database_url: str
    action: subprocess.Popen | None = None
    rasa: subprocess.Popen | None = None
    start_rasa: "Callable[[], subprocess.Popen] | None" = None
    start_action: "Callable[[], subprocess.Popen] | None" = None
    spool_dir: Path | None = None  # where the Rasa server keeps messages while the database is down

    def restart_rasa(self) -> None:
        """Stop and start the Rasa server (conversations must survive: SQL tracker store)."""
        stop(self.rasa)
        self.rasa = self.start_rasa()

    def kill_action(self) -> None:
        """Kill the action server at once (SIGKILL: no clean shutdown), as a crash would."""
        if self.action is not None and self.action.poll() is None:
            self.action.kill()
            self.action.wait(10)

    def restart_action(self) -> None:
        """Start the action server again (after ``kill_action`` or a crash); stops it first if running."""
        stop(self.action)
        self.action = self.start_action()

    @property
    def rasa_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def rest_url(self) -> str:
        return f"{self.rasa_url}/webhooks/rest/webhook"

    @property
    def chat_url(self) -> str:
        """The REST channel with the staff relay (``/outbox`` beside it)."""
        return f"{self.rasa_url}/webhooks/guichet/webhook"


@contextmanager
def running_stack(model: Path, database_url: str, var_dir: Path, action_port: int | None = None,
                  rasa_port: int | None = None, token: str | None = None, **env_extra: str) -> Iterator[Stack]:
    """Action server + Rasa server (REST channel, HTTP API) on loopback, stopped on exit."""
    from bot import db

    db.upgrade(database_url)
    stack = Stack(action_port or free_port(), rasa_port or free_port(), database_url)
    env_extra.setdefault("GUICHET_SPOOL_DIR", str(var_dir / "spool"))  # messages kept while the database is down
    stack.spool_dir = Path(env_extra["GUICHET_SPOOL_DIR"])
    env = base_env(database_url, GUICHET_RASA_URL=stack.rasa_url, **env_extra)
    endpoints = write_endpoints(var_dir / f"endpoints-{stack.rasa_port}.yml", stack.action_port, database_url)
    try:
        stack.start_action = lambda: start_action_server(stack.action_port, env, var_dir / "logs" / "actions.log")
        stack.action = stack.start_action()
        stack.start_rasa = lambda: start_rasa_server(stack.rasa_port, model, endpoints, env,
                                                     var_dir / "logs" / "rasa.log", token)
        stack.rasa = stack.start_rasa()
        yield stack
    finally:
        stop(stack.rasa)
        stop(stack.action)


def latest_model(model_dir: Path) -> Path:
    models = sorted(model_dir.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not models:
        raise FileNotFoundError(f"no trained model in {model_dir}: run `guichet train` (or `make train`)")
    return models[-1]
