"""Flood guard: a per-conversation rate limit (token bucket), shared by the channels.

A citizen (or a script) sending messages faster than the limit gets one polite "slow down"
notice per episode; the extra messages are still recorded by the channel (nothing is lost) but
are not sent to the assistant, so a flood cannot open fifty tickets.

    guard = FloodGuard.from_env()
    decision = guard.check(conversation_id)
    if not decision.allowed:
        record(message)
        if decision.notify:      # first refused message of this episode only
            answer(slow_down_notice)

Settings (environment, all optional): ``GUICHET_FLOOD_PER_MINUTE`` (sustained rate, default 20),
``GUICHET_FLOOD_BURST`` (messages allowed at once, default 10), ``GUICHET_FLOOD_DISABLED=1``.
Thread-safe (one lock, no blocking call inside) so it works from threads and from an event loop.
No Rasa imports: the REST channel and the Telegram gateway both use it.

Several servers (``GUICHET_REDIS_URL``, ``bot.shared_state``): the buckets live in Redis, one Lua
script a message, so a flood is counted once whichever server each message reaches. ``name``
keeps the guards apart (the REST channel's conversations, the website chat's addresses...).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from bot import shared_state

if TYPE_CHECKING:
    from bot.shared_state import RedisState

DEFAULT_PER_MINUTE = 20.0
DEFAULT_BURST = 10
MAX_CONVERSATIONS = 50_000  # beyond this, idle conversations (full buckets) are forgotten


@dataclass(frozen=True)
class FloodDecision:
    allowed: bool
    notify: bool = False  # refused, and the slow-down notice was not sent yet in this episode


@dataclass
class _Bucket:
    tokens: float
    updated: float
    notified: bool = False  # the slow-down notice was sent since the last allowed message


class FloodGuard:
    """Token bucket per conversation: ``burst`` messages at once, then ``per_minute`` per minute."""

    def __init__(self, per_minute: float = DEFAULT_PER_MINUTE, burst: int = DEFAULT_BURST,
                 enabled: bool = True, clock: Callable[[], float] = time.monotonic,
                 max_conversations: int = MAX_CONVERSATIONS, name: str = "conversation",
                 shared: "RedisState | None | bool" = True):
        """``shared=True``: the Redis store when ``GUICHET_REDIS_URL`` is set; False: this process only."""
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst >= 1")
        self.per_minute = float(per_minute)
        self.burst = int(burst)
        self.enabled = enabled
        self._rate = self.per_minute / 60.0
        self._clock = clock
        self._max = max_conversations
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self.name = name
        if shared is True:
            shared = shared_state.shared() if clock is time.monotonic else None
        self._shared = shared or None

    @classmethod
    def from_env(cls, environ: dict | None = None, name: str = "conversation") -> "FloodGuard":
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            try:
                value = float(env.get(name, default))
            except (TypeError, ValueError):
                return default
            return value if value > 0 else default

        return cls(per_minute=number("GUICHET_FLOOD_PER_MINUTE", DEFAULT_PER_MINUTE),
                   burst=max(1, int(number("GUICHET_FLOOD_BURST", DEFAULT_BURST))),
                   enabled=env.get("GUICHET_FLOOD_DISABLED", "") not in ("1", "true", "yes"), name=name)

    # --- the API ----------------------------------------------------------------------------------
    def check(self, conversation_id: str) -> FloodDecision:
        """Take one message of this conversation into account: allowed, or refused (notify once).

        A refused decision with ``notify`` counts as the notice being sent.
        """
        return self._take(conversation_id, mark_notice=True)

    def allow(self, conversation_id: str) -> bool:
        """Take one message into account; False when the conversation is over the limit.

        Does not count a notice as sent: ask ``notice_sent`` then call ``mark_notice_sent``.
        """
        return self._take(conversation_id, mark_notice=False).allowed

    def _take(self, conversation_id: str, mark_notice: bool) -> FloodDecision:
        if not self.enabled:
            return FloodDecision(True)
        if self._shared is not None:
            allowed, notify = self._shared.take_token(self._bucket(conversation_id), self._rate, self.burst,
                                                      mark_notice)
            return FloodDecision(allowed, notify and not allowed)
        with self._lock:
            now = self._clock()
            bucket = self._refilled(conversation_id, now)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                bucket.notified = False
                return FloodDecision(True)
            notify = not bucket.notified
            if mark_notice:
                bucket.notified = True
            return FloodDecision(False, notify)

    def notice_sent(self, conversation_id: str) -> bool:
        """Whether the slow-down notice was already given in the current over-the-limit episode."""
        if self._shared is not None:
            return self._shared.notice_sent(self._bucket(conversation_id))
        with self._lock:
            bucket = self._buckets.get(conversation_id)
            return bool(bucket and bucket.notified)

    def mark_notice_sent(self, conversation_id: str) -> None:
        """For callers using ``allow``: remember the notice was sent (until a message is allowed again)."""
        if self._shared is not None:
            self._shared.mark_notice(self._bucket(conversation_id))
            return
        with self._lock:
            self._refilled(conversation_id, self._clock()).notified = True

    def reset(self, conversation_id: str | None = None) -> None:
        if self._shared is not None:
            self._shared.forget(self._bucket(conversation_id) if conversation_id is not None else f"{self.name}:")
            return
        with self._lock:
            if conversation_id is None:
                self._buckets.clear()
            else:
                self._buckets.pop(conversation_id, None)

    def _bucket(self, conversation_id: str) -> str:
        return f"{self.name}:{conversation_id}"

    # --- internals (lock held) ----------------------------------------------------------------------
    def _refilled(self, conversation_id: str, now: float) -> _Bucket:
        bucket = self._buckets.get(conversation_id)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._forget_idle(now)
            bucket = self._buckets[conversation_id] = _Bucket(float(self.burst), now)
            return bucket
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self._rate)
        bucket.updated = now
        return bucket

    def _forget_idle(self, now: float) -> None:
        """Drop the conversations whose bucket is full again (they are as if never seen)."""
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self._rate >= self.burst:
                del self._buckets[key]
        if len(self._buckets) >= self._max:  # still full of active floods: drop the oldest
            for key, _bucket in sorted(self._buckets.items(), key=lambda item: item[1].updated)[: self._max // 10 or 1]:
                del self._buckets[key]
