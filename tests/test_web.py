"""The staff web interface through Flask's test client (SQLite, no Rasa): login, CSRF, queue,
the ticket forms (checked in the database), permissions, escaping, session expiry, statistics."""
from __future__ import annotations

import datetime as dt
import html as htmllib
import os
import re
import pytz
import stat
import time

import pytest
from sqlalchemy import select

from bot.accounts import Accounts
from bot.models import Outbox, StatusChange, Ticket
from bot.staff import StaffDesk, load_canned_answers
from bot.tickets import NewTicket
from bot.web import create_app, load_secret_key

PASSWORD = "motdepasse-solide-42"
XSS = "<script>alert(1)</script>"


@pytest.fixture
def resumed() -> list[str]:
    return []


@pytest.fixture
def desk(store, assistant, resumed):
    return StaffDesk(store, assistant.profile, assistant.hours, assistant.replies, resume_conversation=resumed.append)


@pytest.fixture
def accounts(store, profile):
    accounts = Accounts(store, profile)
    accounts.create("camille", PASSWORD, "cm", display_name="Camille Martin")
    accounts.create("dominique", PASSWORD, "cm", display_name="Dominique")
    accounts.create("victor", PASSWORD, "head", "voirie", display_name="Victor (voirie)")
    return accounts


@pytest.fixture
def app(desk, accounts):
    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key="clé de test", session_minutes=60)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


def make_ticket(store, conversation: str, *, kind: str = "handoff", queue: str = "cm", urgent: bool = False,
                reason: str | None = "human_request", summary: str = "Demande à parler à quelqu'un",
                created: dt.datetime | None = None, citizen_text: str | None = None) -> Ticket:
    if citizen_text is not None:
        store.add_message(conversation, "guichet", "citizen", citizen_text)
    ticket, _ = store.create(NewTicket(kind=kind, queue=queue, conversation_id=conversation, channel="guichet",
                                       summary=summary, urgent=urgent,
                                       handoff_reason=reason if kind == "handoff" else None),
                             now=created or dt.datetime.now(dt.timezone.utc))
    return ticket


def csrf(client) -> str:
    with client.session_transaction() as session:
        return session["csrf_token"]


def login(client, username: str = "camille", password: str = PASSWORD):
    client.get("/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf(client)})


def post(client, url: str, **data):
    return client.post(url, data={"csrf_token": csrf(client), **data})


def page(response) -> str:
    return response.get_data(as_text=True)


def shown(response) -> str:
    """The page's text as a reader sees it (entities decoded)."""
    return htmllib.unescape(page(response))


def visible(response) -> str:
    """The page's text without its tags, spaces collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", shown(response)).split())


def outbox(store, conversation: str) -> list[str]:
    with store.session() as session:
        return [o.text for o in session.execute(select(Outbox).where(Outbox.conversation_id == conversation)
                                                .order_by(Outbox.id)).scalars()]


def audit(store, ticket_id: int) -> list[StatusChange]:
    with store.session() as session:
        return list(session.execute(select(StatusChange).where(StatusChange.ticket_id == ticket_id)
                                    .order_by(StatusChange.id)).scalars())


# --- login, logout, session ----------------------------------------------------------------------

def test_login_page_is_french_and_readable_on_a_phone(client):
    response = client.get("/login")
    html = page(response)
    assert response.status_code == 200
    assert '<html lang="fr">' in html and 'name="viewport"' in html
    assert "Identifiant" in html and "Mot de passe" in html and 'name="csrf_token"' in html
    assert "<script" not in html  # no JavaScript at all
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no external asset


def test_login_ok_then_logout(client):
    response = login(client)
    assert response.status_code == 302 and response.headers["Location"].endswith("/queue")
    html = page(client.get("/queue"))
    assert "Bonjour Camille Martin" in html and "Transferts et tickets à orienter" in html
    response = post(client, "/logout")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/queue").status_code == 302


@pytest.mark.parametrize("username, password", [("camille", "mauvais-mot-de-passe"), ("inconnu", PASSWORD)])
def test_failed_login_shows_one_generic_error(client, username, password):
    response = login(client, username, password)
    html = page(response)
    assert response.status_code == 401
    assert "Identifiant ou mot de passe incorrect" in html
    with client.session_transaction() as session:
        assert "user" not in session
    assert client.get("/queue").status_code == 302


def test_repeated_failures_lock_the_account_with_the_same_message(client):
    for _ in range(5):
        assert login(client, "camille", "pas-le-bon-mot").status_code == 401
    response = login(client)  # right password, but locked now
    assert response.status_code == 401 and "Identifiant ou mot de passe incorrect" in page(response)


def test_logged_out_users_are_sent_to_the_login_page(client, store):
    ticket = make_ticket(store, "conv-out")
    for url in ("/", "/queue", f"/tickets/{ticket.reference}", "/stats", "/stats.csv", "/stats/handoff_reasons.png"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert "/login" in response.headers["Location"], url
    response = client.get(f"/tickets/{ticket.reference}")
    assert response.headers["Location"].endswith(f"/login?next=/tickets/{ticket.reference}")
    # ... and come back where they were going after logging in.
    client.get("/login")
    response = client.post("/login", data={"username": "camille", "password": PASSWORD, "csrf_token": csrf(client),
                                           "next": f"/tickets/{ticket.reference}"})
    assert response.headers["Location"].endswith(f"/tickets/{ticket.reference}")


def test_login_never_redirects_off_site(client):
    client.get("/login")
    response = client.post("/login", data={"username": "camille", "password": PASSWORD, "csrf_token": csrf(client),
                                           "next": "//evil.example/"})
    assert response.headers["Location"].endswith("/queue")


def test_cookie_is_httponly_and_samesite_lax(client):
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Expires=" in cookie  # a permanent session with its lifetime


def test_session_expires_after_session_minutes(app, client):
    clock = [1_000_000.0]
    app.config["GUICHET_CLOCK"] = lambda: clock[0]
    login(client)
    assert app.permanent_session_lifetime == dt.timedelta(minutes=60)
    clock[0] += 59 * 60
    assert client.get("/queue").status_code == 200
    clock[0] += 2 * 60  # 61 minutes after the login: over, however active the user was
    response = client.get("/queue")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert "Votre session a expiré" in page(client.get("/login"))
    assert client.get("/queue").status_code == 302


def test_tiny_session_lifetime(desk, accounts):
    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key="x" * 32, session_minutes=0.001)
    client = app.test_client()
    login(client)
    time.sleep(0.1)  # a 60 ms session
    response = client.get("/queue")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_csrf_token_is_required_on_every_post(client, store):
    ticket = make_ticket(store, "conv-csrf")
    login(client)
    for url, data in [(f"/tickets/{ticket.reference}/note", {"note": "sans jeton"}),
                      (f"/tickets/{ticket.reference}/take", {}),
                      (f"/tickets/{ticket.reference}/reply", {"message": "sans jeton"}),
                      ("/logout", {})]:
        response = client.post(url, data=data)
        assert response.status_code == 400, url
        assert "jeton de sécurité" in page(response)
        response = client.post(url, data={**data, "csrf_token": "faux-jeton"})
        assert response.status_code == 400, url
    assert [m.text for m in store.transcript(ticket.id) if m.author == "staff"] == []
    assert store.get(ticket.id).assigned_to is None
    assert outbox(store, "conv-csrf") == []
    # The login form is protected too (login CSRF).
    client2 = client.application.test_client()
    assert client2.post("/login", data={"username": "camille", "password": PASSWORD}).status_code == 400


def test_security_headers(client):
    login(client)
    response = client.get("/queue")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy  # our own files only, never inline
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


# --- the queue -----------------------------------------------------------------------------------

def test_cm_queue_lists_urgent_first_then_oldest(client, store):
    now = dt.datetime.now(dt.timezone.utc)
    older = make_ticket(store, "conv-older", created=now - dt.timedelta(days=3), summary="Je veux parler à un agent")
    urgent = make_ticket(store, "conv-urgent", urgent=True, reason="distress_danger", created=now - dt.timedelta(hours=1),
                         summary="ça sent le gaz dans l'immeuble")
    unrouted = make_ticket(store, "conv-unrouted", kind="request", queue="cm", created=now - dt.timedelta(days=2),
                           summary="Une demande que le bot n'a pas su orienter")
    service = make_ticket(store, "conv-voirie", kind="report", queue="voirie", summary="lampadaire cassé")
    login(client)
    html = page(client.get("/queue"))
    assert 'http-equiv="refresh"' not in html  # it erased what the CM was typing (queue.js instead)
    assert '<script src="/static/queue.js" defer></script>' in html and 'id="actualiser"' in html
    assert html.index(urgent.reference) < html.index(older.reference) < html.index(unrouted.reference)
    assert service.reference not in html
    assert "URGENT" in html and "URGENCE : danger" in html and "demande à parler à une personne" in html
    assert "à orienter vers un service" in html and "ça sent le gaz" in html
    assert re.search(r"attente : <strong>(\d+ h \d\d|\d+ min)</strong>", html)


def test_queue_shows_who_holds_a_ticket(client, desk, store):
    ticket = make_ticket(store, "conv-held")
    login(client)
    post(client, f"/tickets/{ticket.reference}/take")
    assert "pris en charge par <strong>Camille Martin (CM)</strong>" in page(client.get("/queue"))


def test_queue_cards_show_the_first_and_latest_messages_and_take_from_the_card(client, store):
    store.add_message("conv-cards", "guichet", "citizen", "je veux parler à quelqu'un")
    ticket = make_ticket(store, "conv-cards")
    store.add_message("conv-cards", "guichet", "citizen", "toujours personne ? c'est pour ma facture", ticket_id=ticket.id)
    login(client)
    html = shown(client.get("/queue"))
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "Premier message : je veux parler à quelqu'un" in text
    assert "Dernier message : toujours personne ? c'est pour ma facture" in text
    assert f'aria-label="Prendre le ticket {ticket.reference}"' in html
    response = post(client, f"/tickets/{ticket.reference}/take")
    assert response.status_code == 302 and store.get(ticket.id).assigned_to == "camille"
    assert f'aria-label="Prendre le ticket {ticket.reference}"' not in page(client.get("/queue"))


def test_a_ticket_sent_back_says_by_which_service_and_why(client, store, desk, accounts):
    ticket = make_ticket(store, "conv-back", kind="report", queue="voirie", summary="nid de poule sur la D61")
    desk.set_status(accounts.get("victor"), ticket.reference, "not_ours",
                    note="route départementale : c'est le département")
    login(client)
    html = shown(client.get("/queue"))
    card = html[html.index(ticket.reference):]
    assert "Renvoyé par le service Voirie et éclairage public : route départementale : c'est le département" in card


def test_the_cards_alone_change_signature_when_a_ticket_arrives(client, store):
    make_ticket(store, "conv-sig-1")
    login(client)
    first = client.get("/queue/cartes")
    assert first.status_code == 200 and first.headers["X-Queue-Count"] == "1"
    assert page(first).startswith("\n<div id=\"cartes\"") or '<div id="cartes"' in page(first)
    assert "<form class=\"search\"" not in page(first)  # never the search form: what is typed stays
    assert client.get("/queue/cartes").headers["X-Queue-Signature"] == first.headers["X-Queue-Signature"]
    make_ticket(store, "conv-sig-2")
    second = client.get("/queue/cartes")
    assert second.headers["X-Queue-Count"] == "2"
    assert second.headers["X-Queue-Signature"] != first.headers["X-Queue-Signature"]


def test_search_by_reference(client, store):
    ticket = make_ticket(store, "conv-search", kind="report", queue="voirie", summary="trou dans la chaussée")
    login(client)
    response = client.get("/recherche", query_string={"reference": ticket.reference.lower()})
    assert response.headers["Location"].endswith(f"/tickets/{ticket.reference}")
    response = client.get("/recherche", query_string={"reference": "T-2026-999999"}, follow_redirects=True)
    assert "Aucun ticket" in page(response)


# --- the ticket page and its forms ---------------------------------------------------------------

def test_ticket_page_shows_fields_transcript_and_forms(client, store, desk):
    ticket = make_ticket(store, "conv-page", citizen_text="je veux parler à quelqu'un de la mairie svp")
    store.add_message("conv-page", "guichet", "bot", "Je transmets à l'équipe.", ticket_id=ticket.id)
    login(client)
    html = page(client.get(f"/tickets/{ticket.reference}"))
    assert ticket.reference in html and "Transfert au community manager" in html
    assert "je veux parler à quelqu&#39;un de la mairie svp" in html and "Je transmets à l&#39;équipe." in html
    for action in ("take", "reply", "note", "route", "status", "close"):
        assert f'action="/tickets/{ticket.reference}/{action}"' in html, action
    assert html.count('name="csrf_token"') >= 7  # the six forms and the logout button
    for answer in load_canned_answers():
        assert f'<option value="{answer["key"]}">' in html
    assert 'type="date" id="scheduled_for"' not in html and 'name="duplicate_of"' in html  # no date for the CM
    assert "Voirie et éclairage public" in html  # the route form's services
    assert "Historique" in html and "création → <strong>Nouveau</strong>" in html


def test_take_then_someone_else_cannot(app, client, store):
    ticket = make_ticket(store, "conv-take")
    login(client)
    response = post(client, f"/tickets/{ticket.reference}/take")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/tickets/{ticket.reference}")
    assert store.get(ticket.id).assigned_to == "camille"
    assert "Vous avez pris en charge le ticket" in page(client.get(f"/tickets/{ticket.reference}"))

    other = app.test_client()
    login(other, "dominique")
    assert "suivi par <strong>Camille Martin (CM)</strong>" in page(other.get(f"/tickets/{ticket.reference}"))
    post(other, f"/tickets/{ticket.reference}/take")  # two people on the same ticket: one wins
    html = page(other.get(f"/tickets/{ticket.reference}"))
    assert "Ce ticket est déjà pris en charge par camille." in html and 'class="flash error"' in html
    assert store.get(ticket.id).assigned_to == "camille"


def test_reply_goes_to_the_transcript_and_the_outbox(client, store):
    ticket = make_ticket(store, "conv-reply")
    login(client)
    response = post(client, f"/tickets/{ticket.reference}/reply", message="Bonjour,\r\nje regarde votre demande.",
                    action="send")
    assert response.status_code == 302
    [message] = [m for m in store.transcript(ticket.id) if m.author == "staff"]
    assert message.text == "Bonjour,\nje regarde votre demande.\n— L'équipe Communication"
    assert message.private is False and message.author_name == "Camille Martin"
    assert outbox(store, "conv-reply") == [message.text]
    assert store.get(ticket.id).first_response_at is not None
    assert "Réponse envoyée au citoyen." in page(client.get(f"/tickets/{ticket.reference}"))


def test_canned_answer_fills_an_empty_message(client, store):
    ticket = make_ticket(store, "conv-canned")
    answer = load_canned_answers()[0]
    login(client)
    post(client, f"/tickets/{ticket.reference}/reply", message="  ", canned=answer["key"], action="send")
    assert outbox(store, "conv-canned") == [f"{answer['text']}\n— L'équipe Communication"]
    # A typed message wins over the list.
    post(client, f"/tickets/{ticket.reference}/reply", message="Mon texte.", canned=answer["key"], action="send")
    assert outbox(store, "conv-canned")[-1].startswith("Mon texte.")


def test_insert_canned_answer_prefills_the_text_box_without_sending(client, store):
    ticket = make_ticket(store, "conv-insert")
    answer = load_canned_answers()[1]
    login(client)
    response = post(client, f"/tickets/{ticket.reference}/reply", message="", canned=answer["key"], action="insert")
    assert response.status_code == 302 and f"reponse={answer['key']}" in response.headers["Location"]
    html = page(client.get(response.headers["Location"]))
    textarea = re.search(r'<textarea id="message"[^>]*>(.*?)</textarea>', html, re.DOTALL).group(1)
    assert textarea == answer["text"].replace("'", "&#39;")
    assert outbox(store, "conv-insert") == []


def test_empty_reply_is_refused_with_a_french_message(client, store):
    ticket = make_ticket(store, "conv-empty")
    login(client)
    post(client, f"/tickets/{ticket.reference}/reply", message="   ", canned="", action="send")
    assert "Le message est vide." in page(client.get(f"/tickets/{ticket.reference}"))
    assert outbox(store, "conv-empty") == []


def test_private_note_is_stored_private_marked_and_never_sent(client, store):
    ticket = make_ticket(store, "conv-note")
    login(client)
    post(client, f"/tickets/{ticket.reference}/note", note="Appeler le service voirie avant de répondre.")
    [note] = [m for m in store.transcript(ticket.id) if m.author == "staff"]
    assert note.private is True and note.text == "Appeler le service voirie avant de répondre."
    assert outbox(store, "conv-note") == []
    html = page(client.get(f"/tickets/{ticket.reference}"))
    assert '<li class="private">' in html and "Note privée" in html and "Appeler le service voirie" in html


def test_route_a_handoff_to_a_service(client, store, resumed):
    ticket = make_ticket(store, "conv-route", citizen_text="il y a un trou énorme rue Victor Hugo")
    login(client)
    post(client, f"/tickets/{ticket.reference}/take")
    response = post(client, f"/tickets/{ticket.reference}/route", service="voirie", kind="report")
    assert response.status_code == 302
    routed = store.get(ticket.id)
    assert (routed.queue, routed.kind, routed.status, routed.assigned_to) == ("voirie", "report", "new", None)
    assert resumed == ["conv-route"]  # the hand-off is over: the bot talks again
    assert "Voirie et éclairage public" in outbox(store, "conv-route")[-1]
    change = audit(store, ticket.id)[-1]
    assert (change.actor, change.new_status, change.note) == ("camille", "new", "orienté vers voirie")
    assert "Ticket orienté vers le service Voirie et éclairage public" in page(client.get(f"/tickets/{ticket.reference}"))
    assert ticket.reference not in page(client.get("/queue"))


def test_route_to_an_unknown_service_is_refused(client, store):
    ticket = make_ticket(store, "conv-route-ko")
    login(client)
    post(client, f"/tickets/{ticket.reference}/route", service="cantine", kind="request")
    assert "Service inconnu" in page(client.get(f"/tickets/{ticket.reference}"))
    assert store.get(ticket.id).queue == "cm"


def test_route_without_a_service_asks_for_one_by_its_name(client, store):
    ticket = make_ticket(store, "conv-route-empty")
    login(client)
    post(client, f"/tickets/{ticket.reference}/route", service="", kind="request")
    html = shown(client.get(f"/tickets/{ticket.reference}"))
    assert "Choisissez le service qui doit recevoir ce ticket" in html
    assert "Voirie et éclairage public (voirie)" in html and "Service inconnu" not in html
    assert store.get(ticket.id).queue == "cm"


def test_every_page_has_a_favicon(client):
    login_page = page(client.get("/login"))
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in login_page
    for url in ("/favicon.svg", "/favicon.ico"):  # no login needed: browsers ask before and after
        response = client.get(url)
        assert response.status_code == 200 and response.mimetype == "image/svg+xml"
        assert response.get_data().startswith(b"<svg") and "max-age" in response.headers["Cache-Control"]


def test_status_changes_with_date_duplicate_and_audit(client, store):
    ticket = make_ticket(store, "conv-status", kind="report", queue="voirie", summary="lampadaire cassé")
    original = make_ticket(store, "conv-original", kind="report", queue="voirie", summary="même lampadaire")
    login(client, "victor")
    url = f"/tickets/{ticket.reference}/status"
    post(client, url, status="in_progress", note="équipe prévenue")
    assert store.get(ticket.id).status == "in_progress"
    assert "en cours de traitement" in outbox(store, "conv-status")[-1]

    post(client, url, status="scheduled", scheduled_for="")
    assert "Indiquez une date d'intervention valide" in shown(client.get(f"/tickets/{ticket.reference}"))
    assert store.get(ticket.id).status == "in_progress"
    day = dt.date.today() + dt.timedelta(days=3)
    post(client, url, status="scheduled", scheduled_for=day.isoformat())
    updated = store.get(ticket.id)
    assert updated.status == "scheduled" and updated.scheduled_for is not None
    assert day.strftime("%d/%m/%Y") in outbox(store, "conv-status")[-1]

    post(client, url, status="duplicate", duplicate_of="T-2026-999999")
    assert "Indiquez la référence du ticket d'origine" in shown(client.get(f"/tickets/{ticket.reference}"))
    post(client, url, status="duplicate", duplicate_of=original.reference)
    assert store.get(ticket.id).duplicate_of_id == original.id
    assert original.reference in outbox(store, "conv-status")[-1]

    changes = [(c.old_status, c.new_status, c.actor, c.note) for c in audit(store, ticket.id)]
    assert changes == [(None, "new", "bot", None), ("new", "in_progress", "victor", "équipe prévenue"),
                       ("in_progress", "scheduled", "victor", None), ("scheduled", "duplicate", "victor", None)]
    html = page(client.get(f"/tickets/{ticket.reference}"))
    assert "En cours → <strong>Programmé</strong>" in html and "« équipe prévenue »" in html


def test_resolved_notifies_the_citizen(client, store):
    ticket = make_ticket(store, "conv-resolved", kind="report", queue="voirie", summary="lampadaire cassé")
    login(client, "victor")
    post(client, f"/tickets/{ticket.reference}/status", status="resolved")
    assert store.get(ticket.id).status == "resolved" and store.get(ticket.id).resolved_at is not None
    sent = outbox(store, "conv-resolved")
    assert "résolu" in sent[-2] and "Êtes-vous satisfait(e)" in sent[-1]  # then the one question
    assert "Statut changé : Résolu. Le citoyen est prévenu." in page(client.get(f"/tickets/{ticket.reference}"))


def test_close_a_handoff_gives_the_conversation_back(client, store, resumed):
    ticket = make_ticket(store, "conv-close")
    login(client)
    asked = post(client, f"/tickets/{ticket.reference}/close", note="échange terminé")
    assert asked.status_code == 302 and "cloture=1" in asked.headers["Location"]
    assert store.get(ticket.id).status != "closed" and resumed == []  # closing asks first
    confirm = shown(client.get(asked.headers["Location"]))
    assert f"Clôturer le ticket {ticket.reference} ?" in confirm and "Oui, clôturer" in confirm and "Annuler" in confirm
    assert 'name="note" value="échange terminé"' in confirm
    response = post(client, f"/tickets/{ticket.reference}/close", note="échange terminé", confirm="1")
    assert response.status_code == 302
    closed = store.get(ticket.id)
    assert closed.status == "closed" and closed.closed_at is not None
    assert resumed == ["conv-close"]
    change = audit(store, ticket.id)[-1]
    assert (change.new_status, change.actor, change.note) == ("closed", "camille", "échange terminé")
    html = page(client.get(f"/tickets/{ticket.reference}"))
    assert "La conversation est rendue à l&#39;assistant." in html
    assert f'action="/tickets/{ticket.reference}/status"' not in html  # nothing more to change
    assert ticket.reference not in page(client.get("/queue"))
    assert ticket.reference in page(client.get("/queue?tous=1"))


def test_close_reports_a_rasa_failure(desk, accounts, store):
    def unreachable(_conversation):
        raise ConnectionError("refused")

    desk.resume_conversation = unreachable
    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key="k" * 32)
    client = app.test_client()
    ticket = make_ticket(store, "conv-close-ko")
    login(client)
    post(client, f"/tickets/{ticket.reference}/close", confirm="1")
    html = page(client.get(f"/tickets/{ticket.reference}"))
    assert "la conversation n&#39;a pas pu être rendue au bot" in html and "Rendre la conversation" in html


# --- a service head sees their service only ------------------------------------------------------

def test_head_sees_only_their_service(client, store):
    voirie = make_ticket(store, "conv-h1", kind="report", queue="voirie", summary="lampadaire cassé")
    proprete = make_ticket(store, "conv-h2", kind="report", queue="proprete", summary="poubelle renversée")
    handoff = make_ticket(store, "conv-h3")
    login(client, "victor")
    html = page(client.get("/queue"))
    assert "Tickets du service Voirie et éclairage public" in html
    assert voirie.reference in html and proprete.reference not in html and handoff.reference not in html
    assert client.get(f"/tickets/{voirie.reference}").status_code == 200
    for other in (proprete, handoff):
        response = client.get(f"/tickets/{other.reference}")
        assert response.status_code == 404 and "Introuvable" in page(response)
        assert post(client, f"/tickets/{other.reference}/note", note="x").status_code == 404
        assert post(client, f"/tickets/{other.reference}/status", status="resolved").status_code == 404
    assert [m for m in store.transcript(proprete.id) if m.author == "staff"] == []
    assert store.get(proprete.id).status == "new"
    html = page(client.get(f"/tickets/{voirie.reference}"))
    assert f'action="/tickets/{voirie.reference}/route"' not in html  # only the CM routes
    post(client, f"/tickets/{voirie.reference}/route", service="proprete")
    assert "Seul le community manager oriente les tickets." in page(client.get(f"/tickets/{voirie.reference}"))
    assert client.get("/recherche", query_string={"reference": proprete.reference}).headers["Location"].endswith("/queue")


def test_head_sending_a_ticket_back_to_the_cm_lands_on_the_queue(client, store):
    ticket = make_ticket(store, "conv-back", kind="request", queue="voirie", summary="demande de subvention")
    login(client, "victor")
    response = post(client, f"/tickets/{ticket.reference}/status", status="not_ours")
    assert response.headers["Location"].endswith("/queue")
    assert store.get(ticket.id).queue == "cm"
    html = page(client.get("/queue"))
    assert "Le ticket est renvoyé au community manager." in html and ticket.reference not in html


def test_head_private_notes_only_on_visible_tickets(app, client, store):
    ticket = make_ticket(store, "conv-notes", kind="report", queue="proprete", summary="dépôt sauvage")
    store.add_message("conv-notes", "guichet", "staff", "note interne propreté", ticket_id=ticket.id, private=True)
    login(client, "victor")
    assert "note interne propreté" not in page(client.get(f"/tickets/{ticket.reference}"))
    cm = app.test_client()
    login(cm)
    assert "note interne propreté" in page(cm.get(f"/tickets/{ticket.reference}"))


# --- citizen text is text ------------------------------------------------------------------------

def test_citizen_html_is_escaped_everywhere(client, store):
    ticket = make_ticket(store, "conv-xss", summary=f"message {XSS}", citizen_text=XSS)
    with store.session() as session:
        session.get(Ticket, ticket.id).location = f'"><img src=x onerror=alert(2)> {XSS}'
        session.commit()
    login(client)
    for url in ("/queue", f"/tickets/{ticket.reference}"):
        html = page(client.get(url))
        assert "<script>" not in html and "<img src=x" not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
    # A note or reply typed by staff is shown as text too.
    post(client, f"/tickets/{ticket.reference}/note", note=XSS)
    html = page(client.get(f"/tickets/{ticket.reference}"))
    assert "<script>" not in html and html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3


# --- statistics ----------------------------------------------------------------------------------

def test_stats_page_csv_and_png_for_the_cm(client, store):
    make_ticket(store, "conv-stats", citizen_text="je veux parler à quelqu'un")
    make_ticket(store, "conv-stats2", kind="report", queue="voirie", summary="lampadaire", citizen_text="lampadaire")
    login(client)
    html = page(client.get("/stats"))
    assert "Statistiques de toute la commune" in html
    for name in ("messages_per_day", "tickets_per_service", "handoff_reasons"):
        assert f'src="/stats/{name}.png?jours=30"' in html
    assert "Voirie et éclairage public" in html and "Demande à parler à une personne" in html

    response = client.get("/stats.csv?jours=7")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    lines = page(response).splitlines()
    assert lines[0] == "metric,key,subkey,value"
    assert "conversations,total,,2" in lines and "handoffs_by_reason,human_request,,1" in lines

    response = client.get("/stats/tickets_per_service.png")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert client.get("/stats/nope.png").status_code == 404


def test_stats_are_reserved_to_the_cm(client):
    login(client, "victor")
    assert "Statistiques" not in page(client.get("/queue")).split("</nav>")[0]
    for url in ("/stats", "/stats.csv", "/stats/messages_per_day.png"):
        response = client.get(url)
        assert response.status_code == 403, url
    assert "réservées au community manager" in page(client.get("/stats"))


# --- configuration -------------------------------------------------------------------------------

def test_secret_key_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GUICHET_SECRET_KEY", "une-longue-clé-secrète-de-test-0123456789")
    assert load_secret_key(tmp_path) == "une-longue-clé-secrète-de-test-0123456789"
    assert not (tmp_path / "secret_key").exists()


def test_secret_key_generated_once_and_private(monkeypatch, tmp_path):
    monkeypatch.delenv("GUICHET_SECRET_KEY", raising=False)
    monkeypatch.setenv("GUICHET_VAR_DIR", str(tmp_path))
    first = load_secret_key()
    path = tmp_path / "secret_key"
    assert len(first) >= 32 and path.read_text().strip() == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret_key() == first  # kept across restarts


def test_default_app_uses_the_configured_database(monkeypatch, tmp_path, profile):
    from bot.assistant import get_assistant  # noqa: F401 - the default desk comes from it

    url = f"sqlite:///{tmp_path / 'default.db'}"
    monkeypatch.setenv("GUICHET_DATABASE_URL", url)
    monkeypatch.setenv("GUICHET_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("GUICHET_SECRET_KEY", raising=False)
    from bot.tickets import TicketStore

    Accounts(TicketStore(url), profile).create("camille", PASSWORD, "cm")
    app = create_app()
    client = app.test_client()
    assert login(client).headers["Location"].endswith("/queue")
    assert client.get("/queue").status_code == 200
    assert (tmp_path / "secret_key").exists()


def test_every_staff_page_has_a_skip_link_to_its_content(client, store):
    assert '<a class="skip" href="#contenu">Aller au contenu</a>' in page(client.get("/login"))
    ticket = make_ticket(store, "conv-skip")
    login(client)
    for url in ("/queue", f"/tickets/{ticket.reference}", "/stats"):
        html = page(client.get(url))
        assert '<a class="skip" href="#contenu">Aller au contenu</a>' in html and '<main id="contenu"' in html, url
    assert 'tabindex="0" role="region" aria-label="Tickets par file et par statut' in page(client.get("/stats"))


def test_ticket_page_before_take_puts_the_take_button_first(client, store):
    ticket = make_ticket(store, "conv-state", citizen_text="je veux parler à quelqu'un")
    login(client)
    html = page(client.get(f"/tickets/{ticket.reference}"))
    take = html.index(f'action="/tickets/{ticket.reference}/take"')
    assert take < html.index('aria-label="Informations du ticket"') < html.index('id="repondre"')
    post(client, f"/tickets/{ticket.reference}/take")
    html = page(client.get(f"/tickets/{ticket.reference}"))
    assert f'action="/tickets/{ticket.reference}/take"' not in html
    assert html.index('href="#repondre"') < html.index('aria-label="Informations du ticket"')  # main action first


def test_status_choices_fit_the_ticket(client, store):
    handoff = make_ticket(store, "conv-choices")
    report = make_ticket(store, "conv-choices-r", kind="report", queue="voirie", summary="trou")
    login(client)
    html = page(client.get(f"/tickets/{handoff.reference}"))
    options = re.findall(r'<option value="(\w+)"', html[html.index('id="status"'):html.index("</select>", html.index('id="status"'))])
    assert "scheduled" not in options and "not_ours" not in options and "resolved" in options
    post(client, f"/tickets/{handoff.reference}/status", status="scheduled", scheduled_for="2099-01-05")
    assert store.get(handoff.id).status == "new"
    assert "« Programmé » ne convient pas à ce ticket" in shown(client.get(f"/tickets/{handoff.reference}"))
    login(client, "victor")
    html = page(client.get(f"/tickets/{report.reference}"))
    head_options = html[html.index('id="status"'):html.index("</select>", html.index('id="status"'))]
    assert 'value="scheduled"' in head_options and 'value="not_ours"' in head_options


def test_confirmation_shows_in_the_section_acted_upon(client, store):
    ticket = make_ticket(store, "conv-eyes", kind="report", queue="voirie", summary="trou")
    login(client, "victor")
    response = post(client, f"/tickets/{ticket.reference}/status", status="in_progress")
    assert response.headers["Location"].endswith("#statut")
    html = shown(client.get(f"/tickets/{ticket.reference}"))
    assert html.index('id="statut"') < html.index("Statut changé : En cours") < html.index('id="cloturer"')
    assert html.count("Statut changé : En cours") == 1  # not at the top of the page as well


def test_an_urgent_ticket_opens_with_what_to_do(client, store):
    ticket = make_ticket(store, "conv-urgent-banner", urgent=True, reason="distress_danger",
                         summary="mon voisin est tombé et ne répond plus")
    login(client)
    html = shown(client.get(f"/tickets/{ticket.reference}"))
    banner = html[html.index('class="urgent-banner"'):html.index("</section>", html.index('class="urgent-banner"'))]
    assert 'role="alert"' in banner and "appelez les secours vous-même" in banner
    assert "<strong>112</strong>" in banner and "<strong>15</strong>" in banner and "élu d'astreinte" in banner
    assert html.index('class="urgent-banner"') < html.index('aria-label="Informations du ticket"')
    plain = make_ticket(store, "conv-not-urgent")
    assert 'class="urgent-banner"' not in page(client.get(f"/tickets/{plain.reference}"))


# --- town notices ----------------------------------------------------------------------------------

def test_the_cm_adds_a_notice_that_runs_then_ends(client, store, assistant):
    login(client)
    today = dt.date.today()
    html = shown(client.get("/avis"))
    assert "Aucun avis en cours." in html and 'aria-current="page">Avis' in html
    post(client, "/avis", texte="La piscine est fermée pour vidange jusqu'au 15.", portee="sujet:piscine",
         debut=today.isoformat(), fin=(today + dt.timedelta(days=3)).isoformat())
    html = shown(client.get("/avis"))
    assert "Avis enregistré" in html and "La piscine est fermée pour vidange jusqu'au 15." in html
    assert "sujet « piscine »" in html
    now = dt.datetime.now(dt.timezone.utc)
    assert any("vidange" in text for text in assistant.faq("piscine", now).texts)
    assert not any("vidange" in text for text in assistant.faq("mediatheque", now).texts)
    later = now + dt.timedelta(days=5)  # after its last day: gone by itself
    assistant.notices._cache = None
    assert not any("vidange" in text for text in assistant.faq("piscine", later).texts)
    [notice_id] = re.findall(r'action="/avis/(\d+)/fin"', page(client.get("/avis")))
    post(client, f"/avis/{notice_id}/fin")
    assistant.notices._cache = None
    assert not any("vidange" in text for text in assistant.faq("piscine", now).texts)
    assert "Aucun avis en cours." in shown(client.get("/avis"))


def test_bad_notices_are_refused_in_french(client, store):
    login(client)
    today = dt.date.today()
    for data, message in (
        ({"texte": "", "debut": today.isoformat(), "fin": today.isoformat()}, "Le texte de l'avis est vide."),
        ({"texte": "x", "debut": today.isoformat(), "fin": "hier"}, "Indiquez une date de début et une date de fin"),
        ({"texte": "x", "debut": today.isoformat(), "fin": (today - dt.timedelta(days=1)).isoformat()},
         "La date de fin est avant la date de début."),
        ({"texte": "x" * 600, "debut": today.isoformat(), "fin": today.isoformat()}, "Avis trop long"),
        ({"texte": "x", "portee": "sujet:cinema", "debut": today.isoformat(), "fin": today.isoformat()}, "Sujet inconnu"),
    ):
        post(client, "/avis", **data)
        assert message in shown(client.get("/avis")), data
    assert "Aucun avis en cours." in shown(client.get("/avis"))
    login(client, "victor")
    assert client.get("/avis").status_code == 403


def test_a_closure_notice_changes_when_a_person_reads(store, assistant):
    from bot.notices import Notices

    paris = pytz.timezone("Europe/Paris")
    friday_evening = paris.localize(dt.datetime(2027, 3, 5, 19, 0))
    assert assistant.staff_hours(friday_evening).when_read(friday_evening) == "lundi matin"
    Notices(store, assistant.profile).add("La mairie est fermée lundi 8 mars (inventaire).", dt.date(2027, 3, 8),
                                          dt.date(2027, 3, 8), "camille", closes_town_hall=True,
                                          today=dt.date(2027, 3, 1))
    assistant.notices._cache = None
    assert assistant.staff_hours(friday_evening).when_read(friday_evening) == "mardi 9 mars au matin"
    assert not any("inventaire" in text for text in assistant.smalltalk("greet", friday_evening).texts)
    monday = paris.localize(dt.datetime(2027, 3, 8, 9, 0))
    assert any("inventaire" in text for text in assistant.smalltalk("greet", monday).texts)  # said with hello


# --- answers edited on the web -------------------------------------------------------------------

def test_the_cm_edits_an_answer_with_a_preview_then_restores_the_previous_one(client, store, assistant):
    original = assistant.faq("piscine", dt.datetime.now(dt.timezone.utc)).texts[0]
    login(client)
    assert "piscine" in shown(client.get("/reponses"))
    new_text = "Le centre aquatique est ouvert tous les jours de 10h à 20h, le dimanche jusqu'à 13h."
    preview = shown(post(client, "/reponses/piscine", texte=new_text, lien="https://www.valbourg.example/piscine",
                         action="apercu"))
    assert "Aperçu : la réponse de l'assistant avec ce texte" in preview and new_text in preview
    assert "Rien n'est encore enregistré." in preview
    assistant.answers._cache = None
    assert assistant.faq("piscine", dt.datetime.now(dt.timezone.utc)).texts[0] == original  # a preview saves nothing
    post(client, "/reponses/piscine", texte=new_text, lien="https://www.valbourg.example/piscine", action="enregistrer")
    assistant.answers._cache = None
    live = assistant.faq("piscine", dt.datetime.now(dt.timezone.utc)).texts[0]
    assert live.startswith(new_text) and "valbourg.example/piscine" in live
    page_html = visible(client.get("/reponses/piscine"))
    assert "Version 1 · en ligne · écrite par Camille Martin (CM)" in page_html
    post(client, "/reponses/piscine/restaurer", version="origine")
    assistant.answers._cache = None
    assert assistant.faq("piscine", dt.datetime.now(dt.timezone.utc)).texts[0] == original
    history = visible(client.get("/reponses/piscine"))
    assert "réponse d'origine (fichier du profil) restaurée" in history and "Version 1 · validée" in history
    post(client, "/reponses/piscine/restaurer", version="1")
    assistant.answers._cache = None
    assert assistant.faq("piscine", dt.datetime.now(dt.timezone.utc)).texts[0].startswith(new_text)


def test_bad_answer_edits_are_refused_in_french(client, store):
    login(client)
    for data, message in (({"texte": "", "lien": "https://x.example"}, "La réponse est vide."),
                          ({"texte": "ok", "lien": "javascript:alert(1)"}, "adresse web complète"),
                          ({"texte": "x" * 1300, "lien": "https://x.example"}, "Réponse trop longue")):
        html = shown(post(client, "/reponses/piscine", action="enregistrer", **data))
        assert message in html, data
    assert client.get("/reponses/cinema").status_code == 404


def test_a_service_head_proposes_and_the_cm_approves(client, store, assistant):
    login(client, "victor")  # voirie: no FAQ topic of his own
    assert client.get("/reponses/piscine").status_code == 404
    Accounts(store, assistant.profile).create("sophie", PASSWORD, "head", "sport_culture", display_name="Sophie")
    login(client, "sophie")
    text = "La piscine Jean-Bouin rouvre le 3 janvier après sa vidange, aux horaires habituels."
    post(client, "/reponses/piscine", texte=text, lien="https://www.valbourg.example/piscine", action="enregistrer")
    assistant.answers._cache = None
    assert not assistant.faq("piscine", dt.datetime.now(dt.timezone.utc)).texts[0].startswith(text)  # not yet
    login(client)
    queue = shown(client.get("/reponses"))
    assert "Propositions à valider (1)" in queue and text in queue
    [version] = re.findall(r'action="/reponses/propositions/(\d+)"', page(client.get("/reponses")))
    post(client, f"/reponses/propositions/{version}", decision="valider")
    assistant.answers._cache = None
    assert assistant.faq("piscine", dt.datetime.now(dt.timezone.utc)).texts[0].startswith(text)
    assert "validée par Camille Martin (CM)" in visible(client.get("/reponses/piscine"))


def test_a_conversation_with_the_cm_has_no_intervention_date_field(client, store):
    handoff = make_ticket(store, "conv-no-date")
    report = make_ticket(store, "conv-date", kind="report", queue="voirie", summary="trou")
    login(client)
    assert 'id="scheduled_for"' not in page(client.get(f"/tickets/{handoff.reference}"))
    assert 'id="scheduled_for"' in page(client.get(f"/tickets/{report.reference}"))
