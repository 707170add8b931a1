"""`make data-bench` / `python -m bot.data_bench`: what the staff pages, the privacy commands and a
citizen message cost when the database holds a large town's year, and at a tenth of it.

    python -m bot.data_bench [--scale 1.0] [--also 0.1] [--json var/data-bench.json]
                             [--database-url postgresql+psycopg2://...]

For each size (``--scale`` first, then every ``--also``) and an empty database:

1. a fresh schema (Alembic migrations), filled by ``fill`` in a few ``INSERT ... SELECT
   generate_series`` statements: at scale 1, 200,000 conversations, 60,000 tickets and
   1,000,000 transcript lines a year (spread over the last ``SPAN_DAYS`` days, so the purge has
   the week beyond the retention period to do), their audit trail, outbox, public comments,
   followers and Rasa's tracker events (about 13 per conversation); services, hours and
   retention from the profile (collectivite.yml), the town's addresses (../shared/reference);
2. each operation timed several times through the real code: the staff web (Flask app, logged
   in as the CM and as a service head), the ``guichet`` commands in-process (``purge``,
   ``citizen export``), and citizen messages end to end through a real Rasa server and action
   server on that database (``bot.stack.running_stack``; new conversations, a question and a
   report that makes a ticket);
3. every SQL statement an operation runs is captured and ``EXPLAIN``ed: sequential scans of the
   big tables are reported (``--force-index`` explains with ``enable_seqscan=off``, to check on a
   small database that an index *can* serve the query).

Prints the table (operation, each size, target, ok?) and writes the JSON. Without
``--database-url`` it starts its own throw-away PostgreSQL cluster on loopback (``bot.pg_cluster``);
with one, the schema ``public`` of that database is dropped and recreated: give it a database of
its own. The test suite runs the same code at scale 0.01 (tests/test_data_bench.py), without timing
assertions.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from bot.settings import PROJECT_ROOT

SPAN_DAYS = 372  # a year and the week beyond the retention period (365 days), for the purge
PER_YEAR = {"conversations": 200_000, "tickets": 60_000, "lines": 1_000_000}
BIG_TABLES = ("ticket", "message", "status_change", "outbox", "events", "public_comment", "ticket_follower")
BIG_ROWS = 10_000  # a sequential scan of a smaller table is what PostgreSQL should do (unless --force-index)
PASSWORD = "banc-d-essai-2026"
CM_USER = "camille"
HEAD_SERVICE = "voirie"  # the busiest service
REFERENCE_DIR = PROJECT_ROOT.parent / "shared" / "reference"
PG_OPTIONS = "-c shared_buffers=512MB -c work_mem=16MB -c maintenance_work_mem=256MB"
# Targets (ms) of the issue "costs that stay flat as the data grows"; the citizen message's is
# relative: not slower than on an empty database (``CITIZEN_SLACK`` for the noise of 2 cores).
TARGETS_MS = {"queue_cm": 200, "queue_head": 200, "ticket_page": 200, "search": 200, "stats_365": 3000}
CITIZEN_SLACK = 1.25
OPERATIONS = {  # name -> what it is, as the table shows it
    "queue_cm": "CM queue (/queue)",
    "queue_head": "service head's queue (/queue)",
    "ticket_page": "ticket page (/tickets/<ref>)",
    "search": "search by reference (/recherche)",
    "stats_30": "stats page, 30 days",
    "stats_365": "stats page, 365 days",
    "csv_export": "CSV export, 365 days (/stats.csv)",
    "purge": "guichet purge --dry-run (a week's worth)",
    "purge_real": "guichet purge (once, for real)",
    "citizen_export": "guichet citizen export",
    "citizen_message": "citizen message end to end (REST)",
}
INDEXED_OPERATIONS = ("queue_cm", "queue_head", "ticket_page", "search")  # no sequential scan of a big table
CITIZEN_MESSAGES = ("bonjour, la mairie est ouverte samedi ?",
                    "le lampadaire ne s'allume plus devant le 12 rue des Tilleuls")


# --- filling ---------------------------------------------------------------------------------------
@dataclass
class Filled:
    scale: float
    conversations: int = 0
    tickets: int = 0
    lines: int = 0
    status_changes: int = 0
    outbox: int = 0
    events: int = 0
    public_comments: int = 0
    seconds: float = 0.0


CITIZEN_TEXTS = ["bonjour, la mairie est ouverte samedi ?", "le lampadaire ne s'allume plus",
                 "il y a un nid de poule énorme rue Pasteur", "les poubelles n'ont pas été ramassées",
                 "je voudrais un acte de naissance", "comment inscrire mon fils à la cantine ?",
                 "des jeunes font du bruit tous les soirs au parc", "merci pour votre réponse",
                 "devant le 12 rue des Tilleuls", "c'est toujours d'actualité ?", "l'arbre penche dangereusement",
                 "quels sont les horaires de la piscine ?", "je veux parler à quelqu'un"]
BOT_TEXTS = ["La mairie est ouverte le samedi de 9 h à 12 h.", "Où exactement ? Indiquez la rue et le numéro.",
             "C'est noté : ticket transmis au service concerné, qui vous tiendra informé.",
             "Je transmets votre demande au community manager, qui vous répond dès que possible.",
             "Avec plaisir, bonne journée !", "Voici la page qui l'explique en détail."]
STAFF_TEXTS = ["Bonjour, une équipe passe cette semaine. — Victor, Voirie",
               "Merci pour votre signalement, c'est programmé. — Camille (CM)",
               "Bonjour, pouvez-vous préciser l'adresse ? — Camille (CM)"]
NAMES = ["Marie Dupont", "Jean Martin", "Sophie Bernard", "Karim Haddad", "Lucie Moreau", "Paul Lefebvre"]
# Of the tickets that are not hand-offs (hand-offs go to the CM queue).
SERVICE_WEIGHTS = {"voirie": 30, "proprete": 20, "espaces_verts": 10, "etat_civil": 10, "education": 8,
                   "tranquillite": 7, "urbanisme": 6, "social": 5, "sport_culture": 4}
HANDOFF_REASONS = ["human_request", "complaint", "insult", "misunderstood", "personal_data", "press", "legal",
                   "person_complaint", "distress_danger"]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _service_case(services: list[str], variable: str) -> str:
    """A CASE picking a service slug by the weights, from a random number in [0, 1)."""
    weights = {slug: SERVICE_WEIGHTS.get(slug, 3) for slug in services}
    total = sum(weights.values())
    parts, running = [], 0.0
    for slug, weight in weights.items():
        running += weight / total
        parts.append(f"WHEN {variable} < {running:.6f} THEN '{slug}'")
    return "CASE " + " ".join(parts) + f" ELSE '{services[0]}' END"


def fill_statements(scale: float, now: dt.datetime, services: list[str]) -> list[tuple[str, str]]:
    """(what, SQL) to run in order on PostgreSQL; ``now`` is naive UTC. Deterministic (setseed)."""
    factor = scale * SPAN_DAYS / 365
    conversations = max(1, round(PER_YEAR["conversations"] * factor))
    ticket_share = PER_YEAR["tickets"] / PER_YEAR["conversations"]
    mean_lines = PER_YEAR["lines"] / PER_YEAR["conversations"]  # 5: from 2 to 8 lines
    span = max(1, round(mean_lines - 2))
    now_sql = f"TIMESTAMP '{now:%Y-%m-%d %H:%M:%S}'"
    heads = {slug: f"resp_{slug}" for slug in services}
    assignee = "CASE t.queue " + " ".join(f"WHEN '{slug}' THEN '{user}'" for slug, user in heads.items()) + \
        f" ELSE '{CM_USER}' END"
    return [
        ("seed", "SELECT setseed(0.42)"),
        ("conversations", f"""
CREATE TEMP TABLE bench_conv AS
SELECT i,
       CASE WHEN r1 < 0.35 THEN 'telegram' WHEN r1 < 0.65 THEN 'webchat' WHEN r1 < 0.85 THEN 'messenger'
            WHEN r1 < 0.95 THEN 'instagram' ELSE 'facebook_comment' END AS channel,
       {now_sql} - make_interval(secs => r2 * {SPAN_DAYS} * 86400) AS started_at,
       2 + floor(r3 * {2 * span + 1})::int AS lines,
       r4 < {ticket_share:.6f} AS has_ticket,
       NULL::int AS ticket_id, NULL::timestamp AS first_response_at, ''::text AS conversation_id
FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4
      FROM generate_series(1, {conversations}) AS i) AS draws"""),
        ("conversation ids", """
UPDATE bench_conv SET conversation_id = CASE channel WHEN 'telegram' THEN 'tg-' || (700000000 + i)
    WHEN 'webchat' THEN 'web-' || md5(i::text) WHEN 'messenger' THEN 'fb-' || (26000000 + i)
    WHEN 'instagram' THEN 'ig-' || (17800000 + i) ELSE 'fbcomment-' || (9100000 + i) END"""),
        ("tickets", f"""
INSERT INTO ticket (kind, queue, status, urgent, handoff_reason, conversation_id, channel, citizen_name, location,
                    summary, source_message_id, created_at, updated_at, first_response_at, resolved_at, closed_at,
                    assigned_to, assigned_at, satisfaction_asked_at, satisfaction, satisfaction_at)
SELECT t.kind, t.queue, t.status, t.urgent, t.handoff_reason, t.conversation_id, t.channel, t.citizen_name,
       t.location, t.summary, t.conversation_id || '-m0', t.created_at,
       greatest(t.created_at, t.first_response_at, t.resolved_at, t.closed_at), t.first_response_at,
       t.resolved_at, t.closed_at, CASE WHEN t.first_response_at IS NOT NULL THEN {assignee} END,
       t.first_response_at, t.satisfaction_at, t.satisfaction, t.satisfaction_at
FROM (
  SELECT s.*,
         CASE WHEN s.status IN ('resolved', 'closed') AND s.r9 < 0.35
              THEN least({now_sql}, coalesce(s.resolved_at, s.closed_at) + interval '1 hour') END AS satisfaction_at,
         CASE WHEN s.status IN ('resolved', 'closed') AND s.r9 < 0.35
              THEN CASE WHEN s.r10 < 0.8 THEN 'yes' ELSE 'no' END END AS satisfaction
  FROM (
    SELECT q.*,
           CASE WHEN q.status <> 'new' THEN least({now_sql}, q.created_at + make_interval(secs => (0.2 + q.r5 * 40) * 3600)) END
             AS first_response_at,
           CASE WHEN q.status = 'resolved' OR (q.status = 'closed' AND q.kind <> 'handoff')
                THEN least({now_sql}, q.created_at + make_interval(secs => (41 + q.r6 * 160) * 3600)) END AS resolved_at,
           CASE WHEN q.status IN ('resolved', 'closed', 'duplicate')
                THEN least({now_sql}, q.created_at + make_interval(secs => (41 + q.r6 * 160 + q.r7 * 48) * 3600)) END
             AS closed_at
    FROM (
      SELECT k.*,
             CASE WHEN k.kind = 'handoff' OR k.r2 < 0.03 THEN 'cm' ELSE {_service_case(services, 'k.r3')} END AS queue,
             CASE WHEN (k.age_days < 14 AND k.r4 < 0.6) OR k.r4 < 0.015
                  THEN ({_array(['new', 'acknowledged', 'in_progress', 'scheduled'])})[1 + floor(k.r5 * 4)::int]
                  WHEN k.kind = 'handoff' THEN 'closed'
                  WHEN k.r5 < 0.55 THEN 'closed' WHEN k.r5 < 0.95 THEN 'resolved' ELSE 'duplicate' END AS status
      FROM (
        SELECT c.conversation_id, c.channel, c.started_at + interval '2 minutes' AS created_at,
               extract(epoch FROM {now_sql} - c.started_at) / 86400 AS age_days,
               CASE WHEN r1 < 0.12 THEN 'handoff' WHEN r1 < 0.57 THEN 'report' WHEN r1 < 0.87 THEN 'request'
                    ELSE 'complaint' END AS kind,
               random() < 0.02 AS urgent,
               CASE WHEN r1 < 0.12 THEN ({_array(HANDOFF_REASONS)})[1 + floor(r8 * {len(HANDOFF_REASONS)})::int] END
                 AS handoff_reason,
               CASE WHEN r8 < 0.5 THEN ({_array(NAMES)})[1 + floor(r9 * {len(NAMES)})::int] END AS citizen_name,
               CASE WHEN r1 >= 0.12 AND r1 < 0.57 THEN (1 + floor(r2 * 90))::int || ' rue des Tilleuls' END AS location,
               ({_array(CITIZEN_TEXTS[1:7])})[1 + floor(r3 * 6)::int] || ' (n° ' || c.i || ')' AS summary,
               r1, r2, r3, r4, r5, r6, r7, r8, r9, r10
        FROM (SELECT bc.*, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
                     random() AS r6, random() AS r7, random() AS r8, random() AS r9, random() AS r10
              FROM bench_conv bc WHERE bc.has_ticket) AS c
      ) AS k
    ) AS q
  ) AS s
) AS t
ORDER BY t.created_at"""),
        ("ticket references", """
UPDATE ticket SET reference = 'T-' || extract(year FROM created_at)::int || '-' || lpad(id::text, 6, '0')"""),
        ("ticket places", """
UPDATE ticket SET place_label = a.number || ' ' || a.street, place_kind = 'address', place_confidence = 0.95,
                  lat = a.lat, lon = a.lon
FROM (SELECT row_number() OVER (ORDER BY id) - 1 AS n, number, street, lat, lon FROM address) AS a
WHERE ticket.kind = 'report' AND ticket.id % 5 <> 0
  AND a.n = ticket.id % greatest(1, (SELECT count(*) FROM address))"""),
        ("conversations of tickets", """
UPDATE bench_conv c SET ticket_id = t.id, first_response_at = t.first_response_at
FROM ticket t WHERE t.conversation_id = c.conversation_id"""),
        ("transcript", f"""
INSERT INTO message (ticket_id, conversation_id, channel, author, author_name, text, external_id, private, created_at)
SELECT l.ticket_id, l.conversation_id, l.channel, l.author,
       CASE WHEN l.author = 'staff' THEN 'Victor' END,
       CASE l.author WHEN 'citizen' THEN ({_array(CITIZEN_TEXTS)})[1 + (l.i * 7 + l.k) % {len(CITIZEN_TEXTS)}]
                     WHEN 'bot' THEN ({_array(BOT_TEXTS)})[1 + (l.i + l.k) % {len(BOT_TEXTS)}]
                     ELSE ({_array(STAFF_TEXTS)})[1 + l.i % {len(STAFF_TEXTS)}] END,
       CASE WHEN l.author = 'citizen' THEN l.conversation_id || '-m' || l.k END, false, l.created_at
FROM (
  SELECT c.i, k, c.ticket_id, c.conversation_id, c.channel,
         CASE WHEN k = c.lines - 1 AND c.first_response_at IS NOT NULL THEN 'staff'
              WHEN k % 2 = 0 THEN 'citizen' ELSE 'bot' END AS author,
         CASE WHEN k = c.lines - 1 AND c.first_response_at IS NOT NULL THEN c.first_response_at
              ELSE c.started_at + make_interval(secs => k * 40) END AS created_at
  FROM bench_conv c CROSS JOIN LATERAL generate_series(0, c.lines - 1) AS k
) AS l
ORDER BY l.created_at"""),
        ("audit trail", f"""
INSERT INTO status_change (ticket_id, old_status, new_status, actor, note, created_at)
SELECT id, old_status, new_status, actor, note, created_at FROM (
  SELECT id, NULL AS old_status, 'new' AS new_status, 'bot' AS actor, NULL AS note, created_at FROM ticket
  UNION ALL
  SELECT id, 'new', 'acknowledged', coalesce(assigned_to, '{CM_USER}'), NULL, first_response_at
  FROM ticket WHERE first_response_at IS NOT NULL
  UNION ALL
  SELECT id, 'acknowledged', status, coalesce(assigned_to, '{CM_USER}'),
         CASE WHEN id % 5 = 0 THEN 'appel passé au demandeur, ' || coalesce(citizen_name, 'sans nom') END,
         coalesce(closed_at, resolved_at, first_response_at)
  FROM ticket WHERE status NOT IN ('new', 'acknowledged') AND first_response_at IS NOT NULL
) AS changes ORDER BY created_at"""),
        ("outbox", """
INSERT INTO outbox (ticket_id, conversation_id, channel, text, created_at, delivered_at, attempts)
SELECT ticket_id, conversation_id, channel, text, created_at, created_at + interval '2 seconds', 1
FROM message WHERE author = 'staff' ORDER BY id"""),
        ("public comments", f"""
INSERT INTO public_comment (platform, comment_id, post_id, thread_id, author_id, author_name, text, conversation_id,
                            ticket_id, outcome, treatment, created_at, handled_at)
SELECT 'facebook', (9100000 + i)::text, 'post-' || (i % 400), (9100000 + i)::text, 'u' || i,
       ({_array(NAMES)})[1 + i % {len(NAMES)}], ({_array(CITIZEN_TEXTS)})[1 + i % {len(CITIZEN_TEXTS)}],
       conversation_id, ticket_id, CASE WHEN ticket_id IS NULL THEN 'faq:horaires' ELSE 'ticket' END,
       ({_array(['answered', 'thanked', 'acknowledged', 'to_cm', 'not_answered', 'answered', 'thanked'])})[1 + i % 7],
       started_at, started_at + interval '5 seconds'
FROM bench_conv WHERE channel = 'facebook_comment' ORDER BY started_at"""),
        ("followers", """
INSERT INTO ticket_follower (ticket_id, conversation_id, channel, citizen_name, added_at)
SELECT id, 'tg-follower-' || id, 'telegram', NULL, created_at + interval '1 day'
FROM ticket WHERE kind = 'report' AND id % 40 = 0"""),
        ("tracker events", f"""
INSERT INTO events (sender_id, type_name, timestamp, intent_name, action_name, data)
SELECT e.sender_id, e.type_name, e.ts,
       CASE WHEN e.type_name = 'user' THEN 'faq' END,
       CASE WHEN e.type_name = 'action' THEN e.action END,
       CASE e.type_name
         WHEN 'user' THEN json_build_object('event', 'user', 'timestamp', e.ts, 'text', e.text,
                            'parse_data', json_build_object('intent', json_build_object('name', 'faq', 'confidence', 0.97),
                                                            'entities', json_build_array(), 'text', e.text),
                            'input_channel', e.channel, 'message_id', e.sender_id || '-m' || e.k)::text
         WHEN 'bot' THEN json_build_object('event', 'bot', 'timestamp', e.ts, 'text', e.text,
                                           'data', json_build_object())::text
         WHEN 'action' THEN json_build_object('event', 'action', 'timestamp', e.ts, 'name', e.action,
                                              'policy', 'RulePolicy', 'confidence', 1.0)::text
         ELSE json_build_object('event', e.type_name, 'timestamp', e.ts)::text END
FROM (
  SELECT c.conversation_id AS sender_id, c.channel, s.k, s.type_name, s.action,
         extract(epoch FROM c.started_at)::float8 + greatest(s.k, 0) * 40 + s.step AS ts,
         CASE WHEN s.type_name = 'user' THEN ({_array(CITIZEN_TEXTS)})[1 + (c.i * 7 + s.k) % {len(CITIZEN_TEXTS)}]
              ELSE ({_array(BOT_TEXTS)})[1 + (c.i + s.k) % {len(BOT_TEXTS)}] END AS text
  FROM bench_conv c
  CROSS JOIN LATERAL (
    SELECT -1 AS k, 'action' AS type_name, 'action_session_start' AS action, 0.0 AS step
    UNION ALL SELECT -1, 'session_started', NULL, 0.001
    UNION ALL SELECT -1, 'action', 'action_listen', 0.002
    UNION ALL SELECT k, CASE WHEN k % 2 = 0 THEN 'user' ELSE 'action' END,
                     CASE WHEN k % 2 = 0 THEN NULL ELSE 'action_answer' END, 0.0
    FROM generate_series(0, c.lines - 1) AS k
    UNION ALL SELECT k, CASE WHEN k % 2 = 0 THEN 'action' ELSE 'bot' END,
                     CASE WHEN k % 2 = 0 THEN 'action_listen' END, 0.5
    FROM generate_series(0, c.lines - 1) AS k
  ) AS s
) AS e
ORDER BY e.ts"""),
        ("drop the draft", "DROP TABLE bench_conv"),
    ]


def ensure_events_table(url: str) -> None:
    """Rasa's tracker table, created as Rasa's SQLTrackerStore creates it (its own model)."""
    from rasa.core.tracker_store import SQLTrackerStore

    from bot import db

    SQLTrackerStore.SQLEvent.__table__.create(db.get_engine(url), checkfirst=True)


def fill(url: str, scale: float, now: dt.datetime | None = None, progress: Callable[[str], None] | None = None) -> Filled:
    """Fill the (freshly migrated, empty) database at ``url``; returns the row counts."""
    from sqlalchemy import text

    from bot import db, places
    from bot.accounts import Accounts
    from bot.profile import load_profile
    from bot.tickets import TicketStore

    started = time.monotonic()
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    store = TicketStore(url)
    profile = load_profile()
    ensure_events_table(url)
    addresses = REFERENCE_DIR / "valbourg-adresses.csv"
    if addresses.exists():
        places.load(store, addresses, REFERENCE_DIR / "valbourg-lieux.csv")
    accounts = Accounts(store, profile)
    accounts.create(CM_USER, PASSWORD, "cm", display_name="Camille Martin")
    for slug in profile.services:
        accounts.create(f"resp_{slug}", PASSWORD, "head", slug, display_name=f"Responsable {slug}")
    filled = Filled(scale=scale)
    if scale > 0:
        engine = db.get_engine(url)
        raw = engine.raw_connection()  # the driver's cursor: no parameters, so "%" is SQL's modulo
        try:
            cursor = raw.cursor()
            for what, statement in fill_statements(scale, now, list(profile.services)):
                step = time.monotonic()
                cursor.execute(statement)
                if progress:
                    progress(f"  {what}: {time.monotonic() - step:.1f} s")
            raw.commit()
        finally:
            raw.close()
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("VACUUM ANALYZE")
            counts = {name: connection.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()
                      for name in ("ticket", "message", "status_change", "outbox", "events", "public_comment")}
            filled.conversations = connection.execute(text(
                "SELECT count(DISTINCT sender_id) FROM events")).scalar_one()
        filled.tickets, filled.lines = counts["ticket"], counts["message"]
        filled.status_changes, filled.outbox = counts["status_change"], counts["outbox"]
        filled.events, filled.public_comments = counts["events"], counts["public_comment"]
    filled.seconds = round(time.monotonic() - started, 1)
    return filled


def reset_schema(url: str) -> None:
    """Drop everything in the schema ``public`` and forget that bot.db migrated this URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from bot import db

    db.get_engine(url).dispose()
    engine = create_engine(url, future=True, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '20s'")
            connection.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()
    db._upgraded.discard(url)
    db.upgrade(url)


# --- statements and their plans --------------------------------------------------------------------
@contextmanager
def captured_statements(url: str) -> Iterator[list[tuple[str, object]]]:
    """Every statement run on the engine of ``url`` meanwhile: [(SQL, parameters)]."""
    from sqlalchemy import event

    from bot import db

    engine = db.get_engine(url)
    statements: list[tuple[str, object]] = []

    def remember(_conn, _cursor, statement, parameters, _context, _executemany):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", remember)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", remember)


_SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")


def seq_scans(url: str, statements: list[tuple[str, object]], force_index: bool = False) -> list[dict]:
    """The big tables (``BIG_ROWS`` rows or more) read by a sequential scan in the plans of these
    SELECTs (each distinct one explained once). ``force_index``: every table of ``BIG_TABLES``,
    planned with ``enable_seqscan = off``, so a scan that is left means that no index can serve the
    query (what counts on a small database)."""
    from bot import db

    found, seen = [], set()
    connection = db.get_engine(url).raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND reltuples >= %s", (BIG_ROWS,))
        big = set(BIG_TABLES) if force_index else {row[0] for row in cursor.fetchall()} & set(BIG_TABLES)
        if force_index:
            cursor.execute("SET enable_seqscan = off")
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT") or statement in seen:
                continue
            seen.add(statement)
            sql = cursor.mogrify(statement, parameters or None).decode()
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            tables = sorted({t for t in _SEQ_SCAN.findall(plan) if t in big})
            if tables:
                found.append({"tables": tables, "sql": " ".join(statement.split())[:300], "plan": plan})
        connection.rollback()
    finally:
        connection.close()
    return found


def explain(url: str, sql: str, analyze: bool = False, force_index: bool = False) -> str:
    """The plan of one SQL statement (text), for the README and the report."""
    from bot import db

    connection = db.get_engine(url).raw_connection()
    try:
        cursor = connection.cursor()
        if force_index:
            cursor.execute("SET enable_seqscan = off")
        cursor.execute(("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " if analyze else "EXPLAIN (COSTS OFF) ") + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        connection.rollback()
        return plan
    finally:
        connection.close()


# --- timing ----------------------------------------------------------------------------------------
@dataclass
class Timing:
    name: str
    samples_ms: list[float] = field(default_factory=list)
    checked: bool = False  # the content was right (the page shows the ticket, the export its lines...)
    detail: str = ""
    seq_scans: list[dict] = field(default_factory=list)

    @property
    def median_ms(self) -> float | None:
        return round(statistics.median(self.samples_ms), 1) if self.samples_ms else None

    @property
    def p95_ms(self) -> float | None:
        if not self.samples_ms:
            return None
        ordered = sorted(self.samples_ms)
        return round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1)

    def as_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p95_ms": self.p95_ms, "samples": len(self.samples_ms),
                "checked": self.checked, "detail": self.detail,
                "seq_scans": [{"tables": s["tables"], "sql": s["sql"]} for s in self.seq_scans]}


def _timed(name: str, url: str, repeat: int, run: Callable[[int], tuple[bool, str]], force_index: bool) -> Timing:
    """``run(i)`` once untimed (warm-up, statements captured and explained), then ``repeat`` times."""
    timing = Timing(name)
    with captured_statements(url) as statements:
        timing.checked, timing.detail = run(0)
    timing.seq_scans = seq_scans(url, statements, force_index)
    for i in range(1, repeat + 1):
        started = time.perf_counter()
        ok, detail = run(i)
        timing.samples_ms.append((time.perf_counter() - started) * 1000)
        timing.checked = timing.checked and ok
        if not ok:
            timing.detail = detail
    return timing


def _staff_client(desk, username: str):
    """The staff web (Flask test client) logged in as ``username`` (as tests.conftest.staff_web_client)."""
    from bot.accounts import Accounts
    from bot.web import create_app

    app = create_app(desk_factory=lambda: desk, accounts=Accounts(desk.store, desk.profile),
                     secret_key="clé du banc d'essai", session_minutes=600)
    app.config["TESTING"] = True
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        token = session["csrf_token"]
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    if response.status_code != 302:
        raise RuntimeError(f"could not log in as {username}: HTTP {response.status_code}")
    return client


FILLED = "t.conversation_id NOT LIKE 'bench-%'"  # a ticket of the fill, not one a timed citizen message made


def _samples(url: str) -> dict:
    """What the operations ask for: open tickets of each queue, tickets with a transcript..."""
    from sqlalchemy import text

    from bot import db

    with db.get_engine(url).connect() as connection:
        def column(sql: str) -> list:
            return [row[0] for row in connection.execute(text(sql))]

        open_sql = "SELECT reference FROM ticket WHERE status NOT IN ('resolved', 'duplicate', 'closed') AND queue = '{}' " \
                   "ORDER BY urgent DESC, created_at, id LIMIT 5"
        return {
            "cm_open": column(open_sql.format("cm")),
            "head_open": column(open_sql.format(HEAD_SERVICE)),
            "head_tickets": column(f"SELECT t.reference FROM ticket t WHERE t.queue = '{HEAD_SERVICE}' AND EXISTS "
                                   "(SELECT 1 FROM message m WHERE m.ticket_id = t.id AND m.author = 'citizen') "
                                   f"AND {FILLED} ORDER BY t.id DESC LIMIT 20"),
            "any_tickets": column(f"SELECT reference FROM ticket t WHERE anonymised_at IS NULL AND {FILLED} "
                                  "ORDER BY id DESC LIMIT 20"),
        }


def time_staff_web(url: str, repeat: int = 7, force_index: bool = False) -> dict[str, Timing]:
    """The staff pages: queues, a ticket page, the search, the statistics and their CSV."""
    from markupsafe import escape
    from sqlalchemy import text

    from bot import db
    from bot.hours import StaffHours
    from bot.profile import load_profile
    from bot.replies import Replies
    from bot.staff import StaffDesk
    from bot.tickets import TicketStore

    store = TicketStore(url)
    profile = load_profile()
    replies = Replies.load(PROJECT_ROOT / "bot" / "replies.fr.yml", profile)
    hours = StaffHours.from_town(profile.town)
    desk = StaffDesk(store, profile, hours, replies, resume_conversation=lambda _conversation: None)
    cm, head = _staff_client(desk, CM_USER), _staff_client(desk, f"resp_{HEAD_SERVICE}")
    samples = _samples(url)
    results: dict[str, Timing] = {}

    def page(client, path: str, expect: list[str], status: int = 200) -> tuple[bool, str]:
        response = client.get(path)
        body = response.get_data(as_text=True)
        missing = [e for e in expect if e not in body]
        ok = response.status_code == status and not missing
        return ok, "" if ok else f"{path}: HTTP {response.status_code}, missing {missing[:2]}"

    results["queue_cm"] = _timed("queue_cm", url, repeat, lambda i: page(cm, "/queue", samples["cm_open"][:1]),
                                 force_index)
    results["queue_head"] = _timed("queue_head", url, repeat,
                                   lambda i: page(head, "/queue", samples["head_open"][:1]), force_index)
    with db.get_engine(url).connect() as connection:
        first_lines = {ref: connection.execute(text(
            "SELECT m.text FROM message m JOIN ticket t ON t.id = m.ticket_id WHERE t.reference = :ref "
            "AND m.author = 'citizen' ORDER BY m.id LIMIT 1"), {"ref": ref}).scalar_one()
            for ref in samples["head_tickets"]}

    def ticket_page(i: int) -> tuple[bool, str]:
        reference = samples["head_tickets"][i % len(samples["head_tickets"])]
        return page(head, f"/tickets/{reference}", [reference, str(escape(first_lines[reference]))])

    results["ticket_page"] = _timed("ticket_page", url, repeat, ticket_page, force_index)

    def search(i: int) -> tuple[bool, str]:
        reference = samples["any_tickets"][i % len(samples["any_tickets"])]
        response = cm.get(f"/recherche?reference={reference}")
        ok = response.status_code == 302 and response.headers.get("Location", "").endswith(f"/tickets/{reference}")
        return ok, "" if ok else f"search {reference}: HTTP {response.status_code} {response.headers.get('Location')}"

    results["search"] = _timed("search", url, repeat, search, force_index)
    for days in (30, 365):
        results[f"stats_{days}"] = _timed(f"stats_{days}", url, repeat,
                                          lambda i, d=days: page(cm, f"/stats?jours={d}", ["Tickets"]), force_index)
    expected_conversations = _conversations_in_period(url, profile, 365)

    def csv_export(i: int) -> tuple[bool, str]:
        response = cm.get("/stats.csv?jours=365")
        body = response.get_data(as_text=True)
        row = f"conversations,total,,{expected_conversations}\n"
        ok = response.status_code == 200 and row in body
        return ok, "" if ok else f"stats.csv: HTTP {response.status_code}, no row {row.strip()!r}"

    results["csv_export"] = _timed("csv_export", url, repeat, csv_export, force_index)
    return results


def _conversations_in_period(url: str, profile, days: int) -> int:
    """Conversations with a citizen message in the last ``days`` local days (what bot.stats counts)."""
    import pytz
    from sqlalchemy import text

    from bot import db

    tz = pytz.timezone(profile.town.timezone)
    now = dt.datetime.now(dt.timezone.utc)
    since = now.astimezone(tz).date() - dt.timedelta(days=days - 1)
    start = tz.localize(dt.datetime.combine(since, dt.time())).astimezone(dt.timezone.utc).replace(tzinfo=None)
    with db.get_engine(url).connect() as connection:
        return connection.execute(text("SELECT count(DISTINCT conversation_id) FROM message WHERE author = 'citizen' "
                                       "AND created_at >= :start"), {"start": start}).scalar_one()


def time_commands(url: str, repeat: int = 5, force_index: bool = False, work_dir: Path | None = None) -> dict[str, Timing]:
    """``guichet citizen export`` and ``guichet purge`` (dry runs, then one real run), in-process."""
    from sqlalchemy import text
    from typer.testing import CliRunner

    from bot import db
    from bot.cli import app as cli_app
    from bot.profile import load_profile

    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="guichet-data-bench-"))
    runner = CliRunner()
    env = {"GUICHET_DATABASE_URL": url, "GUICHET_VAR_DIR": str(work_dir)}
    samples = _samples(url)
    results: dict[str, Timing] = {}
    engine = db.get_engine(url)

    def guichet(*args: str) -> tuple[int, str]:
        result = runner.invoke(cli_app, list(args), env=env)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.output

    def export(i: int) -> tuple[bool, str]:
        reference = samples["head_tickets"][i % len(samples["head_tickets"])]
        out = work_dir / f"export-{i}.json"
        code, output = guichet("citizen", "export", "--reference", reference, "--out", str(out))
        if code != 0:
            return False, f"citizen export {reference}: exit {code}: {output[-300:]}"
        data = json.loads(out.read_text(encoding="utf-8"))
        with engine.connect() as connection:
            lines = connection.execute(text(
                "SELECT count(*) FROM (SELECT id FROM message WHERE conversation_id = :c UNION SELECT id FROM message "
                "WHERE ticket_id IN (SELECT id FROM ticket WHERE conversation_id = :c)) AS lines"),
                {"c": data["conversation_id"]}).scalar_one()
        ok = (len(data["transcript"]) == lines > 0 and any(t["reference"] == reference for t in data["tickets"])
              and len(data["tracker_events"]) > 0)
        return ok, "" if ok else f"export of {reference}: {len(data['transcript'])} lines for {lines}"

    results["citizen_export"] = _timed("citizen_export", url, repeat, export, force_index)

    retention = load_profile().town.retention_days
    cutoff = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=retention)

    def due_at(moment: dt.datetime) -> int:
        """Tickets past the retention period at ``moment`` (the purge's own clock runs meanwhile)."""
        with engine.connect() as connection:
            return connection.execute(text(
                "SELECT count(*) FROM ticket WHERE anonymised_at IS NULL AND status IN ('resolved', 'duplicate', "
                "'closed') AND closed_at < :cutoff"), {"cutoff": moment}).scalar_one()

    due, later = due_at(cutoff), due_at(cutoff + dt.timedelta(minutes=10))

    def dry_purge(i: int) -> tuple[bool, str]:
        code, output = guichet("purge", "--dry-run")
        found = re.search(r"Tickets anonymisés : (\d+) ", output)
        ok = code == 0 and found is not None and due <= int(found.group(1)) <= later
        return ok, "" if ok else f"purge --dry-run: exit {code}, expected {due} tickets: {output[-400:]}"

    results["purge"] = _timed("purge", url, repeat, dry_purge, force_index)
    results["purge"].detail = results["purge"].detail or f"{due} tickets past the retention period"

    real = Timing("purge_real")
    started = time.perf_counter()
    code, output = guichet("purge")
    real.samples_ms.append((time.perf_counter() - started) * 1000)
    with engine.connect() as connection:
        left = connection.execute(text(
            "SELECT count(*) FROM message m JOIN ticket t ON t.id = m.ticket_id WHERE t.anonymised_at IS NOT NULL "
            "AND m.text <> '[effacé]'")).scalar_one()
        anonymised = connection.execute(text("SELECT count(*) FROM ticket WHERE anonymised_at IS NOT NULL")).scalar_one()
        old_events = connection.execute(text(
            "SELECT count(*) FROM events e WHERE e.timestamp < :limit AND e.sender_id NOT IN "
            "(SELECT conversation_id FROM ticket WHERE status NOT IN ('resolved', 'duplicate', 'closed')) "
            "AND NOT EXISTS (SELECT 1 FROM events f WHERE f.sender_id = e.sender_id AND f.timestamp >= :limit)"),
            {"limit": cutoff.replace(tzinfo=dt.timezone.utc).timestamp()}).scalar_one()
    real.checked = code == 0 and due <= anonymised <= later and left == 0 and old_events == 0
    real.detail = (f"{anonymised} tickets anonymised (expected {due}), {left} lines left unredacted, "
                   f"{old_events} stale events left")
    results["purge_real"] = real
    return results


def time_citizen_messages(url: str, messages: int = 12, work_dir: Path | None = None,
                          model: Path | None = None) -> Timing:
    """Citizen messages end to end: REST channel -> Rasa -> action server -> database -> answer.
    Each in a new conversation (the tracker store still looks it up in the big events table)."""
    import requests

    from bot.stack import latest_model, running_stack

    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="guichet-data-bench-stack-"))
    model = model or latest_model(PROJECT_ROOT / "models")
    timing = Timing("citizen_message", checked=True)
    with running_stack(model, url, work_dir, GUICHET_FLOOD_PER_MINUTE="600", GUICHET_FLOOD_BURST="100") as stack:
        def send(i: int) -> tuple[bool, str]:
            text = CITIZEN_MESSAGES[i % len(CITIZEN_MESSAGES)]
            response = requests.post(stack.rest_url, json={"sender": f"bench-{uuid.uuid4().hex[:12]}", "message": text},
                                     timeout=60)
            answers = response.json() if response.status_code == 200 else []
            ok = bool(answers) and all(a.get("text") for a in answers if "image" not in a)
            return ok, "" if ok else f"{text!r}: HTTP {response.status_code} {str(answers)[:200]}"

        for i in range(min(4, messages)):  # warm-up: the first messages load the pipeline's lazy parts
            send(i)
        for i in range(messages):
            started = time.perf_counter()
            ok, detail = send(i)
            timing.samples_ms.append((time.perf_counter() - started) * 1000)
            if not ok:
                timing.checked, timing.detail = False, detail
    return timing


# --- one size, the whole run -----------------------------------------------------------------------
@dataclass
class SizeResult:
    scale: float
    filled: Filled
    timings: dict[str, Timing]

    def as_dict(self) -> dict:
        return {"scale": self.scale, "filled": asdict(self.filled),
                "operations": {name: t.as_dict() for name, t in self.timings.items()}}


def run_size(url: str, scale: float, repeat: int = 7, citizen_messages: int = 12, force_index: bool = False,
             progress: Callable[[str], None] = print, model: Path | None = None) -> SizeResult:
    """Fresh schema, fill at ``scale`` (0: empty), time every operation (only the citizen message
    on an empty database)."""
    reset_schema(url)
    progress(f"filling at scale {scale:g}...")
    filled = fill(url, scale, progress=progress)
    progress(f"  {filled.tickets} tickets, {filled.lines} lines, {filled.conversations} conversations, "
             f"{filled.events} tracker events in {filled.seconds:.0f} s")
    timings: dict[str, Timing] = {}
    if scale > 0:
        progress("timing the staff web...")
        timings.update(time_staff_web(url, repeat, force_index))
    if citizen_messages:
        progress("timing citizen messages through Rasa...")
        timings["citizen_message"] = time_citizen_messages(url, citizen_messages, model=model)
    if scale > 0:
        progress("timing the commands...")
        timings.update(time_commands(url, max(3, repeat // 2), force_index))
    return SizeResult(scale, filled, timings)


def verdicts(results: list[SizeResult]) -> dict[str, dict]:
    """Per operation: target (text) and ok (None without a target) on the largest size."""
    largest = max((r for r in results if r.scale > 0), key=lambda r: r.scale, default=None)
    empty = next((r for r in results if r.scale == 0), None)
    out: dict[str, dict] = {}
    if largest is None:
        return out
    for name, timing in largest.timings.items():
        target, ok = "", None
        if name in TARGETS_MS:
            target = f"< {TARGETS_MS[name]} ms"
            ok = timing.median_ms is not None and timing.p95_ms < TARGETS_MS[name]
        elif name == "citizen_message" and empty is not None and "citizen_message" in empty.timings:
            baseline = empty.timings["citizen_message"].median_ms
            target = f"<= empty ({baseline:.0f} ms) x{CITIZEN_SLACK}"
            ok = timing.median_ms <= baseline * CITIZEN_SLACK
        if not timing.checked:
            ok = False
        if name in INDEXED_OPERATIONS and timing.seq_scans:
            ok = False
        out[name] = {"target": target, "ok": ok}
    return out


def table(results: list[SizeResult]) -> list[str]:
    sized = sorted((r for r in results if r.scale > 0), key=lambda r: -r.scale)
    empty = next((r for r in results if r.scale == 0), None)
    columns = [f"{r.scale * 100:g} %" for r in sized] + (["empty"] if empty else [])
    judged = verdicts(results)
    lines = ["| operation | " + " | ".join(columns) + " | target | ok? |",
             "| --- | " + " | ".join("---:" for _ in columns) + " | --- | --- |"]
    for name, label in OPERATIONS.items():
        cells = []
        for result in sized + ([empty] if empty else []):
            timing = result.timings.get(name)
            cells.append(_cell(timing))
        if all(c == "—" for c in cells):
            continue
        verdict = judged.get(name, {})
        ok = {True: "yes", False: "NO", None: ""}[verdict.get("ok")]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {verdict.get('target', '')} | {ok} |")
    lines.append("")
    lines.append("Cells: median / p95 in ms. Sizes:")
    for result in sized:
        f = result.filled
        lines.append(f"- {result.scale * 100:g} %: {f.tickets:,} tickets, {f.lines:,} transcript lines, "
                     f"{f.conversations:,} conversations, {f.events:,} tracker events (filled in {f.seconds:.0f} s)")
    for result in sized:
        for name, timing in result.timings.items():
            if not timing.checked:
                lines.append(f"! {result.scale * 100:g} % {name}: wrong content: {timing.detail}")
            if timing.seq_scans:
                tables = sorted({t for s in timing.seq_scans for t in s["tables"]})
                lines.append(f"- {result.scale * 100:g} % {name}: sequential scan of {', '.join(tables)}")
    return lines


def _cell(timing: Timing | None) -> str:
    if timing is None or timing.median_ms is None:
        return "—"
    if len(timing.samples_ms) == 1:
        return f"{_ms(timing.median_ms)}"
    return f"{_ms(timing.median_ms)} / {_ms(timing.p95_ms)}"


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def run(scales: list[float], url: str | None = None, repeat: int = 7, citizen_messages: int = 12,
        force_index: bool = False, empty: bool = True, progress: Callable[[str], None] = print) -> list[SizeResult]:
    """Every size on one database (``url``, or a throw-away cluster started here)."""
    from bot import db

    cluster = None
    if url is None:
        from bot.pg_cluster import Cluster

        cluster = Cluster(options=PG_OPTIONS)
        url = cluster.start()
        progress(f"PostgreSQL cluster on {url}")
    try:
        results = [run_size(url, scale, repeat, citizen_messages, force_index, progress) for scale in scales]
        if empty and citizen_messages:
            results.append(run_size(url, 0.0, repeat, citizen_messages, force_index, progress))
        return results
    finally:
        db.get_engine(url).dispose()
        if cluster is not None:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.data_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size of the filled year (1.0: 60,000 tickets)")
    parser.add_argument("--also", type=float, action="append", default=None,
                        help="another size to run after it (default 0.1; repeatable)")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "var" / "data-bench.json")
    parser.add_argument("--database-url", default=None,
                        help="an existing PostgreSQL database of its own (its schema public is dropped)")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each page")
    parser.add_argument("--messages", type=int, default=12, help="timed citizen messages per size (0: none)")
    parser.add_argument("--force-index", action="store_true", help="EXPLAIN with enable_seqscan=off")
    args = parser.parse_args(argv)
    scales = [args.scale] + (args.also if args.also is not None else [0.1])
    started = time.monotonic()
    results = run(scales, args.database_url, args.repeat, args.messages, args.force_index)
    lines = table(results)
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started), "targets_ms": TARGETS_MS,
        "verdicts": verdicts(results), "sizes": [r.as_dict() for r in results], "table": lines,
    }, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"JSON: {args.json}")
    judged = verdicts(results)
    return 0 if all(v["ok"] is not False for v in judged.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
