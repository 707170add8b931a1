"""Several servers on one machine: N Rasa servers, M action servers, K staff web processes, the
website chat and the Open311 API behind nginx, on one PostgreSQL and one Redis (``guichet stack``).

What is shared, and where (README "Several servers"):

- PostgreSQL: tickets, transcripts, Rasa's conversations (SQL tracker store: each server checks
  that its cached copy is still the database's before using it), the outbox (each message claimed
  by one sender), staff accounts and sessions;
- Redis: the conversation locks (``bot.integrations.lock_store``), flood and login limits, the REST
  channel's answers to retried messages, the gateways' active copy (``bot.leadership``);
- nginx (``bot.proxy``): the one public port, and the action servers' port for the Rasa servers.

Each part can be killed and restarted (``kill_rasa``, ``restart_rasa``...): the soak does it
(``bot.soak --servers``) to prove that nothing is lost or doubled when one dies mid-message.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from bot import local_services, proxy
from bot.stack import BIN, base_env, free_port, start_action_server, start_rasa_server, stop, wait_http, write_endpoints
from bot.settings import PROJECT_ROOT


@dataclass
class Part:
    """One process of the cluster, which can be killed (SIGKILL, as a crash) and started again."""

    name: str
    port: int
    launch: Callable[[], subprocess.Popen]
    process: Optional[subprocess.Popen] = None
    restarts: int = 0

    def start(self) -> None:
        self.process = self.launch()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        stop(self.process)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        stop(self.process)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Cluster:
    model: Path
    database_url: str
    work_dir: Path
    redis_url: Optional[str] = None
    rasa_count: int = 2
    action_count: int = 2
    staff_count: int = 2
    webchat_count: int = 1
    open311_count: int = 1
    proxy_port: int = 0
    extra_env: dict = field(default_factory=dict)  # settings for every process (e.g. the soak's flood limits)
    rasa: list[Part] = field(default_factory=list)
    actions: list[Part] = field(default_factory=list)
    staff: list[Part] = field(default_factory=list)
    webchat: list[Part] = field(default_factory=list)
    open311: list[Part] = field(default_factory=list)
    _redis: Optional[subprocess.Popen] = None
    _nginx: Optional[subprocess.Popen] = None
    actions_proxy_port: int = 0

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def chat_url(self) -> str:
        return f"{self.proxy_url}/webhooks/guichet/webhook"

    def env(self, **extra: str) -> dict:
        return base_env(self.database_url, GUICHET_REDIS_URL=self.redis_url or "", GUICHET_RASA_URL=self.proxy_url,
                        GUICHET_WEB_TRUSTED_PROXIES="1", GUICHET_VAR_DIR=str(self.work_dir),
                        **{**self.extra_env, **extra})

    # --- starting ------------------------------------------------------------------------------------
    def start(self) -> None:
        from bot import db

        self.work_dir = Path(self.work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        logs = self.work_dir / "logs"
        db.upgrade(self.database_url)
        if not self.redis_url:
            port = free_port()
            self._redis = local_services.start_redis(port, self.work_dir / "redis")
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.proxy_port = self.proxy_port or free_port()
        self.actions_proxy_port = free_port()
        for number in range(self.action_count):
            port = free_port()
            self.actions.append(Part(f"actions-{number + 1}", port, lambda port=port, n=number: start_action_server(
                port, self.env(), logs / f"actions-{n + 1}.log")))
        for number in range(self.rasa_count):
            port = free_port()
            endpoints = write_endpoints(self.work_dir / f"endpoints-rasa-{number + 1}.yml", self.actions_proxy_port,
                                        self.database_url, redis_url=self.redis_url)
            self.rasa.append(Part(f"rasa-{number + 1}", port, lambda port=port, n=number, e=endpoints: start_rasa_server(
                port, self.model, e, self.env(GUICHET_SPOOL_DIR=str(self.work_dir / f"spool-{n + 1}")),
                logs / f"rasa-{n + 1}.log")))
        for number in range(self.staff_count):
            port = free_port()
            self.staff.append(Part(f"staff-{number + 1}", port, lambda port=port, n=number: self._process(
                [str(BIN / "guichet"), "staff", "serve", "--port", str(port)], logs / f"staff-{n + 1}.log",
                f"http://127.0.0.1:{port}/login")))
        for number in range(self.webchat_count):
            port = free_port()
            self.webchat.append(Part(f"webchat-{number + 1}", port, lambda port=port, n=number: self._process(
                [str(BIN / "python"), "-m", "bot.channels.webchat"], logs / f"webchat-{n + 1}.log", f"http://127.0.0.1:{port}/chat/health",
                GUICHET_WEBCHAT_PORT=str(port), GUICHET_WEBCHAT_ORIGINS=self.proxy_url)))
        for number in range(self.open311_count):
            port = free_port()
            self.open311.append(Part(f"open311-{number + 1}", port, lambda port=port, n=number: self._process(
                [str(BIN / "python"), "-m", "bot.open311"], logs / f"open311-{n + 1}.log",
                f"http://127.0.0.1:{port}/open311/v2/services.json", GUICHET_OPEN311_PORT=str(port))))
        self._start_all(self.actions)
        self._start_all(self.rasa + self.staff + self.webchat + self.open311)
        config = proxy.write_config(self.work_dir / "nginx" / "nginx.conf", self.work_dir / "nginx",
                                    f"127.0.0.1:{self.proxy_port}", f"127.0.0.1:{self.actions_proxy_port}",
                                    rasa=[p.address for p in self.rasa], actions=[p.address for p in self.actions],
                                    staff=[p.address for p in self.staff], webchat=[p.address for p in self.webchat],
                                    open311=[p.address for p in self.open311])
        self._nginx = local_services.start_nginx(config, self.work_dir / "nginx", self.proxy_port)

    def _process(self, command: list[str], log: Path, health_url: str, **extra: str) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=self.env(**extra),
                                   stdout=log.open("ab"), stderr=subprocess.STDOUT)
        wait_http(health_url, process, 90, log)
        return process

    @staticmethod
    def _start_all(parts: list[Part]) -> None:
        """Start in parallel (a Rasa server takes tens of seconds to load its model)."""
        errors: list[BaseException] = []

        def start(part: Part) -> None:
            try:
                part.start()
            except BaseException as error:  # noqa: BLE001 - raised below, after the others
                errors.append(error)

        threads = [threading.Thread(target=start, args=(part,)) for part in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def stop(self) -> None:
        stop(self._nginx)
        for part in self.webchat + self.open311 + self.staff + self.rasa + self.actions:
            part.stop()
        stop(self._redis)


@contextmanager
def running_cluster(model: Path, database_url: str, work_dir: Path, **options) -> Iterator[Cluster]:
    cluster = Cluster(model=model, database_url=database_url, work_dir=work_dir, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def throwaway_postgres(max_connections: int = 400) -> Iterator[str]:
    """A PostgreSQL cluster of our own on loopback (the soak, the bench, trying ``guichet stack``)."""
    from bot.pg_cluster import Cluster as PostgresCluster

    server = PostgresCluster(options=f"-c max_connections={max_connections}")
    try:
        yield server.start()
    finally:
        from bot import db

        db.get_engine(server.url).dispose()
        server.stop()


def describe(cluster: Cluster) -> list[str]:
    """What ``guichet stack`` prints (French, for the operator)."""
    def ports(parts: list[Part]) -> str:
        return ", ".join(str(p.port) for p in parts) or "aucun"

    return [
        f"Proxy nginx : {cluster.proxy_url} (canal REST : {cluster.chat_url}, équipe : {cluster.proxy_url}/, "
        f"discussion du site : {cluster.proxy_url}/chat/demo)",
        f"Serveurs Rasa : {ports(cluster.rasa)} ; serveurs d'actions : {ports(cluster.actions)} "
        f"(derrière 127.0.0.1:{cluster.actions_proxy_port})",
        f"Interface de l'équipe : {ports(cluster.staff)} ; discussion du site : {ports(cluster.webchat)} ; "
        f"Open311 : {ports(cluster.open311)}",
        f"Base : {cluster.database_url.split('@')[-1]} ; Redis : {cluster.redis_url}",
        f"Journaux : {cluster.work_dir / 'logs'}",
    ]


if __name__ == "__main__":  # pragma: no cover - `guichet stack` is the entry point
    sys.exit("Utilisez `guichet stack` (voir `guichet stack --help`).")
