"""The Meta gateway: the town's Facebook page and Instagram account, in private and in public.

One small aiohttp server (``GUICHET_META_LISTEN``:``GUICHET_META_PORT``, path ``/webhooks/meta``,
behind the reverse proxy) receives Meta's webhook; it answers 200 as soon as the signature is
checked and the events are queued, and the work is done after, so a slow assistant never makes
Meta re-send. Events of one person (or one post) are handled one after the other, in order;
different people at once.

Private messages (Messenger, Instagram Direct) go to our REST channel like Telegram's
(``bot.channels.gateway``): ``sender = "messenger-<PSID>"`` / ``"instagram-<IGSID>"`` (or the
conversation of the comment the person answered, ``bot.channels.meta.contacts``), client message id
``mid-<mid>``, so a message delivered twice is handled once (and never ticketed twice). Answers
go back through the Send API: cut under 2,000 (Messenger) / 1,000 (Instagram) characters, buttons
as quick replies, ``typing_on`` while the assistant works. The "Démarrer" button (postback
``GET_STARTED``) is a greeting. A photo is attached to the conversation's open ticket, or waits
for the next ticket. During a hand-off the bot is silent: the message joins the ticket and the CM
is told (``bot.notify``).

Public comments (page ``feed``, Instagram ``comments``): see ``bot.channels.meta.comments`` for
what is posted; the page's own comments are not answered (a comment by the town in a thread
means someone answered: the bot adds nothing more there).

Staff messages (outbox): private ones inside the 24-hour window as a response, then for 7 days
with the ``HUMAN_AGENT`` tag when the app has it (``GUICHET_META_HUMAN_AGENT=1``), beyond that
given up and shown to the staff with the reason; public ones (``surface="public"``) as a reply
under the comment. Graph errors: rate limits and Meta's transient failures are retried, an
expired token stays pending with the reason shown, a closed window or an unreachable person is
given up and shown.
"""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web
from sqlalchemy import select

from bot import relay
from bot.channels import gateway as core
from bot.channels.meta.comments import decide
from bot.channels.meta.contacts import Contacts, Unreachable
from bot.channels.meta.graph import GraphClient, GraphError
from bot.channels.meta.webhook import (InboundComment, InboundMessage, parse_delivery, signature_valid,
                                       verify_subscription)
from bot.comments import Comments, NewComment, channel_for, platform_of_conversation
from bot.outcomes import derive_outcome, tickets_of
from bot.integrations.reliability import message_id_for
from bot.models import Outbox, PublicComment, utcnow
from bot.leadership import Leadership
from bot.tickets import TicketStore
from bot.transcript import already_recorded

logger = logging.getLogger(__name__)

CHANNELS = ("messenger", "instagram", "facebook_comment", "instagram_comment")
PREFIXES = ("messenger-", "instagram-", "fbcomment-", "igcomment-")
LIMITS = {"messenger": 2000, "instagram": 1000}  # Messenger counts characters, Instagram UTF-8 bytes
GET_STARTED = "GET_STARTED"
SEEN = 10_000
UNSUPPORTED = ("Je ne sais pas encore lire ce type de message 🙂 Je comprends les messages écrits et les "
               "photos (pour un signalement). Écrivez-moi votre question ou le problème à signaler.")
PHOTO_ADDED = "📷 Photo ajoutée à votre dossier {ref}. Merci !"
PHOTO_WAITING = "📷 Photo bien reçue. Dites-moi en quelques mots ce qu'elle montre et où cela se trouve."


def fit(text: str, platform: str) -> list[str]:
    """``text`` in parts under the platform's limit (a margin kept; Instagram's is in UTF-8 bytes)."""
    limit = LIMITS.get(platform, 1000) - 20
    parts = core.split_text(text, limit)
    while platform == "instagram" and any(len(part.encode()) > LIMITS["instagram"] - 20 for part in parts):
        limit = int(limit * 0.85)
        parts = core.split_text(text, limit)
    return parts


@dataclass(frozen=True)
class MetaSettings:
    app_secret: str | None
    verify_token: str | None
    page_token: str | None
    page_id: str | None = None
    instagram_id: str | None = None
    graph_url: str = "https://graph.facebook.com"
    graph_version: str = "v21.0"
    human_agent: bool = False
    answer_comments: bool = True
    public_replies_per_post: int = 10  # an hour
    listen: str = "127.0.0.1"
    port: int = 8444
    path: str = "/webhooks/meta"

    @classmethod
    def from_env(cls, environ: dict | None = None) -> MetaSettings:
        env = os.environ if environ is None else environ

        def flag(name: str, default: bool) -> bool:
            value = (env.get(name) or "").strip().lower()
            return default if not value else value in ("1", "true", "oui", "yes")

        return cls(
            app_secret=env.get("GUICHET_META_APP_SECRET") or None,
            verify_token=env.get("GUICHET_META_VERIFY_TOKEN") or None,
            page_token=env.get("GUICHET_META_PAGE_TOKEN") or None,
            page_id=env.get("GUICHET_META_PAGE_ID") or None,
            instagram_id=env.get("GUICHET_META_INSTAGRAM_ID") or None,
            graph_url=env.get("GUICHET_META_GRAPH_URL") or "https://graph.facebook.com",
            graph_version=env.get("GUICHET_META_GRAPH_VERSION") or "v21.0",
            human_agent=flag("GUICHET_META_HUMAN_AGENT", False),
            answer_comments=flag("GUICHET_META_ANSWER_COMMENTS", True),
            public_replies_per_post=int(env.get("GUICHET_META_REPLIES_PER_POST") or 10),
            listen=env.get("GUICHET_META_LISTEN") or "127.0.0.1",
            port=int(env.get("GUICHET_META_PORT") or 8444),
        )

    @property
    def configured(self) -> bool:
        return bool(self.app_secret and self.verify_token and self.page_token)

    def missing(self) -> list[str]:
        return [name for name, value in (("GUICHET_META_APP_SECRET", self.app_secret),
                                         ("GUICHET_META_VERIFY_TOKEN", self.verify_token),
                                         ("GUICHET_META_PAGE_TOKEN", self.page_token)) if not value]


class MetaGateway:
    def __init__(self, settings: MetaSettings, rasa_url: str, store: TicketStore, desk, *,
                 graph: GraphClient | None = None, poll_seconds: float = 3.0, rasa_timeout: float = 90.0):
        self.settings = settings
        self.store = store
        self.desk = desk
        self.graph = graph or GraphClient(settings.page_token or "", base_url=settings.graph_url,
                                          version=settings.graph_version)
        self.citizens = core.CitizenSide(store, desk, core.AssistantLink(rasa_url, "messenger", rasa_timeout))
        self.contacts = Contacts(store)
        self.comments = Comments(store)
        # Several copies behind the proxy all take webhooks; one sends the staff's messages.
        self.outbox = core.OutboxPump(store, self._owns, self._deliver, "Meta gateway",
                                      leadership=Leadership("passerelle Meta"))
        self.poll_seconds = poll_seconds
        self.own_ids = {i for i in (settings.page_id, settings.instagram_id) if i}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._bot_replies: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._tails: dict[str, asyncio.Task] = {}
        self._running: set[asyncio.Task] = set()
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None

    # --- lifecycle -----------------------------------------------------------------------------------
    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_get(self.settings.path, self.on_verify)
        app.router.add_post(self.settings.path, self.on_delivery)
        app.router.add_get("/health", self.on_health)
        return app

    async def start(self, port: int | None = None) -> int:
        """Serve the webhook and start the outbox poller; returns the port listened on."""
        self.outbox.attach(asyncio.get_running_loop(), CHANNELS)
        self._tasks = [asyncio.create_task(core.every(self.outbox.deliver_pending, self.poll_seconds, "Meta gateway"),
                                           name="guichet-meta-outbox")]
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.listen, self.settings.port if port is None else port)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port chosen for 0

    async def stop(self, grace: float = 20.0) -> None:
        """Stop taking deliveries, finish what was received (up to ``grace`` seconds), stop the poller."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)
        self.outbox.detach(CHANNELS)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the webhook ---------------------------------------------------------------------------------
    async def on_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def on_verify(self, request: web.Request) -> web.Response:
        challenge = verify_subscription(dict(request.query), self.settings.verify_token)
        if challenge is None:
            logger.warning("Meta webhook verification refused (wrong verify token or mode)")
            return web.Response(status=403, text="Forbidden")
        return web.Response(text=challenge)

    async def on_delivery(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not signature_valid(body, request.headers.get("X-Hub-Signature-256"), self.settings.app_secret):
            logger.warning("Meta webhook call refused: missing or wrong X-Hub-Signature-256")
            return web.Response(status=403, text="Invalid signature")
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            logger.warning("Meta webhook call with an unreadable body: ignored")
            return web.Response(text="EVENT_RECEIVED")  # signed, but nothing we can use: do not make Meta re-send
        for event in parse_delivery(payload):
            if isinstance(event, InboundMessage):
                if self._seen_before(f"{event.platform}:{event.mid}"):
                    continue
                self._queue(f"{event.platform}:{event.user_id}", lambda event=event: self.handle_message(event))
            else:
                self._queue(f"post:{event.post_id}", lambda event=event: self.handle_comment(event))
        return web.Response(text="EVENT_RECEIVED")

    def _seen_before(self, key: str) -> bool:
        if key in self._seen:
            logger.info("Meta message delivered twice: ignored")
            return True
        self._seen[key] = None
        while len(self._seen) > SEEN:
            self._seen.popitem(last=False)
        return False

    def _queue(self, key: str, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` after the previous job of the same key (one person, one post), in order."""
        previous = self._tails.get(key)

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await job()
            except Exception as exc:  # noqa: BLE001 - logged without the citizen's words
                logger.error("Meta event failed: %s", type(exc).__name__)
                logger.debug("Meta event traceback", exc_info=True)

        task = asyncio.create_task(run())
        self._tails[key] = task
        self._running.add(task)

        def done(finished: asyncio.Task) -> None:
            self._running.discard(finished)
            if self._tails.get(key) is finished:
                del self._tails[key]

        task.add_done_callback(done)

    async def idle(self, timeout: float = 60.0) -> None:
        """Wait until every received event is handled (tests, shutdown)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._running and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(set(self._running), timeout=max(0.01, deadline - asyncio.get_running_loop().time()))

    # --- private messages ----------------------------------------------------------------------------
    async def handle_message(self, event: InboundMessage) -> None:
        conversation = await asyncio.to_thread(self.contacts.inbound, event.platform, event.user_id, event.at)
        client_id = f"mid-{event.mid}"
        message_id = message_id_for(conversation, client_id)
        if message_id and await asyncio.to_thread(already_recorded, self.store, conversation, message_id):
            logger.info("Meta message already in the transcript: ignored")
            return
        channel = self._channel_of(conversation, event.platform)
        async with self.citizens.lock(conversation):
            if event.images:
                await self._photos(event, conversation, channel, message_id)
                if not event.text:
                    return
            text = event.text
            if event.postback:
                text = "bonjour" if event.postback == GET_STARTED else (event.text or event.postback)
            elif event.quick_reply:
                text = event.quick_reply
            if not text.strip():
                if event.other_attachments:
                    await self._send_texts(event.platform, event.user_id, [UNSUPPORTED])
                return
            handoff = await self.citizens.open_handoff(conversation)
            if handoff is not None:
                await self.citizens.record_during_handoff(conversation, text, message_id, None, channel)
                return
            await asyncio.to_thread(self.graph.typing_on, event.user_id)
            answers = await self.citizens.ask(conversation, text, client_id, channel=channel)
            for answer in answers:
                content = answer.get("text") or ""
                if answer.get("image"):
                    content = f"{content}\n{answer['image']}".strip()
                if content or answer.get("buttons"):
                    await self._send_texts(event.platform, event.user_id, [content or "…"], answer.get("buttons"))

    def _channel_of(self, conversation: str, platform: str) -> str:
        comment_platform = platform_of_conversation(conversation)
        return channel_for(comment_platform) if comment_platform else platform

    async def _photos(self, event: InboundMessage, conversation: str, channel: str, message_id: str | None) -> None:
        handoff = await self.citizens.open_handoff(conversation)
        ticket = None if handoff else await asyncio.to_thread(core.latest_open_ticket, self.store, conversation)
        for index, url in enumerate(event.images):
            line = f"[photo] {url} {event.text}".strip()
            external = f"{message_id}-photo-{index}" if message_id else None
            if handoff is not None:
                await self.citizens.record_during_handoff(conversation, line, external, None, channel)
                continue
            await asyncio.to_thread(self.store.add_message, conversation, channel, "citizen", line,
                                    ticket_id=ticket.id if ticket else None, external_id=external)
            if ticket is not None:
                await asyncio.to_thread(self.store.append_summary, ticket.id, f"Photo jointe ({event.platform}) : {url}")
        if handoff is None and not event.text:
            reply = PHOTO_ADDED.format(ref=ticket.reference) if ticket else PHOTO_WAITING
            await self._send_texts(event.platform, event.user_id, [reply])


    async def _send_texts(self, platform: str, recipient_id: str, texts: list[str], buttons: list[dict] | None = None,
                          messaging_type: str = "RESPONSE", tag: str | None = None) -> None:
        """Each text cut under the platform's limit; the buttons (quick replies) go with the last part."""
        parts = [part for text in texts for part in fit(text, platform)]
        quick = [{"title": str(b.get("title") or b.get("payload") or "")[:20], "payload": str(b.get("payload") or b.get("title"))}
                 for b in (buttons or [])]
        for index, part in enumerate(parts):
            await asyncio.to_thread(self.graph.send_message, recipient_id, part,
                                    quick_replies=quick if index == len(parts) - 1 and quick else None,
                                    messaging_type=messaging_type, tag=tag)

    # --- public comments -----------------------------------------------------------------------------
    async def handle_comment(self, event: InboundComment) -> None:
        if event.author_id and event.author_id in self.own_ids:
            if event.comment_id in self._bot_replies or await asyncio.to_thread(self._is_bot_reply, event.comment_id):
                return  # the echo of our own reply
            await asyncio.to_thread(self.comments.mark_staff_answered, event.thread_id)
            return
        if event.verb != "add" or not event.text.strip():
            return  # edits and removals change nothing: one treatment per comment, nothing hidden
        row, created = await asyncio.to_thread(self.comments.record, NewComment(
            platform=event.platform, comment_id=event.comment_id, post_id=event.post_id, thread_id=event.thread_id,
            text=event.text, author_id=event.author_id, author_name=event.author_name, permalink=event.permalink,
            created_at=event.at))
        if not created:
            logger.info("Meta comment delivered twice: ignored")
            return
        if not self.settings.answer_comments:
            await asyncio.to_thread(self.comments.set_outcome, row.id, outcome=None, treatment="not_answered")
            return
        staff_thread = await asyncio.to_thread(self.comments.staff_answered, event.thread_id)
        conversation, channel = row.conversation_id, channel_for(event.platform)
        answers = await self.citizens.ask(conversation, event.text, f"comment-{event.comment_id}", event.author_name,
                                          {"outcomes": True, "surface": "public_comment"}, channel)
        tickets = await asyncio.to_thread(tickets_of, self.store, conversation)
        outcome, _, _ = derive_outcome(tickets, [a.get("outcome") for a in answers])
        since = utcnow() - dt.timedelta(hours=1)
        limited = (await asyncio.to_thread(self.comments.bot_public_replies_since, event.post_id, since)
                   >= self.settings.public_replies_per_post)
        decision = decide(outcome, answers, tickets, say=self._say, limited=limited, staff_thread=staff_thread,
                          names=tuple(n for n in (event.author_name,) if n))
        await asyncio.to_thread(self.comments.set_outcome, row.id, outcome=outcome, treatment=decision.treatment,
                                ticket_id=tickets[0].id if tickets else None)
        if decision.private_texts:
            await self._private_reply(row.id, event, conversation, tickets, decision.private_texts)
        if decision.public_text:
            await self._public_reply(row.id, event, decision.public_text, tickets)

    def _say(self, key: str, **context) -> str:
        ticket = context.pop("ticket", None)
        if ticket is not None:
            service = self.desk.profile.services.get(ticket.queue)
            context["service"] = service.name if service else f"équipe {self.desk.profile.cm_team}"
        return self.desk.replies.render(f"public_comment.{key}", numbers=self.desk.profile.town.emergency_numbers,
                                        **context)

    def _is_bot_reply(self, comment_id: str) -> bool:
        with self.store.session() as session:
            return session.execute(select(PublicComment.id).where(PublicComment.public_reply_id == comment_id)
                                   .limit(1)).first() is not None

    async def _private_reply(self, row_id: int, event: InboundComment, conversation: str, tickets: list,
                             texts: list[str]) -> None:
        """Meta's one private message for this comment: it must hold everything."""
        platform = "messenger" if event.platform == "facebook" else "instagram"
        body = "\n\n".join([self._say("private_intro"), *texts, self._say("private_outro")])
        if len(fit(body, platform)) > 1:
            body = fit("\n\n".join([*texts, self._say("private_outro")]), platform)[0]
        try:
            result = await asyncio.to_thread(self.graph.private_reply, event.comment_id, body)
        except GraphError as exc:
            await self._note_failure(tickets, f"Message privé au commentateur non envoyé : {exc.staff_text()}")
            return
        await asyncio.to_thread(self.contacts.private_reply_sent, conversation, platform, event.comment_id,
                                str(result.get("recipient_id") or "") or None)
        await asyncio.to_thread(self.comments.set_private_reply, row_id)

    async def _public_reply(self, row_id: int, event: InboundComment, text: str, tickets: list) -> None:
        try:
            reply_id = await asyncio.to_thread(self.graph.reply_to_comment, event.platform, event.comment_id, text)
        except GraphError as exc:
            await self._note_failure(tickets, f"Réponse publique non publiée : {exc.staff_text()}")
            await asyncio.to_thread(self.comments.set_outcome, row_id, outcome=None, treatment="not_answered")
            return
        self._bot_replies[reply_id] = None
        while len(self._bot_replies) > SEEN:
            self._bot_replies.popitem(last=False)
        await asyncio.to_thread(self.comments.set_public_reply, row_id, text, reply_id)

    async def _note_failure(self, tickets: list, text: str) -> None:
        logger.warning("Meta: %s", text)
        if tickets:
            await asyncio.to_thread(self.store.add_message, tickets[0].conversation_id, tickets[0].channel, "system",
                                    text, ticket_id=tickets[0].id)

    # --- staff messages (outbox) ---------------------------------------------------------------------
    def _owns(self, item: Outbox) -> bool:
        return item.channel in CHANNELS or item.conversation_id.startswith(PREFIXES)

    async def _deliver(self, item: Outbox) -> None:
        try:
            if item.surface == "public":
                await self._deliver_public(item)
                return
            try:
                route = await asyncio.to_thread(self.contacts.route, item.conversation_id,
                                                human_agent=self.settings.human_agent)
            except Unreachable as exc:
                raise core.Undeliverable(str(exc)) from None
            if route.comment_id:
                result = await asyncio.to_thread(self.graph.private_reply, route.comment_id,
                                                 fit(item.text, route.platform)[0])
                await asyncio.to_thread(self.contacts.private_reply_sent, item.conversation_id, route.platform,
                                        route.comment_id, str(result.get("recipient_id") or "") or None)
                return
            await self._send_texts(route.platform, route.recipient_id, [item.text], relay.buttons_of(item),
                                   route.messaging_type, route.tag)
        except GraphError as exc:
            if exc.kind in ("window", "unreachable", "permission", "invalid"):
                raise core.Undeliverable(exc.staff_text()) from None
            raise RuntimeError(exc.staff_text()) from None  # stays pending, the reason shown to the staff

    async def _deliver_public(self, item: Outbox) -> None:
        row = await asyncio.to_thread(self.comments.by_conversation, item.conversation_id)
        if row is None:
            raise core.Undeliverable("Commentaire introuvable : la réponse publique n'a pas été publiée.")
        reply_id = await asyncio.to_thread(self.graph.reply_to_comment, row.platform, row.comment_id, item.text)
        self._bot_replies[reply_id] = None
        await asyncio.to_thread(self.comments.set_public_reply, row.id, item.text, reply_id)


def build_gateway(settings: MetaSettings | None = None, rasa_url: str | None = None) -> MetaGateway:
    from bot.settings import get_settings
    from bot.staff import get_desk

    settings = settings or MetaSettings.from_env()
    desk = get_desk()
    return MetaGateway(settings, rasa_url or get_settings().rasa_url, desk.store, desk)
