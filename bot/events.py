"""In-process event hooks ("ticket_created", "handoff_created", "handoff_message", "ticket_closed").

Channels and staff tools subscribe to be told about new hand-offs without polling.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Callable

logger = logging.getLogger(__name__)
_subscribers: dict[str, list[Callable[..., Any]]] = defaultdict(list)


def subscribe(event: str, callback: Callable[..., Any]) -> None:
    _subscribers[event].append(callback)


def unsubscribe(event: str, callback: Callable[..., Any]) -> None:
    if callback in _subscribers[event]:
        _subscribers[event].remove(callback)


def emit(event: str, **payload: Any) -> None:
    """Call every subscriber; one failing hook never breaks the conversation."""
    for callback in list(_subscribers[event]):
        try:
            callback(**payload)
        except Exception as exc:  # noqa: BLE001 - hooks are best effort, the ticket is already stored
            # The exception's text may quote a citizen's message: only its type at the default level.
            logger.error("event hook %s failed: %s", event, type(exc).__name__)
            logger.debug("event hook %s traceback", event, exc_info=True)
