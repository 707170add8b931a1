"""The website chat in a real Chromium (JavaScript on), on a fake town site of another origin.

A citizen asks an FAQ question, reports a problem with a photo, reloads the page and still sees the
conversation, asks for a person and receives the CM's reply sent from the staff web, without
reloading. The same conversation with the keyboard alone. axe-core 4.x on the widget, open and
closed, and on the demo page, desktop and phone; screenshots in var/screenshots/webchat-*.png.
"""
from __future__ import annotations

import http.server
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from test_browser import DESKTOP, PHONE, _chromium, axe_violations, resize, screenshot, wait_for
from test_webchat import png, running_webchat

pytestmark = pytest.mark.slow
PASSWORD = "motdepasse-solide"


@pytest.fixture(scope="module")
def browser_js(tmp_path_factory):
    yield from _chromium(tmp_path_factory, javascript=True)


@pytest.fixture(scope="module")
def town(stack, tmp_path_factory):
    """The webchat server, and a fake town site on another origin whose pages carry the one script tag."""
    from bot.accounts import AccountError, Accounts
    from bot.hours import StaffHours
    from bot.integrations.rasa_api import resume_conversation
    from bot.profile import load_profile
    from bot.replies import Replies
    from bot.staff import StaffDesk
    from bot.tickets import TicketStore

    root = Path(__file__).resolve().parent.parent
    store = TicketStore(stack.database_url)
    profile = load_profile(root / "collectivite.yml")
    desk = StaffDesk(store, profile, StaffHours.from_town(profile.town), Replies.load(root / "bot" / "replies.fr.yml", profile),
                     resume_conversation=lambda c: resume_conversation(c, rasa_url=stack.rasa_url))
    try:
        Accounts(store, profile).create("camille", PASSWORD, "cm", display_name="Camille")
    except AccountError:
        pass
    site_dir = tmp_path_factory.mktemp("site")
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site_dir)))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{site.server_address[1]}"
    with running_webchat(stack.rasa_url, store, desk, tmp_path_factory.mktemp("webchat-var"), origins=(origin,)) as chat:
        (site_dir / "index.html").write_text(
            '<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Ville de Valbourg</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            '<body><header><p>Ville de Valbourg</p></header><main><h1>Bienvenue à Valbourg</h1>'
            '<p>Toutes les démarches de la commune.</p></main>'
            f'<script src="{chat.base}/guichet-chat.js" defer data-title="Mairie de Valbourg"></script></body></html>',
            encoding="utf-8")
        yield type("Town", (), {"chat": chat, "site": origin, "store": store, "desk": desk, "profile": profile})
    site.shutdown()
    site.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def messages(driver) -> list[str]:
    return [e.text for e in css(driver, ".gc-log .gc-msg")]


def wait_message(driver, needle: str, timeout: float = 90) -> str:
    found = wait_for(lambda: next((t for t in messages(driver) if needle in t), None), timeout=timeout, step=0.3)
    assert found, f"no message with {needle!r} in {messages(driver)}"
    return found


def open_page(driver, url: str, fresh: bool = False) -> None:
    driver.get(url)
    if fresh:
        driver.execute_script("localStorage.clear()")
        driver.get(url)
    assert wait_for(lambda: css(driver, ".gc-launcher"), timeout=20, step=0.2), "the launcher never appeared"


def send(driver, text: str) -> None:
    field = css(driver, ".gc-input")[0]
    field.send_keys(text)
    css(driver, ".gc-composer button[type=submit]")[0].click()


def reply_from_the_staff_web(town, reference: str, text: str) -> None:
    from conftest import staff_web_client

    client, token = staff_web_client(town.desk, "camille", PASSWORD)
    client.post(f"/tickets/{reference}/take", data={"csrf_token": token})
    response = client.post(f"/tickets/{reference}/reply", data={"csrf_token": token, "message": text, "canned": "",
                                                               "action": "send"})
    assert response.status_code in (302, 303)


def test_a_citizen_on_the_town_site_from_question_to_the_cms_reply(town, browser_js, tmp_path):
    driver = browser_js
    resize(driver, DESKTOP)
    open_page(driver, f"{town.site}/index.html", fresh=True)
    assert not css(driver, ".gc-panel")[0].is_displayed()
    css(driver, ".gc-launcher")[0].click()
    assert wait_for(lambda: css(driver, ".gc-privacy")[0].is_displayed(), timeout=20, step=0.2)
    assert "conservés" in css(driver, ".gc-privacy")[0].text
    css(driver, ".gc-privacy button")[0].click()

    send(driver, "bonjour, la piscine est ouverte le dimanche ?")
    wait_message(driver, "valbourg.example/piscine")
    assert css(driver, ".gc-log a[href*='valbourg.example/piscine']"), "the FAQ link is not a link"

    send(driver, "un lampadaire ne s'allume plus")
    wait_message(driver, "Où exactement")
    picture = tmp_path / "lampadaire.png"
    picture.write_bytes(png(8, 8))
    css(driver, ".gc-file")[0].send_keys(str(picture))
    send_photo = wait_for(lambda: [b for b in css(driver, ".gc-pending button") if b.is_displayed()], timeout=10, step=0.2)
    if send_photo:
        send_photo[0].click()
    wait_message(driver, "Photo bien reçue")
    send(driver, "devant le 12 rue des Tilleuls")
    receipt = wait_message(driver, "T-20")
    conversation = town.chat.tokens.conversation(driver.execute_script("return localStorage.getItem('guichet-chat-token')"))
    [ticket] = town.store.for_conversation(conversation)
    assert ticket.reference in receipt and ticket.channel == "webchat"
    assert any(m.text.startswith("[photo] /pieces-jointes/") for m in town.store.transcript(ticket.id))
    screenshot(driver, "webchat-site-open-desktop", DESKTOP)

    # A reload (or another tab of the same site): the conversation is still there.
    open_page(driver, f"{town.site}/index.html")
    css(driver, ".gc-launcher")[0].click()
    wait_message(driver, "valbourg.example/piscine", timeout=20)
    wait_message(driver, ticket.reference, timeout=5)

    send(driver, "je voudrais parler à une personne de la mairie")
    wait_for(lambda: town.store.open_handoff(conversation), timeout=60)
    handoff = town.store.open_handoff(conversation)
    assert wait_for(lambda: css(driver, ".gc-handoff")[0].text.strip(), timeout=30, step=0.3)

    # The panel closed: the CM's reply, sent from the staff web, arrives within seconds and the
    # launcher says so.
    css(driver, ".gc-close")[0].click()
    reply_from_the_staff_web(town, handoff.reference, "Bonjour, ici Camille : je regarde votre demande tout de suite.")
    assert wait_for(lambda: "nouveau message" in css(driver, ".gc-launcher")[0].get_attribute("aria-label"),
                    timeout=35, step=0.3), css(driver, ".gc-launcher")[0].get_attribute("aria-label")
    screenshot(driver, "webchat-site-closed-new-message-phone", PHONE)
    css(driver, ".gc-launcher")[0].click()
    wait_message(driver, "je regarde votre demande", timeout=5)
    assert "pris le relais" in css(driver, ".gc-handoff")[0].text

    # A forged token reads nothing: the widget starts a fresh conversation.
    driver.execute_script("localStorage.setItem('guichet-chat-token', localStorage.getItem('guichet-chat-token') + 'x')")
    open_page(driver, f"{town.site}/index.html")
    css(driver, ".gc-launcher")[0].click()
    assert wait_for(lambda: messages(driver) and not any("piscine" in t for t in messages(driver)), timeout=20, step=0.3)


def test_the_whole_conversation_with_the_keyboard_alone(town, browser_js):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = browser_js
    resize(driver, PHONE)
    open_page(driver, f"{town.site}/index.html", fresh=True)
    active = lambda: driver.switch_to.active_element  # noqa: E731
    keys = lambda *k: ActionChains(driver).send_keys(*k).perform()  # noqa: E731
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.focus();")
    for _ in range(20):  # Tab from the top of the page until the launcher has the focus
        keys(Keys.TAB)
        if "gc-launcher" in (active().get_attribute("class") or ""):
            break
    assert "gc-launcher" in active().get_attribute("class")
    outline = driver.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "no visible focus on the launcher"
    keys(Keys.ENTER)
    assert wait_for(lambda: "J" in (active().text or "") and "compris" in active().text, timeout=20, step=0.2), active().text
    keys(Keys.ENTER)
    assert wait_for(lambda: "gc-input" in (active().get_attribute("class") or ""), timeout=5, step=0.2)
    keys("quels sont les horaires de la mairie ?", Keys.ENTER)
    wait_message(driver, "valbourg.example")

    # A message with buttons (the satisfaction question after a closed ticket), chosen with the keyboard.
    from bot import relay

    conversation = town.chat.tokens.conversation(driver.execute_script("return localStorage.getItem('guichet-chat-token')"))
    relay.send_to_citizen(town.store, conversation, "webchat", "Êtes-vous satisfait(e) de notre réponse ?",
                          buttons=[{"title": "👍 Oui", "payload": "oui"}, {"title": "👎 Non", "payload": "non"}])
    wait_message(driver, "satisfait", timeout=35)
    assert wait_for(lambda: css(driver, ".gc-quick button"), timeout=10, step=0.2)
    for _ in range(30):
        if (active().tag_name == "button" and "Oui" in active().text):
            break
        keys(Keys.SHIFT, Keys.TAB) if "gc-input" in (active().get_attribute("class") or "") else keys(Keys.TAB)
    assert "Oui" in active().text, active().text
    keys(Keys.ENTER)
    assert wait_for(lambda: any(t.strip().endswith("👍 Oui") or "Oui" == t.strip().split(":")[-1].strip()
                                for t in messages(driver)), timeout=10, step=0.3), messages(driver)
    keys(Keys.ESCAPE)
    assert wait_for(lambda: not css(driver, ".gc-panel")[0].is_displayed(), timeout=5, step=0.2)
    assert "gc-launcher" in active().get_attribute("class"), "the focus did not go back to the launcher"


def test_axe_finds_no_wcag_violation_on_the_widget_and_the_demo(town, browser_js):
    driver = browser_js
    found: dict[str, list[str]] = {}
    for url, name in ((f"{town.site}/index.html", "site"), (f"{town.chat.base}/demo", "demo")):
        for size, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
            resize(driver, size)
            open_page(driver, url, fresh=True)
            found[f"{name} closed {label}"] = axe_violations(driver)
            screenshot(driver, f"webchat-{name}-closed-{label}", size)
            css(driver, ".gc-launcher")[0].click()
            assert wait_for(lambda: css(driver, ".gc-privacy")[0].is_displayed(), timeout=20, step=0.2)
            time.sleep(0.8)  # the panel's opening transition is over: colours are the final ones
            found[f"{name} open (privacy) {label}"] = axe_violations(driver)
            css(driver, ".gc-privacy button")[0].click()
            time.sleep(0.8)
            found[f"{name} open {label}"] = axe_violations(driver)
            screenshot(driver, f"webchat-{name}-open-{label}", size)
    assert {k: v for k, v in found.items() if v} == {}
    # 320 px wide: the panel fits, nothing scrolls sideways.
    resize(driver, (320, 640))
    open_page(driver, f"{town.chat.base}/demo")
    css(driver, ".gc-launcher")[0].click()
    time.sleep(0.5)
    assert driver.execute_script("return document.documentElement.scrollWidth") <= 320
    panel = css(driver, ".gc-panel")[0].rect
    assert panel["x"] >= 0 and panel["x"] + panel["width"] <= 320
    resize(driver, DESKTOP)


def test_the_script_and_stylesheet_stay_small():
    static = Path(__file__).resolve().parent.parent / "bot" / "channels" / "webchat" / "static"
    js, style = (static / "guichet-chat.js").stat().st_size, (static / "guichet-chat.css").stat().st_size
    assert js < 24_000 and style < 16_000, (js, style)
    text = (static / "guichet-chat.js").read_text(encoding="utf-8")
    import re

    code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)  # comments may name what the code avoids
    assert not re.search(r"\.innerHTML\b|\beval\(|new Function\(|document\.write", code)
