"""The ticket table on a real PostgreSQL server (the one conftest's `postgres_url` starts on loopback).

tests/test_tickets.py runs the ticket-table basics on both databases; here, what only a server
shows: migrations up and down, two workers racing on the same citizen message, the relay's outbox
with two collectors, the staff desk, and two CMs taking one ticket at the same moment (threads, then
separate processes: the database decides, not Python).
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, inspect, select

from bot import db, relay
from bot.accounts import Staff
from bot.models import Outbox, StatusChange, Ticket
from bot.staff import AlreadyTaken, NotFound, StaffDesk
from bot.tickets import NewTicket, TicketStore, format_reference
from bot.transcript import record_citizen_message

pytestmark = pytest.mark.postgres

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
CM_A = Staff("camille", "Camille", "cm")
CM_B = Staff("dominique", "Dominique", "cm")
HEAD_VOIRIE = Staff("yann", "Yann", "head", "voirie")
HEAD_SPORT = Staff("lea", "Léa", "head", "sport_culture")
TABLES = {"ticket", "message", "status_change", "staff_user", "outbox", "notice", "answer_version",
          "meta_contact", "public_comment", "address", "named_place", "ticket_follower", "open311_key"}


def new(conversation="conv-1", source="msg-1", **overrides) -> NewTicket:
    fields = dict(kind="report", queue="voirie", conversation_id=conversation, channel="rest",
                  summary="lampadaire éteint", source_message_id=source)
    fields.update(overrides)
    return NewTicket(**fields)


def count(store: TicketStore, model) -> int:
    with store.session() as session:
        return session.execute(select(func.count()).select_from(model)).scalar_one()


def make_desk(store: TicketStore, resume_conversation) -> StaffDesk:
    """Like tests/test_integration.py's `desk`, with the profile and replies of this repository."""
    from bot.hours import StaffHours
    from bot.profile import load_profile
    from bot.replies import Replies

    profile = load_profile(ROOT / "collectivite.yml")
    replies = Replies.load(ROOT / "bot" / "replies.fr.yml", profile)
    return StaffDesk(store, profile, StaffHours.from_town(profile.town), replies,
                     resume_conversation=resume_conversation)


@pytest.fixture
def resumed() -> list[str]:
    return []


@pytest.fixture
def pg_desk(pg_store, resumed) -> StaffDesk:
    return make_desk(pg_store, resumed.append)


def audit_of(store: TicketStore, ticket_id: int) -> list[tuple]:
    with store.session() as session:
        rows = session.execute(select(StatusChange).where(StatusChange.ticket_id == ticket_id)
                               .order_by(StatusChange.id)).scalars()
        return [(r.old_status, r.new_status, r.actor) for r in rows]


# --- the server and the migrations ------------------------------------------------------------------
def test_it_really_is_postgresql(pg_store):
    with pg_store.session() as session:
        version = session.execute(select(func.version())).scalar_one()
    assert version.startswith("PostgreSQL")
    assert db.get_engine(pg_store.url).dialect.name == "postgresql"


def test_alembic_upgrade_downgrade_and_back(pg_store):
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    from alembic.script import ScriptDirectory

    url = pg_store.url
    engine = db.get_engine(url)
    head = ScriptDirectory.from_config(db.alembic_config(url)).get_current_head()

    def state():
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
            return revision, set(inspect(connection).get_table_names()) - {"alembic_version"}

    assert state() == (head, TABLES)
    pg_store.create(new(source="before"))

    command.downgrade(db.alembic_config(url), "0001")
    revision, tables = state()
    assert revision == "0001" and tables == {"ticket", "message", "status_change"}
    with engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("ticket")}
    assert "assigned_to" not in columns and "source_message_id" in columns

    command.downgrade(db.alembic_config(url), "base")
    assert state() == (None, set())

    command.upgrade(db.alembic_config(url), "head")
    assert state() == (head, TABLES)
    with engine.connect() as connection:
        inspector = inspect(connection)
        columns = {c["name"] for c in inspector.get_columns("ticket")}
        foreign_keys = {fk["name"] for fk in inspector.get_foreign_keys("ticket")}
        unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("ticket")}
    assert {"assigned_to", "assigned_at", "scheduled_for", "duplicate_of_id"} <= columns
    assert "fk_ticket_duplicate_of" in foreign_keys and ("source_message_id",) in unique
    ticket, created = pg_store.create(new(source="after"))  # the emptied tables work again
    assert created and ticket.reference == format_reference(ticket.created_at.year, ticket.id)
    command.upgrade(db.alembic_config(url), "head")  # at head: nothing to do
    assert state() == (head, TABLES)


@pytest.mark.timeout(120)
def test_two_workers_creating_the_same_ticket_at_once_make_exactly_one(pg_store):
    rounds = 25
    for round_ in range(rounds):
        barrier = threading.Barrier(2)

        def create(_):
            barrier.wait(timeout=30)
            return pg_store.create(new(f"race-{round_}", f"race-msg-{round_}"))

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(create, range(2)))
        assert sorted(created for _, created in results) == [False, True]
        assert results[0][0].id == results[1][0].id and results[0][0].reference
    with pg_store.session() as session:
        per_message = session.execute(select(Ticket.source_message_id, func.count())
                                      .group_by(Ticket.source_message_id)).all()
    assert len(per_message) == rounds and all(n == 1 for _, n in per_message)
    assert count(pg_store, StatusChange) == rounds


# --- the relay ----------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_collect_returns_each_pending_message_exactly_once_even_with_two_collectors(pg_store):
    assert relay.collect(pg_store, "someone") == []
    relay.send_to_citizen(pg_store, "someone", "rest", "premier")
    relay.send_to_citizen(pg_store, "other", "rest", "pas pour vous")
    relay.send_to_citizen(pg_store, "someone", "rest", "second")
    assert relay.collect(pg_store, "someone") == ["premier", "second"]
    assert relay.collect(pg_store, "someone") == []
    assert [item.text for item in relay.pending(pg_store)] == ["pas pour vous"]

    for round_ in range(20):
        texts = [f"r{round_}-m{i}" for i in range(10)]
        for text in texts:
            relay.send_to_citizen(pg_store, "busy", "rest", text)
        barrier = threading.Barrier(2)

        def collector(_):
            barrier.wait(timeout=30)
            return relay.collect(pg_store, "busy")

        with ThreadPoolExecutor(2) as pool:
            first, second = pool.map(collector, range(2))
        assert sorted(first + second) == sorted(texts), (first, second)  # each exactly once
        assert first == sorted(first, key=texts.index) and second == sorted(second, key=texts.index)
        assert relay.collect(pg_store, "busy") == []
    with pg_store.session() as session:
        attempts = session.execute(select(Outbox.attempts).where(Outbox.conversation_id == "busy")).scalars().all()
    assert len(attempts) == 200 and set(attempts) == {1}


# --- the staff desk -------------------------------------------------------------------------------------
def test_route_status_and_close_with_audit_rows(pg_store, pg_desk, resumed):
    handoff, _ = pg_store.create(new("citizen-1", "h1", kind="handoff", queue="cm", handoff_reason="human_request"))
    assert [item.ticket.id for item in pg_desk.queue(CM_A)] == [handoff.id]

    routed = pg_desk.route(CM_A, handoff.reference, "voirie", "report")
    assert (routed.queue, routed.kind, routed.status, routed.assigned_to) == ("voirie", "report", "new", None)
    assert resumed == ["citizen-1"]  # the hand-off is over: the bot speaks again
    assert [item.ticket.id for item in pg_desk.queue(HEAD_VOIRIE)] == [handoff.id]
    with pytest.raises(NotFound):
        pg_desk.ticket(HEAD_SPORT, handoff.reference)

    pg_desk.take(HEAD_VOIRIE, handoff.reference)
    pg_desk.set_status(HEAD_VOIRIE, handoff.reference, "in_progress")
    when = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.timezone.utc)
    scheduled = pg_desk.set_status(HEAD_VOIRIE, handoff.reference, "scheduled", scheduled_for=when)
    assert scheduled.scheduled_for == dt.datetime(2026, 12, 3, 8, 0)
    resolved = pg_desk.set_status(HEAD_VOIRIE, handoff.reference, "resolved", note="lampe changée")
    assert resolved.resolved_at is not None and resolved.closed_at is not None
    closed = pg_desk.close(CM_A, handoff.reference)
    assert closed.status == "closed"

    assert audit_of(pg_store, handoff.id) == [
        (None, "new", "bot"), ("new", "new", "camille"), ("new", "in_progress", "yann"),
        ("in_progress", "scheduled", "yann"), ("scheduled", "resolved", "yann"), ("resolved", "closed", "camille")]
    assert [row.note for row in pg_desk.audit(CM_A, handoff.reference)][1] == "orienté vers voirie"
    news = relay.collect(pg_store, "citizen-1")
    assert len(news) == 5 and "Voirie" in news[0] and "03/12/2026" in news[2] and "résolu" in news[3]
    assert "Êtes-vous satisfait(e)" in news[4]  # asked once: resolving asked, closing did not ask again

    other, _ = pg_store.create(new("citizen-2", "h2", kind="handoff", queue="cm", handoff_reason="insult"))
    pg_desk.close(CM_A, other.reference)
    assert resumed == ["citizen-1", "citizen-2"]
    assert pg_store.open_handoff("citizen-2") is None


def test_not_ours_goes_back_to_the_cm_queue(pg_store, pg_desk):
    ticket, _ = pg_store.create(new("citizen-3", "n1", queue="voirie"))
    pg_desk.take(HEAD_VOIRIE, ticket.reference)
    back = pg_desk.set_status(HEAD_VOIRIE, ticket.reference, "not_ours")
    assert (back.queue, back.status, back.assigned_to, back.assigned_at) == ("cm", "not_ours", None, None)
    queue = pg_desk.queue(CM_A)
    assert [item.ticket.id for item in queue] == [ticket.id]
    assert queue[0].reason == "renvoyé par un service : à réorienter"
    with pytest.raises(NotFound):
        pg_desk.ticket(HEAD_VOIRIE, ticket.reference)
    assert audit_of(pg_store, ticket.id)[-1] == ("new", "not_ours", "yann")
    assert pg_desk.audit(CM_A, ticket.reference)[-1].note.startswith("renvoyé au CM par")
    rerouted = pg_desk.route(CM_A, ticket.reference, "espaces_verts")
    assert (rerouted.queue, rerouted.status) == ("espaces_verts", "new")


# --- two CMs take the same ticket at the same moment ----------------------------------------------------
def _take_race(desk: StaffDesk, references: list[str], staff: tuple[Staff, Staff]) -> list[tuple[str, str, str]]:
    """Both CMs take each ticket at the same moment; returns (reference, winner, loser's holder)."""
    outcomes = []
    for reference in references:
        barrier = threading.Barrier(2)

        def take(who: Staff):
            barrier.wait(timeout=30)
            try:
                return "won", desk.take(who, reference).assigned_to
            except AlreadyTaken as exc:
                return "lost", exc.holder

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(take, staff))
        assert sorted(kind for kind, _ in results) == ["lost", "won"], results
        winner = staff[[kind for kind, _ in results].index("won")].username
        holder = next(name for kind, name in results if kind == "lost")
        outcomes.append((reference, winner, holder))
    return outcomes


@pytest.mark.timeout(300)
def test_two_cms_taking_one_ticket_at_once_exactly_one_wins(pg_store, pg_desk):
    references = [pg_store.create(new(f"take-{i}", f"take-msg-{i}", kind="handoff", queue="cm",
                                      handoff_reason="human_request"))[0].reference for i in range(30)]
    outcomes = _take_race(pg_desk, references, (CM_A, CM_B))
    for reference, winner, holder in outcomes:
        assert holder == winner  # the loser is told who has it
        assert pg_store.by_reference(reference).assigned_to == winner
        assert pg_store.by_reference(reference).assigned_at is not None
    winners = {winner for _, winner, _ in outcomes}
    assert winners <= {"camille", "dominique"}
    # Taking again what I already hold is fine; the other CM is still refused.
    reference, winner, _ = outcomes[0]
    me, other = (CM_A, CM_B) if winner == "camille" else (CM_B, CM_A)
    assert pg_desk.take(me, reference).assigned_to == winner
    with pytest.raises(AlreadyTaken) as refused:
        pg_desk.take(other, reference)
    assert refused.value.holder == winner and winner in str(refused.value)


def _take_in_process(url: str, staff: Staff, references: list[str], barrier, results) -> None:
    """Runs in a separate (spawned) process: its own interpreter, engine and connections."""
    try:
        desk = make_desk(TicketStore(url), lambda conversation: None)
        for reference in references:
            barrier.wait(timeout=60)
            try:
                outcome = ("won", desk.take(staff, reference).assigned_to)
            except AlreadyTaken as exc:
                outcome = ("lost", exc.holder)
            results.put((staff.username, reference, *outcome))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put((staff.username, None, "error", repr(exc)))
        raise


@pytest.mark.timeout(300)
def test_two_cms_in_two_processes_exactly_one_wins(pg_store):
    references = [pg_store.create(new(f"proc-{i}", f"proc-msg-{i}", kind="handoff", queue="cm",
                                      handoff_reason="human_request"))[0].reference for i in range(30)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [context.Process(target=_take_in_process, args=(pg_store.url, who, references, barrier, results))
                 for who in (CM_A, CM_B)]
    for process in processes:
        process.start()
    collected = []
    try:
        while len(collected) < 2 * len(references):
            item = results.get(timeout=120)
            assert item[2] != "error", item
            collected.append(item)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0, 0]
    for reference in references:
        outcomes = [(who, kind, name) for who, ref, kind, name in collected if ref == reference]
        assert sorted(kind for _, kind, _ in outcomes) == ["lost", "won"], outcomes
        winner = next(who for who, kind, _ in outcomes if kind == "won")
        assert all(name == winner for _, _, name in outcomes)  # the winner's name, on both sides
        assert pg_store.by_reference(reference).assigned_to == winner


def test_long_ids_names_and_nul_characters_are_stored_on_postgresql(pg_store):
    """What SQLite lets through silently must not break PostgreSQL (found by the PostgreSQL tests)."""
    long_conversation = "telegram-" + "9" * 240
    message = record_citizen_message(pg_store, long_conversation, "rest", "bonjour\x00 !", "m" * 250,
                                     author_name="N" * 200)
    assert message.text == "bonjour !" and len(message.conversation_id) == 249
    ticket, _ = pg_store.create(NewTicket(kind="handoff", queue="cm", conversation_id=long_conversation,
                                          channel="rest", summary="x", source_message_id="s" * 255))
    desk = make_desk(pg_store, lambda conversation: None)
    cm = Staff("camille", "Camille", "cm")
    desk.reply(cm, ticket.reference, "réponse\x00 propre")
    desk.note(cm, ticket.reference, "note\x00 privée")
    assert [m.text for m in pg_store.transcript(ticket.id)][-2:] == ["réponse propre\n— L'équipe Communication",
                                                                     "note privée"]
