"""Redis and nginx from Debian's packages, started on loopback for ``guichet stack`` and the tests.

Each runs in the foreground as a child process, with its files in a folder of ours (no system
service, no root): ``scripts/test-deps.sh`` installs the packages (``redis-server``, ``nginx``).
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

REDIS_BINARIES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
NGINX_BINARIES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx")


class MissingProgram(RuntimeError):
    """A program from Debian's packages is not installed (the message says which and how)."""


def find_program(name: str, candidates: tuple[str, ...], package: str) -> str:
    for candidate in candidates:
        if Path(candidate).exists():
            return candidate
    found = shutil.which(name)
    if found:
        return found
    raise MissingProgram(f"{name} introuvable : installez le paquet Debian « {package} » "
                         f"(apt-get install -y {package}, ou `make test-deps`).")


def wait_port(port: int, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"process exited with code {process.returncode} before port {port} opened\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout:.0f}s")


def start_redis(port: int, work_dir: Path) -> subprocess.Popen:
    """A Redis server on 127.0.0.1:``port``, in memory only (the lock store and shared counters
    are short-lived: nothing in Redis needs to survive a restart)."""
    binary = find_program("redis-server", REDIS_BINARIES, "redis-server")
    work_dir = Path(work_dir).resolve()  # redis changes into --dir before opening its log file
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / "redis.log"
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(work_dir), "--logfile", str(log), "--daemonize", "no", "--maxclients", "4000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_port(port, process, 20, log)
    return process


def start_nginx(config: Path, work_dir: Path, port: int) -> subprocess.Popen:
    """nginx in the foreground with our configuration (``bot.proxy`` writes it)."""
    binary = find_program("nginx", NGINX_BINARIES, "nginx")
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "logs").mkdir(exist_ok=True)
    log = work_dir / "logs" / "error.log"
    check = subprocess.run([binary, "-t", "-p", str(work_dir), "-c", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx refused its configuration {config}:\n{check.stderr[-2000:]}")
    process = subprocess.Popen([binary, "-p", str(work_dir), "-c", str(config), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=(work_dir / "logs" / "stderr.log").open("ab"))
    wait_port(port, process, 20, log)
    return process
