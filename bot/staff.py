"""The staff desk: what the CM and the service heads can do with tickets.

Every operation takes the acting ``Staff`` and checks it may: the CM sees every ticket, a service
head only the tickets of their own service (anything else is "not found", revealing nothing).

Public comments (``bot.comments``) follow the same rule: the CM sees them all, a service head those
whose ticket is routed to their service. A public reply is visible to everyone: it never carries
personal data (a ticket reference, an e-mail address, a phone number that is not one the town
publishes, the citizen's name from the ticket) and the server refuses it, saying why.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import exists, func, select, update

from bot import events, relay, satisfaction
from bot.followers import Followers
from bot.accounts import Staff
from bot.comments import NEEDS_STAFF, TREATMENTS, Comments, channel_for
from bot.followers import Followers
from bot.hours import StaffHours
from bot.models import (
    CLOSED_STATUSES,
    STATUSES,
    Message,
    Outbox,
    PublicComment,
    StaffUser,
    StatusChange,
    Ticket,
    to_naive_utc,
    utcnow,
)
from bot.profile import Profile
from bot.replies import Replies
from bot.routing import CM_QUEUE
from bot.settings import PROJECT_ROOT
from bot.textnorm import clean_citizen_text
from bot.tickets import HANDOFF, NewTicket, TicketStore, parse_reference
from bot.working_time import WorkingTime

logger = logging.getLogger(__name__)
CANNED_ANSWERS = PROJECT_ROOT / "canned_answers.fr.yml"
# Status changes a citizen is told about.
NOTIFIED_STATUSES = ("in_progress", "scheduled", "resolved", "duplicate")
SATISFACTION_STATUSES = ("resolved", "closed")  # then the citizen is asked one short question
STATUS_LABELS = {
    "new": "Nouveau", "acknowledged": "Pris en compte", "in_progress": "En cours", "scheduled": "Programmé",
    "resolved": "Résolu", "not_ours": "Pas pour nous (retour CM)", "duplicate": "Doublon", "closed": "Clôturé",
}
HANDOFF_REASON_LABELS = {
    "human_request": "demande à parler à une personne", "insult": "insultes", "threat": "menaces",
    "press": "presse / médias", "legal": "menace de recours juridique",
    "person_complaint": "plainte visant un agent ou un élu", "complaint": "mécontentement général", "personal_data": "données personnelles (RGPD)",
    "misunderstood": "incompréhension répétée", "distress_violence": "URGENCE : violences",
    "distress_danger": "URGENCE : danger", "distress_suicide": "URGENCE : détresse",
}


MAX_REPLY = 3000
# What each platform accepts under a comment (the signature included).
PUBLIC_REPLY_LIMITS = {"instagram": 1000, "facebook": 8000}
PLATFORM_LABELS = {"facebook": "Facebook", "instagram": "Instagram"}
PUBLIC_PREFIX = "[Réponse publique] "  # how a public reply reads in the ticket's transcript
# A French phone number: 06 12 34 56 78, 0612345678, 06.12.34.56.78, +33 6 12 34 56 78, 0033 (0)6...
_PHONE = re.compile(r"(?<![\d+])(?:(?:\+|00)\s*33\s*(?:\(0\)\s*)?|0)[1-9](?:[\s.\-]*\d{2}){4}(?!\d)")
_EMAIL = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
# Conflicts: the CM is the buffer, a service head answers these in private only.
CM_ONLY_PUBLIC = frozenset({"to_cm", "distress"})


def _shown(value, length: int = 60) -> str:
    """Something a user typed, safe to echo in a message: printable and short."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= length else text[: length - 1] + "…"


class DeskError(Exception):
    """An action refused, with a French message for the person who tried it."""


class NotFound(DeskError):
    pass


class AlreadyTaken(DeskError):
    def __init__(self, holder: str):
        super().__init__(f"Ce ticket est déjà pris en charge par {holder}.")
        self.holder = holder


def get_desk() -> "StaffDesk":
    """The desk on the configured database and profile."""
    from bot.assistant import get_assistant

    assistant = get_assistant()
    return StaffDesk(assistant.store, assistant.profile, assistant.hours, assistant.replies)


@dataclass
class QueueItem:
    ticket: Ticket
    waiting: dt.timedelta  # in staff hours
    reason: str
    first_message: str | None = None  # the citizen's first and latest messages on this ticket
    latest_message: str | None = None
    holder: str | None = None  # who took it, as people know them: "Camille (CM)"
    sent_back: str | None = None  # for a ticket a service sent back: which service, and why
    followers: int = 0  # « déjà signalé »: other citizens following it

    @property
    def waiting_label(self) -> str:
        minutes = int(self.waiting.total_seconds() // 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d}" if hours else f"{minutes} min"


@dataclass
class CommentView:
    """A public comment as staff see it: the row, its ticket, what the town sent in reply."""
    comment: PublicComment
    ticket: Ticket | None = None
    public_replies: list[Outbox] = field(default_factory=list)  # staff replies under the comment
    private_messages: list[Outbox] = field(default_factory=list)  # to the commenter's inbox
    staff_done: bool = False  # someone of the town answered it, or marked it seen

    @property
    def platform_label(self) -> str:
        return PLATFORM_LABELS.get(self.comment.platform, self.comment.platform)

    @property
    def treatment_label(self) -> str:
        return TREATMENTS.get(self.comment.treatment or "", self.comment.treatment or "—")

    @property
    def to_see(self) -> bool:
        return self.comment.treatment in NEEDS_STAFF and not self.staff_done

    @property
    def handled(self) -> bool:
        """Left to staff by the bot, and someone of the town has dealt with it."""
        return self.comment.treatment in NEEDS_STAFF and self.staff_done

    @property
    def bot_reply(self) -> str | None:
        """The public reply recorded on the row, unless it is one of the staff's (already listed)."""
        reply = self.comment.public_reply
        if reply and reply not in {item.text for item in self.public_replies}:
            return reply
        return None

    @property
    def public_limit(self) -> int:
        return min(MAX_REPLY, PUBLIC_REPLY_LIMITS.get(self.comment.platform, MAX_REPLY))


def delivery_state(item: Outbox) -> str:
    """Where an outbox message is, in words staff read."""
    if item.delivered_at is not None:
        return "remis"
    if item.failed_at is not None:
        return f"non remis : {item.last_error or 'le canal ne peut plus joindre le citoyen'}"
    if item.last_error:
        return f"pas encore remis (nouvel essai automatique) : {item.last_error}"
    return "en attente de remise"


def load_canned_answers(path: Path = CANNED_ANSWERS) -> list[dict]:
    if not path.exists():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [{"key": key, "title": item["title"], "text": " ".join(item["text"].split())}
            for key, item in (data.get("answers") or {}).items()]


class StaffDesk:
    def __init__(self, store: TicketStore, profile: Profile, hours: StaffHours, replies: Replies,
                 resume_conversation=None):
        self.store = store
        self.profile = profile
        self.hours = hours
        self.replies = replies
        if resume_conversation is None:
            from bot.integrations.rasa_api import resume_conversation
        self.resume_conversation = resume_conversation

    # --- reading ---------------------------------------------------------------------------------
    def _visible_query(self, staff: Staff):
        query = select(Ticket)
        if not staff.is_cm:
            query = query.where(Ticket.queue == staff.service)
        return query

    def ticket(self, staff: Staff, reference: str) -> Ticket:
        ticket = (self.store.by_reference(reference, strict=True) if isinstance(reference, str)
                  else self.store.get(reference))
        if ticket is None or not (staff.is_cm or ticket.queue == staff.service):
            raise NotFound(f"Ticket introuvable : {_shown(reference)}")
        return ticket

    def queue(self, staff: Staff, now: dt.datetime | None = None, include_closed: bool = False) -> list[QueueItem]:
        """CM: open hand-offs and unrouted tickets; head: their service. Urgent first, then oldest."""
        now = now or dt.datetime.now(dt.timezone.utc)
        with self.store.session() as session:
            tickets = list(session.execute(self._queue_query(staff, include_closed)).scalars())
            ids = [t.id for t in tickets]
            messages = self._first_and_latest_citizen_messages(session, ids)
            sent_back = self._sent_back(session, [t.id for t in tickets if t.status == "not_ours"])
            holders = self._holder_names(session, {t.assigned_to for t in tickets if t.assigned_to})
        followers = Followers(self.store).count(ids)
        clock = WorkingTime(self.hours)  # the same staff time, without walking every period of a long wait
        return [QueueItem(t, clock.between(t.created_at.replace(tzinfo=dt.timezone.utc), now),
                          self.reason(t), *messages.get(t.id, (None, None)),
                          holders.get(t.assigned_to) if t.assigned_to else None, sent_back.get(t.id),
                          followers.get(t.id, 0))
                for t in tickets]

    def _queue_query(self, staff: Staff, include_closed: bool = False):
        """The queue's tickets, in its order (open ones: read from the small index ix_ticket_open)."""
        query = self._visible_query(staff)
        if staff.is_cm:
            query = query.where(Ticket.queue == CM_QUEUE)
        if not include_closed:
            query = query.where(Ticket.status.notin_(CLOSED_STATUSES))
        return query.order_by(Ticket.urgent.desc(), Ticket.created_at, Ticket.id)

    def queue_tickets(self, staff: Staff) -> list[Ticket]:
        """The open tickets of this person's queue, without the cards' details: what the ticket page's map shows."""
        with self.store.session() as session:
            return list(session.execute(self._queue_query(staff)).scalars())

    @staticmethod
    def _first_and_latest_citizen_messages(session, ticket_ids: list[int]) -> dict[int, tuple[str, str | None]]:
        found: dict[int, tuple[str, str | None]] = {}
        for start in range(0, len(ticket_ids), 500):
            chunk = ticket_ids[start:start + 500]
            bounds = session.execute(
                select(Message.ticket_id, func.min(Message.id), func.max(Message.id))
                .where(Message.ticket_id.in_(chunk), Message.author == "citizen", Message.private.is_(False))
                .group_by(Message.ticket_id)).all()
            texts = dict(session.execute(select(Message.id, Message.text).where(
                Message.id.in_([i for _, first, last in bounds for i in (first, last)]))).all())
            for ticket_id, first, last in bounds:
                found[ticket_id] = (texts[first], texts[last] if last != first else None)
        return found

    def _sent_back(self, session, ticket_ids: list[int]) -> dict[int, str]:
        """"Renvoyé par Voirie et éclairage public : pas chez nous, c'est le département"."""
        found: dict[int, str] = {}
        if not ticket_ids:
            return found
        changes = session.execute(select(StatusChange).where(
            StatusChange.ticket_id.in_(ticket_ids), StatusChange.new_status == "not_ours")
            .order_by(StatusChange.id)).scalars()
        users = {u.username: u for u in session.execute(select(StaffUser)).scalars()}
        for change in changes:
            user = users.get(change.actor)
            service = self.profile.services.get(user.service) if user is not None and user.service else None
            who = f"le service {service.name}" if service else (user.display_name if user else change.actor)
            note = change.note or ""
            why = "" if note.startswith("renvoyé au CM par") else f" : {note}"
            found[change.ticket_id] = f"Renvoyé par {who}{why}"
        return found

    def _holder_names(self, session, usernames: set[str]) -> dict[str, str]:
        names = {}
        for user in session.execute(select(StaffUser).where(StaffUser.username.in_(usernames))).scalars():
            names[user.username] = self.person_label(user.display_name, user.role, user.service)
        return {username: names.get(username, username) for username in usernames}

    def holder_name(self, username: str | None) -> str | None:
        if not username:
            return None
        with self.store.session() as session:
            return self._holder_names(session, {username})[username]

    def person_label(self, display_name: str, role: str, service: str | None) -> str:
        """A colleague as people know them: "Camille (CM)", "Victor (Voirie et éclairage public)"."""
        if "(" in display_name:
            return display_name
        if role == "cm":
            return f"{display_name} (CM)"
        entry = self.profile.services.get(service or "")
        return f"{display_name} ({entry.name})" if entry else display_name

    def reason(self, ticket: Ticket) -> str:
        if ticket.kind == HANDOFF:
            return HANDOFF_REASON_LABELS.get(ticket.handoff_reason or "", ticket.handoff_reason or "transfert")
        if ticket.status == "not_ours":
            return "renvoyé par un service : à réorienter"
        return "à orienter vers un service" if ticket.queue == CM_QUEUE else ticket.kind

    def transcript(self, staff: Staff, reference: str) -> list[Message]:
        ticket = self.ticket(staff, reference)
        return self.store.transcript(ticket.id)

    def audit(self, staff: Staff, reference: str) -> list[StatusChange]:
        ticket = self.ticket(staff, reference)
        with self.store.session() as session:
            return list(session.execute(select(StatusChange).where(StatusChange.ticket_id == ticket.id)
                                        .order_by(StatusChange.id)).scalars())

    # --- acting ----------------------------------------------------------------------------------
    def take(self, staff: Staff, reference: str) -> Ticket:
        """Assign to me. Two people taking the same ticket at once: exactly one wins."""
        ticket = self.ticket(staff, reference)
        with self.store.session() as session:
            result = session.execute(
                update(Ticket).where(Ticket.id == ticket.id, Ticket.assigned_to.is_(None))
                .values(assigned_to=staff.username, assigned_at=utcnow(), updated_at=utcnow())
            )
            session.commit()
            if result.rowcount == 1:
                return session.get(Ticket, ticket.id)
            holder = session.get(Ticket, ticket.id).assigned_to
        if holder == staff.username:
            return self.store.get(ticket.id)
        raise AlreadyTaken(holder)

    def reply(self, staff: Staff, reference: str, text: str) -> Message:
        """Send a message to the citizen (signed), recorded on the ticket."""
        text = clean_citizen_text(text, limit=10_000)
        if not text:
            raise DeskError("Le message est vide.")
        if len(text) > 3000:
            raise DeskError("Message trop long (3 000 caractères au maximum).")
        ticket = self.ticket(staff, reference)
        signed = f"{text}\n— {staff.signature(self.profile)}"
        message = self.store.add_message(ticket.conversation_id, ticket.channel, "staff", signed, ticket_id=ticket.id,
                                         author_name=staff.display_name)
        self._mark_first_response(ticket.id)
        relay.send_to_citizen(self.store, ticket.conversation_id, ticket.channel, signed, ticket.id)
        return message

    def _mark_first_response(self, ticket_id: int) -> None:
        """A reply or a status message that reaches the citizen is the staff's first response."""
        with self.store.session() as session:
            row = session.get(Ticket, ticket_id)
            row.first_response_at = row.first_response_at or utcnow()
            row.updated_at = utcnow()
            session.commit()

    def note(self, staff: Staff, reference: str, text: str) -> Message:
        """A private note: stays on the ticket, never sent."""
        text = clean_citizen_text(text, limit=10_000)
        if not text:
            raise DeskError("La note est vide.")
        if len(text) > 5000:
            raise DeskError("Note trop longue (5 000 caractères au maximum).")
        ticket = self.ticket(staff, reference)
        return self.store.add_message(ticket.conversation_id, ticket.channel, "staff", text, ticket_id=ticket.id,
                                      author_name=staff.display_name, private=True)

    def route(self, staff: Staff, reference: str, service: str, kind: str = "request") -> Ticket:
        """CM: give the ticket to a service. A hand-off becomes that service's ticket and the bot resumes."""
        if not staff.is_cm:
            raise DeskError("Seul le community manager oriente les tickets.")
        if service not in self.profile.services:
            choices = " ; ".join(f"{entry.name} ({slug})" for slug, entry in self.profile.services.items())
            if not (service or "").strip():
                raise DeskError(f"Choisissez le service qui doit recevoir ce ticket : {choices}.")
            raise DeskError(f"Service inconnu « {_shown(service)} ». Services possibles : {choices}.")
        if kind not in ("report", "request", "complaint"):
            raise DeskError("Type inconnu : report, request ou complaint.")
        ticket = self.ticket(staff, reference)
        if ticket.status in CLOSED_STATUSES:
            raise DeskError("Ce ticket est clôturé.")
        was_handoff = ticket.kind == HANDOFF
        with self.store.session() as session:
            row = session.get(Ticket, ticket.id)
            old = row.status
            row.queue, row.status, row.assigned_to, row.assigned_at = service, "new", None, None
            if was_handoff:
                row.kind = kind
            row.updated_at = utcnow()
            session.add(StatusChange(ticket_id=row.id, old_status=old, new_status="new", actor=staff.username,
                                     note=f"orienté vers {service}"))
            session.commit()
        name = self.profile.service(service).name
        relay.send_to_citizen(self.store, ticket.conversation_id, ticket.channel,
                              self.replies.render("staff_notice.routed", ref=ticket.reference, service=name),
                              ticket.id)
        if was_handoff:
            self._resume(ticket)
        return self.store.get(ticket.id)

    def status_choices(self, staff: Staff, ticket: Ticket) -> list[str]:
        """The statuses that fit this ticket: a conversation with the CM is never "scheduled" (no
        intervention) nor "not ours" (it is already the CM's), and only a service sends back."""
        choices = [s for s in STATUSES if s != "new"]
        if ticket.kind == HANDOFF or ticket.queue == CM_QUEUE:
            choices = [s for s in choices if s not in ("scheduled", "not_ours")]
        elif staff.is_cm:
            choices = [s for s in choices if s != "not_ours"]
        return choices

    def set_status(self, staff: Staff, reference: str, status: str, *, scheduled_for: dt.datetime | None = None,
                   duplicate_of: str | None = None, note: str | None = None) -> Ticket:
        if status not in STATUSES or status == "new":
            raise DeskError(f"Statut inconnu « {_shown(status)} » : {', '.join(s for s in STATUSES if s != 'new')}.")
        current = self.ticket(staff, reference)
        fitting = self.status_choices(staff, current)
        if status not in fitting and not (status == "closed" and current.status == "closed"):
            raise DeskError(f"« {STATUS_LABELS.get(status, status)} » ne convient pas à ce ticket. Statuts possibles : "
                            + ", ".join(STATUS_LABELS.get(s, s) for s in fitting) + ".")
        if note is not None:  # staff text: same cleaning as any stored text (no NUL for PostgreSQL)
            note = clean_citizen_text(note, limit=2000) or None
        ticket = self.ticket(staff, reference)
        if ticket.status == "closed":
            if status == "closed" and ticket.kind == HANDOFF:  # retry giving the conversation back
                self._resume(ticket)
                return ticket
            raise DeskError("Ce ticket est déjà clôturé.")
        values: dict = {}
        if status == "scheduled":
            if scheduled_for is None:
                raise DeskError("Indiquez la date prévue de l'intervention.")
            values["scheduled_for"] = to_naive_utc(scheduled_for)
        if status == "duplicate":
            try:  # only a ticket this person may see: a head cannot probe other services' references
                original = self.ticket(staff, duplicate_of or "")
            except NotFound:
                original = None
            if original is None or original.id == ticket.id:
                raise DeskError("Indiquez la référence du ticket d'origine (T-2026-000123).")
            values["duplicate_of_id"] = original.id
        if status == "not_ours":
            values.update(queue=CM_QUEUE, assigned_to=None, assigned_at=None)
            note = note or f"renvoyé au CM par {staff.signature(self.profile)}"
        with self.store.session() as session:
            row = session.get(Ticket, ticket.id)
            for key, value in values.items():
                setattr(row, key, value)
            session.commit()
        updated = self.store.set_status(ticket.id, status, staff.username, note=note)
        if status in NOTIFIED_STATUSES:
            self._notify_status(updated, status)
        if status in SATISFACTION_STATUSES:
            self._ask_satisfaction(updated)
        if status == "closed":
            events.emit("ticket_closed", ticket=updated)
            if updated.kind == HANDOFF:
                self._resume(updated)
        return updated

    def close(self, staff: Staff, reference: str, note: str | None = None) -> Ticket:
        return self.set_status(staff, reference, "closed", note=note)

    # --- public comments ---------------------------------------------------------------------------
    def _visible_comments(self, staff: Staff):
        query = select(PublicComment)
        if not staff.is_cm:
            query = query.join(Ticket, PublicComment.ticket_id == Ticket.id).where(Ticket.queue == staff.service)
        return query

    @staticmethod
    def _staff_touched():
        """Someone of the town replied to this very comment (publicly or privately) or marked it seen."""
        return exists().where(Message.conversation_id == PublicComment.conversation_id, Message.author == "staff")

    def comments(self, staff: Staff, needs_staff: bool = False, limit: int = 100) -> list[PublicComment]:
        """Newest first. ``needs_staff``: those the bot left to staff (``NEEDS_STAFF``) that nobody of
        the town has answered (or marked seen) yet."""
        query = self._visible_comments(staff).order_by(PublicComment.created_at.desc(), PublicComment.id.desc())
        if needs_staff:
            query = query.where(PublicComment.treatment.in_(NEEDS_STAFF), ~self._staff_touched())
        with self.store.session() as session:
            return list(session.execute(query.limit(max(1, min(int(limit), 1000)))).scalars())

    def comments_to_see(self, staff: Staff) -> int:
        query = self._visible_comments(staff).where(PublicComment.treatment.in_(NEEDS_STAFF), ~self._staff_touched())
        with self.store.session() as session:
            return session.execute(select(func.count()).select_from(query.subquery())).scalar_one()

    def has_comments(self, staff: Staff) -> bool:
        with self.store.session() as session:
            return session.execute(self._visible_comments(staff).limit(1)).first() is not None

    def comment(self, staff: Staff, comment_row_id) -> PublicComment:
        try:
            row_id = int(str(comment_row_id).strip())
        except ValueError:
            row_id = None
        row = Comments(self.store).get(row_id) if row_id is not None and 0 < row_id < 2**31 else None
        if row is not None and not staff.is_cm:
            ticket = self.store.get(row.ticket_id) if row.ticket_id else None
            if ticket is None or ticket.queue != staff.service:
                row = None
        if row is None:
            raise NotFound(f"Commentaire introuvable : {_shown(comment_row_id)}")
        return row

    def comment_views(self, rows: list[PublicComment]) -> list[CommentView]:
        """The rows with their tickets and the town's replies (a few queries for the whole list)."""
        if not rows:
            return []
        conversations = {row.conversation_id for row in rows}
        ticket_ids = {row.ticket_id for row in rows if row.ticket_id}
        with self.store.session() as session:
            tickets = {t.id: t for t in session.execute(select(Ticket).where(Ticket.id.in_(ticket_ids))).scalars()}
            sent = list(session.execute(select(Outbox).where(Outbox.conversation_id.in_(conversations))
                                        .order_by(Outbox.id)).scalars())
            touched = set(session.execute(select(Message.conversation_id).distinct().where(
                Message.conversation_id.in_(conversations), Message.author == "staff")).scalars())
        views = []
        for row in rows:
            mine = [item for item in sent if item.conversation_id == row.conversation_id]
            views.append(CommentView(row, tickets.get(row.ticket_id),
                                     [item for item in mine if item.surface == "public"],
                                     [item for item in mine if item.surface != "public"],
                                     row.conversation_id in touched))
        return views

    def ticket_comments(self, staff: Staff, reference: str) -> list[CommentView]:
        ticket = self.ticket(staff, reference)
        return self.comment_views(Comments(self.store).for_ticket(ticket.id))

    def undelivered(self, staff: Staff, reference: str) -> list[Outbox]:
        """The ticket's messages that did not reach the citizen (given up, or failing for now)."""
        ticket = self.ticket(staff, reference)
        return relay.undelivered(self.store, ticket.id)

    def public_reply_problems(self, text: str, ticket: Ticket | None = None) -> list[str]:
        """What makes a text unfit to be published: personal data (French, for the refusal)."""
        problems = []
        if parse_reference(text):
            problems.append("une référence de ticket")
        public_mails = self._published_emails()
        if any(_fold_mail(m) not in public_mails for m in _EMAIL.findall(text)):
            problems.append("une adresse e-mail")
        public_phones = self._published_phones()
        if any(_phone_key(m) not in public_phones for m in _PHONE.findall(text)):
            problems.append("un numéro de téléphone")
        name = (ticket.citizen_name or "").strip() if ticket is not None else ""
        if len(name) >= 3 and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE):
            problems.append("le nom du citoyen")
        return problems

    def _published_phones(self) -> set[str]:
        """The numbers the town publishes (its own, the bodies', those in the FAQ answers): allowed."""
        texts = [self.profile.town.phone, *(b.phone or "" for b in self.profile.external_bodies.values()),
                 *(topic.answer for topic in self.profile.faq.values())]
        return {_phone_key(match) for text in texts for match in _PHONE.findall(text or "")}

    def _published_emails(self) -> set[str]:
        return {_fold_mail(match) for topic in self.profile.faq.values() for match in _EMAIL.findall(topic.answer)}

    def reply_to_comment(self, staff: Staff, comment_row_id, text: str, public: bool) -> Outbox:
        """Answer a comment under it (``public``) or in the commenter's inbox; signed like ``reply``."""
        text = clean_citizen_text(text, limit=10_000)
        if not text:
            raise DeskError("Le message est vide.")
        if len(text) > MAX_REPLY:
            raise DeskError("Message trop long (3 000 caractères au maximum).")
        row = self.comment(staff, comment_row_id)
        ticket = self.store.get(row.ticket_id) if row.ticket_id else None
        signed = f"{text}\n— {staff.signature(self.profile)}"
        channel = channel_for(row.platform)
        if public:
            if not staff.is_cm and (row.treatment in CM_ONLY_PUBLIC or (ticket is not None and ticket.kind == "complaint")):
                raise DeskError("Ce commentaire relève d'un conflit ou d'une détresse : en public, c'est le community "
                                "manager qui répond (il fait tampon). Répondez en privé, ou passez le relais au CM.")
            problems = self.public_reply_problems(text, ticket)
            if problems:
                found = problems[0] if len(problems) == 1 else ", ".join(problems[:-1]) + " et " + problems[-1]
                raise DeskError(f"Réponse publique refusée : elle contient {found}. Tout le monde la lit : aucune "
                                "donnée personnelle en public (les numéros de la mairie sont permis). Retirez-la, "
                                "ou envoyez ce message en privé.")
            limit = PUBLIC_REPLY_LIMITS.get(row.platform, MAX_REPLY)
            if len(signed) > limit:
                raise DeskError(f"Réponse publique trop longue pour {PLATFORM_LABELS.get(row.platform, row.platform)} : "
                                f"{_thousands(limit)} caractères au plus, signature comprise (ici {_thousands(len(signed))}).")
        self.store.add_message(row.conversation_id, channel, "staff", PUBLIC_PREFIX + signed if public else signed,
                               ticket_id=ticket.id if ticket else None, author_name=staff.display_name)
        if ticket is not None:
            self._mark_first_response(ticket.id)
        item = relay.send_to_citizen(self.store, row.conversation_id, channel, signed,
                                     ticket.id if ticket else None, surface="public" if public else None)
        if public:
            Comments(self.store).mark_staff_answered(row.thread_id)  # the bot adds nothing more to this thread
        return item

    def mark_comment_seen(self, staff: Staff, comment_row_id, note: str | None = None) -> Message:
        """Nothing to answer (an insult the CM leaves be): a private note on the comment, never sent;
        it leaves the "à voir" list. Nothing is hidden or deleted on the platform."""
        note = clean_citizen_text(note or "", limit=10_000)
        if len(note) > 2000:
            raise DeskError("Note trop longue (2 000 caractères au maximum).")
        row = self.comment(staff, comment_row_id)
        text = f"Commentaire vu, sans réponse : {note}" if note else "Commentaire vu, sans réponse."
        return self.store.add_message(row.conversation_id, channel_for(row.platform), "staff", text,
                                      ticket_id=row.ticket_id, author_name=staff.display_name, private=True)

    # --- helpers -----------------------------------------------------------------------------------
    def _ask_satisfaction(self, ticket: Ticket) -> None:
        """Once per ticket; never breaks the status change (the question is only a question)."""
        try:
            satisfaction.ask(self.store, self.replies, ticket)
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not ask the satisfaction question of %s: %s", ticket.reference, type(exc).__name__)

    def _notify_status(self, ticket: Ticket, status: str) -> None:
        service = self.profile.services.get(ticket.queue)
        context = {"ref": ticket.reference, "service": service.name if service else self.profile.cm_team}
        if status == "scheduled" and ticket.scheduled_for:
            context["date"] = self.hours.local(ticket.scheduled_for).strftime("%d/%m/%Y")
        if status == "duplicate" and ticket.duplicate_of_id:
            context["original"] = self.store.get(ticket.duplicate_of_id).reference
        text = self.replies.render(f"staff_notice.{status}", **context)
        self._mark_first_response(ticket.id)
        relay.send_to_citizen(self.store, ticket.conversation_id, ticket.channel, text, ticket.id)
        # « Déjà signalé »: every follower hears it too, on their own channel.
        for follower in Followers(self.store).of_ticket(ticket.id):
            relay.send_to_citizen(self.store, follower.conversation_id, follower.channel, text, ticket.id)
        if status == "duplicate" and ticket.duplicate_of_id:  # a merge: the citizens follow the original now
            Followers(self.store).move(ticket, self.store.get(ticket.duplicate_of_id))

    def followers(self, staff: Staff, reference: str) -> list:
        """The citizens following this ticket (« déjà signalé »), oldest first."""
        return Followers(self.store).of_ticket(self.ticket(staff, reference).id)

    def split_follower(self, staff: Staff, reference: str, follower_id: int) -> Ticket:
        """A follower's report was another problem after all: a ticket of its own, same service."""
        ticket = self.ticket(staff, reference)
        follower = next((f for f in Followers(self.store).of_ticket(ticket.id) if f.id == follower_id), None)
        if follower is None:
            raise DeskError("Ce citoyen ne suit pas (ou plus) ce ticket.")
        words = [m.text.removeprefix("[déjà signalé] ") for m in self.store.transcript(ticket.id)
                 if m.conversation_id == follower.conversation_id and m.author == "citizen"]
        new, _ = self.store.create(NewTicket(kind=ticket.kind, queue=ticket.queue, conversation_id=follower.conversation_id,
                                             channel=follower.channel, summary=(words[-1] if words else ticket.summary)[:2000],
                                             location=words[-1][:300] if words else ticket.location,
                                             citizen_name=follower.citizen_name))
        Followers(self.store).leave(follower.id)
        self.store.set_status(new.id, "new", staff.username, note=f"séparé de {ticket.reference} par {staff.username}")
        relay.send_to_citizen(self.store, follower.conversation_id, follower.channel, self.replies.render(
            "staff_notice.split", ref=new.reference, original=ticket.reference,
            service=self.profile.service(ticket.queue).name if ticket.queue in self.profile.services else self.profile.cm_team),
            new.id)
        return self.store.get(new.id)

    def _resume(self, ticket: Ticket) -> None:
        if self.store.open_handoff(ticket.conversation_id) is not None:
            return
        try:
            self.resume_conversation(ticket.conversation_id)
        except Exception as exc:  # noqa: BLE001
            raise DeskError("Ticket mis à jour, mais la conversation n'a pas pu être rendue au bot "
                            f"(serveur Rasa injoignable : {type(exc).__name__}). Réessayez la clôture.") from exc


def _thousands(number: int) -> str:
    return f"{number:,}".replace(",", " ")


def _phone_key(number: str) -> str:
    """A phone number as its last nine digits: "+33 2 41 00 10 00" and "02.41.00.10.00" match."""
    return "".join(ch for ch in number if ch.isdigit())[-9:]


def _fold_mail(address: str) -> str:
    return "".join(address.split()).lower()
