"""Telegram gateway (python-telegram-bot v22): citizens in private chats, the CM in a group.

How it fits together:

- Citizen messages (private chats only) go to our hardened REST channel
  ``{rasa_url}/webhooks/guichet/webhook`` (``bot/channels/rest.py``: bad input, flood guard, slash
  commands as words, technical-problem answer) with ``sender = "telegram-<chat id>"`` (the
  conversation id used by the tickets, the transcript and the relay), ``input_channel = "telegram"``
  (so tickets carry the channel ``telegram``), ``message_id = "update-<update id>"`` (idempotent)
  and ``metadata.citizen_name``. Rasa's replies come back as Telegram messages (split under 4,096
  characters); buttons become an inline keyboard whose presses are sent back as the button's payload.
- During an open hand-off nothing goes to Rasa: the message is recorded on the hand-off ticket
  (``bot.transcript.record_citizen_message``) and a line is posted to the CM group.
- Photos: recorded as a transcript line ``[photo] <file id> <caption>``; attached to the latest
  open ticket of the conversation when there is one, otherwise the line waits (unlinked) and the
  next ticket of the conversation picks it up; its caption is then sent to Rasa as a message.
- Shared locations / venues: fill (append to) the latest open ticket's location; without an open
  ticket they are sent to Rasa as a place phrase ("au niveau du point GPS 45.18431, 5.72416"),
  which answers the assistant's "où exactement ?".
- Stickers, voice, documents...: a short French answer saying what the bot handles. Edited
  messages are ignored; an update id seen before is ignored (bounded memory of recent ids).
- Rasa down (connection error, timeout, 5xx): the citizen gets the "souci technique" answer and
  the message is recorded (spooled if the database is down too); the action server down: the
  channel's own "souci technique" answer is relayed.
- Staff relay: a deliverer for the channel ``telegram`` is registered in ``bot.relay``; a
  background task also delivers pending outbox rows of Telegram conversations (channel
  ``telegram`` or conversation id ``telegram-...``) written by other processes (web UI, CLI).
  Run one gateway process per bot (two would both deliver the same rows).
- CM group: a background task posts every new hand-off and urgent ticket (any channel) with the
  transcript's last lines and Take / Close buttons. Replying to such a post (or to a posted
  citizen line), or ``/reply T-2026-000123 texte``, answers the citizen through
  ``StaffDesk.reply`` as the staff account mapped to the Telegram user; ``/queue`` lists open
  hand-offs. Staff commands need a Telegram user listed in ``GUICHET_TELEGRAM_STAFF_USERS``,
  in the CM group or in a private chat with the bot; anyone else is refused and logged.
- Toward Telegram: ``RetryAfter`` (429) waits ``retry_after`` and retries, without limit;
  ``NetworkError`` / ``TimedOut`` are retried 3 times with backoff.

Settings (environment): ``GUICHET_TELEGRAM_TOKEN``, ``GUICHET_TELEGRAM_BASE_URL`` (Bot API base URL,
default Telegram's), ``GUICHET_TELEGRAM_CM_CHAT`` (CM group chat id), ``GUICHET_TELEGRAM_STAFF_USERS``
(``"123:camille,456:victor"``), ``GUICHET_TELEGRAM_WEBHOOK_URL`` / ``GUICHET_TELEGRAM_WEBHOOK_SECRET`` /
``GUICHET_TELEGRAM_WEBHOOK_LISTEN`` / ``GUICHET_TELEGRAM_WEBHOOK_PORT`` (webhook mode, behind a
reverse proxy). Run: ``python -m bot.channels.telegram``.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import logging
import os
import secrets
import signal
import subprocess
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import relay
from bot.accounts import Accounts, Staff
from bot.channels import gateway as core
from bot.integrations.reliability import message_id_for
from bot.leadership import Leadership
from bot.models import Outbox, Ticket
from bot.staff import DeskError, StaffDesk
from bot.tickets import HANDOFF, TicketStore, parse_reference
from bot.textnorm import command_as_words

logger = logging.getLogger(__name__)

CHANNEL = "telegram"
PREFIX = "telegram-"
MAX_TEXT = 4096
MAX_CALLBACK_DATA = 64
SEEN_UPDATES = 5000
UNSUPPORTED = ("Je ne sais pas encore lire ce type de message 🙂. Je comprends les messages écrits, "
               "les photos (pour un signalement) et les positions partagées (📎 → Position). "
               "Écrivez-moi votre question ou votre signalement.")
REFUSED = "Désolé, cette commande est réservée aux agents de la mairie."


# --- settings -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TelegramSettings:
    token: str | None
    base_url: str | None = None
    cm_chat: int | None = None
    staff_users: dict[int, str] = field(default_factory=dict)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443

    @classmethod
    def from_env(cls, environ: dict | None = None) -> TelegramSettings:
        env = os.environ if environ is None else environ
        cm_chat = (env.get("GUICHET_TELEGRAM_CM_CHAT") or "").strip()
        return cls(
            token=env.get("GUICHET_TELEGRAM_TOKEN") or None,
            base_url=env.get("GUICHET_TELEGRAM_BASE_URL") or None,
            cm_chat=int(cm_chat) if cm_chat else None,
            staff_users=parse_staff_users(env.get("GUICHET_TELEGRAM_STAFF_USERS", "")),
            webhook_url=env.get("GUICHET_TELEGRAM_WEBHOOK_URL") or None,
            webhook_secret=env.get("GUICHET_TELEGRAM_WEBHOOK_SECRET") or None,
            webhook_listen=env.get("GUICHET_TELEGRAM_WEBHOOK_LISTEN", "127.0.0.1"),
            webhook_port=int(env.get("GUICHET_TELEGRAM_WEBHOOK_PORT", "8443")),
        )


def parse_staff_users(value: str) -> dict[int, str]:
    """``"123:camille,456:victor"`` -> ``{123: "camille", 456: "victor"}``."""
    users: dict[int, str] = {}
    for part in (value or "").split(","):
        part = part.strip()
        if not part:
            continue
        user_id, _, username = part.partition(":")
        if not username.strip():
            raise ValueError(f"GUICHET_TELEGRAM_STAFF_USERS: {part!r} should be <telegram user id>:<staff username>")
        users[int(user_id.strip())] = username.strip().lower()
    return users


# --- helpers ------------------------------------------------------------------------------------------
def conversation_id(chat_id: int) -> str:
    return f"{PREFIX}{chat_id}"


def chat_of(conversation: str) -> int | None:
    if not conversation.startswith(PREFIX):
        return None
    try:
        return int(conversation[len(PREFIX):])
    except ValueError:
        return None


def split_text(text: str, limit: int = MAX_TEXT - 96) -> list[str]:
    """Cut a long text under Telegram's limit (``bot.channels.gateway.split_text``)."""
    return core.split_text(text, limit)


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


async def with_retries(call: Callable[[], Awaitable[Any]], tries: int = 3, backoff: float = 0.5) -> Any:
    """Flood limits: wait ``retry_after`` and retry (never give up); network errors: ``tries`` attempts."""
    failures = 0
    while True:
        try:
            return await call()
        except RetryAfter as exc:
            with warnings.catch_warnings():  # PTB 22.2+: int now, timedelta in a future version
                warnings.simplefilter("ignore")
                wait = _seconds(exc.retry_after)
            logger.warning("Telegram flood limit: waiting %.1f s before retrying", wait)
            await asyncio.sleep(wait)
        except (BadRequest, Forbidden):
            raise
        except (TimedOut, NetworkError) as exc:
            failures += 1
            if failures >= tries:
                raise
            logger.warning("Telegram network error (%s), retry %d/%d", type(exc).__name__, failures, tries - 1)
            await asyncio.sleep(backoff * 2 ** (failures - 1))


# --- the gateway --------------------------------------------------------------------------------------
class Gateway:
    def __init__(self, application: Application, rasa_url: str, store: TicketStore, desk: StaffDesk, *,
                 cm_chat: int | None = None, staff_users: dict[int, str] | None = None,
                 poll_seconds: float = 3.0, rasa_timeout: float = 90.0):
        self.application = application
        self.citizens = core.CitizenSide(store, desk, core.AssistantLink(rasa_url, CHANNEL, rasa_timeout))
        self.outbox = core.OutboxPump(store, self._owns, self._deliver, "Telegram gateway")
        self.announcements = core.HandoffAnnouncements(store, desk)
        self.store = store
        self.desk = desk
        self.accounts = Accounts(store, desk.profile)
        self.cm_chat = cm_chat
        self.staff_users = dict(staff_users or {})
        self.poll_seconds = poll_seconds
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._payloads: dict[str, str] = {}  # long button payloads, by short key
        self._offered: collections.OrderedDict[str, None] = collections.OrderedDict()  # payloads of our buttons
        self._posts: collections.OrderedDict[int, str] = collections.OrderedDict()  # CM post id -> reference
        self._tasks: list[asyncio.Task] = []

    @property
    def bot(self):
        return self.application.bot

    # --- lifecycle ---------------------------------------------------------------------------------
    def add_handlers(self) -> None:
        app = self.application
        app.add_handler(TypeHandler(Update, self.on_any_update), group=-1)
        new = filters.UpdateType.MESSAGE
        app.add_handler(CommandHandler("reply", self.on_reply_command, filters=new))
        app.add_handler(CommandHandler("queue", self.on_queue_command, filters=new))
        app.add_handler(CommandHandler("id", self.on_id_command, filters=new))
        app.add_handler(CommandHandler("start", self.on_start, filters=new & filters.ChatType.PRIVATE))
        app.add_handler(CallbackQueryHandler(self.on_callback))
        app.add_handler(MessageHandler(new & filters.Chat(self.cm_chat) if self.cm_chat is not None
                                       else filters.Chat(chat_id=[]), self.on_cm_group_message))
        private = new & filters.ChatType.PRIVATE
        app.add_handler(MessageHandler(private & filters.TEXT & ~filters.COMMAND, self.on_text))
        app.add_handler(MessageHandler(private & filters.COMMAND, self.on_text))  # "/aide", "/restart"...
        app.add_handler(MessageHandler(private & filters.PHOTO, self.on_photo))
        app.add_handler(MessageHandler(private & (filters.LOCATION | filters.VENUE), self.on_location))
        app.add_handler(MessageHandler(private & ~filters.COMMAND, self.on_unsupported))

    async def start_background(self, _application: Application | None = None) -> None:
        """Register the deliverer and start the outbox and CM-group pollers (on the running loop)."""
        self.outbox.attach(asyncio.get_running_loop(), (CHANNEL,))
        self._tasks = [asyncio.create_task(self._every(self.outbox.deliver_pending), name="guichet-outbox")]
        if self.cm_chat is not None:
            self._tasks.append(asyncio.create_task(self._every(self.announce_new_tickets), name="guichet-cm"))

    async def stop_background(self, _application: Application | None = None) -> None:
        self.outbox.detach((CHANNEL,))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _every(self, job: Callable[[], Awaitable[None]]) -> None:
        await core.every(job, self.poll_seconds, "Telegram gateway")

    # --- sending -------------------------------------------------------------------------------------
    async def send(self, chat_id: int, text: str, reply_markup=None, **kwargs):
        """Send a (possibly long) text; the keyboard goes with the last part. Returns the last message."""
        parts = split_text(text)
        message = None
        for index, part in enumerate(parts):
            markup = reply_markup if index == len(parts) - 1 else None
            message = await with_retries(lambda part=part, markup=markup: self.bot.send_message(
                chat_id, part, reply_markup=markup, **kwargs))
        return message

    def _keyboard(self, buttons: list[dict]) -> InlineKeyboardMarkup | None:
        rows = []
        for button in buttons or []:
            title = str(button.get("title") or button.get("payload") or "")[:64]
            payload = str(button.get("payload") or title)
            self._offered[payload] = None
            while len(self._offered) > SEEN_UPDATES:
                self._offered.popitem(last=False)
            data = payload
            if len(payload.encode()) > MAX_CALLBACK_DATA or payload.startswith(("take:", "close:", "p:")):
                key = hashlib.sha1(payload.encode()).hexdigest()[:16]
                self._payloads[key] = payload
                data = f"p:{key}"
            rows.append([InlineKeyboardButton(title, callback_data=data)])
        return InlineKeyboardMarkup(rows) if rows else None

    # --- citizen side --------------------------------------------------------------------------------
    async def on_any_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.update_id in self._seen:
            logger.info("update %s already handled: ignored", update.update_id)
            raise ApplicationHandlerStop
        self._seen[update.update_id] = None
        while len(self._seen) > SEEN_UPDATES:
            self._seen.popitem(last=False)
        if update.edited_message is not None or update.edited_channel_post is not None:
            raise ApplicationHandlerStop  # an edit never makes a second ticket

    async def on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.citizen_says(update, "bonjour")

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.citizen_says(update, update.effective_message.text)

    async def citizen_says(self, update: Update, text: str, chat_id: int | None = None,
                           user=None, button_payload: bool = False) -> None:
        """Send the citizen's words to Rasa (or to the hand-off ticket) and relay the answers.

        ``button_payload``: ``text`` is the payload of a button this gateway offered, sent as is.
        """
        text = text if button_payload else command_as_words(text) or "bonjour"
        chat_id = chat_id if chat_id is not None else update.effective_chat.id
        user = user or update.effective_user
        name = (user.first_name if user else None) or None
        conversation = conversation_id(chat_id)
        client_id = f"update-{update.update_id}"
        message_id = message_id_for(conversation, client_id)  # what the REST channel stores for it
        async with self.citizens.lock(conversation):
            handoff = await self.citizens.open_handoff(conversation)
            if handoff is not None:
                await self._record_during_handoff(handoff, conversation, text, message_id, name)
                return
            try:
                await with_retries(lambda: self.bot.send_chat_action(chat_id, ChatAction.TYPING))
            except Exception:
                logger.debug("typing action failed", exc_info=True)
            answers = await self.citizens.ask(conversation, text, client_id, name)
            for answer in answers:
                await self._send_rasa_answer(chat_id, answer)

    async def _send_rasa_answer(self, chat_id: int, answer: dict) -> None:
        text = answer.get("text") or ""
        if answer.get("image"):
            text = f"{text}\n{answer['image']}".strip()
        if not text and not answer.get("buttons"):
            return
        await self.send(chat_id, text or "…", reply_markup=self._keyboard(answer.get("buttons") or []))

    def technical_problem(self) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        try:
            return self.desk.replies.render("technical_problem", when=self.desk.hours.when_read(now), now=now)
        except Exception:  # noqa: BLE001
            return "Nous rencontrons un souci technique, désolés ! Votre message est bien conservé."

    async def _record_during_handoff(self, handoff: Ticket, conversation: str, text: str, message_id: str,
                                     name: str | None) -> None:
        await self.citizens.record_during_handoff(conversation, text, message_id, name)
        if self.cm_chat is not None:
            post = await self.send(self.cm_chat, f"💬 {handoff.reference} — {name or 'citoyen'} : {text}\n"
                                                 "(répondez à ce message pour lui écrire)")
            self._remember_post(post, handoff.reference)

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        chat_id = update.effective_chat.id
        conversation = conversation_id(chat_id)
        photo = message.photo[-1]  # the largest size
        caption = (message.caption or "").strip()
        line = f"[photo] {photo.file_id} {caption}".strip()
        name = update.effective_user.first_name if update.effective_user else None
        async with self.citizens.lock(conversation):
            handoff = await asyncio.to_thread(self.store.open_handoff, conversation)
            if handoff is not None:
                await self._record_during_handoff(handoff, conversation, line, f"telegram-update-{update.update_id}",
                                                  name)
                return
            ticket = await asyncio.to_thread(core.latest_open_ticket, self.store, conversation)
            await asyncio.to_thread(self.store.add_message, conversation, CHANNEL, "citizen", line,
                                    ticket_id=ticket.id if ticket else None,
                                    external_id=f"telegram-update-{update.update_id}", author_name=name)
            if ticket is not None:
                await asyncio.to_thread(self.store.append_summary, ticket.id,
                                        f"Photo jointe (Telegram) : {photo.file_id}" + (f" — {caption}" if caption else ""))
                await self.send(chat_id, f"📷 Photo ajoutée à votre dossier {ticket.reference}. Merci !")
                return
        if caption:
            await self.citizen_says(update, caption)
        else:
            await self.send(chat_id, "📷 Photo bien reçue. Dites-moi en quelques mots ce qu'elle montre "
                                     "et où cela se trouve.")

    async def on_location(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        chat_id = update.effective_chat.id
        conversation = conversation_id(chat_id)
        if message.venue is not None:
            venue = message.venue
            place = f"{venue.title}, {venue.address}".strip(", ")
            latitude, longitude = venue.location.latitude, venue.location.longitude
        else:
            place = None
            latitude, longitude = message.location.latitude, message.location.longitude
        gps = f"point GPS {latitude:.5f}, {longitude:.5f}"
        location = f"{place} ({gps})" if place else gps
        async with self.citizens.lock(conversation):
            handoff = await asyncio.to_thread(self.store.open_handoff, conversation)
            ticket = None if handoff else await asyncio.to_thread(core.latest_open_ticket, self.store, conversation)
            if ticket is not None:
                await asyncio.to_thread(self.store.update_location, ticket.id, location)
                await asyncio.to_thread(self.store.add_message, conversation, CHANNEL, "citizen",
                                        f"[position] {location}", ticket_id=ticket.id,
                                        external_id=f"telegram-update-{update.update_id}")
                await self.send(chat_id, f"📍 Position ajoutée à votre dossier {ticket.reference}. Merci !")
                return
        await self.citizen_says(update, f"au niveau du {location}" if not place else f"à {location}")

    async def on_unsupported(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.send(update.effective_chat.id, UNSUPPORTED)


    # --- buttons -------------------------------------------------------------------------------------
    async def on_callback(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        data = query.data or ""
        if data.startswith(("take:", "close:")):
            await self._staff_button(update, data)
            return
        if data.startswith("p:"):
            data = self._payloads.get(data[2:], "")
        await with_retries(lambda: query.answer())
        if query.message is None or query.message.chat.type != ChatType.PRIVATE or not data:
            return
        try:
            await with_retries(lambda: query.edit_message_reply_markup(reply_markup=None))
        except Exception:
            logger.debug("could not remove the keyboard", exc_info=True)
        # Only payloads of buttons we offered go to Rasa as such; anything else (forged, or from
        # before a restart) is read as words.
        await self.citizen_says(update, data, chat_id=query.message.chat.id, user=query.from_user,
                                button_payload=data in self._offered)

    async def _staff_button(self, update: Update, data: str) -> None:
        query = update.callback_query
        staff = await self._staff_for(update)
        if staff is None:
            await with_retries(lambda: query.answer(REFUSED, show_alert=True))
            return
        action, _, reference = data.partition(":")
        try:
            if action == "take":
                ticket = await asyncio.to_thread(self.desk.take, staff, reference)
                text = f"{ticket.reference} : pris en charge par {staff.display_name}."
            else:
                ticket = await asyncio.to_thread(self.desk.close, staff, reference)
                text = f"{ticket.reference} : clôturé, le bot reprend la conversation."
        except DeskError as exc:
            text = str(exc)
        await with_retries(lambda: query.answer(text[:190]))
        if query.message is not None and self.cm_chat is not None:
            await self.send(self.cm_chat, f"✅ {text}" if not text.startswith(("Ce ticket", "Ticket")) else f"⚠️ {text}")

    # --- staff side ----------------------------------------------------------------------------------
    async def _staff_for(self, update: Update) -> Staff | None:
        """The staff account of the sender, when allowed here; refusals are logged."""
        user = update.effective_user
        chat = update.effective_chat
        username = self.staff_users.get(user.id) if user else None
        allowed_chat = chat is not None and (chat.id == self.cm_chat or chat.type == ChatType.PRIVATE)
        staff = await asyncio.to_thread(self.accounts.get, username) if username and allowed_chat else None
        if staff is None:
            logger.warning("staff command refused: Telegram user %s in chat %s",
                           user.id if user else "?", chat.id if chat else "?")
        return staff

    async def _refuse(self, update: Update) -> None:
        await self.send(update.effective_chat.id, REFUSED)

    async def on_reply_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        staff = await self._staff_for(update)
        if staff is None:
            await self._refuse(update)
            return
        args = context.args or []
        if len(args) < 2:
            await self.send(update.effective_chat.id, "Usage : /reply T-2026-000123 votre message")
            return
        text = update.effective_message.text.split(None, 2)[2] if len(update.effective_message.text.split(None, 2)) > 2 else ""
        await self._staff_reply(update, staff, args[0], text)

    async def on_queue_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        staff = await self._staff_for(update)
        if staff is None:
            await self._refuse(update)
            return
        items = await asyncio.to_thread(self.desk.queue, staff)
        if not items:
            await self.send(update.effective_chat.id, "File vide : aucune demande en attente. 🎉")
            return
        lines = [f"{'🚨 ' if item.ticket.urgent else ''}{item.ticket.reference} — {item.reason} — "
                 f"{item.ticket.citizen_name or 'citoyen'} — attente {item.waiting_label}"
                 + (f" — pris par {item.ticket.assigned_to}" if item.ticket.assigned_to else "")
                 for item in items]
        await self.send(update.effective_chat.id, "File du CM :\n" + "\n".join(lines))

    async def on_id_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Setting-up aid: the ids to put in GUICHET_TELEGRAM_CM_CHAT and GUICHET_TELEGRAM_STAFF_USERS."""
        chat, user = update.effective_chat, update.effective_user
        await self.send(chat.id, f"Identifiant de cette discussion : {chat.id}\n"
                                 f"Votre identifiant Telegram : {user.id if user else 'inconnu'}")

    async def on_cm_group_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        replied = message.reply_to_message
        if replied is None or not message.text or message.text.startswith("/"):
            return  # CM chatter: never sent to Rasa
        reference = self._posts.get(replied.message_id)
        if reference is None:
            parsed = parse_reference(replied.text or replied.caption or "")
            reference = f"T-{parsed[0]}-{parsed[1]:06d}" if parsed and parsed[0] else None
        if reference is None:
            return
        staff = await self._staff_for(update)
        if staff is None:
            await self._refuse(update)
            return
        await self._staff_reply(update, staff, reference, message.text)

    async def _staff_reply(self, update: Update, staff: Staff, reference: str, text: str) -> None:
        try:
            await asyncio.to_thread(self.desk.reply, staff, reference, text)
        except DeskError as exc:
            await self.send(update.effective_chat.id, f"⚠️ {exc}")
            return
        await self.send(update.effective_chat.id, f"✅ Réponse envoyée au citoyen ({reference.upper()}).")

    def _remember_post(self, message, reference: str) -> None:
        if message is None:
            return
        self._posts[message.message_id] = reference
        while len(self._posts) > SEEN_UPDATES:
            self._posts.popitem(last=False)

    # --- CM group announcements ------------------------------------------------------------------
    async def announce_new_tickets(self) -> None:
        for ticket_id in await asyncio.to_thread(self.announcements.unannounced):
            if not await asyncio.to_thread(self.announcements.claim, ticket_id, True):
                continue  # another gateway process posted it
            ticket, reason, lines = await asyncio.to_thread(self.announcements.details, ticket_id)
            title = "🚨 URGENT — " if ticket.urgent else "🔔 "
            kind = "Demande de contact" if ticket.kind == HANDOFF else "Ticket urgent"
            text = (f"{title}{kind} {ticket.reference}\nMotif : {reason}\n"
                    f"Citoyen : {ticket.citizen_name or 'inconnu'} ({ticket.channel})\n\n"
                    + ("\n".join(lines) or "(pas de message)")
                    + "\n\nRépondez à ce message pour écrire au citoyen.")
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Prendre", callback_data=f"take:{ticket.reference}"),
                                              InlineKeyboardButton("Clore", callback_data=f"close:{ticket.reference}")]])
            try:
                post = await self.send(self.cm_chat, text, reply_markup=keyboard)
            except Exception:
                await asyncio.to_thread(self.announcements.claim, ticket_id, False)  # try again next round
                raise
            self._remember_post(post, ticket.reference)

    # --- relay: staff messages to citizens -----------------------------------------------------------
    def _owns(self, item: Outbox) -> bool:
        return item.channel == CHANNEL or item.conversation_id.startswith(PREFIX)

    async def _deliver(self, item: Outbox) -> None:
        chat_id = chat_of(item.conversation_id)
        if chat_id is None:
            raise ValueError(f"not a Telegram conversation: {item.conversation_id}")
        await self.send(chat_id, item.text, reply_markup=self._keyboard(relay.buttons_of(item)))

    def deliver_from_thread(self, item: Outbox) -> None:
        """``bot.relay`` deliverer (kept for callers of the old name)."""
        self.outbox.deliver_from_thread(item)

    async def deliver_pending(self) -> None:
        await self.outbox.deliver_pending()

def build_application(token: str, rasa_url: str, store: TicketStore, desk: StaffDesk, *,
                      base_url: str | None = None, cm_chat: int | None = None,
                      staff_users: dict[int, str] | None = None, poll_seconds: float = 3.0,
                      rasa_timeout: float = 90.0) -> Application:
    """The python-telegram-bot application; its ``Gateway`` is ``application.bot_data["gateway"]``.

    ``run_polling()`` / ``run_webhook()`` start the background jobs (post_init); when driving the
    application by hand (tests), call ``await gateway.start_background()`` after ``start()``.
    """
    builder = Application.builder().token(token).concurrent_updates(True).job_queue(None)
    if base_url:
        builder = builder.base_url(base_url).base_file_url(base_url.rstrip("/").removesuffix("/bot") + "/file/bot")
    application = builder.build()
    gateway = Gateway(application, rasa_url, store, desk, cm_chat=cm_chat, staff_users=staff_users,
                      poll_seconds=poll_seconds, rasa_timeout=rasa_timeout)
    gateway.add_handlers()
    application.bot_data["gateway"] = gateway
    application.post_init = gateway.start_background
    application.post_stop = gateway.stop_background
    return application


def serve(application: Application, settings: TelegramSettings) -> None:
    """Long polling, or webhook mode when ``webhook_url`` is set (blocks until stopped).

    In webhook mode Telegram must present the secret token on every call (PTB answers 403
    otherwise); when none is configured a random one is made at each start and given to Telegram
    with ``setWebhook``. Pending updates are never dropped: what arrived while we were down is read.
    """
    if settings.webhook_url:
        secret = settings.webhook_secret or secrets.token_urlsafe(32)
        application.run_webhook(listen=settings.webhook_listen, port=settings.webhook_port,
                                url_path=urlparse(settings.webhook_url).path.lstrip("/"),
                                webhook_url=settings.webhook_url, secret_token=secret,
                                allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)
    else:
        application.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)


def run(settings: TelegramSettings | None = None) -> None:
    """The gateway process (``python -m bot.channels.telegram``): settings from the environment."""
    from bot.settings import get_settings
    from bot.staff import get_desk

    settings = settings or TelegramSettings.from_env()
    if not settings.token:
        raise SystemExit("GUICHET_TELEGRAM_TOKEN n'est pas défini (jeton donné par @BotFather).")
    desk = get_desk()
    application = build_application(settings.token, get_settings().rasa_url, desk.store, desk,
                                     base_url=settings.base_url, cm_chat=settings.cm_chat,
                                     staff_users=settings.staff_users)
    # Telegram gives a bot's updates to one reader: with several copies (several servers), one is
    # active and the others stand by; a copy that loses its hold stops (its supervisor restarts it).
    leadership = Leadership("passerelle Telegram")
    if not leadership.wait_until_active(say=lambda text: logger.info("%s", text)):
        return
    leadership.keep(on_lost=lambda: os.kill(os.getpid(), signal.SIGTERM))
    logger.info("Telegram gateway: %s mode, Rasa at %s", "webhook" if settings.webhook_url else "polling",
                get_settings().rasa_url)
    try:
        serve(application, settings)
    finally:
        leadership.resign()


def start_process(rasa_url: str, log_path: Path, environ: dict | None = None) -> subprocess.Popen:
    """Start the gateway as its own process (what ``guichet run`` does when a token is configured)."""
    return core.start_process("bot.channels.telegram", rasa_url, log_path, environ)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Bot API call otherwise
    run()
