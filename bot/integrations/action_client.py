"""Rasa server → action server calls that survive a busy moment (installed with the Rasa speed-ups).

Under load (the soak: 300 conversations at once), Rasa 3.6's call to the action server sometimes
failed with ``ClientOSError: Can not write request body`` ("Cannot write to closing transport"):
the connection was closed before the request went out. Rasa then drops the action's events and
the citizen gets the "souci technique" apology for a step that never ran. Two changes:

- **Retry on connection-level errors** (``aiohttp.ClientConnectionError``: cannot connect, cannot
  write the request, server disconnected), up to ``ATTEMPTS`` times with a short backoff. The
  action then either never ran, or ran and is safe to run again: every action of ours is
  idempotent for one citizen message (tickets by source message id, amendments by message id).
  HTTP errors (4xx/5xx) and timeouts are not retried.
- **At most ``MAX_CONCURRENT`` calls in flight** from one Rasa server (``GUICHET_ACTION_CONCURRENCY``,
  default 16): beyond that, calls wait their turn instead of piling hundreds of connections on the
  action server at once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any

logger = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF = (0.05, 0.2, 0.6)  # seconds before the 2nd, 3rd and 4th attempts
MAX_CONCURRENT = int(os.environ.get("GUICHET_ACTION_CONCURRENCY", "16") or 16)
_installed = False


def install() -> None:
    """Wrap Rasa's ``EndpointConfig.request`` for the action endpoint (idempotent)."""
    global _installed
    if _installed:
        return
    import aiohttp
    from rasa.utils.endpoints import EndpointConfig

    original = EndpointConfig.request
    semaphores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()

    async def request(self: EndpointConfig, *args: Any, **kwargs: Any) -> Any:
        if not str(self.url or "").rstrip("/").endswith("/webhook"):  # not the action server
            return await original(self, *args, **kwargs)
        loop = asyncio.get_running_loop()
        semaphore = semaphores.get(loop)
        if semaphore is None:
            semaphore = semaphores[loop] = asyncio.Semaphore(MAX_CONCURRENT)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with semaphore:
                    return await original(self, *args, **dict(kwargs))
            except (aiohttp.ClientResponseError, aiohttp.ServerTimeoutError):
                raise
            except aiohttp.ClientConnectionError as error:
                if attempt == ATTEMPTS:
                    raise
                logger.warning("action server call failed (%s), retry %d/%d", type(error).__name__, attempt,
                               ATTEMPTS - 1)
                await asyncio.sleep(BACKOFF[attempt - 1])

    EndpointConfig.request = request
    _installed = True
