"""Nothing lost: the citizen's message is kept even when a part of the stack is down.

- ``record_or_spool``: write a citizen message to the ``message`` table (with a few retries);
  if the database cannot be reached, append it to a local spool file instead
  (``$GUICHET_SPOOL_DIR/messages.jsonl``, default ``var/spool/``), fsynced.
- ``flush_spool``: move the spooled messages into the database once it is back (called by the
  REST channel after a successful database access, and by the event broker). Messages already
  present (same conversation and message id) are not written twice.
- ``ChannelTexts``: the channel-level French answers (technical problem, empty message, slow
  down...) rendered from ``bot/replies.fr.yml`` without touching the database.

No Rasa import: the local chat (``guichet chat``) uses it too when the Rasa server is down.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from bot import db
from bot.settings import get_settings

logger = logging.getLogger(__name__)
_local_lock = threading.Lock()  # flock is per process; this serialises the threads of one process


MAX_CLIENT_ID = 128


def message_id_for(sender: str, client_id) -> str | None:
    """The stored id of a client-chosen message id, namespaced by conversation (ids are global in the database).

    The REST channel and the local chat (recording directly when the Rasa server is down) agree on it,
    so a message is never stored twice.
    """
    if client_id is None or isinstance(client_id, bool) or not isinstance(client_id, (str, int)):
        return None
    client_id = str(client_id).strip()
    if not client_id or len(client_id) > MAX_CLIENT_ID:
        return None
    return "c-" + hashlib.sha256(f"{sender}\x00{client_id}".encode("utf-8", "replace")).hexdigest()[:40]


def spool_dir() -> Path:
    configured = os.environ.get("GUICHET_SPOOL_DIR")
    return Path(configured) if configured else get_settings().var_dir / "spool"


def spool_path() -> Path:
    return spool_dir() / "messages.jsonl"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _local_lock, open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def spool(conversation_id: str, channel: str, text: str | None, message_id: str | None,
          when: dt.datetime | None = None, author_name: str | None = None, path: Path | None = None) -> None:
    """Append one citizen message to the spool file (durable: fsync before returning)."""
    path = path or spool_path()
    record = {"conversation_id": conversation_id, "channel": channel, "text": text, "message_id": message_id,
              "when": (when or dt.datetime.now(dt.timezone.utc)).isoformat(), "author_name": author_name}
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with _locked(path):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    logger.warning("database unreachable: message of conversation %s kept in the spool %s", conversation_id, path)


def spooled_count(path: Path | None = None) -> int:
    path = path or spool_path()
    try:
        with open(path, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0


def has_spooled(path: Path | None = None) -> bool:
    try:
        return (path or spool_path()).stat().st_size > 0
    except FileNotFoundError:
        return False


def already_recorded(store, conversation_id: str, message_id: str | None) -> bool:
    """Whether this citizen message (conversation + message id) is already in the transcript."""
    if not message_id:
        return False
    from bot.models import Message

    with store.session() as session:
        return session.execute(
            select(Message.id).where(Message.conversation_id == conversation_id, Message.external_id == message_id,
                                     Message.author == "citizen").limit(1)
        ).first() is not None


def _record(store, conversation_id: str, channel: str, text: str | None, message_id: str | None,
            when: dt.datetime | None, author_name: str | None) -> bool:
    from bot.transcript import record_citizen_message

    if already_recorded(store, conversation_id, message_id):
        return False
    record_citizen_message(store, conversation_id, channel, text, message_id, when, author_name=author_name)
    return True


def record(store, conversation_id: str, channel: str, text: str | None, message_id: str | None = None,
           when: dt.datetime | None = None, author_name: str | None = None) -> bool:
    """Record a citizen message once (retried on transient errors). False if it was already there."""
    return db.retrying(_record, store, conversation_id, channel, text, message_id, when, author_name)


def record_or_spool(store_or_url, conversation_id: str, channel: str, text: str | None,
                    message_id: str | None = None, when: dt.datetime | None = None,
                    author_name: str | None = None) -> str:
    """Record the message in the database, or in the spool file if it is down: "db", "spool" or "dup"."""
    when = when or dt.datetime.now(dt.timezone.utc)
    try:
        store = store_or_url
        if isinstance(store_or_url, str):
            from bot.tickets import TicketStore

            store = db.retrying(TicketStore, store_or_url)
        return "db" if record(store, conversation_id, channel, text, message_id, when, author_name) else "dup"
    except (SQLAlchemyError, OSError) as error:
        logger.warning("could not record a message in the database (%s): spooling it", type(error).__name__)
        spool(conversation_id, channel, text, message_id, when, author_name)
        return "spool"


def flush_spool(store, path: Path | None = None) -> int:
    """Write the spooled messages to the database; those that still fail stay spooled. Returns how many moved."""
    path = path or spool_path()
    if not has_spooled(path):
        return 0
    moved = 0
    with _locked(path):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return 0
        remaining: list[str] = []
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                logger.error("unreadable spool line dropped into %s", path.with_suffix(".bad"))
                with open(path.with_suffix(".bad"), "a", encoding="utf-8") as bad:
                    bad.write(line + "\n")
                continue
            try:
                when = dt.datetime.fromisoformat(item["when"]) if item.get("when") else None
                if _record(store, item["conversation_id"], item.get("channel") or "rest", item.get("text"),
                           item.get("message_id"), when, item.get("author_name")):
                    moved += 1
            except SQLAlchemyError as error:
                logger.warning("spool flush stopped, database still unreachable: %s", type(error).__name__)
                remaining.extend(lines[index:])
                break
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(f"{line}\n" for line in remaining if line.strip()), encoding="utf-8")
        os.replace(temporary, path)
    if moved:
        logger.info("%d spooled message(s) written to the database", moved)
    return moved


# --- channel-level answers -----------------------------------------------------------------------
class ChannelTexts:
    """French answers the channels give themselves, rendered without any database access."""

    def __init__(self, replies, hours):
        self.replies = replies
        self.hours = hours

    def render(self, key: str, now: dt.datetime | None = None, **context) -> str:
        now = now or dt.datetime.now(dt.timezone.utc)
        return self.replies.render(key, when=self.hours.when_read(now), now=now, **context)

    def technical_problem(self, now: dt.datetime | None = None) -> str:
        return self.render("technical_problem", now)


@lru_cache(maxsize=4)
def _texts(profile_path: str, replies_path: str) -> ChannelTexts:
    from bot.hours import StaffHours
    from bot.profile import load_profile
    from bot.replies import Replies

    profile = load_profile(profile_path)
    return ChannelTexts(Replies.load(replies_path, profile), StaffHours.from_town(profile.town))


def channel_texts() -> ChannelTexts:
    settings = get_settings()
    return _texts(str(settings.profile_path), str(settings.replies_path))


FALLBACK_TECHNICAL_PROBLEM = ("Nous rencontrons un souci technique, désolés ! Votre message est bien conservé et "
                              "notre équipe le lira dès que possible.")


def technical_problem_text() -> str:
    try:
        return channel_texts().technical_problem()
    except Exception as exc:  # noqa: BLE001 - the apology must always be given
        logger.error("could not render the technical-problem answer: %s", type(exc).__name__)
        return FALLBACK_TECHNICAL_PROBLEM
