"""Privacy (RGPD): a citizen sees only their own tickets, retention purge (figures kept), export and
erasure of one citizen's data (command line), and logs that hold no citizen text."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot import stats
from bot.assistant import Conversation
from bot.hours import StaffHours
from bot.models import Message, Outbox, StatusChange, Ticket
from bot.privacy import EVENTS, MARKER, PSEUDONYM_PREFIX, Privacy, PrivacyError
from bot.tickets import NewTicket, TicketStore
from conftest import ROOT

GUICHET = str(Path(sys.executable).parent / "guichet")
UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
OLD = dt.datetime(2025, 6, 2, 9, 0, tzinfo=UTC)  # a Monday, more than 365 days before NOW
NAME = "Gisèle Dupont-Marchal"
PHONE = "06 12 34 56 78"
SECRET = "ma fille Léa a été bousculée devant chez nous au 14 rue des Acacias"


# --- a citizen reads only their own tickets ------------------------------------------------------

def test_a_reference_from_another_conversation_reveals_nothing(store):
    theirs, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="alice", channel="rest",
                                       summary="trou devant le 3 rue Haute"))
    mine, _ = store.create(NewTicket(kind="report", queue="proprete", conversation_id="bob", channel="rest",
                                     summary="poubelle"))
    number = theirs.reference.rsplit("-", 1)[1]
    for text in (theirs.reference, theirs.reference.lower(), f"ticket {number}", f"dossier n° {number}",
                 f"où en est {theirs.reference.replace('-', '')} ?"):
        asked, found = store.citizen_lookup("bob", text)
        assert asked is not None and found == [], text
    asked, found = store.citizen_lookup("alice", theirs.reference)
    assert [t.id for t in found] == [theirs.id]
    # Without a reference: only bob's own tickets.
    assert [t.id for t in store.citizen_lookup("bob", "où en est mon signalement ?")[1]] == [mine.id]
    assert store.citizen_lookup("mallory", "où en sont mes demandes")[1] == []


def test_the_assistant_says_not_found_for_someone_elses_reference(store, assistant):
    theirs, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="alice", channel="rest",
                                       summary="trou devant le 3 rue Haute", citizen_name=NAME))
    now = dt.datetime(2026, 11, 17, 10, 0, tzinfo=UTC)
    reply = assistant.status(Conversation("mallory"), f"où en est le ticket {theirs.reference} ?", now)
    text = " ".join(reply.texts)
    assert reply.ticket is None and theirs.reference in text  # "je ne trouve pas T-..." and nothing more
    for leaked in ("Voirie", "trou devant", "rue Haute", NAME, "Nouveau", "nouveau", "en cours"):
        assert leaked not in text, leaked
    own = assistant.status(Conversation("alice"), f"où en est le ticket {theirs.reference} ?", now)
    assert own.ticket is not None and own.ticket.id == theirs.id and "Voirie" in " ".join(own.texts)


# --- retention purge -----------------------------------------------------------------------------

class Town:
    """A small history: an old closed ticket, an old FAQ conversation, a recent ticket, an old open one."""

    def __init__(self, store: TicketStore):
        self.store = store
        s = store
        s.add_message("old-citizen", "telegram", "citizen", f"Bonjour, {SECRET}, appelez-moi au {PHONE}",
                      author_name=NAME, external_id="tg-1", now=OLD)
        self.old, _ = s.create(NewTicket(kind="handoff", queue="cm", conversation_id="old-citizen",
                                         channel="telegram", summary=SECRET, location="14 rue des Acacias",
                                         handoff_reason="person_complaint", citizen_name=NAME,
                                         source_message_id="tg-1"), now=OLD)
        s.add_message("old-citizen", "telegram", "bot", "Je transmets à l'équipe.", ticket_id=self.old.id,
                      now=OLD + dt.timedelta(seconds=2))
        s.add_message("old-citizen", "telegram", "staff", f"Bonjour Madame Dupont-Marchal, je vous rappelle au {PHONE}",
                      ticket_id=self.old.id, author_name="Camille Martin", now=OLD + dt.timedelta(hours=2))
        s.add_message("old-citizen", "telegram", "staff", "Note : voisine de l'élu", ticket_id=self.old.id,
                      author_name="Camille Martin", private=True, now=OLD + dt.timedelta(hours=2, minutes=1))
        with s.session() as session:
            session.get(Ticket, self.old.id).first_response_at = (OLD + dt.timedelta(hours=2)).replace(tzinfo=None)
            session.add(Outbox(ticket_id=self.old.id, conversation_id="old-citizen", channel="telegram",
                               text=f"Bonjour Madame Dupont-Marchal, je vous rappelle au {PHONE}",
                               created_at=(OLD + dt.timedelta(hours=2)).replace(tzinfo=None)))
            session.commit()
        s.set_status(self.old.id, "resolved", "camille", note=f"rappelée au {PHONE}", now=OLD + dt.timedelta(days=1))
        s.set_status(self.old.id, "closed", "camille", now=OLD + dt.timedelta(days=2))
        # An old FAQ conversation (no ticket) and an old staff message sent without ticket.
        s.add_message("old-faq", "rest", "citizen", "la piscine est ouverte dimanche ? signé Gisèle",
                      now=OLD - dt.timedelta(days=30))
        s.add_message("old-faq", "rest", "bot", "La piscine ouvre le dimanche de 9 h à 12 h.",
                      now=OLD - dt.timedelta(days=30))
        # An old ticket still open: kept whole (a service still works on it).
        self.still_open, _ = s.create(NewTicket(kind="report", queue="voirie", conversation_id="old-open",
                                                channel="rest", summary="nid-de-poule rue Basse"), now=OLD)
        s.add_message("old-open", "rest", "citizen", "nid-de-poule rue Basse", ticket_id=self.still_open.id, now=OLD)
        # A recent closed ticket: within the retention period.
        recent_at = NOW - dt.timedelta(days=20)
        s.add_message("recent", "rest", "citizen", f"lampadaire éteint, {NAME}", now=recent_at)
        self.recent, _ = s.create(NewTicket(kind="report", queue="voirie", conversation_id="recent", channel="rest",
                                            summary="lampadaire éteint", citizen_name=NAME), now=recent_at)
        s.set_status(self.recent.id, "resolved", "victor", now=recent_at + dt.timedelta(days=2))


def add_events(store: TicketStore, rows: list[tuple[str, str, dt.datetime]]) -> None:
    """Rows of Rasa's tracker table (same table and columns as rasa's SQLTrackerStore)."""
    engine = store.session().get_bind()
    EVENTS.metadata.create_all(engine)
    with engine.begin() as connection:
        for sender, kind, when in rows:
            connection.execute(EVENTS.insert().values(sender_id=sender, type_name=kind, timestamp=when.timestamp(),
                                                      data=json.dumps({"event": kind, "text": SECRET})))


def events_of(store: TicketStore, sender: str) -> list[str]:
    with store.session() as session:
        return [r.type_name for r in session.execute(select(EVENTS).where(EVENTS.c.sender_id == sender)
                                                     .order_by(EVENTS.c.id))]


def figures_csv(store, profile, days: int) -> str:
    return stats.to_csv(stats.compute(store, profile, StaffHours.from_town(profile.town), now=NOW, days=days))


def everything_text(store: TicketStore, but: str = "") -> str:
    """Every text and identifier column of the database (except conversation ``but``), to look for
    what should be gone."""
    with store.session() as session:
        parts = []
        for t in session.execute(select(Ticket).where(Ticket.conversation_id != but)).scalars():
            parts += [t.conversation_id, t.citizen_name or "", t.location or "", t.summary, t.source_message_id or ""]
        for m in session.execute(select(Message).where(Message.conversation_id != but)).scalars():
            parts += [m.conversation_id, m.text, m.author_name or "", m.external_id or ""]
        for o in session.execute(select(Outbox)).scalars():
            parts += [o.conversation_id, o.text]
        for c in session.execute(select(StatusChange)).scalars():
            parts.append(c.note or "")
    return "\n".join(parts)


def test_purge_anonymises_what_is_past_retention_and_keeps_the_figures(store, profile):
    town = Town(store)
    add_events(store, [
        ("old-citizen", "session_started", OLD), ("old-citizen", "user", OLD), ("old-citizen", "bot", OLD),
        ("old-faq", "user", OLD - dt.timedelta(days=30)),
        ("old-open", "user", OLD),  # an open ticket: its paused state lives in the tracker, kept
        # still active: an old session and the current one (started after the cutoff)
        ("recent", "session_started", OLD), ("recent", "user", OLD),
        ("recent", "session_started", NOW - dt.timedelta(days=20)), ("recent", "user", NOW - dt.timedelta(days=20)),
    ])
    before = {days: figures_csv(store, profile, days) for days in (7, 30, 400, 600)}
    assert ",person_complaint,," in before[600] or "handoffs_by_reason,person_complaint,,1" in before[600]

    privacy = Privacy(store)
    dry = privacy.purge(365, now=NOW, dry_run=True)
    assert (dry.tickets, dry.messages, dry.orphan_messages, dry.outbox, dry.notes, dry.events) == (1, 4, 2, 1, 1, 6)
    assert NAME in everything_text(store) and len(events_of(store, "old-citizen")) == 3  # nothing changed

    report = privacy.purge(365, now=NOW)
    assert (report.tickets, report.messages, report.orphan_messages, report.outbox, report.notes,
            report.events) == (1, 4, 2, 1, 1, 6)
    assert any("Tickets anonymisés : 1" in line for line in report.lines())

    old = store.get(town.old.id)
    assert old.conversation_id.startswith(PSEUDONYM_PREFIX) and old.citizen_name is None
    assert old.location is None and old.summary == MARKER and old.source_message_id is None
    assert old.anonymised_at is not None
    assert (old.kind, old.queue, old.status, old.handoff_reason, old.reference) == (
        "handoff", "cm", "closed", "person_complaint", town.old.reference)
    lines = store.transcript(town.old.id)
    assert [m.author for m in lines] == ["citizen", "bot", "staff", "staff"]
    assert {m.text for m in lines} == {MARKER} and {m.conversation_id for m in lines} == {old.conversation_id}
    assert all(m.author_name is None and m.external_id is None for m in lines)
    text = everything_text(store, but="recent")
    for gone in (SECRET, PHONE, "Gisèle", "old-citizen", "old-faq", "tg-1", "Dupont-Marchal", "voisine de l'élu"):
        assert gone not in text, gone
    # The open ticket and the recent one are whole.
    assert store.get(town.still_open.id).summary == "nid-de-poule rue Basse"
    assert store.get(town.recent.id).citizen_name == NAME
    assert [m.text for m in store.conversation_messages("recent")] == [f"lampadaire éteint, {NAME}"]
    # Tracker events: gone for the purged conversations, the open one kept, the active one keeps its session.
    assert events_of(store, "old-citizen") == [] and events_of(store, "old-faq") == []
    assert events_of(store, "old-open") == ["user"]
    assert events_of(store, "recent") == ["session_started", "user"]
    # The figures are the same, for every period.
    for days, csv_text in before.items():
        assert figures_csv(store, profile, days) == csv_text, days
    # The citizen can no longer be found, by conversation or by reference.
    assert store.for_conversation("old-citizen") == []
    with pytest.raises(PrivacyError, match="déjà anonymisé"):
        privacy.conversation_for_reference(town.old.reference)
    # Idempotent.
    again = privacy.purge(365, now=NOW)
    assert (again.tickets, again.messages, again.orphan_messages, again.outbox, again.notes, again.events) == (
        0, 0, 0, 0, 0, 0)
    assert "Rien à faire" in again.lines()[-1]


def test_purge_keeps_the_same_pseudonym_for_one_conversation(store, profile):
    at = OLD
    store.add_message("conv", "rest", "citizen", "bonjour, horaires ?", now=at)  # an orphan FAQ turn
    first, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="conv", channel="rest",
                                      summary="trou"), now=at + dt.timedelta(minutes=5))
    second, _ = store.create(NewTicket(kind="report", queue="proprete", conversation_id="conv", channel="rest",
                                       summary="tag"), now=at + dt.timedelta(minutes=9))
    for ticket in (first, second):
        store.set_status(ticket.id, "closed", "agent", now=at + dt.timedelta(days=1))
    before = figures_csv(store, profile, 600)
    Privacy(store).purge(365, now=NOW)
    with store.session() as session:
        ids = set(session.execute(select(Ticket.conversation_id)).scalars())
        ids |= set(session.execute(select(Message.conversation_id)).scalars())
    assert len(ids) == 1 and ids.pop().startswith(PSEUDONYM_PREFIX)
    assert figures_csv(store, profile, 600) == before and "conversations,total,,1" in before


def test_purge_on_the_real_rasa_tracker_table(store):
    """The events table as Rasa's own SQLTrackerStore writes it (same file as the tickets)."""
    import asyncio

    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import BotUttered, SessionStarted, UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    database = store.url.split("///", 1)[1]
    tracker_store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=database)
    old = OLD.timestamp()
    tracker = DialogueStateTracker.from_events("rasa-conv", [
        SessionStarted(timestamp=old), UserUttered(SECRET, timestamp=old + 1), BotUttered("ok", timestamp=old + 2)])
    asyncio.run(tracker_store.save(tracker))
    store.add_message("rasa-conv", "rest", "citizen", SECRET, now=OLD)
    assert len(events_of(store, "rasa-conv")) == 3
    exported = Privacy(store).export("rasa-conv")
    assert [e["type"] for e in exported["tracker_events"]] == ["session_started", "user", "bot"]
    assert exported["tracker_events"][1]["data"]["text"] == SECRET
    report = Privacy(store).purge(365, now=NOW)
    assert report.events == 3 and report.orphan_messages == 1
    assert events_of(store, "rasa-conv") == []
    assert asyncio.run(tracker_store.retrieve("rasa-conv")) is None


# --- export and erasure from the command line ----------------------------------------------------

@pytest.fixture
def cli(database_url, tmp_path):
    env = dict(os.environ, GUICHET_DATABASE_URL=database_url, GUICHET_VAR_DIR=str(tmp_path))

    def run(*args, ok=True):
        result = subprocess.run([GUICHET, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        else:
            assert result.returncode != 0, result.stdout
            assert "Traceback" not in result.stderr, result.stderr
        return result
    return run


def test_export_by_conversation_or_reference(cli, store, tmp_path):
    town = Town(store)
    add_events(store, [("old-citizen", "user", OLD)])
    out = tmp_path / "export.json"
    said = cli("citizen", "export", "--reference", town.old.reference, "--out", str(out)).stdout
    assert "1 ticket(s)" in said and str(out) in said
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["conversation_id"] == "old-citizen"
    [ticket] = data["tickets"]
    assert ticket["reference"] == town.old.reference and ticket["citizen_name"] == NAME
    assert ticket["location"] == "14 rue des Acacias"
    assert [h["new_status"] for h in ticket["status_history"]] == ["new", "resolved", "closed"]
    assert [m["author"] for m in data["transcript"]] == ["citizen", "bot", "staff", "staff"]
    assert data["transcript"][3]["private"] is True
    assert PHONE in data["outbox"][0]["text"]
    assert data["tracker_events"][0]["data"]["text"] == SECRET
    # The same to standard output, by conversation id.
    assert json.loads(cli("citizen", "export", "old-citizen").stdout)["tickets"][0]["id"] == town.old.id


@pytest.mark.parametrize("args, message", [
    (("citizen", "export", "personne-ici"), "Aucune donnée pour la conversation « personne-ici »"),
    (("citizen", "export", "--reference", "T-2026-999999"), "Aucun ticket ne porte la référence « T-2026-999999 »"),
    (("citizen", "export", "--reference", "n'importe quoi"), "Aucun ticket ne porte la référence"),
    (("citizen", "export"), "Indiquez soit un identifiant de conversation"),
    (("citizen", "export", "x", "--reference", "T-2026-000001"), "pas les deux"),
    (("citizen", "erase", "personne-ici", "--yes"), "Aucune donnée pour la conversation"),
    (("citizen", "erase", "old-citizen"), "ajoutez --yes"),
    (("citizen", "erase", "anonyme-0123456789abcdef", "--yes"), "pseudonyme"),
    (("citizen", "export", "old-citizen", "--out", "/nonexistent-dir/x.json"), "Impossible d'écrire"),
    (("purge", "--days", "0"), "La durée de conservation doit être d'au moins un jour."),
    (("purge", "--days", "-5"), "au moins un jour"),
])
def test_privacy_commands_explain_bad_input(cli, store, args, message):
    Town(store)
    result = cli(*args, ok=False)
    assert message in result.stderr + result.stdout
    assert store.get(1).citizen_name == NAME  # nothing erased


def test_erase_a_citizen_whatever_the_age_and_keep_the_figures(cli, store, profile):
    store.add_message("young", "rest", "citizen", f"{SECRET} — {PHONE}", author_name=NAME,
                      now=NOW - dt.timedelta(hours=3))
    ticket, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="young", channel="rest",
                                       summary=SECRET, citizen_name=NAME, location="14 rue des Acacias"),
                             now=NOW - dt.timedelta(hours=3))
    store.add_message("young", "rest", "citizen", "merci", now=NOW - dt.timedelta(hours=2))  # not linked
    other, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="someone-else",
                                      channel="rest", summary="autre"), now=NOW - dt.timedelta(hours=1))
    add_events(store, [("young", "user", NOW - dt.timedelta(hours=3)), ("someone-else", "user", NOW)])
    before = figures_csv(store, profile, 30)
    dry = cli("citizen", "erase", "young", "--dry-run").stdout
    assert "simulation" in dry and "Tickets anonymisés : 1" in dry and store.get(ticket.id).citizen_name == NAME
    said = cli("citizen", "erase", "--reference", ticket.reference, "--yes").stdout
    assert "Tickets anonymisés : 1" in said and "Événements Rasa supprimés : 1" in said
    assert "Lignes de conversation sans ticket effacées : 1" in said
    erased = store.get(ticket.id)
    assert erased.citizen_name is None and erased.summary == MARKER and erased.status == "new"  # still to handle
    assert NAME not in everything_text(store) and SECRET not in everything_text(store)
    assert events_of(store, "young") == [] and events_of(store, "someone-else") == ["user"]
    assert store.get(other.id).summary == "autre"
    assert figures_csv(store, profile, 30) == before
    again = cli("citizen", "erase", "young", "--yes", ok=False)
    assert "Aucune donnée pour la conversation « young »" in again.stderr


def test_purge_command_dry_run_then_real(cli, store):
    town = Town(store)
    dry = cli("purge", "--dry-run").stdout
    assert "Durée de conservation : 365 jours." in dry and "Simulation" in dry and "Tickets anonymisés : 1" in dry
    assert store.get(town.old.id).citizen_name == NAME
    done = cli("purge").stdout
    assert "Tickets anonymisés : 1" in done and store.get(town.old.id).citizen_name is None
    assert "Tickets anonymisés : 0" in cli("purge").stdout


def test_retention_comes_from_the_profile(profile, tmp_path):
    import yaml

    from bot.profile import ProfileError, parse_profile

    assert profile.town.retention_days == 365
    data = yaml.safe_load((ROOT / "collectivite.yml").read_text(encoding="utf-8"))
    data["privacy"] = {"retention_days": 90}
    assert parse_profile(data, tmp_path / "p.yml").town.retention_days == 90
    for bad in (0, -3, "un an"):
        data["privacy"] = {"retention_days": bad}
        with pytest.raises(ProfileError, match="retention_days"):
            parse_profile(data, tmp_path / "p.yml")


# --- logs hold no citizen data -------------------------------------------------------------------

def test_logs_at_info_hold_no_citizen_text_name_or_phone(caplog, store, assistant, profile):
    from bot import events, notify, relay
    from bot.accounts import Accounts
    from bot.staff import StaffDesk
    from bot.transcript import record_bot_message, record_citizen_message
    from bot.web import create_app

    caplog.set_level(logging.INFO)
    notify.install()
    now = dt.datetime(2026, 11, 17, 10, 0, tzinfo=UTC)
    conversation = Conversation("tg-555123", channel="telegram", citizen_name=NAME, message_id="msg-1")
    record_citizen_message(store, conversation.id, "telegram", f"{SECRET}, {PHONE}", "msg-1", author_name=NAME)
    draft = assistant.draft_ticket("ticket_voirie", f"{SECRET}, {PHONE}")
    reply = assistant.create_ticket(draft, conversation, now)
    record_bot_message(store, conversation.id, "telegram", reply.texts[0], "msg-1")
    assistant.status(conversation, f"où en est {reply.ticket.reference} ?", now)
    handoff = assistant.handoff("distress_violence", Conversation("tg-777", "telegram", NAME, "msg-2"),
                                f"mon mari me frappe, {NAME}, {PHONE}", now)
    record_citizen_message(store, "tg-777", "telegram", f"vite, {PHONE}", "msg-3", author_name=NAME)

    def failing_hook(**_payload):
        raise ValueError(f"hook failed on {SECRET}")

    events.subscribe("handoff_created", failing_hook)
    try:
        events.emit("handoff_created", ticket=handoff.ticket)
    finally:
        events.unsubscribe("handoff_created", failing_hook)

    def broken_deliverer(_item):
        raise ConnectionError(f"could not send {PHONE} to {NAME}")

    relay.register_deliverer("telegram", broken_deliverer)
    try:
        desk = StaffDesk(store, profile, assistant.hours, assistant.replies, resume_conversation=lambda _c: None)
        accounts = Accounts(store, profile)
        accounts.create("camille", "motdepasse-solide-42", "cm", display_name="Camille Martin")
        cm = accounts.get("camille")
        desk.reply(cm, handoff.ticket.reference, f"Madame {NAME}, nous vous rappelons au {PHONE}.")
        desk.note(cm, handoff.ticket.reference, f"Appelée au {PHONE}")
        desk.close(cm, handoff.ticket.reference, note=f"{NAME} rassurée")
    finally:
        relay.unregister_deliverer("telegram")

    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key="k" * 32)
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        token = session["csrf_token"]
    client.post("/login", data={"username": "camille", "password": "mauvais " + PHONE, "csrf_token": token})
    client.post("/login", data={"username": "camille", "password": "motdepasse-solide-42", "csrf_token": token})
    client.get(f"/tickets/{handoff.ticket.reference}")
    Privacy(store).erase("tg-555123")

    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert any(handoff.ticket.reference in r.getMessage() for r in caplog.records)  # what is logged: references
    for secret in (SECRET, "bousculée", PHONE, "06 12", NAME, "Dupont", "mon mari", "motdepasse", "tg-555123",
                   "tg-777"):
        assert secret not in logged, secret
