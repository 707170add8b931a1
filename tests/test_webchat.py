"""The website chat's server: tokens, origins, the visitors' API, photos, staff replies by long polling.

The browser side (the widget in a real Chromium, accessibility, keyboard) is in
``tests/test_webchat_browser.py``; here the API is driven with ``requests`` in front of the real
Rasa + action server.
"""
from __future__ import annotations

import asyncio
import io
import struct
import threading
import time
import uuid
import zlib
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import select

from bot.accounts import AccountError, Accounts
from bot.channels.webchat.server import WebchatServer, WebchatSettings, photo_kind
from bot.channels.webchat.tokens import VisitorTokens
from bot.integrations.rasa_api import resume_conversation
from bot.models import Message
from bot.staff import StaffDesk
from bot.tickets import TicketStore

SITE = "https://www.valbourg.example"


def png(width: int = 2, height: int = 2) -> bytes:
    """A real (tiny) PNG file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_desk(store, assistant, rasa_url=None):
    resume = (lambda c: resume_conversation(c, rasa_url=rasa_url)) if rasa_url else (lambda c: None)
    return StaffDesk(store, assistant.profile, assistant.hours, assistant.replies, resume_conversation=resume)


@contextmanager
def running_webchat(rasa_url: str, store: TicketStore, desk: StaffDesk, var_dir, **overrides):
    settings = WebchatSettings(**{"origins": (SITE,), **overrides})
    server = WebchatServer(settings, rasa_url, store, desk, var_dir, VisitorTokens(b"a test secret of 32 bytes......."),
                           rasa_timeout=60)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(server.start(port=0), loop).result(30)
    server.base = f"http://127.0.0.1:{port}/chat"
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class Visitor:
    """A browser on the town's site, talking to the chat API."""

    def __init__(self, base: str, origin: str = SITE):
        self.base, self.origin = base, origin
        self.token = None

    def headers(self) -> dict:
        return {"Origin": self.origin, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}

    def session(self) -> dict:
        body = requests.post(f"{self.base}/api/session", json={"token": self.token}, headers=self.headers(), timeout=10).json()
        self.token = body["token"]
        return body

    def say(self, text: str, client_id: str | None = None, **extra) -> requests.Response:
        return requests.post(f"{self.base}/api/messages", json={"text": text, "client_id": client_id or uuid.uuid4().hex,
                                                              **extra}, headers=self.headers(), timeout=120)

    def history(self) -> dict:
        return requests.get(f"{self.base}/api/history", headers=self.headers(), timeout=10).json()

    def updates(self, after: int, wait: float = 25) -> dict:
        return requests.get(f"{self.base}/api/updates", params={"after": after, "wait": wait}, headers=self.headers(),
                            timeout=wait + 10).json()

    def photo(self, data: bytes, name: str = "photo.png", caption: str = "", kind: str = "image/png") -> requests.Response:
        return requests.post(f"{self.base}/api/photo", files={"photo": (name, io.BytesIO(data), kind)},
                             data={"caption": caption} if caption else {}, headers=self.headers(), timeout=120)


# --- without the Rasa stack ---------------------------------------------------------------------------
def test_tokens_are_signed_and_unguessable():
    tokens = VisitorTokens(b"a test secret of 32 bytes.......")
    first, second = tokens.issue(), tokens.issue()
    assert first != second and tokens.conversation(first).startswith("web-")
    prefix, visitor, signature = first.split(".")
    assert tokens.conversation(f"{prefix}.{visitor}x.{signature}") is None  # altered
    # The first character: base64's last one carries bits that decoding may ignore.
    assert tokens.conversation(f"{prefix}.{visitor}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}") is None
    assert VisitorTokens(b"another secret of 32 bytes......").conversation(first) is None  # forged elsewhere
    for bad in (None, "", "v1", "v1..", "v2.a.b", "x" * 300):
        assert tokens.conversation(bad) is None
    assert photo_kind(png()) == ("png", "image/png") and photo_kind(b"GIF89a....") is None
    assert photo_kind(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == ("webp", "image/webp")


def test_origins_tokens_and_bad_input_are_refused_in_french(store, assistant, tmp_path):
    with running_webchat("http://127.0.0.1:9", store, make_desk(store, assistant), tmp_path) as server:
        visitor = Visitor(server.base)
        session = visitor.session()
        assert session["title"] and "conservés" in session["privacy"]["text"] and session["welcome"]
        assert visitor.session()["token"] == session["token"]  # a valid token comes back as it is

        other = requests.post(f"{server.base}/api/session", json={}, headers={"Origin": "https://evil.example"}, timeout=5)
        assert other.status_code == 403 and "autorisée" in other.json()["error"]
        assert "Access-Control-Allow-Origin" not in other.headers
        preflight = requests.options(f"{server.base}/api/messages", headers={
            "Origin": SITE, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"}, timeout=5)
        assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == SITE
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]

        forged = Visitor(server.base)
        forged.token = session["token"][:-2] + "xx"
        for response in (requests.get(f"{server.base}/api/history", headers=forged.headers(), timeout=5),
                         forged.say("bonjour"), forged.photo(png()),
                         requests.get(f"{server.base}/api/updates", headers=forged.headers(), timeout=5)):
            assert response.status_code == 401 and "plus valable" in response.json()["error"]
        bad = requests.post(f"{server.base}/api/messages", data=b"{pas du json", headers=visitor.headers(), timeout=5)
        assert bad.status_code == 400 and "format" in bad.json()["error"]
        assert requests.post(f"{server.base}/api/messages", json={"text": 42}, headers=visitor.headers(),
                             timeout=5).status_code == 400
        too_long = visitor.say("a" * 20_000)
        assert too_long.status_code == 413 and "4 000" in too_long.json()["error"]
        assert visitor.photo(b"GIF89a" + b"\x00" * 100, "x.gif", kind="image/gif").status_code == 415
        big = visitor.photo(b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024 + 10))
        assert big.status_code == 413 and "5 Mo" in big.json()["error"]
        demo = requests.get(f"{server.base}/demo", timeout=5)
        assert demo.status_code in (200, 404)
        if demo.status_code == 200:
            assert "script-src 'self'" in demo.headers["Content-Security-Policy"]
    # Nothing of the forged calls reached the transcript.
    with store.session() as session:
        assert session.execute(select(Message)).first() is None


def test_a_flood_from_one_address_is_slowed(store, assistant, tmp_path):
    with running_webchat("http://127.0.0.1:9", store, make_desk(store, assistant), tmp_path,
                         ip_per_minute=1, ip_burst=3) as server:
        visitor = Visitor(server.base)
        statuses = [requests.get(f"{server.base}/api/history", headers=visitor.headers(), timeout=5).status_code
                    for _ in range(5)]
        assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429]
        slowed = requests.get(f"{server.base}/api/history", headers=visitor.headers(), timeout=5)
        assert "patientez" in slowed.json()["error"] and slowed.headers["Retry-After"] == "60"


# --- with the real Rasa + action server stack ---------------------------------------------------------
@pytest.fixture
def tickets(stack) -> TicketStore:
    return TicketStore(stack.database_url)


@pytest.fixture
def desk(stack, tickets, assistant):
    try:
        Accounts(tickets, assistant.profile).create("camille", "motdepasse-solide", "cm", display_name="Camille")
    except AccountError:
        pass
    return make_desk(tickets, assistant, stack.rasa_url)


@pytest.fixture
def chat(stack, tickets, desk, tmp_path):
    with running_webchat(stack.rasa_url, tickets, desk, tmp_path) as server:
        yield server


@pytest.mark.slow
def test_faq_report_with_photo_history_and_a_staff_reply(chat, tickets, desk, tmp_path):
    visitor = Visitor(chat.base)
    visitor.session()
    conversation = chat.tokens.conversation(visitor.token)
    answer = visitor.say("la piscine est ouverte le dimanche ?", client_id="c1").json()
    assert any("valbourg.example/piscine" in m["text"] for m in answer["messages"])
    again = visitor.say("la piscine est ouverte le dimanche ?", client_id="c1").json()  # a retry: same answer, once
    assert again["messages"] == answer["messages"]

    assert "Où exactement" in " ".join(m["text"] for m in visitor.say("un lampadaire ne s'allume plus").json()["messages"])
    photo = visitor.photo(png(), caption="").json()
    assert "Photo bien reçue" in photo["messages"][0]["text"]
    receipt = visitor.say("devant le 12 rue des Tilleuls").json()
    assert any("T-20" in m["text"] for m in receipt["messages"])
    [ticket] = tickets.for_conversation(conversation)
    assert ticket.channel == "webchat" and ticket.queue == "voirie"
    [line] = [m.text for m in tickets.transcript(ticket.id) if m.text.startswith("[photo]")]
    name = line.split("/pieces-jointes/")[1].split()[0]
    assert (tmp_path / "uploads" / "webchat" / name).read_bytes() == png()

    # A reload: the conversation is still there, in order, with a cursor for the updates.
    history = visitor.history()
    texts = [m["text"] for m in history["messages"]]
    assert texts[0] == "la piscine est ouverte le dimanche ?" and texts.count("la piscine est ouverte le dimanche ?") == 1
    assert any("T-20" in t for t in texts) and history["handoff"]["active"] is False

    # Another visitor reads nothing of it.
    stranger = Visitor(chat.base)
    stranger.session()
    assert stranger.history()["messages"] == []

    # The staff answers: the long poll hands it over within seconds, to every tab; not to the stranger.
    camille = Accounts(tickets, desk.profile).get("camille")
    waiting = {}
    poller = threading.Thread(target=lambda: waiting.update(visitor.updates(history["cursor"], wait=20)))
    poller.start()
    time.sleep(0.5)
    started = time.monotonic()
    desk.take(camille, ticket.reference)
    desk.reply(camille, ticket.reference, "Bonjour, l'équipe passe demain matin.")
    poller.join(30)
    assert time.monotonic() - started < 5 and any("passe demain matin" in m["text"] for m in waiting["messages"])
    assert any("passe demain matin" in m["text"] for m in visitor.updates(history["cursor"], wait=0)["messages"])
    assert stranger.updates(0, wait=0)["messages"] == []
    assert any("passe demain matin" in m["text"] for m in visitor.history()["messages"])


@pytest.mark.slow
def test_a_handoff_is_shown_and_the_bot_stays_silent(chat, tickets, desk):
    visitor = Visitor(chat.base)
    visitor.session()
    conversation = chat.tokens.conversation(visitor.token)
    first = visitor.say("je voudrais parler à une vraie personne s'il vous plaît").json()
    assert first["handoff"]["active"] is True and first["messages"]
    silent = visitor.say("vous êtes là ?").json()
    assert silent["messages"] == [] and silent["handoff"]["active"] is True
    [ticket] = tickets.for_conversation(conversation)
    assert "vous êtes là ?" in [m.text for m in tickets.transcript(ticket.id)]
    camille = Accounts(tickets, desk.profile).get("camille")
    desk.take(camille, ticket.reference)
    state = visitor.updates(0, wait=5)
    assert state["handoff"] == {"active": True, "taken": True, "label": "Une personne de l'équipe a pris le relais."}


def test_staff_open_a_citizens_photo_from_the_ticket_page(store, assistant, tmp_path):
    from bot.tickets import NewTicket
    from bot.web import create_app

    (tmp_path / "uploads" / "webchat").mkdir(parents=True)
    name = "0123456789abcdef01234567.png"
    (tmp_path / "uploads" / "webchat" / name).write_bytes(png())
    ticket, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="web-x", channel="webchat",
                                       summary="lampadaire"))
    store.add_message("web-x", "webchat", "citizen", f"[photo] /pieces-jointes/{name} le lampadaire", ticket_id=ticket.id)
    desk = make_desk(store, assistant)
    Accounts(store, assistant.profile).create("camille", "motdepasse-solide", "cm", display_name="Camille")
    app = create_app(desk_factory=lambda: desk, secret_key="clé de test", session_minutes=60)
    app.config.update(TESTING=True, GUICHET_UPLOADS=str(tmp_path / "uploads"))
    client = app.test_client()
    assert client.get(f"/pieces-jointes/{name}").status_code == 302  # staff only
    client.get("/login")
    with client.session_transaction() as session:
        token = session["csrf_token"]
    client.post("/login", data={"username": "camille", "password": "motdepasse-solide", "csrf_token": token})
    page = client.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert f'src="/pieces-jointes/{name}"' in page and "le lampadaire" in page
    image = client.get(f"/pieces-jointes/{name}")
    assert image.status_code == 200 and image.mimetype == "image/png" and image.data == png()
    assert client.get("/pieces-jointes/..%2Fsecret_key").status_code == 404
    assert client.get("/pieces-jointes/ffffffffffffffffffffffff.png").status_code == 404
