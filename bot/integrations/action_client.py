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
- **One HTTP session, kept alive**: Rasa opens a new ``aiohttp.ClientSession`` (so a new TCP
  connection) for every action call, two or three times a citizen message. The action endpoint
  now gets one session per event loop whose connections are reused; a connection the action
  server closed meanwhile is a connection-level error, retried as above.
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
    original_session = EndpointConfig.session
    sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict]" = weakref.WeakKeyDictionary()

    def session(self: EndpointConfig) -> Any:
        if not _is_action_server(self):
            return original_session(self)
        loop = asyncio.get_running_loop()
        per_loop = sessions.setdefault(loop, {})
        key = (self.url, repr(self.headers), repr(self.basic_auth))
        shared = per_loop.get(key)
        if shared is None or shared.closed:
            shared = per_loop[key] = original_session(self)
        return _Borrowed(shared)
    semaphores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()

    async def request(self: EndpointConfig, *args: Any, **kwargs: Any) -> Any:
        if not _is_action_server(self):
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
    EndpointConfig.session = session
    _installed = True


def _is_action_server(endpoint: Any) -> bool:
    return str(endpoint.url or "").rstrip("/").endswith("/webhook")


class _Borrowed:
    """``async with`` a shared session without closing it at the end (Rasa's ``request`` does)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def __aenter__(self) -> Any:
        return self.session

    async def __aexit__(self, *exc: Any) -> None:
        return None
