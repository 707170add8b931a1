"""The staff web interface in a real headless Chromium, with JavaScript turned off, against the real
assistant (Rasa + action server, the `stack` fixture) and the web server on loopback.

Two people at work: the CM answers and closes a hand-off (the citizen gets the reply and the bot
talks to them again), the head of Voirie resolves a street-light report (the citizen is told) and
cannot see another service's ticket. Screenshots of each page, desktop and phone, go to
var/screenshots/.
"""
from __future__ import annotations

import base64
import os
import secrets
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "un-mot-de-passe-solide"
DESKTOP, PHONE = (1280, 900), (390, 844)


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def web(stack):
    """The staff web server (werkzeug, threaded) on a free loopback port, on the stack's database."""
    from werkzeug.serving import make_server

    from bot.accounts import Accounts
    from bot.hours import StaffHours
    from bot.integrations.rasa_api import resume_conversation
    from bot.profile import load_profile
    from bot.replies import Replies
    from bot.stack import free_port
    from bot.staff import StaffDesk
    from bot.tickets import TicketStore
    from bot.web import create_app

    profile = load_profile(ROOT / "collectivite.yml")
    replies = Replies.load(ROOT / "bot" / "replies.fr.yml", profile)
    store = TicketStore(stack.database_url)
    desk = StaffDesk(store, profile, StaffHours.from_town(profile.town), replies,
                     resume_conversation=lambda conversation: resume_conversation(conversation,
                                                                                  rasa_url=stack.rasa_url))
    accounts = Accounts(store, profile)
    accounts.create("camille", PASSWORD, "cm", display_name="Camille (communication)")
    accounts.create("victor", PASSWORD, "head", "voirie", display_name="Victor (voirie)")
    app = create_app(desk_factory=lambda: desk, accounts=accounts, secret_key=secrets.token_hex(32))
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", app=app, store=store, desk=desk)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from _chromium(tmp_path_factory, javascript=False)


@pytest.fixture(scope="module")
def browser_js(tmp_path_factory):
    """Chromium with JavaScript on: the queue's own updater (bot/web/static/queue.js)."""
    yield from _chromium(tmp_path_factory, javascript=True)


def _chromium(tmp_path_factory, javascript: bool):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver",
                    pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--hide-scrollbars", "--lang=fr-FR", f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    # JavaScript off (the whole desk must work with plain HTML forms), or on for the queue's updater.
    options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 1 if javascript else 2,
                                              "intl.accept_languages": "fr-FR,fr"})
    service = Service(str(CHROMEDRIVER), env={**os.environ, "LANG": "fr_FR.UTF-8", "LANGUAGE": "fr_FR:fr"})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


# --- helpers -------------------------------------------------------------------------------------

def say(stack, sender: str, text: str) -> list[str]:
    response = requests.post(stack.chat_url, json={"sender": sender, "message": text}, timeout=60)
    response.raise_for_status()
    return [m.get("text", "") for m in response.json()]


def collect(stack, sender: str) -> list[str]:
    """What staff sent this citizen since the last call (the relay's pull endpoint)."""
    response = requests.get(f"{stack.rasa_url}/webhooks/guichet/outbox", params={"sender": sender}, timeout=10)
    response.raise_for_status()
    return [m["text"] for m in response.json()]


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def body(driver) -> str:
    return css(driver, "body").text


def click_and_wait(driver, element) -> None:
    """Click a link or a submit button and wait until the next page (after any redirect) is loaded."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.wait import WebDriverWait

    def old_page_gone(_driver) -> bool:
        # Chromium may answer "Node with given id does not belong to the document" instead of a
        # stale-element error while the next page replaces the old one: both mean it is gone.
        try:
            old_page.is_enabled()
            return False
        except WebDriverException:
            return True

    old_page = css(driver, "html")
    element.click()
    WebDriverWait(driver, 30).until(old_page_gone)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def submit(driver, form_selector: str, button: str = "button[type=submit]") -> None:
    click_and_wait(driver, css(driver, f"{form_selector} {button}"))


def login(driver, web, username: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{web.url}/queue")
    assert "/login" in driver.current_url and "Connexion à l'espace agents" in body(driver)
    css(driver, "#username").send_keys(username)
    css(driver, "#password").send_keys(PASSWORD)
    submit(driver, "form.action")
    assert driver.current_url.endswith("/queue"), driver.current_url
    assert "Bonjour" in body(driver)


def no_script(driver) -> None:
    """No inline script anywhere; the only script is our own file (the queue's updater)."""
    from selenium.webdriver.common.by import By

    for script in driver.find_elements(By.TAG_NAME, "script"):
        assert script.get_attribute("src").endswith("/static/queue.js"), script.get_attribute("outerHTML")
        assert not (script.get_attribute("innerHTML") or "").strip()


def in_view(driver, element) -> bool:
    return driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return r.top >= 0 && r.bottom <= window.innerHeight", element)


def resize(driver, size: tuple[int, int]) -> dict:
    """Set the window size and wait until the page is laid out at the new width."""
    driver.set_window_size(*size)
    metrics = {}

    def settled():
        nonlocal metrics
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        return metrics["cssLayoutViewport"]["clientWidth"] <= size[0] and \
            metrics["cssLayoutViewport"]["clientWidth"] >= size[0] - 20  # a scroll bar may take some
    assert wait_for(settled, timeout=5, step=0.1), metrics
    time.sleep(0.2)  # let the layout settle before anyone clicks
    return driver.execute_cdp_cmd("Page.getLayoutMetrics", {})


def screenshot(driver, name: str, size: tuple[int, int]) -> Path:
    """A full-page PNG at this window size (CSS pixels), then back to the desktop size."""
    metrics = resize(driver, size)
    width = metrics["cssLayoutViewport"]["clientWidth"]
    height = min(metrics["cssContentSize"]["height"], 8000)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
    })
    path = SCREENSHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    resize(driver, DESKTOP)
    return path


def both_sizes(driver, name: str) -> None:
    screenshot(driver, f"{name}-desktop", DESKTOP)
    screenshot(driver, f"{name}-phone", PHONE)


def wait_for(condition, timeout: float = 20, step: float = 0.5):
    """Poll ``condition`` until it is truthy (a page reloading under our feet counts as "not yet")."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except WebDriverException:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


# --- the scenarios -------------------------------------------------------------------------------

def test_cm_answers_and_closes_a_handoff(stack, web, browser):
    citizen = f"web-a-{uuid.uuid4().hex[:8]}"
    replies = say(stack, citizen, "je veux parler à quelqu'un de la mairie svp")
    [ticket] = web.store.for_conversation(citizen)
    assert ticket.kind == "handoff" and ticket.queue == "cm" and any(ticket.reference in r for r in replies)

    login(browser, web, "camille")
    assert "Transferts et tickets à orienter" in body(browser) and ticket.reference in body(browser)
    assert "demande à parler à une personne" in body(browser)
    no_script(browser)
    both_sizes(browser, "cm-queue")

    # Without JavaScript, a new hand-off is one click away ("actualiser"); nothing reloads by itself.
    browser.get(f"{web.url}/queue")
    assert 'http-equiv="refresh"' not in browser.page_source
    newcomer = f"web-c-{uuid.uuid4().hex[:8]}"
    say(stack, newcomer, "passez-moi un conseiller humain")
    [late] = web.store.for_conversation(newcomer)
    click_and_wait(browser, css(browser, "#actualiser"))
    assert late.reference in body(browser)

    browser.get(f"{web.url}/queue")
    click_and_wait(browser, css(browser, f"a[href='/tickets/{ticket.reference}']"))
    assert browser.current_url.endswith(f"/tickets/{ticket.reference}")
    page = body(browser)
    assert "je veux parler à quelqu'un de la mairie svp" in page and "Transfert au community manager" in page

    both_sizes(browser, "cm-ticket-before-take")
    resize(browser, PHONE)  # on a phone the main action is on the first screen
    assert in_view(browser, css(browser, "form[action$='/take'] button")), "take is below the first screen"
    resize(browser, DESKTOP)
    submit(browser, "form[action$='/take']")
    assert "Vous avez pris en charge le ticket" in body(browser)
    assert web.store.get(ticket.id).assigned_to == "camille"
    both_sizes(browser, "cm-ticket-after-take")
    resize(browser, PHONE)
    browser.execute_script("window.scrollTo(0, 0)")
    assert in_view(browser, css(browser, "a[href='#repondre']")), "reply is below the first screen"
    resize(browser, DESKTOP)

    assert say(stack, citizen, "allô ? vous êtes là ?") == []  # the bot stays silent during the hand-off
    browser.refresh()
    assert "allô ? vous êtes là ?" in body(browser)

    reply = "Bonjour, ici Camille de la mairie. Je m'occupe de votre demande."
    css(browser, "#message").send_keys(reply)
    submit(browser, "form[action$='/reply']", "button[value=send]")
    assert "Réponse envoyée au citoyen." in body(browser)
    assert in_view(browser, css(browser, "p.flash")), "the confirmation is not where the eyes are"
    css(browser, "#note-text").send_keys("Citoyen rappelé, rien d'autre à faire.")
    submit(browser, "form[action$='/note']")
    assert "Note privée ajoutée" in body(browser) and "NOTE PRIVÉE" in body(browser).upper()
    no_script(browser)
    both_sizes(browser, "cm-ticket")

    received = collect(stack, citizen)
    assert received == [f"{reply}\n— L'équipe Communication"]  # the note was never sent

    css(browser, "#close-note").send_keys("échange terminé")
    submit(browser, "form[action$='/close']")
    assert f"Clôturer le ticket {ticket.reference} ?" in body(browser)  # closing asks first
    assert web.store.get(ticket.id).status != "closed"
    both_sizes(browser, "cm-ticket-close-confirm")
    submit(browser, "form[action$='/close']", "button.danger")
    assert "clôturé" in body(browser) and "La conversation est rendue à l'assistant." in body(browser)
    assert web.store.get(ticket.id).status == "closed"
    browser.get(f"{web.url}/queue")
    assert ticket.reference not in body(browser)

    again = say(stack, citizen, "la piscine est ouverte le dimanche ?")
    assert any("valbourg.example/piscine" in r for r in again), again

    browser.get(f"{web.url}/stats")
    assert "Statistiques de toute la commune" in body(browser)
    assert wait_for(lambda: browser.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"), timeout=30)
    screenshot(browser, "cm-stats-desktop", DESKTOP)

    submit(browser, "header form[action='/logout']")
    assert "/login" in browser.current_url and "Vous êtes déconnecté(e)." in body(browser)
    screenshot(browser, "login-phone", PHONE)


def test_voirie_head_resolves_a_report_and_sees_only_voirie(stack, web, browser):
    from bot.tickets import NewTicket

    citizen = f"web-b-{uuid.uuid4().hex[:8]}"
    first = say(stack, citizen, "un lampadaire est cassé")
    assert any("Où exactement" in r for r in first), first
    second = say(stack, citizen, "devant le 5 rue des Lilas")
    [ticket] = web.store.for_conversation(citizen)
    assert ticket.queue == "voirie" and "Lilas" in (ticket.location or "")
    assert any(ticket.reference in r for r in second)
    other, _ = web.store.create(NewTicket(kind="report", queue="proprete", conversation_id=f"{citizen}-autre",
                                          channel="guichet", summary="Poubelle renversée rue des Lilas"))

    login(browser, web, "victor")
    page = body(browser)
    assert "Tickets du service Voirie et éclairage public" in page
    assert ticket.reference in page and other.reference not in page
    assert "Statistiques" not in css(browser, "header").text
    no_script(browser)
    both_sizes(browser, "voirie-queue")

    click_and_wait(browser, css(browser, f"a[href='/tickets/{ticket.reference}']"))
    page = body(browser)
    assert "un lampadaire est cassé" in page and "devant le 5 rue des Lilas" in page
    assert "Orienter vers un service" not in page  # routing is the CM's

    from selenium.webdriver.support.select import Select

    Select(css(browser, "#status")).select_by_value("resolved")
    css(browser, "#status-note").send_keys("ampoule remplacée")
    submit(browser, "form[action$='/status']")
    page = body(browser)
    assert "Statut changé : Résolu. Le citoyen est prévenu." in page and "ampoule remplacée" in page
    assert web.store.get(ticket.id).status == "resolved"
    both_sizes(browser, "voirie-ticket")

    browser.get(f"{web.url}/tickets/{other.reference}")
    assert "Introuvable" in body(browser) and "Poubelle" not in body(browser)

    notices = wait_for(lambda: collect(stack, citizen), timeout=10)
    assert any("résolu" in text and ticket.reference in text for text in notices), notices

    browser.get(f"{web.url}/queue")
    assert ticket.reference not in body(browser)  # resolved: out of the open queue


def test_new_tickets_show_up_without_erasing_what_the_cm_types(stack, web, browser_js):
    """The queue updates itself (queue.js) while the CM types a search: the text and the focus stay."""
    from selenium.webdriver.common.by import By

    web.app.config["QUEUE_REFRESH_SECONDS"] = 5
    try:
        login(browser_js, web, "camille")
        logs = browser_js.get_log("browser") if hasattr(browser_js, "get_log") else []
        search = css(browser_js, "#reference")
        search.click()
        search.send_keys("T-2026-0000")  # half-written, when a new hand-off arrives
        newcomer = f"web-js-{uuid.uuid4().hex[:8]}"
        say(stack, newcomer, "je voudrais parler à une vraie personne svp")
        [late] = web.store.for_conversation(newcomer)
        assert wait_for(lambda: late.reference in css(browser_js, "#cartes").text, timeout=30), \
            "the new ticket did not show up by itself"
        assert css(browser_js, "#reference").get_attribute("value") == "T-2026-0000"
        assert browser_js.switch_to.active_element.get_attribute("id") == "reference"
        assert "nouveau ticket" in css(browser_js, "#nouveaux").text
        assert css(browser_js, "#compte").text == str(len(browser_js.find_elements(By.CSS_SELECTOR, "#cartes article")))
        assert css(browser_js, "#nouveaux").get_attribute("aria-live") == "polite"
        both_sizes(browser_js, "cm-queue-updated")

        # Focus on a card: nothing moves under it; a notice offers the new list instead.
        card_link = browser_js.find_elements(By.CSS_SELECTOR, "#cartes h3 a")[0]
        browser_js.execute_script("arguments[0].focus()", card_link)
        another = f"web-js2-{uuid.uuid4().hex[:8]}"
        say(stack, another, "passez-moi un humain")
        [second] = web.store.for_conversation(another)
        assert wait_for(lambda: "Afficher" in css(browser_js, "#nouveaux").text, timeout=30)
        assert second.reference not in css(browser_js, "#cartes").text
        assert browser_js.switch_to.active_element == card_link
        css(browser_js, "#nouveaux button").click()
        assert wait_for(lambda: second.reference in css(browser_js, "#cartes").text, timeout=5)
        severe = [entry for entry in (browser_js.get_log("browser") if hasattr(browser_js, "get_log") else [])
                  if entry.get("level") == "SEVERE" and entry not in logs]
        assert not severe, severe  # no CSP violation, no script error
    finally:
        web.app.config["QUEUE_REFRESH_SECONDS"] = 30


AXE = ROOT / "tests" / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def axe_violations(driver) -> list[str]:
    """axe-core 4.x (tests/a11y, installed by scripts/test-deps.sh) on the page as it is now."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `bash scripts/test-deps.sh`", pytrace=False)
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}}).then(r => done(r.violations))"
        ".catch(e => done([{id: 'axe-error', impact: String(e), nodes: []}]));", WCAG_21_AA)
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}" for v in result]


def test_every_staff_page_passes_axe_at_both_widths(stack, web, browser_js):
    """axe-core reports no WCAG 2.1 A/AA violation on the staff pages, desktop and phone."""
    handoff_sender = f"web-axe-{uuid.uuid4().hex[:8]}"
    say(stack, handoff_sender, "je veux parler à un conseiller")
    [handoff] = web.store.for_conversation(handoff_sender)
    report_sender = f"web-axe-r-{uuid.uuid4().hex[:8]}"
    say(stack, report_sender, "le lampadaire devant le 3 rue Pasteur est éteint")
    report = next(iter(web.store.for_conversation(report_sender)), None)

    found: dict[str, list[str]] = {}

    def check(name: str) -> None:
        for size, label in ((DESKTOP, "desktop"), (PHONE, "phone")):
            resize(browser_js, size)
            problems = axe_violations(browser_js)
            if problems:
                found[f"{name} ({label})"] = problems
        resize(browser_js, DESKTOP)

    browser_js.delete_all_cookies()
    browser_js.get(f"{web.url}/login")
    check("login")
    login(browser_js, web, "camille")
    check("CM queue")
    browser_js.get(f"{web.url}/tickets/{handoff.reference}")
    check("ticket before take")
    submit(browser_js, f"form[action$='/tickets/{handoff.reference}/take']")
    check("ticket after take")
    browser_js.get(f"{web.url}/stats")
    check("stats")
    browser_js.get(f"{web.url}/avis")
    check("notices")
    browser_js.get(f"{web.url}/reponses")
    check("answers")
    browser_js.get(f"{web.url}/reponses/piscine")
    check("one answer")
    browser_js.get(f"{web.url}/queue?tous=1")
    check("CM queue with closed tickets")
    browser_js.get(f"{web.url}/tickets/T-2026-999999")
    check("not found")
    if report is not None:
        login(browser_js, web, "victor")
        check("service queue")
        browser_js.get(f"{web.url}/tickets/{report.reference}")
        check("service ticket")
    assert not found, "\n".join(f"{page}: {problems}" for page, problems in found.items())


def test_a_notice_written_on_the_web_is_said_by_the_assistant_then_gone(stack, web, browser):
    login(browser, web, "camille")
    click_and_wait(browser, css(browser, "nav a[href='/avis']"))
    assert "Avis à la population" in body(browser)
    css(browser, "#texte").send_keys("La piscine est fermée pour vidange jusqu'à dimanche inclus.")
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#portee")).select_by_value("sujet:piscine")
    browser.execute_script("arguments[0].value = arguments[1]", css(browser, "#fin"),
                           (__import__("datetime").date.today() + __import__("datetime").timedelta(days=4)).isoformat())
    submit(browser, "form[action='/avis']")
    assert "Avis enregistré" in body(browser) and "vidange" in body(browser)
    no_script(browser)
    both_sizes(browser, "cm-notices")

    citizen = f"web-n-{uuid.uuid4().hex[:8]}"
    answer = " ".join(say(stack, citizen, "la piscine est ouverte quand ?"))
    assert "valbourg.example/piscine" in answer and "vidange" in answer, answer

    submit(browser, "form[action$='/fin']")
    assert "Avis terminé" in body(browser) and "Aucun avis en cours." in body(browser)
    again = " ".join(say(stack, f"web-n2-{uuid.uuid4().hex[:8]}", "la piscine est ouverte quand ?"))
    assert "valbourg.example/piscine" in again and "vidange" not in again, again


def test_the_cm_edits_an_answer_with_a_preview_and_restores_it(stack, web, browser):
    citizen = f"web-r-{uuid.uuid4().hex[:8]}"
    before = " ".join(say(stack, citizen, "c'est quoi les horaires de la médiathèque ?"))
    assert "valbourg.example" in before
    login(browser, web, "camille")
    click_and_wait(browser, css(browser, "nav a[href='/reponses']"))
    click_and_wait(browser, css(browser, "a[href='/reponses/mediatheque']"))
    text = "La médiathèque Jules-Verne vous accueille du mardi au samedi, de 10h à 18h (19h le mercredi)."
    area = css(browser, "#texte")
    area.clear()
    area.send_keys(text)
    submit(browser, "form[action='/reponses/mediatheque']", "button[value=apercu]")
    assert "Aperçu : la réponse de l'assistant avec ce texte" in body(browser) and text in body(browser)
    assert css(browser, "#texte").get_attribute("value") == text  # the text is still there to edit
    both_sizes(browser, "cm-answer-preview")
    submit(browser, "form[action='/reponses/mediatheque']", "button[value=enregistrer]")
    assert "Réponse enregistrée" in body(browser)
    after = " ".join(say(stack, f"web-r2-{uuid.uuid4().hex[:8]}", "c'est quoi les horaires de la médiathèque ?"))
    assert text in after, after
    submit(browser, "form[action='/reponses/mediatheque/restaurer']")
    assert "Version restaurée" in body(browser)
    restored = " ".join(say(stack, f"web-r3-{uuid.uuid4().hex[:8]}", "c'est quoi les horaires de la médiathèque ?"))
    assert text not in restored and restored == before, restored
    no_script(browser)
