"""Staff security: a service head cannot reach another service's ticket (web and command line),
sessions expire and die at logout (a replayed cookie is refused), logins are rate-limited per
account and per client address, passwords are argon2id, and Rasa's HTTP API wants its token."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import requests
from argon2 import PasswordHasher, extract_parameters
from argon2.low_level import Type
from sqlalchemy import select
from typer.testing import CliRunner

from bot.models import StaffUser
from bot.web import create_app
from bot.web.security import LoginThrottle
from test_web import PASSWORD, accounts, app, client, csrf, desk, login, make_ticket, outbox, page, post, resumed  # noqa: F401

runner = CliRunner()


def visible_effects(store, ticket) -> tuple:
    """Everything an action on this ticket could change."""
    current = store.get(ticket.id)
    staff_lines = [m.text for m in store.transcript(ticket.id) if m.author == "staff"]
    return (current.status, current.queue, current.kind, current.assigned_to, current.duplicate_of_id,
            tuple(staff_lines), tuple(outbox(store, ticket.conversation_id)))


def variations(ticket) -> list[str]:
    number = ticket.reference.rsplit("-", 1)[1]
    year = ticket.reference.split("-")[1]
    return [ticket.reference, ticket.reference.lower(), f"T{year}{number}", f"t-{year}-{int(number)}",
            f"ticket {number}", f"dossier n° {number}", f"ref {number}", f" {ticket.reference} "]


# --- a head only reaches their own service -------------------------------------------------------

@pytest.fixture
def others(store):
    """Tickets victor (voirie) must never reach: another service's, a hand-off, a closed one."""
    proprete = make_ticket(store, "conv-proprete", kind="report", queue="proprete", summary="dépôt sauvage",
                           citizen_text="dépôt sauvage derrière le gymnase, signé Mme Lenoir")
    handoff = make_ticket(store, "conv-handoff", citizen_text="je veux parler au maire, c'est personnel")
    closed = make_ticket(store, "conv-closed", kind="report", queue="espaces_verts", summary="haie")
    store.set_status(closed.id, "closed", "camille")
    return [proprete, handoff, closed]


def test_head_cannot_reach_another_service_by_url(client, store, others):
    own = make_ticket(store, "conv-own", kind="report", queue="voirie", summary="lampadaire")
    login(client, "victor")
    before = {t.id: visible_effects(store, t) for t in others}
    for ticket in others:
        for reference in variations(ticket):
            path = f"/tickets/{requests.utils.quote(reference, safe='')}"
            response = client.get(path)
            assert response.status_code == 404, (path, response.status_code)
            html = page(response)
            assert "Introuvable" in html and ticket.summary not in html and "Lenoir" not in html
            for action, data in [("take", {}), ("reply", {"message": "bonjour", "action": "send"}),
                                 ("note", {"note": "note"}), ("route", {"service": "voirie", "kind": "report"}),
                                 ("status", {"status": "resolved"}), ("status", {"status": "not_ours"}),
                                 ("close", {"note": "fin"})]:
                response = post(client, f"{path}/{action}", **data)
                assert response.status_code == 404, (path, action, response.status_code)
            response = client.get("/recherche", query_string={"reference": reference}, follow_redirects=True)
            assert "Aucun ticket" in page(response) and ticket.summary not in page(response)
    assert {t.id: visible_effects(store, t) for t in others} == before
    # Nor through another form field: marking their own ticket a duplicate of another service's.
    post(client, f"/tickets/{own.reference}/status", status="duplicate", duplicate_of=others[0].reference)
    assert "Indiquez la référence du ticket d'origine" in page(client.get(f"/tickets/{own.reference}")).replace(
        "&#39;", "'")
    assert store.get(own.id).duplicate_of_id is None and store.get(own.id).status == "new"
    assert outbox(store, "conv-own") == []
    # Their own ticket works with the same variations.
    for reference in variations(own)[:4]:
        assert client.get(f"/tickets/{requests.utils.quote(reference, safe='')}").status_code == 200


def test_head_cannot_reach_another_service_from_the_command_line(store, accounts, others, database_url, tmp_path):
    from bot.cli import app as cli_app

    env = {"GUICHET_DATABASE_URL": database_url, "GUICHET_VAR_DIR": str(tmp_path),
           "GUICHET_RASA_URL": "http://127.0.0.1:9"}
    before = {t.id: visible_effects(store, t) for t in others}
    for ticket in others:
        for reference in variations(ticket)[:5]:
            for args in (["show", reference], ["take", reference], ["reply", reference, "bonjour"],
                         ["note", reference, "note"], ["route", reference, "voirie"],
                         ["status", reference, "resolved"], ["status", reference, "not_ours"],
                         ["close", reference]):
                result = runner.invoke(cli_app, ["tickets", *args, "--as", "victor"], env=env)
                assert result.exit_code == 2, (args, result.output)
                assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
                assert "Seul le community manager" in result.output or "introuvable" in result.output, result.output
                assert ticket.summary not in result.output
    listed = runner.invoke(cli_app, ["tickets", "list", "--all", "--as", "victor"], env=env).output
    assert all(t.reference not in listed for t in others)
    assert {t.id: visible_effects(store, t) for t in others} == before


# --- sessions ------------------------------------------------------------------------------------

def test_default_session_lasts_eight_hours(desk, accounts):
    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key="s" * 32)
    clock = [2_000_000.0]
    app.config["GUICHET_CLOCK"] = lambda: clock[0]
    client = app.test_client()
    login(client)
    assert app.permanent_session_lifetime == dt.timedelta(hours=8)
    clock[0] += 8 * 3600 - 60
    assert client.get("/queue").status_code == 200
    clock[0] += 120
    response = client.get("/queue")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def session_cookie(client) -> str:
    return client.get_cookie("guichet_session").value


def with_cookie(app, value: str):
    other = app.test_client()
    other.set_cookie("guichet_session", value)
    return other


def test_logout_kills_the_session_even_if_the_cookie_is_replayed(app, client):
    login(client)
    stolen = session_cookie(client)
    assert with_cookie(app, stolen).get("/queue").status_code == 200  # the copy works while logged in
    post(client, "/logout")
    replay = with_cookie(app, stolen)
    response = replay.get("/queue")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    # Nor can a replayed cookie post anything (its CSRF token is inside the dead session).
    assert with_cookie(app, stolen).post("/logout").status_code in (302, 400)
    # Logging in again gives a new, working session.
    login(client)
    assert client.get("/queue").status_code == 200
    assert with_cookie(app, stolen).get("/queue").status_code == 302


def test_password_change_ends_every_session(app, client, accounts):
    login(client)
    other_device = app.test_client()
    login(other_device)
    accounts.set_password("camille", "un-nouveau-mot-de-passe")
    for c in (client, other_device):
        assert c.get("/queue").status_code == 302
    assert login(client, "camille", PASSWORD).status_code == 401  # the old one no longer works
    assert login(client, "camille", "un-nouveau-mot-de-passe").status_code == 302
    assert client.get("/queue").status_code == 200


def test_set_password_from_the_command_line(store, accounts, database_url, tmp_path):
    from bot.cli import app as cli_app

    env = {"GUICHET_DATABASE_URL": database_url, "GUICHET_VAR_DIR": str(tmp_path)}
    ok = runner.invoke(cli_app, ["staff", "set-password", "victor", "--password", "encore-un-autre-42"], env=env)
    assert ok.exit_code == 0 and "sessions ouvertes sont fermées" in ok.output
    assert accounts.authenticate("victor", "encore-un-autre-42") is not None
    for args, message in [(["staff", "set-password", "victor", "--password", "court"], "trop court"),
                          (["staff", "set-password", "personne", "--password", "assez-long-123"], "Compte inconnu")]:
        result = runner.invoke(cli_app, args, env=env)
        assert result.exit_code == 2 and message in result.output


def test_a_forged_or_foreign_cookie_is_refused(desk, accounts, app, client):
    login(client)
    cookie = session_cookie(client)
    tampered = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    assert with_cookie(app, tampered).get("/queue").status_code == 302
    other_app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key="une autre clé" * 3)
    assert with_cookie(other_app, cookie).get("/queue").status_code == 302


# --- login rate limits ---------------------------------------------------------------------------

def test_per_address_limit_stops_one_address_trying_many_accounts(app):
    assert LoginThrottle().limit == 20 and LoginThrottle().window == 15 * 60  # the defaults
    state = app.extensions["guichet"]
    state.throttle = LoginThrottle(limit=5, window=900)
    clock = [3_000_000.0]
    app.config["GUICHET_CLOCK"] = lambda: clock[0]
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.7"
    for index in range(5):  # five different accounts, one failure each: no account gets locked
        assert login(attacker, f"compte{index}", "devine-devine").status_code == 401
    response = login(attacker, "camille", PASSWORD)  # even the right password, from that address
    assert response.status_code == 429 and "Trop de tentatives de connexion depuis cette adresse" in page(response)
    with attacker.session_transaction() as session:
        assert "user" not in session
    # Someone else, elsewhere, logs in normally; the accounts themselves are not locked.
    colleague = app.test_client()
    colleague.environ_base["REMOTE_ADDR"] = "198.51.100.20"
    assert login(colleague, "camille", PASSWORD).status_code == 302
    # After the window, the address may try again.
    clock[0] += 901
    assert login(attacker, "camille", PASSWORD).status_code == 302


def test_per_account_lock_after_five_failures_lasts_fifteen_minutes(store, accounts):
    moment = dt.datetime(2026, 11, 20, 10, 0)
    for _ in range(5):
        assert accounts.authenticate("victor", "pas-le-bon", now=moment) is None
    assert accounts.authenticate("victor", PASSWORD, now=moment + dt.timedelta(minutes=14)) is None
    assert accounts.authenticate("victor", PASSWORD, now=moment + dt.timedelta(minutes=16)) is not None


# --- password hashes -----------------------------------------------------------------------------

def test_passwords_are_argon2id_with_memory_hard_parameters(store, accounts):
    with store.session() as session:
        hashes = list(session.execute(select(StaffUser.password_hash)).scalars())
    assert len(hashes) == 3 and len(set(hashes)) == 3  # salted: same password, different hashes
    for stored in hashes:
        assert stored.startswith("$argon2id$v=19$") and PASSWORD not in stored
        parameters = extract_parameters(stored)
        assert parameters.type is Type.ID
        assert parameters.memory_cost >= 64 * 1024  # KiB: 64 MiB (OWASP's minimum is 19 MiB)
        assert parameters.time_cost >= 3 and parameters.parallelism >= 1
        assert parameters.salt_len >= 16 and parameters.hash_len >= 32


def test_a_weak_old_hash_is_upgraded_at_the_next_login(store, accounts):
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with store.session() as session:
        session.execute(StaffUser.__table__.update().where(StaffUser.username == "camille").values(password_hash=weak))
        session.commit()
    assert accounts.authenticate("camille", PASSWORD) is not None
    with store.session() as session:
        upgraded = session.execute(select(StaffUser.password_hash).where(StaffUser.username == "camille")).scalar()
    assert upgraded != weak and extract_parameters(upgraded).memory_cost >= 64 * 1024


def test_staff_web_server_defaults_to_loopback():
    import inspect

    from bot.cli import staff_serve
    from bot.web.app import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(staff_serve).parameters["host"].default.default == "127.0.0.1"


# --- Rasa's HTTP API (the real servers) ----------------------------------------------------------

TOKEN = "jeton-de-test-0123456789abcdef"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on this TCP port (from /proc/net/tcp and tcp6)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                if width == 8:
                    found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
                else:
                    found.add("ipv6:" + address)
    return found


LOOPBACK = {"127.0.0.1", "ipv6:00000000000000000000000001000000"}


@pytest.fixture(scope="module")
def tokened_stack(model_path, tmp_path_factory):
    from bot.stack import running_stack

    var_dir = tmp_path_factory.mktemp("secured")
    with running_stack(model_path, f"sqlite:///{var_dir / 'guichet.db'}", var_dir, token=TOKEN) as stack:
        yield stack


@pytest.mark.slow
def test_rasa_api_refuses_admin_endpoints_without_the_token(tokened_stack):
    base = tokened_stack.rasa_url
    events = [{"event": "slot", "name": "ticket_service", "value": "voirie"}]
    admin = [
        ("put", "/conversations/victime/tracker/events", {"json": events}),
        ("post", "/conversations/victime/tracker/events", {"json": events}),
        ("get", "/conversations/victime/tracker", {}),
        ("get", "/conversations/victime/story", {}),
        ("post", "/conversations/victime/execute", {"json": {"name": "action_listen"}}),
        ("post", "/conversations/victime/trigger_intent", {"json": {"name": "greet"}}),
        ("post", "/model/parse", {"json": {"text": "bonjour"}}),
        ("put", "/model", {"json": {"model_file": "/tmp/x.tar.gz"}}),
        ("delete", "/model", {}),
        ("get", "/status", {}),
        ("get", "/domain", {}),
    ]
    for method, path, kwargs in admin:
        for params in ({}, {"token": "mauvais-jeton"}):
            response = getattr(requests, method)(base + path, params=params, timeout=30, **kwargs)
            assert response.status_code in (401, 403), (method, path, params, response.status_code)
    # With the token the API answers (the staff desk uses it to give a conversation back)...
    assert requests.get(base + "/status", params={"token": TOKEN}, timeout=30).status_code == 200
    tracker = requests.get(base + "/conversations/victime/tracker", params={"token": TOKEN}, timeout=30)
    assert tracker.status_code == 200 and tracker.json()["slots"].get("ticket_service") is None  # nothing injected
    # ... and the citizen's channel stays open without it.
    answer = requests.post(tokened_stack.chat_url, json={"sender": "citoyen-1", "message": "bonjour"}, timeout=60)
    assert answer.status_code == 200 and answer.json()


@pytest.mark.slow
def test_the_servers_listen_on_loopback_only(tokened_stack):
    rasa = listening_addresses(tokened_stack.rasa_port)
    assert rasa and rasa <= LOOPBACK, rasa
    action = listening_addresses(tokened_stack.action_port)
    assert action and action <= LOOPBACK, action  # bot/stack.py sets SANIC_HOST=127.0.0.1 for rasa_sdk