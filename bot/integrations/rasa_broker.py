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
from typing import Any, Dict, List, Optional, Text

from rasa.core.brokers.broker import EventBroker
from rasa.utils.endpoints import EndpointConfig

from bot import notify
from bot.integrations import reliability
from bot.settings import get_settings
from bot.textnorm import clean_citizen_text
from bot.tickets import TicketStore
from bot.transcript import Line, record_bot_message, record_lines

logger = logging.getLogger(__name__)


class TranscriptBroker(EventBroker):
    def __init__(self, url: Optional[str] = None) -> None:
        notify.install()  # citizen messages during a hand-off are announced from here
        self.store = TicketStore(url or get_settings().database_url)
        self._turn: Dict[str, Optional[str]] = {}  # conversation -> message id of its current turn

    @classmethod
    async def from_endpoint_config(cls, broker_config: Optional[EndpointConfig],
                                   event_loop: Optional[asyncio.AbstractEventLoop] = None) -> "TranscriptBroker":
        return cls(configured_url(broker_config))

    def publish_batch(self, sender_id: str, batch: List[Dict[Text, Any]]) -> None:
        """The events of one save of a conversation (called by our tracker store): its messages are
        written in one transaction. If that fails, each event takes the one-by-one way below
        (retries, then the spool for citizen messages): nothing is lost, nothing is written twice
        (the transaction wrote nothing, and a citizen message is recorded once per message id)."""
        lines = []
        conversation = str(sender_id)
        for event in batch:
            kind = event.get("event")
            if kind == "user":
                self._remember_turn(conversation, event.get("message_id"))
                lines.append(Line("citizen", event.get("input_channel") or "rest", event.get("text"),
                                  event.get("message_id"), _when(event), _author(event)))
            elif kind == "bot":
                lines.append(Line("bot", "rasa", event.get("text"), self._turn.get(conversation), _when(event)))
        if not lines:
            return
        try:
            record_lines(self.store, conversation, lines, skip_recorded=True)
        except Exception as exc:  # noqa: BLE001 - the one-by-one way below keeps or spools each message
            logger.warning("could not record a turn of a conversation in one go (%s): one message at a time",
                           type(exc).__name__)
            for event in batch:
                self.publish(event)
            return
        if reliability.has_spooled():
            try:
                reliability.flush_spool(self.store)
            except Exception as exc:  # noqa: BLE001 - stays spooled, flushed with a later message
                logger.warning("could not flush the spool: %s", type(exc).__name__)

    def _remember_turn(self, conversation: str, message_id: Optional[str]) -> None:
        self._turn[conversation] = message_id
        if len(self._turn) > 50_000:  # bounded memory: forget the oldest turns
            for key in list(self._turn)[:10_000]:
                self._turn.pop(key, None)

    def publish(self, event: Dict[Text, Any]) -> None:
        kind = event.get("event")
        if kind not in ("user", "bot"):
            return
        conversation = str(event.get("sender_id"))
        when = _when(event)
        if kind == "user":
            message_id = event.get("message_id")
            self._remember_turn(conversation, message_id)
            author = _author(event)
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


def configured_url(broker_config: Optional[EndpointConfig]) -> Optional[str]:
    """The database of the endpoint config. Rasa keeps ``url:`` in ``EndpointConfig.url``, not in its
    kwargs: reading the kwargs silently fell back to the town's database (eval and bench wrote there)."""
    if broker_config is None:
        return None
    return broker_config.url or broker_config.kwargs.get("url") or None


def _when(event: Dict[Text, Any]) -> dt.datetime:
    return dt.datetime.fromtimestamp(event.get("timestamp") or dt.datetime.now().timestamp(), dt.timezone.utc)


def _author(event: Dict[Text, Any]) -> Optional[str]:
    """The citizen's name as the channel gave it (Telegram), if any."""
    metadata = event.get("metadata") or {}
    if not isinstance(metadata, dict):
        return None
    return clean_citizen_text(str(metadata.get("citizen_name") or ""), 200) or None
