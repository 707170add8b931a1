"""Satisfaction after closing: asked once, answered with the next "oui" / "non", counted in /stats."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from bot import stats
from bot.accounts import Staff
from bot.hours import StaffHours
from bot.models import Outbox
from bot.replies import Replies
from bot.satisfaction import pending, record
from bot.settings import PROJECT_ROOT
from bot.staff import StaffDesk
from bot.tickets import NewTicket

CM = Staff("camille", "Camille", "cm")
HEAD = Staff("victor", "Victor", "head", "voirie")


def desk_for(store, profile):
    replies = Replies.load(PROJECT_ROOT / "bot" / "replies.fr.yml", profile)
    return StaffDesk(store, profile, StaffHours.from_town(profile.town), replies, resume_conversation=lambda c: None)


def outbox(store, conversation):
    with store.session() as session:
        return list(session.execute(select(Outbox).where(Outbox.conversation_id == conversation)
                                    .order_by(Outbox.id)).scalars())


def test_resolving_asks_once_with_buttons_and_closing_after_does_not_ask_again(store, profile):
    desk = desk_for(store, profile)
    ticket, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="c-sat", channel="rest",
                                       summary="lampadaire éteint", source_message_id="m-sat"))
    desk.set_status(HEAD, ticket.reference, "resolved")
    desk.set_status(HEAD, ticket.reference, "closed")
    questions = [item for item in outbox(store, "c-sat") if "Êtes-vous satisfait(e)" in item.text]
    assert len(questions) == 1 and ticket.reference in questions[0].text
    assert '"payload": "oui"' in questions[0].buttons and "👎 Non" in questions[0].buttons
    assert pending(store, "c-sat").id == ticket.id


def test_the_answer_is_recorded_once_with_its_comment(store, profile, assistant):
    from bot.assistant import Conversation

    desk = desk_for(store, profile)
    ticket, _ = store.create(NewTicket(kind="handoff", queue="cm", conversation_id="c-sat2", channel="rest",
                                       summary="parler à quelqu'un", handoff_reason="human_request",
                                       source_message_id="m-sat2"))
    desk.close(CM, ticket.reference)
    now = dt.datetime.now(dt.timezone.utc)
    reply = assistant.satisfaction_answer(Conversation("c-sat2", "rest"), "deny", "non, personne ne m'a rappelé", now)
    assert reply.outcome == "smalltalk" and "désolés" in reply.texts[0]
    stored = store.get(ticket.id)
    assert (stored.satisfaction, stored.satisfaction_comment) == ("no", "non, personne ne m'a rappelé")
    assert pending(store, "c-sat2") is None  # never asked twice, never recorded twice
    assert assistant.satisfaction_answer(Conversation("c-sat2", "rest"), "affirm", "oui", now) is None
    record(store, ticket.id, "yes", "oui")
    assert store.get(ticket.id).satisfaction == "no"


def test_no_question_pending_means_plain_small_talk(store, assistant):
    from bot.assistant import Conversation

    assert assistant.satisfaction_answer(Conversation("nobody", "rest"), "affirm", "oui",
                                         dt.datetime.now(dt.timezone.utc)) is None


def test_stats_show_the_rate_per_service_and_for_handoffs(store, profile):
    desk = desk_for(store, profile)
    hours = StaffHours.from_town(profile.town)
    for index, (queue, kind, answer) in enumerate((("voirie", "report", "yes"), ("voirie", "report", "yes"),
                                                   ("voirie", "report", "no"), ("cm", "handoff", "yes"))):
        ticket, _ = store.create(NewTicket(kind=kind, queue=queue, conversation_id=f"c-st-{index}", channel="rest",
                                           summary="...", handoff_reason="human_request" if kind == "handoff" else None,
                                           source_message_id=f"m-st-{index}"))
        desk.set_status(CM if queue == "cm" else HEAD, ticket.reference, "closed")
        record(store, ticket.id, answer)
    figures = stats.compute(store, profile, hours, days=7)
    assert figures.satisfaction == {"voirie": {"yes": 2, "no": 1}, "handoff": {"yes": 1, "no": 0}}
    text = "\n".join(stats.format_text(figures))
    assert "Satisfaction après clôture : 4 réponses" in text
    assert "  - Voirie et éclairage public : 66,7 % de oui (2 oui, 1 non)" in text
    assert "  - Transferts au community manager : 100 % de oui (1 oui, 0 non)" in text
    csv_text = stats.to_csv(figures)
    assert "satisfaction,voirie,yes,2" in csv_text and "satisfaction,handoff,rate,1.0" in csv_text
    assert stats.chart_png(figures, "satisfaction").startswith(b"\x89PNG")
