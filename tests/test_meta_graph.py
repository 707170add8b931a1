"""The Graph API client (``bot.channels.meta.graph``) against the fake Graph API (``tests/fake_graph.py``)."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bot.channels.meta.graph import GraphClient, GraphError, classify
from fake_graph import DAY, FakeGraph

HOUR = 3600


@pytest.fixture
def fake():
    server = FakeGraph()
    yield server
    server.close()


@pytest.fixture
def client(fake):
    return GraphClient("page-token", base_url=fake.base_url, backoff=0.01, timeout=5)


def ago_ms(seconds: float) -> int:
    return int((time.time() - seconds) * 1000)


def meta_body(code, subcode=None, message="boom"):
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Abc"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


# --- sending ------------------------------------------------------------------------------------------------
def test_text_goes_in_meta_shape_with_the_token(fake, client):
    fake.message_event("psid-1", "Bonjour")
    answer = client.send_message("psid-1", "Bonjour, que puis-je faire pour vous ?")
    assert answer["recipient_id"] == "psid-1" and answer["message_id"].startswith("m_")
    (call,) = fake.messages("psid-1")
    assert call["method"] == "POST" and call["path"] == "/v21.0/me/messages"
    assert call["params"] == {"access_token": "page-token"} and call["token"] == "page-token"
    assert call["json"] == {"recipient": {"id": "psid-1"}, "messaging_type": "RESPONSE",
                            "message": {"text": "Bonjour, que puis-je faire pour vous ?"}}
    assert fake.texts("psid-1") == ["Bonjour, que puis-je faire pour vous ?"]


def test_quick_replies_are_cut_to_meta_limits(fake, client):
    fake.message_event("psid-1", "Bonjour")
    replies = [{"title": f"Choix numéro {i} très long", "payload": f"/choose{{\"n\": {i}}}"} for i in range(15)]
    client.send_message("psid-1", "Que voulez-vous ?", quick_replies=replies)
    sent = fake.messages("psid-1")[0]["json"]["message"]["quick_replies"]
    assert len(sent) == 13
    assert sent[0] == {"content_type": "text", "title": "Choix numéro 0 très ", "payload": '/choose{"n": 0}'}
    assert all(len(reply["title"]) <= 20 for reply in sent)


def test_the_fake_refuses_too_many_quick_replies_or_long_titles(fake):
    fake.message_event("psid-1", "Bonjour")
    url = f"{fake.base_url}/v21.0/me/messages"
    body = {"recipient": {"id": "psid-1"}, "message": {"text": "?", "quick_replies": [
        {"content_type": "text", "title": "t", "payload": "p"}] * 14}}
    answer = requests.post(url, params={"access_token": "page-token"}, json=body, timeout=5)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == 100
    body["message"]["quick_replies"] = [{"content_type": "text", "title": "x" * 21, "payload": "p"}]
    answer = requests.post(url, params={"access_token": "page-token"}, json=body, timeout=5)
    assert classify(answer.status_code, answer.json()).kind == "invalid"


def test_typing_on_is_a_sender_action_and_never_raises(fake, client):
    fake.message_event("psid-1", "Bonjour")
    client.typing_on("psid-1")
    assert fake.sender_actions("psid-1") == ["typing_on"]
    assert fake.messages("psid-1") == []  # a sender action is not a message
    fake.fail_next("temporary", times=5)
    client.typing_on("psid-1")  # one try, swallowed
    client.typing_on("never-seen")
    assert fake.sender_actions("psid-1") == ["typing_on"]
    assert len(fake.calls) == 3


# --- classification -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status, body, kind", [
    (400, meta_body(4, message="(#4) Application request limit reached"), "rate_limit"),
    (400, meta_body(17), "rate_limit"),
    (400, meta_body(32), "rate_limit"),
    (400, meta_body(613), "rate_limit"),
    (400, meta_body(80006), "rate_limit"),
    (429, None, "rate_limit"),
    (400, meta_body(190, 460), "token"),
    (400, meta_body(190, 467), "token"),
    (400, meta_body(102), "token"),
    (400, meta_body(10, 2018278), "window"),
    (400, meta_body(100, 2018278), "window"),
    (400, meta_body(10, message="(#10) This message is sent outside of allowed window."), "window"),
    (400, meta_body(551, 1545041), "unreachable"),
    (400, meta_body(100, 2018001, "(#100) No matching user found"), "unreachable"),
    (400, meta_body(10, 2018108), "unreachable"),
    (403, meta_body(10), "permission"),
    (403, meta_body(200), "permission"),
    (403, meta_body(230), "permission"),
    (500, meta_body(1), "temporary"),
    (400, meta_body(2), "temporary"),
    (502, None, "temporary"),
    (503, {"unexpected": "html?"}, "temporary"),
    (400, meta_body(100, message="(#100) Invalid parameter"), "invalid"),
    (400, meta_body(10, 2018292), "invalid"),
    (400, None, "invalid"),
    (None, None, "network"),
])
def test_classify(status, body, kind):
    error = classify(status, body)
    assert isinstance(error, GraphError)
    assert error.kind == kind and error.status == status
    assert error.retryable == (kind in ("rate_limit", "temporary", "network"))
    text = error.staff_text()
    assert text.endswith(".") and "\n" not in text and not any(word in text for word in ("error", "retry", "token"))
    if body and "error" in body:
        assert error.code == body["error"]["code"] and error.subcode == body["error"].get("error_subcode")
        assert error.message == body["error"]["message"]


def test_staff_texts_say_what_to_do():
    assert classify(400, meta_body(4)).staff_text() == (
        "Meta limite le nombre d'envois : nouvel essai automatique dans quelques minutes.")
    assert classify(400, meta_body(190, 463)).staff_text() == (
        "Le jeton de la page a expiré ou a été révoqué : un administrateur doit en créer un nouveau "
        "(README, « Facebook et Instagram »).")
    assert classify(400, meta_body(10, 2018278)).staff_text() == (
        "Hors de la fenêtre de 24 h de Meta : le citoyen doit d'abord réécrire à la page.")
    assert classify(400, meta_body(551, 1545041)).staff_text() == "Cette personne n'est plus joignable sur ce canal."
    assert classify(403, meta_body(200)).staff_text().startswith("La page n'a pas la permission nécessaire (")
    assert "200" in classify(403, meta_body(200)).staff_text()
    assert "réponse privée" in classify(400, meta_body(10, 2018292)).staff_text()


def test_retry_after_comes_from_the_headers():
    assert classify(429, None, {"retry-after": "7"}).retry_after == 7.0
    assert classify(400, meta_body(4)).retry_after is None
    usage = json.dumps({"1000": [{"type": "pages", "call_count": 100, "estimated_time_to_regain_access": 2}]})
    assert classify(400, meta_body(80001), {"X-Business-Use-Case-Usage": usage}).retry_after == 120.0
    assert classify(400, meta_body(100), {"Retry-After": "7"}).retry_after is None  # only for rate limits


@pytest.mark.parametrize("kind, status, code, subcode", [
    ("rate_limit", 400, 4, None),
    ("token", 400, 190, 463),
    ("window", 400, 10, 2018278),
    ("unreachable", 400, 551, 1545041),
    ("temporary", 500, 2, None),
    ("permission", 403, 200, None),
])
def test_meta_errors_from_the_fake_are_classified(fake, kind, status, code, subcode):
    fake.message_event("psid-1", "Bonjour")
    client = GraphClient("page-token", base_url=fake.base_url, tries=1)
    fake.fail_next(kind, path_contains="/me/messages")
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-1", "Votre demande est enregistrée.")
    error = caught.value
    assert (error.kind, error.status, error.code, error.subcode) == (kind, status, code, subcode)
    assert error.message == fake.calls[-1]["response"]["error"]["message"]
    assert fake.calls[-1]["response"]["error"]["type"] == "OAuthException"
    assert error.staff_text()
    client.send_message("psid-1", "Votre demande est enregistrée.")  # the failure was for the next call only
    assert fake.texts("psid-1") == ["Votre demande est enregistrée."]


# --- retries ----------------------------------------------------------------------------------------------------
def test_rate_limit_is_retried_then_succeeds(fake, client):
    fake.message_event("psid-1", "Bonjour")
    fake.fail_next("rate_limit", times=2)
    assert client.send_message("psid-1", "Réponse")["recipient_id"] == "psid-1"
    assert [call["status"] for call in fake.calls] == [400, 400, 200]
    assert fake.texts("psid-1") == ["Réponse"]
    assert len(fake.messages("psid-1", include_failed=True)) == 3


def test_rate_limit_gives_up_after_tries(fake):
    fake.message_event("psid-1", "Bonjour")
    client = GraphClient("page-token", base_url=fake.base_url, tries=3, backoff=0.01)
    fake.fail_next("rate_limit", times=10)
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-1", "Réponse")
    assert caught.value.kind == "rate_limit" and caught.value.code == 4
    assert len(fake.calls) == 3


def test_waits_grow_and_are_capped(fake, monkeypatch):
    waits = []
    monkeypatch.setattr("bot.channels.meta.graph.time.sleep", waits.append)
    fake.message_event("psid-1", "Bonjour")
    client = GraphClient("page-token", base_url=fake.base_url, tries=4, backoff=1.0, max_wait=3.0)
    fake.fail_next("temporary", times=3)
    client.send_message("psid-1", "Réponse")
    assert waits == [1.0, 2.0, 3.0]


def test_token_error_is_not_retried(fake, client):
    fake.message_event("psid-1", "Bonjour")
    fake.fail_next("token", times=5)
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-1", "Réponse")
    assert caught.value.kind == "token" and not caught.value.retryable
    assert len(fake.calls) == 1


def test_a_wrong_token_is_refused_by_the_fake(fake):
    fake.message_event("psid-1", "Bonjour")
    with pytest.raises(GraphError) as caught:
        GraphClient("old-token", base_url=fake.base_url, backoff=0.01).send_message("psid-1", "Réponse")
    assert caught.value.kind == "token" and caught.value.code == 190
    assert fake.calls[-1]["token"] == "old-token" and len(fake.calls) == 1


def test_a_dropped_connection_is_retried(fake, client):
    fake.message_event("psid-1", "Bonjour")
    fake.fail_next("network")
    assert client.send_message("psid-1", "Réponse")["recipient_id"] == "psid-1"
    assert fake.texts("psid-1") == ["Réponse"]


def test_network_error_on_a_closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = GraphClient("secret-page-token", base_url=f"http://127.0.0.1:{port}", tries=2, backoff=0.01, timeout=2)
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-1", "Réponse")
    error = caught.value
    assert error.kind == "network" and error.status is None and error.retryable
    assert error.staff_text().startswith("Meta est injoignable")
    assert "secret-page-token" not in str(error) and "secret-page-token" not in repr(error.args)
    assert error.__cause__ is None and error.__suppress_context__  # requests' message (with the URL) stays out


def test_logs_carry_neither_texts_nor_token(fake, caplog):
    fake.message_event("psid-1", "Bonjour")
    client = GraphClient("page-token", base_url=fake.base_url, tries=2, backoff=0.01)
    fake.fail_next("rate_limit", times=2)
    with caplog.at_level(logging.DEBUG, logger="bot.channels.meta.graph"):
        with pytest.raises(GraphError):
            client.send_message("psid-1", "Mon adresse est 12 rue des Lilas")
    assert "rate_limit" in caplog.text and "code 4" in caplog.text
    assert "Lilas" not in caplog.text and "page-token" not in caplog.text


# --- the messaging window ---------------------------------------------------------------------------------------
def test_24_hour_window(fake, client):
    fake.message_event("psid-1", "Bonjour", timestamp_ms=ago_ms(23 * HOUR))
    client.send_message("psid-1", "Dans la fenêtre")
    fake.message_event("psid-2", "Bonjour", timestamp_ms=ago_ms(25 * HOUR))
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-2", "Trop tard")
    assert caught.value.kind == "window" and caught.value.subcode == 2018278 and len(fake.calls) == 2
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-2", "Mise à jour", messaging_type="UPDATE")
    assert caught.value.kind == "window"
    fake.message_event("psid-2", "Je réécris")  # the latest message reopens the window
    client.send_message("psid-2", "Merci")
    assert fake.texts("psid-2") == ["Merci"]


def test_human_agent_tag_gives_7_days(fake, client):
    fake.message_event("psid-1", "Bonjour", timestamp_ms=ago_ms(3 * DAY))
    with pytest.raises(GraphError):
        client.send_message("psid-1", "Réponse de l'agent")
    client.send_message("psid-1", "Réponse de l'agent", messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
    assert fake.messages("psid-1")[0]["json"]["tag"] == "HUMAN_AGENT"
    fake.clock = lambda: time.time() + 5 * DAY  # eight days after the message
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-1", "Trop tard", messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
    assert caught.value.kind == "window"


def test_other_tags_and_unknown_recipients_are_refused(fake, client):
    fake.message_event("psid-1", "Bonjour")
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-1", "Info", messaging_type="MESSAGE_TAG", tag="ACCOUNT_UPDATE")
    assert caught.value.kind == "invalid"
    with pytest.raises(GraphError) as caught:
        client.send_message("stranger", "Bonjour")
    assert (caught.value.kind, caught.value.code, caught.value.subcode) == ("unreachable", 100, 2018001)


def test_a_postback_opens_the_window(fake, client):
    fake.postback_event("psid-1", "GET_STARTED")
    client.send_message("psid-1", "Bienvenue")
    assert fake.texts("psid-1") == ["Bienvenue"]


# --- text limits ------------------------------------------------------------------------------------------------
def test_messenger_2000_characters(fake, client):
    fake.message_event("psid-1", "Bonjour")
    client.send_message("psid-1", "é" * 2000)
    with pytest.raises(GraphError) as caught:
        client.send_message("psid-1", "a" * 2001)
    assert caught.value.kind == "invalid" and caught.value.code == 100 and "2000" in caught.value.message


def test_instagram_1000_limit(fake, client):
    fake.message_event("ig-psid-1", "Bonjour", platform="instagram")
    client.send_message("ig-psid-1", "a" * 1000)
    with pytest.raises(GraphError) as caught:
        client.send_message("ig-psid-1", "a" * 1001)
    assert caught.value.kind == "invalid" and "1000" in caught.value.message
    with pytest.raises(GraphError):  # Meta counts UTF-8 bytes on Instagram: "é" is two
        client.send_message("ig-psid-1", "é" * 600)
    assert fake.texts("ig-psid-1") == ["a" * 1000]


# --- comments -----------------------------------------------------------------------------------------------------
def test_one_private_reply_per_comment(fake, client):
    fake.feed_comment("555_1", "1000_555", "Quand ouvre la piscine ?", from_id="u-42")
    answer = client.private_reply("555_1", "Bonjour, la piscine ouvre à 9 h.")
    assert answer["recipient_id"] == "psid-u-42" and answer["message_id"].startswith("m_")
    assert fake.messages("555_1")[0]["json"] == {"recipient": {"comment_id": "555_1"},
                                                "message": {"text": "Bonjour, la piscine ouvre à 9 h."}}
    with pytest.raises(GraphError) as caught:
        client.private_reply("555_1", "Encore moi")
    error = caught.value
    assert (error.kind, error.code, error.subcode) == ("invalid", 10, 2018292) and not error.retryable
    assert "réponse privée" in error.staff_text()
    assert [reply["message"] for reply in fake.private_replies("555_1")] == ["Bonjour, la piscine ouvre à 9 h."]
    with pytest.raises(GraphError) as caught:  # a private reply opens no window
        client.send_message("psid-u-42", "Autre chose ?")
    assert caught.value.kind == "window"


def test_private_reply_within_7_days_on_instagram(fake, client):
    fake.psid_for_commenter["ig-u-7"] = "igsid-7"
    fake.instagram_comment("1790_1", "1789_9", "Horaires ?", from_id="ig-u-7")
    assert client.private_reply("1790_1", "Bonjour !")["recipient_id"] == "igsid-7"
    assert fake.private_replies()[0]["platform"] == "instagram"
    fake.instagram_comment("1790_2", "1789_9", "Et le marché ?", created_time=int(time.time() - 8 * DAY))
    with pytest.raises(GraphError) as caught:
        client.private_reply("1790_2", "Bonjour !")
    assert caught.value.kind == "window"
    with pytest.raises(GraphError) as caught:
        client.private_reply("unknown-comment", "Bonjour !")
    assert caught.value.kind == "invalid"


def test_reply_to_comment_on_both_platforms(fake, client):
    fake.feed_comment("555_1", "1000_555", "Merci la mairie")
    fake.instagram_comment("1790_1", "1789_9", "Super !")
    assert client.reply_to_comment("facebook", "555_1", "Merci à vous !") == "555_1_r1"
    assert client.reply_to_comment("facebook", "555_1", "Bonne journée") == "555_1_r2"
    assert client.reply_to_comment("instagram", "1790_1", "Merci !") == "1790_1_r1"
    assert [call["path"] for call in fake.calls] == [
        "/v21.0/555_1/comments", "/v21.0/555_1/comments", "/v21.0/1790_1/replies"]
    assert fake.calls[0]["json"] == {"message": "Merci à vous !"}
    assert fake.comment_replies("1790_1") == [
        {"comment_id": "1790_1", "platform": "instagram", "message": "Merci !", "id": "1790_1_r1"}]
    assert len(fake.comment_replies()) == 3
    with pytest.raises(GraphError):  # an Instagram comment has no /comments edge here
        client.reply_to_comment("facebook", "1790_1", "Merci")
    with pytest.raises(ValueError):
        client.reply_to_comment("tiktok", "1790_1", "Merci")


# --- webhooks built by the fake -----------------------------------------------------------------------------------
def test_deliver_signs_the_raw_body_like_meta(fake):
    received = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/webhook"
        payload = fake.batch([[fake.message_event("psid-1", "Où est la mairie ? https://x.fr/a")],
                              [fake.echo_event("psid-1"), fake.read_event("psid-1"), fake.delivery_event("psid-1")]])
        assert fake.deliver(url, payload).status_code == 200
        fake.deliver(url, payload, signature="sha256=" + "0" * 64)
    finally:
        server.shutdown()
        server.server_close()
    (headers, body), (forged_headers, _) = received
    assert headers["X-Hub-Signature-256"] == "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert forged_headers["X-Hub-Signature-256"] == "sha256=" + "0" * 64
    assert b"\\/" in body and "é".encode() not in body  # escaped like Meta's
    assert json.loads(body) == payload
    assert payload["object"] == "page" and [len(entry["messaging"]) for entry in payload["entry"]] == [1, 3]
    assert payload["entry"][0]["id"] == "1000"


def test_comment_payload_shapes(fake):
    feed = fake.feed_comment("555_1", "1000_555", "Bravo", created_time=1_700_000_000)
    value = feed["entry"][0]["changes"][0]["value"]
    assert feed["object"] == "page" and feed["entry"][0]["changes"][0]["field"] == "feed"
    assert value["from"] == {"id": "u-1", "name": "Marie Dupont"} and value["parent_id"] == "1000_555"
    assert (value["item"], value["verb"], value["created_time"]) == ("comment", "add", 1_700_000_000)
    assert value["post"]["permalink_url"].startswith("https://www.facebook.com/")
    ig = fake.instagram_comment("1790_1", "1789_9", "Top", parent_id="1790_0")
    ig_value = ig["entry"][0]["changes"][0]["value"]
    assert ig["object"] == "instagram" and ig["entry"][0]["id"] == "1780000"
    assert ig_value == {"from": {"id": "ig-u-1", "username": "marie.d"},
                        "media": {"id": "1789_9", "media_product_type": "FEED"}, "id": "1790_1", "text": "Top",
                        "parent_id": "1790_0"}
    event = fake.message_event("ig-1", "Salut", platform="instagram", quick_reply="YES")
    assert event["recipient"] == {"id": "1780000"} and event["message"]["quick_reply"] == {"payload": "YES"}
    assert fake.batch([event], platform="instagram")["object"] == "instagram"
