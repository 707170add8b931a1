"""The plan of the town for staff (bot.town_map): drawn from the commune's address file, open tickets
as points, the selected one ringed; on a service head's queue and a ticket page, with the followers
of a « déjà signalé » ticket and their split. Looked at in a real Chromium, desktop and phone."""
from __future__ import annotations

import re
import secrets
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot import places, town_map
from bot.accounts import Accounts
from bot.followers import Followers
from bot.staff import StaffDesk
from bot.tickets import NewTicket

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"
PASSWORD = "un-mot-de-passe-solide"


@pytest.fixture
def town(store, assistant):
    places.load(store, REFERENCE / "valbourg-adresses.csv", REFERENCE / "valbourg-lieux.csv")
    accounts = Accounts(store, assistant.profile)
    accounts.create("camille", PASSWORD, "cm", display_name="Camille")
    accounts.create("victor", PASSWORD, "head", "voirie", display_name="Victor (voirie)")
    desk = StaffDesk(store, assistant.profile, assistant.hours, assistant.replies)
    made = []
    for conversation, words in (("telegram-1", "lampadaire éteint devant le 12 rue des Tilleuls"),
                                ("web-2", "nid de poule 3 avenue Foch"), ("messenger-3", "trottoir cassé 8 rue Pasteur")):
        ticket, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id=conversation,
                                           channel=conversation.split("-")[0], summary=words, location=words))
        match = places.match(store, words)
        assert match is not None, words
        made.append(store.set_place(ticket.id, match.label, match.kind, match.confidence, match.lat, match.lon))
    Followers(store).follow(made[0].id, "webchat-9", "webchat", "Paul")
    return SimpleNamespace(desk=desk, accounts=accounts, tickets=made)


def test_the_plan_has_the_streets_the_tickets_and_the_selected_one(store, town):
    svg = town_map.render(store, town.tickets, town.tickets[0])
    assert svg.startswith("<svg") and 'role="group"' in svg and "Plan de la commune" in svg
    assert svg.count("<polyline") > 20  # the streets of the address file
    assert len(re.findall(r'<circle cx="[\d.]+" cy="[\d.]+" r="[68]"', svg)) == 3
    assert svg.count('r="13"') == 1 and town.tickets[0].reference in svg  # the selected one, ringed and named
    assert "<script" not in svg and "style=" not in svg  # nothing the staff pages' CSP would refuse
    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert all(0 <= x <= town_map.WIDTH for x in xs)


def test_without_an_address_file_there_is_no_plan(store):
    assert town_map.render(store, []) is None


@pytest.fixture
def live(town, store):
    from werkzeug.serving import make_server

    from bot.stack import free_port
    from bot.web import create_app

    app = create_app(desk_factory=lambda: town.desk, accounts=town.accounts, secret_key=secrets.token_hex(32))
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture(scope="module")
def chromium_js(tmp_path_factory):
    from test_browser import _chromium

    yield from _chromium(tmp_path_factory, javascript=True)


@pytest.mark.slow
def test_the_plan_and_the_followers_in_a_real_browser(live, chromium_js, store, town):
    from test_browser import DESKTOP, PHONE, axe_violations, body, both_sizes, css, resize, submit

    driver = chromium_js
    driver.delete_all_cookies()
    driver.get(f"{live.url}/queue")
    css(driver, "#username").send_keys("victor")
    css(driver, "#password").send_keys(PASSWORD)
    submit(driver, "form.action")
    assert "Sur le plan" in body(driver) and "déjà signalé par 2 citoyens" in body(driver)
    both_sizes(driver, "head-queue-map")
    found = {}
    for size, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
        resize(driver, size)
        found[f"queue {label}"] = axe_violations(driver)

    first = town.tickets[0]
    driver.get(f"{live.url}/tickets/{first.reference}")
    text = body(driver)
    assert "Compris : 12 Rue des Tilleuls" in text and "1 autre citoyen suit ce ticket" in text and "Paul" in text
    svg = css(driver, ".map svg")
    assert svg.size["width"] > 300 and svg.size["height"] > 150
    both_sizes(driver, "head-ticket-map")
    for size, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
        resize(driver, size)
        found[f"ticket {label}"] = axe_violations(driver)
    resize(driver, DESKTOP)
    assert {k: v for k, v in found.items() if v} == {}

    submit(driver, "#suiveurs form")
    assert "a maintenant son propre ticket" in body(driver)
    assert Followers(store).of_ticket(first.id) == []
    assert [t.queue for t in store.for_conversation("webchat-9")] == ["voirie"]
