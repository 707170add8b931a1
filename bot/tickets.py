"""Tickets: creation (idempotent), transcript, status lookup and hand-off state."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot import db
from bot.models import CLOSED_STATUSES, Message, StatusChange, Ticket, to_naive_utc, utcnow

_REFERENCE = re.compile(r"\bt\s*-?\s*(20\d\d)\s*-?\s*(\d{1,6})\b|\b(?:ticket|ref(?:erence)?|dossier|n°|no)\s*:?\s*#?(\d{3,6})\b",
                        re.IGNORECASE)
HANDOFF = "handoff"


_STAFF_REFERENCE = re.compile(r"\s*(?:t\s*-?\s*(20\d\d)\s*-?\s*)?(\d{1,6})\s*", re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_CONVERSATION_ID = 255
MAX_NAME = 200


def storable(text: str | None) -> str | None:
    """The text every database stores and gives back unchanged: without NUL (PostgreSQL refuses it)
    and without lone surrogates (no driver can encode them; a surrogate *pair* becomes its
    character). Anything else is kept as is, on SQLite and PostgreSQL alike."""
    if not text:
        return text
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def _conversation_id(value: str) -> str:
    value = storable(value) or ""
    if not value or len(value) > MAX_CONVERSATION_ID:
        raise ValueError(f"a conversation id has 1 to {MAX_CONVERSATION_ID} characters")
    return value


def format_reference(year: int, number: int) -> str:
    return f"T-{year}-{number:06d}"


def parse_reference(text: str) -> tuple[int | None, int] | None:
    """Find a ticket reference in free text: "T-2026-000042", "t2026-42", "ticket 000456"."""
    match = _REFERENCE.search(text or "")
    if not match:
        return None
    if match.group(1):
        return int(match.group(1)), int(match.group(2))
    return None, int(match.group(3))


def parse_staff_reference(text: str | None) -> tuple[int | None, int] | None:
    """A reference typed by staff (URL, search box, command line): the whole entry must be one,
    "T-2026-000042", "t2026-42" or a bare number "42"; anything else is not a reference."""
    match = _STAFF_REFERENCE.fullmatch(text or "")
    if not match:
        return None
    return (int(match.group(1)) if match.group(1) else None), int(match.group(2))


# Built once, run with parameters: building a statement costs more than running it on SQLite.
OPEN_HANDOFF = (select(Ticket).where(Ticket.conversation_id == bindparam("conversation_id"), Ticket.kind == HANDOFF,
                                     Ticket.status.notin_(CLOSED_STATUSES))
                .order_by(Ticket.id.desc()).limit(1))  # the conversation's open hand-off ticket (the latest)
FROM_SOURCE_MESSAGE = select(Ticket).where(Ticket.source_message_id == bindparam("source_message_id"))


def new_message(conversation_id: str, channel: str, author: str, text: str, *, ticket_id: int | None = None,
                external_id: str | None = None, author_name: str | None = None, private: bool = False,
                now: dt.datetime | None = None) -> Message:
    """A transcript line, checked and cleaned for storage (not yet added to a session)."""
    return Message(conversation_id=_conversation_id(conversation_id), channel=channel, author=author,
                   text=storable(text) or "", ticket_id=ticket_id, external_id=storable(external_id),
                   author_name=storable(author_name)[:MAX_NAME] if author_name else None,
                   private=private, created_at=to_naive_utc(now) or utcnow())


@dataclass(frozen=True)
class NewTicket:
    kind: str
    queue: str
    conversation_id: str
    channel: str
    summary: str
    location: str | None = None
    urgent: bool = False
    handoff_reason: str | None = None
    citizen_name: str | None = None
    source_message_id: str | None = None


class TicketStore:
    """All ticket-table operations, on one database URL."""

    def __init__(self, url: str):
        self.url = url
        db.upgrade(url)
        self._sessions: sessionmaker = db.get_sessionmaker(url)

    def session(self) -> Session:
        return self._sessions()

    # --- creation -----------------------------------------------------------------------------
    def create(self, new: NewTicket, now: dt.datetime | None = None, actor: str = "bot") -> tuple[Ticket, bool]:
        """Create a ticket, or return the one already made for the same citizen message.

        Returns ``(ticket, created)``. The transcript of the conversation so far that no ticket
        holds yet is attached to the new ticket.
        """
        if new.source_message_id:
            existing = self.by_source_message(new.source_message_id)
            if existing is not None:
                return existing, False
        created_at = to_naive_utc(now) or utcnow()
        with self.session() as session:
            ticket = Ticket(
                kind=new.kind, queue=new.queue, status="new", urgent=new.urgent,
                handoff_reason=new.handoff_reason, conversation_id=_conversation_id(new.conversation_id),
                channel=new.channel, citizen_name=(storable(new.citizen_name) or "")[:MAX_NAME] or None,
                location=storable(new.location), summary=storable(new.summary) or "",
                source_message_id=storable(new.source_message_id),
                created_at=created_at, updated_at=created_at,
            )
            session.add(ticket)
            try:
                session.flush()
            except IntegrityError:  # a concurrent retry of the same message won the race
                session.rollback()
                existing = self.by_source_message(new.source_message_id) if new.source_message_id else None
                if existing is None:
                    raise
                return existing, False
            ticket.reference = format_reference(created_at.year, ticket.id)
            ticket.updated_at = created_at
            session.add(StatusChange(ticket_id=ticket.id, old_status=None, new_status="new", actor=actor,
                                     created_at=created_at))
            self._attach_recent_transcript(session, ticket)
            session.commit()
            return ticket, True

    def _attach_recent_transcript(self, session: Session, ticket: Ticket) -> None:
        """Link the conversation's unlinked messages since its previous ticket to this one."""
        previous = session.execute(
            select(Ticket.id).where(Ticket.conversation_id == ticket.conversation_id, Ticket.id < ticket.id)
            .order_by(Ticket.id.desc()).limit(1)
        ).scalar()
        query = select(Message).where(Message.conversation_id == ticket.conversation_id,
                                      Message.ticket_id.is_(None))
        if previous is not None:
            last_linked = session.execute(
                select(Message.id).where(Message.ticket_id == previous).order_by(Message.id.desc()).limit(1)
            ).scalar()
            if last_linked is not None:
                query = query.where(Message.id > last_linked)
        for message in session.execute(query.order_by(Message.id.desc()).limit(20)).scalars():
            message.ticket_id = ticket.id

    # --- lookups ------------------------------------------------------------------------------
    def get(self, ticket_id: int) -> Ticket | None:
        with self.session() as session:
            return session.get(Ticket, ticket_id)

    def by_reference(self, reference: str, strict: bool = False) -> Ticket | None:
        """The ticket a reference names; ``strict``: the whole text must be a reference (staff entries),
        otherwise the first reference found in free text."""
        parsed = parse_staff_reference(reference) if strict else parse_reference(reference)
        if parsed is None:
            return None
        with self.session() as session:
            ticket = session.get(Ticket, parsed[1])
            if ticket is None or (parsed[0] is not None and ticket.created_at.year != parsed[0]):
                return None
            return ticket

    def by_source_message(self, source_message_id: str) -> Ticket | None:
        with self.session() as session:
            return session.execute(FROM_SOURCE_MESSAGE, {"source_message_id": source_message_id}).scalar_one_or_none()

    def for_conversation(self, conversation_id: str, limit: int = 20) -> list[Ticket]:
        with self.session() as session:
            return list(session.execute(
                select(Ticket).where(Ticket.conversation_id == conversation_id)
                .order_by(Ticket.id.desc()).limit(limit)
            ).scalars())

    def open_handoff(self, conversation_id: str) -> Ticket | None:
        """The conversation's open hand-off ticket: while it exists, the bot stays silent."""
        with self.session() as session:
            return session.execute(OPEN_HANDOFF, {"conversation_id": conversation_id}).scalar_one_or_none()

    def citizen_lookup(self, conversation_id: str, text: str) -> tuple[str | None, list[Ticket]]:
        """Status lookup for a citizen: only their own conversation's tickets are ever returned.

        Returns ``(reference_asked, tickets)``; a reference from another conversation finds nothing.
        """
        parsed = parse_reference(text)
        own = self.for_conversation(conversation_id, limit=50)
        from bot.followers import Followers  # the tickets this citizen follows ("déjà signalé") are theirs too

        followed = [t for t in Followers(self, None).followed_by(conversation_id) if t.id not in {o.id for o in own}]
        own = sorted(own + followed, key=lambda t: t.id, reverse=True)
        if parsed is None:
            return None, own[:3]
        year, number = parsed
        asked = format_reference(year, number) if year else f"n° {number:06d}"
        matches = [t for t in own if t.id == number and (year is None or t.created_at.year == year)]
        return asked, matches

    def transcript(self, ticket_id: int) -> list[Message]:
        with self.session() as session:
            return list(session.execute(
                select(Message).where(Message.ticket_id == ticket_id).order_by(Message.id)
            ).scalars())

    def conversation_messages(self, conversation_id: str) -> list[Message]:
        with self.session() as session:
            return list(session.execute(
                select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
            ).scalars())

    # --- changes ------------------------------------------------------------------------------
    def add_message(self, conversation_id: str, channel: str, author: str, text: str, *,
                    ticket_id: int | None = None, external_id: str | None = None,
                    author_name: str | None = None, private: bool = False,
                    now: dt.datetime | None = None) -> Message:
        with self.session() as session:
            message = new_message(conversation_id, channel, author, text, ticket_id=ticket_id, external_id=external_id,
                                  author_name=author_name, private=private, now=now)
            session.add(message)
            session.commit()
            return message

    def mark_urgent(self, ticket_id: int, now: dt.datetime | None = None) -> Ticket | None:
        """Make a ticket urgent (a danger said during a hand-off); None if it already was."""
        with self.session() as session:
            ticket = session.get(Ticket, ticket_id)
            if ticket is None or ticket.urgent:
                return None
            ticket.urgent = True
            ticket.updated_at = to_naive_utc(now) or utcnow()
            session.add(StatusChange(ticket_id=ticket.id, old_status=ticket.status, new_status=ticket.status,
                                     actor="bot", note="danger dans un message pendant le transfert : urgent",
                                     created_at=to_naive_utc(now) or utcnow()))
            session.commit()
            session.refresh(ticket)
            session.expunge(ticket)
            return ticket

    def set_status(self, ticket_id: int, status: str, actor: str, note: str | None = None,
                   now: dt.datetime | None = None) -> Ticket:
        moment = to_naive_utc(now) or utcnow()
        with self.session() as session:
            ticket = session.get(Ticket, ticket_id)
            if ticket is None:
                raise LookupError(f"no ticket with id {ticket_id}")
            old = ticket.status
            ticket.status = status
            ticket.updated_at = moment
            if status == "resolved" and ticket.resolved_at is None:
                ticket.resolved_at = moment
            if status in CLOSED_STATUSES and ticket.closed_at is None:
                ticket.closed_at = moment
            session.add(StatusChange(ticket_id=ticket.id, old_status=old, new_status=status, actor=actor,
                                     note=storable(note), created_at=moment))
            session.commit()
            return ticket

    def _amend(self, ticket_id: int, change) -> Ticket:
        """Apply ``change(ticket)`` to one ticket and stamp its update time."""
        with self.session() as session:
            ticket = session.get(Ticket, ticket_id)
            if ticket is None:
                raise LookupError(f"no ticket with id {ticket_id}")
            change(ticket)
            ticket.updated_at = utcnow()
            session.commit()
            return ticket

    def append_summary(self, ticket_id: int, text: str) -> Ticket:
        text = storable(text) or ""
        return self._amend(ticket_id, lambda ticket: setattr(ticket, "summary", f"{ticket.summary}\n{text}"))

    def set_place(self, ticket_id: int, label: str, kind: str, confidence: float, lat: float | None,
                  lon: float | None) -> Ticket:
        """The place as understood (``bot.places``); the citizen's own words stay in ``location``."""
        def place(ticket: Ticket) -> None:
            ticket.place_label, ticket.place_kind = label[:300], kind
            ticket.place_confidence, ticket.lat, ticket.lon = confidence, lat, lon

        return self._amend(ticket_id, place)

    def update_location(self, ticket_id: int, location: str) -> Ticket:
        location = storable(location) or ""

        def add(ticket: Ticket) -> None:
            ticket.location = f"{ticket.location} / {location}" if ticket.location else location

        return self._amend(ticket_id, add)
