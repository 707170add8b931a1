"""Tools that run conversations (eval, bench, soak) write only to their own database, and what an
earlier version wrote into the town's database by mistake can be found and removed."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TOWN_DATABASE_URL, town_fingerprint

GUICHET = str(Path(sys.executable).parent / "guichet")


def test_the_broker_writes_to_the_database_of_its_endpoint_config(tmp_path):
    from rasa.utils.endpoints import EndpointConfig

    from bot import db
    from bot.integrations.rasa_broker import TranscriptBroker
    from bot.tickets import TicketStore

    url = f"sqlite:///{tmp_path / 'own.db'}"
    db.upgrade(url)
    before = town_fingerprint()
    # As Rasa reads endpoints.yml: `url:` lands in EndpointConfig.url, not in its kwargs.
    config = EndpointConfig.from_dict({"type": "bot.integrations.rasa_broker.TranscriptBroker", "url": url})
    broker = asyncio.run(TranscriptBroker.from_endpoint_config(config))
    broker.publish({"event": "user", "sender_id": "eval-x-1", "text": "bonjour", "message_id": "m1",
                    "input_channel": "eval", "timestamp": 1_700_000_000})
    assert _texts(url, "eval-x-1") == ["bonjour"]
    assert town_fingerprint() == before


def _seed(url: str) -> None:
    """A real citizen conversation and what the tools leave: eval (channel eval), bench and soak
    senders, a ticket with its status history and an outbox line, and Rasa tracker events."""
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    from bot import db
    from bot.tickets import NewTicket, TicketStore
    from bot.transcript import record_bot_message, record_citizen_message

    db.upgrade(url)
    store = TicketStore(url)
    record_citizen_message(store, "123456789", "telegram", "le lampadaire est éteint", "tg-1")
    record_bot_message(store, "123456789", "rasa", "C'est noté", "tg-1")
    store.create(NewTicket(kind="report", queue="voirie", conversation_id="123456789", channel="telegram",
                           summary="le lampadaire est éteint", source_message_id="tg-1"))
    record_citizen_message(store, "eval-d-tk-01-ab12cd34", "eval", "trou rue Pasteur", "e-1")
    record_citizen_message(store, "bench-ours-8-1-faq-3f2a", "rest", "horaires ?", "b-1")
    record_bot_message(store, "bench-ours-8-1-faq-3f2a", "rasa", "La mairie est ouverte...", "b-1")
    ticket, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="soak-1-0001", channel="rest",
                                       summary="nid de poule", source_message_id="s-1"))
    store.set_status(ticket.id, "in_progress", actor="chef-voirie")
    sqlite_path = url.split("sqlite:///", 1)[1]
    trackers = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=sqlite_path)
    for sender in ("123456789", "bench-profile-x-1"):
        tracker = DialogueStateTracker.from_events(sender, [UserUttered("bonjour")])
        asyncio.run(trackers.save(tracker))


def _texts(url: str, conversation: str) -> list[str]:
    from sqlalchemy import select

    from bot.models import Message
    from bot.tickets import TicketStore

    with TicketStore(url).session() as session:
        return list(session.scalars(select(Message.text).where(Message.conversation_id == conversation)
                                    .order_by(Message.id)))


def _counts(url: str) -> dict:
    import sqlite3

    connection = sqlite3.connect(url.split("sqlite:///", 1)[1])
    try:
        return {name: connection.execute(f"select count(*) from {name}").fetchone()[0]
                for name in ("message", "ticket", "status_change", "outbox", "events")}
    finally:
        connection.close()


def test_tool_data_is_counted_then_removed_and_citizens_are_kept(tmp_path):
    from bot.tickets import TicketStore
    from bot.tool_data import remove_tool_data

    url = f"sqlite:///{tmp_path / 'town.db'}"
    _seed(url)
    before = _counts(url)
    report = remove_tool_data(TicketStore(url), dry_run=True)
    assert (report.conversations, report.messages, report.tickets) == (4, 3, 1)
    assert report.status_changes >= 1 and report.tracker_events >= 1
    assert _counts(url) == before  # a dry run changes nothing
    assert "Simulation" in "\n".join(report.lines())

    done = remove_tool_data(TicketStore(url), dry_run=False)
    assert done.messages == 3 and done.tickets == 1
    after = _counts(url)
    assert after["message"] == 2 and after["ticket"] == 1 and after["status_change"] == before["status_change"] - done.status_changes
    store = TicketStore(url)
    assert _texts(url, "123456789")[0] == "le lampadaire est éteint"
    assert store.for_conversation("123456789") and not store.for_conversation("soak-1-0001")
    assert remove_tool_data(store, dry_run=True).total == 0


def test_the_command_needs_a_confirmation_and_says_what_it_does(tmp_path):
    url = f"sqlite:///{tmp_path / 'town.db'}"
    _seed(url)
    env = dict(os.environ, GUICHET_DATABASE_URL=url, GUICHET_VAR_DIR=str(tmp_path))
    refused = subprocess.run([GUICHET, "db", "remove-tool-data"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--yes" in refused.stderr and "irréversible" in refused.stderr
    dry = subprocess.run([GUICHET, "db", "remove-tool-data", "--dry-run"], env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "Messages à supprimer : 3" in dry.stdout and "Simulation" in dry.stdout
    done = subprocess.run([GUICHET, "db", "remove-tool-data", "--yes"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "Messages supprimé(e)s : 3" in done.stdout
    assert _counts(url)["message"] == 2


@pytest.mark.slow
def test_eval_writes_only_to_its_own_database(model_path, tmp_path):
    from bot.evaluation import evaluate

    cases = tmp_path / "cases.yml"
    cases.write_text(yaml.safe_dump({"version": 1, "cases": [
        {"id": "iso-1", "turns": ["il y a un trou énorme rue Pasteur", "devant le 12 rue Pasteur"],
         "expect": "ticket:voirie"},
        {"id": "iso-2", "turns": ["je veux parler à un humain"], "expect": "handoff"},
    ]}, allow_unicode=True), encoding="utf-8")
    before = town_fingerprint()
    results, _ = evaluate(cases, model_path, work_dir=tmp_path)
    assert [r.outcome for r in results] == ["ticket:voirie", "handoff"]
    assert town_fingerprint() == before, f"guichet eval wrote into {TOWN_DATABASE_URL}"


@pytest.mark.slow
def test_bench_and_its_profile_write_only_to_their_own_database(model_path, tmp_path):
    from bot import bench

    before = town_fingerprint()
    options = bench.Options(levels=(2,), messages=6, parse_samples=2, profile_messages=4, out=tmp_path, stock=False)
    result = bench.bench_model("ours", model_path, options, bench.load_corpus(), log=lambda *_: None)
    assert result["levels"]["2"]["messages"] >= 6 and result["levels"]["2"]["errors"] == 0
    assert result["profile"]["messages"] >= 4
    assert town_fingerprint() == before, f"the bench wrote into {TOWN_DATABASE_URL}"
    from bot.tickets import TicketStore

    bench_store = TicketStore(f"sqlite:///{tmp_path / 'ours' / 'bench.db'}")
    with bench_store.session() as session:
        from sqlalchemy import func, select

        from bot.models import Message

        profiled = session.scalar(select(func.count()).select_from(Message)
                                  .where(Message.conversation_id.like("bench-profile-%")))
    assert profiled >= 4  # the profile's transcript is in the bench's own database
