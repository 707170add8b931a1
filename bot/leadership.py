"""One active process among several for a job that must not run twice (a gateway's sender).

With several copies of a gateway (``guichet stack``, README "Several servers"), Telegram allows
one reader of a bot's updates and a staff reply must be sent once: one copy is active, the others
stand by and take over within ``ttl`` seconds when it dies. The active copy holds a Redis key
that it renews; a compare-and-renew Lua script keeps two copies from both thinking they hold it.
Without ``GUICHET_REDIS_URL`` (one process) every copy is active.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

from bot import shared_state

logger = logging.getLogger(__name__)
DEFAULT_TTL = 10.0  # seconds before a standby takes over from a dead active copy

# KEYS[1] the job's key; ARGV[1] our id, ARGV[2] ttl (ms). 1: we hold it (taken or renewed); 0: another does.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leadership:
    def __init__(self, job: str, shared: "shared_state.RedisState | None | bool" = True, ttl: float = DEFAULT_TTL):
        if shared is True:
            shared = shared_state.shared()
        self.shared = shared or None
        self.job = job
        self.ttl = ttl
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.key = f"{shared_state.PREFIX}leader:{job}"
        if self.shared is not None:
            self._hold = self.shared.redis.register_script(_HOLD)
            self._resign = self.shared.redis.register_script(_RESIGN)

    def hold(self) -> bool:
        """Take or renew the job; False while another copy holds it (or Redis cannot be reached)."""
        if self.shared is None:
            return True
        try:
            return bool(self._hold(keys=[self.key], args=[self.me, int(self.ttl * 1000)]))
        except Exception as error:  # noqa: BLE001 - unsure: behave as a standby (never send twice)
            logger.warning("leadership of %s unknown (%s): standing by", self.job, type(error).__name__)
            return False

    def holder(self) -> Optional[str]:
        return self.shared.holder(f"leader:{self.job}") if self.shared is not None else self.me

    def resign(self) -> None:
        if self.shared is not None:
            try:
                self._resign(keys=[self.key], args=[self.me])
            except Exception:  # noqa: BLE001 - the key expires by itself
                pass

    def wait_until_active(self, stopping: Callable[[], bool] = lambda: False, say: Callable[[str], None] = print) -> bool:
        """Block until this copy is active (True), or ``stopping()`` (False)."""
        told = False
        while not stopping():
            if self.hold():
                if told:
                    say(f"{self.job} : cette instance prend le relais.")
                return True
            if not told:
                say(f"{self.job} : une autre instance est active ({self.holder()}), celle-ci attend.")
                told = True
            time.sleep(min(1.0, self.ttl / 4))
        return False

    def keep(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew in the background every ``ttl / 3``; ``on_lost()`` once if another copy took over."""
        def renew() -> None:
            failures = 0
            while True:
                time.sleep(self.ttl / 3)
                if self.hold():
                    failures = 0
                    continue
                failures += 1
                holder = self.holder() if self.shared is not None else None
                if (holder is not None and holder != self.me) or failures * self.ttl / 3 >= self.ttl:
                    logger.error("%s: leadership lost (now %s): stopping this copy", self.job, holder)
                    on_lost()
                    return

        thread = threading.Thread(target=renew, name=f"leader-{self.job}", daemon=True)
        thread.start()
        return thread
