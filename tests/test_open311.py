"""The Open311 GeoReport v2 server (bot/open311.py), over real HTTP on loopback.

Reading goes through ``georeport``, a third-party GeoReport v2 client from the package index (JSON
and XML); writing is shaped exactly like FixMyStreet's client (perllib/Open311.pm): form-encoded
POSTs with ``api_key``, ``jurisdiction_id``, ``attribute[...]`` fields, and answers parsed in XML
as it does (and in JSON).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from georeport import GeoReport
from sqlalchemy import select
from werkzeug.serving import make_server

from bot.flood import FloodGuard
from bot.models import Open311Key, StatusChange, Ticket, utcnow
from bot.open311 import Open311Report, create_key, create_open311_app, list_keys, revoke_key
from bot.tickets import NewTicket, format_reference

ROOT = Path(__file__).resolve().parent.parent
JURISDICTION = "valbourg.example"
PARIS = ZoneInfo("Europe/Paris")
REPORT_SERVICES = ["voirie", "proprete", "espaces_verts", "tranquillite"]  # needs_location in collectivite.yml
REFERENCE = re.compile(r"T-20\d\d-\d{6}")
# The person of the FixMyStreet report: none of this may come out of a read endpoint.
NAME, FIRST, LAST = "Camille Martin", "Camille", "Martin"
EMAIL, PHONE = "camille.martin@example.org", "06 12 34 56 78"


@contextlib.contextmanager
def serving(app):
    """The Flask app on 127.0.0.1 (werkzeug, a free port, a thread): its /open311/v2 address."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/open311/v2"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Hook:
    """A report hook like the duplicate check will be: creates, unless told of an existing ticket."""

    def __init__(self, store):
        self.store = store
        self.existing: Ticket | None = None
        self.reports: list[Open311Report] = []

    def __call__(self, report: Open311Report):
        self.reports.append(report)
        if self.existing is not None:
            return self.existing, False
        return self.store.create(report.new)


@pytest.fixture
def hook(store):
    return Hook(store)


@pytest.fixture
def base(store, profile, hook):
    guard = FloodGuard(per_minute=6000, burst=1000)  # the limit has its own test
    app = create_open311_app(store, profile, jurisdiction_id=JURISDICTION, report_hook=hook, flood_guard=guard)
    with serving(app) as url:
        yield url


@pytest.fixture
def key(store):
    return create_key(store, "FixMyStreet")


def fms_report(key: str, **changes) -> dict:
    """The parameters FixMyStreet's Open311::send_service_request posts (extended description on)."""
    params = {
        "api_key": key, "jurisdiction_id": JURISDICTION, "service_code": "voirie",
        "description": "Nid-de-poule dangereux\n\nUn grand trou devant l'école, les vélos l'évitent de justesse.\n\n"
                       "https://fixmystreet.valbourg.example/report/4242\n",
        "first_name": FIRST, "last_name": LAST, "email": EMAIL, "phone": PHONE,
        "lat": "47.473921", "long": "-0.551234",
        "attribute[easting]": "432100", "attribute[northing]": "6712345", "attribute[fixmystreet_id]": "4242",
        "attribute[title]": "Nid-de-poule dangereux", "attribute[report_url]": "https://fixmystreet.valbourg.example/report/4242",
        "attribute[closest_address]": "12 Rue des Tilleuls, Valbourg",
    }
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def post(base: str, path: str, data: dict, fmt: str = "xml", **kwargs) -> requests.Response:
    return requests.post(f"{base}/{path}.{fmt}", data=data, timeout=10, **kwargs)


def xml_of(response: requests.Response) -> ET.Element:
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    return ET.fromstring(response.content)


def assert_error(response: requests.Response, status: int, fmt: str, words: str = "") -> str:
    """The spec's error body, with the HTTP status as its code: returns the description."""
    assert response.status_code == status, response.text
    if fmt == "json":
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        body = response.json()
        assert isinstance(body, list) and len(body) == 1 and body[0]["code"] == status
        description = body[0]["description"]
    else:
        root = xml_of(response)
        assert root.tag == "errors" and [e.tag for e in root] == ["error"]
        assert root.find("error/code").text == str(status)
        description = root.find("error/description").text
    assert description and words.lower() in description.lower(), description
    return description


def local_iso(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=dt.timezone.utc).astimezone(PARIS).isoformat(timespec="seconds")


def w3c_utc(moment: dt.datetime) -> str:
    """As FixMyStreet's DateTime::Format::W3CDTF writes a UTC time."""
    return moment.replace(microsecond=0).isoformat() + "Z"


_chats = iter(range(1, 100_000))


def chat_ticket(store, queue: str = "voirie", *, kind: str = "report", now: dt.datetime | None = None,
                place: str | None = "12 Rue des Tilleuls", lat: float | None = 47.47, lon: float | None = -0.55) -> Ticket:
    """A ticket born in a Telegram chat: the citizen's name and words must stay private."""
    ticket, _ = store.create(NewTicket(
        kind=kind, queue=queue, conversation_id=f"tg-{next(_chats)}", channel="telegram",
        summary="Lampadaire en panne, appelez-moi au 07 98 76 54 32 ou jeanne.riviere@example.net",
        location="devant chez moi, Jeanne Rivière, au fond de l'impasse", citizen_name="Jeanne Rivière"), now=now)
    with store.session() as session:
        row = session.get(Ticket, ticket.id)
        row.place_label, row.lat, row.lon = place, lat, lon
        session.commit()
        return row


def amend(store, ticket: Ticket, **values) -> Ticket:
    with store.session() as session:
        row = session.get(Ticket, ticket.id)
        for name, value in values.items():
            setattr(row, name, value)
        session.commit()
        return row


# --- reading with the georeport client ---------------------------------------------------------------

def test_services_through_the_georeport_client(base, profile):
    services = GeoReport(base, jurisdiction=JURISDICTION).get_service_list()
    assert [s["service_code"] for s in services] == REPORT_SERVICES
    voirie = services[0]
    assert voirie == {
        "service_code": "voirie", "service_name": "Voirie et éclairage public",
        "description": profile.services["voirie"].handles, "metadata": False, "type": "realtime",
        "keywords": voirie["keywords"], "group": "Espace public",
    }
    assert "nids-de-poule" in voirie["keywords"] and "lampadaires et éclairage public" in voirie["keywords"]

    as_xml = GeoReport(base, jurisdiction=JURISDICTION, output_format="xml").get_service_list()
    assert [s["service_code"] for s in as_xml] == REPORT_SERVICES
    assert as_xml[1]["service_name"] == "Propreté et collecte des déchets"
    assert as_xml[1]["metadata"] == "false" and as_xml[1]["type"] == "realtime"

    definition = GeoReport(base, jurisdiction=JURISDICTION).get_service_definition("proprete")
    assert definition == {"service_code": "proprete", "attributes": []}
    xml_definition = GeoReport(base, output_format="xml").get_service_definition("proprete")
    assert xml_definition["service_code"] == "proprete" and not xml_definition["attributes"]

    for code in ("etat_civil", "inconnu"):  # a service that takes no reports is not one of the API's
        with pytest.raises(requests.HTTPError) as raised:
            GeoReport(base).get_service_definition(code)
        assert_error(raised.value.response, 404, "json", "service_code inconnu")


def test_a_request_read_back_in_json_and_xml(base, store, key):
    answer = post(base, "requests", fms_report(key), "json")
    assert answer.status_code == 200, answer.text
    reference = answer.json()[0]["service_request_id"]
    ticket = store.by_reference(reference, strict=True)

    one = GeoReport(base, jurisdiction=JURISDICTION).get_service_request(reference)
    assert one == {
        "service_request_id": reference, "status": "open", "status_notes": "Reçu",
        "service_name": "Voirie et éclairage public", "service_code": "voirie",
        "description": fms_report(key)["description"].strip(),
        "agency_responsible": "Voirie et éclairage public", "service_notice": None,
        "requested_datetime": local_iso(ticket.created_at), "updated_datetime": one["updated_datetime"],
        "expected_datetime": None, "address": "47.473921, -0.551234", "lat": 47.473921, "long": -0.551234,
        "media_url": None,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0[12]:00", one["requested_datetime"])  # Paris time

    xml_one = GeoReport(base, jurisdiction=JURISDICTION, output_format="xml").get_service_request(reference)
    assert xml_one["service_request_id"] == reference and xml_one["status"] == "open"
    assert xml_one["lat"] == "47.473921" and xml_one["long"] == "-0.551234"
    assert xml_one["requested_datetime"] == one["requested_datetime"] and xml_one["media_url"] is None

    with pytest.raises(requests.HTTPError) as raised:
        GeoReport(base).get_service_request("T-2026-999999")
    assert_error(raised.value.response, 404, "json", "introuvable")


def test_requests_list_and_its_filters_through_georeport(base, store):
    now = utcnow()
    pothole = chat_ticket(store, "voirie", now=now - dt.timedelta(days=3))
    litter = chat_ticket(store, "proprete", now=now - dt.timedelta(days=2))
    store.set_status(litter.id, "resolved", "victor", now=now - dt.timedelta(days=1))
    tree = chat_ticket(store, "espaces_verts", now=now - dt.timedelta(days=1), place=None, lat=None, lon=None)
    old = chat_ticket(store, "voirie", now=now - dt.timedelta(days=120))
    hidden = [chat_ticket(store, "etat_civil", kind="request", now=now - dt.timedelta(days=1)),
              store.create(NewTicket(kind="handoff", queue="cm", conversation_id="tg-handoff", channel="telegram",
                                     summary="je veux parler à quelqu'un"))[0]]
    client = GeoReport(base, jurisdiction=JURISDICTION)

    listed = client.get_service_requests()
    assert [r["service_request_id"] for r in listed] == [tree.reference, litter.reference, pothole.reference]
    assert not {t.reference for t in hidden + [old]} & {r["service_request_id"] for r in listed}
    assert listed[2]["address"] == "12 Rue des Tilleuls" and listed[2]["lat"] == 47.47
    assert listed[0]["address"] is None and listed[0]["lat"] is None
    assert all(r["description"] is None for r in listed)  # a chat's words are not published

    assert [r["service_request_id"] for r in client.get_service_requests(service_code="voirie")] == [pothole.reference]
    assert ({r["service_request_id"] for r in client.get_service_requests(service_code="voirie,espaces_verts")}
            == {pothole.reference, tree.reference})
    closed = client.get_service_requests(status="closed")
    assert [(r["service_request_id"], r["status"], r["status_notes"]) for r in closed] == [
        (litter.reference, "closed", "Résolu")]
    assert [r["service_request_id"] for r in client.get_service_requests(status="open")] == [
        tree.reference, pothole.reference]
    assert len(client.get_service_requests(status="open,closed")) == 3
    declared_twice = requests.get(f"{base}/requests.json", params=[("service_code", "voirie"),
                                                                    ("service_code", "proprete")], timeout=10).json()
    assert [r["service_request_id"] for r in declared_twice] == [litter.reference, pothole.reference]

    window = client.get_service_requests(start_date=w3c_utc(now - dt.timedelta(days=121)),
                                         end_date=w3c_utc(now - dt.timedelta(days=100)))
    assert [r["service_request_id"] for r in window] == [old.reference]
    paris_window = client.get_service_requests(  # an offset, sent encoded by the client
        start_date=(now - dt.timedelta(days=4)).replace(tzinfo=dt.timezone.utc).astimezone(PARIS).isoformat(),
        end_date=(now - dt.timedelta(hours=36)).replace(tzinfo=dt.timezone.utc).astimezone(PARIS).isoformat())
    assert [r["service_request_id"] for r in paris_window] == [litter.reference, pothole.reference]

    # service_request_id overrides every other argument: old, closed, other services (not hidden ones)
    asked = ",".join([old.reference, litter.reference, hidden[0].reference, "T-2026-999999", "n'importe quoi"])
    by_id = client.get_service_requests(service_request_id=asked, status="open", service_code="espaces_verts")
    assert [r["service_request_id"] for r in by_id] == [old.reference, litter.reference]

    as_xml = GeoReport(base, jurisdiction=JURISDICTION, output_format="xml").get_service_requests(status="open")
    assert [(r["service_request_id"], r["status"], r["service_code"]) for r in as_xml] == [
        (tree.reference, "open", "espaces_verts"), (pothole.reference, "open", "voirie")]


def test_status_mapping_and_notes(base, store):
    statuses = ["new", "acknowledged", "in_progress", "scheduled", "not_ours", "resolved", "duplicate", "closed"]
    tickets = {status: chat_ticket(store, "voirie") for status in statuses}
    original = tickets["new"]
    amend(store, tickets["scheduled"], scheduled_for=dt.datetime(2026, 12, 3, 8, 0))
    amend(store, tickets["duplicate"], duplicate_of_id=original.id)
    amend(store, tickets["not_ours"], queue="cm")  # sent back to the CM: still visible, the CM's now
    for status, ticket in tickets.items():
        if status != "new":
            store.set_status(ticket.id, status, "victor")
    by_id = {r["service_request_id"]: r for r in GeoReport(base).get_service_requests()}
    seen = {status: by_id[ticket.reference] for status, ticket in tickets.items()}

    assert {status: (r["status"], r["status_notes"]) for status, r in seen.items()} == {
        "new": ("open", "Reçu"), "acknowledged": ("open", "Pris en compte"),
        "in_progress": ("open", "En cours de traitement"), "scheduled": ("open", "Programmé le 03/12/2026"),
        "not_ours": ("open", "En cours de réorientation vers le service compétent"),
        "resolved": ("closed", "Résolu"), "duplicate": ("closed", f"Doublon de {original.reference}"),
        "closed": ("closed", "Clôturé"),
    }
    assert seen["scheduled"]["expected_datetime"] == "2026-12-03T09:00:00+01:00"
    assert seen["not_ours"]["agency_responsible"] == "Communication"
    closed = store.get(tickets["closed"].id)
    assert seen["closed"]["updated_datetime"] == local_iso(closed.closed_at)
    xml_duplicate = GeoReport(base, output_format="xml").get_service_request(tickets["duplicate"].reference)
    assert xml_duplicate["status"] == "closed" and xml_duplicate["status_notes"] == f"Doublon de {original.reference}"


def test_the_default_window_is_90_days_and_1000_requests(base, store):
    now = utcnow()
    with store.session() as session:
        rows = [Ticket(kind="report", queue="voirie", status="new", conversation_id=f"tg-bulk-{i}", channel="telegram",
                       summary="trou", created_at=now - dt.timedelta(minutes=10 * i), updated_at=now)
                for i in range(1005)]
        rows += [Ticket(kind="report", queue="proprete", status="new", conversation_id=f"tg-old-{i}",
                        channel="telegram", summary="sac", created_at=now - dt.timedelta(days=95 + i), updated_at=now)
                 for i in range(3)]
        session.add_all(rows)
        session.flush()
        for row in rows:
            row.reference = format_reference(row.created_at.year, row.id)
        session.commit()
        newest, old = rows[0].reference, {row.reference for row in rows[1005:]}

    listed = requests.get(f"{base}/requests.json", timeout=30).json()
    assert len(listed) == 1000 and listed[0]["service_request_id"] == newest
    assert not old & {r["service_request_id"] for r in listed}
    stamps = [r["requested_datetime"] for r in listed]
    assert stamps == sorted(stamps, reverse=True)  # newest first: the latest 1,000
    xml_listed = xml_of(requests.get(f"{base}/requests.xml", timeout=30))
    assert len(xml_listed.findall("request")) == 1000

    earlier = requests.get(f"{base}/requests.json", params={"end_date": w3c_utc(now - dt.timedelta(days=94))},
                           timeout=30).json()  # end_date alone: the 90 days before it
    assert {r["service_request_id"] for r in earlier} == old
    too_long = requests.get(f"{base}/requests.json", timeout=10, params={
        "start_date": w3c_utc(now - dt.timedelta(days=91)), "end_date": w3c_utc(now)})
    assert_error(too_long, 400, "json", "90 jours")


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_bad_dates_are_400(base, fmt):
    for params in ({"start_date": "hier"}, {"end_date": "2026-03-01T10:00:00"},  # a time without its zone
                   {"start_date": "2026-02-30T10:00:00Z"}, {"start_date": "2026-03-01T25:00:00+01:00"},
                   {"start_date": "2026-03-02T00:00:00Z", "end_date": "2026-03-01T00:00:00Z"}):
        for path in ("requests", "servicerequestupdates"):
            response = requests.get(f"{base}/{path}.{fmt}", params=params, timeout=10)
            assert_error(response, 400, fmt)
    assert requests.get(f"{base}/requests.{fmt}", params={"start_date": "2026-03-01"}, timeout=10).status_code == 200


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_unknown_things_are_404_and_bad_filters_400(base, store, key, fmt):
    ticket = chat_ticket(store)
    assert_error(requests.get(f"{base}/requests/T-2026-999999.{fmt}", timeout=10), 404, fmt, "introuvable")
    assert_error(requests.get(f"{base}/requests/bonjour.{fmt}", timeout=10), 404, fmt, "introuvable")
    assert_error(requests.get(f"{base}/services/piscine.{fmt}", timeout=10), 404, fmt, "service_code inconnu")
    assert_error(requests.get(f"{base}/tokens/abc123.{fmt}", timeout=10), 404, fmt, "jeton")
    assert_error(requests.get(f"{base}/nimporte.{fmt}", timeout=10), 404, fmt)
    assert_error(requests.get(f"{base}/requests.{fmt}", params={"service_code": "piscine"}, timeout=10),
                 400, fmt, "service_code")
    assert_error(requests.get(f"{base}/requests.{fmt}", params={"status": "pending"}, timeout=10), 400, fmt, "status")
    assert_error(requests.post(f"{base}/services.{fmt}", timeout=10), 405, fmt)
    hand_off = store.create(NewTicket(kind="handoff", queue="cm", conversation_id="tg-ho", channel="telegram",
                                      summary="je veux parler à quelqu'un"))[0]
    assert_error(requests.get(f"{base}/requests/{hand_off.reference}.{fmt}", timeout=10), 404, fmt)

    wrong = {"jurisdiction_id": "autreville.example"}
    for path in ("services", "services/voirie", "requests", f"requests/{ticket.reference}", "servicerequestupdates"):
        assert_error(requests.get(f"{base}/{path}.{fmt}", params=wrong, timeout=10), 404, fmt, "jurisdiction_id")
        assert requests.get(f"{base}/{path}.{fmt}", params={"jurisdiction_id": JURISDICTION}, timeout=10).ok
        assert requests.get(f"{base}/{path}.{fmt}", params={"jurisdiction_id": ""}, timeout=10).ok  # empty: absent
    for path in ("requests", "servicerequestupdates"):
        assert_error(post(base, path, fms_report(key, jurisdiction_id="autreville.example",
                                                  service_request_id=ticket.reference), fmt), 404, fmt, "jurisdiction_id")


def test_an_unknown_format_is_404_in_the_spec_s_format(base, store):
    ticket = chat_ticket(store)
    for path in ("services.html", "services", "requests.csv", f"requests/{ticket.reference}", "services/voirie.yaml",
                 f"requests/{ticket.reference}.", "tokens/abc"):
        assert_error(requests.get(f"{base}/{path}", timeout=10), 404, "xml", "format")
    assert_error(requests.get(base.replace("/open311/v2", "/open311/v3/services.json"), timeout=10), 404, "json")


# --- writing, as FixMyStreet does ----------------------------------------------------------------------

def test_a_report_posted_like_fixmystreet_xml(base, store, key, hook):
    answer = post(base, "requests", fms_report(key))
    assert answer.status_code == 200  # GeoReport v2.1's definition: 200, an array of requests
    root = xml_of(answer)
    assert root.tag == "service_requests" and [e.tag for e in root] == ["request"]
    reference = root.find("request/service_request_id").text
    token = root.find("request/token").text
    notice = root.find("request/service_notice").text
    assert REFERENCE.fullmatch(reference) and token and reference in notice and "Voirie" in notice

    ticket = store.by_reference(reference, strict=True)
    assert (ticket.kind, ticket.queue, ticket.status, ticket.channel) == ("report", "voirie", "new", "open311")
    assert ticket.conversation_id == f"open311-{token}" and ticket.open311_token == token
    assert (ticket.lat, ticket.lon) == (47.473921, -0.551234)
    assert ticket.location == "47.473921, -0.551234" and ticket.citizen_name == NAME
    assert ticket.summary == fms_report(key)["description"].strip()
    transcript = store.transcript(ticket.id)
    assert [(m.author, m.text) for m in transcript] == [
        ("system", "Signalement reçu par l'API Open311 (clé « FixMyStreet »)."), ("citizen", ticket.summary)]
    assert transcript[1].author_name == NAME
    stored = repr([(t.summary, t.location, t.citizen_name) for t in [ticket]] + [m.text for m in transcript])
    assert EMAIL not in stored and PHONE not in stored  # the API does not keep what it does not need
    assert len(hook.reports) == 1
    seen = hook.reports[0]
    assert (seen.lat, seen.lon, seen.token, seen.key_name) == (47.473921, -0.551234, token, "FixMyStreet")
    assert (seen.new.queue, seen.new.channel, seen.new.kind) == ("voirie", "open311", "report")

    by_token = xml_of(requests.get(f"{base}/tokens/{token}.xml", timeout=10))
    assert by_token.find("request/service_request_id").text == reference
    assert by_token.find("request/token").text == token
    assert requests.get(f"{base}/tokens/{token}.json", timeout=10).json() == [
        {"service_request_id": reference, "token": token}]


def test_a_report_posted_in_json_with_an_address_only(base, store, key):
    answer = post(base, "requests", fms_report(key, lat=None, long=None, service_code="proprete",
                                                address_string="Place du Marché, 49100 Valbourg"), "json")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json; charset=utf-8"
    [body] = answer.json()
    assert set(body) == {"service_request_id", "token", "service_notice"}
    ticket = store.by_reference(body["service_request_id"], strict=True)
    assert ticket.queue == "proprete" and ticket.location == "Place du Marché, 49100 Valbourg"
    assert ticket.lat is None and ticket.lon is None
    one = requests.get(f"{base}/requests/{ticket.reference}.json", timeout=10).json()[0]
    assert one["address"] == "Place du Marché, 49100 Valbourg" and one["lat"] is None

    again = post(base, "requests", fms_report(key, lat=None, long=None, service_code="proprete",
                                               address_string="Place du Marché, 49100 Valbourg"), "json").json()[0]
    assert again["service_request_id"] == ticket.reference and again["token"] == body["token"]  # a retry
    with store.session() as session:
        assert len(session.execute(select(Ticket).where(Ticket.channel == "open311")).scalars().all()) == 1


def test_the_api_key_is_needed_and_checked(base, store, key):
    with store.session() as session:
        assert key not in repr([(k.name, k.key_hash) for k in session.execute(select(Open311Key)).scalars()])
    revoked = create_key(store, "ancienne appli")
    revoke_key(store, [k for k in list_keys(store) if k.name == "ancienne appli"][0].id)
    for fmt in ("xml", "json"):
        assert_error(post(base, "requests", fms_report(None), fmt), 403, fmt, "manquante")
        assert_error(post(base, "requests", fms_report("o311_pas-une-vraie-cle"), fmt), 403, fmt, "invalide")
        assert_error(post(base, "requests", fms_report(revoked), fmt), 403, fmt, "révoquée")
        assert_error(post(base, "requests", fms_report(key.upper()), fmt), 403, fmt)
        assert_error(post(base, "servicerequestupdates", {"service_request_id": "T-2026-000001",
                                                          "description": "x", "api_key": revoked}, fmt), 403, fmt)
    with store.session() as session:
        assert session.execute(select(Ticket)).scalars().all() == []
    header = post(base, "requests", fms_report(None), "json", headers={"X-API-Key": key})
    assert header.status_code == 200 and REFERENCE.fullmatch(header.json()[0]["service_request_id"])


@pytest.mark.parametrize("fmt", ["xml", "json"])
def test_bad_posts_are_refused_with_the_reason(base, store, key, fmt):
    cases = [
        (fms_report(key, service_code=None), 400, "service_code manquant"),
        (fms_report(key, service_code="piscine"), 404, "service_code inconnu"),
        (fms_report(key, service_code="etat_civil"), 404, "service_code inconnu"),
        (fms_report(key, lat=None, long=None), 400, "lieu manquant"),
        (fms_report(key, lat=None, long=None, address_id="545483"), 400, "address_id"),
        (fms_report(key, long=None), 400, "lat et long"),
        (fms_report(key, lat="quarante-sept"), 400, "nombres"),
        (fms_report(key, lat="147.2"), 400, "hors limites"),
        (fms_report(key, lat="nan"), 400, "hors limites"),
        (fms_report(key, description=None), 400, "description manquante"),
        (fms_report(key, description="   \x00 "), 400, "description manquante"),
        (fms_report(key, description="trou " * 801), 400, "trop longue"),
    ]
    for data, status, words in cases:
        assert_error(post(base, "requests", data, fmt), status, fmt, words)
    with store.session() as session:
        assert session.execute(select(Ticket)).scalars().all() == []


def test_a_duplicate_from_the_report_hook_answers_the_existing_ticket(base, store, key, hook):
    existing = chat_ticket(store, "voirie")
    hook.existing = existing
    for fmt in ("xml", "json"):
        answer = post(base, "requests", fms_report(key, description=f"Encore ce trou ({fmt})"), fmt)
        assert answer.status_code == 200
        if fmt == "json":
            body = answer.json()[0]
            reference, notice = body["service_request_id"], body["service_notice"]
        else:
            root = xml_of(answer)
            reference, notice = root.find("request/service_request_id").text, root.find("request/service_notice").text
        assert reference == existing.reference and "déjà signalé" in notice
    assert len(hook.reports) == 2 and hook.reports[0].new.summary == "Encore ce trou (xml)"
    with store.session() as session:
        assert [t.id for t in session.execute(select(Ticket)).scalars()] == [existing.id]
    assert store.get(existing.id).open311_token is None  # the existing ticket is left as it was


def test_posts_are_rate_limited_per_client_address(store, profile, key):
    app = create_open311_app(store, profile, flood_guard=FloodGuard(per_minute=1, burst=2))
    with serving(app) as url:
        assert post(url, "requests", fms_report(key), "json").status_code == 200
        assert post(url, "requests", fms_report(None), "json").status_code == 403  # refused ones count too
        limited = post(url, "requests", fms_report(key, description="encore"), "json")
        assert_error(limited, 429, "json", "trop de requêtes")
        assert limited.headers["Retry-After"] == "60"
        assert_error(post(url, "servicerequestupdates", {"api_key": key}, "xml"), 429, "xml")
        assert requests.get(f"{url}/requests.json", timeout=10).status_code == 200  # reading is not limited


# --- FixMyStreet's servicerequestupdates --------------------------------------------------------------

def fms_update(key: str, reference: str, **changes) -> dict:
    """What Open311::post_service_request_update sends for a citizen's update on FixMyStreet."""
    params = {"api_key": key, "jurisdiction_id": JURISDICTION, "service_request_id": reference,
              "update_id": "9001", "status": "OPEN", "description": "Toujours là ce matin, et plus profond.",
              "updated_datetime": w3c_utc(utcnow()), "first_name": FIRST, "last_name": "-",
              "email": EMAIL, "phone": PHONE, "media_url": "https://fixmystreet.valbourg.example/photo/9001.full.jpeg"}
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def test_a_citizen_update_posted_like_fixmystreet(base, store, key):
    reference = post(base, "requests", fms_report(key), "json").json()[0]["service_request_id"]
    ticket = store.by_reference(reference, strict=True)

    root = xml_of(post(base, "servicerequestupdates", fms_update(key, reference)))
    assert root.tag == "service_request_updates" and [e.tag for e in root] == ["request_update"]
    update_id = root.find("request_update/update_id").text
    last = store.transcript(ticket.id)[-1]
    assert str(last.id) == update_id and last.author == "citizen" and last.author_name == FIRST
    assert last.text == ("Toujours là ce matin, et plus profond.\n"
                         "Photo : https://fixmystreet.valbourg.example/photo/9001.full.jpeg")
    assert EMAIL not in last.text and PHONE not in last.text

    again = xml_of(post(base, "servicerequestupdates", fms_update(key, reference)))  # sent twice: once kept
    assert again.find("request_update/update_id").text == update_id
    second = post(base, "servicerequestupdates", fms_update(key, reference, update_id="9002", media_url=None,
                                                             description="Merci !"), "json")
    assert second.status_code == 200 and list(second.json()[0]) == ["update_id"]
    assert [m.text for m in store.transcript(ticket.id)][-2:] == [last.text, "Merci !"]

    chat = chat_ticket(store)  # a ticket born in a chat, followed on FixMyStreet: its own conversation
    post(base, "servicerequestupdates", fms_update(key, chat.reference, update_id="77"), "json")
    note = store.transcript(chat.id)[-1]
    assert note.channel == "open311" and note.conversation_id == f"open311-{chat.reference}"

    for fmt in ("xml", "json"):
        assert_error(post(base, "servicerequestupdates", fms_update(key, "T-2026-999999"), fmt), 404, fmt)
        assert_error(post(base, "servicerequestupdates", fms_update(key, None), fmt), 400, fmt, "service_request_id")
        assert_error(post(base, "servicerequestupdates", fms_update(key, reference, description=None), fmt), 400, fmt)
        assert_error(post(base, "servicerequestupdates", fms_update(key, reference, updated_datetime="mardi"), fmt),
                     400, fmt, "updated_datetime")
        assert_error(post(base, "servicerequestupdates", fms_update(None, reference), fmt), 403, fmt)


def test_status_changes_are_listed_as_updates(base, store):
    now = utcnow().replace(microsecond=0)
    first = chat_ticket(store, now=now - dt.timedelta(hours=5))
    second = chat_ticket(store, "proprete", now=now - dt.timedelta(hours=5))
    hidden = chat_ticket(store, "etat_civil", kind="request", now=now - dt.timedelta(hours=5))
    store.set_status(first.id, "in_progress", "victor", now=now - dt.timedelta(hours=4))
    store.set_status(second.id, "duplicate", "victor", now=now - dt.timedelta(hours=3))
    amend(store, second, duplicate_of_id=first.id)
    store.set_status(first.id, "resolved", "victor", note="rebouché par l'équipe de Paul", now=now - dt.timedelta(hours=1))
    store.set_status(hidden.id, "resolved", "ines", now=now - dt.timedelta(hours=1))
    store.mark_urgent(first.id, now=now - dt.timedelta(minutes=30))  # not a status change

    window = {"jurisdiction_id": JURISDICTION, "api_key": "", "start_date": w3c_utc(now - dt.timedelta(hours=2, minutes=30)),
              "end_date": w3c_utc(now)}  # FixMyStreet's last hours, with its (here unneeded) api_key
    updates = requests.get(f"{base}/servicerequestupdates.json", params=window, timeout=10).json()
    with store.session() as session:
        changes = {c.new_status: c for c in session.execute(
            select(StatusChange).where(StatusChange.ticket_id == first.id)).scalars() if c.old_status != c.new_status}
    assert updates == [{
        "update_id": str(changes["resolved"].id), "service_request_id": first.reference, "status": "closed",
        "updated_datetime": local_iso(now - dt.timedelta(hours=1)), "description": "Résolu",
        "external_status_code": "resolved", "media_url": None}]

    everything = requests.get(f"{base}/servicerequestupdates.json", timeout=10).json()  # the last 90 days
    assert [(u["service_request_id"], u["status"], u["description"]) for u in everything] == [
        (first.reference, "open", "En cours de traitement"),
        (second.reference, "closed", f"Doublon de {first.reference}"),
        (first.reference, "closed", "Résolu")]
    root = xml_of(requests.get(f"{base}/servicerequestupdates.xml", timeout=10))
    assert root.tag == "service_request_updates" and len(root.findall("request_update")) == 3
    item = root.findall("request_update")[1]
    assert [child.tag for child in item] == ["update_id", "service_request_id", "status", "updated_datetime",
                                             "description", "external_status_code", "media_url"]
    assert item.find("status").text == "closed" and item.find("description").text == f"Doublon de {first.reference}"
    assert "Paul" not in ET.tostring(root, encoding="unicode")  # staff notes stay with staff


# --- privacy ---------------------------------------------------------------------------------------------

def test_no_name_e_mail_phone_or_transcript_in_any_read_answer(base, store, key):
    described = fms_report(key, description=f"Trou énorme. {NAME} ({EMAIL}, {PHONE}) peut montrer l'endroit.")
    body = post(base, "requests", described, "json").json()[0]
    reference, token = body["service_request_id"], body["token"]
    post(base, "servicerequestupdates", fms_update(key, reference, description=f"C'est {NAME}, {EMAIL}"), "json")
    chat = chat_ticket(store)
    store.set_status(chat.id, "acknowledged", "victor", note="Mme Rivière rappelée au 07 98 76 54 32")
    store.add_message(chat.conversation_id, "telegram", "citizen", "mon code porte est 1234B", ticket_id=chat.id)

    answers = []
    for fmt in ("xml", "json"):
        for path in ("services", "services/voirie", "requests", f"requests/{reference}", f"requests/{chat.reference}",
                     f"tokens/{token}", "servicerequestupdates"):
            response = requests.get(f"{base}/{path}.{fmt}", timeout=10)
            assert response.status_code == 200, path
            answers.append(response.text)
    everything = "\n".join(answers)
    for private in (NAME, FIRST, LAST, EMAIL, PHONE, "Jeanne", "Rivière", "07 98 76 54 32", "jeanne.riviere",
                    "1234B", "impasse", "rappelée", "C'est "):
        assert private not in everything, private
    one = requests.get(f"{base}/requests/{reference}.json", timeout=10).json()[0]
    assert one["description"] == ("Trou énorme. [nom masqué] ([e-mail masqué], [téléphone masqué]) "
                                  "peut montrer l'endroit.")


# --- keys and the command ---------------------------------------------------------------------------------

def test_key_management(store):
    first = create_key(store, "FixMyStreet")
    second = create_key(store, "  appli mobile ")
    assert first.startswith("o311_") and len(first) > 40 and first != second
    keys = list_keys(store)
    assert [(k.name, k.revoked_at) for k in keys] == [("FixMyStreet", None), ("appli mobile", None)]
    assert all(k.key_hash != first and len(k.key_hash) == 64 for k in keys)
    revoked = revoke_key(store, keys[1].id)
    assert revoked.revoked_at is not None
    assert revoke_key(store, keys[1].id).revoked_at == revoked.revoked_at  # again: unchanged
    assert [k.revoked_at is None for k in list_keys(store)] == [True, False]
    with pytest.raises(LookupError):
        revoke_key(store, 999)
    for name in ("", "   ", "x" * 101):
        with pytest.raises(ValueError):
            create_key(store, name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_python_m_bot_open311_serves_the_api(tmp_path):
    port = _free_port()
    env = {**os.environ, "GUICHET_OPEN311_PORT": str(port), "GUICHET_OPEN311_JURISDICTION": "valbourg.test",
           "GUICHET_DATABASE_URL": f"sqlite:///{tmp_path / 'open311.db'}", "GUICHET_VAR_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "bot.open311"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/open311/v2"
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(f"{url}/services.json", params={"jurisdiction_id": "valbourg.test"}, timeout=2)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "the Open311 server did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert [s["service_code"] for s in response.json()] == REPORT_SERVICES
        wrong = requests.get(f"{url}/services.json", params={"jurisdiction_id": JURISDICTION}, timeout=2)
        assert_error(wrong, 404, "json", "valbourg.test")
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert f"http://127.0.0.1:{port}/open311/v2/services.xml" in output


def test_the_running_apis_duplicate_check_makes_the_second_poster_a_follower(store, profile):
    """``duplicate_check`` (what ``python -m bot.open311`` uses): the town's addresses loaded, two
    FixMyStreet reports 30 m apart on the same service: one ticket, the second poster follows it."""
    from pathlib import Path

    from bot import places
    from bot.followers import Followers
    from bot.open311 import duplicate_check

    reference_dir = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"
    places.load(store, reference_dir / "valbourg-adresses.csv", reference_dir / "valbourg-lieux.csv")
    spot = places.match(store, "12 rue des Tilleuls")
    app = create_open311_app(store, profile, jurisdiction_id=JURISDICTION, report_hook=duplicate_check(store, profile),
                             flood_guard=FloodGuard(per_minute=6000, burst=1000))
    key = create_key(store, "FixMyStreet")
    with serving(app) as url:
        first = post(url, "requests", fms_report(key, lat=f"{spot.lat:.6f}", long=f"{spot.lon:.6f}"), "json").json()
        second = post(url, "requests", fms_report(key, lat=f"{spot.lat + 0.00027:.6f}", long=f"{spot.lon:.6f}"),
                      "json").json()
        elsewhere = post(url, "requests", fms_report(key, lat=f"{spot.lat:.6f}", long=f"{spot.lon:.6f}",
                                                     service_code="proprete"), "json").json()
    assert second[0]["service_request_id"] == first[0]["service_request_id"]
    assert elsewhere[0]["service_request_id"] != first[0]["service_request_id"]  # another service
    ticket = store.by_reference(first[0]["service_request_id"], strict=True)
    assert "Tilleuls" in (ticket.place_label or "")  # the point understood as the nearest address
    assert [f.channel for f in Followers(store).of_ticket(ticket.id)] == ["open311"]
