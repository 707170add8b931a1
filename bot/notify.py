"""Tell the staff about new hand-offs and urgent tickets, from whichever process created them.

In-process subscribers use ``bot.events``; other processes (a Telegram gateway, a chat tool, a
pager) set ``GUICHET_NOTIFY_URL``: each new hand-off or urgent ticket is POSTed there as JSON,
in the background, so a slow receiver never delays the citizen's answer.
"""
from __future__ import annotations

import logging
import os
import threading

import requests

from bot import events
from bot.models import Ticket
from bot.privacy import log_ref

logger = logging.getLogger(__name__)
_installed = False


def payload(ticket: Ticket, event: str) -> dict:
    return {
        "event": event, "reference": ticket.reference, "kind": ticket.kind, "queue": ticket.queue,
        "urgent": bool(ticket.urgent), "reason": ticket.handoff_reason, "conversation_id": ticket.conversation_id,
        "channel": ticket.channel, "summary": (ticket.summary or "")[:500],
    }


def _post(url: str, body: dict) -> None:
    try:
        requests.post(url, json=body, timeout=5).raise_for_status()
    except requests.RequestException as exc:
        logger.warning("staff notification for %s failed: %s", body.get("reference"), type(exc).__name__)


def _notify(event: str, ticket: Ticket) -> None:
    url = os.environ.get("GUICHET_NOTIFY_URL")
    logger.info("%s %s (queue %s%s)", event, ticket.reference, ticket.queue, ", URGENT" if ticket.urgent else "")
    if url:
        threading.Thread(target=_post, args=(url, payload(ticket, event)), daemon=True).start()


def _notify_possible_danger(conversation_id: str, channel: str, text: str, at=None) -> None:
    """The danger detector was unsure: the citizen got the emergency line, a person should look."""
    url = os.environ.get("GUICHET_NOTIFY_URL")
    logger.warning("possible danger in conversation %s (channel %s): emergency line given", log_ref(conversation_id), channel)
    if url:
        body = {"event": "possible_danger", "urgent": True, "conversation_id": conversation_id,
                "channel": channel, "summary": text[:500]}
        threading.Thread(target=_post, args=(url, body), daemon=True).start()


def install() -> None:
    """Subscribe once: hand-offs, urgent tickets and messages arriving during a hand-off."""
    global _installed
    if _installed:
        return
    events.subscribe("handoff_created", lambda ticket: _notify("handoff_created", ticket))
    events.subscribe("ticket_created", lambda ticket: ticket.urgent and _notify("urgent_ticket", ticket))
    events.subscribe("handoff_message", lambda ticket, message: _notify("handoff_message", ticket))
    events.subscribe("possible_danger", _notify_possible_danger)
    events.subscribe("handoff_became_urgent", lambda ticket: _notify("urgent_ticket", ticket))
    _installed = True
