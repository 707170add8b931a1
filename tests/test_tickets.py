import datetime as dt

import pytest

from sqlalchemy import select

from bot.models import Message, StatusChange, Ticket
from bot.tickets import NewTicket, TicketStore, format_reference, parse_reference
from bot.transcript import record_bot_message, record_citizen_message


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, database_url):
    """The ticket-table tests run on SQLite and on the real PostgreSQL server the suite starts."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_store")
    return TicketStore(database_url)


def new(conversation="conv-1", source="msg-1", **overrides):
    fields = dict(kind="report", queue="voirie", conversation_id=conversation, channel="rest",
                  summary="lampadaire éteint", source_message_id=source)
    fields.update(overrides)
    return NewTicket(**fields)


def test_reference_format_and_parsing():
    assert format_reference(2026, 123) == "T-2026-000123"
    assert parse_reference("où en est T-2026-000042 ?") == (2026, 42)
    assert parse_reference("ma ref t2026-000789 svp") == (2026, 789)
    assert parse_reference("ticket 000456") == (None, 456)
    assert parse_reference("il se passe quoi ?") is None


def test_create_ticket_gives_a_reference_and_an_audit_line(store):
    moment = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc)
    ticket, created = store.create(new(), now=moment)
    assert created and ticket.reference == f"T-2026-{ticket.id:06d}"
    assert ticket.status == "new" and ticket.created_at == dt.datetime(2026, 3, 2, 9, 0)
    with store.session() as session:
        audit = session.execute(select(StatusChange).where(StatusChange.ticket_id == ticket.id)).scalars().all()
    assert [(a.old_status, a.new_status, a.actor) for a in audit] == [(None, "new", "bot")]


def test_same_citizen_message_never_makes_two_tickets(store):
    first, created = store.create(new())
    again, created_again = store.create(new())
    assert created and not created_again and again.id == first.id
    with store.session() as session:
        assert session.execute(select(Ticket)).scalars().all().__len__() == 1


def test_status_lookup_only_reveals_the_citizens_own_tickets(store):
    mine, _ = store.create(new("alice", "a1"))
    theirs, _ = store.create(new("bob", "b1"))
    asked, found = store.citizen_lookup("alice", f"où en est {mine.reference}")
    assert asked == mine.reference and [t.id for t in found] == [mine.id]
    asked, found = store.citizen_lookup("alice", f"et {theirs.reference} ?")
    assert asked == theirs.reference and found == []
    _, latest = store.citizen_lookup("alice", "des nouvelles de mon signalement ?")
    assert [t.id for t in latest] == [mine.id]


def test_transcript_links_earlier_messages_and_the_handoff_keeps_messages(store):
    record_citizen_message(store, "c", "rest", "le lampadaire ne marche plus", "m1")
    record_bot_message(store, "c", "rasa", "Où exactement ?", "m1")
    ticket, _ = store.create(new("c", "m2"))
    record_citizen_message(store, "c", "rest", "devant le 3 rue des Acacias", "m2")
    assert [m.text for m in store.transcript(ticket.id)] == [
        "le lampadaire ne marche plus", "Où exactement ?", "devant le 3 rue des Acacias"]

    handoff, _ = store.create(new("c", "m3", kind="handoff", queue="cm", handoff_reason="human_request"))
    assert store.open_handoff("c").id == handoff.id
    received = []
    from bot import events
    events.subscribe("handoff_message", lambda ticket, message: received.append(message.text))
    try:
        record_citizen_message(store, "c", "rest", "allô ? il y a quelqu'un ?", "m4")
    finally:
        events._subscribers["handoff_message"].clear()
    assert received == ["allô ? il y a quelqu'un ?"]
    assert store.transcript(handoff.id)[-1].text == "allô ? il y a quelqu'un ?"
    store.set_status(handoff.id, "closed", "cm")
    assert store.open_handoff("c") is None


def test_bad_text_is_cleaned_not_lost(store):
    message = record_citizen_message(store, "c", "rest", "a\x00b\x07c" + "x" * 10000, "m1")
    assert message.text.startswith("abc") and len(message.text) <= 4000
    empty = record_citizen_message(store, "c", "rest", "   ", "m2")
    assert empty.text == "(message vide)"
    with store.session() as session:
        assert len(session.execute(select(Message)).scalars().all()) == 2


def test_new_handoffs_are_posted_to_the_notification_url(store, monkeypatch):
    """The hook other channels use: a local HTTP receiver gets the hand-off as JSON."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from bot import events, notify

    received, done = [], threading.Event()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GUICHET_NOTIFY_URL", f"http://127.0.0.1:{server.server_port}/hook")
    saved = {k: list(v) for k, v in events._subscribers.items()}
    notify._installed = False
    try:
        notify.install()
        ticket, _ = store.create(new("c9", "m9", kind="handoff", queue="cm", handoff_reason="press", urgent=False))
        events.emit("handoff_created", ticket=ticket)
        assert done.wait(5)
    finally:
        server.shutdown()
        events._subscribers.clear()
        events._subscribers.update(saved)
        notify._installed = False
    assert received[0]["event"] == "handoff_created" and received[0]["reference"] == ticket.reference
    assert received[0]["reason"] == "press" and received[0]["queue"] == "cm"
