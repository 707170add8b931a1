"""Conversations that our own tools (``guichet eval``, ``guichet bench``, the soak) once wrote into
the town's database by mistake, found and removed (``guichet db remove-tool-data``).

Before the fix of ``TranscriptBroker.from_endpoint_config`` (it read the url from the wrong place),
the in-process evaluation and the bench profile recorded their transcripts in the town's database:
``/stats`` then counted them as citizens. They are recognised by what only those tools write: the
channel ``eval`` and the sender prefixes ``eval-``, ``bench-`` and ``soak-`` (a citizen's
conversation id is a channel's id: a Telegram chat number, a REST/website visitor id we issue, never
one of those prefixes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func, inspect, or_, select, table, column

from bot.models import Message, Outbox, StatusChange, Ticket
from bot.tickets import TicketStore

TOOL_CHANNELS = ("eval",)
TOOL_PREFIXES = ("eval-", "bench-", "soak-")


@dataclass
class ToolDataReport:
    dry_run: bool
    conversations: int = 0
    messages: int = 0
    tickets: int = 0
    status_changes: int = 0
    outbox: int = 0
    tracker_events: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.messages + self.tickets + self.status_changes + self.outbox + self.tracker_events

    def lines(self) -> list[str]:
        verb = "à supprimer" if self.dry_run else "supprimé(e)s"
        lines = [
            f"Conversations d'outils (eval, bench, soak) trouvées : {self.conversations}",
            f"Messages {verb} : {self.messages}",
            f"Tickets {verb} : {self.tickets} (et {self.status_changes} changement(s) de statut)",
            f"Messages en attente d'envoi {verb} : {self.outbox}",
            f"Événements Rasa {verb} : {self.tracker_events}",
        ]
        if self.examples:
            lines.append("Exemples : " + ", ".join(self.examples))
        if self.dry_run:
            lines.append("Simulation : rien n'a été modifié. Relancez sans --dry-run, avec --yes, pour supprimer."
                         if self.total else "Rien à supprimer.")
        return lines


def _is_tool_conversation(conversation_column, channel_column=None):
    conditions = [conversation_column.like(prefix + "%") for prefix in TOOL_PREFIXES]
    if channel_column is not None:
        conditions.append(channel_column.in_(TOOL_CHANNELS))
    return or_(*conditions)


def remove_tool_data(store: TicketStore, dry_run: bool = True) -> ToolDataReport:
    """Count (dry run) or delete, in one transaction, everything our tools wrote in this database."""
    report = ToolDataReport(dry_run=dry_run)
    with store.session() as session:
        conversations = set(session.scalars(
            select(Message.conversation_id).where(_is_tool_conversation(Message.conversation_id, Message.channel))
            .distinct()))
        conversations |= set(session.scalars(
            select(Ticket.conversation_id).where(_is_tool_conversation(Ticket.conversation_id, Ticket.channel))
            .distinct()))
        has_events = inspect(session.connection()).has_table("events")
        events = table("events", column("sender_id"))
        if has_events:
            conversations |= set(session.scalars(
                select(events.c.sender_id).where(_is_tool_conversation(events.c.sender_id)).distinct()))
        report.conversations = len(conversations)
        report.examples = sorted(conversations)[:3]
        ids = sorted(conversations)
        for start in range(0, len(ids), 500):  # bounded IN lists (SQLite's parameter limit)
            chunk = ids[start:start + 500]
            ticket_ids = list(session.scalars(select(Ticket.id).where(Ticket.conversation_id.in_(chunk))))
            report.tickets += len(ticket_ids)
            report.messages += session.scalar(
                select(func.count()).select_from(Message).where(Message.conversation_id.in_(chunk))) or 0
            report.outbox += session.scalar(
                select(func.count()).select_from(Outbox).where(Outbox.conversation_id.in_(chunk))) or 0
            if ticket_ids:
                report.status_changes += session.scalar(
                    select(func.count()).select_from(StatusChange).where(StatusChange.ticket_id.in_(ticket_ids))) or 0
            if has_events:
                report.tracker_events += session.scalar(
                    select(func.count()).select_from(events).where(events.c.sender_id.in_(chunk))) or 0
            if dry_run:
                continue
            session.execute(delete(Message).where(Message.conversation_id.in_(chunk)))
            session.execute(delete(Outbox).where(Outbox.conversation_id.in_(chunk)))
            if ticket_ids:
                session.execute(delete(StatusChange).where(StatusChange.ticket_id.in_(ticket_ids)))
                session.execute(Ticket.__table__.update().where(Ticket.duplicate_of_id.in_(ticket_ids))
                                .values(duplicate_of_id=None))
                session.execute(delete(Ticket).where(Ticket.id.in_(ticket_ids)))
            if has_events:
                session.execute(delete(events).where(events.c.sender_id.in_(chunk)))
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return report
