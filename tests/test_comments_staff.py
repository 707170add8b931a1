"""Public comments on the staff side (real SQLite database, no Rasa): who sees which comment, public
and private replies (personal data never goes public), the "à voir" list, the undelivered messages
on the ticket page, the `guichet comments` commands, and the pages in a real Chromium (JS off, axe).
"""
from __future__ import annotations

import datetime as dt
import secrets
import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from bot import relay
from bot.comments import Comments, NewComment, conversation_for
from bot.models import Outbox, PublicComment
from bot.staff import DeskError, NotFound
from bot.tickets import NewTicket
from test_web import (  # noqa: F401 - fixtures
    PASSWORD, accounts, app, client, csrf, desk, login, page, post, resumed, shown, visible,
)

XSS = "<script>alert(1)</script>"


def make_comment(store, comment_id: str, text: str, *, platform: str = "facebook", treatment: str = "to_cm",
                 thread_id: str | None = None, author: str = "Marie Dupont", ticket=None,
                 outcome: str | None = None, created: dt.datetime | None = None,
                 permalink: str | None = "default") -> PublicComment:
    comments = Comments(store)
    if permalink == "default":
        permalink = (f"https://www.facebook.com/valbourg/posts/1?comment_id={comment_id}" if platform == "facebook"
                     else f"https://www.instagram.com/p/ABC/c/{comment_id}/")
    row, _ = comments.record(NewComment(platform=platform, comment_id=comment_id, post_id="post-1",
                                        thread_id=thread_id or comment_id, text=text, author_id=f"u-{comment_id}",
                                        author_name=author, permalink=permalink, created_at=created))
    comments.set_outcome(row.id, outcome=outcome, treatment=treatment, ticket_id=ticket.id if ticket else None)
    return comments.get(row.id)


def comment_ticket(store, comment_id: str, *, platform: str = "facebook", kind: str = "report",
                   queue: str = "voirie", summary: str = "Lampadaire éteint rue des Lilas",
                   citizen_name: str | None = None):
    channel = "facebook_comment" if platform == "facebook" else "instagram_comment"
    ticket, _ = store.create(NewTicket(kind=kind, queue=queue, conversation_id=conversation_for(platform, comment_id),
                                       channel=channel, summary=summary, citizen_name=citizen_name,
                                       handoff_reason="insult" if kind == "handoff" else None))
    return ticket


def outbox_rows(store, conversation: str) -> list[Outbox]:
    with store.session() as session:
        return list(session.execute(select(Outbox).where(Outbox.conversation_id == conversation)
                                    .order_by(Outbox.id)).scalars())


@pytest.fixture
def town(store):
    """Three comments: an insult for the CM (no ticket), a Voirie report, a Propreté report."""
    insult = make_comment(store, "c-insult", "Bande d'incapables, vous êtes des voleurs", treatment="to_cm",
                          author="Jean Colère", created=dt.datetime(2026, 3, 2, 9, 0))
    voirie_ticket = comment_ticket(store, "c-lamp", citizen_name="Marie Dupont")
    lamp = make_comment(store, "c-lamp", "Le lampadaire rue des Lilas est éteint depuis une semaine",
                        treatment="acknowledged", ticket=voirie_ticket, outcome="ticket:voirie",
                        created=dt.datetime(2026, 3, 2, 10, 0))
    proprete_ticket = comment_ticket(store, "c-bin", queue="proprete", summary="Poubelle renversée")
    bin_ = make_comment(store, "c-bin", "Poubelle renversée place du marché", platform="facebook",
                        treatment="not_answered", ticket=proprete_ticket, author="Paul Martin",
                        created=dt.datetime(2026, 3, 2, 11, 0))
    return SimpleNamespace(insult=insult, lamp=lamp, bin=bin_, voirie_ticket=voirie_ticket,
                           proprete_ticket=proprete_ticket)


# --- who sees what -------------------------------------------------------------------------------

def test_the_cm_sees_every_comment_a_head_only_their_services(desk, accounts, town):
    cm, head = accounts.get("camille"), accounts.get("victor")
    assert [c.id for c in desk.comments(cm)] == [town.bin.id, town.lamp.id, town.insult.id]  # newest first
    assert [c.id for c in desk.comments(cm, needs_staff=True)] == [town.bin.id, town.insult.id]
    assert [c.id for c in desk.comments(head)] == [town.lamp.id]
    assert desk.comments(head, needs_staff=True) == []
    assert desk.comments_to_see(cm) == 2 and desk.comments_to_see(head) == 0
    assert desk.comment(head, town.lamp.id).id == town.lamp.id
    for forbidden in (town.insult.id, town.bin.id, 999_999, "abc", "-1", "1 OR 1=1"):
        with pytest.raises(NotFound, match="Commentaire introuvable"):
            desk.comment(head, forbidden)
    with pytest.raises(NotFound):
        desk.reply_to_comment(head, town.bin.id, "Bonjour", public=False)


def test_the_comments_page_lists_what_each_person_may_see(client, store, town):
    login(client)
    text = visible(client.get("/commentaires"))
    assert "Commentaires publics" in text and "2 à voir" in text
    assert "Ce que l'assistant fait en public" in text and "ne masque et ne supprime jamais rien" in text and "numéros d'urgence" in text
    assert "Bande d'incapables" in text and "Poubelle renversée place du marché" in text
    assert "Le lampadaire rue des Lilas" not in text  # acknowledged by the bot: not "à voir"
    assert "Transmis au CM — rien de public" in text and "Pas de réponse du bot — à voir" in text
    assert "Jean Colère" in text and "02/03/2026 10:00" in text  # 09:00 UTC is 10:00 in Paris
    html = shown(client.get("/commentaires?tous=1"))
    assert "Le lampadaire rue des Lilas" in html and town.voirie_ticket.reference in html
    assert 'href="https://www.facebook.com/valbourg/posts/1?comment_id=c-lamp" rel="noopener" target="_blank"' in html
    assert html.index("Poubelle renversée") < html.index("lampadaire") < html.index("Bande d'incapables")
    nav = page(client.get("/queue")).split("</nav>")[0]
    assert 'href="/commentaires"' in nav and "2 à voir" in nav

    post(client, "/logout")
    login(client, "victor")
    assert 'href="/commentaires"' in page(client.get("/queue")).split("</nav>")[0]  # they have one
    mine = visible(client.get("/commentaires?tous=1"))
    assert "Le lampadaire rue des Lilas" in mine
    assert "Bande d'incapables" not in mine and "Poubelle" not in mine
    assert "Rien à voir" in visible(client.get("/commentaires"))
    refused = post(client, f"/commentaires/{town.bin.id}/repondre", surface="prive", message="Bonjour")
    assert refused.status_code == 404 and outbox_rows(store, town.bin.conversation_id) == []


def test_a_head_without_comments_has_no_link(client, store, accounts):
    accounts.create("sophie", PASSWORD, "head", "sport_culture", display_name="Sophie")
    make_comment(store, "c-x", "Une insulte", treatment="to_cm")
    login(client, "sophie")
    assert 'href="/commentaires"' not in page(client.get("/queue"))
    assert "Aucun commentaire enregistré pour votre service" in visible(client.get("/commentaires?tous=1"))


def test_comment_text_is_escaped_and_a_strange_link_is_not_followed(client, store):
    make_comment(store, "c-xss", XSS, author=XSS, permalink="javascript:alert(1)")
    make_comment(store, "c-evil", "lien", permalink="https://evil.example/facebook.com")
    login(client)
    html = page(client.get("/commentaires"))
    assert XSS not in html and "&lt;script&gt;" in html
    assert "javascript:" not in html and "evil.example" not in html
    assert html.count("Lien vers la publication indisponible.") == 2


# --- public replies ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, what", [
    ("Votre demande T-2026-000123 est en cours.", "une référence de ticket"),
    ("Nous avons bien noté le dossier n° 4567.", "une référence de ticket"),
    ("Rappelez Marc au 06 12 34 56 78.", "un numéro de téléphone"),
    ("Appelez le +33 6 12 34 56 78", "un numéro de téléphone"),
    ("Joignable au 0612345678", "un numéro de téléphone"),
    ("Écrivez à marie.dupont@gmail.com", "une adresse e-mail"),
    ("Merci Marie Dupont, c'est noté.", "le nom du citoyen"),
    ("T-2026-000001, ou marie@exemple.fr", "une référence de ticket et une adresse e-mail"),
])
def test_a_public_reply_with_personal_data_is_refused(client, store, town, text, what):
    login(client)
    response = post(client, f"/commentaires/{town.lamp.id}/repondre", surface="public", message=text, retour="tous")
    html = shown(response)
    assert response.status_code == 200  # the page again, with the text kept to correct it
    assert f"Réponse publique refusée : elle contient {what}." in html
    assert "aucune donnée personnelle en public" in html
    assert f">{text}</textarea>" in html and f'id="commentaire-{town.lamp.id}"' in html
    assert outbox_rows(store, town.lamp.conversation_id) == []
    assert Comments(store).get(town.lamp.id).staff_answered_at is None


def test_a_refusal_on_the_ticket_page_is_shown_at_the_comment_with_the_text_kept(client, store, town):
    login(client)
    response = post(client, f"/commentaires/{town.lamp.id}/repondre", surface="public", retour="ticket",
                    message="Merci, votre dossier T-2026-000001 est transmis.")
    html = shown(response)
    assert response.status_code == 200 and town.voirie_ticket.reference in html and "Commentaire public" in html
    section = html[html.index(f'id="commentaire-{town.lamp.id}"'):]
    assert "Réponse publique refusée : elle contient une référence de ticket." in section
    assert "<details open>" in section and ">Merci, votre dossier T-2026-000001 est transmis.</textarea>" in section
    assert "Réponse publique refusée" not in html[:html.index(f'id="commentaire-{town.lamp.id}"')]  # once, in place
    assert outbox_rows(store, town.lamp.conversation_id) == []


def test_the_towns_own_numbers_may_be_given_in_public(desk, store, accounts, town):
    cm = accounts.get("camille")
    item = desk.reply_to_comment(cm, town.insult.id, "Pour en parler, appelez la mairie au 02 41 00 10 00.",
                                 public=True)
    assert item.surface == "public"


def test_a_public_reply_is_posted_under_the_comment_and_the_thread_is_the_staffs(client, store, town):
    answer_in_thread = make_comment(store, "c-lamp-2", "Pareil chez moi", treatment="staff_thread",
                                    thread_id="c-lamp", ticket=None)
    login(client, "victor")
    response = post(client, f"/commentaires/{town.lamp.id}/repondre", surface="public", retour="ticket",
                    message="Merci pour le signalement : l'équipe passe cette semaine.")
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/tickets/{town.voirie_ticket.reference}#commentaire-{town.lamp.id}")
    [row] = outbox_rows(store, town.lamp.conversation_id)
    assert row.surface == "public" and row.channel == "facebook_comment"
    assert row.ticket_id == town.voirie_ticket.id
    assert row.text == "Merci pour le signalement : l'équipe passe cette semaine.\n— Service Voirie et éclairage public"
    comments = Comments(store)
    assert comments.get(town.lamp.id).staff_answered_at is not None
    assert comments.get(answer_in_thread.id).staff_answered_at is not None  # the whole thread
    assert comments.staff_answered(town.lamp.thread_id)
    ticket = store.get(town.voirie_ticket.id)
    assert ticket.first_response_at is not None
    [line] = [m for m in store.transcript(ticket.id) if m.author == "staff"]
    assert line.text.startswith("[Réponse publique] Merci pour le signalement") and not line.private

    html = visible(client.get(f"/tickets/{ticket.reference}"))
    assert "Réponse publique envoyée : elle sera publiée sous le commentaire sur Facebook." in html
    assert "Commentaire public" in html and "Le lampadaire rue des Lilas est éteint" in html
    assert "Accusé public + message privé" in html and "Réponse publique · " in html
    assert "en attente de remise" in html and "un agent a répondu dans ce fil" in html


def test_a_public_reply_leaves_the_list_a_voir(client, store, town):
    login(client)
    response = post(client, f"/commentaires/{town.insult.id}/repondre", surface="public",
                    message="Nous comprenons votre colère ; écrivez-nous en privé pour en parler.")
    assert response.status_code == 302 and response.headers["Location"].endswith("/commentaires")
    html = visible(client.get("/commentaires"))
    assert "Il quitte la liste « À voir »." in html and "Bande d'incapables" not in html
    assert "1 à voir" in html


def test_public_replies_have_each_platforms_length(desk, store, accounts):
    cm = accounts.get("camille")
    insta = make_comment(store, "ig-1", "Quand ouvre la piscine ?", platform="instagram", treatment="limited")
    with pytest.raises(DeskError, match="trop longue pour Instagram : 1 000 caractères au plus, signature comprise"):
        desk.reply_to_comment(cm, insta.id, "a" * 990, public=True)
    assert desk.reply_to_comment(cm, insta.id, "a" * 970, public=True).channel == "instagram_comment"
    with pytest.raises(DeskError, match=r"Message trop long \(3 000 caractères au maximum\)"):
        desk.reply_to_comment(cm, insta.id, "a" * 3001, public=False)
    with pytest.raises(DeskError, match="Le message est vide."):
        desk.reply_to_comment(cm, insta.id, " \n\x00 ", public=True)
    fb = make_comment(store, "fb-long", "Question", treatment="not_answered")
    assert desk.reply_to_comment(cm, fb.id, "b" * 2900, public=True).surface == "public"


def test_a_head_leaves_conflicts_to_the_cm_in_public(desk, store, accounts):
    complaint = comment_ticket(store, "c-angry", kind="complaint", summary="Trottoirs jamais réparés")
    row = make_comment(store, "c-angry", "Les trottoirs sont une honte", treatment="acknowledged", ticket=complaint)
    with pytest.raises(DeskError, match="c'est le community manager qui répond"):
        desk.reply_to_comment(accounts.get("victor"), row.id, "Nous regardons.", public=True)
    assert desk.reply_to_comment(accounts.get("victor"), row.id, "Nous regardons.", public=False).surface is None
    assert desk.reply_to_comment(accounts.get("camille"), row.id, "Nous regardons.", public=True).surface == "public"


# --- private replies, "vu" -----------------------------------------------------------------------

def test_a_private_reply_goes_to_the_commenters_inbox(client, store, town):
    login(client)
    response = post(client, f"/commentaires/{town.bin.id}/repondre", surface="prive", retour="tous",
                    message="Bonjour, pouvez-vous nous dire où exactement ?")
    assert response.status_code == 302 and response.headers["Location"].endswith(
        f"/commentaires?tous=1#commentaire-{town.bin.id}")
    [row] = outbox_rows(store, town.bin.conversation_id)
    assert row.surface is None and row.channel == "facebook_comment" and row.ticket_id == town.proprete_ticket.id
    assert row.text == "Bonjour, pouvez-vous nous dire où exactement ?\n— L'équipe Communication"
    assert Comments(store).get(town.bin.id).staff_answered_at is None  # nothing public in the thread
    [line] = [m for m in store.transcript(town.proprete_ticket.id) if m.author == "staff"]
    assert line.text == row.text and store.get(town.proprete_ticket.id).first_response_at is not None
    html = visible(client.get("/commentaires?tous=1"))
    assert "Message privé envoyé à la personne (messagerie Facebook)." in html and "Message privé · " in html
    assert "Poubelle renversée place du marché" in html
    assert "Poubelle" not in visible(client.get("/commentaires"))  # answered: no longer "à voir"


def test_a_private_reply_to_a_comment_without_ticket(desk, store, accounts, town):
    item = desk.reply_to_comment(accounts.get("camille"), town.insult.id, "Parlons-en ici.", public=False)
    assert item.ticket_id is None and item.conversation_id == "fbcomment-c-insult" and item.surface is None
    assert [m.author for m in store.conversation_messages("fbcomment-c-insult")] == ["staff"]


def test_a_comment_marked_seen_leaves_the_list_and_nothing_is_sent(client, store, town):
    login(client)
    response = post(client, f"/commentaires/{town.insult.id}/vu", note="Insulte : on laisse, rien à répondre.")
    assert response.status_code == 302
    assert outbox_rows(store, town.insult.conversation_id) == []
    [note] = store.conversation_messages(town.insult.conversation_id)
    assert note.private and note.text == "Commentaire vu, sans réponse : Insulte : on laisse, rien à répondre."
    html = visible(client.get("/commentaires"))
    assert "Commentaire marqué comme vu" in html and "Bande d'incapables" not in html
    assert "Bande d'incapables" in visible(client.get("/commentaires?tous=1"))  # never hidden


def test_the_forms_need_their_token_and_a_surface(client, store, town):
    login(client)
    assert client.post(f"/commentaires/{town.insult.id}/repondre",
                       data={"surface": "public", "message": "x"}).status_code == 400
    assert post(client, f"/commentaires/{town.insult.id}/repondre", surface="partout", message="x").status_code == 400
    assert post(client, "/commentaires/999999/repondre", surface="prive", message="x").status_code == 404
    assert outbox_rows(store, town.insult.conversation_id) == []


# --- undelivered messages ------------------------------------------------------------------------

def test_the_ticket_page_says_which_messages_did_not_reach_the_citizen(client, desk, store, accounts, town):
    cm = accounts.get("camille")
    desk.reply(cm, town.voirie_ticket.reference, "Pouvez-vous nous envoyer une photo ?")
    [item] = outbox_rows(store, town.lamp.conversation_id)
    relay.mark_failed(store, item.id, "plus de 7 jours depuis son dernier message (règle de Meta)")
    assert [o.id for o in desk.undelivered(cm, town.voirie_ticket.reference)] == [item.id]
    with pytest.raises(NotFound):
        desk.undelivered(accounts.get("victor"), town.proprete_ticket.reference)
    login(client)
    html = visible(client.get(f"/tickets/{town.voirie_ticket.reference}"))
    assert "Messages non remis (1)" in html and "Ce message n'est pas parvenu au citoyen." in html
    assert ("Le citoyen ne peut plus être joint sur ce canal : plus de 7 jours depuis son dernier message "
            "(règle de Meta)") in html
    assert "« Pouvez-vous nous envoyer une photo ? — L'équipe Communication »" in html
    assert "Messages non remis" not in visible(client.get(f"/tickets/{town.proprete_ticket.reference}"))


# --- command line --------------------------------------------------------------------------------

@pytest.fixture
def guichet(store, accounts, database_url, tmp_path):
    from conftest import cli_runner

    return cli_runner({"GUICHET_DATABASE_URL": database_url, "GUICHET_VAR_DIR": str(tmp_path),
                       "GUICHET_RASA_URL": "http://127.0.0.1:9"})


def test_comments_from_the_command_line(guichet, store, town):
    to_see = guichet("comments", "list", "--as", "camille").output.splitlines()
    assert len(to_see) == 2 and to_see[0].startswith(f"#{town.bin.id}") and "À VOIR" in to_see[0]
    assert "Facebook" in to_see[0] and "02/03 12:00" in to_see[0] and town.proprete_ticket.reference in to_see[0]
    assert "Transmis au CM — rien de public" in to_see[1] and "Jean Colère" in to_see[1]
    everything = guichet("comments", "list", "--all", "--as", "camille").output
    assert "Le lampadaire rue des Lilas" in everything
    mine = guichet("comments", "list", "--all", "--as", "victor").output
    assert "lampadaire" in mine and "Poubelle" not in mine and "incapables" not in mine

    assert "Réponse publique envoyée" in guichet("comments", "reply", town.insult.id,
                                                 "Nous vous répondons en privé.", "--public", "--as", "camille").output
    [public] = outbox_rows(store, town.insult.conversation_id)
    assert public.surface == "public" and Comments(store).get(town.insult.id).staff_answered_at is not None
    assert "Message privé envoyé" in guichet("comments", "reply", town.lamp.id, "Une photo ?", "--private",
                                              "--as", "victor").output
    assert outbox_rows(store, town.lamp.conversation_id)[0].surface is None
    assert "vu" in guichet("comments", "seen", town.bin.id, "--note", "doublon", "--as", "camille").output
    assert guichet("comments", "list", "--as", "camille").output.strip() == "Aucun commentaire à voir."


def test_comment_commands_explain_their_errors(guichet, store, town):
    assert "Choisissez où répondre : --public" in guichet("comments", "reply", town.insult.id, "Bonjour",
                                                          "--as", "camille", code=2).output
    assert "Indiquez qui agit" in guichet("comments", "list", code=2).output
    assert "Compte inconnu" in guichet("comments", "list", "--as", "personne", code=2).output
    refused = guichet("comments", "reply", town.lamp.id, "Appelez-moi au 06 12 34 56 78", "--public",
                      "--as", "camille", code=2).output
    assert "Réponse publique refusée : elle contient un numéro de téléphone." in refused
    assert "Commentaire introuvable : abc" in guichet("comments", "reply", "abc", "x", "--private",
                                                      "--as", "camille", code=2).output
    assert "Commentaire introuvable" in guichet("comments", "reply", town.insult.id, "x", "--private",
                                                "--as", "victor", code=2).output
    assert "Le message est vide." in guichet("comments", "reply", town.insult.id, "  ", "--private",
                                             "--as", "camille", code=2).output
    assert "Argument manquant" in guichet("comments", "reply", "--as", "camille", code=2).output
    assert outbox_rows(store, town.lamp.conversation_id) == outbox_rows(store, town.insult.conversation_id) == []


def test_tickets_show_lists_the_undelivered_messages(guichet, desk, store, accounts, town):
    desk.reply(accounts.get("camille"), town.voirie_ticket.reference, "Une photo ?")
    [item] = outbox_rows(store, town.lamp.conversation_id)
    relay.mark_failed(store, item.id, "la personne a bloqué la page")
    shown_ = guichet("tickets", "show", town.voirie_ticket.reference, "--as", "camille").output
    assert "NON REMIS" in shown_ and "le citoyen ne peut plus être joint sur ce canal : la personne a bloqué la page" in shown_


# --- in a real Chromium (JavaScript off), desktop and phone, axe ----------------------------------

@pytest.fixture
def live(desk, accounts, store):
    from werkzeug.serving import make_server

    from bot.stack import free_port
    from bot.web import create_app

    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key=secrets.token_hex(32))
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", store=store, desk=desk)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """JavaScript off: every form of these pages works as plain HTML."""
    from test_browser import _chromium

    yield from _chromium(tmp_path_factory, javascript=False)


@pytest.fixture(scope="module")
def chromium_js(tmp_path_factory):
    """JavaScript on, for axe-core only (it runs as a script in the page)."""
    from test_browser import _chromium

    yield from _chromium(tmp_path_factory, javascript=True)


def browser_login(browser, live, username: str) -> None:
    from test_browser import css, submit

    browser.delete_all_cookies()
    browser.get(f"{live.url}/login")
    css(browser, "#username").send_keys(username)
    css(browser, "#password").send_keys(PASSWORD)
    submit(browser, "form.action")
    assert browser.current_url.endswith("/queue"), browser.current_url


def test_comments_and_an_undelivered_message_in_a_real_browser(live, chromium, chromium_js, store, accounts, town):
    from test_browser import DESKTOP, PHONE, axe_violations, body, both_sizes, css, no_script, resize, submit

    browser = chromium
    insta = make_comment(store, "ig-piscine", "La piscine est fermée ?? Encore ?! 😡", platform="instagram",
                         treatment="limited", author="nageuse_valbourg", created=dt.datetime(2026, 3, 2, 12, 0))
    Comments(store).set_public_reply(town.lamp.id, "Merci, c'est signalé au service Voirie. Nous vous écrivons en "
                                                   "privé.", "reply-1")
    live.desk.reply(accounts.get("camille"), town.voirie_ticket.reference, "Pouvez-vous nous envoyer une photo ?")
    [item] = outbox_rows(store, town.lamp.conversation_id)
    relay.mark_failed(store, item.id, "plus de 7 jours depuis son dernier message (règle de Meta)")

    browser_login(browser, live, "camille")
    assert "3 à voir" in css(browser, "header").text
    browser.get(f"{live.url}/commentaires")
    text = body(browser)
    assert "La piscine est fermée ?? Encore ?!" in text and "Bande d'incapables" in text and "À voir (3)" in text
    no_script(browser)
    both_sizes(browser, "cm-comments")

    # A public reply with a phone number is refused and the text stays; without it, it goes out.
    css(browser, f"#commentaire-{insta.id} details summary").click()
    area = css(browser, f"#public-{insta.id}")
    area.send_keys("Bonjour ! Appelez Julie au 06 12 34 56 78.")
    submit(browser, f"#commentaire-{insta.id} form[action$='/repondre']")
    assert "Réponse publique refusée : elle contient un numéro de téléphone." in body(browser)
    area = css(browser, f"#public-{insta.id}")
    assert area.get_attribute("value") == "Bonjour ! Appelez Julie au 06 12 34 56 78." and area.is_displayed()
    both_sizes(browser, "cm-comments-refused")
    area.clear()
    area.send_keys("Bonjour ! La piscine rouvre lundi après la vidange. Toutes les infos : valbourg.example/piscine")
    submit(browser, f"#commentaire-{insta.id} form[action$='/repondre']")
    assert "Réponse publique envoyée" in body(browser) and "Il quitte la liste « À voir »." in body(browser)
    assert "2 à voir" in css(browser, "header").text
    assert outbox_rows(store, insta.conversation_id)[0].surface == "public"

    browser.get(f"{live.url}/commentaires?tous=1")
    assert "Merci, c'est signalé au service Voirie." in body(browser) and "en attente de remise" in body(browser)
    both_sizes(browser, "cm-comments-all")

    browser.get(f"{live.url}/tickets/{town.voirie_ticket.reference}")
    text = body(browser)
    assert "Messages non remis (1)" in text
    assert "Le citoyen ne peut plus être joint sur ce canal : plus de 7 jours" in text
    assert "Commentaire public" in text and "Le lampadaire rue des Lilas est éteint" in text
    resize(browser, PHONE)
    browser.execute_script("window.scrollTo(0, 0)")
    from test_browser import in_view

    assert in_view(browser, css(browser, "#non-remis h2")), "the undelivered message is below the first screen"
    resize(browser, DESKTOP)
    both_sizes(browser, "cm-ticket-comment")

    # axe-core (WCAG 2.1 A and AA) on the same pages, desktop and phone.
    found: dict[str, list[str]] = {}

    def check(name: str) -> None:
        for size, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
            resize(chromium_js, size)
            problems = axe_violations(chromium_js)
            if problems:
                found[f"{name} ({label})"] = problems
        resize(chromium_js, DESKTOP)

    browser_login(chromium_js, live, "camille")
    chromium_js.get(f"{live.url}/commentaires")
    check("comments to see")
    css(chromium_js, f"#commentaire-{town.insult.id} details summary").click()
    css(chromium_js, f"#public-{town.insult.id}").send_keys("Écrivez à jean@exemple.fr")
    submit(chromium_js, f"#commentaire-{town.insult.id} form[action$='/repondre']")
    assert "elle contient une adresse e-mail" in body(chromium_js)
    check("comments, refused reply")
    chromium_js.get(f"{live.url}/commentaires?tous=1")
    check("all comments")
    chromium_js.get(f"{live.url}/tickets/{town.voirie_ticket.reference}")
    check("ticket with a comment and an undelivered message")
    browser_login(chromium_js, live, "victor")
    chromium_js.get(f"{live.url}/commentaires?tous=1")
    check("a head's comments")
    assert not found, "\n".join(f"{name}: {problems}" for name, problems in found.items())
