"""Closing a ticket: a closed hand-off gives the conversation back to the bot."""
from __future__ import annotations

import logging

from bot import events
from bot.tickets import HANDOFF, TicketStore

logger = logging.getLogger(__name__)


def close_ticket(store: TicketStore, ticket_id: int, actor: str, resume: bool = True,
                 note: str | None = None) -> bool:
    """Close the ticket; for a hand-off, resume the Rasa conversation. Returns True if resumed."""
    ticket = store.set_status(ticket_id, "closed", actor, note=note)
    events.emit("ticket_closed", ticket=ticket)
    if not resume or ticket.kind != HANDOFF or store.open_handoff(ticket.conversation_id) is not None:
        return False
    from bot.integrations.rasa_api import resume_conversation

    resume_conversation(ticket.conversation_id)
    return True
