"""Ticket table, its transcript and its audit trail (SQLAlchemy, 2.0-style usage)."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Column, Date, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import text as sql_text  # "text" is also a column name below
from sqlalchemy.orm import declarative_base, relationship

Base = declarative_base()

KINDS = ("report", "request", "complaint", "handoff")
STATUSES = ("new", "acknowledged", "in_progress", "scheduled", "resolved", "not_ours", "duplicate", "closed")
CLOSED_STATUSES = ("resolved", "duplicate", "closed")
AUTHORS = ("citizen", "bot", "staff", "system")
REDACTED = "[effacé]"  # what bot.privacy leaves of an anonymised text (its MARKER)
# Predicates of the partial indexes, written as the queries write them (PostgreSQL uses a partial
# index only when the query's conditions are these).
OPEN_TICKET = "status NOT IN (" + ", ".join(f"'{status}'" for status in CLOSED_STATUSES) + ")"
NOT_ANONYMISED = "anonymised_at IS NULL"
UNLINKED_NOT_REDACTED = f"ticket_id IS NULL AND text <> '{REDACTED}'"


def utcnow() -> dt.datetime:
    """Naive UTC: what every timestamp column stores."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def to_naive_utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


class Ticket(Base):
    __tablename__ = "ticket"

    id = Column(Integer, primary_key=True)
    reference = Column(String(20), unique=True, index=True)
    kind = Column(String(16), nullable=False)
    queue = Column(String(32), nullable=False, index=True)  # a service slug, or "cm"
    status = Column(String(16), nullable=False, default="new", index=True)
    urgent = Column(Boolean, nullable=False, default=False)
    handoff_reason = Column(String(32))
    conversation_id = Column(String(255), nullable=False, index=True)
    channel = Column(String(32), nullable=False)
    citizen_name = Column(String(200))
    location = Column(Text)
    summary = Column(Text, nullable=False)
    source_message_id = Column(String(255), unique=True)  # idempotency: one ticket per citizen message
    created_at = Column(DateTime, nullable=False, default=utcnow)
    updated_at = Column(DateTime, nullable=False, default=utcnow, onupdate=utcnow)
    first_response_at = Column(DateTime)
    resolved_at = Column(DateTime)
    closed_at = Column(DateTime)
    assigned_to = Column(String(64))  # staff username holding the ticket
    assigned_at = Column(DateTime)
    scheduled_for = Column(DateTime)  # status "scheduled": the planned intervention
    duplicate_of_id = Column(Integer, ForeignKey("ticket.id", ondelete="SET NULL"))
    cm_announced_at = Column(DateTime)  # posted to the CM's Telegram group (so none is missed or posted twice)
    anonymised_at = Column(DateTime)  # bot.privacy: the citizen's identifiers and texts removed
    satisfaction_asked_at = Column(DateTime)  # bot.satisfaction: asked once, after resolved / closed
    satisfaction = Column(String(8))  # "yes" or "no"
    satisfaction_comment = Column(Text)
    satisfaction_at = Column(DateTime)
    # Where, as understood (bot.places): the citizen's words stay in ``location``.
    place_label = Column(String(300))  # "12 Rue des Tilleuls", "École Paul-Bert", "près du 14 rue Pasteur"
    place_kind = Column(String(16))  # address | street | place | corner | pin
    place_confidence = Column(Float)
    lat = Column(Float)
    lon = Column(Float)
    open311_token = Column(String(64), unique=True)  # GeoReport v2 ``token`` of a request posted there

    messages = relationship("Message", back_populates="ticket", order_by="Message.id")
    status_changes = relationship("StatusChange", back_populates="ticket", order_by="StatusChange.id")

    # For a large year (bot.data_bench; migration 0011). Partial indexes hold only what is still to
    # do, so their size, and the queries that use them, stay flat as the closed tickets pile up.
    __table_args__ = (
        Index("ix_ticket_open", "queue", "created_at", postgresql_where=sql_text(OPEN_TICKET), sqlite_where=sql_text(OPEN_TICKET)),
        Index("ix_ticket_created_at", "created_at"),
        Index("ix_ticket_satisfaction_at", "satisfaction_at"),
        Index("ix_ticket_closed_not_anonymised", "closed_at", postgresql_where=sql_text(NOT_ANONYMISED),
              sqlite_where=sql_text(NOT_ANONYMISED)),
    )

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_STATUSES


class Message(Base):
    __tablename__ = "message"

    id = Column(Integer, primary_key=True)
    ticket_id = Column(Integer, ForeignKey("ticket.id", ondelete="SET NULL"), index=True)
    conversation_id = Column(String(255), nullable=False)
    channel = Column(String(32), nullable=False)
    author = Column(String(16), nullable=False)  # citizen, bot, staff, system
    author_name = Column(String(200))
    text = Column(Text, nullable=False)
    external_id = Column(String(255))  # the channel's or Rasa's message id
    private = Column(Boolean, nullable=False, default=False)  # staff notes: never sent
    created_at = Column(DateTime, nullable=False, default=utcnow)

    ticket = relationship("Ticket", back_populates="messages")

    __table_args__ = (
        Index("ix_message_conversation", "conversation_id", "id"),
        # bot.stats: one period's lines of one author, and their conversations (index-only).
        Index("ix_message_author_created", "author", "created_at", "conversation_id"),
        # bot.privacy purge: lines of no ticket still to anonymise.
        Index("ix_message_unlinked_created", "created_at", postgresql_where=sql_text(UNLINKED_NOT_REDACTED),
              sqlite_where=sql_text(UNLINKED_NOT_REDACTED)),
    )


class StatusChange(Base):
    __tablename__ = "status_change"

    id = Column(Integer, primary_key=True)
    ticket_id = Column(Integer, ForeignKey("ticket.id", ondelete="CASCADE"), nullable=False, index=True)
    old_status = Column(String(16))
    new_status = Column(String(16), nullable=False)
    actor = Column(String(200), nullable=False)
    note = Column(Text)
    created_at = Column(DateTime, nullable=False, default=utcnow)

    ticket = relationship("Ticket", back_populates="status_changes")


class StaffUser(Base):
    """A staff account: the community manager ("cm") or the head of one service ("head")."""

    __tablename__ = "staff_user"

    id = Column(Integer, primary_key=True)
    username = Column(String(64), unique=True, nullable=False)
    display_name = Column(String(200), nullable=False)
    password_hash = Column(String(255), nullable=False)  # argon2id
    role = Column(String(8), nullable=False)  # "cm" or "head"
    service = Column(String(32))  # the head's service slug
    active = Column(Boolean, nullable=False, default=True)
    failed_logins = Column(Integer, nullable=False, default=0)
    locked_until = Column(DateTime)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    last_login_at = Column(DateTime)
    session_epoch = Column(Integer, nullable=False, default=0, server_default="0")  # bumped: sessions end


class Outbox(Base):
    """Messages for a citizen (staff replies, status news) waiting for their channel to deliver them."""

    __tablename__ = "outbox"

    id = Column(Integer, primary_key=True)
    ticket_id = Column(Integer, ForeignKey("ticket.id", ondelete="SET NULL"), index=True)
    conversation_id = Column(String(255), nullable=False, index=True)
    channel = Column(String(32), nullable=False)
    text = Column(Text, nullable=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    delivered_at = Column(DateTime, index=True)
    attempts = Column(Integer, nullable=False, default=0)
    last_error = Column(Text)
    buttons = Column(Text)  # JSON list of {"title", "payload"}: shown where the channel has buttons
    surface = Column(String(16))  # None: a private message; "public": a public reply under a comment
    failed_at = Column(DateTime)  # given up: the channel can no longer reach the citizen (last_error says why)
    claimed_until = Column(DateTime)  # being sent by one gateway process until then (``relay.claim``)


class Notice(Base):
    """A town notice written by the CM ("piscine fermée pour vidange jusqu'au 15"): added to the
    answers of a FAQ topic, to a service's ticket receipts, or town-wide to greetings, from
    ``starts_on`` to ``ends_on`` included (local dates). ``closes_town_hall``: the staff are away on
    those days, so "when a person will read it" skips them."""

    __tablename__ = "notice"

    id = Column(Integer, primary_key=True)
    text = Column(Text, nullable=False)
    topic = Column(String(64))  # a FAQ topic slug, or None
    service = Column(String(32))  # a service slug, or None; both None: the whole town
    starts_on = Column(Date, nullable=False)
    ends_on = Column(Date, nullable=False, index=True)
    closes_town_hall = Column(Boolean, nullable=False, default=False)
    created_by = Column(String(64), nullable=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    ended_by = Column(String(64))  # ended early by hand (ends_on moved to the day before)


class AnswerVersion(Base):
    """One version of a FAQ topic's answer, written on the staff web page (``bot.answers``). The
    latest approved version of a topic is what the assistant says; the profile's text otherwise.
    Versions are never changed but by review: they are the audit trail of the answers."""

    __tablename__ = "answer_version"

    id = Column(Integer, primary_key=True)
    topic = Column(String(64), nullable=False, index=True)
    text = Column(Text, nullable=False)
    link = Column(String(500), nullable=False)
    status = Column(String(16), nullable=False)  # "approved", "proposed" (by a service head), "rejected"
    author = Column(String(64), nullable=False)
    created_at = Column(DateTime, nullable=False, default=utcnow)
    reviewed_by = Column(String(64))
    reviewed_at = Column(DateTime)
    note = Column(Text)  # "restauré depuis la version 3", "réponse d'origine", a reviewer's word


class MetaContact(Base):
    """Who a Messenger or Instagram conversation is with, and when they last wrote to the page.

    Meta lets a page answer freely for 24 hours after the person's last message, then (with the
    ``HUMAN_AGENT`` tag) for 7 days. A conversation begun by a public comment has no user id until
    the private reply is sent (Meta's answer names the person)."""

    __tablename__ = "meta_contact"

    conversation_id = Column(String(255), primary_key=True)
    platform = Column(String(16), nullable=False)  # "messenger" | "instagram"
    user_id = Column(String(128), index=True)  # page-scoped (PSID) or Instagram-scoped (IGSID) id
    comment_id = Column(String(128))  # conversations begun by a public comment
    last_inbound_at = Column(DateTime)
    private_reply_at = Column(DateTime)  # the one private reply Meta allows per comment


class PublicComment(Base):
    """A comment (or a reply) under one of the town's posts on Facebook or Instagram, and what was
    done with it. Nothing is ever hidden or deleted: this is a record, not a moderation queue."""

    __tablename__ = "public_comment"

    id = Column(Integer, primary_key=True)
    platform = Column(String(16), nullable=False)  # "facebook" | "instagram"
    comment_id = Column(String(128), nullable=False, unique=True)
    post_id = Column(String(128), nullable=False, index=True)
    thread_id = Column(String(128), nullable=False, index=True)  # the top-level comment of its thread
    author_id = Column(String(128))
    author_name = Column(String(200))
    text = Column(Text, nullable=False)
    permalink = Column(String(500))
    conversation_id = Column(String(255), nullable=False, index=True)
    ticket_id = Column(Integer, ForeignKey("ticket.id", ondelete="SET NULL"), index=True)
    outcome = Column(String(64))  # what the assistant made of it: "faq:piscine", "ticket:voirie", "handoff"...
    treatment = Column(String(32), index=True)  # see bot.comments.TREATMENTS (index: those to see, 0011)
    public_reply = Column(Text)  # what the bot (or staff) posted under it
    public_reply_id = Column(String(128))
    private_reply_at = Column(DateTime)
    staff_answered_at = Column(DateTime)  # someone of the town answered in its thread
    created_at = Column(DateTime, nullable=False, default=utcnow, index=True)
    handled_at = Column(DateTime)


class Address(Base):
    """One address of the commune, from the Base Adresse Nationale's CSV (bot.places loads it)."""

    __tablename__ = "address"

    id = Column(Integer, primary_key=True)
    ban_id = Column(String(64), unique=True)
    number = Column(String(16))  # "12", "" for a street without numbers (lieu-dit)
    suffix = Column(String(16))  # "bis", "ter", "a"...
    street = Column(String(200), nullable=False)  # "Rue des Tilleuls"
    street_key = Column(String(200), nullable=False, index=True)  # normalised for matching: "tilleuls"
    postcode = Column(String(10))
    lon = Column(Float, nullable=False)
    lat = Column(Float, nullable=False)


class NamedPlace(Base):
    """A place citizens name instead of an address: a school, a park, the station..."""

    __tablename__ = "named_place"

    id = Column(Integer, primary_key=True)
    name = Column(String(200), nullable=False)
    name_key = Column(String(200), nullable=False, index=True)
    kind = Column(String(64))
    number = Column(String(16))
    street = Column(String(200))
    lon = Column(Float, nullable=False)
    lat = Column(Float, nullable=False)


class TicketFollower(Base):
    """A citizen who reported the same problem ("déjà signalé"): hears every status change too."""

    __tablename__ = "ticket_follower"

    id = Column(Integer, primary_key=True)
    ticket_id = Column(Integer, ForeignKey("ticket.id", ondelete="CASCADE"), nullable=False, index=True)
    conversation_id = Column(String(255), nullable=False, index=True)
    channel = Column(String(32), nullable=False)
    citizen_name = Column(String(200))
    added_at = Column(DateTime, nullable=False, default=utcnow)
    left_at = Column(DateTime)  # the citizen said it was another problem (or staff split them out)

    __table_args__ = (Index("ux_ticket_follower", "ticket_id", "conversation_id", unique=True),)


class Open311Key(Base):
    """An API key allowed to POST to the Open311 GeoReport v2 API (created and revoked with the CLI)."""

    __tablename__ = "open311_key"

    id = Column(Integer, primary_key=True)
    name = Column(String(100), nullable=False)  # who uses it: "FixMyStreet", "appli mobile"
    key_hash = Column(String(128), nullable=False, unique=True)  # sha256 of the key: the key itself is shown once
    created_at = Column(DateTime, nullable=False, default=utcnow)
    revoked_at = Column(DateTime)
