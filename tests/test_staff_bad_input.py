"""Bad input on the staff entries: the web forms, the URLs and the command line answer every odd
value with a clear French message (never a 500 or a traceback) and keep serving; on SQLite and,
for the values PostgreSQL is strict about (NUL), on PostgreSQL too."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from typer.testing import CliRunner

from bot.accounts import Accounts
from bot.staff import StaffDesk
from bot.web import create_app
from conftest import ROOT
from test_web import (  # noqa: F401 - fixtures
    PASSWORD, accounts, app, client, csrf, desk, login, make_ticket, outbox, page, post, resumed, shown,
)

runner = CliRunner()
LONG = "Lorem ipsum dolor sit amet. " * 715  # 20,020 characters

# (name, text, what is stored, or the French error expected)
TEXTS = [
    ("empty", "", None, "vide"),
    ("spaces", "   \n\t  \r\n ", None, "vide"),
    ("only NUL", "\x00\x00\x00", None, "vide"),
    ("only zero-width", "\u200b\u200d\u200d\ufeff", None, "vide"),
    ("20,000 characters", LONG, None, "trop long"),
    ("NUL inside", "bon\x00jour", "bonjour", None),
    ("control characters", "\x1b[31mrouge\x1b[0m\x07\x08 fin", "[31mrouge[0m fin", None),
    ("bidi override", "\u202eeviL", "eviL", None),
    ("emoji only", "👍🏽🎉", "👍🏽🎉", None),
    ("emoji with joiner", "👩\u200d🔧", "👩\u200d🔧", None),
    ("html", '<script>alert(1)</script><b onclick="x">gras</b>', '<script>alert(1)</script><b onclick="x">gras</b>', None),
    ("sql", "'; DROP TABLE ticket; -- \" OR 1=1 /* %s %(x)s ? :name", "'; DROP TABLE ticket; -- \" OR 1=1 /* %s %(x)s ? :name", None),
    ("jinja", "{{ 7*7 }} {% if %}", "{{ 7*7 }} {% if %}", None),
    ("replacement chars", "\ufffd\ufffd", "\ufffd\ufffd", None),
]
FORGED = ["T-2026-999999", "T-0000-000001", "T-2099-000001", "T-2026-0000001", "../../etc", "..%2F..%2Fetc%2Fpasswd",
          "1 OR 1=1", "1' OR '1'='1", "%00", "T-2026-000001%00", "-1", "0", "T-2026--1", "x" * 5000,
          "9" * 400, "%FF%FE", "%ED%A0%80", "<script>", "{{7*7}}", "ticket%20999999999"]


def staff_lines(store, ticket) -> list[str]:
    return [m.text for m in store.transcript(ticket.id) if m.author == "staff"]


# --- web: the text fields ------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, stored, error", TEXTS, ids=[t[0] for t in TEXTS])
def test_reply_and_note_with_odd_text(client, store, name, text, stored, error):
    ticket = make_ticket(store, "conv-odd")
    login(client)
    for field, url, error_message in (
            ("message", f"/tickets/{ticket.reference}/reply", {"vide": "Le message est vide.",
                                                               "trop long": "Message trop long"}),
            ("note", f"/tickets/{ticket.reference}/note", {"vide": "La note est vide.",
                                                           "trop long": "Note trop longue"})):
        response = post(client, url, **{field: text, "action": "send"})
        assert response.status_code == 302, (field, response.status_code)
        html = shown(client.get(f"/tickets/{ticket.reference}"))
        if error:
            assert error_message[error] in html, field
        else:
            assert "<script>alert(1)" not in page(client.get(f"/tickets/{ticket.reference}"))
    lines = staff_lines(store, ticket)
    if error:
        assert lines == [] and outbox(store, "conv-odd") == []
    else:
        reply, note = lines
        assert reply == f"{stored}\n— L'équipe Communication" and note == stored
        assert outbox(store, "conv-odd") == [reply]
        if name == "html":
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page(client.get(f"/tickets/{ticket.reference}"))
    assert client.get("/queue").status_code == 200  # still serving


@pytest.mark.parametrize("name, text, stored, error", TEXTS, ids=[t[0] for t in TEXTS])
def test_status_and_close_notes_with_odd_text(client, store, name, text, stored, error):
    ticket = make_ticket(store, "conv-odd-status", kind="report", queue="voirie")
    login(client, "victor")
    assert post(client, f"/tickets/{ticket.reference}/status", status="in_progress", note=text).status_code == 302
    assert post(client, f"/tickets/{ticket.reference}/close", note=text, confirm="1").status_code == 302
    assert store.get(ticket.id).status == "closed"
    from test_web import audit

    notes = [change.note for change in audit(store, ticket.id)[1:]]
    if stored is not None and name != "20,000 characters":
        assert notes == [stored, stored]
    elif error == "vide":
        assert notes == [None, None]
    else:
        assert all(note is None or len(note) <= 2000 for note in notes)
    assert "Ticket" in shown(client.get(f"/tickets/{ticket.reference}"))


@pytest.mark.parametrize("field, values, message", [
    ("status", ["", " ", "fini", "new", "resolved\x00", "'; DROP TABLE ticket; --", "x" * 5000, "<script>"],
     "Statut inconnu"),
    ("service", ["cantine", "voirie\x00", "../voirie", "' OR 1=1 --", "x" * 5000, "<b>voirie</b>"],
     "Service inconnu"),
])
def test_status_and_route_with_unknown_values(client, store, field, values, message):
    ticket = make_ticket(store, "conv-values")
    login(client)
    for value in values:
        url = f"/tickets/{ticket.reference}/{'status' if field == 'status' else 'route'}"
        response = post(client, url, **{field: value, "kind": "report"})
        assert response.status_code == 302, value
        html = shown(client.get(f"/tickets/{ticket.reference}"))
        assert message in html, value
        assert "<b>voirie</b>" not in page(client.get(f"/tickets/{ticket.reference}"))
    fresh = store.get(ticket.id)
    assert (fresh.status, fresh.queue) == ("new", "cm")


def test_route_kind_date_and_duplicate_with_bad_values(client, store):
    ticket = make_ticket(store, "conv-misc", kind="report", queue="voirie")
    login(client)
    post(client, f"/tickets/{ticket.reference}/route", service="proprete", kind="'; DROP")
    assert "Type inconnu" in shown(client.get(f"/tickets/{ticket.reference}"))
    for date in ("", "demain", "2026-02-30", "0001-01-01", "99999-01-01", "2026-13-01", "2026-12-03\x00",
                 "1' OR '1'='1", "x" * 5000):
        post(client, f"/tickets/{ticket.reference}/status", status="scheduled", scheduled_for=date)
        assert "Indiquez une date d'intervention valide" in shown(client.get(f"/tickets/{ticket.reference}")), date
    for reference in FORGED + [ticket.reference, ""]:
        post(client, f"/tickets/{ticket.reference}/status", status="duplicate", duplicate_of=reference)
        assert "Indiquez la référence du ticket d'origine" in shown(client.get(f"/tickets/{ticket.reference}")), \
            reference[:30]
    assert store.get(ticket.id).status == "new"
    post(client, f"/tickets/{ticket.reference}/reply", message="", canned="inconnue\x00", action="send")
    assert "Réponse type inconnue." in shown(client.get(f"/tickets/{ticket.reference}"))
    post(client, f"/tickets/{ticket.reference}/reply", message="", canned="../../etc", action="insert")
    assert "Choisissez d'abord une réponse type" in shown(client.get(f"/tickets/{ticket.reference}"))
    assert client.get(f"/tickets/{ticket.reference}?reponse=%00%FF").status_code == 200


# --- web: references in URLs and the search box ----------------------------------------------------

@pytest.mark.parametrize("reference", FORGED, ids=[r[:20] for r in FORGED])
def test_forged_references_are_404_everywhere(client, store, reference):
    real = make_ticket(store, "conv-real")
    login(client)
    path = "/tickets/" + (reference if "%" in reference else quote(reference, safe=""))
    response = client.get(path)
    assert response.status_code == 404 and "Introuvable" in page(response)
    for action in ("take", "reply", "note", "route", "status", "close"):
        response = post(client, f"{path}/{action}", message="x", note="x", service="voirie", status="resolved")
        assert response.status_code in (404, 405), (action, response.status_code)
        assert "<html" in page(response)
    response = client.get("/recherche", query_string={"reference": reference}, follow_redirects=True)
    assert response.status_code == 200 and "Aucun ticket" in page(response)
    assert len(page(response)) < 50_000  # the echoed reference is bounded
    assert store.get(real.id).status == "new" and staff_lines(store, real) == []
    assert client.get("/queue").status_code == 200


def test_invalid_utf8_in_urls_and_forms(client, store):
    ticket = make_ticket(store, "conv-bytes")
    login(client)
    for path in ("/tickets/%FF%FE", "/tickets/%ED%A0%80", "/tickets/%C3"):
        assert client.get(path).status_code == 404
    for query in ("/recherche?reference=%FF%00", "/stats?jours=%FF", "/stats?jours=99999999999999999999",
                  "/queue?tous=%FF", "/login?next=%FF"):
        assert client.get(query).status_code in (200, 302), query
    token = csrf(client).encode()
    # Raw bytes that are not UTF-8 in a urlencoded body, and in a multipart body.
    response = client.post(f"/tickets/{ticket.reference}/note", content_type="application/x-www-form-urlencoded",
                           data=b"csrf_token=" + token + b"&note=%FF%FEabc%ED%A0%80")
    assert response.status_code in (302, 400)
    response = client.post(f"/tickets/{ticket.reference}/note", content_type="application/x-www-form-urlencoded",
                           data=b"csrf_token=" + token + b"&note=\xff\xfe\x00raw")
    assert response.status_code in (302, 400)
    response = client.post(
        f"/tickets/{ticket.reference}/note", content_type="multipart/form-data; boundary=x",
        data=b'--x\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n' + token +
             b'\r\n--x\r\nContent-Disposition: form-data; name="note"\r\n\r\n\xff\xfe\x00multi\r\n--x--\r\n')
    assert response.status_code == 302
    for text in staff_lines(store, ticket):
        assert "\x00" not in text and text.encode("utf-8")  # storable, readable back
    assert any(text.endswith("multi") for text in staff_lines(store, ticket))
    # A body too big is a French 413 page, not a crash.
    response = post(client, f"/tickets/{ticket.reference}/note", note="x" * 300_000)
    assert response.status_code == 413 and "trop volumineux" in page(response)
    assert client.get(f"/tickets/{ticket.reference}").status_code == 200


@pytest.mark.parametrize("username, password", [
    ("", ""), ("   ", PASSWORD), ("camille\x00", PASSWORD), ("\x00", "\x00"), ("camille", "\x00" + PASSWORD),
    ("' OR 1=1 --", "' OR '1'='1"), ("x" * 5000, "y" * 5000), ("camille", "z" * 2000), ("é" * 30, "👍" * 20),
    ("<script>", "<script>"), ("%FF", "%FF"),
])
def test_login_with_odd_values(client, username, password):
    response = login(client, username, password)
    assert response.status_code == 401 and "Identifiant ou mot de passe incorrect" in page(response)
    assert "<script>" not in page(response)
    assert login(client).status_code == 302  # the real account still works (not locked by one odd try)


# --- PostgreSQL: the same odd values on the strict database -----------------------------------

def test_odd_text_on_postgresql(pg_store, assistant, profile):
    desk = StaffDesk(pg_store, profile, assistant.hours, assistant.replies, resume_conversation=lambda _c: None)
    accounts = Accounts(pg_store, profile)
    accounts.create("camille", PASSWORD, "cm", display_name="Camille\x00 Martin")
    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key="p" * 32)
    client = app.test_client()
    ticket = make_ticket(pg_store, "conv-pg", citizen_text="bonjour\x00")  # the store drops the NUL
    assert login(client, "camille\x00", PASSWORD).status_code == 401
    assert login(client, "camille", "\x00").status_code == 401
    assert login(client).status_code == 302
    for text in ("bon\x00jour", "\x00", "👍🏽", "'; DROP TABLE ticket; --", "\ufffd"):
        assert post(client, f"/tickets/{ticket.reference}/reply", message=text, action="send").status_code == 302
        assert post(client, f"/tickets/{ticket.reference}/note", note=text).status_code == 302
    assert post(client, f"/tickets/{ticket.reference}/status", status="acknowledged",
                note="vu\x00").status_code == 302
    assert post(client, f"/tickets/{ticket.reference}/status", status="duplicate",
                duplicate_of="T-2026-000001\x00").status_code == 302
    assert post(client, f"/tickets/{ticket.reference}/close", note="fin\x00", confirm="1").status_code == 302
    for reference in ("T-2026-999999", "1 OR 1=1", "%00", "x" * 3000):
        assert client.get(f"/tickets/{quote(reference, safe='%')}").status_code == 404
        assert client.get("/recherche", query_string={"reference": reference}).status_code == 302
    texts = staff_lines(pg_store, ticket)
    assert "bonjour\n— L'équipe Communication" in texts and "👍🏽" in texts
    assert pg_store.get(ticket.id).status == "closed"
    assert accounts.get("camille").display_name == "Camille Martin"


# --- command line --------------------------------------------------------------------------------

@pytest.fixture
def guichet(store, accounts, database_url, tmp_path):
    from bot.cli import app as cli_app

    env = {"GUICHET_DATABASE_URL": database_url, "GUICHET_VAR_DIR": str(tmp_path),
           "GUICHET_RASA_URL": "http://127.0.0.1:9"}

    def run(*args, code=None):
        result = runner.invoke(cli_app, [str(a) for a in args], env=env)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        if code is not None:
            assert result.exit_code == code, result.output
        return result
    return run


@pytest.mark.parametrize("name, text, stored, error", TEXTS, ids=[t[0] for t in TEXTS])
def test_cli_reply_and_note_with_odd_text(guichet, store, name, text, stored, error):
    ticket = make_ticket(store, "conv-cli")
    reply = guichet("tickets", "reply", ticket.reference, text, "--as", "camille")
    note = guichet("tickets", "note", ticket.reference, text, "--as", "camille")
    if error:
        assert reply.exit_code == 2 and note.exit_code == 2
        if text:
            assert ("Le message est vide." if error == "vide" else "Message trop long") in reply.output
            assert ("La note est vide." if error == "vide" else "Note trop longue") in note.output
        else:
            assert "Donnez le texte du message" in reply.output
        assert staff_lines(store, ticket) == []
    else:
        assert reply.exit_code == 0 and note.exit_code == 0, reply.output + note.output
        assert staff_lines(store, ticket) == [f"{stored}\n— L'équipe Communication", stored]
        shown_text = guichet("tickets", "show", ticket.reference, "--as", "camille", code=0).output
        assert "\x00" not in shown_text and "\x1b" not in shown_text


@pytest.mark.parametrize("reference", FORGED + ["\udcff\udcfe", "T-2026-000001\udcff", ""],
                         ids=[r[:20] for r in FORGED] + ["surrogates", "ref+surrogate", "empty"])
def test_cli_forged_references(guichet, store, reference):
    real = make_ticket(store, "conv-cli-real")
    for args in (["show", reference], ["take", reference], ["reply", reference, "bonjour"], ["note", reference, "n"],
                 ["route", reference, "voirie"], ["status", reference, "resolved"], ["close", reference]):
        # "-1" would be read as an option: `--` first, as in a shell (click's own usage error otherwise)
        result = guichet("tickets", args[0], "--as", "camille", "--", *args[1:], code=2)
        assert "Ticket introuvable" in result.output, (args, result.output)
        assert len(result.output) < 400
    assert store.get(real.id).status == "new" and staff_lines(store, real) == []


def test_cli_other_bad_arguments(guichet, store):
    ticket = make_ticket(store, "conv-cli-args", kind="report", queue="voirie")
    cases = [
        (["tickets", "status", ticket.reference, "fini", "--as", "camille"], "Statut inconnu"),
        (["tickets", "status", ticket.reference, "resolved\udcff", "--as", "camille"], "Statut inconnu"),
        (["tickets", "status", ticket.reference, "scheduled", "--as", "camille"], "Indiquez la date prévue"),
        (["tickets", "status", ticket.reference, "scheduled", "--date", "2026-02-30", "--as", "camille"],
         "Date invalide"),
        (["tickets", "status", ticket.reference, "scheduled", "--date", "1' OR '1'='1", "--as", "camille"],
         "Date invalide"),
        (["tickets", "status", ticket.reference, "duplicate", "--duplicate-of", "../../etc", "--as", "camille"],
         "Indiquez la référence du ticket d'origine"),
        (["tickets", "route", ticket.reference, "'; DROP TABLE ticket; --", "--as", "camille"], "Service inconnu"),
        (["tickets", "route", ticket.reference, "voirie", "--kind", "<script>", "--as", "camille"], "Type inconnu"),
        (["tickets", "reply", ticket.reference, "--canned", "../../etc", "--as", "camille"], "Réponse type inconnue"),
        (["tickets", "list", "--as", "camille\udcff"], "Compte inconnu"),
        (["tickets", "list", "--as", "' OR 1=1 --"], "Compte inconnu"),
        (["tickets", "list", "--as", "x" * 5000], "Compte inconnu"),
        (["staff", "add-user", "bad\udcffname", "--role", "cm", "--password", "assez-long-123"], "Identifiant invalide"),
        (["staff", "add-user", "../../etc", "--role", "cm", "--password", "assez-long-123"], "Identifiant invalide"),
        (["staff", "add-user", "okname", "--role", "cm", "--password", "\udcff" * 12], "Mot de passe invalide"),
        (["staff", "add-user", "okname", "--role", "root", "--password", "assez-long-123"], "Rôle inconnu"),
    ]
    for args, message in cases:
        result = guichet(*args)
        assert result.exit_code == 2 and message in result.output, (args[:4], result.output)
    status = guichet("tickets", "status", ticket.reference, "in_progress", "--note", "vu\x00\udcff\x1b", "--as", "camille",
                     code=0)
    assert "in_progress" in status.output
    assert store.get(ticket.id).status == "in_progress"


def test_cli_with_invalid_utf8_arguments_in_a_real_process(store, accounts, database_url, tmp_path):
    """Real argv bytes that are not UTF-8 (Python turns them into lone surrogates)."""
    ticket = make_ticket(store, "conv-argv")
    env = {"GUICHET_DATABASE_URL": database_url, "GUICHET_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           "LANG": "C.UTF-8", "SQLALCHEMY_SILENCE_UBER_WARNING": "1"}
    guichet = str(Path(sys.executable).parent / "guichet").encode()
    for args, code, message in [
        ([b"tickets", b"note", ticket.reference.encode(), b"caf\xe9 \xff\xfe ok", b"--as", b"camille"], 0, "Note ajoutée"),
        ([b"tickets", b"show", b"T-2026-\xff\xfe", b"--as", b"camille"], 2, "Ticket introuvable"),
        ([b"tickets", b"list", b"--as", b"cam\xffille"], 2, "Compte inconnu"),
        ([b"citizen", b"export", b"conv-\xff"], 2, "Identifiant de conversation invalide"),
    ]:
        result = subprocess.run([guichet, *args], cwd=ROOT, env=env, capture_output=True, timeout=120)
        out = (result.stdout + result.stderr).decode("utf-8", "replace")
        assert result.returncode == code, out
        assert message in out and "Traceback" not in out, out
    assert staff_lines(store, ticket) == ["caf  ok"]  # the undecodable bytes dropped
