"""Flask application of the staff desk: login, queue, ticket page with its forms, statistics.

Design:
- Server-rendered Jinja templates (autoescaped: citizen text is always shown as text), a small
  inline stylesheet, no script at all (the Content-Security-Policy forbids scripts): every action
  is an HTML form posted to the server, which redirects back with a French flash message.
- Permissions live in ``bot.staff.StaffDesk``: the views only pass the logged-in ``Staff``; a ticket
  the user may not see is a 404, exactly like a ticket that does not exist.
- Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax, Secure with GUICHET_SECURE_COOKIES=1)
  holding the username, the login time, the account's session epoch and the CSRF token. A session
  ends ``session_minutes`` after the login, whatever the activity (absolute check on the login time,
  plus the cookie lifetime). Logging out or changing the password bumps the account's epoch in the
  database: every cookie issued before is refused, even replayed (server-side invalidation).
- Logins are limited per account (5 failures: locked 15 minutes, ``bot.accounts``) and per client
  address (``LoginThrottle``: 20 failures in 15 minutes, whatever the accounts tried).
- Statistics (``bot.stats``) are reserved to the CM: they are town-wide and include the hand-off
  reasons, which a service head does not see anywhere else.
- Public comments (``/commentaires``): the comments under the town's posts and what the bot did
  with them; the CM sees them all, a head those whose ticket is their service's. A public reply
  with personal data is refused by the desk, and the page is shown again with the text kept.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import Forbidden, HTTPException, ServiceUnavailable

from bot.models import STATUSES
from bot.staff import (
    NOTIFIED_STATUSES,
    STATUS_LABELS,
    DeskError,
    NotFound,
    StaffDesk,
    delivery_state,
    load_canned_answers,
)
from bot.stats import reason_label, share_text
from bot.tickets import HANDOFF
from bot.web.security import (
    CSRF_MESSAGE,
    LoginThrottle,
    csrf_field,
    csrf_token,
    csrf_valid,
    load_secret_key,
    safe_next,
    security_headers,
)

logger = logging.getLogger(__name__)

CHART_NAMES = {
    "messages_per_day": "Messages reçus par jour",
    "tickets_per_service": "Tickets par service et par statut",
    "handoff_reasons": "Transferts au community manager, par motif",
    "satisfaction": "Satisfaction après clôture",
}
KIND_LABELS = {"report": "Signalement", "request": "Demande", "complaint": "Réclamation",
               "handoff": "Transfert au community manager"}
ROUTE_KINDS = ("report", "request", "complaint")
AUTHOR_LABELS = {"citizen": "Citoyen", "bot": "Assistant", "staff": "Agent", "system": "Système"}
LOGIN_ERROR = ("Identifiant ou mot de passe incorrect. Après 5 essais manqués, le compte est bloqué "
               "pendant 15 minutes.")
THROTTLED = ("Trop de tentatives de connexion depuis cette adresse. Réessayez dans 15 minutes ; "
             "si besoin, prévenez l'administrateur.")
PUBLIC_ENDPOINTS = {"login", "favicon"}
ATTACHMENT = re.compile(r"^\[photo\] /pieces-jointes/([0-9a-f]{24}\.(?:jpg|png|webp))\b")
ATTACHMENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def attachment(text: str | None) -> str | None:
    """The file name of a photo sent from the website chat ("[photo] /pieces-jointes/<name> ..."), or None."""
    match = ATTACHMENT.match(text or "")
    return match.group(1) if match else None
FAVICON = Path(__file__).with_name("favicon.svg")
STATS_DAYS = (7, 30, 90, 365)
ERROR_MESSAGES = {
    400: ("Requête invalide", "Le formulaire envoyé est incomplet ou invalide."),
    403: ("Accès refusé", "Cette page ne vous est pas accessible."),
    404: ("Introuvable", "Cette page ou ce ticket n'existe pas, ou ne relève pas de votre service."),
    405: ("Action impossible", "Cette adresse ne s'utilise pas de cette façon."),
    413: ("Envoi trop volumineux", "Le contenu envoyé est trop volumineux."),
    429: ("Trop de tentatives", THROTTLED),
    500: ("Erreur interne", "Une erreur est survenue. Réessayez ; si elle persiste, prévenez l'administrateur."),
    503: ("Service indisponible", "Ce service est momentanément indisponible."),
}


class _State:
    """What the views share: how to get the desk, the accounts (built lazily), the clock."""

    def __init__(self, desk_factory: Callable[[], StaffDesk], accounts, session_seconds: float):
        self.desk_factory = desk_factory
        self._accounts = accounts
        self._lock = threading.Lock()
        self.session_seconds = session_seconds
        self.throttle = LoginThrottle()

    def accounts(self, desk: StaffDesk):
        if self._accounts is None:
            with self._lock:
                if self._accounts is None:
                    from bot.accounts import Accounts

                    self._accounts = Accounts(desk.store, desk.profile)
        return self._accounts


def create_app(desk_factory: Callable[[], StaffDesk] | None = None, accounts=None, secret_key: str | None = None,
               session_minutes: float = 480) -> Flask:
    """The staff web application.

    ``desk_factory`` returns the ``StaffDesk`` to use (default: ``bot.staff.get_desk``, the configured
    database and profile); ``accounts`` defaults to ``Accounts`` on the desk's store and profile.
    ``app.config["GUICHET_CLOCK"]`` (a ``time.time``-like callable) is the clock of the session checks.
    """
    if desk_factory is None:
        from bot.staff import get_desk

        desk_factory = get_desk
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key or load_secret_key(),
        SESSION_COOKIE_NAME="guichet_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=_env_flag("GUICHET_SECURE_COOKIES"),
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=session_minutes),
        SESSION_REFRESH_EACH_REQUEST=False,  # the cookie expires with the session, not later
        MAX_CONTENT_LENGTH=256 * 1024,
        GUICHET_CLOCK=time.time,
        QUEUE_REFRESH_SECONDS=30,
        GUICHET_UPLOADS=None,  # where citizens' photos are kept (default: <var dir>/uploads)
    )
    if app.config["GUICHET_UPLOADS"] is None:
        from bot.settings import get_settings

        app.config["GUICHET_UPLOADS"] = str(get_settings().var_dir / "uploads")
    app.jinja_env.autoescape = True  # every template, whatever its extension
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    state = _State(desk_factory, accounts, session_minutes * 60)
    app.extensions["guichet"] = state
    _register_helpers(app)
    _register_guards(app, state)
    _register_views(app, state)
    _register_notices(app)
    _register_answers(app)
    _register_comments(app)
    _register_errors(app)
    proxies = _trusted_proxies()
    if proxies:  # behind nginx (``guichet stack``): the client's address, for the login limits
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    return app


def _trusted_proxies() -> int:
    """``GUICHET_WEB_TRUSTED_PROXIES``: how many reverse proxies stand before the staff web (0: none)."""
    try:
        return max(0, int(os.environ.get("GUICHET_WEB_TRUSTED_PROXIES", "0") or 0))
    except ValueError:
        return 0


def serve(host: str = "127.0.0.1", port: int = 8080, app: Flask | None = None) -> None:
    """Run the staff interface with werkzeug's threaded server until Ctrl-C."""
    from werkzeug.serving import make_server

    app = app or create_app()
    server = make_server(host, port, app, threaded=True)
    logger.info("staff web interface on http://%s:%s/", host, server.server_port)  # `guichet staff serve` says it
    if host not in ("127.0.0.1", "localhost", "::1") and not app.config["SESSION_COOKIE_SECURE"]:
        print("Attention : servi hors de la boucle locale sans HTTPS. Placez-le derrière un proxy HTTPS et "
              "définissez GUICHET_SECURE_COOKIES=1.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "oui")


# --- helpers available to the views and templates ------------------------------------------------

def _desk() -> StaffDesk:
    """The desk of this request (one ``desk_factory()`` call per request)."""
    if "desk" not in g:
        g.desk = current_app.extensions["guichet"].desk_factory()
    return g.desk


def _register_helpers(app: Flask) -> None:
    def local_time(moment, fmt="%d/%m/%Y %H:%M"):
        if moment is None:
            return "—"
        if isinstance(moment, dt.datetime):
            return _desk().hours.local(moment).strftime(fmt)
        if isinstance(moment, dt.date):
            return moment.strftime("%d/%m/%Y")
        return str(moment)

    def decimal_fr(value, digits=1):
        if value is None:
            return "—"
        return f"{float(value):.{digits}f}".replace(".", ",")

    def duration(hours):
        if hours is None:
            return "—"
        whole, minutes = divmod(round(float(hours) * 60), 60)
        if not whole:
            return f"{minutes} min"
        return f"{whole} h {minutes:02d}" if minutes else f"{whole} h"

    percent = share_text  # a share between 0 and 1, never rounded to 0 or 100 % when it is not

    def queue_label(slug):
        desk = _desk()
        if slug in desk.profile.services:
            return desk.profile.services[slug].name
        if slug == "cm":
            return f"Community manager (équipe {desk.profile.cm_team})"
        return slug

    def excerpt(text, length=160):
        text = " ".join((text or "").split())
        return text if len(text) <= length else text[: length - 1].rstrip() + "…"

    def person(username):
        """A colleague's login as people know them ("Camille (CM)"); the bot and others as they are."""
        if not username or username in ("bot", "system"):
            return "l'assistant" if username == "bot" else (username or "")
        names = g.setdefault("person_names", {})  # one lookup per colleague and page (audit trails)
        if username not in names:
            try:
                names[username] = _desk().holder_name(username) or username
            except Exception:  # noqa: BLE001 - a name is not worth an error page
                names[username] = username
        return names[username]

    app.jinja_env.filters.update(person=person, local_time=local_time, decimal_fr=decimal_fr, duration=duration, percent=percent,
                                 queue_label=queue_label, excerpt=excerpt, platform_link=platform_link,
                                 delivery_state=delivery_state, attachment=attachment)

    def comments_nav() -> dict:
        """The navigation's "Commentaires" link: always for the CM, for a head once they have some."""
        if "comments_nav" not in g:
            shown = {"show": False, "count": 0}
            staff = g.get("staff")
            if staff is not None:
                try:
                    desk = _desk()
                    count = desk.comments_to_see(staff)
                    shown = {"show": staff.is_cm or bool(count) or desk.has_comments(staff), "count": count}
                except Exception:  # noqa: BLE001 - a navigation link is not worth an error page
                    logger.warning("could not count the public comments to see", exc_info=True)
            g.comments_nav = shown
        return g.comments_nav

    @app.context_processor
    def _context():
        return {
            "staff": g.get("staff"),
            "csrf_field": lambda: csrf_field(session),
            "csp_nonce": g.get("csp_nonce", ""),
            "town_name": _town_name(),
            "STATUS_LABELS": STATUS_LABELS,
            "KIND_LABELS": KIND_LABELS,
            "AUTHOR_LABELS": AUTHOR_LABELS,
            "comments_nav": comments_nav,
        }


PLATFORM_HOSTS = ("facebook.com", "fb.com", "fb.me", "instagram.com")


def platform_link(url) -> str | None:
    """A comment's permalink if it is an https link to Facebook or Instagram (never ``javascript:``)."""
    try:
        parts = urlsplit(str(url or "").strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not any(host == h or host.endswith("." + h) for h in PLATFORM_HOSTS):
        return None
    return parts.geturl()


def queue_signature(items) -> str:
    """Changes when the queue shows something else: a ticket, its status, who holds it, a message."""
    import hashlib

    parts = [f"{i.ticket.reference}:{i.ticket.status}:{i.ticket.assigned_to}:{i.ticket.urgent}:"
             f"{i.latest_message or i.first_message or ''}" for i in items]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _town_name() -> str:
    try:
        return _desk().profile.town.short_name
    except Exception:  # noqa: BLE001 - error pages must render even when the database is down
        return ""


# --- login, expiry, CSRF -------------------------------------------------------------------------

def _register_guards(app: Flask, state: _State) -> None:
    @app.before_request
    def _guard():
        g.csp_nonce = secrets.token_urlsafe(16)
        g.staff = None
        now = app.config["GUICHET_CLOCK"]()
        username = session.get("user")
        if username:
            login_at = session.get("login_at")
            if not isinstance(login_at, (int, float)) or not 0 <= now - login_at < state.session_seconds:
                session.clear()
                flash("Votre session a expiré : reconnectez-vous.", "error")
                if request.endpoint != "login":
                    return redirect(url_for("login"))
            else:
                g.staff = state.accounts(_desk()).get(username)
                if g.staff is None or session.get("epoch") != g.staff.session_epoch:
                    # account deactivated, or logged out / password changed since this cookie was issued
                    g.staff = None
                    session.clear()
        if request.endpoint not in PUBLIC_ENDPOINTS and g.staff is None:
            if request.endpoint is None:
                abort(404)
            target = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("login", next=target) if target and target != "/" else url_for("login"))
        if request.method == "POST" and not csrf_valid(session, request.form):
            return _error_page(400, CSRF_MESSAGE)
        return None

    @app.after_request
    def _headers(response):
        return security_headers(response, g.get("csp_nonce", ""))


# --- pages ---------------------------------------------------------------------------------------

def _register_views(app: Flask, state: _State) -> None:
    @app.get("/favicon.ico", endpoint="favicon")
    @app.get("/favicon.svg", endpoint="favicon")
    def favicon():
        response = Response(FAVICON.read_bytes(), mimetype="image/svg+xml")
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response

    @app.get("/")
    def index():
        return redirect(url_for("queue"))

    @app.get("/pieces-jointes/<name>")
    def attachment_file(name: str):
        """A photo a citizen sent from the website chat (staff only; names are unguessable)."""
        if not re.fullmatch(r"[0-9a-f]{24}\.(jpg|png|webp)", name):
            return _error_page(404, "Pièce jointe introuvable.")
        path = Path(app.config["GUICHET_UPLOADS"]) / "webchat" / name
        if not path.is_file():
            return _error_page(404, "Pièce jointe introuvable (effacée ?).")
        response = Response(path.read_bytes(), mimetype=ATTACHMENT_TYPES[name.rsplit(".", 1)[1]])
        response.headers["Content-Disposition"] = f'inline; filename="{name}"'
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    @app.route("/login", methods=["GET", "POST"])
    def login():
        target = safe_next(request.values.get("next"))
        if request.method == "GET":
            if g.staff is not None:
                return redirect(target or url_for("queue"))
            csrf_token(session)
            return render_template("login.html", next=target, username="")
        username = request.form.get("username", "").strip()[:64]  # odd characters: refused by Accounts
        password = request.form.get("password", "")
        address = request.remote_addr or "?"
        now = app.config["GUICHET_CLOCK"]()
        if state.throttle.blocked(address, now):
            logger.warning("login refused: too many failures from one address")
            username = "".join(ch for ch in username if ch.isprintable())
            return render_template("login.html", next=target, username=username, error=THROTTLED), 429
        staff = None
        if username and password and len(password) <= 1024:
            staff = state.accounts(_desk()).authenticate(username, password)
        if staff is None:
            state.throttle.failed(address, now)
            username = "".join(ch for ch in username if ch.isprintable())
            return render_template("login.html", next=target, username=username, error=LOGIN_ERROR), 401
        session.clear()  # a fresh session (and CSRF token) for the new login
        session.permanent = True
        session["user"] = staff.username
        session["epoch"] = staff.session_epoch
        session["login_at"] = app.config["GUICHET_CLOCK"]()
        csrf_token(session)
        flash(f"Bonjour {staff.display_name} !", "ok")
        return redirect(target or url_for("queue"))

    @app.post("/logout")
    def logout():
        state.accounts(_desk()).end_sessions(g.staff.username)  # this cookie is dead, even if replayed
        session.clear()
        flash("Vous êtes déconnecté(e).", "ok")
        return redirect(url_for("login"))

    def _queue_items():
        include_closed = request.args.get("tous") == "1"
        items = _desk().queue(g.staff, include_closed=include_closed)
        return items, include_closed, queue_signature(items)

    @app.get("/queue")
    def queue():
        items, include_closed, signature = _queue_items()
        return render_template("queue.html", items=items, include_closed=include_closed, signature=signature,
                               town_map=_town_map([item.ticket for item in items if item.ticket.is_open]),
                               refresh=app.config["QUEUE_REFRESH_SECONDS"],
                               cards_url=url_for("queue_cards", tous=1) if include_closed else url_for("queue_cards"),
                               now=dt.datetime.now(dt.timezone.utc))

    @app.get("/queue/cartes")
    def queue_cards():
        """The cards alone, for queue.js: it swaps them in when they changed, never the search form."""
        items, _include_closed, signature = _queue_items()
        response = Response(render_template("_queue_cards.html", items=items, signature=signature),
                            mimetype="text/html")
        response.headers["X-Queue-Signature"] = signature
        response.headers["X-Queue-Count"] = str(len(items))
        return response

    @app.get("/recherche")
    def find():
        reference = request.args.get("reference", "").strip()[:40]
        try:
            ticket = _desk().ticket(g.staff, reference)
        except NotFound:
            flash(f"Aucun ticket « {reference} » parmi ceux que vous pouvez consulter.", "error")
            return redirect(url_for("queue"))
        return redirect(url_for("ticket", reference=ticket.reference))

    @app.get("/tickets/<reference>")
    def ticket(reference: str):
        return _render_ticket(_load(reference))

    @app.post("/tickets/<reference>/suiveurs/<int:follower_id>/separer")
    def ticket_split_follower(reference: str, follower_id: int):
        ticket = _load(reference)
        return _act(ticket.reference, lambda: _desk().split_follower(g.staff, ticket.reference, follower_id),
                    "Ce citoyen a maintenant son propre ticket, et il en est informé.")

    @app.post("/tickets/<reference>/take")
    def ticket_take(reference: str):
        ticket = _load(reference)
        return _act(ticket.reference, lambda: _desk().take(g.staff, ticket.reference),
                    f"Vous avez pris en charge le ticket {ticket.reference}.")

    @app.post("/tickets/<reference>/reply")
    def ticket_reply(reference: str):
        ticket = _load(reference)
        text = request.form.get("message", "").replace("\r\n", "\n")
        key = request.form.get("canned", "")
        answers = {a["key"]: a["text"] for a in load_canned_answers()}
        if request.form.get("action") == "insert":  # fill the text box with the answer, to edit it
            if key not in answers:
                flash("Choisissez d'abord une réponse type dans la liste.", "error:repondre")
                return _back(ticket.reference, "repondre")
            return redirect(url_for("ticket", reference=ticket.reference, reponse=key) + "#repondre")
        if not text.strip() and key:
            if key not in answers:
                flash("Réponse type inconnue.", "error:repondre")
                return _back(ticket.reference, "repondre")
            text = answers[key]
        return _act(ticket.reference, lambda: _desk().reply(g.staff, ticket.reference, text),
                    "Réponse envoyée au citoyen.", "repondre")

    @app.post("/tickets/<reference>/note")
    def ticket_note(reference: str):
        ticket = _load(reference)
        text = request.form.get("note", "").replace("\r\n", "\n")
        return _act(ticket.reference, lambda: _desk().note(g.staff, ticket.reference, text),
                    "Note privée ajoutée (elle n'est jamais envoyée au citoyen).", "note")

    @app.post("/tickets/<reference>/route")
    def ticket_route(reference: str):
        desk = _desk()
        ticket = _load(reference)
        service = request.form.get("service", "")
        kind = request.form.get("kind", "request")
        name = desk.profile.services[service].name if service in desk.profile.services else service
        message = f"Ticket orienté vers le service {name} ; le citoyen est prévenu."
        if ticket.kind == HANDOFF:
            message += " La conversation est rendue à l'assistant."
        return _act(ticket.reference, lambda: desk.route(g.staff, ticket.reference, service, kind), message)

    @app.post("/tickets/<reference>/status")
    def ticket_status(reference: str):
        desk = _desk()
        ticket = _load(reference)
        status = request.form.get("status", "")
        note = request.form.get("note", "").strip()[:2000] or None
        scheduled_for = None
        if status == "scheduled":
            scheduled_for = _parse_date(request.form.get("scheduled_for", ""), desk)
            if scheduled_for is None:
                flash("Indiquez une date d'intervention valide, aujourd'hui ou plus tard.", "error:statut")
                return _back(ticket.reference, "statut")
        duplicate_of = (request.form.get("duplicate_of", "").strip()[:40] or None) if status == "duplicate" else None
        label = STATUS_LABELS.get(status, status)
        message = f"Statut changé : {label}."
        if status in NOTIFIED_STATUSES:
            message += " Le citoyen est prévenu."
        if status == "not_ours":
            message += " Le ticket est renvoyé au community manager."
        if status == "closed" and ticket.kind == HANDOFF:
            message += " La conversation est rendue à l'assistant."
        return _act(ticket.reference, lambda: desk.set_status(g.staff, ticket.reference, status,
                                                              scheduled_for=scheduled_for,
                                                              duplicate_of=duplicate_of, note=note), message,
                    "statut")

    @app.post("/tickets/<reference>/close")
    def ticket_close(reference: str):
        ticket = _load(reference)
        note = request.form.get("note", "").strip()[:2000] or None
        if request.form.get("confirm") != "1" and ticket.is_open:  # closing asks first (no script needed)
            return redirect(url_for("ticket", reference=ticket.reference, cloture=1, note=note or None) + "#cloturer")
        message = f"Ticket {ticket.reference} clôturé."
        if ticket.kind == HANDOFF and ticket.status == "closed":
            message = "La conversation est rendue à l'assistant."
        elif ticket.kind == HANDOFF:
            message += " La conversation est rendue à l'assistant."
        return _act(ticket.reference, lambda: _desk().close(g.staff, ticket.reference, note), message)

    @app.get("/stats")
    def stats():
        days = _stats_days()
        figures = _figures(days)
        return render_template("stats.html", figures=figures, days=days, choices=STATS_DAYS, charts=CHART_NAMES,
                               statuses=STATUSES, reason_label=reason_label)

    @app.get("/stats.csv")
    def stats_csv():
        days = _stats_days()
        figures = _figures(days)
        filename = f"guichet-statistiques-{dt.date.today().isoformat()}-{days}j.csv"
        return Response(_stats_module().to_csv(figures), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    @app.get("/stats/<name>.png")
    def stats_chart(name: str):
        if name not in CHART_NAMES:
            abort(404)
        figures = _figures(_stats_days())
        return Response(_stats_module().chart_png(figures, name), mimetype="image/png",
                        headers={"Cache-Control": "private, no-store"})


def _register_notices(app: Flask) -> None:
    """/avis: the CM's town notices (added to the assistant's answers while they run)."""
    from bot.notices import NoticeError, Notices, describe_scope

    def notices() -> Notices:
        if not g.staff.is_cm:
            _abort(403, "Les avis à la population sont gérés par le community manager.")
        desk = _desk()
        return Notices(desk.store, desk.profile)

    def today() -> dt.date:
        moment = dt.datetime.fromtimestamp(app.config["GUICHET_CLOCK"](), dt.timezone.utc)
        return _desk().hours.local(moment).date()

    @app.get("/avis")
    def notices_page():
        store = notices()
        desk = _desk()
        return render_template("notices.html", listing=store.listing(today()), today=today().isoformat(),
                               topics=sorted(desk.profile.faq), services=desk.profile.services,
                               describe=lambda n: describe_scope(n, desk.profile), form=request.args)

    @app.post("/avis")
    def notices_add():
        store = notices()
        form = request.form
        scope = form.get("portee", "")
        topic = scope.split(":", 1)[1] if scope.startswith("sujet:") else None
        service = scope.split(":", 1)[1] if scope.startswith("service:") else None
        try:
            starts_on = dt.date.fromisoformat(form.get("debut", "")[:10])
            ends_on = dt.date.fromisoformat(form.get("fin", "")[:10])
        except ValueError:
            flash("Indiquez une date de début et une date de fin (jj/mm/aaaa).", "error")
            return redirect(url_for("notices_page"))
        try:
            store.add(form.get("texte", ""), starts_on, ends_on, g.staff.username, topic=topic, service=service,
                      closes_town_hall=form.get("fermeture") == "1", today=today())
        except NoticeError as exc:
            flash(str(exc), "error")
            return redirect(url_for("notices_page"))
        flash("Avis enregistré : l'assistant l'ajoute à ses réponses du "
              f"{starts_on:%d/%m/%Y} au {ends_on:%d/%m/%Y} inclus.", "ok")
        return redirect(url_for("notices_page"))

    @app.post("/avis/<int:notice_id>/fin")
    def notices_end(notice_id: int):
        try:
            notices().end(notice_id, g.staff.username, today=today())
        except NoticeError as exc:
            flash(str(exc), "error")
        else:
            flash("Avis terminé : l'assistant ne le dit plus.", "ok")
        return redirect(url_for("notices_page"))


def _register_answers(app: Flask) -> None:
    """/reponses: FAQ answers edited on the web (CM), proposed by service heads for their topics."""
    from bot.answers import AnswerError, Answers

    def answers() -> Answers:
        desk = _desk()
        return Answers(desk.store, desk.profile, cache_seconds=0)

    def topics_for(staff) -> list[str]:
        faq = _desk().profile.faq
        return [t for t in faq if staff.is_cm or (faq[t].service and faq[t].service == staff.service)]

    def topic_or_404(topic: str) -> str:
        if topic not in topics_for(g.staff):
            abort(404)
        return topic

    @app.get("/reponses")
    def answers_page():
        store = answers()
        topics = topics_for(g.staff)
        return render_template("answers.html", topics=[(t, store.current(t)) for t in topics],
                               proposals=store.proposals() if g.staff.is_cm else [])

    def render_topic(topic: str, text: str | None = None, link: str | None = None, preview=None):
        store = answers()
        current = store.current(topic)
        return render_template("answer.html", topic=topic, current=current, history=store.history(topic),
                               text=current.text if text is None else text, link=current.link if link is None else link,
                               preview=preview, default=_desk().profile.faq[topic])

    @app.get("/reponses/<topic>")
    def answer_page(topic: str):
        return render_topic(topic_or_404(topic))

    @app.post("/reponses/<topic>")
    def answer_save(topic: str):
        topic = topic_or_404(topic)
        text, link = request.form.get("texte", ""), request.form.get("lien", "")
        store = answers()
        if request.form.get("action") == "apercu":
            try:
                checked_text, checked_link = store.check(topic, text, link)
            except AnswerError as exc:
                flash(str(exc), "error")
                return render_topic(topic, text, link)
            now = dt.datetime.now(dt.timezone.utc)
            return render_topic(topic, text, link, preview=_assistant_for_preview().preview_faq(
                topic, checked_text, checked_link, now))
        try:
            version = store.edit(topic, text, link, g.staff)
        except AnswerError as exc:
            flash(str(exc), "error")
            return render_topic(topic, text, link)
        if version.status == "approved":
            flash("Réponse enregistrée : l'assistant la donne dès maintenant (la version précédente est gardée).", "ok")
        else:
            flash("Proposition envoyée au community manager, qui la validera.", "ok")
        return redirect(url_for("answer_page", topic=topic))

    @app.post("/reponses/<topic>/restaurer")
    def answer_restore(topic: str):
        topic = topic_or_404(topic)
        choice = request.form.get("version", "")
        try:
            answers().restore(topic, None if choice == "origine" else int(choice or "-1"), g.staff)
        except (AnswerError, ValueError) as exc:
            flash(str(exc) if isinstance(exc, AnswerError) else "Version introuvable pour ce sujet.", "error")
        else:
            flash("Version restaurée : l'assistant la donne dès maintenant.", "ok")
        return redirect(url_for("answer_page", topic=topic))

    @app.post("/reponses/propositions/<int:version_id>")
    def answer_review(version_id: int):
        approve = request.form.get("decision") == "valider"
        try:
            version = answers().review(version_id, approve, g.staff, request.form.get("note"))
        except AnswerError as exc:
            flash(str(exc), "error")
            return redirect(url_for("answers_page"))
        flash("Proposition validée : l'assistant la donne dès maintenant." if approve else "Proposition refusée.", "ok")
        return redirect(url_for("answer_page", topic=version.topic))


def _render_ticket(ticket, drafts: dict | None = None):
    """The ticket page; ``drafts`` ({(comment id, "public"|"prive"): text}) refills a refused comment reply."""
    desk = _desk()
    canned = load_canned_answers()
    draft = ""
    chosen = request.args.get("reponse", "")
    for answer in canned:
        if answer["key"] == chosen:
            draft = answer["text"]
    duplicate_of = desk.store.get(ticket.duplicate_of_id).reference if ticket.duplicate_of_id else None
    comments = desk.ticket_comments(g.staff, ticket.reference)
    town_map = None
    if ticket.lat is not None:  # the open tickets of the queue around it (the tickets alone, not the queue's cards)
        neighbours = [t for t in desk.queue_tickets(g.staff) if t.queue == ticket.queue and t.is_open]
        town_map = _town_map(neighbours, ticket)
    return render_template(
        "ticket.html", ticket=ticket, reason=desk.reason(ticket),
        transcript=desk.transcript(g.staff, ticket.reference), audit=desk.audit(g.staff, ticket.reference),
        canned=canned, chosen=chosen, draft=draft, duplicate_of=duplicate_of,
        services=desk.profile.services, route_kinds=ROUTE_KINDS,
        statuses=desk.status_choices(g.staff, ticket), is_handoff=ticket.kind == HANDOFF,
        ticket_sections=TICKET_SECTIONS + tuple(f"commentaire-{view.comment.id}" for view in comments),
        confirm_close=request.args.get("cloture") == "1" and ticket.is_open,
        close_note=request.args.get("note", "")[:2000],
        emergency_numbers=_emergency_numbers(desk.profile),
        today=desk.hours.local(dt.datetime.now(dt.timezone.utc)).date().isoformat(),
        signature=g.staff.signature(desk.profile), holder=desk.holder_name(ticket.assigned_to),
        comments=comments, undelivered=desk.undelivered(g.staff, ticket.reference), drafts=drafts or {},
        followers=desk.followers(g.staff, ticket.reference),
        town_map=town_map,
    )


def _town_map(tickets, selected=None):
    """The plan of the town with these tickets (bot.town_map), ready for the page; None without addresses."""
    from markupsafe import Markup

    from bot import town_map

    svg = town_map.render(_desk().store, tickets, selected, link=lambda reference: url_for("ticket", reference=reference))
    return {"svg": Markup(svg), "legend": town_map.legend()} if svg else None


def _register_comments(app: Flask) -> None:
    """/commentaires: the public comments under the town's posts, and the staff's replies to them."""

    def render_comments(show_all: bool, drafts: dict | None = None):
        desk = _desk()
        views = desk.comment_views(desk.comments(g.staff, needs_staff=not show_all, limit=COMMENTS_SHOWN))
        return render_template("comments.html", views=views, show_all=show_all, drafts=drafts or {},
                               to_see=desk.comments_to_see(g.staff), shown_max=COMMENTS_SHOWN,
                               ticket_sections=tuple(f"commentaire-{view.comment.id}" for view in views),
                               signature=g.staff.signature(desk.profile))

    def comment_or_404(comment_id: int):
        try:
            return _desk().comment(g.staff, comment_id)
        except NotFound:
            abort(404)

    def back(comment, returning: str, still_listed: bool = True):
        """Back where the form was: the ticket page, or the list (at the comment if it is still there)."""
        section = f"commentaire-{comment.id}"
        if returning == "ticket" and comment.ticket_id:
            ticket = _desk().store.get(comment.ticket_id)
            try:
                _desk().ticket(g.staff, ticket.reference)
            except NotFound:
                pass
            else:
                return redirect(url_for("ticket", reference=ticket.reference) + f"#{section}")
        target = url_for("comments_page", tous=1) if returning == "tous" else url_for("comments_page")
        return redirect(target + (f"#{section}" if still_listed else ""))

    def act(comment_id: int, action: Callable[[], object], success: str, draft: tuple[str, str] | None = None):
        comment = comment_or_404(comment_id)
        returning = request.form.get("retour", "liste")
        section = f"commentaire-{comment.id}"
        try:
            action()
        except NotFound:
            abort(404)
        except DeskError as exc:
            flash(str(exc), f"error:{section}")
            drafts = {(comment.id, draft[0]): draft[1]} if draft else {}
            if returning == "ticket" and comment.ticket_id:  # shown again with the text kept, to correct it
                try:
                    return _render_ticket(_desk().ticket(g.staff, _desk().store.get(comment.ticket_id).reference),
                                          drafts)
                except NotFound:
                    pass
            return render_comments(returning == "tous", drafts)
        view = _desk().comment_views([comment_or_404(comment.id)])[0]
        still_listed = returning != "liste" or view.to_see
        flash(success if still_listed else f"{success} Il quitte la liste « À voir ».", f"ok:{section}")
        return back(comment, returning, still_listed)

    @app.get("/commentaires")
    def comments_page():
        return render_comments(request.args.get("tous") == "1")

    @app.post("/commentaires/<int:comment_id>/repondre")
    def comment_reply(comment_id: int):
        text = request.form.get("message", "").replace("\r\n", "\n")
        public = request.form.get("surface") == "public"
        if request.form.get("surface") not in ("public", "prive"):
            abort(400)
        comment = comment_or_404(comment_id)
        platform = "Facebook" if comment.platform == "facebook" else "Instagram"
        success = (f"Réponse publique envoyée : elle sera publiée sous le commentaire sur {platform}."
                   if public else f"Message privé envoyé à la personne (messagerie {platform}).")
        return act(comment_id, lambda: _desk().reply_to_comment(g.staff, comment_id, text, public), success,
                   ("public" if public else "prive", text))

    @app.post("/commentaires/<int:comment_id>/vu")
    def comment_seen(comment_id: int):
        note = request.form.get("note", "")
        return act(comment_id, lambda: _desk().mark_comment_seen(g.staff, comment_id, note),
                   "Commentaire marqué comme vu (note privée, rien n'est publié).", ("vu", note))


def _assistant_for_preview():
    """An assistant on this desk's database, to show the reply exactly as the bot would say it."""
    from bot.assistant import Assistant

    desk = _desk()
    return Assistant(desk.profile, desk.store, desk.replies, desk.hours)


def _load(reference: str):
    """The ticket if this user may see it; 404 otherwise (it exists or not: nothing revealed)."""
    try:
        return _desk().ticket(g.staff, reference)
    except NotFound:
        abort(404)


TICKET_SECTIONS = ("repondre", "note", "orienter", "statut", "cloturer", "suiveurs")
COMMENTS_SHOWN = 200  # the newest ones; older comments are on the platform itself
EMERGENCY_LABELS = {"samu": "SAMU", "police": "police", "pompiers": "pompiers", "europe": "urgences (Europe)",
                    "violences_femmes": "violences femmes info", "enfance_en_danger": "enfance en danger",
                    "prevention_suicide": "prévention du suicide"}


def _emergency_numbers(profile) -> list[tuple[str, str]]:
    return [(EMERGENCY_LABELS.get(name, name.replace("_", " ")), number)
            for name, number in profile.town.emergency_numbers.items()]


def _act(reference: str, action: Callable[[], object], success: str, anchor: str = ""):
    """Do it, then back to the ticket page at ``anchor``, where the confirmation is shown (the
    flash category names its section: "ok:statut"; "ok:haut" is the top of the page)."""
    try:
        action()
    except NotFound:
        abort(404)
    except DeskError as exc:
        flash(str(exc), f"error:{anchor or 'haut'}")
    else:
        flash(success, f"ok:{anchor or 'haut'}")
    return _back(reference, anchor)


def _back(reference: str, anchor: str = ""):
    """Back to the ticket page, or to the queue when the ticket is no longer visible (sent to the CM)."""
    try:
        _desk().ticket(g.staff, reference)
    except NotFound:
        return redirect(url_for("queue"))
    return redirect(url_for("ticket", reference=reference) + (f"#{anchor}" if anchor else ""))


def _parse_date(text: str, desk: StaffDesk) -> dt.datetime | None:
    """A date from ``<input type=date>`` (AAAA-MM-JJ), as noon local time; None if invalid or past."""
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        return None
    today = desk.hours.local(dt.datetime.now(dt.timezone.utc)).date()
    if day < today:
        return None
    return desk.hours.tz.localize(dt.datetime.combine(day, dt.time(12, 0)))


def _abort(code: int, message: str):
    """Stop with an error page showing this French message."""
    exc = {403: Forbidden, 503: ServiceUnavailable}[code](description=message)
    exc.french = True
    raise exc


def _stats_module():
    """``bot.stats``, imported lazily (matplotlib is slow to load and only this page needs it)."""
    try:
        from bot import stats as stats_module
    except ModuleNotFoundError as exc:
        if exc.name not in ("bot.stats", "matplotlib"):
            raise
        _abort(503, "Les statistiques ne sont pas disponibles sur ce serveur (module bot.stats absent).")
    return stats_module


def _stats_days() -> int:
    if not g.staff.is_cm:
        _abort(403, "Les statistiques sont réservées au community manager : elles couvrent toute la commune.")
    try:
        days = int(request.args.get("jours", "30"))
    except ValueError:
        days = 30
    return min(max(days, 1), 366)


def _figures(days: int):
    desk = _desk()
    return _stats_module().compute(desk.store, desk.profile, desk.hours, days=days)


# --- errors --------------------------------------------------------------------------------------

def _error_page(code: int, message: str | None = None):
    title, default = ERROR_MESSAGES.get(code, ERROR_MESSAGES[500])
    return render_template("error.html", code=code, title=title, message=message or default), code


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)  # also what Flask shows for an unhandled exception (500)
    def _http_error(exc: HTTPException):
        return _error_page(exc.code or 500, exc.description if getattr(exc, "french", False) else None)
