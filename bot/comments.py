"""Public comments under the town's posts (Facebook page feed, Instagram comments).

A record of every comment and of what was done with it: the assistant's reading (outcome), the
public treatment (``TREATMENTS``), the ticket it led to, the bot's or the staff's public reply.
Nothing is ever hidden or deleted on the platform; this table is how staff see the threads.

Each comment is its own conversation for the assistant (``fbcomment-<comment id>`` or
``igcomment-<comment id>``), on the channel ``facebook_comment`` or ``instagram_comment``: a
ticket made from a comment carries that conversation, and the Meta gateway delivers what staff
send to it (privately: through the commenter's inbox; publicly: as a reply under the comment).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bot.models import PublicComment, utcnow
from bot.tickets import TicketStore

PLATFORMS = {"facebook": ("fbcomment-", "facebook_comment"), "instagram": ("igcomment-", "instagram_comment")}
COMMENT_CHANNELS = frozenset(channel for _, channel in PLATFORMS.values())

# What the bot did with a comment, as staff read it.
TREATMENTS = {
    "pending": "En cours de traitement",
    "answered": "Réponse publique (question)",
    "acknowledged": "Accusé public + message privé",
    "thanked": "Remerciement public",
    "declined": "Rappel de la charte (pas de politique)",
    "private_only": "Message privé seulement",
    "to_cm": "Transmis au CM — rien de public",
    "distress": "Détresse — ligne publique vers l'aide, CM prévenu",
    "limited": "Pas de réponse publique (limite de la publication) — à voir",
    "staff_thread": "Un agent a déjà répondu dans ce fil",
    "not_answered": "Pas de réponse du bot — à voir",
}
NEEDS_STAFF = frozenset({"to_cm", "distress", "limited", "not_answered"})


def conversation_for(platform: str, comment_id: str) -> str:
    return f"{PLATFORMS[platform][0]}{comment_id}"


def channel_for(platform: str) -> str:
    return PLATFORMS[platform][1]


def platform_of_conversation(conversation_id: str) -> str | None:
    for platform, (prefix, _) in PLATFORMS.items():
        if conversation_id.startswith(prefix):
            return platform
    return None


@dataclass(frozen=True)
class NewComment:
    platform: str
    comment_id: str
    post_id: str
    thread_id: str
    text: str
    author_id: str | None = None
    author_name: str | None = None
    permalink: str | None = None
    created_at: dt.datetime | None = None


class Comments:
    def __init__(self, store: TicketStore):
        self.store = store

    def record(self, new: NewComment) -> tuple[PublicComment, bool]:
        """Store a comment once: (the row, True) the first time, (the existing row, False) after."""
        with self.store.session() as session:
            row = PublicComment(platform=new.platform, comment_id=new.comment_id, post_id=new.post_id,
                                thread_id=new.thread_id, text=new.text, author_id=new.author_id,
                                author_name=new.author_name, permalink=new.permalink,
                                conversation_id=conversation_for(new.platform, new.comment_id),
                                created_at=new.created_at or utcnow(), treatment="pending")
            session.add(row)
            try:
                session.commit()
                return row, True
            except IntegrityError:
                session.rollback()
        return self.by_comment_id(new.comment_id), False

    def by_comment_id(self, comment_id: str) -> PublicComment | None:
        with self.store.session() as session:
            return session.execute(select(PublicComment).where(PublicComment.comment_id == comment_id)).scalar_one_or_none()

    def get(self, row_id: int) -> PublicComment | None:
        with self.store.session() as session:
            return session.get(PublicComment, row_id)

    def by_conversation(self, conversation_id: str) -> PublicComment | None:
        with self.store.session() as session:
            return session.execute(select(PublicComment).where(PublicComment.conversation_id == conversation_id)
                                   .order_by(PublicComment.id.desc()).limit(1)).scalar_one_or_none()

    def for_ticket(self, ticket_id: int) -> list[PublicComment]:
        with self.store.session() as session:
            return list(session.execute(select(PublicComment).where(PublicComment.ticket_id == ticket_id)
                                        .order_by(PublicComment.id)).scalars())

    def recent(self, limit: int = 100, needs_staff: bool = False) -> list[PublicComment]:
        with self.store.session() as session:
            query = select(PublicComment).order_by(PublicComment.id.desc()).limit(limit)
            if needs_staff:
                query = query.where(PublicComment.treatment.in_(NEEDS_STAFF))
            return list(session.execute(query).scalars())

    def thread(self, thread_id: str) -> list[PublicComment]:
        with self.store.session() as session:
            return list(session.execute(select(PublicComment).where(PublicComment.thread_id == thread_id)
                                        .order_by(PublicComment.id)).scalars())

    def staff_answered(self, thread_id: str) -> bool:
        with self.store.session() as session:
            return session.execute(select(func.count()).select_from(PublicComment).where(
                PublicComment.thread_id == thread_id, PublicComment.staff_answered_at.is_not(None))).scalar_one() > 0

    def mark_staff_answered(self, thread_id: str) -> None:
        """Someone of the town answered in this thread: the bot adds nothing more to it."""
        with self.store.session() as session:
            session.execute(update(PublicComment).where(PublicComment.thread_id == thread_id,
                                                        PublicComment.staff_answered_at.is_(None))
                            .values(staff_answered_at=utcnow()).execution_options(synchronize_session=False))
            session.commit()

    def bot_public_replies_since(self, post_id: str, since: dt.datetime) -> int:
        with self.store.session() as session:
            return session.execute(select(func.count()).select_from(PublicComment).where(
                PublicComment.post_id == post_id, PublicComment.public_reply_id.is_not(None),
                PublicComment.handled_at >= since)).scalar_one()

    def set_outcome(self, row_id: int, *, outcome: str | None, treatment: str, ticket_id: int | None = None) -> None:
        with self.store.session() as session:
            row = session.get(PublicComment, row_id)
            row.outcome = outcome
            row.treatment = treatment
            row.ticket_id = ticket_id if ticket_id is not None else row.ticket_id
            row.handled_at = utcnow()
            session.commit()

    def set_public_reply(self, row_id: int, text: str, reply_id: str | None) -> None:
        with self.store.session() as session:
            row = session.get(PublicComment, row_id)
            row.public_reply = text
            row.public_reply_id = reply_id
            session.commit()

    def set_private_reply(self, row_id: int) -> None:
        with self.store.session() as session:
            row = session.get(PublicComment, row_id)
            row.private_reply_at = row.private_reply_at or utcnow()
            session.commit()
