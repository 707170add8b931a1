"""Every citizen and bot message goes into the ticket database, linked to its ticket when there is one."""
from __future__ import annotations

import datetime as dt

from bot import events
from bot.models import Message
from bot.textnorm import clean_citizen_text
from bot.tickets import TicketStore


def record_citizen_message(store: TicketStore, conversation_id: str, channel: str, text: str | None,
                           message_id: str | None = None, when: dt.datetime | None = None,
                           author_name: str | None = None) -> Message:
    """Store a citizen message. During a hand-off it joins the hand-off ticket and the CM is told."""
    handoff = store.open_handoff(conversation_id)
    ticket = handoff or (store.by_source_message(message_id) if message_id else None)
    message = store.add_message(conversation_id, channel, "citizen", clean_citizen_text(text) or "(message vide)",
                                ticket_id=ticket.id if ticket else None, external_id=message_id,
                                author_name=author_name, now=when)
    if handoff is not None and handoff.source_message_id != message_id:
        events.emit("handoff_message", ticket=handoff, message=message)
    return message


def record_bot_message(store: TicketStore, conversation_id: str, channel: str, text: str | None,
                       turn_message_id: str | None = None, when: dt.datetime | None = None) -> Message | None:
    if not text:
        return None
    ticket = store.by_source_message(turn_message_id) if turn_message_id else None
    if ticket is None:
        ticket = store.open_handoff(conversation_id)
    return store.add_message(conversation_id, channel, "bot", text, ticket_id=ticket.id if ticket else None,
                             now=when)
