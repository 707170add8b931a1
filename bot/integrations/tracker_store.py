"""Rasa's SQL tracker store, made to survive a database restart.

Rasa 3.6's ``SQLTrackerStore`` creates its engine without ``pool_pre_ping``: after the database
restarts, every pooled connection is dead and the next requests fail (Rasa then falls back to an
in-memory tracker for them, which forgets the conversation — a hand-off would no longer be
paused). This subclass:

- recreates the engine with ``pool_pre_ping=True`` (dead connections are replaced before use) and,
  on SQLite, a 30 s busy timeout (the action server writes to the same file);
- retries ``retrieve`` and ``save`` a few times on transient errors (connection refused, database
  locked) before giving up. ``save`` writes one transaction, so a retry cannot duplicate events.

Configured by ``bot/stack.py`` (``tracker_store: type: bot.integrations.tracker_store.GuichetSQLTrackerStore``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore, create_engine_kwargs
from sqlalchemy.exc import DBAPIError

from bot.db import is_transient

logger = logging.getLogger(__name__)
ATTEMPTS = 3
DELAY = 0.5


class GuichetSQLTrackerStore(SQLTrackerStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.engine.url
        options: dict = dict(create_engine_kwargs(url))
        if url.get_backend_name() == "sqlite":
            options["connect_args"] = {"timeout": 30}
        else:
            options["pool_pre_ping"] = True
            options["pool_recycle"] = 3600
        self.engine.dispose()
        self.engine = sa.create_engine(url, **options)
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)

    async def _retrying(self, what: str, call):
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await call()
            except DBAPIError as error:
                if attempt == ATTEMPTS or not is_transient(error):
                    raise
                logger.warning("tracker store %s failed (attempt %d/%d), retrying: %s", what, attempt, ATTEMPTS,
                               str(error).splitlines()[0][:200])
                await asyncio.sleep(DELAY * attempt)

    async def retrieve(self, sender_id: str) -> Optional[Any]:
        return await self._retrying("retrieve", lambda: SQLTrackerStore.retrieve(self, sender_id))

    async def retrieve_full_tracker(self, conversation_id: str) -> Optional[Any]:
        return await self._retrying("retrieve", lambda: SQLTrackerStore.retrieve_full_tracker(self, conversation_id))

    async def save(self, tracker: Any) -> None:
        streamed = False

        async def attempt() -> None:
            nonlocal streamed
            if not streamed:  # the event broker must see each event once, whatever the retries
                await self.stream_events(tracker)
                streamed = True
            await self._save_rows(tracker)

        await self._retrying("save", attempt)

    async def _save_rows(self, tracker: Any) -> None:
        """SQLTrackerStore.save without its stream_events (done once by ``save``)."""
        import json

        from rasa.shared.nlu.constants import INTENT_NAME_KEY

        with self.session_scope() as session:
            for event in self._additional_events(session, tracker):
                data = event.as_dict()
                session.add(self.SQLEvent(
                    sender_id=tracker.sender_id, type_name=event.type_name, timestamp=data.get("timestamp"),
                    intent_name=data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                    action_name=data.get("name"), data=json.dumps(data),
                ))
            session.commit()
