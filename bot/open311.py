"""Open311 GeoReport v2 server: the town's reports for FixMyStreet and other Open311 clients.

Mounted under ``/open311/v2/``; every endpoint answers in XML (the spec's required format) or JSON,
chosen by the extension (``services.xml``, ``requests/T-2026-000123.json``):

- ``GET services.{fmt}``: the municipal services that take reports about a place (those whose
  ``needs_location`` is set in the profile): code = service slug, name, description = what the
  service handles, ``metadata`` false, ``type`` realtime.
- ``GET services/{code}.{fmt}``: the service definition (no attribute: ``metadata`` is false).
- ``GET requests.{fmt}``: filters ``service_request_id`` (comma list; overrides the others),
  ``service_code``, ``start_date``/``end_date`` (W3C date-times with their time zone), ``status``
  (open, closed). By default the last 90 days; never more than 90 days nor 1,000 requests, newest
  first (the spec's response volume).
- ``POST requests.{fmt}``: a new report (form-encoded, as FixMyStreet sends it), with an API key.
- ``GET requests/{id}.{fmt}``, ``GET tokens/{token}.{fmt}``.
- FixMyStreet's extension ``servicerequestupdates.{fmt}``: ``GET`` lists the status changes between
  ``start_date`` and ``end_date`` (same defaults as requests); ``POST`` (API key) adds a citizen's
  comment made on the FixMyStreet site to the ticket's transcript.

``service_request_id`` is the ticket reference ("T-2026-000123"). The API is public (reading needs
no key), so a read answer never carries the citizen's name, e-mail, phone or transcript: only the
status, the service, the place and, for requests that came through this API, the description that
was posted (e-mail addresses, phone numbers and the poster's name masked). A ticket born in a chat
shows no description and only the place as the assistant understood it (``place_label``): the
citizen's words were said in a private conversation. Hand-offs are never shown, nor the tickets of
services that do not take reports.

API keys (``create_key``, ``revoke_key``, ``list_keys``) are stored as their SHA-256 only: a key is
shown once, when it is created. A POST without a key, or with an unknown or revoked one, is a 403.
POSTs are rate-limited per client address (``bot.flood.FloodGuard``; ``GUICHET_OPEN311_PER_MINUTE``,
default 30, ``GUICHET_OPEN311_BURST``, default 20): 429. Behind a reverse proxy every client has
the proxy's address: give the proxy its own limit, or wrap the app in werkzeug's ``ProxyFix``.

Errors use the spec's format (``<errors><error><code>…`` or ``[{"code": …, "description": …}]``),
described in French: 400 bad input, 403 bad key, 404 unknown request, service, token, jurisdiction
or format, 429 too many POSTs. Run it with ``python -m bot.open311`` (``GUICHET_OPEN311_PORT``,
default 8091, ``GUICHET_OPEN311_LISTEN``, default 127.0.0.1, ``GUICHET_OPEN311_JURISDICTION``,
default the town's website host without "www.").
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import secrets
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from flask import Flask, Response, request
from sqlalchemy import or_, select
from werkzeug.exceptions import HTTPException

from bot import events
from bot.flood import FloodGuard
from bot.models import CLOSED_STATUSES, Message, Open311Key, StatusChange, Ticket, TicketFollower, to_naive_utc, utcnow
from bot.profile import Profile, Service
from bot.routing import CM_QUEUE
from bot.textnorm import clean_citizen_text
from bot.tickets import HANDOFF, NewTicket, TicketStore, parse_staff_reference, storable

logger = logging.getLogger(__name__)

PREFIX = "/open311/v2"
CHANNEL = "open311"
CONVERSATION_PREFIX = "open311-"  # a posted request's conversation: "open311-<token>"
FORMATS = {"xml": "text/xml; charset=utf-8", "json": "application/json; charset=utf-8"}
DEFAULT_JURISDICTION = "valbourg.example"
DEFAULT_PORT = 8091
DEFAULT_DAYS = 90  # the spec: a query spans at most 90 days, the last 90 by default...
MAX_REQUESTS = 1000  # ...and returns at most 1,000 requests
MAX_DESCRIPTION = 4000  # the spec: "free form text limited to 4,000 characters"
MAX_NAME = 200
MAX_KEY_NAME = 100
KEY_PREFIX = "o311_"
GROUP = "Espace public"
DEFAULT_PER_MINUTE = 30.0
DEFAULT_BURST = 20
# XML item tags of the lists (the spec's "⇊" containers).
ITEM_TAGS = {"services": "service", "service_requests": "request", "service_request_updates": "request_update",
             "errors": "error", "attributes": "attribute", "values": "value"}
# What the public reads about a status (staff's labels and notes stay in the staff desk).
PUBLIC_STATUS_NOTES = {
    "new": "Reçu", "acknowledged": "Pris en compte", "in_progress": "En cours de traitement",
    "scheduled": "Programmé", "not_ours": "En cours de réorientation vers le service compétent",
    "resolved": "Résolu", "duplicate": "Doublon", "closed": "Clôturé",
}
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
_PHONE = re.compile(r"(?<![\d+])(?:(?:\+|00)\s*33\s*(?:\(0\)\s*)?|0)[1-9](?:[\s.\-]*\d{2}){4}(?!\d)")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# W3C date-time (https://www.w3.org/TR/NOTE-datetime): a complete date, or a date and a time with
# its zone. A "+" of an offset left unencoded in a query string arrives as a space: read as "+".
_W3C = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
                  r"(?:([Zz])|([+\- ])(\d{2}):?(\d{2})))?")


# --- API keys ------------------------------------------------------------------------------------------

def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(store: TicketStore, name: str) -> str:
    """A new API key for ``name`` ("FixMyStreet", "appli mobile"): returned once, stored hashed."""
    name = clean_citizen_text(name or "", limit=10_000)
    if not name:
        raise ValueError("Donnez un nom à la clé : qui l'utilise (« FixMyStreet », « appli mobile »).")
    if len(name) > MAX_KEY_NAME:
        raise ValueError(f"Nom de clé trop long ({MAX_KEY_NAME} caractères au maximum).")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.session() as session:
        session.add(Open311Key(name=name, key_hash=_key_hash(key)))
        session.commit()
    return key


def revoke_key(store: TicketStore, key_id: int) -> Open311Key:
    """Revoke a key (from then on its POSTs are refused); revoking it again changes nothing."""
    with store.session() as session:
        row = session.get(Open311Key, int(key_id))
        if row is None:
            raise LookupError(f"Aucune clé Open311 n° {key_id}.")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            session.commit()
        return row


def list_keys(store: TicketStore) -> list[Open311Key]:
    """Every key, oldest first, revoked ones included (``revoked_at``); the keys themselves are not kept."""
    with store.session() as session:
        return list(session.execute(select(Open311Key).order_by(Open311Key.id)).scalars())


def find_key(store: TicketStore, key: str | None) -> Open311Key | None:
    """The active key row for this key, or None (unknown, revoked or empty)."""
    if not key:
        return None
    with store.session() as session:
        row = session.execute(select(Open311Key).where(Open311Key.key_hash == _key_hash(key))).scalar_one_or_none()
    return row if row is not None and row.revoked_at is None else None


# --- what a report hook receives -----------------------------------------------------------------------

@dataclass(frozen=True)
class Open311Report:
    """A request posted to the API, before it becomes a ticket: what ``report_hook`` is given.

    ``new`` is what ``TicketStore.create`` takes; ``lat``/``lon`` the point posted (None when only
    ``address_string`` was); ``token`` the request's token, its conversation being
    ``new.conversation_id`` ("open311-<token>"). The hook answers ``(ticket, created)``: the new
    ticket (``store.create(report.new)``), or an existing one with ``created`` False (a duplicate:
    the answer then names that ticket; keeping the poster's description on it is the hook's choice).
    """
    new: NewTicket
    lat: float | None
    lon: float | None
    token: str
    key_name: str


ReportHook = Callable[[Open311Report], "tuple[Ticket, bool]"]


class Open311Error(Exception):
    def __init__(self, status: int, description: str, headers: dict | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers or {}


# --- formats -------------------------------------------------------------------------------------------

def _xml_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))


def _xml_element(tag: str, value) -> ET.Element:
    element = ET.Element(tag)
    if isinstance(value, dict):
        for key, item in value.items():
            element.append(_xml_element(key, item))
    elif isinstance(value, list):
        for item in value:
            element.append(_xml_element(ITEM_TAGS.get(tag, "item"), item))
    else:
        element.text = _xml_text(value)
    return element


def render(fmt: str, root: str, payload, status: int = 200, headers: dict | None = None) -> Response:
    """``payload`` (a list of dicts, or a dict) as JSON, or as XML under ``root``."""
    if fmt == "json":
        body = json.dumps(payload, ensure_ascii=False)
    else:
        body = ('<?xml version="1.0" encoding="utf-8"?>\n'
                + ET.tostring(_xml_element(root, payload), encoding="unicode"))
    response = Response(body, status=status, content_type=FORMATS[fmt])
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def render_error(fmt: str, status: int, description: str, headers: dict | None = None) -> Response:
    return render(fmt, "errors", [{"code": status, "description": description}], status, headers)


def _split_format(name: str) -> tuple[str, str]:
    """"T-2026-000123.json" -> ("T-2026-000123", "json"); an unknown or missing format is a 404."""
    stem, dot, fmt = name.rpartition(".")
    if not dot or fmt.lower() not in FORMATS or not stem:
        raise Open311Error(404, "Format inconnu : terminez l'adresse par .xml ou .json.")
    return stem, fmt.lower()


def _format_of_path(path: str) -> str:
    fmt = path.rpartition(".")[2].lower()
    return fmt if fmt in FORMATS else "xml"


# --- dates ---------------------------------------------------------------------------------------------

def parse_w3c(value: str, zone: dt.tzinfo) -> dt.datetime:
    """A W3C date-time ("2026-03-01T10:00:00+01:00", "2026-03-01T09:00:00Z") as an aware datetime;
    a complete date alone ("2026-03-01") is midnight, town time. A time without its zone is refused."""
    match = _W3C.fullmatch((value or "").strip())
    if not match:
        raise ValueError(value)
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if hour is None:
        return dt.datetime(int(year), int(month), int(day), tzinfo=zone)
    if zulu:
        tz = dt.timezone.utc
    else:
        offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
        if offset >= dt.timedelta(hours=24):
            raise ValueError(value)
        tz = dt.timezone(-offset if sign == "-" else offset)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    return dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tzinfo=tz)


# --- the application -----------------------------------------------------------------------------------

def open311_services(profile: Profile) -> dict[str, Service]:
    """The services that take reports about a place: those that ask "où exactement ?"."""
    return {slug: service for slug, service in profile.services.items() if service.needs_location}


def default_jurisdiction(profile: Profile) -> str:
    """The spec's suggestion: the jurisdiction's website host without "www." ("valbourg.example")."""
    host = (urlsplit(profile.town.website).hostname or "").lower()
    return host[4:] if host.startswith("www.") else (host or DEFAULT_JURISDICTION)


def flood_guard_from_env(environ: dict | None = None) -> FloodGuard:
    env = os.environ if environ is None else environ

    def number(name: str, default: float) -> float:
        try:
            value = float(env.get(name, default))
        except (TypeError, ValueError):
            return default
        return value if value > 0 and math.isfinite(value) else default

    return FloodGuard(per_minute=number("GUICHET_OPEN311_PER_MINUTE", DEFAULT_PER_MINUTE),
                      burst=max(1, int(number("GUICHET_OPEN311_BURST", DEFAULT_BURST))), name="open311-address")


class Open311Api:
    """The endpoints' logic, on one ticket store and one profile."""

    def __init__(self, store: TicketStore, profile: Profile, jurisdiction_id: str,
                 report_hook: ReportHook | None, flood_guard: FloodGuard):
        self.store = store
        self.profile = profile
        self.jurisdiction_id = jurisdiction_id
        self.report_hook = report_hook
        self.flood_guard = flood_guard
        self.zone = ZoneInfo(profile.town.timezone)
        self.services = open311_services(profile)

    # --- arguments ---------------------------------------------------------------------------------
    @staticmethod
    def arg(name: str) -> str | None:
        """An argument of the query or the form; empty is absent (the spec's optional arguments)."""
        value = request.values.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def check_jurisdiction(self) -> None:
        given = self.arg("jurisdiction_id")
        if given is not None and given.lower() != self.jurisdiction_id.lower():
            raise Open311Error(404, f"jurisdiction_id inconnu : ce serveur ne sert que « {self.jurisdiction_id} ».")

    def require_key(self) -> Open311Key:
        key = request.form.get("api_key") or request.headers.get("X-API-Key")
        if not key:
            raise Open311Error(403, "Clé d'API manquante (api_key) : impossible d'enregistrer la demande.")
        row = find_key(self.store, key.strip())
        if row is None:
            raise Open311Error(403, "Clé d'API invalide ou révoquée : impossible d'enregistrer la demande.")
        return row

    def check_rate(self) -> None:
        if not self.flood_guard.allow(f"open311:{request.remote_addr}"):
            wait = max(1, math.ceil(60.0 / self.flood_guard.per_minute))
            raise Open311Error(429, "Trop de requêtes depuis cette adresse : réessayez dans une minute.",
                               {"Retry-After": str(wait)})

    def date_arg(self, name: str) -> dt.datetime | None:
        value = self.arg(name)
        if value is None:
            return None
        try:
            return parse_w3c(value, self.zone)
        except ValueError:
            raise Open311Error(400, f"{name} invalide : une date W3C avec son fuseau horaire est attendue, "
                                    "par exemple 2026-03-01T09:00:00+01:00 ou 2026-03-01T08:00:00Z.") from None

    def date_range(self) -> tuple[dt.datetime, dt.datetime]:
        """``start_date``/``end_date`` as naive UTC: the last 90 days by default, at most 90 days."""
        start, end = self.date_arg("start_date"), self.date_arg("end_date")
        span = dt.timedelta(days=DEFAULT_DAYS)
        if start is None and end is None:
            end = dt.datetime.now(dt.timezone.utc)
            start = end - span
        elif start is None:
            start = end - span
        elif end is None:
            end = start + span
        if start > end:
            raise Open311Error(400, "start_date est postérieure à end_date.")
        if end - start > span:
            raise Open311Error(400, f"La période demandée dépasse {DEFAULT_DAYS} jours : resserrez start_date et end_date.")
        return to_naive_utc(start), to_naive_utc(end)

    @staticmethod
    def list_arg(name: str) -> list[str]:
        """A comma list, possibly declared several times (``status=open&status=closed``)."""
        return [part.strip() for value in request.values.getlist(name) for part in value.split(",") if part.strip()]

    # --- tickets as the public sees them ---------------------------------------------------------------
    def visible(self):
        """The tickets this API shows: not hand-offs; of a service that takes reports, posted here, or
        sent back to the CM by a service (until the CM routes it again)."""
        return (Ticket.kind != HANDOFF) & or_(Ticket.queue.in_(list(self.services)), Ticket.channel == CHANNEL,
                                              (Ticket.queue == CM_QUEUE) & (Ticket.status == "not_ours"))

    def local_iso(self, moment: dt.datetime | None) -> str | None:
        if moment is None:
            return None
        return moment.replace(tzinfo=dt.timezone.utc).astimezone(self.zone).isoformat(timespec="seconds")

    def service_name(self, queue: str) -> str:
        service = self.profile.services.get(queue)
        return service.name if service else self.profile.cm_team

    def status_note(self, status: str, ticket: Ticket, originals: dict[int, str]) -> str:
        if status == "scheduled" and ticket.scheduled_for is not None:
            day = ticket.scheduled_for.replace(tzinfo=dt.timezone.utc).astimezone(self.zone)
            return f"Programmé le {day:%d/%m/%Y}"
        if status == "duplicate" and originals.get(ticket.duplicate_of_id):
            return f"Doublon de {originals[ticket.duplicate_of_id]}"
        return PUBLIC_STATUS_NOTES.get(status, status)

    @staticmethod
    def masked(text: str | None, ticket: Ticket) -> str | None:
        """Public text: without e-mail addresses, phone numbers, nor the citizen's name."""
        if not text:
            return None
        text = _EMAIL.sub("[e-mail masqué]", text)
        text = _PHONE.sub("[téléphone masqué]", text)
        name = (ticket.citizen_name or "").strip()
        if len(name) >= 3:
            text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", "[nom masqué]", text, flags=re.IGNORECASE)
        return text

    def address(self, ticket: Ticket) -> str | None:
        if ticket.place_label:
            return self.masked(ticket.place_label, ticket)
        if ticket.channel == CHANNEL:  # what the client posted (address_string, or "lat, long")
            return self.masked(ticket.location, ticket)
        return None  # a chat's own words about the place stay private

    def originals(self, session, tickets: Iterable[Ticket]) -> dict[int, str]:
        ids = {t.duplicate_of_id for t in tickets if t.duplicate_of_id}
        if not ids:
            return {}
        return dict(session.execute(select(Ticket.id, Ticket.reference).where(Ticket.id.in_(ids))).all())

    def request_view(self, ticket: Ticket, originals: dict[int, str]) -> dict:
        closed = ticket.status in CLOSED_STATUSES
        updated = (ticket.closed_at or ticket.updated_at) if closed else ticket.updated_at
        expected = ticket.scheduled_for if (not closed and ticket.status == "scheduled") else None
        return {
            "service_request_id": ticket.reference,
            "status": "closed" if closed else "open",
            "status_notes": self.status_note(ticket.status, ticket, originals),
            "service_name": self.service_name(ticket.queue),
            "service_code": ticket.queue,
            "description": self.masked(ticket.summary, ticket) if ticket.channel == CHANNEL else None,
            "agency_responsible": self.service_name(ticket.queue),
            "service_notice": None,
            "requested_datetime": self.local_iso(ticket.created_at),
            "updated_datetime": self.local_iso(updated),
            "expected_datetime": self.local_iso(expected),
            "address": self.address(ticket),
            "lat": ticket.lat,
            "long": ticket.lon,
            "media_url": None,
        }

    def tickets_by_references(self, session, references: list[str]) -> list[Ticket]:
        """The visible tickets these references name, in the order asked (unknown ones left out)."""
        wanted: list[tuple[int | None, int]] = []
        for reference in references[:MAX_REQUESTS]:
            parsed = parse_staff_reference(reference)
            if parsed is not None:
                wanted.append(parsed)
        if not wanted:
            return []
        found = {t.id: t for t in session.execute(select(Ticket).where(
            self.visible(), Ticket.id.in_({number for _, number in wanted}))).scalars()}
        ordered, seen = [], set()
        for year, number in wanted:
            ticket = found.get(number)
            if ticket is not None and ticket.id not in seen and (year is None or ticket.created_at.year == year):
                seen.add(ticket.id)
                ordered.append(ticket)
        return ordered

    def ticket_of(self, session, reference: str) -> Ticket:
        tickets = self.tickets_by_references(session, [reference])
        if not tickets:
            raise Open311Error(404, f"Demande introuvable : {_shown(reference)}.")
        return tickets[0]

    # --- endpoints -----------------------------------------------------------------------------------
    def services_list(self, fmt: str) -> Response:
        self.check_jurisdiction()
        rows = []
        for slug, service in self.services.items():
            keywords = ", ".join(part.strip() for part in re.split(r"[,;]", service.handles) if part.strip())
            rows.append({"service_code": slug, "service_name": service.name, "description": service.handles,
                         "metadata": False, "type": "realtime", "keywords": keywords, "group": GROUP})
        return render(fmt, "services", rows)

    def service_definition(self, code: str, fmt: str) -> Response:
        self.check_jurisdiction()
        if code not in self.services:
            raise Open311Error(404, f"service_code inconnu : {_shown(code)}.")
        return render(fmt, "service_definition", {"service_code": code, "attributes": []})

    def requests_list(self, fmt: str) -> Response:
        self.check_jurisdiction()
        with self.store.session() as session:
            references = self.list_arg("service_request_id")
            if references:  # "This overrides all other arguments."
                tickets = self.tickets_by_references(session, references)
            else:
                codes = self.list_arg("service_code")
                unknown = [code for code in codes if code not in self.services]
                if unknown:
                    raise Open311Error(400, f"service_code inconnu : {_shown(unknown[0])}. Voir services.{fmt}.")
                statuses = {status.lower() for status in self.list_arg("status")}
                if statuses - {"open", "closed"}:
                    raise Open311Error(400, "status invalide : open ou closed (ou les deux, séparés par une virgule).")
                start, end = self.date_range()
                query = select(Ticket).where(self.visible(), Ticket.created_at >= start, Ticket.created_at <= end)
                if codes:
                    query = query.where(Ticket.queue.in_(codes))
                if statuses == {"open"}:
                    query = query.where(Ticket.status.notin_(CLOSED_STATUSES))
                elif statuses == {"closed"}:
                    query = query.where(Ticket.status.in_(CLOSED_STATUSES))
                query = query.order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(MAX_REQUESTS)
                tickets = list(session.execute(query).scalars())
            originals = self.originals(session, tickets)
        return render(fmt, "service_requests", [self.request_view(t, originals) for t in tickets])

    def request_one(self, reference: str, fmt: str) -> Response:
        self.check_jurisdiction()
        with self.store.session() as session:
            ticket = self.ticket_of(session, reference)
            originals = self.originals(session, [ticket])
        return render(fmt, "service_requests", [self.request_view(ticket, originals)])

    def token(self, token: str, fmt: str) -> Response:
        self.check_jurisdiction()
        with self.store.session() as session:
            ticket = session.execute(select(Ticket).where(self.visible(), Ticket.open311_token == token)).scalar()
            if ticket is None:  # a request that the report hook made a follower of an existing ticket
                ticket = session.execute(
                    select(Ticket).join(TicketFollower, TicketFollower.ticket_id == Ticket.id)
                    .where(self.visible(), TicketFollower.conversation_id == CONVERSATION_PREFIX + token)
                    .order_by(TicketFollower.id.desc()).limit(1)).scalar()
        if ticket is None:
            raise Open311Error(404, f"Jeton inconnu : {_shown(token)}.")
        return render(fmt, "service_requests", [{"service_request_id": ticket.reference, "token": token}])

    def post_request(self, fmt: str) -> Response:
        self.check_rate()
        self.check_jurisdiction()
        key = self.require_key()
        code = self.arg("service_code")
        if code is None:
            raise Open311Error(400, "service_code manquant : choisissez un service de services.xml.")
        if code not in self.services:
            raise Open311Error(404, f"service_code inconnu : {_shown(code)}. Voir services.{fmt}.")
        lat, lon = self.point()
        address = clean_citizen_text(self.arg("address_string"), limit=10_000) or None
        if lat is None and address is None:
            if self.arg("address_id"):
                raise Open311Error(400, "address_id n'est pas pris en charge : envoyez lat et long, ou address_string.")
            raise Open311Error(400, "Lieu manquant : envoyez lat et long, ou address_string.")
        if address is not None and len(address) > 500:
            raise Open311Error(400, "address_string trop long (500 caractères au maximum).")
        description = clean_citizen_text(self.arg("description"), limit=10 * MAX_DESCRIPTION)
        if not description:
            raise Open311Error(400, "description manquante : décrivez le problème.")
        if len(description) > MAX_DESCRIPTION:
            raise Open311Error(400, f"description trop longue ({MAX_DESCRIPTION} caractères au maximum).")
        name = self.citizen_name()
        location = address or f"{lat:.6f}, {lon:.6f}"
        token = secrets.token_urlsafe(24)
        # The same request sent again (a client retrying after a lost answer) is the same ticket.
        fingerprint = hashlib.sha256(json.dumps([key.id, code, lat, lon, address, description, name],
                                                ensure_ascii=False).encode("utf-8")).hexdigest()[:40]
        new = NewTicket(kind="report", queue=code, conversation_id=CONVERSATION_PREFIX + token, channel=CHANNEL,
                        summary=description, location=location, citizen_name=name,
                        source_message_id=f"open311:{fingerprint}")
        report = Open311Report(new=new, lat=lat, lon=lon, token=token, key_name=key.name)
        if self.report_hook is not None:
            ticket, created = self.report_hook(report)
        else:
            ticket, created = self.store.create(new, actor=CHANNEL)
        service = self.services[code]
        if created:
            ticket = self.finish_new_ticket(ticket, report)
            notice = (f"Merci : votre signalement est transmis au service {service.name} de "
                      f"{self.profile.town.short_name} (référence {ticket.reference}).")
        else:
            token = ticket.open311_token or token
            notice = (f"Ce problème est déjà signalé (référence {ticket.reference}) : le service "
                      f"{self.service_name(ticket.queue)} s'en occupe.")
        logger.info("open311: request %s %s (key %s)", ticket.reference, "created" if created else "existing", key.id)
        return render(fmt, "service_requests", [{"service_request_id": ticket.reference, "token": token,
                                                 "service_notice": notice}])

    def finish_new_ticket(self, ticket: Ticket, report: Open311Report) -> Ticket:
        """The point and the token on the new ticket, the description in its transcript."""
        with self.store.session() as session:
            row = session.get(Ticket, ticket.id)
            if report.lat is not None:
                row.lat, row.lon = report.lat, report.lon
            row.open311_token = report.token
            session.commit()
            ticket = row
        self.store.add_message(report.new.conversation_id, CHANNEL, "system",
                               f"Signalement reçu par l'API Open311 (clé « {report.key_name} »).", ticket_id=ticket.id)
        self.store.add_message(report.new.conversation_id, CHANNEL, "citizen", report.new.summary,
                               ticket_id=ticket.id, author_name=report.new.citizen_name)
        events.emit("ticket_created", ticket=ticket)
        return ticket

    def point(self) -> tuple[float | None, float | None]:
        raw_lat, raw_lon = self.arg("lat"), self.arg("long")
        if raw_lat is None and raw_lon is None:
            return None, None
        if raw_lat is None or raw_lon is None:
            raise Open311Error(400, "lat et long vont ensemble : envoyez les deux.")
        try:
            lat, lon = float(raw_lat), float(raw_lon)
        except ValueError:
            raise Open311Error(400, "lat et long : des nombres décimaux (WGS84) sont attendus.") from None
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise Open311Error(400, "lat et long hors limites (WGS84 : -90 à 90, -180 à 180).")
        return lat, lon

    def citizen_name(self) -> str | None:
        parts = [clean_citizen_text(self.arg(field), limit=MAX_NAME) for field in ("first_name", "last_name")]
        name = " ".join(part for part in parts if part and part != "-")
        return name[:MAX_NAME] or None

    def updates_list(self, fmt: str) -> Response:
        self.check_jurisdiction()
        start, end = self.date_range()
        with self.store.session() as session:
            rows = session.execute(
                select(StatusChange, Ticket).join(Ticket, StatusChange.ticket_id == Ticket.id)
                .where(self.visible(), StatusChange.created_at >= start, StatusChange.created_at <= end,
                       StatusChange.old_status.is_not(None), StatusChange.new_status != StatusChange.old_status)
                .order_by(StatusChange.created_at, StatusChange.id).limit(MAX_REQUESTS)).all()
            originals = self.originals(session, [ticket for _, ticket in rows])
        updates = [{
            "update_id": str(change.id),
            "service_request_id": ticket.reference,
            "status": "closed" if change.new_status in CLOSED_STATUSES else "open",
            "updated_datetime": self.local_iso(change.created_at),
            "description": self.status_note(change.new_status, ticket, originals),
            "external_status_code": change.new_status,
            "media_url": None,
        } for change, ticket in rows]
        return render(fmt, "service_request_updates", updates)

    def post_update(self, fmt: str) -> Response:
        self.check_rate()
        self.check_jurisdiction()
        key = self.require_key()
        reference = self.arg("service_request_id")
        if reference is None:
            raise Open311Error(400, "service_request_id manquant.")
        self.date_arg("updated_datetime")  # checked; the transcript keeps the time it arrived here
        text = clean_citizen_text(self.arg("description"), limit=10 * MAX_DESCRIPTION)
        if not text:
            raise Open311Error(400, "description manquante : le texte du commentaire est attendu.")
        if len(text) > MAX_DESCRIPTION:
            raise Open311Error(400, f"description trop longue ({MAX_DESCRIPTION} caractères au maximum).")
        media = self.arg("media_url")
        if media and urlsplit(media).scheme in ("http", "https") and len(media) <= 1000:
            text = f"{text}\nPhoto : {media}"
        with self.store.session() as session:
            ticket = self.ticket_of(session, reference)
            external = self.arg("update_id")
            external_id = storable(f"open311:{key.id}:{external}")[:255] if external else None
            if external_id is not None:
                existing = session.execute(select(Message.id).where(
                    Message.ticket_id == ticket.id, Message.external_id == external_id)).scalar()
                if existing is not None:  # the same update sent again
                    return render(fmt, "service_request_updates", [{"update_id": str(existing)}])
        conversation = ticket.conversation_id if ticket.channel == CHANNEL else f"{CONVERSATION_PREFIX}{ticket.reference}"
        message = self.store.add_message(conversation, CHANNEL, "citizen", text, ticket_id=ticket.id,
                                         external_id=external_id, author_name=self.citizen_name())
        logger.info("open311: update %s on %s (key %s)", message.id, ticket.reference, key.id)
        return render(fmt, "service_request_updates", [{"update_id": str(message.id)}])


def _shown(value, length: int = 60) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= length else text[: length - 1] + "…"


def create_open311_app(store: TicketStore, profile: Profile, *, jurisdiction_id: str = DEFAULT_JURISDICTION,
                       report_hook: ReportHook | None = None, flood_guard: FloodGuard | None = None) -> Flask:
    """The GeoReport v2 API under ``/open311/v2/``. ``report_hook(Open311Report) -> (ticket, created)``
    replaces ``store.create`` for posted requests (the duplicate check plugs in there);
    ``flood_guard`` limits POSTs per client address (default: from the environment)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    app.url_map.strict_slashes = False
    api = Open311Api(store, profile, jurisdiction_id, report_hook, flood_guard or flood_guard_from_env())
    app.extensions["open311"] = api

    @app.route(f"{PREFIX}/<name>", methods=["GET", "POST"])
    def collection(name: str):
        stem, fmt = _split_format(name)
        post = request.method == "POST"
        if stem == "services" and not post:
            return api.services_list(fmt)
        if stem == "requests":
            return api.post_request(fmt) if post else api.requests_list(fmt)
        if stem == "servicerequestupdates":
            return api.post_update(fmt) if post else api.updates_list(fmt)
        if stem == "services":
            raise Open311Error(405, "Méthode non permise : services se lit en GET.")
        raise Open311Error(404, f"Ressource inconnue : {_shown(stem)}.")

    @app.route(f"{PREFIX}/services/<name>", methods=["GET"])
    def service(name: str):
        code, fmt = _split_format(name)
        return api.service_definition(code, fmt)

    @app.route(f"{PREFIX}/requests/<name>", methods=["GET"])
    def one_request(name: str):
        reference, fmt = _split_format(name)
        return api.request_one(reference, fmt)

    @app.route(f"{PREFIX}/tokens/<name>", methods=["GET"])
    def token(name: str):
        value, fmt = _split_format(name)
        return api.token(value, fmt)

    @app.errorhandler(Open311Error)
    def open311_error(error: Open311Error):
        return render_error(_format_of_path(request.path), error.status, error.description, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        descriptions = {404: "Ressource inconnue.", 405: "Méthode non permise.", 413: "Requête trop volumineuse."}
        code = error.code or 400
        return render_error(_format_of_path(request.path), code,
                            descriptions.get(code, "Requête invalide."))

    @app.errorhandler(Exception)
    def server_error(error: Exception):
        logger.error("open311: %s on %s %s", type(error).__name__, request.method, request.path)
        logger.debug("open311 traceback", exc_info=True)
        return render_error(_format_of_path(request.path), 500, "Erreur interne du serveur : réessayez plus tard.")

    return app


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, app: Flask | None = None) -> None:
    """Run the API with werkzeug's threaded server until Ctrl-C."""
    from werkzeug.serving import make_server

    app = app or _app_from_settings()
    server = make_server(host, port, app, threaded=True)
    logger.info("Open311 API on http://%s:%s%s/", host, server.server_port, PREFIX)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("Attention : servi hors de la boucle locale. Placez l'API derrière un proxy HTTPS : les clés "
              "d'API passent dans les requêtes.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _app_from_settings() -> Flask:
    from bot.profile import load_profile
    from bot.settings import get_settings

    settings = get_settings()
    profile = load_profile(settings.profile_path)
    jurisdiction = os.environ.get("GUICHET_OPEN311_JURISDICTION") or default_jurisdiction(profile)
    store = TicketStore(settings.database_url)
    return create_open311_app(store, profile, jurisdiction_id=jurisdiction, report_hook=duplicate_check(store, profile))


def duplicate_check(store: TicketStore, profile: Profile) -> ReportHook:
    """The ``report_hook`` of the running API: a report near an open ticket of the same service follows
    it (« déjà signalé », ``bot.followers``: FixMyStreet sees the existing ticket's id), any other
    becomes a ticket; its place is understood from the town's address file when it is loaded."""
    from bot import places
    from bot.followers import Followers

    def hook(report: Open311Report):
        lat, lon = report.lat, report.lon
        place = None
        try:
            if places.loaded(store):
                place = (places.nearest(store, lat, lon) if lat is not None and lon is not None
                         else places.match(store, report.new.location or ""))
        except Exception:  # noqa: BLE001 - the place stays as posted
            logger.warning("Open311: place not understood")
        if lat is None and place is not None:
            lat, lon = place.lat, place.lon
        followers = Followers(store, profile)
        found = followers.duplicate_of(report.new.queue, lat, lon, report.new.conversation_id)
        if found is not None:
            followers.follow(found[0].id, report.new.conversation_id, "open311", report.new.citizen_name)
            store.add_message(report.new.conversation_id, "open311", "citizen",
                              f"[déjà signalé] {report.new.summary}"[:2000], ticket_id=found[0].id)
            return found[0], False
        ticket, created = store.create(report.new)
        if created and place is not None:
            ticket = store.set_place(ticket.id, place.label, place.kind, place.confidence, lat, lon)
        return ticket, created

    return hook


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raw_port = os.environ.get("GUICHET_OPEN311_PORT") or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        raise SystemExit(f"GUICHET_OPEN311_PORT : un numéro de port est attendu, pas « {_shown(raw_port)} ».") from None
    host = os.environ.get("GUICHET_OPEN311_LISTEN") or "127.0.0.1"
    app = _app_from_settings()
    print(f"API Open311 (GeoReport v2) : http://{host}:{port}{PREFIX}/services.xml", flush=True)
    serve(host, port, app)


if __name__ == "__main__":
    main()
