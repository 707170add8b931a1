"""Faults on the real processes, with the stack on PostgreSQL (tracker store + tickets + transcript):
the action server killed, the Rasa server stopped and restarted, the database stopped and started.

Whatever breaks, the citizen gets an answer (the short "souci technique, votre message est bien
conservé" when a part is down), every message ends up in the database, a hand-off stays handed
off, and a retried step never creates a second ticket.
"""
from __future__ import annotations

import uuid

import pytest
import requests

from bot.integrations import reliability
from bot.stack import stop
from bot.tickets import TicketStore

pytestmark = pytest.mark.slow
TIMEOUT = 120
TECHNICAL = "souci technique"


def post(stack, sender: str, text: str, message_id: str | None = None) -> list[str]:
    body = {"sender": sender, "message": text}
    if message_id:
        body["message_id"] = message_id
    response = requests.post(stack.chat_url, json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return [m.get("text") or "" for m in response.json()]


def citizen_lines(store: TicketStore, sender: str) -> list[str]:
    return [m.text for m in store.conversation_messages(sender) if m.author == "citizen"]


@pytest.fixture
def store(pg_stack) -> TicketStore:
    return TicketStore(pg_stack.database_url)


@pytest.fixture
def sender() -> str:
    return f"fault-{uuid.uuid4().hex[:10]}"


def test_action_server_killed_mid_conversation(pg_stack, store, sender):
    assert any("Où exactement" in r for r in post(pg_stack, sender, "le lampadaire ne s'allume plus"))
    handed = f"{sender}-cm"
    post(pg_stack, handed, "je veux parler à un conseiller humain")
    assert store.open_handoff(handed) is not None
    pg_stack.kill_action()
    try:
        replies = post(pg_stack, sender, "devant le 3 rue des Acacias")
        assert len(replies) == 1 and TECHNICAL in replies[0]
        newcomer = post(pg_stack, f"{sender}-new", "la piscine est ouverte le dimanche ?")
        assert len(newcomer) == 1 and TECHNICAL in newcomer[0]
        assert post(pg_stack, handed, "toujours là ?") == []  # the hand-off stays silent: no apology needed
    finally:
        pg_stack.restart_action()
    assert citizen_lines(store, sender) == ["le lampadaire ne s'allume plus", "devant le 3 rue des Acacias"]
    assert citizen_lines(store, f"{sender}-new") == ["la piscine est ouverte le dimanche ?"]
    assert citizen_lines(store, handed)[-1] == "toujours là ?"
    assert [m.text for m in store.transcript(store.open_handoff(handed).id)][-1] == "toujours là ?"
    # back up: the conversation carries on and ends with exactly one ticket
    replies = post(pg_stack, sender, "le lampadaire devant le 3 rue des Acacias ne s'allume plus")
    assert replies and all(TECHNICAL not in r for r in replies)
    if any("Où exactement" in r for r in replies):
        replies = post(pg_stack, sender, "devant le 3 rue des Acacias")
    tickets = store.for_conversation(sender)
    assert len(tickets) == 1 and tickets[0].queue == "voirie"
    assert post(pg_stack, handed, "allô ?") == []


def test_action_server_retried_creates_no_second_ticket(pg_stack, store, sender):
    """Rasa (or a proxy) calling the action server twice for the same citizen message: one ticket."""
    tracker = {
        "sender_id": sender, "paused": False, "followup_action": None, "active_loop": {}, "events": [],
        "latest_action_name": "ticket_form", "latest_input_channel": "guichet",
        "slots": {"ticket_service": "voirie", "ticket_kind": "report", "ticket_description": "nid de poule",
                  "ticket_location": "rue des Acacias", "ticket_detail": "nid de poule"},
        "latest_message": {"text": "rue des Acacias", "intent": {"name": "inform_location", "confidence": 1.0},
                           "entities": [], "message_id": f"retry-{uuid.uuid4().hex}"},
    }
    call = {"next_action": "action_create_ticket", "sender_id": sender, "tracker": tracker,
            "domain": {}, "version": "3.6.21"}
    url = f"http://127.0.0.1:{pg_stack.action_port}/webhook"
    first = requests.post(url, json=call, timeout=TIMEOUT).json()
    second = requests.post(url, json=call, timeout=TIMEOUT).json()
    [ticket] = store.for_conversation(sender)
    texts = [r.get("text") for r in first["responses"]] + [r.get("text") for r in second["responses"]]
    assert all(ticket.reference in t for t in texts)


def test_same_message_posted_again_after_a_timeout(pg_stack, store, sender):
    post(pg_stack, sender, "il y a un nid de poule énorme", message_id="1")
    first = post(pg_stack, sender, "devant le 14 boulevard Victor Hugo", message_id="2")
    # the client timed out and posts again (same message id): the same answer, nothing done twice
    assert post(pg_stack, sender, "devant le 14 boulevard Victor Hugo", message_id="2") == first
    pg_stack.restart_rasa()  # even when the first answer was lost with the server
    post(pg_stack, sender, "devant le 14 boulevard Victor Hugo", message_id="2")
    assert len(store.for_conversation(sender)) == 1
    assert citizen_lines(store, sender) == ["il y a un nid de poule énorme", "devant le 14 boulevard Victor Hugo"]


def test_rasa_down_the_local_chat_answers_and_keeps_the_message(pg_stack, store, sender, monkeypatch, capsys):
    from bot import cli

    handed = f"{sender}-cm"
    post(pg_stack, handed, "passez-moi une vraie personne")
    ticket = store.open_handoff(handed)
    stop(pg_stack.rasa)
    try:
        typed = iter(["bonjour, la mairie est ouverte samedi ?", "/quit"])
        monkeypatch.setattr("builtins.input", lambda prompt="": next(typed))
        cli._chat_loop(pg_stack.chat_url, sender, requests, pg_stack.database_url, pause=0.2)
        assert TECHNICAL in capsys.readouterr().out
        typed = iter(["vous êtes là ? c'est urgent", "/quit"])
        cli._chat_loop(pg_stack.chat_url, handed, requests, pg_stack.database_url, pause=0.2)
    finally:
        pg_stack.rasa = pg_stack.start_rasa()
    assert citizen_lines(store, sender) == ["bonjour, la mairie est ouverte samedi ?"]
    assert [m.text for m in store.transcript(ticket.id) if m.author == "citizen"][-1] == "vous êtes là ? c'est urgent"
    # after the restart the hand-off is still a hand-off, and the other conversation works again
    assert post(pg_stack, handed, "toujours personne ?") == []
    assert store.open_handoff(handed).id == ticket.id
    assert any("Bonjour" in r or "mairie" in r for r in post(pg_stack, sender, "bonjour"))


def test_database_restart(pg_stack, store, sender):
    handed = f"{sender}-cm"
    post(pg_stack, handed, "je veux parler à quelqu'un de la mairie")
    ticket = store.open_handoff(handed)
    assert any("Où exactement" in r for r in post(pg_stack, sender, "un lampadaire est cassé"))
    spool = pg_stack.spool_dir / "messages.jsonl"
    pg_stack.postgres.pause()
    try:
        replies = post(pg_stack, sender, "devant le 8 rue Pasteur")
        assert len(replies) == 1 and TECHNICAL in replies[0]
        # while the database is down nobody can tell whether a hand-off is open: the short apology
        assert all(TECHNICAL in r for r in post(pg_stack, handed, "il y a quelqu'un ?"))
        assert reliability.spooled_count(spool) == 2
    finally:
        pg_stack.postgres.resume()
    # back: the next message works, the spooled messages reach the transcript, the hand-off holds
    replies = post(pg_stack, sender, "devant le 8 rue Pasteur")
    assert replies and all(TECHNICAL not in r for r in replies)
    assert reliability.spooled_count(spool) == 0
    lines = citizen_lines(store, sender)
    assert lines == ["un lampadaire est cassé", "devant le 8 rue Pasteur", "devant le 8 rue Pasteur"]
    assert len(store.for_conversation(sender)) == 1
    assert post(pg_stack, handed, "allô ?") == []
    assert [m.text for m in store.transcript(ticket.id) if m.author == "citizen"][-2:] == ["il y a quelqu'un ?", "allô ?"]
    assert store.open_handoff(handed).id == ticket.id
