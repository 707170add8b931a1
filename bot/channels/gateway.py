"""What every gateway in front of our REST channel needs, whatever the platform (Telegram, Meta...).

- ``AssistantLink``: a citizen message posted to our hardened REST channel
  (``bot/channels/rest.py``: bad input, flood guard, idempotent ``message_id``, technical-problem
  answer), on behalf of the gateway's channel; ``RasaUnavailable`` when it cannot answer.
- ``CitizenSide``: the steps around it: the hand-off check (during a hand-off nothing goes to the
  assistant: the message joins the ticket and the CM is told through ``bot.notify``), and when
  the assistant is unreachable the message kept (spooled if the database is down too) and the
  "souci technique" answer.
- ``OutboxPump``: staff messages (CM replies, status news) written to the outbox by any process,
  claimed once and delivered by the gateway with its platform's sender; a failure stays pending
  and is retried, an ``Undeliverable`` one is given up and shown to the staff.
- ``HandoffAnnouncements``: new hand-offs and urgent tickets (any channel) not yet announced to
  the CM, claimed atomically so two gateway processes never post one twice.
- ``split_text``: a long text cut under a platform's limit, at a paragraph, line or word;
  ``latest_open_ticket``: where a photo or a detail sent after a report goes;
  ``start_process``: a gateway as its own process (what ``guichet run`` does).
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import or_, select, update

from bot import relay
from bot.integrations import reliability
from bot.integrations.reliability import message_id_for
from bot.models import CLOSED_STATUSES, Outbox, Ticket, utcnow
from bot.privacy import log_ref
from bot.tickets import HANDOFF, TicketStore
from bot.transcript import record_bot_message, record_citizen_message

logger = logging.getLogger(__name__)


class RasaUnavailable(Exception):
    pass


class Undeliverable(Exception):
    """The citizen can no longer be reached on this channel; the message says why, in French."""


def split_text(text: str, limit: int) -> list[str]:
    """Cut a long text under ``limit`` characters, at a paragraph, line or word boundary when possible."""
    text = text or ""
    chunks: list[str] = []
    while len(text) > limit:
        cut = max(text.rfind("\n\n", 0, limit), text.rfind("\n", 0, limit), text.rfind(" ", 0, limit))
        if cut < limit // 2:
            cut = limit
        chunks.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text or not chunks:
        chunks.append(text)
    return chunks


def latest_open_ticket(store: TicketStore, conversation: str) -> Ticket | None:
    """The conversation's newest open ticket that is not a hand-off (a photo or a detail joins it)."""
    for ticket in store.for_conversation(conversation):
        if ticket.kind != HANDOFF and ticket.status not in CLOSED_STATUSES:
            return ticket
    return None


def start_process(module: str, rasa_url: str, log_path: Path, environ: dict | None = None) -> subprocess.Popen:
    """``python -m <module>`` as its own process, talking to ``rasa_url``, logging to ``log_path``."""
    env = dict(os.environ if environ is None else environ, GUICHET_RASA_URL=rasa_url)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT)


class AssistantLink:
    """Posts citizen messages to ``{rasa_url}/webhooks/guichet/webhook`` for one gateway channel."""

    def __init__(self, rasa_url: str, channel: str, timeout: float = 90.0):
        self.rest_url = f"{rasa_url.rstrip('/')}/webhooks/guichet/webhook"
        self.channel = channel
        self.timeout = timeout

    def post(self, conversation: str, text: str, client_id: str, name: str | None = None,
             metadata: dict | None = None, channel: str | None = None) -> list[dict]:
        """The assistant's answers. An empty list is normal (during a hand-off, the rest of a flood);
        a 400 carries its French explanation as an answer. Each answer may carry ``outcome``, the
        assistant's tag for it ("faq:piscine", "ticket:voirie"...)."""
        body_metadata = dict(metadata or {})
        if name:
            body_metadata["citizen_name"] = name
        try:
            response = requests.post(self.rest_url, timeout=(5, self.timeout), json={
                "sender": conversation, "message": text, "input_channel": channel or self.channel,
                "message_id": client_id, "metadata": body_metadata,
            })
            answers = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise RasaUnavailable(type(exc).__name__) from exc
        if response.status_code >= 500 or not isinstance(answers, list):
            raise RasaUnavailable(f"HTTP {response.status_code}")
        return answers


def technical_problem(desk) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    try:
        return desk.replies.render("technical_problem", when=desk.hours.when_read(now), now=now)
    except Exception:  # noqa: BLE001
        return "Nous rencontrons un souci technique, désolés ! Votre message est bien conservé."


class CitizenSide:
    """The platform-independent path of a citizen message: hand-off, assistant, or technical problem."""

    def __init__(self, store: TicketStore, desk, link: AssistantLink, record_apology: bool = False):
        """``record_apology``: keep the "souci technique" answer in the transcript too (a channel that
        shows the conversation again from it, like the website chat)."""
        self.store = store
        self.desk = desk
        self.link = link
        self.record_apology = record_apology
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    def lock(self, conversation: str) -> asyncio.Lock:
        """One message of a conversation at a time, in arrival order."""
        return self._locks[conversation]

    async def open_handoff(self, conversation: str) -> Ticket | None:
        return await asyncio.to_thread(self.store.open_handoff, conversation)

    async def record_during_handoff(self, conversation: str, text: str, message_id: str,
                                    name: str | None, channel: str | None = None) -> None:
        """The bot stays silent: the message joins the hand-off ticket (the CM is told by ``bot.notify``)."""
        await asyncio.to_thread(record_citizen_message, self.store, conversation, channel or self.link.channel,
                                text, message_id, None, name)

    async def ask(self, conversation: str, text: str, client_id: str, name: str | None = None,
                  metadata: dict | None = None, channel: str | None = None) -> list[dict]:
        """The assistant's answers; if it cannot be reached, the message is kept and the citizen
        gets the "souci technique" answer."""
        try:
            return await asyncio.to_thread(self.link.post, conversation, text, client_id, name, metadata, channel)
        except RasaUnavailable as exc:
            logger.warning("Rasa unavailable for %s: %s", log_ref(conversation), exc)
            message_id = message_id_for(conversation, client_id)
            await asyncio.to_thread(reliability.record_or_spool, self.store, conversation, channel or self.link.channel,
                                    text, message_id, None, name)
            apology = technical_problem(self.desk)
            if not self.record_apology:
                return [{"recipient_id": conversation, "text": apology, "outcome": "technical"}]
            try:
                await asyncio.to_thread(record_bot_message, self.store, conversation, channel or self.link.channel,
                                        apology, message_id)
            except Exception:  # noqa: BLE001 - the database may be down too: the answer matters more
                logger.warning("could not record the technical-problem answer of %s", log_ref(conversation))
            return [{"recipient_id": conversation, "text": apology, "outcome": "technical"}]


class OutboxPump:
    """Delivers the outbox rows a gateway owns (``owns(item)``), each once per process.

    Rows come from two paths: ``bot.relay`` calls ``deliver_from_thread`` right after a staff reply
    written in this process, and ``deliver_pending`` (polled) picks up rows written by other
    processes (the staff web, the CLI) or left pending by a failure.
    """

    def __init__(self, store: TicketStore, owns: Callable[[Outbox], bool],
                 deliver: Callable[[Outbox], Awaitable[Any]], name: str, leadership=None):
        """``leadership`` (``bot.leadership.Leadership``): with several copies of the gateway, only the
        active one polls the outbox; each row is also claimed in the database (``relay.claim``)."""
        self.store = store
        self.leadership = leadership
        self.owns = owns
        self.deliver = deliver
        self.name = name
        self._claimed: set[int] = set()  # outbox ids being or already sent by this process
        self._claim_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, channels: tuple[str, ...]) -> None:
        """Run deliveries on ``loop``; in-process staff replies of ``channels`` come straight here."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        for channel in channels:
            relay.register_deliverer(channel, self.deliver_from_thread)

    def detach(self, channels: tuple[str, ...]) -> None:
        for channel in channels:
            relay.unregister_deliverer(channel)

    def _claim(self, item_id: int) -> bool:
        with self._claim_lock:
            if item_id in self._claimed:
                return False
            self._claimed.add(item_id)
        if not relay.claim(self.store, item_id):  # another process sends it (or sent it)
            with self._claim_lock:
                self._claimed.discard(item_id)
            return False
        return True

    def _release(self, item_id: int) -> None:
        with self._claim_lock:
            self._claimed.discard(item_id)

    def deliver_from_thread(self, item: Outbox) -> None:
        """``bot.relay`` deliverer (synchronous, called from a worker thread or another thread)."""
        if self._loop is None or threading.get_ident() == self._loop_thread:
            raise RuntimeError("called on the gateway's event loop: left to the outbox poller")
        if not self._claim(item.id):
            return  # already sent (or being sent) by the poller
        try:
            asyncio.run_coroutine_threadsafe(self.deliver(item), self._loop).result(timeout=120)
        except Undeliverable as exc:
            relay.mark_failed(self.store, item.id, str(exc))
            raise
        except Exception:
            self._release(item.id)
            raise

    def _pending(self) -> list[Outbox]:
        return [item for item in relay.pending(self.store) if self.owns(item)]

    async def deliver_pending(self) -> None:
        if self.leadership is not None and not await asyncio.to_thread(self.leadership.hold):
            return  # another copy of this gateway is active
        for item in await asyncio.to_thread(self._pending):
            if not await asyncio.to_thread(self._claim, item.id):
                continue
            try:
                await self.deliver(item)
            except Undeliverable as exc:
                logger.warning("outbox message %s cannot be delivered: given up", item.id)
                await asyncio.to_thread(relay.mark_failed, self.store, item.id, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - stays pending, retried next round
                self._release(item.id)
                logger.warning("%s: outbox message %s not delivered: %s", self.name, item.id, type(exc).__name__)
                await asyncio.to_thread(relay._mark, self.store, item.id, False, str(exc)[:500])
                continue
            await asyncio.to_thread(relay._mark, self.store, item.id, True)


class HandoffAnnouncements:
    """Open hand-offs and urgent tickets (any channel) to announce to the CM, each once."""

    def __init__(self, store: TicketStore, desk):
        self.store = store
        self.desk = desk

    def unannounced(self) -> list[int]:
        """Not yet posted, including those made while the gateway was down."""
        with self.store.session() as session:
            return list(session.execute(
                select(Ticket.id).where(Ticket.cm_announced_at.is_(None), Ticket.status.not_in(CLOSED_STATUSES),
                                        or_(Ticket.kind == HANDOFF, Ticket.urgent.is_(True)))
                .order_by(Ticket.id)).scalars())

    def claim(self, ticket_id: int, announced: bool = True) -> bool:
        """Claim (or give back) a ticket's announcement: an atomic update, so no ticket is posted twice."""
        with self.store.session() as session:
            if announced:
                statement = (update(Ticket).where(Ticket.id == ticket_id, Ticket.cm_announced_at.is_(None))
                             .values(cm_announced_at=utcnow()))
            else:
                statement = update(Ticket).where(Ticket.id == ticket_id).values(cm_announced_at=None)
            claimed = session.execute(statement.execution_options(synchronize_session=False)).rowcount == 1
            session.commit()
            return claimed

    def details(self, ticket_id: int) -> tuple[Ticket, str, list[str]]:
        """The ticket, its reason, and the transcript's last public lines with who wrote them."""
        ticket = self.store.get(ticket_id)
        lines = [m for m in self.store.transcript(ticket.id) if not m.private][-6:]
        labels = {"citizen": "👤", "bot": "🤖", "staff": "🧑‍💼", "system": "⚙️"}
        return ticket, self.desk.reason(ticket), [f"{labels.get(m.author, m.author)} {m.text[:300]}" for m in lines]


async def every(job: Callable[[], Awaitable[None]], seconds: float, name: str) -> None:
    """Run a background job forever; a failure is logged (without its text) and the job goes on."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Not logger.exception: a database error's text carries SQL parameters (citizens' words).
            logger.error("%s: background job %s failed: %s", name, getattr(job, "__name__", job), type(exc).__name__)
            logger.debug("background job traceback", exc_info=True)
        await asyncio.sleep(seconds)
