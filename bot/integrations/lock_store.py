"""A conversation lock shared by several Rasa servers, on Redis, without RasaHQ/rasa#9213's race.

Rasa handles the messages of one conversation one after the other by taking a "ticket lock" per
conversation. Its ``RedisLockStore`` keeps that lock as one JSON value and changes it by reading
it, changing it in Python and writing it back (``issue_ticket``, ``finish_serving``): two servers
doing that at the same moment both read "nobody holds it", both write their own ticket, and the
second write wins — both servers then handle a message of the same conversation at once and
the tracker store loses or doubles events (RasaHQ/rasa#9213; measured by ``tests/test_lock_store.py``).

This lock store does every step in one Lua script, which Redis runs atomically:

- *enter*: the next ticket number comes from ``INCR`` (never given twice) and joins the
  conversation's queue (a Redis list: first come, first served); the ticket has a key of its own
  that expires after ``lifetime`` seconds unless its server renews it;
- *turn*: a ticket is served when it is at the head of the queue. Heads whose key has expired
  belong to a server that died (killed, cut off): they are dropped, so one dead server blocks a
  conversation for at most ``lifetime`` seconds, never for ever;
- *leave*: the ticket's key and queue entry are removed.

While a ticket waits or is served, its server renews the key every ``lifetime / 4`` seconds, so a
slow message (a busy machine, a slow action) keeps the lock as long as its server is alive.

Configured by ``guichet stack`` (``lock_store: type: bot.integrations.lock_store.SharedLockStore,
url: redis://...``; settings ``lifetime`` and ``wait_limit``, in seconds).
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, Optional, Text

from rasa.core.lock import TicketLock
from rasa.core.lock_store import LockError, LockStore

logger = logging.getLogger(__name__)
DEFAULT_LIFETIME = 20.0  # seconds a ticket outlives its server
DEFAULT_WAIT_LIMIT = 120.0  # seconds a message waits for its turn before it is given up (LockError)

# KEYS[1] next-ticket counter, KEYS[2] queue; ARGV[1] ticket key prefix, ARGV[2] lifetime (ms)
_ENTER = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('SET', ARGV[1] .. n, '1', 'PX', ARGV[2])
redis.call('RPUSH', KEYS[2], n)
redis.call('PEXPIRE', KEYS[2], 86400000)
return n
"""
# KEYS[1] queue; ARGV[1] ticket key prefix, ARGV[2] my ticket, ARGV[3] lifetime (ms)
# 1: my turn; 0: someone alive is before me; -1: my ticket expired (I was taken for dead)
_TURN = """
if redis.call('PEXPIRE', ARGV[1] .. ARGV[2], ARGV[3]) == 0 then return -1 end
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then return -1 end
  if head == ARGV[2] then return 1 end
  if redis.call('EXISTS', ARGV[1] .. head) == 1 then return 0 end
  redis.call('LPOP', KEYS[1])
end
"""
# KEYS[1] queue; ARGV[1] ticket key prefix, ARGV[2] my ticket
_LEAVE = """
redis.call('DEL', ARGV[1] .. ARGV[2])
redis.call('LREM', KEYS[1], 1, ARGV[2])
return 1
"""


class SharedLockStore(LockStore):
    """Rasa ``LockStore`` whose ``lock()`` is the atomic Redis ticket queue described above."""

    def __init__(self, endpoint_config: Any = None, url: Optional[str] = None, lifetime: float | None = None,
                 wait_limit: float | None = None, key_prefix: str = "guichet:lock:") -> None:
        import redis.asyncio as redis_asyncio

        kwargs = dict(getattr(endpoint_config, "kwargs", None) or {})
        self.url = url or getattr(endpoint_config, "url", None) or "redis://127.0.0.1:6379/0"
        self.lifetime = float(lifetime or kwargs.get("lifetime") or DEFAULT_LIFETIME)
        self.wait_limit = float(wait_limit or kwargs.get("wait_limit") or DEFAULT_WAIT_LIMIT)
        self.key_prefix = str(kwargs.get("key_prefix") or key_prefix)
        self.redis = redis_asyncio.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=5)
        self._enter = self.redis.register_script(_ENTER)
        self._turn = self.redis.register_script(_TURN)
        self._leave = self.redis.register_script(_LEAVE)
        super().__init__()

    def _keys(self, conversation_id: str) -> tuple[str, str, str]:
        base = f"{self.key_prefix}{{{conversation_id}}}"  # one hash slot per conversation
        return f"{base}:next", f"{base}:queue", f"{base}:ticket:"

    @asynccontextmanager
    async def lock(self, conversation_id: Text, lock_lifetime: float = 0,
                   wait_time_in_seconds: float = 0) -> AsyncGenerator[TicketLock, None]:
        counter, queue, tickets = self._keys(conversation_id)
        lifetime_ms = int(self.lifetime * 1000)
        try:
            ticket = int(await self._enter(keys=[counter, queue], args=[tickets, lifetime_ms]))
        except Exception as error:  # noqa: BLE001 - Rasa turns a LockError into an error answer
            raise LockError(f"could not reach the lock store: {type(error).__name__}") from error
        renewer: Optional[asyncio.Task] = None
        try:
            await self._wait_for_turn(conversation_id, queue, tickets, ticket, lifetime_ms)
            renewer = asyncio.ensure_future(self._renew(queue, tickets, ticket, lifetime_ms))
            yield TicketLock(conversation_id)
        finally:
            if renewer is not None:
                renewer.cancel()
            try:
                await self._leave(keys=[queue], args=[tickets, ticket])
            except Exception as error:  # noqa: BLE001 - the ticket expires by itself after `lifetime`
                logger.warning("could not release the lock of %s: %s", conversation_id, type(error).__name__)

    async def _wait_for_turn(self, conversation_id: str, queue: str, tickets: str, ticket: int,
                             lifetime_ms: int) -> None:
        deadline = time.monotonic() + self.wait_limit
        pause = 0.005
        while True:
            turn = int(await self._turn(keys=[queue], args=[tickets, ticket, lifetime_ms]))
            if turn == 1:
                return
            if turn == -1:
                raise LockError(f"the lock ticket of conversation {conversation_id!r} expired while waiting")
            if time.monotonic() > deadline:
                raise LockError(f"conversation {conversation_id!r} stayed locked for {self.wait_limit:.0f} s")
            await asyncio.sleep(pause)
            pause = min(0.1, pause * 1.5)

    async def _renew(self, queue: str, tickets: str, ticket: int, lifetime_ms: int) -> None:
        while True:
            await asyncio.sleep(self.lifetime / 4)
            try:
                await self.redis.pexpire(f"{tickets}{ticket}", lifetime_ms)
            except Exception as error:  # noqa: BLE001 - tried again at the next beat
                logger.warning("could not renew a lock ticket: %s", type(error).__name__)

    # Rasa's other LockStore methods work on one JSON lock; nothing calls them once ``lock`` is ours.
    def get_lock(self, conversation_id: Text) -> Optional[TicketLock]:
        return None

    def delete_lock(self, conversation_id: Text) -> None:
        return None

    def save_lock(self, lock: TicketLock) -> None:
        return None
