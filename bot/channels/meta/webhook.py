"""Meta's webhook contract: the subscription check, the signature, and the events of a delivery.

- ``GET`` with ``hub.mode=subscribe``, ``hub.verify_token`` and ``hub.challenge``: answer the
  challenge when the token is ours (``verify_subscription``).
- Every ``POST`` carries ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the raw body with the app
  secret>``; anything else is refused (``signature_valid``, constant-time comparison).
- A delivery batches entries (``object`` "page" for Facebook, "instagram" for Instagram), each
  with ``messaging`` events (messages, postbacks, and echoes, reads, deliveries, reactions, which
  we ignore) and ``changes`` (the page ``feed`` — comments among posts, reactions... — and
  Instagram ``comments``). ``parse_delivery`` turns all of them into ``InboundMessage`` and
  ``InboundComment`` values, in order; what we do not handle is left out.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

PLATFORM_OF_OBJECT = {"page": "messenger", "instagram": "instagram"}


def verify_subscription(params: dict[str, str], verify_token: str | None) -> str | None:
    """The challenge to echo back, or None (then answer 403)."""
    if not verify_token or params.get("hub.mode") != "subscribe":
        return None
    if not hmac.compare_digest(str(params.get("hub.verify_token") or ""), verify_token):
        return None
    return params.get("hub.challenge") or None


def signature_valid(body: bytes, header: str | None, app_secret: str | None) -> bool:
    if not app_secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256="):].strip().lower(), expected)


@dataclass(frozen=True)
class InboundMessage:
    platform: str  # "messenger" | "instagram"
    user_id: str  # the sender's page-scoped (or Instagram-scoped) id
    mid: str
    text: str = ""
    at: dt.datetime | None = None  # naive UTC, from Meta's timestamp
    images: tuple[str, ...] = ()  # attachment URLs
    other_attachments: tuple[str, ...] = ()  # their types: audio, video, file, sticker...
    quick_reply: str | None = None  # the payload of one of our quick replies
    postback: str | None = None  # a button's payload ("GET_STARTED": the "Démarrer" button)


@dataclass(frozen=True)
class InboundComment:
    platform: str  # "facebook" | "instagram"
    comment_id: str
    post_id: str
    thread_id: str  # the top-level comment of the thread
    author_id: str | None
    author_name: str | None
    text: str
    verb: str  # "add" | "edited" | "remove" | "hide"...
    at: dt.datetime | None = None
    permalink: str | None = None
    parent_id: str | None = None


def _moment(milliseconds: Any = None, seconds: Any = None) -> dt.datetime | None:
    try:
        value = float(milliseconds) / 1000 if milliseconds is not None else float(seconds)
    except (TypeError, ValueError):
        return None
    return dt.datetime.fromtimestamp(value, dt.timezone.utc).replace(tzinfo=None)


def _message(platform: str, event: dict) -> InboundMessage | None:
    sender = str((event.get("sender") or {}).get("id") or "")
    if not sender:
        return None
    at = _moment(event.get("timestamp"))
    if "postback" in event:
        postback = event["postback"] or {}
        mid = str(postback.get("mid") or f"postback-{sender}-{event.get('timestamp')}")
        return InboundMessage(platform, sender, mid, str(postback.get("title") or ""), at,
                              postback=str(postback.get("payload") or "") or None)
    message = event.get("message")
    if not isinstance(message, dict) or message.get("is_echo") or message.get("is_deleted"):
        return None  # echoes of the page's own messages, deleted messages
    mid = str(message.get("mid") or "")
    if not mid:
        return None
    images, others = [], []
    for attachment in message.get("attachments") or []:
        kind = str((attachment or {}).get("type") or "file")
        url = str(((attachment or {}).get("payload") or {}).get("url") or "")
        if kind == "image" and url and not ((attachment.get("payload") or {}).get("sticker_id")):
            images.append(url)
        else:
            others.append("sticker" if (attachment.get("payload") or {}).get("sticker_id") else kind)
    if message.get("is_unsupported"):
        others.append("unsupported")
    quick = (message.get("quick_reply") or {}).get("payload")
    return InboundMessage(platform, sender, mid, str(message.get("text") or ""), at, tuple(images), tuple(others),
                          str(quick) if quick else None)


def _facebook_comment(value: dict) -> InboundComment | None:
    if value.get("item") != "comment" or not value.get("comment_id"):
        return None
    post_id = str(value.get("post_id") or "")
    parent = str(value.get("parent_id") or post_id)
    comment_id = str(value["comment_id"])
    author = value.get("from") or {}
    permalink = ((value.get("post") or {}).get("permalink_url") or (f"https://www.facebook.com/{post_id}" if post_id else None))
    if permalink:
        permalink = f"{permalink}{'&' if '?' in permalink else '?'}comment_id={comment_id}"
    return InboundComment("facebook", comment_id, post_id, comment_id if parent == post_id else parent,
                          str(author.get("id") or "") or None, author.get("name"), str(value.get("message") or ""),
                          str(value.get("verb") or "add"), _moment(seconds=value.get("created_time")), permalink,
                          None if parent == post_id else parent)


def _instagram_comment(value: dict) -> InboundComment | None:
    comment_id = str(value.get("id") or "")
    media = value.get("media") or {}
    if not comment_id or not media.get("id"):
        return None
    author = value.get("from") or {}
    parent = value.get("parent_id")
    return InboundComment("instagram", comment_id, str(media["id"]), str(parent or comment_id),
                          str(author.get("id") or "") or None, author.get("username"), str(value.get("text") or ""),
                          "add", None, None, str(parent) if parent else None)


def parse_delivery(payload: Any) -> list[InboundMessage | InboundComment]:
    """Every event of a delivery we handle, in order (all entries, all events of each)."""
    if not isinstance(payload, dict):
        return []
    platform = PLATFORM_OF_OBJECT.get(payload.get("object"))
    if platform is None:
        return []
    events: list[InboundMessage | InboundComment] = []
    for entry in payload.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        for event in entry.get("messaging") or []:
            if isinstance(event, dict):
                parsed = _message(platform, event)
                if parsed is not None:
                    events.append(parsed)
        for change in entry.get("changes") or []:
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                continue
            if platform == "messenger" and change.get("field") == "feed":
                parsed = _facebook_comment(change["value"])
            elif platform == "instagram" and change.get("field") == "comments":
                parsed = _instagram_comment(change["value"])
            else:
                parsed = None
            if parsed is not None:
                events.append(parsed)
    return events
