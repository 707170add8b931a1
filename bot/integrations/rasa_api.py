"""Calls to the Rasa server's HTTP API (needs ``rasa run --enable-api``)."""
from __future__ import annotations

from urllib.parse import quote

import requests

from bot.settings import get_settings


def resume_conversation(conversation_id: str, rasa_url: str | None = None, token: str | None = None,
                        timeout: float = 10) -> None:
    """Give a handed-off conversation back to the bot (after the CM closed the ticket)."""
    settings = get_settings()
    url = f"{(rasa_url or settings.rasa_url).rstrip('/')}/conversations/{quote(conversation_id, safe='')}/tracker/events"
    params = {"include_events": "NONE"}
    token = token or settings.rasa_token
    if token:
        params["token"] = token
    response = requests.post(url, params=params, timeout=timeout, json=[
        {"event": "resume"},
        {"event": "action", "name": "action_listen"},
    ])
    response.raise_for_status()
