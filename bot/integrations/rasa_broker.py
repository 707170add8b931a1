"""A Rasa event broker that writes the conversation transcript into the ticket database.

Configured in the Rasa server's endpoints (``event_broker: type: bot.integrations.rasa_broker.TranscriptBroker``).
It sees every message, including those Rasa ignores while a conversation is paused for a
hand-off, so nothing a citizen writes is lost. A citizen message is recorded once per message id
(a retried message is not stored twice); if the database is unreachable it goes to the spool
(bot/integrations/reliability.py) and is written when the database is back.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any, Dict, Optional, Text

from rasa.core.brokers.broker import EventBroker
from rasa.utils.endpoints import EndpointConfig

from bot import notify
from bot.integrations import reliability
from bot.settings import get_settings
from bot.textnorm import clean_citizen_text
from bot.tickets import TicketStore
from bot.transcript import record_bot_message

logger = logging.getLogger(__name__)


class TranscriptBroker(EventBroker):
    def __init__(self, url: Optional[str] = None) -> None:
        notify.install()  # citizen messages during a hand-off are announced from here
        self.store = TicketStore(url or get_settings().database_url)
        self._turn: Dict[str, Optional[str]] = {}  # conversation -> message id of its current turn

    @classmethod
    async def from_endpoint_config(cls, broker_config: Optional[EndpointConfig],
                                   event_loop: Optional[asyncio.AbstractEventLoop] = None) -> "TranscriptBroker":
        url = broker_config.kwargs.get("url") if broker_config else None
        return cls(url)

    def publish(self, event: Dict[Text, Any]) -> None:
        kind = event.get("event")
        if kind not in ("user", "bot"):
            return
        conversation = str(event.get("sender_id"))
        when = dt.datetime.fromtimestamp(event.get("timestamp") or dt.datetime.now().timestamp(), dt.timezone.utc)
        if kind == "user":
            message_id = event.get("message_id")
            self._turn[conversation] = message_id
            if len(self._turn) > 50_000:  # bounded memory: forget the oldest turns
                for key in list(self._turn)[:10_000]:
                    self._turn.pop(key, None)
            metadata = event.get("metadata") or {}
            author = (clean_citizen_text(str(metadata.get("citizen_name") or ""), 200) or None
                      if isinstance(metadata, dict) else None)
            try:
                outcome = reliability.record_or_spool(self.store, conversation, event.get("input_channel") or "rest",
                                                      event.get("text"), message_id, when, author_name=author)
                if outcome == "db" and reliability.has_spooled():
                    reliability.flush_spool(self.store)
            except Exception as exc:  # noqa: BLE001 - never break the conversation; Rasa's tracker keeps it too
                logger.error("could not record a citizen message of a conversation in the transcript: %s",
                             type(exc).__name__)
                logger.debug("transcript recording traceback", exc_info=True)
            return
        try:
            record_bot_message(self.store, conversation, "rasa", event.get("text"), self._turn.get(conversation), when)
        except Exception as exc:  # noqa: BLE001 - never break the conversation; Rasa's tracker keeps it too
            # Not logger.exception: a database error's text carries the SQL parameters (the message).
            logger.error("could not record a %s message of a conversation in the transcript: %s",
                         kind, type(exc).__name__)
            logger.debug("transcript recording traceback", exc_info=True)

    def is_ready(self) -> bool:
        return True
