"""Every citizen and bot message goes into the ticket database, linked to its ticket when there is one."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import bindparam, select

from bot import events
from bot.models import Message
from bot.textnorm import clean_citizen_text
from bot.tickets import FROM_SOURCE_MESSAGE, OPEN_HANDOFF, TicketStore, new_message


@dataclass(frozen=True)
class Line:
    """One message to record. ``message_id``: a citizen message's own id; for a bot message, the id
    of the citizen message it answers (its ticket, if that message made one, gets the answer)."""
    author: str  # "citizen" or "bot"
    channel: str
    text: str | None
    message_id: str | None = None
    when: dt.datetime | None = None
    author_name: str | None = None


def record_lines(store: TicketStore, conversation_id: str, lines: Sequence[Line],
                 skip_recorded: bool = False) -> list[Message | None]:
    """Store lines of one conversation in one transaction: one hand-off lookup, one ticket lookup
    per message id. A line of the citizen during a hand-off joins the hand-off ticket and the CM
    is told; an empty bot line is not stored (None). ``skip_recorded``: a citizen message whose id
    is already in the transcript (a retried message) is not stored again (None)."""
    stored: list[Message | None] = []
    told: list[tuple] = []
    with store.session() as session:
        handoff = session.execute(OPEN_HANDOFF, {"conversation_id": conversation_id}).scalar_one_or_none()
        by_source: dict[str, object] = {}

        def made_from(message_id: str | None):
            if not message_id:
                return None
            if message_id not in by_source:
                by_source[message_id] = session.execute(FROM_SOURCE_MESSAGE, {"source_message_id": message_id}).scalar_one_or_none()
            return by_source[message_id]

        for line in lines:
            if line.author == "citizen":
                if skip_recorded and line.message_id and _recorded(session, conversation_id, line.message_id):
                    stored.append(None)
                    continue
                ticket = handoff or made_from(line.message_id)
                message = new_message(conversation_id, line.channel, "citizen",
                                      clean_citizen_text(line.text) or "(message vide)",
                                      ticket_id=ticket.id if ticket else None, external_id=line.message_id,
                                      author_name=line.author_name, now=line.when)
                if handoff is not None and handoff.source_message_id != line.message_id:
                    told.append((handoff, message))
            else:
                if not line.text:
                    stored.append(None)
                    continue
                ticket = made_from(line.message_id) or handoff
                message = new_message(conversation_id, line.channel, "bot", line.text,
                                      ticket_id=ticket.id if ticket else None, now=line.when)
            session.add(message)
            stored.append(message)
        session.commit()
    for ticket, message in told:
        events.emit("handoff_message", ticket=ticket, message=message)
    return stored


_RECORDED = (select(Message.id).where(Message.conversation_id == bindparam("conversation_id"),
                                      Message.external_id == bindparam("message_id"), Message.author == "citizen")
             .limit(1))


def _recorded(session, conversation_id: str, message_id: str) -> bool:
    return session.execute(_RECORDED, {"conversation_id": conversation_id, "message_id": message_id}).first() is not None


def record_citizen_message(store: TicketStore, conversation_id: str, channel: str, text: str | None,
                           message_id: str | None = None, when: dt.datetime | None = None,
                           author_name: str | None = None) -> Message:
    """Store a citizen message. During a hand-off it joins the hand-off ticket and the CM is told."""
    return record_lines(store, conversation_id, [Line("citizen", channel, text, message_id, when, author_name)])[0]


def record_bot_message(store: TicketStore, conversation_id: str, channel: str, text: str | None,
                       turn_message_id: str | None = None, when: dt.datetime | None = None) -> Message | None:
    return record_lines(store, conversation_id, [Line("bot", channel, text, turn_message_id, when)])[0]


def already_recorded(store: TicketStore, conversation_id: str, message_id: str) -> bool:
    """This citizen message (by its stored id) is in the transcript: a channel's re-delivery."""
    with store.session() as session:
        return _recorded(session, conversation_id, message_id)
