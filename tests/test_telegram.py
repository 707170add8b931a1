"""The Telegram gateway with the real python-telegram-bot client against a fake Bot API server on loopback.

The fake server (``FakeBotApi``) serves queued updates to ``getUpdates`` and records every call the
bot makes (sendMessage, sendChatAction, answerCallbackQuery...); python-telegram-bot reaches it
through its ``base_url`` setting. Tests marked ``slow`` use the real Rasa + action server stack.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from bot import relay
from bot.accounts import AccountError, Accounts
from bot.channels.telegram import build_application, parse_staff_users, split_text
from bot.integrations.rasa_api import resume_conversation
from bot.models import Outbox
from bot.staff import StaffDesk
from bot.tickets import TicketStore

TOKEN = "123456:TEST-TOKEN"
CM_CHAT = -100777
STAFF_ID = 4242
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Guichet", "username": "guichet_test_bot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}


# --- the fake Bot API ------------------------------------------------------------------------------------
class FakeBotApi:
    def __init__(self):
        self.updates: deque = deque()
        self.calls: list[tuple[str, dict]] = []
        self.fail_429: dict[str, int] = {}
        self.lock = threading.Lock()
        self.next_update = 1
        self.next_message = 5000
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self.do_POST()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload = fake.handle(self.path, self.headers.get("Content-Type") or "", body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (shutdown)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _params(content_type: str, body: bytes) -> dict:
        if not body:
            return {}
        if content_type.startswith("application/json"):
            return json.loads(body)
        params = {}
        for key, values in parse_qs(body.decode(), keep_blank_values=True).items():
            try:
                params[key] = json.loads(values[0])
            except ValueError:
                params[key] = values[0]
        return params

    def handle(self, path: str, content_type: str, body: bytes) -> tuple[int, dict]:
        method = path.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
        params = self._params(content_type, body)
        if method == "getUpdates":
            deadline = time.monotonic() + min(float(params.get("timeout") or 0), 0.3)
            while True:
                with self.lock:
                    if self.updates:
                        batch = list(self.updates)
                        self.updates.clear()
                        return 200, {"ok": True, "result": batch}
                if time.monotonic() >= deadline:
                    return 200, {"ok": True, "result": []}
                time.sleep(0.02)
        with self.lock:
            if self.fail_429.get(method):
                self.fail_429[method] -= 1
                self.calls.append((method + ":429", params))
                return 429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                             "parameters": {"retry_after": 1}}
            self.calls.append((method, params))
            if method == "getMe":
                return 200, {"ok": True, "result": BOT_USER}
            if method == "sendMessage":
                self.next_message += 1
                chat_id = int(params["chat_id"])
                message = {"message_id": self.next_message, "date": int(time.time()), "from": BOT_USER,
                           "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"},
                           "text": params.get("text", "")}
                if params.get("reply_markup"):
                    message["reply_markup"] = params["reply_markup"]
                params["_message"] = message
                return 200, {"ok": True, "result": message}
            if method == "getFile":
                return 200, {"ok": True, "result": {"file_id": params.get("file_id"), "file_unique_id": "u1",
                                                    "file_size": 10, "file_path": "photos/p.jpg"}}
            return 200, {"ok": True, "result": True}

    # --- updates ---
    def push(self, update: dict, update_id: int | None = None) -> int:
        with self.lock:
            if update_id is None:
                update_id = self.next_update
                self.next_update += 1
            self.updates.append({"update_id": update_id, **update})
        return update_id

    def sent(self, chat_id: int | None = None, method: str = "sendMessage") -> list[dict]:
        with self.lock:
            return [p for m, p in self.calls if m == method and (chat_id is None or int(p.get("chat_id", 0)) == chat_id)]

    def texts(self, chat_id: int) -> list[str]:
        return [p.get("text", "") for p in self.sent(chat_id)]

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "a message"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; calls: {[(m, p.get('text')) for m, p in self.calls]}")

    def wait_text(self, chat_id: int, needle: str, timeout: float = 60.0) -> dict:
        return self.wait_for(lambda: next((p for p in self.sent(chat_id) if needle in p.get("text", "")), None),
                             timeout, f"{needle!r} in chat {chat_id}")


def user(user_id: int, name: str = "Marie") -> dict:
    return {"id": user_id, "is_bot": False, "first_name": name}


_message_ids = iter(range(1, 10**9))


def message(chat_id: int, text: str | None = None, from_id: int | None = None, name: str = "Marie", **extra) -> dict:
    chat = {"id": chat_id, "type": "private", "first_name": name} if chat_id > 0 else \
        {"id": chat_id, "type": "supergroup", "title": "CM"}
    body = {"message_id": next(_message_ids), "date": int(time.time()), "chat": chat,
            "from": user(from_id or chat_id, name), **extra}
    if text is not None:
        body["text"] = text
        if text.startswith("/"):
            body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return body


# --- running the application in a background event loop -------------------------------------------
@contextmanager
def running_gateway(fake: FakeBotApi, rasa_url: str, store: TicketStore, desk: StaffDesk, webhook: dict | None = None):
    """The gateway in a background event loop: long polling, or ``webhook`` (start_webhook's arguments)."""
    application = build_application(TOKEN, rasa_url, store, desk, base_url=fake.base_url, cm_chat=CM_CHAT,
                                    staff_users={STAFF_ID: "camille"}, poll_seconds=0.3, rasa_timeout=60)
    gateway = application.bot_data["gateway"]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def start():
        await application.initialize()
        await application.start()
        if webhook:
            await application.updater.start_webhook(**webhook)
        else:
            await application.updater.start_polling(poll_interval=0.1, timeout=1)
        await gateway.start_background()

    async def stop():
        await gateway.stop_background()
        await application.updater.stop()
        await application.stop()
        await application.shutdown()

    run(start())
    try:
        yield gateway
    finally:
        run(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        relay.unregister_deliverer("telegram")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fake():
    server = FakeBotApi()
    yield server
    server.close()


@pytest.fixture
def chat_id() -> int:
    return 10_000 + uuid.uuid4().int % 10**8


def make_desk(store, assistant, rasa_url=None):
    resume = (lambda c: resume_conversation(c, rasa_url=rasa_url)) if rasa_url else (lambda c: None)
    return StaffDesk(store, assistant.profile, assistant.hours, assistant.replies, resume_conversation=resume)


def add_camille(store, profile):
    try:
        Accounts(store, profile).create("camille", "motdepasse-solide", "cm", display_name="Camille")
    except AccountError:
        pass


# --- without the Rasa stack ------------------------------------------------------------------------------
def test_helpers():
    assert parse_staff_users("123:camille, 456:Victor") == {123: "camille", 456: "victor"}
    parts = split_text(("mot " * 3000).strip())
    assert len(parts) > 1 and all(len(p) < 4096 for p in parts)
    assert " ".join(parts).split() == ["mot"] * 3000


def test_rasa_down_answers_technical_problem_and_keeps_the_message(fake, store, assistant, chat_id):
    desk = make_desk(store, assistant)
    with running_gateway(fake, f"http://127.0.0.1:{closed_port()}", store, desk):
        fake.push({"message": message(chat_id, "le lampadaire ne s'allume plus rue des Lilas")})
        fake.wait_text(chat_id, "souci technique")
    recorded = [(m.author, m.text) for m in store.conversation_messages(f"telegram-{chat_id}")]
    assert recorded == [("citizen", "le lampadaire ne s'allume plus rue des Lilas")]


def test_429_retry_after_is_waited_and_the_message_still_delivered(fake, store, assistant, chat_id):
    desk = make_desk(store, assistant)
    fake.fail_429["sendMessage"] = 1
    with running_gateway(fake, f"http://127.0.0.1:{closed_port()}", store, desk):
        started = time.monotonic()
        fake.push({"message": message(chat_id, "bonjour")})
        fake.wait_text(chat_id, "souci technique")
        assert time.monotonic() - started >= 1.0
    assert [m for m, _ in fake.calls if m.startswith("sendMessage")][:2] == ["sendMessage:429", "sendMessage"]
    assert len(fake.texts(chat_id)) == 1


def test_outbox_rows_written_elsewhere_reach_the_citizen(fake, store, assistant, chat_id):
    desk = make_desk(store, assistant)
    with running_gateway(fake, "http://127.0.0.1:1", store, desk):
        with store.session() as session:  # as the web UI process would
            session.add(Outbox(conversation_id=f"telegram-{chat_id}", channel="telegram", text="Votre dossier avance."))
            session.commit()
        fake.wait_text(chat_id, "Votre dossier avance.")
        fake.wait_for(lambda: not relay.pending(store, "telegram"), 10, "the row marked delivered")
    assert fake.texts(chat_id) == ["Votre dossier avance."]


def test_a_question_with_buttons_reaches_telegram_as_an_inline_keyboard(fake, store, assistant, chat_id):
    desk = make_desk(store, assistant)
    with running_gateway(fake, "http://127.0.0.1:1", store, desk):
        relay.send_to_citizen(store, f"telegram-{chat_id}", "telegram", "Êtes-vous satisfait(e) ?",
                              buttons=[{"title": "👍 Oui", "payload": "oui"}, {"title": "👎 Non", "payload": "non"}])
        fake.wait_text(chat_id, "Êtes-vous satisfait(e) ?")
    [sent] = [m for m in fake.sent(chat_id) if m.get("text") == "Êtes-vous satisfait(e) ?"]
    keyboard = sent["reply_markup"]
    keyboard = keyboard if isinstance(keyboard, dict) else __import__("json").loads(keyboard)
    assert [b["text"] for row in keyboard["inline_keyboard"] for b in row] == ["👍 Oui", "👎 Non"]


def test_unsupported_messages_and_staff_commands_from_strangers(fake, store, assistant, chat_id):
    desk = make_desk(store, assistant)
    with running_gateway(fake, "http://127.0.0.1:1", store, desk):
        fake.push({"message": message(chat_id, sticker={"file_id": "s1", "file_unique_id": "s1", "type": "regular",
                                                        "width": 512, "height": 512, "is_animated": False,
                                                        "is_video": False})})
        fake.wait_text(chat_id, "photos")
        fake.push({"message": message(chat_id, "/queue")})
        fake.wait_text(chat_id, "réservée aux agents")
        fake.push({"message": message(CM_CHAT, "/id", from_id=777)})  # setting-up aid, for anyone
        fake.wait_text(CM_CHAT, f"Identifiant de cette discussion : {CM_CHAT}\nVotre identifiant Telegram : 777")
    assert store.conversation_messages(f"telegram-{chat_id}") == []


class FakeRasa:
    """A stand-in for the Rasa REST channel: scripted answers, records what it receives."""

    def __init__(self, answers):
        self.answers = deque(answers)
        self.received: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                fake.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                status, body = fake.answers.popleft() if fake.answers else (200, [])
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_buttons_long_answers_and_rasa_errors_with_a_scripted_rasa(fake, store, assistant, chat_id):
    long_text = "Voici la réponse complète. " * 300
    rasa = FakeRasa([
        (200, [{"recipient_id": "x", "text": "Vous voulez :",
                "buttons": [{"title": "Les horaires", "payload": "/faq_horaires"},
                            {"title": "Autre", "payload": "/inform" + "x" * 80}]}]),
        (200, [{"recipient_id": "x", "text": long_text}]),
        (502, {"error": "bad gateway"}),
        (400, [{"recipient_id": None, "text": "Votre message n'a pas pu être lu."}]),  # the channel's French 400
    ])
    desk = make_desk(store, assistant)
    try:
        with running_gateway(fake, rasa.url, store, desk):
            fake.push({"message": message(chat_id, "bonjour", name="Léa")})
            sent = fake.wait_text(chat_id, "Vous voulez")
            keyboard = sent["reply_markup"]["inline_keyboard"]
            assert keyboard[0][0] == {"text": "Les horaires", "callback_data": "/faq_horaires"}
            assert len(keyboard[1][0]["callback_data"].encode()) <= 64
            fake.push({"callback_query": {"id": "cq-2", "from": user(chat_id, "Léa"), "chat_instance": "ci",
                                          "data": "/faq_horaires", "message": sent["_message"]}})
            # Wait for every part (three for this length), not just the first two.
            fake.wait_for(lambda: len(" ".join(fake.texts(chat_id)[1:]).split()) >= len(long_text.split()),
                          20, "the long answer in parts")
            parts = fake.texts(chat_id)[1:]
            assert all(len(p) < 4096 for p in parts) and " ".join(parts).split() == long_text.split()
            fake.push({"message": message(chat_id, "et alors ?", name="Léa")})
            fake.wait_text(chat_id, "souci technique")
            fake.push({"message": message(chat_id, "il y a quelqu'un ?", name="Léa")})
            fake.wait_text(chat_id, "n'a pas pu être lu")
    finally:
        rasa.close()
    assert [r["message"] for r in rasa.received] == ["bonjour", "/faq_horaires", "et alors ?", "il y a quelqu'un ?"]
    assert all(r["sender"] == f"telegram-{chat_id}" and r["input_channel"] == "telegram"
               and r["metadata"] == {"citizen_name": "Léa"} for r in rasa.received)
    assert fake.sent(None, "answerCallbackQuery") and fake.sent(chat_id, "editMessageReplyMarkup")
    assert [m.text for m in store.conversation_messages(f"telegram-{chat_id}")] == ["et alors ?"]


def test_slash_commands_and_forged_buttons_are_words_not_intents(fake, store, assistant, chat_id):
    """Rasa reads "/restart" as its restart intent (which would un-pause a hand-off): never from a citizen."""
    rasa = FakeRasa([(200, [{"recipient_id": "x", "text": "Réponse."}])] * 4)
    desk = make_desk(store, assistant)
    try:
        with running_gateway(fake, rasa.url, store, desk):
            fake.push({"message": message(chat_id, "/restart")})
            fake.wait_for(lambda: len(fake.texts(chat_id)) == 1, 20, "an answer to /restart")
            fake.push({"message": message(chat_id, "/handoff_human@guichet_test_bot tout de suite")})
            fake.wait_for(lambda: len(fake.texts(chat_id)) == 2, 20, "an answer to the second command")
            sent = fake.sent(chat_id)[0]
            fake.push({"callback_query": {"id": "cq-9", "from": user(chat_id), "chat_instance": "ci",
                                          "data": "/session_start", "message": sent["_message"]}})
            fake.wait_for(lambda: len(fake.texts(chat_id)) == 3, 20, "an answer to the forged button")
    finally:
        rasa.close()
    assert [r["message"] for r in rasa.received] == ["restart", "handoff_human tout de suite", "session_start"]


def test_cm_group_gets_tickets_made_while_the_gateway_was_down_once(fake, store, assistant):
    from bot.tickets import NewTicket

    desk = make_desk(store, assistant)
    waiting, _ = store.create(NewTicket(kind="handoff", queue="cm", conversation_id="rest-1", channel="rest",
                                        summary="je veux parler à quelqu'un", handoff_reason="human"))
    closed, _ = store.create(NewTicket(kind="handoff", queue="cm", conversation_id="rest-2", channel="rest",
                                       summary="déjà traité", handoff_reason="human"))
    store.set_status(closed.id, "closed", "camille")
    with running_gateway(fake, "http://127.0.0.1:1", store, desk):
        fake.wait_text(CM_CHAT, waiting.reference)
        urgent, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="rest-3", channel="rest",
                                           summary="fuite de gaz rue des Lilas", urgent=True))
        fake.wait_text(CM_CHAT, urgent.reference)
    with running_gateway(fake, "http://127.0.0.1:1", store, desk):  # a restart posts nothing twice
        time.sleep(1.5)
    posts = fake.texts(CM_CHAT)
    assert [sum(t.reference in p for p in posts) for t in (waiting, urgent, closed)] == [1, 1, 0]
    assert store.get(waiting.id).cm_announced_at is not None


def test_webhook_mode_requires_telegrams_secret_token(fake, store, assistant, chat_id):
    import requests

    rasa = FakeRasa([(200, [{"recipient_id": "x", "text": "Bonjour ! Que puis-je pour vous ?"}])])
    desk = make_desk(store, assistant)
    port = closed_port()
    try:
        with running_gateway(fake, rasa.url, store, desk,
                             webhook={"listen": "127.0.0.1", "port": port, "url_path": "telegram",
                                      "webhook_url": "https://mairie.example/telegram", "secret_token": "s3cret-Token_1"}):
            [registered] = fake.sent(None, "setWebhook")
            assert registered["url"] == "https://mairie.example/telegram"
            assert registered["secret_token"] == "s3cret-Token_1"
            update = {"update_id": 9001, "message": message(chat_id, "bonjour")}
            url = f"http://127.0.0.1:{port}/telegram"
            assert requests.post(url, json=update, timeout=10).status_code == 403
            assert requests.post(url, json=update, timeout=10,
                                 headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}).status_code == 403
            time.sleep(0.5)
            assert fake.texts(chat_id) == [] and rasa.received == []
            answer = requests.post(url, json=update, timeout=10,
                                   headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-Token_1"})
            assert answer.status_code == 200
            fake.wait_text(chat_id, "Que puis-je pour vous")
    finally:
        rasa.close()
    assert [r["message"] for r in rasa.received] == ["bonjour"]


# --- with the real Rasa + action server stack ---------------------------------------------------------
@pytest.fixture
def tickets(stack) -> TicketStore:
    return TicketStore(stack.database_url)


@pytest.fixture
def live(fake, stack, tickets, assistant):
    add_camille(tickets, assistant.profile)
    desk = make_desk(tickets, assistant, stack.rasa_url)
    with running_gateway(fake, stack.rasa_url, tickets, desk) as gateway:
        yield gateway


@pytest.mark.slow
def test_faq_exchange(fake, live, tickets, chat_id):
    fake.push({"message": message(chat_id, "bonjour, la piscine est ouverte le dimanche ?")})
    fake.wait_text(chat_id, "valbourg.example/piscine")
    assert any(p["action"] == "typing" for p in fake.sent(chat_id, "sendChatAction"))
    assert tickets.for_conversation(f"telegram-{chat_id}") == []


@pytest.mark.slow
def test_report_with_photo_and_location_creates_a_ticket(fake, live, tickets, chat_id):
    conversation = f"telegram-{chat_id}"
    photo = [{"file_id": "PHOTO-small", "file_unique_id": "ps", "width": 90, "height": 90},
             {"file_id": "PHOTO-big", "file_unique_id": "pb", "width": 1280, "height": 960}]
    fake.push({"message": message(chat_id, photo=photo, caption="le lampadaire ne s'allume plus depuis hier soir")})
    fake.wait_text(chat_id, "Où exactement")
    fake.push({"message": message(chat_id, location={"latitude": 45.184312, "longitude": 5.724161})})
    reply = fake.wait_text(chat_id, "T-20")
    [ticket] = tickets.for_conversation(conversation)
    assert ticket.channel == "telegram" and ticket.kind == "report" and ticket.queue == "voirie"
    assert "45.18431, 5.72416" in ticket.location and ticket.reference in reply["text"]
    assert ticket.citizen_name == "Marie"
    lines = [m.text for m in tickets.transcript(ticket.id)]
    assert "[photo] PHOTO-big le lampadaire ne s'allume plus depuis hier soir" in lines

    # Once the ticket exists, a photo and a venue are attached to it directly.
    fake.push({"message": message(chat_id, photo=photo)})
    fake.wait_text(chat_id, f"Photo ajoutée à votre dossier {ticket.reference}")
    fake.push({"message": message(chat_id, venue={"location": {"latitude": 45.1, "longitude": 5.7},
                                                  "title": "Square Lamartine", "address": "2 rue des Acacias"})})
    fake.wait_text(chat_id, f"Position ajoutée à votre dossier {ticket.reference}")
    ticket = tickets.get(ticket.id)
    assert "Square Lamartine, 2 rue des Acacias" in ticket.location and "PHOTO-big" in ticket.summary
    assert len(tickets.for_conversation(conversation)) == 1


@pytest.mark.slow
def test_handoff_cm_replies_from_the_group(fake, live, tickets, chat_id):
    conversation = f"telegram-{chat_id}"
    fake.push({"message": message(chat_id, "je veux parler à une vraie personne svp")})
    fake.wait_for(lambda: tickets.for_conversation(conversation), 60, "the hand-off ticket")
    [ticket] = tickets.for_conversation(conversation)
    assert ticket.kind == "handoff" and ticket.channel == "telegram"
    fake.wait_text(chat_id, ticket.reference)
    post = fake.wait_text(CM_CHAT, ticket.reference)
    buttons = [b["callback_data"] for row in post["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == [f"take:{ticket.reference}", f"close:{ticket.reference}"]

    # During the hand-off the citizen's messages are kept on the ticket and shown to the CM, not sent to Rasa.
    before = len(fake.texts(chat_id))
    fake.push({"message": message(chat_id, "allô ? vous êtes là ?")})
    fake.wait_text(CM_CHAT, "allô ? vous êtes là ?")
    assert [m.text for m in tickets.transcript(ticket.id) if m.author == "citizen"][-1] == "allô ? vous êtes là ?"

    # Take button, then a reply to the group post.
    fake.push({"callback_query": {"id": "cq-1", "from": user(STAFF_ID, "Camille"), "chat_instance": "ci",
                                  "data": f"take:{ticket.reference}", "message": post["_message"]}})
    fake.wait_for(lambda: fake.sent(None, "answerCallbackQuery"), 30, "the button answer")
    fake.wait_for(lambda: tickets.get(ticket.id).assigned_to == "camille", 10, "the ticket taken")
    fake.push({"message": message(CM_CHAT, "Bonjour Marie, je suis Camille, je regarde votre demande.",
                                  from_id=STAFF_ID, name="Camille", reply_to_message=post["_message"])})
    received = fake.wait_text(chat_id, "je suis Camille")
    assert received["text"].endswith("— L'équipe Communication")
    fake.wait_text(CM_CHAT, "Réponse envoyée")
    assert len(fake.texts(chat_id)) == before + 1
    assert not relay.pending(tickets, "telegram")

    # A stranger in the group cannot answer; /queue works for the CM.
    fake.push({"message": message(CM_CHAT, "coucou", from_id=999, name="Intrus", reply_to_message=post["_message"])})
    fake.wait_text(CM_CHAT, "réservée aux agents")
    fake.push({"message": message(CM_CHAT, "/queue", from_id=STAFF_ID, name="Camille")})
    fake.wait_text(CM_CHAT, "File du CM")
    assert any(ticket.reference in t for t in fake.texts(CM_CHAT) if t.startswith("File du CM"))

    # /reply, then the Close button gives the conversation back to the bot.
    fake.push({"message": message(CM_CHAT, f"/reply {ticket.reference} Le service vous rappelle demain.",
                                  from_id=STAFF_ID, name="Camille")})
    fake.wait_text(chat_id, "Le service vous rappelle demain.")
    fake.push({"callback_query": {"id": "cq-3", "from": user(STAFF_ID, "Camille"), "chat_instance": "ci",
                                  "data": f"close:{ticket.reference}", "message": post["_message"]}})
    fake.wait_for(lambda: tickets.get(ticket.id).status == "closed", 30, "the ticket closed")
    fake.wait_text(CM_CHAT, "clôturé")
    fake.push({"message": message(chat_id, "la piscine est ouverte le dimanche ?")})
    fake.wait_text(chat_id, "valbourg.example/piscine")


@pytest.mark.slow
def test_duplicate_and_edited_updates_make_one_ticket(fake, live, tickets, chat_id):
    conversation = f"telegram-{chat_id}"
    report = message(chat_id, "le lampadaire ne s'allume plus devant le 3 rue des Acacias")
    update_id = fake.push({"message": report})
    fake.push({"message": report}, update_id=update_id)
    fake.wait_text(chat_id, "T-20")
    fake.push({"edited_message": {**report, "edit_date": int(time.time())}})
    fake.push({"message": message(chat_id, "merci")})
    fake.wait_for(lambda: len(fake.texts(chat_id)) >= 2, 60, "the answer to merci")
    time.sleep(1)
    assert len(tickets.for_conversation(conversation)) == 1
    assert sum("T-20" in t for t in fake.texts(chat_id)) == 1


@pytest.mark.slow
def test_guichet_run_serves_telegram_when_a_token_is_set(fake, model_path, tmp_path, chat_id):
    """`guichet run` with a token: the stack plus the gateway process, no local chat; hand-offs made
    while the gateway was down reach the CM group once it is up."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from bot.stack import free_port
    from bot.tickets import NewTicket

    database_url = f"sqlite:///{tmp_path / 'guichet.db'}"
    earlier, _ = TicketStore(database_url).create(NewTicket(
        kind="handoff", queue="cm", conversation_id="rest-earlier", channel="rest",
        summary="je veux parler à quelqu'un", handoff_reason="human"))
    env = dict(os.environ, GUICHET_TELEGRAM_TOKEN=TOKEN, GUICHET_TELEGRAM_BASE_URL=fake.base_url,
               GUICHET_TELEGRAM_CM_CHAT=str(CM_CHAT), GUICHET_DATABASE_URL=database_url,
               GUICHET_VAR_DIR=str(tmp_path / "var"), GUICHET_RASA_PORT=str(free_port()),
               GUICHET_ACTION_PORT=str(free_port()))
    env.pop("GUICHET_RASA_URL", None)
    guichet = Path(sys.executable).parent / "guichet"
    with open(tmp_path / "run.log", "wb") as log:
        process = subprocess.Popen([str(guichet), "run", "--model", str(model_path)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        fake.wait_text(CM_CHAT, earlier.reference, timeout=240)
        fake.push({"message": message(chat_id, "bonjour, la piscine est ouverte le dimanche ?")})
        fake.wait_text(chat_id, "valbourg.example/piscine", timeout=120)
        assert process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    output = (tmp_path / "run.log").read_text()
    assert "Passerelle Telegram démarrée (long polling)" in output and "vous>" not in output
    assert sum(earlier.reference in t for t in fake.texts(CM_CHAT)) == 1


@pytest.mark.slow
def test_bad_input_through_telegram_gets_french_answers(fake, live, tickets):
    """Odd messages through the gateway and the real stack: one answer each, sent as plain text."""
    odd = {
        "\x00\x01\x07\x1b": "semble vide",
        "a" * 20_000: None,
        "😡😡😡🤬": None,
        "<script>alert('x')</script><b>gras</b>": None,
        "'; DROP TABLE ticket; -- \" OR 1=1": None,
        "où en est mon dossier T-2026-999999 ?": None,
    }
    chats = {text: 30_000_000 + uuid.uuid4().int % 10**7 for text in odd}
    for text, chat in chats.items():
        fake.push({"message": message(chat, text)})
    for text, chat in chats.items():
        fake.wait_for(lambda chat=chat: fake.texts(chat), 90, f"an answer to {text[:20]!r}")
        if odd[text]:
            assert odd[text] in fake.texts(chat)[0]
    time.sleep(1)
    for chat in chats.values():
        assert len(fake.texts(chat)) == 1 and all("parse_mode" not in p for p in fake.sent(chat))
        assert len(fake.texts(chat)[0]) < 4096
    assert "Je ne trouve pas de dossier T-2026-999999" in fake.texts(chats["où en est mon dossier T-2026-999999 ?"])[0]
    sql = "'; DROP TABLE ticket; -- \" OR 1=1"
    assert [m.text for m in tickets.conversation_messages(f"telegram-{chats[sql]}") if m.author == "citizen"] == [sql]
    for text, chat in chats.items():
        if odd[text] is None:  # every readable message is in the transcript
            assert tickets.conversation_messages(f"telegram-{chat}"), text[:20]


@pytest.mark.slow
def test_a_flood_from_one_chat_is_slowed_politely_and_kept(fake, live, tickets, chat_id):
    conversation = f"telegram-{chat_id}"
    sent = 25
    for number in range(sent):
        fake.push({"message": message(chat_id, f"il y a un nid de poule devant le 4 rue des Lilas ({number})")})
    fake.wait_for(lambda: len(tickets.conversation_messages(conversation)) >= sent * 2 - 1 or
                  len([m for m in tickets.conversation_messages(conversation) if m.author == "citizen"]) == sent,
                  120, "every message recorded")
    time.sleep(1)
    citizen = [m for m in tickets.conversation_messages(conversation) if m.author == "citizen"]
    assert len(citizen) == sent
    assert sum("très vite" in t for t in fake.texts(chat_id)) == 1
    assert len(tickets.for_conversation(conversation)) == 1
