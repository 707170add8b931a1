"""Who a Messenger or Instagram conversation is with, and whether Meta still lets the page write.

Meta's messaging window: a page may answer freely for 24 hours after the person's last message
(``messaging_type`` RESPONSE); after that, a person of the town may still answer for 7 days with
the ``HUMAN_AGENT`` tag, if the app has that permission; beyond, nothing can be sent until the
person writes again. A public comment gives one private reply (within 7 days of the comment),
and the conversation goes on in the inbox only once the person answers it.

Conversation ids: ``messenger-<PSID>``, ``instagram-<IGSID>``; a conversation begun by a comment
keeps its comment's id (``fbcomment-…``), and the person's inbox messages join it for 7 days after
the private reply (so the place asked for there completes that report).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select

from bot.comments import platform_of_conversation
from bot.models import MetaContact, PublicComment, utcnow
from bot.tickets import TicketStore

WINDOW = dt.timedelta(hours=24)
HUMAN_AGENT_WINDOW = dt.timedelta(days=7)
PRIVATE_REPLY_WINDOW = dt.timedelta(days=7)
PLATFORM_OF_COMMENTS = {"facebook": "messenger", "instagram": "instagram"}

BEYOND_SEVEN_DAYS = ("Le citoyen n'a pas écrit à la page depuis plus de 7 jours : Meta ne permet plus de lui "
                     "écrire sur ce canal. Le message n'a pas été envoyé ; il faut attendre qu'il réécrive, "
                     "ou le joindre autrement.")
NO_HUMAN_AGENT = ("Plus de 24 h depuis le dernier message du citoyen, et l'application n'a pas la permission "
                  "« Human Agent » de Meta : le message n'a pas été envoyé (README, « Facebook et Instagram »).")
NO_ANSWER_TO_PRIVATE_REPLY = ("Le citoyen n'a pas répondu au message privé envoyé sous son commentaire : Meta ne "
                              "permet pas de lui écrire davantage en privé. Répondez-lui en public (sans données "
                              "personnelles) ou attendez qu'il écrive à la page.")
COMMENT_TOO_OLD = ("Le commentaire date de plus de 7 jours : Meta ne permet plus d'y répondre en privé. "
                   "Répondez-lui en public (sans données personnelles).")


def conversation_for(platform: str, user_id: str) -> str:
    return f"{platform}-{user_id}"


@dataclass(frozen=True)
class Route:
    """How to reach the person now: a Send API message, or the comment's one private reply."""
    platform: str
    recipient_id: str | None = None
    comment_id: str | None = None  # a private reply
    messaging_type: str = "RESPONSE"
    tag: str | None = None


class Unreachable(Exception):
    """The message cannot be sent; the text (French) says why, for the staff."""


class Contacts:
    def __init__(self, store: TicketStore):
        self.store = store

    def inbound(self, platform: str, user_id: str, at: dt.datetime | None) -> str:
        """A person wrote to the page: note when, and return the conversation their message joins."""
        at = at or utcnow()
        with self.store.session() as session:
            begun_by_comment = session.execute(
                select(MetaContact).where(MetaContact.platform == platform, MetaContact.user_id == user_id,
                                          MetaContact.comment_id.is_not(None),
                                          MetaContact.private_reply_at >= at - PRIVATE_REPLY_WINDOW)
                .order_by(MetaContact.private_reply_at.desc()).limit(1)).scalar_one_or_none()
            conversation = begun_by_comment.conversation_id if begun_by_comment else conversation_for(platform, user_id)
            row = session.get(MetaContact, conversation)
            if row is None:
                row = MetaContact(conversation_id=conversation, platform=platform, user_id=user_id)
                session.add(row)
            row.last_inbound_at = max(row.last_inbound_at or at, at)
            session.commit()
            return conversation

    def private_reply_sent(self, conversation: str, platform: str, comment_id: str, user_id: str | None) -> None:
        """The comment's private reply went; Meta's answer named the person (``user_id``) or not."""
        with self.store.session() as session:
            row = session.get(MetaContact, conversation)
            if row is None:
                row = MetaContact(conversation_id=conversation, platform=platform, comment_id=comment_id)
                session.add(row)
            row.user_id = user_id or row.user_id
            row.private_reply_at = row.private_reply_at or utcnow()
            session.commit()

    def get(self, conversation: str) -> MetaContact | None:
        with self.store.session() as session:
            return session.get(MetaContact, conversation)

    def last_inbound(self, platform: str, user_id: str) -> dt.datetime | None:
        """The window is the person's, whichever conversation they last wrote in."""
        with self.store.session() as session:
            return session.execute(select(func.max(MetaContact.last_inbound_at)).where(
                MetaContact.platform == platform, MetaContact.user_id == user_id)).scalar_one()

    def route(self, conversation: str, *, human_agent: bool, now: dt.datetime | None = None) -> Route:
        """How a private message to this conversation can go now, or ``Unreachable`` with the reason."""
        now = now or utcnow()
        contact = self.get(conversation)
        comment_platform = platform_of_conversation(conversation)
        last = self.last_inbound(contact.platform, contact.user_id) if contact and contact.user_id else None
        if last is None:
            if comment_platform is None:
                raise Unreachable("Conversation inconnue sur Messenger/Instagram : le message n'a pas été envoyé.")
            return self._private_reply_route(conversation, comment_platform, contact, now)
        if now - last <= WINDOW:
            return Route(contact.platform, recipient_id=contact.user_id)
        if now - last <= HUMAN_AGENT_WINDOW:
            if not human_agent:
                raise Unreachable(NO_HUMAN_AGENT)
            return Route(contact.platform, recipient_id=contact.user_id, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
        raise Unreachable(BEYOND_SEVEN_DAYS)

    def _private_reply_route(self, conversation: str, platform: str, contact: MetaContact | None,
                             now: dt.datetime) -> Route:
        if contact is not None and contact.private_reply_at is not None:
            raise Unreachable(NO_ANSWER_TO_PRIVATE_REPLY)
        with self.store.session() as session:
            comment = session.execute(select(PublicComment).where(PublicComment.conversation_id == conversation)
                                      .limit(1)).scalar_one_or_none()
        if comment is None:
            raise Unreachable("Commentaire introuvable : le message n'a pas été envoyé.")
        if now - comment.created_at > PRIVATE_REPLY_WINDOW:
            raise Unreachable(COMMENT_TOO_OLD)
        return Route(PLATFORM_OF_COMMENTS[platform], comment_id=comment.comment_id)
