"""Rasa's SQL tracker store, made to survive a database restart.

Rasa 3.6's ``SQLTrackerStore`` creates its engine without ``pool_pre_ping``: after the database
restarts, every pooled connection is dead and the next requests fail (Rasa then falls back to an
in-memory tracker for them, which forgets the conversation — a hand-off would no longer be
paused). This subclass:

- recreates the engine with ``pool_pre_ping=True`` (dead connections are replaced before use) and,
  on SQLite, a 30 s busy timeout (the action server writes to the same file);
- retries ``retrieve`` and ``save`` a few times on transient errors (connection refused, database
  locked) before giving up. ``save`` writes one transaction, so a retry cannot duplicate events;
- keeps a copy of each conversation it saved (the latest 1,000, ``GUICHET_TRACKER_CACHE``). Rasa
  loads a conversation up to three times a message (once to answer, once per save to find which
  events are new, and counts the stored ones again), each time replaying every event into a new
  tracker. Now a load is one indexed query (the conversation's event count and highest id): if
  the database still holds what we saved, the copy is handed out; anything else (a privacy
  erase, a purge, a failed save, another server) and the conversation is read from the database
  as before. A save inserts the new events in one statement and gives them to the event broker
  without another load. Measured by ``guichet bench`` (README "Speed").

Configured by ``bot/stack.py`` (``tracker_store: type: bot.integrations.tracker_store.GuichetSQLTrackerStore``).
"""
from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import os
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore, create_engine_kwargs
from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY
from sqlalchemy.exc import DBAPIError

from bot.db import is_transient

logger = logging.getLogger(__name__)
ATTEMPTS = 3
DELAY = 0.5
CACHE_SIZE = 1000  # conversations kept in memory (GUICHET_TRACKER_CACHE; 0: none); ~110 KB for 16 messages


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
        self.cache_size = max(0, int(os.environ.get("GUICHET_TRACKER_CACHE", CACHE_SIZE)))
        self._cache: "OrderedDict[str, _Snapshot]" = OrderedDict()
        table = self.SQLEvent.__table__
        self._version_query = (sa.select(sa.func.count(), sa.func.max(table.c.id))
                               .where(table.c.sender_id == sa.bindparam("sender")))

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

    # --- the conversation cache -------------------------------------------------------------------
    def _stored_version(self, connection: Any, sender_id: str) -> Version:
        """(number of stored events, highest event id) of a conversation: one indexed query."""
        count, highest = connection.execute(self._version_query, {"sender": sender_id}).one()
        return int(count), highest

    def _from_cache(self, sender_id: str) -> Optional[DialogueStateTracker]:
        """A copy of the conversation as we last saved it, if the database still holds exactly that."""
        snapshot = self._cache.get(sender_id)
        with self.engine.connect() as connection:
            version = self._stored_version(connection, sender_id)
        if version[0] == 0:  # a new conversation (or erased): nothing to load
            self._cache.pop(sender_id, None)
            return _NEW
        if snapshot is None:
            return None
        if version != snapshot.version:  # changed behind our back (privacy erase, purge, another server)
            self._cache.pop(sender_id, None)
            return None
        self._cache.move_to_end(sender_id)
        tracker = clone_tracker(snapshot.tracker)
        drop_previous_sessions(tracker)
        setattr(tracker, _MARK, (len(tracker.events), version))
        return tracker

    def _remember(self, tracker: DialogueStateTracker, version: Version) -> None:
        setattr(tracker, _MARK, (len(tracker.events), version))
        snapshot = clone_tracker(tracker)
        self._cache[tracker.sender_id] = _Snapshot(snapshot, version)
        self._cache.move_to_end(tracker.sender_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # --- Rasa's interface -------------------------------------------------------------------------
    async def retrieve(self, sender_id: str) -> Optional[DialogueStateTracker]:
        cached = await self._retrying("retrieve", lambda: _now(self._from_cache, sender_id))
        if cached is _NEW:
            return None
        if cached is not None:
            return cached
        return await self._retrying("retrieve", lambda: SQLTrackerStore.retrieve(self, sender_id))

    async def retrieve_full_tracker(self, conversation_id: str) -> Optional[Any]:
        return await self._retrying("retrieve", lambda: SQLTrackerStore.retrieve_full_tracker(self, conversation_id))

    async def save(self, tracker: DialogueStateTracker) -> None:
        mark = getattr(tracker, _MARK, None)
        new_events: Optional[List[Any]] = None
        streamed = False

        async def attempt() -> None:
            nonlocal new_events, streamed
            with self.engine.begin() as connection:  # one transaction
                if new_events is None:
                    stored = self._stored_version(connection, tracker.sender_id)
                    if mark is not None and stored == mark[1]:
                        # Loaded from our cache and nobody wrote since: the events after those stored.
                        new_events = list(itertools.islice(tracker.events, mark[0], None))
                    elif stored[0] == 0:  # a new conversation: every event is new
                        new_events = list(tracker.events)
                    else:  # as Rasa does: what the database does not hold of the current session
                        with self.session_scope() as session:
                            new_events = list(self._additional_events(session, tracker))
                if not streamed:  # the event broker must see each event once, whatever the retries
                    await self._publish(tracker.sender_id, new_events)
                    streamed = True
                rows = [self._row(tracker.sender_id, event) for event in new_events]
                if rows:
                    connection.execute(self.SQLEvent.__table__.insert(), rows)
                version = self._stored_version(connection, tracker.sender_id)
            self._remember(tracker, version)

        self._cache.pop(tracker.sender_id, None)  # until this save succeeds, the database decides
        await self._retrying("save", attempt)

    # --- helpers ----------------------------------------------------------------------------------
    async def _publish(self, sender_id: str, events: List[Any]) -> None:
        """What Rasa's ``stream_events`` does, without loading the conversation again to diff it."""
        if self.event_broker is None or not events:
            return
        if hasattr(self.event_broker, "publish_batch"):  # ours: the turn's messages in one transaction
            self.event_broker.publish_batch(sender_id, [dict(event.as_dict(), sender_id=sender_id) for event in events])
            return
        await self._stream_new_events(self.event_broker, events, sender_id)

    @staticmethod
    def _row(sender_id: str, event: Any) -> dict:
        data = event.as_dict()
        return {"sender_id": sender_id, "type_name": event.type_name, "timestamp": data.get("timestamp"),
                "intent_name": data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                "action_name": data.get("name"), "data": json.dumps(data)}


Version = Tuple[int, Optional[int]]
_NEW = object()  # what the cache says of a conversation the database has no event of
_MARK = "_guichet_stored"  # on a tracker we handed out: (events already stored, the database's version then)


@dataclass
class _Snapshot:
    tracker: DialogueStateTracker  # our own copy, never handed out
    version: Version  # the conversation's (event count, highest id) right after our save


async def _now(function, *args):
    return function(*args)


def clone_tracker(tracker: DialogueStateTracker) -> DialogueStateTracker:
    """A copy that can be changed without touching the original (events themselves are shared:
    Rasa never changes an event once it is in a tracker). Microseconds, where replaying the
    events into a new tracker (what a load from the database does) takes milliseconds."""
    clone = object.__new__(type(tracker))
    clone.__dict__.update(tracker.__dict__)
    clone.events = deque(tracker.events, maxlen=tracker.events.maxlen)
    slots = type(tracker.slots)()
    slots.update((name, copy.copy(slot)) for name, slot in tracker.slots.items())
    clone.slots = slots
    for name in ("latest_action", "active_loop"):
        value = getattr(tracker, name, None)
        if isinstance(value, dict):
            setattr(clone, name, dict(value))
    return clone


def drop_previous_sessions(tracker: DialogueStateTracker) -> None:
    """Keep the events from the latest session start on, as a tracker loaded from the database has.

    The tracker's state does not change: ``SessionStarted`` resets it (slots, pause, form...).
    """
    events = tracker.events
    for index in range(len(events) - 1, 0, -1):
        if isinstance(events[index], SessionStarted):
            for _ in range(index):
                events.popleft()
            return
