"""The staff desk: what the CM and the service heads can do with tickets.

Every operation takes the acting ``Staff`` and checks it may: the CM sees every ticket, a service
head only the tickets of their own service (anything else is "not found", revealing nothing).
Citizens hear back through the relay; every status change goes into the audit trail.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import func, select, update

from bot import events, relay, satisfaction
from bot.accounts import Staff
from bot.hours import StaffHours
from bot.models import CLOSED_STATUSES, STATUSES, Message, StaffUser, StatusChange, Ticket, to_naive_utc, utcnow
from bot.profile import Profile
from bot.replies import Replies
from bot.routing import CM_QUEUE
from bot.settings import PROJECT_ROOT
from bot.textnorm import clean_citizen_text
from bot.tickets import HANDOFF, TicketStore

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

    @property
    def waiting_label(self) -> str:
        minutes = int(self.waiting.total_seconds() // 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d}" if hours else f"{minutes} min"


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
        query = self._visible_query(staff)
        if staff.is_cm:
            query = query.where(Ticket.queue == CM_QUEUE)
        if not include_closed:
            query = query.where(Ticket.status.notin_(CLOSED_STATUSES))
        query = query.order_by(Ticket.urgent.desc(), Ticket.created_at, Ticket.id)
        with self.store.session() as session:
            tickets = list(session.execute(query).scalars())
            ids = [t.id for t in tickets]
            messages = self._first_and_latest_citizen_messages(session, ids)
            sent_back = self._sent_back(session, [t.id for t in tickets if t.status == "not_ours"])
            holders = self._holder_names(session, {t.assigned_to for t in tickets if t.assigned_to})
        return [QueueItem(t, self.hours.staff_time_between(t.created_at.replace(tzinfo=dt.timezone.utc), now),
                          self.reason(t), *messages.get(t.id, (None, None)),
                          holders.get(t.assigned_to) if t.assigned_to else None, sent_back.get(t.id))
                for t in tickets]

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

    def _resume(self, ticket: Ticket) -> None:
        if self.store.open_handoff(ticket.conversation_id) is not None:
            return
        try:
            self.resume_conversation(ticket.conversation_id)
        except Exception as exc:  # noqa: BLE001
            raise DeskError("Ticket mis à jour, mais la conversation n'a pas pu être rendue au bot "
                            f"(serveur Rasa injoignable : {type(exc).__name__}). Réessayez la clôture.") from exc
