"""The Meta gateway (Messenger, Instagram, public comments) driven through a fake Graph API.

``tests/fake_graph.py`` plays Meta: it signs webhook deliveries with the app secret, receives the
Send API, private-reply and comment-reply calls, and enforces Meta's rules (24-hour window, 7 days
with ``HUMAN_AGENT``, one private reply per comment, 2,000 characters / 1,000 bytes) with Meta's
real error shapes. The gateway under test is the real one, in front of the real Rasa + action server.

Meta behaviour tested, and where:
- webhook GET verification (right and wrong verify token), forged and missing ``X-Hub-Signature-256``
  refused with 403 and nothing done: ``test_gateway_refuses_what_is_not_meta``;
- 200 at once with a 4-second assistant: ``test_a_slow_assistant_never_delays_metas_200``;
- a batch of 3 messages in 2 entries with a read and an echo, the same ``mid`` delivered again (live
  and after a restart): ``test_a_batch_of_three_events_and_the_same_mid_twice``;
- Messenger FAQ, ``typing_on``, the Get Started postback: ``test_messenger_faq_exchange_and_get_started``;
- a report, then an image attachment (and a sticker): ``test_report_with_an_image_is_attached_to_the_ticket``;
- an Instagram DM and a long staff message under Instagram's limit: ``test_instagram_dm_...``;
- a hand-off answered from the staff web after 30 h (``HUMAN_AGENT`` tag, accepted by the fake) and
  after 8 days (not sent, reason on the ticket page): ``test_handoff_answered_after_...``;
- rate limit (code 4) retried, expired token (190/463) kept pending with its reason then sent:
  ``test_graph_errors_are_retried_or_shown``;
- a public complaint: public acknowledgement without personal data, one private reply with the
  reference, the ticket, the conversation going on in Messenger, our reply's feed echo ignored:
  ``test_a_public_complaint_...``; an insult: nothing public, hand-off to the CM, nothing hidden:
  ``test_an_insulting_comment_...``; the page's own comment ignored and silencing the bot in its
  thread: ``test_the_pages_own_comment_...``; a burst under one post: ``test_a_burst_...``.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import select

from bot import relay
from bot.accounts import AccountError, Accounts
from bot.channels.meta.comments import decide, has_personal_data, scrub
from bot.channels.meta.contacts import BEYOND_SEVEN_DAYS, Contacts, Unreachable
from bot.channels.meta.gateway import CHANNELS, MetaGateway, MetaSettings
from bot.channels.meta.graph import GraphClient
from bot.channels.meta.webhook import InboundComment, InboundMessage, parse_delivery, signature_valid, verify_subscription
from bot.comments import Comments, NewComment
from bot.integrations.rasa_api import resume_conversation
from bot.models import MetaContact, Outbox, utcnow
from bot.staff import StaffDesk
from bot.tickets import TicketStore
from fake_graph import FakeGraph

PASSWORD = "motdepasse-solide"
VERIFY = "jeton-de-verification"


# --- helpers ------------------------------------------------------------------------------------------
@pytest.fixture
def fake():
    server = FakeGraph()
    yield server
    server.close()


def make_desk(store, assistant, rasa_url=None):
    resume = (lambda c: resume_conversation(c, rasa_url=rasa_url)) if rasa_url else (lambda c: None)
    return StaffDesk(store, assistant.profile, assistant.hours, assistant.replies, resume_conversation=resume)


def settings_for(fake: FakeGraph, **overrides) -> MetaSettings:
    values = dict(app_secret=fake.app_secret, verify_token=VERIFY, page_token=fake.page_token, page_id=fake.page_id,
                  instagram_id=fake.instagram_id, graph_url=fake.base_url, human_agent=True)
    values.update(overrides)
    return MetaSettings(**values)


@contextmanager
def running_meta(fake: FakeGraph, rasa_url: str, store: TicketStore, desk: StaffDesk, **overrides):
    settings = settings_for(fake, **overrides)
    graph = GraphClient(settings.page_token, base_url=fake.base_url, backoff=0.05, tries=4, timeout=10)
    gateway = MetaGateway(settings, rasa_url, store, desk, graph=graph, poll_seconds=0.2, rasa_timeout=60)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    port = run(gateway.start(port=0))
    gateway.url = f"http://127.0.0.1:{port}/webhooks/meta"
    gateway.run = run
    try:
        yield gateway
    finally:
        run(gateway.stop(grace=10), timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        for channel in CHANNELS:
            relay.unregister_deliverer(channel)


def psid() -> str:
    return f"{uuid.uuid4().int % 10**15}"


def add_camille(store, profile):
    try:
        Accounts(store, profile).create("camille", PASSWORD, "cm", display_name="Camille")
    except AccountError:
        pass


def outbox_rows(store, conversation: str) -> list[Outbox]:
    with store.session() as session:
        return list(session.execute(select(Outbox).where(Outbox.conversation_id == conversation)
                                    .order_by(Outbox.id)).scalars())


# --- without the Rasa stack ---------------------------------------------------------------------------
def test_webhook_contract_helpers(fake):
    assert verify_subscription({"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "42"}, VERIFY) == "42"
    assert verify_subscription({"hub.mode": "subscribe", "hub.verify_token": "autre", "hub.challenge": "42"}, VERIFY) is None
    assert verify_subscription({"hub.mode": "unsubscribe", "hub.verify_token": VERIFY, "hub.challenge": "42"}, VERIFY) is None
    body = fake.encode({"object": "page", "entry": []})
    assert signature_valid(body, fake.sign(body), fake.app_secret)
    assert not signature_valid(body + b" ", fake.sign(body), fake.app_secret)
    assert not signature_valid(body, "sha1=" + fake.sign(body)[7:], fake.app_secret)
    assert not signature_valid(body, None, fake.app_secret) and not signature_valid(body, fake.sign(body), None)

    events = parse_delivery(fake.batch([[fake.message_event("u1", "bonjour"), fake.echo_event("u1"),
                                         fake.read_event("u1"), fake.delivery_event("u1")],
                                        [fake.postback_event("u2", "GET_STARTED"),
                                         fake.message_event("u3", attachments=[{"type": "image", "payload": {"url": "https://cdn.example/p.jpg"}}])]]))
    assert [type(e).__name__ for e in events] == ["InboundMessage"] * 3
    assert [e.user_id for e in events] == ["u1", "u2", "u3"]
    assert events[1].postback == "GET_STARTED" and events[2].images == ("https://cdn.example/p.jpg",)
    [comment] = parse_delivery(fake.feed_comment("111_222", "1000_111", "Bravo", parent_id="1000_111"))
    assert isinstance(comment, InboundComment) and comment.thread_id == "111_222" and "comment_id=111_222" in comment.permalink
    [reply] = parse_delivery(fake.feed_comment("111_333", "1000_111", "moi aussi", parent_id="111_222"))
    assert reply.thread_id == "111_222"
    [ig] = parse_delivery(fake.instagram_comment("1790", "1780_m", "trop bien"))
    assert ig.platform == "instagram" and ig.author_name == "marie.d" and ig.post_id == "1780_m"
    assert parse_delivery({"object": "user", "entry": []}) == [] and parse_delivery([1, 2]) == []


def test_public_text_never_carries_personal_data():
    text = scrub("Bonjour Marie Dupont ! Votre dossier T-2026-000123 est noté, écrivez à marie@exemple.fr.",
                 ("Marie Dupont",))
    assert "Marie" not in text and "Dupont" not in text and "T-2026" not in text and "@" not in text
    assert has_personal_data("appelez le 06 12 34 56 78") and not has_personal_data("appelez le 04 76 00 00 00",
                                                                                     "04 76 00 00 00")
    assert has_personal_data("dossier T-2026-000123")


def test_contacts_follow_metas_window(store):
    contacts = Contacts(store)
    now = utcnow()
    conversation = contacts.inbound("messenger", "p1", now - dt.timedelta(hours=2))
    assert conversation == "messenger-p1"
    assert contacts.route(conversation, human_agent=True).messaging_type == "RESPONSE"
    contacts.inbound("messenger", "p2", now - dt.timedelta(hours=30))
    route = contacts.route("messenger-p2", human_agent=True)
    assert (route.messaging_type, route.tag) == ("MESSAGE_TAG", "HUMAN_AGENT")
    with pytest.raises(Unreachable, match="Human Agent"):
        contacts.route("messenger-p2", human_agent=False)
    contacts.inbound("messenger", "p3", now - dt.timedelta(days=8))
    with pytest.raises(Unreachable) as error:
        contacts.route("messenger-p3", human_agent=True)
    assert str(error.value) == BEYOND_SEVEN_DAYS

    # A comment: its one private reply, then the inbox once the person answers.
    comments = Comments(store)
    row, _ = comments.record(NewComment("facebook", "c-1", "post-1", "c-1", "trou devant l'école", "u-9", "Marie"))
    assert contacts.route(row.conversation_id, human_agent=True).comment_id == "c-1"
    contacts.private_reply_sent(row.conversation_id, "messenger", "c-1", "psid-9")
    with pytest.raises(Unreachable, match="pas répondu"):
        contacts.route(row.conversation_id, human_agent=True)
    assert contacts.inbound("messenger", "psid-9", now) == row.conversation_id  # the answer joins the comment's conversation
    assert contacts.route(row.conversation_id, human_agent=True).recipient_id == "psid-9"


def test_comment_policy(assistant):
    say = lambda key, **context: f"<{key}>"  # noqa: E731

    class T:
        def __init__(self, kind, reason=None, urgent=False):
            self.kind, self.handoff_reason, self.urgent = kind, reason, urgent

    faq = [{"text": "La piscine ouvre à 9 h : valbourg.example/piscine", "outcome": "faq:piscine"}]
    assert decide("faq:piscine", faq, [], say=say, limited=False, staff_thread=False).public_text.startswith("La piscine")
    assert decide("faq:piscine", faq, [], say=say, limited=True, staff_thread=False).treatment == "limited"
    assert decide("faq:piscine", faq, [], say=say, limited=False, staff_thread=True).public_text is None
    ticket = [{"text": "C'est noté ✅ T-2026-000001", "outcome": "ticket:voirie"}]
    decision = decide("ticket:voirie", ticket, [T("complaint")], say=say, limited=False, staff_thread=False)
    assert (decision.treatment, decision.public_text, decision.private_texts) == ("acknowledged", "<complaint>",
                                                                                 ["C'est noté ✅ T-2026-000001"])
    insult = decide("handoff", [{"text": "…", "outcome": "handoff"}], [T("handoff", "insult")], say=say,
                    limited=False, staff_thread=False)
    assert (insult.treatment, insult.public_text, insult.private_texts) == ("to_cm", None, [])
    distress = decide("handoff", [{"text": "🚨 112", "outcome": "handoff"}], [T("handoff", "distress_suicide", True)],
                      say=say, limited=True, staff_thread=True)
    assert (distress.treatment, distress.public_text) == ("distress", "<distress>")


def test_gateway_refuses_what_is_not_meta(fake, store, assistant):
    desk = make_desk(store, assistant)
    with running_meta(fake, "http://127.0.0.1:9", store, desk) as gateway:
        assert fake.subscribe(gateway.url, VERIFY).text == "1158201444"
        assert fake.subscribe(gateway.url, "mauvais").status_code == 403
        forged = fake.deliver(gateway.url, fake.batch([fake.message_event("u-forged", "bonjour")]),
                              signature="sha256=" + "0" * 64)
        assert forged.status_code == 403
        unsigned = requests.post(gateway.url, json={"object": "page", "entry": []}, timeout=5)
        assert unsigned.status_code == 403
        gateway.run(gateway.idle())
    assert fake.messages() == [] and store.for_conversation("messenger-u-forged") == []


# --- with the real Rasa + action server stack ---------------------------------------------------------
@pytest.fixture
def tickets(stack) -> TicketStore:
    return TicketStore(stack.database_url)


@pytest.fixture
def desk(stack, tickets, assistant):
    add_camille(tickets, assistant.profile)
    return make_desk(tickets, assistant, stack.rasa_url)


@pytest.fixture
def meta(fake, stack, tickets, desk):
    with running_meta(fake, stack.rasa_url, tickets, desk) as gateway:
        yield gateway


@pytest.mark.slow
def test_messenger_faq_exchange_and_get_started(fake, meta, tickets):
    user = psid()
    assert fake.deliver(meta.url, fake.batch([fake.postback_event(user, "GET_STARTED")])).status_code == 200
    fake.wait_for(lambda: fake.texts(user), 60, "the greeting")
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "bonjour, la piscine est ouverte le dimanche ?")]))
    fake.wait_for(lambda: any("valbourg.example/piscine" in t for t in fake.texts(user)), 60, "the FAQ answer")
    assert "typing_on" in fake.sender_actions(user)
    assert tickets.for_conversation(f"messenger-{user}") == []
    call = fake.messages(user)[-1]
    assert call["json"]["messaging_type"] == "RESPONSE" and call["token"] == fake.page_token


@pytest.mark.slow
def test_report_with_an_image_is_attached_to_the_ticket(fake, meta, tickets):
    user = psid()
    conversation = f"messenger-{user}"
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "le lampadaire ne s'allume plus depuis hier soir")]))
    fake.wait_for(lambda: any("Où exactement" in t for t in fake.texts(user)), 60, "the question")
    first = {"type": "image", "payload": {"url": "https://scontent.example/avant.jpg"}}
    fake.deliver(meta.url, fake.batch([fake.message_event(user, attachments=[first])]))  # a photo while reporting
    fake.wait_for(lambda: any("Photo bien reçue" in t for t in fake.texts(user)), 30, "the photo acknowledged")
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "devant le 12 rue des Tilleuls")]))
    fake.wait_for(lambda: any("T-20" in t for t in fake.texts(user)), 60, "the receipt")
    [ticket] = tickets.for_conversation(conversation)
    assert ticket.channel == "messenger" and ticket.queue == "voirie" and ticket.kind == "report"
    assert any("avant.jpg" in m.text for m in tickets.transcript(ticket.id))  # joined the ticket made after it
    image = {"type": "image", "payload": {"url": "https://scontent.example/lampadaire.jpg"}}
    fake.deliver(meta.url, fake.batch([fake.message_event(user, attachments=[image])]))
    fake.wait_for(lambda: any(f"Photo ajoutée à votre dossier {ticket.reference}" in t for t in fake.texts(user)), 30,
                  "the photo receipt")
    assert "lampadaire.jpg" in tickets.get(ticket.id).summary
    assert any(m.text.startswith("[photo] https://scontent.example/lampadaire.jpg") for m in tickets.transcript(ticket.id))
    sticker = {"type": "image", "payload": {"url": "https://scontent.example/s.png", "sticker_id": 369239263222822}}
    fake.deliver(meta.url, fake.batch([fake.message_event(user, attachments=[sticker])]))
    fake.wait_for(lambda: any("ce type de message" in t for t in fake.texts(user)), 30, "the unsupported answer")


@pytest.mark.slow
def test_a_batch_of_three_events_and_the_same_mid_twice(fake, meta, tickets):
    users = [psid() for _ in range(3)]
    mid = "m_" + uuid.uuid4().hex
    batch = fake.batch([[fake.message_event(users[0], "les horaires de la mairie ?", mid=mid), fake.read_event(users[0])],
                        [fake.message_event(users[1], "la piscine est ouverte le dimanche ?"),
                         fake.message_event(users[2], "bonjour"), fake.echo_event(users[2])]])
    assert fake.deliver(meta.url, batch).status_code == 200
    for user in users:
        fake.wait_for(lambda user=user: fake.texts(user), 60, f"an answer to {user}")
    meta.run(meta.idle())
    answered = len(fake.texts(users[0]))
    # Meta re-sends the first message (same mid), at once and later: never answered twice.
    fake.deliver(meta.url, fake.batch([fake.message_event(users[0], "les horaires de la mairie ?", mid=mid)]))
    meta.run(meta.idle())
    fresh = MetaGateway(meta.settings, meta.citizens.link.rest_url.rsplit("/webhooks", 1)[0], tickets, meta.desk,
                        graph=meta.graph)  # after a restart: the memory of mids is gone, the transcript is not
    event = parse_delivery(fake.batch([fake.message_event(users[0], "les horaires de la mairie ?", mid=mid)]))[0]
    meta.run(fresh.handle_message(event))
    time.sleep(0.5)
    assert len(fake.texts(users[0])) == answered
    with tickets.session() as session:
        from bot.models import Message
        lines = session.execute(select(Message).where(Message.conversation_id == f"messenger-{users[0]}",
                                                      Message.author == "citizen")).scalars().all()
    assert len(lines) == 1


class SlowRasa:
    """A REST channel that takes its time (like a busy assistant)."""

    def __init__(self, delay: float):
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(owner.delay)
                data = json.dumps([{"recipient_id": body["sender"], "text": "Réponse lente mais sûre."}]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.delay = delay
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_assistant_never_delays_metas_200(fake, store, assistant):
    slow = SlowRasa(delay=4.0)
    try:
        with running_meta(fake, slow.url, store, make_desk(store, assistant)) as gateway:
            user = psid()
            started = time.monotonic()
            response = fake.deliver(gateway.url, fake.batch([fake.message_event(user, "bonjour")]))
            took = time.monotonic() - started
            assert response.status_code == 200 and took < 1.5, took
            fake.wait_for(lambda: "Réponse lente mais sûre." in fake.texts(user), 30, "the slow answer")
    finally:
        slow.close()


@pytest.mark.slow
def test_instagram_dm_is_answered_under_instagrams_limit(fake, meta, tickets):
    user = psid()
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "quels sont les horaires de la mairie ?",
                                                          platform="instagram")], platform="instagram"))
    fake.wait_for(lambda: fake.texts(user), 60, "the Instagram answer")
    assert all(len(t) <= 1000 for t in fake.texts(user))
    assert tickets.for_conversation(f"instagram-{user}") == []
    # A long staff message is cut under 1,000 characters, nothing lost.
    long_text = ("Voici le détail de votre demande. " * 60).strip()
    meta.run(asyncio.sleep(0))
    relay.send_to_citizen(tickets, f"instagram-{user}", "instagram", long_text)
    fake.wait_for(lambda: len(fake.texts(user)) >= 3, 30, "the long message in parts")
    parts = fake.texts(user)[-3:]
    assert all(len(p) <= 1000 for p in parts) and " ".join(parts).split() == long_text.split()


def _handoff(fake, meta, tickets, user: str, hours_ago: float):
    """A hand-off asked for now, then ``hours_ago`` hours go by (for us and for Meta) without a word."""
    conversation = f"messenger-{user}"
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "je veux parler à une vraie personne svp")]))
    fake.wait_for(lambda: tickets.for_conversation(conversation), 60, "the hand-off ticket")
    fake.wait_for(lambda: fake.texts(user), 60, "the hand-off answer")
    meta.run(meta.idle())
    [ticket] = tickets.for_conversation(conversation)
    assert ticket.kind == "handoff"
    with tickets.session() as session:
        contact = session.get(MetaContact, conversation)
        contact.last_inbound_at -= dt.timedelta(hours=hours_ago)
        session.commit()
    with fake.lock:
        fake.last_seen[user] -= hours_ago * 3600
    return ticket


def _reply_from_the_web(desk, ticket, text: str):
    from conftest import staff_web_client

    client, token = staff_web_client(desk, "camille", PASSWORD)
    response = client.post(f"/tickets/{ticket.reference}/reply",
                           data={"csrf_token": token, "message": text, "canned": "", "action": "send"})
    assert response.status_code in (302, 303), response.status_code
    return client


@pytest.mark.slow
def test_handoff_answered_after_30_hours_uses_the_human_agent_tag(fake, meta, tickets, desk):
    user = psid()
    ticket = _handoff(fake, meta, tickets, user, hours_ago=30)
    before = len(fake.texts(user))
    # During the hand-off the bot is silent; the message joins the ticket (written 29 h ago).
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "vous êtes là ?",
                                                          timestamp_ms=int((time.time() - 29 * 3600) * 1000))]))
    fake.wait_for(lambda: any(m.text == "vous êtes là ?" for m in tickets.transcript(ticket.id)), 30, "the line")
    meta.run(meta.idle())
    assert len(fake.texts(user)) == before
    _reply_from_the_web(desk, ticket, "Bonjour, je suis Camille, je regarde votre demande.")
    fake.wait_for(lambda: any("je regarde votre demande" in t for t in fake.texts(user)), 30, "the CM's reply")
    call = [c for c in fake.messages(user) if "je regarde" in c["json"]["message"]["text"]][-1]
    assert (call["json"]["messaging_type"], call["json"]["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")
    [row] = outbox_rows(tickets, f"messenger-{user}")
    assert row.delivered_at is not None and row.failed_at is None


@pytest.mark.slow
def test_handoff_answered_after_8_days_is_shown_as_unreachable(fake, meta, tickets, desk):
    user = psid()
    ticket = _handoff(fake, meta, tickets, user, hours_ago=8 * 24)
    meta.run(meta.idle())
    client = _reply_from_the_web(desk, ticket, "Bonjour, désolée pour l'attente.")
    fake.wait_for(lambda: outbox_rows(tickets, f"messenger-{user}")
                  and outbox_rows(tickets, f"messenger-{user}")[-1].failed_at, 30, "the message given up")
    [row] = outbox_rows(tickets, f"messenger-{user}")
    assert row.delivered_at is None and "plus de 7 jours" in row.last_error
    assert not any("désolée pour l'attente" in t for t in fake.texts(user))
    assert [r.id for r in relay.undelivered(tickets, ticket.id)] == [row.id]
    page = client.get(f"/tickets/{ticket.reference}").get_data(as_text=True)
    assert "plus de 7 jours" in page


def greeted(fake, meta) -> tuple[str, str]:
    """A Messenger user who just said hello (their 24-hour window is open): (PSID, conversation)."""
    user = psid()
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "bonjour")]))
    fake.wait_for(lambda: fake.texts(user), 60, "the greeting")
    meta.run(meta.idle())
    return user, f"messenger-{user}"


@pytest.mark.slow
def test_graph_errors_are_retried_or_shown(fake, meta, tickets):
    user, conversation = greeted(fake, meta)
    fake.fail_next("rate_limit", times=2, path_contains="messages")
    relay.send_to_citizen(tickets, conversation, "messenger", "Votre dossier avance.")
    fake.wait_for(lambda: "Votre dossier avance." in fake.texts(user), 30, "the message after the rate limit")
    fake.fail_next("token", times=1000, path_contains="messages")
    relay.send_to_citizen(tickets, conversation, "messenger", "Deuxième nouvelle.")
    fake.wait_for(lambda: (outbox_rows(tickets, conversation)[-1].last_error or ""), 30, "the token error")
    row = outbox_rows(tickets, conversation)[-1]
    assert row.failed_at is None and row.delivered_at is None and "jeton" in row.last_error  # kept, reason shown
    with fake.lock:
        fake._failures.clear()
    fake.wait_for(lambda: "Deuxième nouvelle." in fake.texts(user), 30, "the message once the token works")


@pytest.mark.slow
def test_a_public_complaint_gets_an_acknowledgement_a_private_reply_and_a_ticket(fake, meta, tickets):
    post, comment = "1000_" + uuid.uuid4().hex[:8], uuid.uuid4().hex[:10]
    text = "Ça fait 3 semaines que les poubelles de la rue Pasteur ne sont pas ramassées, c'est honteux !"
    fake.deliver(meta.url, fake.feed_comment(comment, post, text, from_id="u-77", from_name="Marie Dupont"))
    fake.wait_for(lambda: fake.comment_replies(comment) and fake.private_replies(comment), 60, "both replies")
    meta.run(meta.idle())
    [public] = fake.comment_replies(comment)
    [private] = fake.private_replies(comment)
    [row] = [r for r in Comments(tickets).recent(200) if r.comment_id == comment]
    ticket = tickets.get(row.ticket_id)
    assert ticket is not None and ticket.channel == "facebook_comment" and ticket.queue == "proprete"
    assert "on fait remonter" in public["message"].lower() and "message privé" in public["message"]
    assert ticket.reference not in public["message"] and "Marie" not in public["message"]
    assert ticket.reference in private["message"]
    assert row.treatment == "acknowledged" and row.public_reply_id == public["id"]
    assert not [c for c in fake.calls if c["method"] == "DELETE" or "is_hidden" in json.dumps(c["json"])]

    # The person answers the private reply in Messenger: the conversation goes on there.
    commenter = fake.psid_for_commenter.get("u-77", "psid-u-77")
    fake.deliver(meta.url, fake.batch([fake.message_event(commenter, "merci beaucoup !")]))
    fake.wait_for(lambda: fake.texts(commenter), 60, "the answer in Messenger")
    contact = tickets.session().get(MetaContact, row.conversation_id)
    assert contact.user_id == commenter and contact.last_inbound_at is not None
    # The echo of our public reply (the page's own comment) is ignored, not taken for a staff answer.
    fake.deliver(meta.url, fake.feed_comment(public["id"], post, public["message"], from_id=fake.page_id,
                                             from_name="Ville de Valbourg", parent_id=comment))
    meta.run(meta.idle())
    assert not Comments(tickets).staff_answered(comment)


@pytest.mark.slow
def test_an_insulting_comment_gets_nothing_public_and_goes_to_the_cm(fake, meta, tickets, desk):
    post, comment = "1000_" + uuid.uuid4().hex[:8], uuid.uuid4().hex[:10]
    fake.deliver(meta.url, fake.feed_comment(comment, post, "bande de connards incompétents, allez vous faire voir",
                                             from_id="u-78"))
    fake.wait_for(lambda: [r for r in Comments(tickets).recent(200) if r.comment_id == comment and r.treatment != "pending"],
                  60, "the comment handled")
    meta.run(meta.idle())
    [row] = [r for r in Comments(tickets).recent(200) if r.comment_id == comment]
    assert row.treatment == "to_cm" and fake.comment_replies(comment) == [] and fake.private_replies(comment) == []
    ticket = tickets.get(row.ticket_id)
    assert ticket.kind == "handoff" and ticket.handoff_reason == "insult"
    camille = Accounts(tickets, desk.profile).get("camille")
    assert ticket.reference in [item.ticket.reference for item in desk.queue(camille)]
    assert not [c for c in fake.calls if c["method"] == "DELETE" or "is_hidden" in json.dumps(c["json"])]

    # The CM answers, in public and in private: the gateway posts the first under the comment and
    # sends the second as the comment's one private reply.
    desk.reply_to_comment(camille, row.id, "Nous entendons votre colère ; écrivez-nous en privé, on regarde.", public=True)
    desk.reply_to_comment(camille, row.id, "Bonjour, dites-nous ce qui s'est passé : on vous lit.", public=False)
    fake.wait_for(lambda: fake.comment_replies(comment) and fake.private_replies(comment), 30, "the CM's replies")
    assert "Nous entendons votre colère" in fake.comment_replies(comment)[0]["message"]
    assert "dites-nous ce qui s'est passé" in fake.private_replies(comment)[0]["message"]
    assert Comments(tickets).staff_answered(row.thread_id)


@pytest.mark.slow
def test_the_pages_own_comment_is_ignored_and_silences_the_bot_in_its_thread(fake, meta, tickets):
    post, first = "1000_" + uuid.uuid4().hex[:8], uuid.uuid4().hex[:10]
    fake.deliver(meta.url, fake.feed_comment(first, post, "la piscine est ouverte le dimanche ?", from_id="u-80"))
    fake.wait_for(lambda: fake.comment_replies(first), 60, "the bot's public answer")
    own = uuid.uuid4().hex[:10]
    fake.deliver(meta.url, fake.feed_comment(own, post, "Bonjour, oui de 9 h à 12 h ! Camille", from_id=fake.page_id,
                                             from_name="Ville de Valbourg", parent_id=first))
    later = uuid.uuid4().hex[:10]
    fake.deliver(meta.url, fake.feed_comment(later, post, "et le samedi, la piscine ouvre à quelle heure ?",
                                             from_id="u-81", parent_id=first))
    meta.run(meta.idle())
    comments = Comments(tickets)
    assert comments.by_comment_id(own) is None and fake.comment_replies(own) == []
    assert comments.by_comment_id(later).treatment == "staff_thread" and fake.comment_replies(later) == []
    assert len(fake.comment_replies(first)) == 1


@pytest.mark.slow
def test_a_burst_of_comments_on_one_post_is_limited(fake, stack, tickets, desk):
    post = "1000_" + uuid.uuid4().hex[:8]
    with running_meta(fake, stack.rasa_url, tickets, desk, public_replies_per_post=2) as gateway:
        ids = [uuid.uuid4().hex[:10] for _ in range(4)]
        for index, comment in enumerate(ids):
            fake.deliver(gateway.url, fake.feed_comment(comment, post, "la piscine est ouverte le dimanche ?",
                                                        from_id=f"u-9{index}"))
        fake.wait_for(lambda: all(Comments(tickets).by_comment_id(c) and Comments(tickets).by_comment_id(c).treatment
                                  != "pending" for c in ids), 90, "every comment handled")
        gateway.run(gateway.idle())
    treatments = [Comments(tickets).by_comment_id(c).treatment for c in ids]
    assert treatments == ["answered", "answered", "limited", "limited"]
    assert len(fake.comment_replies()) == 2


def test_privacy_covers_comments_and_contacts(store):
    from bot.privacy import MARKER, Privacy

    comments, contacts = Comments(store), Contacts(store)
    old = utcnow() - dt.timedelta(days=400)
    row, _ = comments.record(NewComment("facebook", "c-old", "p-1", "c-old", "Marie, 12 rue Pasteur : trou énorme",
                                        "u-1", "Marie Dupont", "https://www.facebook.com/p?comment_id=c-old", old))
    comments.set_outcome(row.id, outcome="faq:voirie", treatment="answered")
    fresh, _ = comments.record(NewComment("facebook", "c-new", "p-1", "c-new", "la piscine ?", "u-2", "Paul"))
    contacts.inbound("messenger", "psid-old", old)
    contacts.inbound("messenger", "psid-new", utcnow())

    exported = Privacy(store).export(row.conversation_id)
    assert exported["public_comments"][0]["text"].startswith("Marie, 12 rue Pasteur")

    report = Privacy(store).purge(365)
    assert report.comments == 2  # the old comment and the old contact
    purged = comments.by_comment_id("c-old")
    assert (purged.text, purged.author_name, purged.author_id, purged.permalink) == (MARKER, None, None, None)
    assert purged.treatment == "answered"  # what the bot did stays for the figures
    assert comments.by_comment_id("c-new").text == "la piscine ?"
    assert contacts.get("messenger-psid-old") is None and contacts.get("messenger-psid-new") is not None

    erased = Privacy(store).erase("messenger-psid-new")
    assert erased.comments == 1 and contacts.get("messenger-psid-new") is None
    Privacy(store).erase(fresh.conversation_id)
    assert comments.by_comment_id("c-new").text == MARKER


@pytest.mark.slow
def test_distress_in_a_comment_gets_a_public_line_to_help_and_the_cm(fake, meta, tickets):
    post, comment = "1000_" + uuid.uuid4().hex[:8], uuid.uuid4().hex[:10]
    fake.deliver(meta.url, fake.feed_comment(comment, post, "je n'en peux plus, je veux en finir avec la vie",
                                             from_id="u-85", from_name="Léo Martin"))
    fake.wait_for(lambda: fake.comment_replies(comment) and fake.private_replies(comment), 60, "both replies")
    [public] = fake.comment_replies(comment)
    [private] = fake.private_replies(comment)
    assert "3114" in public["message"] and "message privé" in public["message"] and "Léo" not in public["message"]
    assert "3114" in private["message"]
    row = Comments(tickets).by_comment_id(comment)
    ticket = tickets.get(row.ticket_id)
    assert row.treatment == "distress" and ticket.kind == "handoff" and ticket.urgent


@pytest.mark.slow
def test_an_instagram_question_comment_is_answered_under_it(fake, meta, tickets):
    media, comment = "1780_" + uuid.uuid4().hex[:8], "17" + uuid.uuid4().hex[:12]
    fake.deliver(meta.url, fake.instagram_comment(comment, media, "c'est quoi les horaires de la mairie le samedi ?"))
    fake.wait_for(lambda: fake.comment_replies(comment), 60, "the public answer")
    [reply] = fake.comment_replies(comment)
    assert reply["platform"] == "instagram" and "valbourg.example" in reply["message"]
    assert len(reply["message"].encode()) <= 1000 and fake.private_replies(comment) == []
    assert Comments(tickets).by_comment_id(comment).treatment == "answered"


@pytest.mark.slow
def test_buttons_become_quick_replies_and_their_press_goes_back_as_the_payload(fake, meta, tickets):
    user, conversation = greeted(fake, meta)
    relay.send_to_citizen(tickets, conversation, "messenger", "Êtes-vous satisfait(e) de la réponse ?",
                          buttons=[{"title": "Oui 👍", "payload": "oui merci"}, {"title": "Non 👎", "payload": "non"}])
    fake.wait_for(lambda: any(c["json"]["message"].get("quick_replies") for c in fake.messages(user)), 30,
                  "the quick replies")
    [call] = [c for c in fake.messages(user) if c["json"]["message"].get("quick_replies")]
    assert [(q["title"], q["payload"]) for q in call["json"]["message"]["quick_replies"]] == [("Oui 👍", "oui merci"),
                                                                                             ("Non 👎", "non")]
    before = len(fake.texts(user))
    fake.deliver(meta.url, fake.batch([fake.message_event(user, "Oui 👍", quick_reply="oui merci")]))
    fake.wait_for(lambda: len(fake.texts(user)) > before, 60, "the answer to the press")
    from bot.models import Message
    with tickets.session() as session:
        texts = session.execute(select(Message.text).where(Message.conversation_id == conversation,
                                                           Message.author == "citizen")).scalars().all()
    assert "oui merci" in texts


@pytest.mark.slow
def test_guichet_run_serves_meta_when_its_settings_are_present(fake, model_path, tmp_path):
    """`guichet run` with the Meta settings: the stack plus the gateway process, no local chat;
    incomplete settings stop with the missing names; SIGTERM stops everything."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from bot.stack import free_port

    port = free_port()
    env = dict(os.environ, GUICHET_META_APP_SECRET=fake.app_secret, GUICHET_META_VERIFY_TOKEN=VERIFY,
               GUICHET_META_PAGE_TOKEN=fake.page_token, GUICHET_META_PAGE_ID=fake.page_id,
               GUICHET_META_GRAPH_URL=fake.base_url, GUICHET_META_PORT=str(port),
               GUICHET_DATABASE_URL=f"sqlite:///{tmp_path / 'guichet.db'}", GUICHET_VAR_DIR=str(tmp_path / "var"),
               GUICHET_RASA_PORT=str(free_port()), GUICHET_ACTION_PORT=str(free_port()))
    for name in ("GUICHET_RASA_URL", "GUICHET_TELEGRAM_TOKEN"):
        env.pop(name, None)
    guichet = str(Path(sys.executable).parent / "guichet")
    incomplete = subprocess.run([guichet, "run", "--model", str(model_path)], capture_output=True, text=True,
                                env={k: v for k, v in env.items() if k != "GUICHET_META_PAGE_TOKEN"},
                                stdin=subprocess.DEVNULL, timeout=300)
    assert incomplete.returncode == 2 and "GUICHET_META_PAGE_TOKEN" in incomplete.stdout + incomplete.stderr
    with open(tmp_path / "run.log", "wb") as log:
        process = subprocess.Popen([guichet, "run", "--model", str(model_path)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/webhooks/meta"
    try:
        fake.wait_for(lambda: _answers(url), 240, "the gateway up")
        assert fake.subscribe(url, VERIFY).text == "1158201444"
        user = psid()
        fake.deliver(url, fake.batch([fake.message_event(user, "la piscine est ouverte le dimanche ?")]))
        fake.wait_for(lambda: any("valbourg.example/piscine" in t for t in fake.texts(user)), 120, "the answer")
        assert process.poll() is None
        # The website chat's demo page is served too, at the address printed at start.
        demo = f"http://127.0.0.1:{os.environ['GUICHET_WEBCHAT_PORT']}/chat/demo"
        assert demo in (tmp_path / "run.log").read_text()
        page = requests.get(demo, timeout=10)
        assert page.status_code == 200 and "guichet-chat.js" in page.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            assert process.wait(60) == 0
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    output = (tmp_path / "run.log").read_text()
    assert "Passerelle Facebook/Instagram démarrée" in output and "vous>" not in output
    assert not _answers(url)


def _answers(url: str) -> bool:
    try:
        return requests.get(url.replace("/webhooks/meta", "/health"), timeout=2).status_code == 200
    except requests.RequestException:
        return False
