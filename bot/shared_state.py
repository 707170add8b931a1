"""What several servers share: short-lived counters and markers kept in Redis.

One process (the embedded default) keeps these in its own memory; as soon as the assistant runs
as several processes (``guichet stack``, README "Several servers"), ``GUICHET_REDIS_URL`` names one
Redis server that all of them use, so that:

- a flood from one conversation is counted once, whichever server each message reaches
  (``bot.flood``), and so are failed staff logins (``bot.web.security.LoginThrottle``);
- a retried message landing on another server gets the first answer, or waits for it, instead of
  being handled twice (``bot.channels.rest``: ``answer``/``remember_answer``, ``claim``/``release``).

Every operation is one Redis command or one Lua script, so two servers never interleave half-way.
Clocks are Redis's own (``TIME``), so machines whose clocks drift still agree. No Rasa imports.
"""
from __future__ import annotations

import json
import logging
import os
import uuid
from functools import lru_cache
from typing import Any, Optional

logger = logging.getLogger(__name__)
PREFIX = "guichet:"

# Token bucket: KEYS[1] the bucket; ARGV rate (tokens a second), burst, mark the notice (0/1).
# Returns {allowed, notify}: notify is 1 on the first refused message of an episode.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, mark = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local b = redis.call('HMGET', KEYS[1], 'tokens', 'updated', 'notified')
local tokens = tonumber(b[1]) or burst
local updated = tonumber(b[2]) or now
local notified = b[3] == '1'
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local allowed, notify = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  notified = false
  allowed = 1
else
  if not notified then notify = 1 end
  if mark then notified = true end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now), 'notified', notified and '1' or '0')
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate + 60) * 1000))
return {allowed, notify}
"""

# Failures in a sliding window: KEYS[1] a sorted set; ARGV window (s), record (0/1), a unique member.
# Returns the number of failures in the window (after recording).
_FAILURES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
end
return redis.call('ZCARD', KEYS[1])
"""


class RedisState:
    """The shared store: a thin layer over redis-py (already a dependency of Rasa)."""

    def __init__(self, url: str):
        import redis

        self.url = url
        self.redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                          health_check_interval=30)
        self._take = self.redis.register_script(_TAKE)
        self._failures = self.redis.register_script(_FAILURES)

    # --- rate limits ------------------------------------------------------------------------------
    def take_token(self, bucket: str, rate_per_second: float, burst: int, mark_notice: bool) -> tuple[bool, bool]:
        allowed, notify = self._take(keys=[f"{PREFIX}bucket:{bucket}"],
                                     args=[repr(float(rate_per_second)), int(burst), "1" if mark_notice else "0"])
        return bool(allowed), bool(notify)

    def mark_notice(self, bucket: str) -> None:
        self.redis.hset(f"{PREFIX}bucket:{bucket}", "notified", "1")

    def notice_sent(self, bucket: str) -> bool:
        return self.redis.hget(f"{PREFIX}bucket:{bucket}", "notified") == b"1"

    def forget(self, bucket_prefix: str) -> None:
        for key in self.redis.scan_iter(f"{PREFIX}bucket:{bucket_prefix}*", count=500):
            self.redis.delete(key)

    def failures(self, key: str, window: float, record: bool = False) -> int:
        member = uuid.uuid4().hex
        return int(self._failures(keys=[f"{PREFIX}failures:{key}"], args=[repr(float(window)),
                                                                           "1" if record else "0", member]))

    # --- answers and in-flight markers --------------------------------------------------------------
    def remember(self, key: str, value: Any, ttl: float) -> None:
        self.redis.set(f"{PREFIX}{key}", json.dumps(value, ensure_ascii=False), px=max(1, int(ttl * 1000)))

    def recall(self, key: str) -> Optional[Any]:
        raw = self.redis.get(f"{PREFIX}{key}")
        return json.loads(raw) if raw is not None else None

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """Set ``key`` to ``owner`` unless someone holds it: True when we now hold it."""
        return bool(self.redis.set(f"{PREFIX}{key}", owner, nx=True, px=max(1, int(ttl * 1000))))

    def holder(self, key: str) -> Optional[str]:
        raw = self.redis.get(f"{PREFIX}{key}")
        return raw.decode() if raw is not None else None

    def release(self, key: str) -> None:
        self.redis.delete(f"{PREFIX}{key}")

    def ping(self) -> bool:
        return bool(self.redis.ping())


def redis_url(environ: dict | None = None) -> Optional[str]:
    env = os.environ if environ is None else environ
    return (env.get("GUICHET_REDIS_URL") or "").strip() or None


@lru_cache(maxsize=4)
def _state_for(url: str) -> RedisState:
    return RedisState(url)


def shared(environ: dict | None = None) -> Optional[RedisState]:
    """The shared store when ``GUICHET_REDIS_URL`` is set, else None (this process's memory)."""
    url = redis_url(environ)
    return _state_for(url) if url else None
