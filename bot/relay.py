"""The relay: messages from staff to a citizen, delivered on the citizen's own channel.

Every message is first written to the ``outbox`` table (so nothing is lost), then handed to the
channel's deliverer if one is registered in this process (push channels such as Telegram).
Pull channels (the REST channel, the local chat) collect their pending messages themselves.
"""
from __future__ import annotations

import json
import logging
from typing import Callable

import datetime as dt

from sqlalchemy import or_, select, update

from bot.models import Outbox, utcnow
from bot.tickets import TicketStore

logger = logging.getLogger(__name__)
Deliverer = Callable[[Outbox], None]  # raises on failure; the message stays pending
# Channels with no inbox to write to: the citizen follows their report where they posted it.
UNREACHABLE_CHANNELS = {
    "open311": ("Signalement déposé par l'API Open311 (FixMyStreet ou une autre application) : le citoyen y suit "
                "les changements de statut, mais un message écrit ne lui parvient pas."),
}
_deliverers: dict[str, Deliverer] = {}
CLAIM_SECONDS = 120  # a sender's hold on a message it is sending; past it (the sender died) another may


def register_deliverer(channel: str, deliverer: Deliverer) -> None:
    _deliverers[channel] = deliverer


def unregister_deliverer(channel: str) -> None:
    _deliverers.pop(channel, None)


def send_to_citizen(store: TicketStore, conversation_id: str, channel: str, text: str,
                    ticket_id: int | None = None, buttons: list[dict] | None = None,
                    surface: str | None = None) -> Outbox:
    """``surface="public"``: a public reply under the comment the conversation began with."""
    with store.session() as session:
        item = Outbox(conversation_id=conversation_id, channel=channel, text=text, ticket_id=ticket_id,
                      buttons=json.dumps(buttons, ensure_ascii=False) if buttons else None, surface=surface)
        session.add(item)
        session.commit()
    if channel in UNREACHABLE_CHANNELS:  # said plainly to the staff, never left pending
        mark_failed(store, item.id, UNREACHABLE_CHANNELS[channel])
        return item
    deliver(store, item)
    return item


def deliver(store: TicketStore, item: Outbox) -> bool:
    deliverer = _deliverers.get(item.channel)
    if deliverer is None:
        return False
    try:
        deliverer(item)
    except Exception as exc:  # noqa: BLE001 - kept in the outbox for the next attempt
        logger.warning("delivery of outbox message %s failed: %s", item.id, type(exc).__name__)
        _mark(store, item.id, error=str(exc)[:500])
        return False
    _mark(store, item.id, delivered=True)
    return True


def claim(store: TicketStore, item_id: int, seconds: float = CLAIM_SECONDS) -> bool:
    """Take a pending message for sending: one atomic update, so that of several gateway processes
    (several servers) exactly one sends it. The hold lapses after ``seconds`` if its sender dies."""
    now = utcnow()
    with store.session() as session:
        claimed = session.execute(
            update(Outbox).where(Outbox.id == item_id, Outbox.delivered_at.is_(None), Outbox.failed_at.is_(None),
                                 or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < now))
            .values(claimed_until=now + dt.timedelta(seconds=seconds))
            .execution_options(synchronize_session=False)).rowcount == 1
        session.commit()
        return claimed


def _mark(store: TicketStore, item_id: int, delivered: bool = False, error: str | None = None) -> None:
    with store.session() as session:
        item = session.get(Outbox, item_id)
        item.attempts += 1
        if delivered:
            item.delivered_at = utcnow()
        item.last_error = error
        item.claimed_until = None  # a failed attempt: the next round (of any sender) tries again
        session.commit()


def mark_failed(store: TicketStore, item_id: int, reason: str) -> None:
    """Give up on a message the channel can no longer deliver; ``reason`` (French) is shown to staff."""
    with store.session() as session:
        item = session.get(Outbox, item_id)
        item.attempts += 1
        item.failed_at = utcnow()
        item.last_error = reason[:500]
        session.commit()


def undelivered(store: TicketStore, ticket_id: int) -> list[Outbox]:
    """A ticket's messages not (yet) delivered: failed ones and pending ones that met an error."""
    with store.session() as session:
        return list(session.execute(select(Outbox).where(
            Outbox.ticket_id == ticket_id, Outbox.delivered_at.is_(None),
            (Outbox.failed_at.is_not(None)) | (Outbox.last_error.is_not(None))).order_by(Outbox.id)).scalars())


def buttons_of(item: Outbox) -> list[dict]:
    try:
        return json.loads(item.buttons) if item.buttons else []
    except ValueError:
        return []


def collect(store: TicketStore, conversation_id: str) -> list[str]:
    """Pull channels: take the conversation's pending messages (marked delivered), oldest first."""
    return [item["text"] for item in collect_items(store, conversation_id)]


def collect_items(store: TicketStore, conversation_id: str) -> list[dict]:
    """The same with the buttons: ``{"text": ..., "buttons": [...]}``."""
    with store.session() as session:
        items = list(session.execute(
            select(Outbox).where(Outbox.conversation_id == conversation_id, Outbox.delivered_at.is_(None),
                                 Outbox.failed_at.is_(None))
            .order_by(Outbox.id).with_for_update(skip_locked=True)
        ).scalars())
        moment = utcnow()
        for item in items:
            item.delivered_at = moment
            item.attempts += 1
        session.commit()
        return [{"text": item.text, "buttons": buttons_of(item)} for item in items]


def pending(store: TicketStore, channel: str | None = None) -> list[Outbox]:
    with store.session() as session:
        query = select(Outbox).where(Outbox.delivered_at.is_(None), Outbox.failed_at.is_(None)).order_by(Outbox.id)
        if channel:
            query = query.where(Outbox.channel == channel)
        return list(session.execute(query).scalars())
