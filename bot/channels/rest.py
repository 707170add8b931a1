"""Rasa REST channel plus the relay's pull endpoint.

``POST /webhooks/guichet/webhook`` works like Rasa's REST channel; ``GET /webhooks/guichet/outbox?sender=ID``
returns (once) the messages staff sent to that conversation: replies from the CM or a service,
status news. The local chat polls it; any web or app client can do the same.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Text

from rasa.core.channels.channel import UserMessage
from rasa.core.channels.rest import RestInput
from sanic import Blueprint, response
from sanic.request import Request

from bot import relay
from bot.settings import get_settings
from bot.tickets import TicketStore


class GuichetRestInput(RestInput):
    @classmethod
    def name(cls) -> Text:
        return "guichet"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        blueprint = super().blueprint(on_new_message)
        store = TicketStore(get_settings().database_url)

        @blueprint.route("/outbox", methods=["GET"])
        async def outbox(request: Request) -> response.HTTPResponse:
            sender = (request.args.get("sender") or "").strip()
            if not sender or len(sender) > 128:
                return response.json({"error": "paramètre « sender » manquant ou invalide"}, status=400)
            texts = await asyncio.to_thread(relay.collect, store, sender)
            return response.json([{"recipient_id": sender, "text": text} for text in texts])

        return blueprint
