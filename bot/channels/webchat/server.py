"""The website chat's server: the script and its stylesheet, a demo page, and the visitors' API.

Everything is under ``/chat/`` (one path for the reverse proxy): ``guichet-chat.js``,
``guichet-chat.css``, ``demo`` (a demo town page with the widget) and ``api/…``:

- ``POST api/session`` ``{"token": old | null}``: the same token if it is still valid, else a new
  visitor (``bot.channels.webchat.tokens``); with the title, the privacy notice and the welcome.
- ``GET api/history``: the conversation so far (citizen and assistant lines from the transcript,
  staff messages from the outbox), the last buttons, the hand-off state and a cursor.
- ``POST api/messages`` ``{"text", "client_id"}`` (or ``"payload"`` for a button): through our REST
  channel like the other gateways (``bot.channels.gateway``): bad input answered in French,
  flood guard, idempotent ``client_id``; during a hand-off the message joins the ticket, silently.
- ``POST api/photo`` (multipart ``photo``, optional ``caption``): JPEG, PNG or WebP up to 5 MB,
  checked by its bytes; kept under ``var/uploads/webchat/`` and put on the conversation's open
  ticket (staff open it from the ticket page), or on the next one.
- ``GET api/updates?after=N``: long polling (up to 25 s): staff messages (replies, status news)
  and the hand-off state, for every tab of the visitor.

Every API call but ``session`` carries ``Authorization: Bearer <token>``; a missing, forged or
altered token gets 401 and reads nothing. Only the configured site origins may call it from a
browser (CORS; ``GUICHET_WEBCHAT_ORIGINS``), and the server's own origin (the demo page). A flood
from one visitor is slowed by the REST channel, from one address here.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from sqlalchemy import select

from bot.channels import gateway as core
from bot.channels.webchat.tokens import VisitorTokens
from bot.flood import FloodGuard
from bot.integrations.reliability import message_id_for
from bot.models import Message, Outbox, utcnow
from bot.tickets import TicketStore
from bot.transcript import already_recorded

logger = logging.getLogger(__name__)

CHANNEL = "webchat"
STATIC = Path(__file__).parent / "static"
MAX_PHOTO = 5 * 1024 * 1024
MAX_BODY = 16_000
LONG_POLL = 25.0
PHOTO_TYPES = {b"\xff\xd8\xff": ("jpg", "image/jpeg"), b"\x89PNG\r\n\x1a\n": ("png", "image/png")}
TEXTS = {
    "origin": "Cette adresse n'est pas autorisée à utiliser la discussion de la mairie.",
    "token": "Votre session de discussion n'est plus valable : une nouvelle discussion commence.",
    "bad_request": "Désolé, nous n'avons pas pu lire ce message (format inattendu). Réessayez.",
    "slow_down": "Beaucoup de messages arrivent depuis votre connexion : patientez une minute, puis réessayez.",
    "photo_missing": "Aucune photo reçue : choisissez une image (JPEG, PNG ou WebP).",
    "photo_type": "Ce fichier n'est pas une photo que nous savons lire : envoyez une image JPEG, PNG ou WebP.",
    "photo_size": "Cette photo est trop lourde (5 Mo au maximum) : réduisez-la ou envoyez-en une autre.",
    "photo_added": "📷 Photo ajoutée à votre dossier {ref}. Merci !",
    "photo_waiting": "📷 Photo bien reçue. Dites-moi en quelques mots ce qu'elle montre et où cela se trouve.",
}
HANDOFF_LABELS = {False: "Votre demande est transmise : une personne de l'équipe vous répond ici.",
                  True: "Une personne de l'équipe a pris le relais."}


class ChatError(Exception):
    """Answered as ``{"error": text}`` with ``status``: every refusal says why, in French."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


@dataclass(frozen=True)
class WebchatSettings:
    origins: tuple[str, ...] = ()
    listen: str = "127.0.0.1"
    port: int = 8090
    title: str | None = None
    privacy_url: str | None = None
    public_url: str | None = None  # how the proxy exposes /chat/ (printed at start)
    ip_per_minute: float = 120.0
    ip_burst: int = 60

    @classmethod
    def from_env(cls, environ: dict | None = None) -> WebchatSettings:
        import os

        env = os.environ if environ is None else environ
        origins = tuple(o.strip().rstrip("/") for o in (env.get("GUICHET_WEBCHAT_ORIGINS") or "").split(",") if o.strip())
        return cls(origins=origins, listen=env.get("GUICHET_WEBCHAT_LISTEN") or "127.0.0.1",
                   port=int(env.get("GUICHET_WEBCHAT_PORT") or 8090), title=env.get("GUICHET_WEBCHAT_TITLE") or None,
                   privacy_url=env.get("GUICHET_WEBCHAT_PRIVACY_URL") or None,
                   public_url=env.get("GUICHET_WEBCHAT_PUBLIC_URL") or None,
                   ip_per_minute=float(env.get("GUICHET_WEBCHAT_IP_PER_MINUTE") or 120),
                   ip_burst=int(env.get("GUICHET_WEBCHAT_IP_BURST") or 60))


def photo_kind(data: bytes) -> tuple[str, str] | None:
    """(extension, content type) from the file's first bytes, or None: the browser's word is not enough."""
    for magic, kind in PHOTO_TYPES.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "image/webp"
    return None


class WebchatServer:
    def __init__(self, settings: WebchatSettings, rasa_url: str, store: TicketStore, desk, var_dir: Path,
                 tokens: VisitorTokens, rasa_timeout: float = 90.0):
        self.settings = settings
        self.store = store
        self.desk = desk
        self.tokens = tokens
        self.uploads = Path(var_dir) / "uploads" / "webchat"
        self.citizens = core.CitizenSide(store, desk, core.AssistantLink(rasa_url, CHANNEL, rasa_timeout),
                                         record_apology=True)
        self.per_address = FloodGuard(per_minute=settings.ip_per_minute, burst=settings.ip_burst,
                                      name="webchat-address")
        self.sessions = FloodGuard(per_minute=10, burst=20, name="webchat-visitor")
        self._runner: web.AppRunner | None = None
        self.own_origins: set[str] = set()

    # --- lifecycle -----------------------------------------------------------------------------------
    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_PHOTO + 64 * 1024, middlewares=[self.guard])
        app.router.add_get("/chat/guichet-chat.js", self.static("guichet-chat.js", "text/javascript"))
        app.router.add_get("/chat/guichet-chat.css", self.static("guichet-chat.css", "text/css"))
        app.router.add_get("/chat/demo", self.static("demo.html", "text/html"))
        app.router.add_get("/chat/health", self.on_health)
        app.router.add_post("/chat/api/session", self.on_session)
        app.router.add_get("/chat/api/history", self.on_history)
        app.router.add_post("/chat/api/messages", self.on_message)
        app.router.add_post("/chat/api/photo", self.on_photo)
        app.router.add_get("/chat/api/updates", self.on_updates)
        app.router.add_route("OPTIONS", "/chat/api/{name}", self.on_preflight)
        return app

    async def start(self, port: int | None = None) -> int:
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.listen, self.settings.port if port is None else port)
        await site.start()
        chosen = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the port chosen for 0
        self.own_origins = {f"http://{host}:{chosen}" for host in (self.settings.listen, "127.0.0.1", "localhost")}
        if self.settings.public_url:
            match = re.match(r"^(https?://[^/]+)", self.settings.public_url)
            if match:
                self.own_origins.add(match.group(1))
        return chosen

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- headers, origins, floods --------------------------------------------------------------------
    def allowed_origin(self, origin: str | None) -> bool:
        return origin is None or origin.rstrip("/") in self.settings.origins or origin in self.own_origins

    def client_address(self, request: web.Request) -> str:
        """The visitor's address; behind our own proxy (a loopback peer), the one it forwarded."""
        peer = request.remote or "?"
        if peer in ("127.0.0.1", "::1"):
            forwarded = request.headers.get("X-Real-IP") or (request.headers.get("X-Forwarded-For") or "").split(",")[0]
            return forwarded.strip() or peer
        return peer

    @web.middleware
    async def guard(self, request: web.Request, handler):
        origin = request.headers.get("Origin")
        is_api = request.path.startswith("/chat/api/")
        if is_api and not self.allowed_origin(origin):
            logger.warning("web chat call from a refused origin")
            response = web.json_response({"error": TEXTS["origin"]}, status=403)
        elif is_api and request.method != "OPTIONS" and not self.per_address.check(self.client_address(request)).allowed:
            response = web.json_response({"error": TEXTS["slow_down"]}, status=429, headers={"Retry-After": "60"})
        else:
            try:
                response = await handler(request)
            except ChatError as exc:
                response = web.json_response({"error": exc.text}, status=exc.status)
            except web.HTTPException as exc:  # aiohttp's own (404, 405...), answered in French
                response = web.json_response({"error": "Adresse inconnue de la discussion." if exc.status == 404
                                              else TEXTS["bad_request"]}, status=exc.status)
        if is_api and origin and self.allowed_origin(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
        if request.path == "/chat/demo":
            response.headers["Content-Security-Policy"] = (
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        return response

    async def on_preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600"})

    def static(self, name: str, content_type: str):
        async def serve(request: web.Request) -> web.Response:
            path = STATIC / name
            if not path.exists():
                raise ChatError(404, "Fichier introuvable.")
            return web.Response(body=path.read_bytes(), content_type=content_type, charset="utf-8",
                                headers={"Cache-Control": "public, max-age=300"})
        return serve

    async def on_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # --- the API -------------------------------------------------------------------------------------
    def _conversation(self, request: web.Request) -> str:
        header = request.headers.get("Authorization") or ""
        conversation = self.tokens.conversation(header[7:].strip() if header.startswith("Bearer ") else None)
        if conversation is None:
            raise ChatError(401, TEXTS["token"])
        return conversation

    async def _json(self, request: web.Request) -> dict:
        body = await request.read()
        if len(body) > MAX_BODY:
            raise ChatError(413, "Message trop long : 4 000 caractères au maximum.")
        try:
            data = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError):
            raise ChatError(400, TEXTS["bad_request"]) from None
        if not isinstance(data, dict):
            raise ChatError(400, TEXTS["bad_request"])
        return data

    async def on_session(self, request: web.Request) -> web.Response:
        data = await self._json(request)
        if not self.sessions.check(self.client_address(request)).allowed:
            return web.json_response({"error": TEXTS["slow_down"]}, status=429, headers={"Retry-After": "60"})
        token = data.get("token") if isinstance(data.get("token"), str) else None
        if self.tokens.conversation(token) is None:
            token = self.tokens.issue()
        town = self.desk.profile.town
        return web.json_response({
            "token": token, "title": self.settings.title or f"Mairie de {town.short_name}",
            "privacy": {"text": (f"Vos messages sont lus par l'assistant automatique de la mairie et, si besoin, par "
                                 f"notre équipe. Ils sont conservés {town.retention_days} jours après le traitement "
                                 "de votre demande, puis effacés. N'y mettez pas d'informations sensibles (santé, "
                                 "coordonnées bancaires)."),
                        "url": self.settings.privacy_url},
            "welcome": (f"Bonjour 👋 Je suis l'assistant de la mairie de {town.short_name}. Posez-moi votre question "
                        "ou signalez un problème (voirie, propreté, éclairage…) : je vous réponds tout de suite, "
                        "24 h/24."),
        })

    def _handoff_state(self, conversation: str) -> dict:
        ticket = self.store.open_handoff(conversation)
        if ticket is None:
            return {"active": False, "taken": False, "label": None}
        taken = ticket.assigned_to is not None
        return {"active": True, "taken": taken, "label": HANDOFF_LABELS[taken]}

    def _history(self, conversation: str) -> dict:
        with self.store.session() as session:
            lines = list(session.execute(select(Message).where(
                Message.conversation_id == conversation, Message.author.in_(("citizen", "bot")),
                Message.private.is_(False)).order_by(Message.id).limit(500)).scalars())
            sent = list(session.execute(select(Outbox).where(
                Outbox.conversation_id == conversation, Outbox.failed_at.is_(None)).order_by(Outbox.id)).scalars())
            moment = utcnow()
            for item in sent:
                if item.delivered_at is None:
                    item.delivered_at, item.attempts = moment, item.attempts + 1
            session.commit()
        from bot import relay

        items = [{"id": f"m-{m.id}", "author": m.author, "text": m.text, "at": m.created_at.isoformat() + "Z"}
                 for m in lines]
        items += [{"id": f"o-{o.id}", "author": "staff", "text": o.text, "at": o.created_at.isoformat() + "Z",
                   **({"buttons": relay.buttons_of(o)} if o.buttons else {})} for o in sent]
        items.sort(key=lambda item: item["at"])
        buttons = items[-1].pop("buttons", []) if items and items[-1]["author"] == "staff" else []
        for item in items:
            item.pop("buttons", None)
        return {"messages": items, "buttons": buttons, "handoff": self._handoff_state(conversation),
                "cursor": max((o.id for o in sent), default=0)}

    async def on_history(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        return web.json_response(await asyncio.to_thread(self._history, conversation))

    async def on_message(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        data = await self._json(request)
        text = data.get("payload") if isinstance(data.get("payload"), str) and data.get("payload") else data.get("text")
        if not isinstance(text, str):
            raise ChatError(400, TEXTS["bad_request"])
        client = data.get("client_id")
        client_id = f"c-{client}" if isinstance(client, str) and 0 < len(client) <= 80 else f"c-{uuid.uuid4().hex}"
        answers = await self._say(conversation, text, client_id)
        return web.json_response({"messages": answers, "handoff": await asyncio.to_thread(self._handoff_state, conversation)})

    async def _say(self, conversation: str, text: str, client_id: str) -> list[dict]:
        message_id = message_id_for(conversation, client_id)
        async with self.citizens.lock(conversation):
            if text.strip():
                handoff = await self.citizens.open_handoff(conversation)
                if handoff is not None:
                    if message_id and not await asyncio.to_thread(already_recorded, self.store, conversation, message_id):
                        await self.citizens.record_during_handoff(conversation, text[:4000], message_id, None)
                    return []
            answers = await self.citizens.ask(conversation, text, client_id)
        return [{"author": "bot", "text": a.get("text") or "", **({"buttons": a["buttons"]} if a.get("buttons") else {})}
                for a in answers if a.get("text") or a.get("buttons")]

    async def on_photo(self, request: web.Request) -> web.Response:
        conversation = self._conversation(request)
        try:
            form = await request.post()
        except (ValueError, web.HTTPRequestEntityTooLarge):
            return web.json_response({"error": TEXTS["photo_size"]}, status=413)
        photo = form.get("photo")
        if photo is None or not hasattr(photo, "file"):
            return web.json_response({"error": TEXTS["photo_missing"]}, status=400)
        data = photo.file.read(MAX_PHOTO + 1)
        if len(data) > MAX_PHOTO:
            return web.json_response({"error": TEXTS["photo_size"]}, status=413)
        kind = photo_kind(data)
        if kind is None:
            return web.json_response({"error": TEXTS["photo_type"]}, status=415)
        caption = str(form.get("caption") or "").strip()[:1000]
        name = f"{secrets.token_hex(12)}.{kind[0]}"
        await asyncio.to_thread(self._keep, name, data)
        line = f"[photo] /pieces-jointes/{name} {caption}".strip()
        answers: list[dict] = []
        async with self.citizens.lock(conversation):
            handoff = await self.citizens.open_handoff(conversation)
            ticket = None if handoff else await asyncio.to_thread(core.latest_open_ticket, self.store, conversation)
            if handoff is not None:
                await self.citizens.record_during_handoff(conversation, line, f"photo-{name}", None)
            else:
                await asyncio.to_thread(self.store.add_message, conversation, CHANNEL, "citizen", line,
                                        ticket_id=ticket.id if ticket else None, external_id=f"photo-{name}")
                if ticket is not None:
                    await asyncio.to_thread(self.store.append_summary, ticket.id,
                                            f"Photo jointe (site) : /pieces-jointes/{name}")
                    answers = [{"author": "bot", "text": TEXTS["photo_added"].format(ref=ticket.reference)}]
        if handoff is None and not answers:
            answers = (await self._say(conversation, caption, f"c-photo-{name}") if caption
                       else [{"author": "bot", "text": TEXTS["photo_waiting"]}])
        return web.json_response({"messages": answers, "handoff": await asyncio.to_thread(self._handoff_state, conversation)})

    def _keep(self, name: str, data: bytes) -> None:
        self.uploads.mkdir(parents=True, exist_ok=True)
        (self.uploads / name).write_bytes(data)


    def _news(self, conversation: str, after: int) -> list[Outbox]:
        """Staff messages after the cursor (every tab sees them), marked delivered."""
        with self.store.session() as session:
            items = list(session.execute(select(Outbox).where(
                Outbox.conversation_id == conversation, Outbox.id > after, Outbox.failed_at.is_(None))
                .order_by(Outbox.id)).scalars())
            moment = utcnow()
            for item in items:
                if item.delivered_at is None:
                    item.delivered_at, item.attempts = moment, item.attempts + 1
            session.commit()
            return items

    async def on_updates(self, request: web.Request) -> web.Response:
        from bot import relay

        conversation = self._conversation(request)
        try:
            after = max(0, int(request.query.get("after") or 0))
            wait = min(LONG_POLL, max(0.0, float(request.query.get("wait") or LONG_POLL)))
        except ValueError:
            raise ChatError(400, "Paramètre « after » invalide.") from None
        deadline = asyncio.get_running_loop().time() + wait
        state = await asyncio.to_thread(self._handoff_state, conversation)
        while True:
            items = await asyncio.to_thread(self._news, conversation, after)
            now_state = await asyncio.to_thread(self._handoff_state, conversation)
            if items or now_state != state or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(1.0)
        return web.json_response({
            "messages": [{"id": f"o-{o.id}", "author": "staff", "text": o.text, "at": o.created_at.isoformat() + "Z",
                          **({"buttons": relay.buttons_of(o)} if o.buttons else {})} for o in items],
            "handoff": now_state, "cursor": max([after] + [o.id for o in items])})


def build_server(settings: WebchatSettings | None = None, rasa_url: str | None = None) -> WebchatServer:
    from bot.channels.webchat.tokens import load_secret
    from bot.settings import get_settings
    from bot.staff import get_desk

    settings = settings or WebchatSettings.from_env()
    desk = get_desk()
    app_settings = get_settings()
    return WebchatServer(settings, rasa_url or app_settings.rasa_url, desk.store, desk, app_settings.var_dir,
                         VisitorTokens(load_secret(app_settings.var_dir)))
