"""`guichet run` stops all its children on SIGTERM (systemctl stop, docker stop), SIGINT (even when
started in the background, where the shell makes it ignore SIGINT) and SIGHUP, and the message in
flight at that moment is answered or kept."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from conftest import ROOT

pytestmark = pytest.mark.slow
GUICHET = str(Path(sys.executable).parent / "guichet")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (read from /proc: children of children too)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_run(tmp_path: Path, model_path: Path, ignore_sigint: bool = False):
    from bot.stack import free_port

    rasa_port = free_port()
    env = dict(os.environ, GUICHET_VAR_DIR=str(tmp_path), GUICHET_DATABASE_URL=f"sqlite:///{tmp_path / 'town.db'}",
               GUICHET_RASA_PORT=str(rasa_port), GUICHET_ACTION_PORT=str(free_port()), PYTHONUNBUFFERED="1")
    env.pop("GUICHET_TELEGRAM_TOKEN", None)

    def background_job():  # what `guichet run &` gets from a non-interactive shell
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = subprocess.Popen([GUICHET, "run", "--no-chat", "--model", str(model_path)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=background_job if ignore_sigint else None)
    output: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            output.append(line)
            if line.startswith("Prêt."):
                ready.set()
    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(240):
        process.kill()
        pytest.fail("guichet run did not get ready:\n" + "".join(output))
    return process, f"http://127.0.0.1:{rasa_port}/webhooks/guichet/webhook", env["GUICHET_DATABASE_URL"], output


def stop_with(process, signum: int, rest_url: str, database_url: str, output: list[str]) -> None:
    children = descendants(process.pid)
    assert len(children) >= 2, "the Rasa server and the action server run under guichet run"
    answer: dict = {}

    def in_flight() -> None:
        try:
            response = requests.post(rest_url, json={"sender": "citoyen-signal", "message": "il y a un trou énorme rue Pasteur",
                                                     "client_id": "sig-1"}, timeout=60)
            answer["status"] = response.status_code
            answer["body"] = response.json() if response.ok else response.text
        except requests.RequestException as exc:
            answer["error"] = exc
    sender = threading.Thread(target=in_flight)
    sender.start()
    time.sleep(0.3)  # the message is on its way when the signal arrives
    process.send_signal(signum)
    code = process.wait(90)
    sender.join(90)
    leftovers = {pid for pid in children if alive(pid)}
    assert not leftovers, f"children left running after {signal.Signals(signum).name}: {leftovers}"
    assert code == 0, "".join(output)
    assert "arrêté proprement" in "".join(output)

    from bot.models import Message
    from bot.tickets import TicketStore

    with TicketStore(database_url).session() as session:
        stored = list(session.scalars(select(Message.text).where(Message.conversation_id == "citoyen-signal",
                                                                 Message.author == "citizen")))
    answered = answer.get("status") == 200 and bool(answer.get("body"))
    assert answered or stored, f"the message in flight was neither answered nor kept: {answer}"


def test_sigterm_stops_every_child(tmp_path, model_path):
    process, url, database_url, output = start_run(tmp_path, model_path)
    stop_with(process, signal.SIGTERM, url, database_url, output)


def test_sigint_stops_it_even_when_started_in_the_background(tmp_path, model_path):
    process, url, database_url, output = start_run(tmp_path, model_path, ignore_sigint=True)
    stop_with(process, signal.SIGINT, url, database_url, output)


def test_sighup_stops_it_too(tmp_path, model_path):
    process, url, database_url, output = start_run(tmp_path, model_path)
    stop_with(process, signal.SIGHUP, url, database_url, output)
