"""Privacy (RGPD): retention purge, a citizen's data export and erasure.

What identifies a citizen, and what we do with it once the retention period is over (or at once
when the citizen asks for erasure):

- ``ticket``: ``conversation_id`` becomes a random pseudonym ("anonyme-<hex>", the same for every
  row of one conversation within one run, so per-conversation counts still hold), ``citizen_name``,
  ``location`` and ``source_message_id`` are emptied, ``summary`` becomes ``MARKER``. The location is
  removed too: it is usually a pothole's address, but citizens write "devant chez moi, 12 rue..."
  and we cannot tell the two apart, so we keep it conservative. What the figures need stays: kind,
  queue, status, urgency, hand-off reason, channel, every timestamp, the reference, the assignee.
- ``message`` (the transcript, every author: citizen, bot, staff, system): text becomes ``MARKER``,
  ``author_name`` and ``external_id`` are emptied, ``conversation_id`` gets the pseudonym. The rows
  stay, with their author and time: ``bot.stats`` counts them.
- ``outbox``: text becomes ``MARKER``, ``last_error`` emptied, pseudonymous conversation id.
- ``public_comment`` (comments under the town's posts): text becomes ``MARKER``, the author's id,
  name and the link emptied, pseudonymous conversation id; what the bot did (treatment, outcome,
  its public reply, which carries no personal data) stays. ``meta_contact`` (a Messenger or
  Instagram person's id and last message time) is deleted.
- ``status_change``: free-text notes become ``MARKER`` (staff sometimes write a name there); the
  actor (a staff username), the statuses and the times stay: the audit trail keeps its shape.
- Rasa's SQL tracker store (table ``events`` in the same database, when present): the events are
  deleted (they hold every text and slot).

``purge`` applies this to tickets closed for longer than the retention period, to transcript lines
not linked to any ticket (FAQ conversations...) older than the period, and to tracker events older
than the period (except, for a conversation still active, its current Rasa session, and never for a
conversation with an open ticket). ``erase`` applies it to one conversation whatever the age.
``export`` gathers everything held about one conversation.

Pure domain code: SQLAlchemy only, no Rasa or Telegram import.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, field

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, delete, func, inspect, or_, select

from bot.models import (CLOSED_STATUSES, REDACTED, Message, MetaContact, Outbox, PublicComment, StatusChange, Ticket,
                        to_naive_utc, utcnow)
from bot.tickets import TicketStore

MARKER = REDACTED  # "[effacé]" (bot.models: the purge index is written with it)
PSEUDONYM_PREFIX = "anonyme-"

# Rasa's SQL tracker store table (rasa.core.tracker_store.SQLTrackerStore.SQLEvent), declared here
# rather than imported so this module never imports Rasa. Only the columns we read.
_tracker_metadata = MetaData()
EVENTS = Table(
    "events", _tracker_metadata,
    Column("id", Integer, primary_key=True),
    Column("sender_id", String(255)),
    Column("type_name", String(255)),
    Column("timestamp", Float),
    Column("data", Text),
)


EVENTS_TIME_INDEX = "ix_events_timestamp"


def _index_events_by_time(store: TicketStore) -> None:
    """The purge reads the tracker events by age: index ``events.timestamp`` once (Rasa creates its
    table after our migrations on a new install, so migration 0011 cannot always do it). In a
    transaction of its own: a dry run's rollback must not take it away."""
    with store.session().get_bind().connect() as connection:
        inspector = inspect(connection)
        if inspector.has_table("events") and EVENTS_TIME_INDEX not in {
                index["name"] for index in inspector.get_indexes("events")}:
            connection.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {EVENTS_TIME_INDEX} ON events (timestamp)")
            connection.commit()


def log_ref(conversation_id: str | None) -> str:
    """What logs show of a conversation: a short hash, enough to follow one conversation
    across log lines, not the id itself (a Telegram chat id is the person's account id)."""
    if not conversation_id:
        return "conv-?"
    return "conv-" + hashlib.sha256(conversation_id.encode("utf-8", "replace")).hexdigest()[:10]


class PrivacyError(ValueError):
    """A clear French explanation (unknown conversation, ticket already anonymised...)."""


@dataclass
class PrivacyReport:
    """What a purge or an erasure did (or would do, with ``dry_run``)."""

    tickets: int = 0
    messages: int = 0  # transcript lines of those tickets
    orphan_messages: int = 0  # lines linked to no ticket
    outbox: int = 0
    notes: int = 0  # audit-trail notes
    events: int = 0  # Rasa tracker events deleted
    comments: int = 0  # public comments anonymised, Messenger/Instagram contacts deleted
    conversations: int = 0
    dry_run: bool = False
    cutoff: dt.datetime | None = None

    def lines(self) -> list[str]:
        verb = "seraient" if self.dry_run else "ont été"
        head = "Simulation (rien n'est modifié) : " if self.dry_run else ""
        lines = []
        if self.cutoff is not None:
            lines.append(f"{head}données antérieures au {self.cutoff:%d/%m/%Y %H:%M} (UTC).")
        elif head:
            lines.append(head.rstrip(" :") + ".")
        lines += [
            f"Tickets anonymisés : {self.tickets} (conversations concernées : {self.conversations})",
            f"Lignes de conversation effacées (tickets) : {self.messages}",
            f"Lignes de conversation sans ticket effacées : {self.orphan_messages}",
            f"Messages sortants (outbox) effacés : {self.outbox}",
            f"Notes d'historique effacées : {self.notes}",
            f"Événements Rasa supprimés : {self.events}",
            f"Commentaires publics et contacts Messenger/Instagram effacés : {self.comments}",
        ]
        total = (self.tickets + self.messages + self.orphan_messages + self.outbox + self.notes + self.events
                 + self.comments)
        lines.append(f"Rien à faire : aucune donnée concernée." if total == 0 else
                     f"Les chiffres de `guichet stats` {verb} conservés.")
        return lines


def retention_cutoff(retention_days: int, now: dt.datetime | None = None) -> dt.datetime:
    if retention_days < 1:
        raise PrivacyError("La durée de conservation doit être d'au moins un jour.")
    return (to_naive_utc(now) or utcnow()) - dt.timedelta(days=retention_days)


def _epoch(moment: dt.datetime) -> float:
    return moment.replace(tzinfo=dt.timezone.utc).timestamp()


def _iso(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def _row(obj, columns) -> dict:
    return {name: _iso(getattr(obj, name)) for name in columns}


_TICKET_FIELDS = ("id", "reference", "kind", "queue", "status", "urgent", "handoff_reason", "conversation_id",
                  "channel", "citizen_name", "location", "summary", "created_at", "updated_at",
                  "first_response_at", "resolved_at", "closed_at", "assigned_to", "scheduled_for", "anonymised_at",
                  "satisfaction", "satisfaction_comment", "satisfaction_at")
_MESSAGE_FIELDS = ("id", "ticket_id", "conversation_id", "channel", "author", "author_name", "text", "private",
                   "created_at")
_CHANGE_FIELDS = ("id", "ticket_id", "old_status", "new_status", "actor", "note", "created_at")
_COMMENT_FIELDS = ("platform", "comment_id", "post_id", "author_id", "author_name", "text", "permalink",
                   "created_at", "treatment", "public_reply")
_CONTACT_FIELDS = ("platform", "user_id", "comment_id", "last_inbound_at", "private_reply_at")
_OUTBOX_FIELDS = ("id", "ticket_id", "conversation_id", "channel", "text", "created_at", "delivered_at")


class Privacy:
    """Retention purge, export and erasure on one ticket database."""

    def __init__(self, store: TicketStore):
        self.store = store

    # --- finding a citizen ---------------------------------------------------------------------
    def conversation_for_reference(self, reference: str) -> str:
        """The conversation a ticket reference belongs to (what a citizen quotes)."""
        ticket = self.store.by_reference(reference or "", strict=True)
        if ticket is None:
            raise PrivacyError(f"Aucun ticket ne porte la référence « {_shorten(reference)} ».")
        if ticket.anonymised_at is not None:
            raise PrivacyError(f"Le ticket {ticket.reference} est déjà anonymisé : plus rien ne le relie "
                               "à une conversation.")
        return ticket.conversation_id

    def _has_events_table(self, session) -> bool:
        return inspect(session.connection()).has_table("events")

    def known(self, conversation_id: str) -> bool:
        with self.store.session() as session:
            for model in (Ticket, Message, Outbox, PublicComment):
                if session.execute(select(model.id).where(model.conversation_id == conversation_id)
                                   .limit(1)).first():
                    return True
            if session.get(MetaContact, conversation_id) is not None:
                return True
            if self._has_events_table(session):
                return session.execute(select(EVENTS.c.id).where(EVENTS.c.sender_id == conversation_id)
                                       .limit(1)).first() is not None
        return False

    def _require(self, conversation_id: str) -> None:
        if not conversation_id or not conversation_id.strip():
            raise PrivacyError("Indiquez un identifiant de conversation ou --reference T-2026-000123.")
        if len(conversation_id) > 255 or not all(ch.isprintable() for ch in conversation_id) \
                or any(0xD800 <= ord(ch) <= 0xDFFF for ch in conversation_id):
            raise PrivacyError(f"Identifiant de conversation invalide : « {_shorten(conversation_id)} » "
                               "(255 caractères imprimables au plus).")
        if conversation_id.startswith(PSEUDONYM_PREFIX):
            raise PrivacyError(f"« {_shorten(conversation_id)} » est un pseudonyme de données déjà anonymisées.")
        if not self.known(conversation_id):
            raise PrivacyError(f"Aucune donnée pour la conversation « {_shorten(conversation_id)} ».")

    # --- export ---------------------------------------------------------------------------------
    def export(self, conversation_id: str, now: dt.datetime | None = None) -> dict:
        """Everything held about one conversation, as JSON-ready data (right of access)."""
        self._require(conversation_id)
        with self.store.session() as session:
            tickets = list(session.execute(select(Ticket).where(Ticket.conversation_id == conversation_id)
                                           .order_by(Ticket.id)).scalars())
            ids = [t.id for t in tickets]
            changes = list(session.execute(select(StatusChange).where(StatusChange.ticket_id.in_(ids))
                                           .order_by(StatusChange.id)).scalars()) if ids else []
            # The conversation's rows and its tickets' rows (followers' lines...), read by two indexes:
            # one query with OR made PostgreSQL read the whole transcript.
            messages = _by_id(session, Message, conversation_id, ids)
            outbox = _by_id(session, Outbox, conversation_id, ids)
            comments = list(session.execute(select(PublicComment).where(PublicComment.conversation_id == conversation_id)
                                            .order_by(PublicComment.id)).scalars())
            contact = session.get(MetaContact, conversation_id)
            events = []
            if self._has_events_table(session):
                for row in session.execute(select(EVENTS).where(EVENTS.c.sender_id == conversation_id)
                                           .order_by(EVENTS.c.id)):
                    try:
                        data = json.loads(row.data) if row.data else None
                    except ValueError:
                        data = row.data
                    events.append({"id": row.id, "type": row.type_name, "timestamp": row.timestamp, "data": data})
        by_ticket: dict[int, list] = {}
        for change in changes:
            by_ticket.setdefault(change.ticket_id, []).append(_row(change, _CHANGE_FIELDS))
        return {
            "conversation_id": conversation_id,
            "exported_at": (to_naive_utc(now) or utcnow()).isoformat() + "Z",
            "note": "Toutes les dates sont en temps universel (UTC). Les notes privées des agents sont incluses.",
            "tickets": [{**_row(t, _TICKET_FIELDS), "status_history": by_ticket.get(t.id, [])} for t in tickets],
            "transcript": [_row(m, _MESSAGE_FIELDS) for m in messages],
            "outbox": [_row(o, _OUTBOX_FIELDS) for o in outbox],
            "public_comments": [_row(c, _COMMENT_FIELDS) for c in comments],
            "meta_contact": _row(contact, _CONTACT_FIELDS) if contact is not None else None,
            "tracker_events": events,
        }

    # --- erasure --------------------------------------------------------------------------------
    def erase(self, conversation_id: str, dry_run: bool = False, now: dt.datetime | None = None) -> PrivacyReport:
        """Anonymise everything about one conversation, whatever its age (right to erasure)."""
        self._require(conversation_id)
        moment = to_naive_utc(now) or utcnow()
        report = PrivacyReport(dry_run=dry_run)
        with self.store.session() as session:
            pseudonyms = _Pseudonyms()
            tickets = list(session.execute(select(Ticket).where(Ticket.conversation_id == conversation_id)).scalars())
            for ticket in tickets:
                self._anonymise_ticket(session, ticket, pseudonyms, moment, report)
            rest = select(Message).where(Message.conversation_id == conversation_id)
            for message in session.execute(rest).scalars():
                report.orphan_messages += _redact_message(message, pseudonyms)
            for item in session.execute(select(Outbox).where(Outbox.conversation_id == conversation_id)).scalars():
                report.outbox += _redact_outbox(item, pseudonyms)
            for comment in session.execute(select(PublicComment).where(
                    PublicComment.conversation_id == conversation_id)).scalars():
                report.comments += _redact_comment(comment, pseudonyms)
            contact = session.get(MetaContact, conversation_id)
            if contact is not None:
                session.delete(contact)
                report.comments += 1
            if self._has_events_table(session):
                condition = EVENTS.c.sender_id == conversation_id
                report.events = session.execute(select(func.count()).select_from(EVENTS).where(condition)).scalar()
                if not dry_run:
                    session.execute(delete(EVENTS).where(condition))
            report.conversations = 1
            if dry_run:
                session.rollback()
            else:
                session.commit()
        return report

    # --- retention purge ------------------------------------------------------------------------
    def purge(self, retention_days: int, now: dt.datetime | None = None, dry_run: bool = False) -> PrivacyReport:
        """Anonymise what is older than the retention period (see the module docstring)."""
        moment = to_naive_utc(now) or utcnow()
        cutoff = retention_cutoff(retention_days, moment)
        report = PrivacyReport(dry_run=dry_run, cutoff=cutoff)
        pseudonyms = _Pseudonyms()
        _index_events_by_time(self.store)
        with self.store.session() as session:
            tickets = list(session.execute(
                select(Ticket).where(Ticket.anonymised_at.is_(None), Ticket.status.in_(CLOSED_STATUSES),
                                     Ticket.closed_at.isnot(None), Ticket.closed_at < cutoff)
                .order_by(Ticket.id)).scalars())
            for ticket in tickets:
                self._anonymise_ticket(session, ticket, pseudonyms, moment, report)
            orphans = select(Message).where(Message.ticket_id.is_(None), Message.created_at < cutoff,
                                            Message.text != MARKER)
            for message in session.execute(orphans).scalars():
                report.orphan_messages += _redact_message(message, pseudonyms)
            stale_outbox = select(Outbox).where(Outbox.ticket_id.is_(None), Outbox.created_at < cutoff,
                                                Outbox.text != MARKER)
            for item in session.execute(stale_outbox).scalars():
                report.outbox += _redact_outbox(item, pseudonyms)
            open_conversations = set(session.execute(
                select(Ticket.conversation_id).where(Ticket.status.notin_(CLOSED_STATUSES))).scalars())
            for comment in session.execute(select(PublicComment).where(
                    PublicComment.created_at < cutoff, PublicComment.text != MARKER)).scalars():
                if comment.conversation_id not in open_conversations:
                    report.comments += _redact_comment(comment, pseudonyms)
            for contact in session.execute(select(MetaContact).where(
                    func.coalesce(MetaContact.last_inbound_at, MetaContact.private_reply_at) < cutoff)).scalars():
                if contact.conversation_id not in open_conversations:
                    session.delete(contact)
                    report.comments += 1
            if self._has_events_table(session):
                report.events = self._purge_events(session, cutoff, dry_run)
            report.conversations = len({c for c in pseudonyms.mapping})
            if dry_run:
                session.rollback()
            else:
                session.commit()
        return report

    def _purge_events(self, session, cutoff: dt.datetime, dry_run: bool) -> int:
        """Tracker events older than the cutoff; a conversation still active keeps its current session,
        one with an open ticket keeps everything (its paused state lives there). A few statements per
        500 conversations (read by ``ix_events_timestamp``), not a few per conversation."""
        limit = _epoch(cutoff)
        open_conversations = set(session.execute(
            select(Ticket.conversation_id).where(Ticket.status.notin_(CLOSED_STATUSES))).scalars())
        senders = [sender for sender in session.execute(
            select(EVENTS.c.sender_id).where(EVENTS.c.timestamp < limit).distinct()).scalars()
            if sender not in open_conversations]
        deleted = 0
        for start in range(0, len(senders), 500):
            chunk = senders[start:start + 500]
            active = set(session.execute(select(EVENTS.c.sender_id).distinct().where(
                EVENTS.c.sender_id.in_(chunk), EVENTS.c.timestamp >= limit)).scalars())
            current = dict(session.execute(
                select(EVENTS.c.sender_id, func.max(EVENTS.c.id))
                .where(EVENTS.c.sender_id.in_(active), EVENTS.c.type_name == "session_started")
                .group_by(EVENTS.c.sender_id)).all()) if active else {}
            # Finished conversations lose every old event; active ones those before their current
            # session; an active one with a single endless session keeps everything (nothing can go).
            parts = [EVENTS.c.sender_id.in_([s for s in chunk if s not in active])]
            parts += [and_(EVENTS.c.sender_id == sender, EVENTS.c.id < first_kept) for sender, first_kept in current.items()]
            condition = and_(EVENTS.c.timestamp < limit, or_(*parts))
            deleted += session.execute(select(func.count()).select_from(EVENTS).where(condition)).scalar()
            if not dry_run:
                session.execute(delete(EVENTS).where(condition))
        return deleted

    def _anonymise_ticket(self, session, ticket: Ticket, pseudonyms: "_Pseudonyms", moment: dt.datetime,
                          report: PrivacyReport) -> None:
        original = ticket.conversation_id
        if ticket.anonymised_at is None:
            report.tickets += 1
        pseudonym = pseudonyms.get(original)
        for message in session.execute(select(Message).where(Message.ticket_id == ticket.id)).scalars():
            report.messages += _redact_message(message, pseudonyms)
        for item in session.execute(select(Outbox).where(Outbox.ticket_id == ticket.id)).scalars():
            report.outbox += _redact_outbox(item, pseudonyms)
        for change in session.execute(select(StatusChange).where(StatusChange.ticket_id == ticket.id,
                                                                 StatusChange.note.isnot(None),
                                                                 StatusChange.note != MARKER)).scalars():
            change.note = MARKER
            report.notes += 1
        ticket.conversation_id = pseudonym
        ticket.citizen_name = None
        ticket.location = None
        ticket.satisfaction_comment = None  # the citizen's words; the yes / no stays in the figures
        ticket.summary = MARKER
        ticket.source_message_id = None
        ticket.anonymised_at = ticket.anonymised_at or moment


def _by_id(session, model, conversation_id: str, ticket_ids: list[int]) -> list:
    """Rows of ``model`` of this conversation or of these tickets, in id order."""
    rows = {row.id: row for row in session.execute(select(model).where(model.conversation_id == conversation_id)).scalars()}
    if ticket_ids:
        rows.update((row.id, row) for row in session.execute(select(model).where(model.ticket_id.in_(ticket_ids))).scalars())
    return [rows[key] for key in sorted(rows)]


@dataclass
class _Pseudonyms:
    """One random pseudonym per original conversation id (never derived from it: not reversible)."""

    mapping: dict[str, str] = field(default_factory=dict)

    def get(self, conversation_id: str) -> str:
        if conversation_id.startswith(PSEUDONYM_PREFIX):
            return conversation_id
        if conversation_id not in self.mapping:
            self.mapping[conversation_id] = PSEUDONYM_PREFIX + secrets.token_hex(8)
        return self.mapping[conversation_id]


def _redact_message(message: Message, pseudonyms: _Pseudonyms) -> int:
    changed = message.text != MARKER or message.author_name is not None or message.external_id is not None \
        or not message.conversation_id.startswith(PSEUDONYM_PREFIX)
    message.text = MARKER
    message.author_name = None
    message.external_id = None
    message.conversation_id = pseudonyms.get(message.conversation_id)
    return int(changed)


def _redact_outbox(item: Outbox, pseudonyms: _Pseudonyms) -> int:
    changed = item.text != MARKER or not item.conversation_id.startswith(PSEUDONYM_PREFIX)
    item.text = MARKER
    item.last_error = None
    item.conversation_id = pseudonyms.get(item.conversation_id)
    return int(changed)


def _redact_comment(comment: PublicComment, pseudonyms: _Pseudonyms) -> int:
    changed = comment.text != MARKER or comment.author_name is not None or comment.author_id is not None
    comment.text = MARKER
    comment.author_id = comment.author_name = comment.permalink = None
    comment.conversation_id = pseudonyms.get(comment.conversation_id)
    return int(changed)


def _shorten(text: str | None, length: int = 60) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in (text or ""))
    return text if len(text) <= length else text[: length - 1] + "…"


def report_dict(report: PrivacyReport) -> dict:
    data = asdict(report)
    data["cutoff"] = _iso(report.cutoff)
    return data
