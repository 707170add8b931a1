"""Bad input on our REST channel (``/webhooks/guichet/webhook``) of the real stack, and floods.

Every odd message gets a clear French answer (never a 500) and the next normal message still
works; slash commands typed by a citizen are plain text (a ``/restart`` cannot end a hand-off).
"""
from __future__ import annotations

import uuid

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.tickets import TicketStore

pytestmark = pytest.mark.slow
TIMEOUT = 120


def post(stack, body=None, raw: bytes | None = None, headers: dict | None = None) -> requests.Response:
    if raw is not None:
        return requests.post(stack.chat_url, data=raw, headers=headers or {"Content-Type": "application/json"},
                             timeout=TIMEOUT)
    return requests.post(stack.chat_url, json=body, timeout=TIMEOUT)


def say(stack, sender: str, text, **extra) -> list[str]:
    response = post(stack, {"sender": sender, "message": text, **extra})
    assert response.status_code == 200, response.text
    return [m.get("text") or "" for m in response.json()]


def citizen_lines(store: TicketStore, sender: str) -> list[str]:
    return [m.text for m in store.conversation_messages(sender) if m.author == "citizen"]


@pytest.fixture
def sender() -> str:
    return f"bad-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(stack) -> TicketStore:
    return TicketStore(stack.database_url)


def assert_still_serving(stack) -> None:
    replies = say(stack, f"ok-{uuid.uuid4().hex[:8]}", "bonjour, la piscine est ouverte le dimanche ?")
    assert any("valbourg.example/piscine" in r for r in replies)


ODD_TEXTS = [
    "",
    "   \n\t  ",
    "a" * 20_000,
    "bonjour\x00\x01\x07\x1b[31m la mairie\x7f est ouverte ?",
    "\x00\x00\x00",
    "😀😀😀🙏",
    "<script>alert('x')</script><b>le lampadaire</b> est cassé",
    "'; DROP TABLE ticket; -- \" OR 1=1 /* %s %(x)s {{7*7}} ${jndi:ldap://x}",
    "où en est T-2026-999999 ?",
    "où en est mon dossier T-2026-000001 ; SELECT * FROM ticket",
    "\u202e\u200b\ufeffbonjour\u2028ligne",
]


@pytest.mark.parametrize("text", ODD_TEXTS, ids=[f"text{i}" for i in range(len(ODD_TEXTS))])
def test_odd_texts_get_a_french_answer(stack, sender, store, text):
    replies = say(stack, sender, text)
    assert replies and all(r.strip() for r in replies)
    if not text.strip("\x00 \n\t"):
        assert any("semble vide" in r for r in replies)


def test_forged_reference_reveals_nothing(stack, sender, store):
    owner = f"{sender}-owner"
    say(stack, owner, "le lampadaire ne s'allume plus")
    replies = say(stack, owner, "devant le 5 rue des Acacias")
    [ticket] = store.for_conversation(owner)
    forged = say(stack, sender, f"où en est {ticket.reference} ?")
    assert all("Acacias" not in r and "Voirie" not in r for r in forged)
    assert any("Je ne trouve pas" in r for r in forged)
    assert any(ticket.reference in r for r in replies)


def test_long_message_is_kept_cut(stack, sender, store):
    say(stack, sender, "b" * 20_000)
    [line] = citizen_lines(store, sender)
    assert 3_000 < len(line) <= 4_000


def test_control_characters_and_nul_are_removed_before_storage(stack, sender, store):
    say(stack, sender, "bonjour\x00 la\x07 mairie")
    assert citizen_lines(store, sender) == ["bonjour la mairie"]


@pytest.mark.parametrize("raw", [
    b"\xff\xfe\xfa not json at all",
    b'{"sender": "x", "message": "caf\xe9 \xff"}',  # invalid UTF-8 inside valid JSON
    b"",
    b"[1, 2, 3]",
    b'"juste une chaine"',
    b"{\"sender\": ",
    b"null",
], ids=["bytes", "utf8-in-json", "empty", "list", "string", "truncated", "null"])
def test_raw_bodies(stack, raw):
    response = post(stack, raw=raw)
    assert response.status_code in (200, 400)
    answer = response.json()
    assert isinstance(answer, list) and answer and answer[0]["text"]
    if response.status_code == 400:
        assert "Désolé" in answer[0]["text"]
    assert_still_serving(stack)


@pytest.mark.parametrize("body, status", [
    ({"message": "bonjour"}, 400),
    ({"sender": None, "message": "bonjour"}, 400),
    ({"sender": "", "message": "bonjour"}, 400),
    ({"sender": "   ", "message": "bonjour"}, 400),
    ({"sender": ["a"], "message": "bonjour"}, 400),
    ({"sender": True, "message": "bonjour"}, 400),
    ({"sender": "x" * 256, "message": "bonjour"}, 400),
    ({"sender": "x" * 10_000, "message": "bonjour"}, 400),
    ({"sender": "abc\x00def", "message": "bonjour"}, 400),
    ({"sender": "SENDER", "message": {"text": "bonjour"}}, 400),
    ({"sender": "SENDER", "message": ["bonjour"]}, 400),
    ({"sender": "SENDER"}, 200),
    ({"sender": "SENDER", "message": None}, 200),
    ({"sender": "SENDER", "message": 12345}, 200),
    ({"sender": 4242, "message": "bonjour"}, 200),
    ({"sender": "SENDER", "message": "bonjour", "metadata": "pas un objet"}, 200),
    ({"sender": "SENDER", "message": "bonjour", "metadata": {"x": "y" * 20_000}}, 200),
    ({"sender": "SENDER", "message": "bonjour", "input_channel": "telegram"}, 200),
    ({"sender": "SENDER", "message": "bonjour", "message_id": {"no": 1}}, 200),
    ({"sender": "y" * 255, "message": "bonjour"}, 200),
], ids=lambda value: str(value)[:40] if not isinstance(value, int) else str(value))
def test_missing_and_invalid_fields(stack, sender, body, status):
    body = {key: (sender if value == "SENDER" else value) for key, value in body.items()}
    if body.get("sender") == 4242:
        body["sender"] = int(uuid.uuid4().int % 10**12)
    response = post(stack, body)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer and all(m["text"] for m in answer)
    assert_still_serving(stack)


SLASH_COMMANDS = ["/restart", "/session_start", "/back", "/handoff_human", '/greet{"x": 1}', "//restart",
                  "  /restart", "/", "/action_restart", "/nlu_fallback", '/faq_piscine{"a":"b"}']


@pytest.mark.parametrize("command", SLASH_COMMANDS)
def test_slash_commands_are_plain_text(stack, sender, store, command):
    replies = say(stack, sender, command)
    assert replies and all(r.strip() for r in replies)
    recorded = citizen_lines(store, sender)
    assert all(not line.startswith("/") for line in recorded)


def test_restart_typed_during_a_handoff_does_not_unpause_it(stack, sender, store):
    say(stack, sender, "je veux parler à une vraie personne svp")
    [ticket] = store.for_conversation(sender)
    assert ticket.kind == "handoff"
    for command in ("/restart", "/session_start", "/back", "/restart"):
        assert say(stack, sender, command) == []
    assert say(stack, sender, "la piscine est ouverte le dimanche ?") == []  # still with the CM
    assert store.open_handoff(sender) is not None
    recorded = [m.text for m in store.transcript(ticket.id) if m.author == "citizen"]
    assert recorded[-5:] == ["restart", "session_start", "back", "restart", "la piscine est ouverte le dimanche ?"]


def test_retried_message_id_is_handled_once(stack, sender, store):
    say(stack, sender, "le lampadaire ne s'allume plus", message_id="m1")
    first = say(stack, sender, "devant le 9 rue des Acacias", message_id="m2")
    again = say(stack, sender, "devant le 9 rue des Acacias", message_id="m2")
    assert first == again and any("T-" in r for r in first)
    assert len(store.for_conversation(sender)) == 1
    assert citizen_lines(store, sender) == ["le lampadaire ne s'allume plus", "devant le 9 rue des Acacias"]
    # the same id from another conversation is another message (ids are namespaced by conversation)
    other = say(stack, f"{sender}-b", "devant le 9 rue des Acacias", message_id="m2")
    assert other != first


def test_flood_from_one_sender_gets_one_polite_notice_and_not_fifty_tickets(stack, sender, store):
    answers = [say(stack, sender, f"le lampadaire devant le {n} rue des Lilas est cassé") for n in range(1, 51)]
    notices = [a for a in answers if any("très vite" in r for r in a)]
    # One notice per episode (a token refilled while the test runs may start a second episode).
    assert 1 <= len(notices) <= 3
    assert sum(1 for a in answers if a == []) >= 30  # after the notice: recorded, not answered again
    assert len(citizen_lines(store, sender)) == 50  # nothing lost
    assert len(store.for_conversation(sender)) <= 15  # at most the burst (+ refills) reach the assistant
    assert_still_serving(stack)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(text=st.text(max_size=300))
def test_any_text_is_answered_or_recorded(stack, text):
    sender = f"prop-{uuid.uuid4().hex[:10]}"
    response = post(stack, {"sender": sender, "message": text})
    assert response.status_code == 200
    answer = response.json()
    recorded = [m for m in TicketStore(stack.database_url).conversation_messages(sender) if m.author == "citizen"]
    assert any(m.get("text") for m in answer) or recorded
