"""One short question after a ticket is resolved or closed: "Êtes-vous satisfait(e) ?".

Asked once per ticket, on the citizen's own channel (with 👍 / 👎 buttons where the channel has
them), never again, not even as a reminder. The answer is the citizen's next "oui" / "non" (what
the model reads as affirm / deny, thanks count as yes) within ``ANSWER_DAYS``; the rest of that
message is kept as the comment. ``/stats`` shows the rates per service and for hand-offs.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from bot import relay
from bot.models import Ticket, to_naive_utc, utcnow
from bot.replies import Replies
from bot.tickets import TicketStore

ANSWER_DAYS = 7
YES_INTENTS = ("affirm", "thank", "compliment")
NO_INTENTS = ("deny",)
BUTTONS = [{"title": "👍 Oui", "payload": "oui"}, {"title": "👎 Non", "payload": "non"}]
SHORT_ANSWERS = {"oui", "non", "yes", "no", "👍", "👎", "👍 oui", "👎 non", "ok", "merci"}


def ask(store: TicketStore, replies: Replies, ticket: Ticket) -> bool:
    """Ask the citizen of this ticket, unless they were already asked for it. True if asked now."""
    with store.session() as session:
        row = session.get(Ticket, ticket.id)
        if row is None or row.satisfaction_asked_at is not None or row.anonymised_at is not None:
            return False
        row.satisfaction_asked_at = utcnow()
        session.commit()
    text = replies.render("satisfaction.question", ref=ticket.reference)
    relay.send_to_citizen(store, ticket.conversation_id, ticket.channel, text, ticket.id, buttons=BUTTONS)
    return True


def pending(store: TicketStore, conversation_id: str, now: dt.datetime | None = None) -> Ticket | None:
    """The ticket whose question this conversation has not answered yet (asked in the last days)."""
    since = to_naive_utc(now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(days=ANSWER_DAYS)
    with store.session() as session:
        return session.execute(
            select(Ticket).where(Ticket.conversation_id == conversation_id, Ticket.satisfaction_asked_at >= since,
                                 Ticket.satisfaction.is_(None))
            .order_by(Ticket.satisfaction_asked_at.desc()).limit(1)
        ).scalars().first()


def answer_of(intent: str | None) -> str | None:
    if intent in YES_INTENTS:
        return "yes"
    if intent in NO_INTENTS:
        return "no"
    return None


def record(store: TicketStore, ticket_id: int, answer: str, text: str | None = None) -> None:
    """Store the answer (and the message as the comment when it says more than yes or no)."""
    comment = (text or "").strip()
    if comment.lower().strip(" !.") in SHORT_ANSWERS:
        comment = ""
    with store.session() as session:
        row = session.get(Ticket, ticket_id)
        if row is None or row.satisfaction is not None:
            return
        row.satisfaction = answer
        row.satisfaction_comment = comment[:1000] or None
        row.satisfaction_at = utcnow()
        session.commit()
