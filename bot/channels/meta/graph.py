"""A small synchronous client for the parts of Meta's Graph API a town's page uses (no SDK).

Messenger and Instagram (Messenger Platform for Instagram) share the page access token and the
``POST /{version}/me/messages`` Send API; comments are answered publicly with
``POST /{comment-id}/comments`` (Facebook) or ``POST /{comment-id}/replies`` (Instagram), and
privately (one message per comment, within 7 days) with ``recipient.comment_id`` on the Send API.

Meta behaviour followed here:

- the token goes as the ``access_token`` query parameter; errors come as
  ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``, mostly with HTTP 400;
- :func:`classify` maps them to a few kinds the gateway acts on: rate limits (codes 4, 17, 32, 613,
  80001-80014, HTTP 429), an expired or revoked token (190, 102), a message outside the messaging
  window (subcode 2018278: 24 h after the person's last message, 7 days with the ``HUMAN_AGENT``
  tag), a person no longer reachable (551, 100/2018001, 10/2018108), a missing permission (10,
  200-299), Meta's transient failures (1, 2, HTTP 5xx); anything else is an invalid request;
- rate limits, transient failures and network errors are retried with exponential backoff (or the
  ``Retry-After`` / ``X-Business-Use-Case-Usage`` wait when Meta gives one); the others raise at
  once. Meta's Send API has no idempotency key: a retry after a timeout may duplicate a message.

Logs carry the error kind and codes, never message texts (citizens' words) nor the token.
"""
from __future__ import annotations

import json
import logging
import time
from email.utils import parsedate_to_datetime

import requests

log = logging.getLogger(__name__)

RATE_LIMIT_CODES = {4, 17, 32, 613, *range(80001, 80015)}
TOKEN_CODES = {190, 102}
WINDOW_SUBCODE = 2018278
PRIVATE_REPLY_SENT_SUBCODE = 2018292
RETRYABLE = {"rate_limit", "temporary", "network"}
MAX_QUICK_REPLIES = 13
README = "(README, « Facebook et Instagram »)"

STAFF_TEXTS = {
    "rate_limit": "Meta limite le nombre d'envois : nouvel essai automatique dans quelques minutes.",
    "token": "Le jeton de la page a expiré ou a été révoqué : un administrateur doit en créer "
             f"un nouveau {README}.",
    "window": "Hors de la fenêtre de 24 h de Meta : le citoyen doit d'abord réécrire à la page.",
    "unreachable": "Cette personne n'est plus joignable sur ce canal.",
    "permission": "La page n'a pas la permission nécessaire (erreur Meta n° {code}) : un administrateur doit "
                  f"vérifier les autorisations de l'application Meta {README}.",
    "temporary": "Meta rencontre un problème passager : nouvel essai automatique dans quelques minutes.",
    "network": "Meta est injoignable (réseau) : nouvel essai automatique dans quelques minutes.",
    "invalid": "Meta a refusé la demande (erreur n° {code}) : à signaler à l'équipe technique.",
}


class GraphError(Exception):
    """A failed Graph API call, classified (see :func:`classify`)."""

    def __init__(self, kind: str, message: str = "", *, status: int | None = None, code: int | None = None,
                 subcode: int | None = None, retry_after: float | None = None):
        self.kind, self.message, self.status = kind, message, status
        self.code, self.subcode, self.retry_after = code, subcode, retry_after
        super().__init__(f"{kind} (HTTP {status}, code {code}, subcode {subcode}): {message}")

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def staff_text(self) -> str:
        """One French sentence for staff saying what happened and what to do."""
        if self.subcode == PRIVATE_REPLY_SENT_SUBCODE:
            return "Une réponse privée a déjà été envoyée pour ce commentaire : Meta n'en autorise qu'une."
        return STAFF_TEXTS[self.kind].format(code=self.code if self.code is not None else "inconnu")


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _header(headers, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def _retry_after(headers) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date), else from ``X-Business-Use-Case-Usage``."""
    value = _header(headers, "Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    try:  # {"<business id>": [{"type": "pages", "estimated_time_to_regain_access": <minutes>, ...}]}
        usage = json.loads(_header(headers, "X-Business-Use-Case-Usage") or "{}")
        minutes = max((float(item.get("estimated_time_to_regain_access") or 0)
                       for items in usage.values() for item in items), default=0)
    except (ValueError, TypeError, AttributeError):
        return None
    return minutes * 60 if minutes > 0 else None


def _kind(status: int | None, code: int | None, subcode: int | None, message: str) -> str:
    if code in RATE_LIMIT_CODES or status == 429:
        return "rate_limit"
    if code in TOKEN_CODES:
        return "token"
    if code in (10, 100) and (subcode == WINDOW_SUBCODE or "outside of allowed window" in message.lower()):
        return "window"
    if code == 551 or (code, subcode) in ((100, 2018001), (10, 2018108)):
        return "unreachable"
    if code == 10 and subcode == PRIVATE_REPLY_SENT_SUBCODE:
        return "invalid"  # not a permission problem: the one private reply was already sent
    if code == 10 or (code is not None and 200 <= code <= 299):
        return "permission"
    if code in (1, 2) or (status is not None and status >= 500):
        return "temporary"
    if status is None and code is None:
        return "network"
    return "invalid"


def classify(status: int | None, body: dict | None, headers: dict | None = None) -> GraphError:
    """The :class:`GraphError` for an HTTP status and Meta's JSON error body."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
    message = str(error.get("message") or "")
    kind = _kind(status, code, subcode, message)
    retry_after = _retry_after(headers) if kind == "rate_limit" else None
    return GraphError(kind, message, status=status, code=code, subcode=subcode, retry_after=retry_after)


class GraphClient:
    """The page's calls to the Graph API, with retries of rate limits and transient failures."""

    def __init__(self, page_token: str, *, base_url: str = "https://graph.facebook.com", version: str = "v21.0",
                 timeout: float = 15.0, tries: int = 4, backoff: float = 1.0, max_wait: float = 60.0,
                 session: requests.Session | None = None):
        self.page_token = page_token
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.timeout, self.tries, self.backoff, self.max_wait = timeout, max(1, tries), backoff, max_wait
        self.session = session or requests.Session()

    # --- the calls ---
    def send_message(self, recipient_id: str, text: str, *, quick_replies: list[dict] | None = None,
                     messaging_type: str = "RESPONSE", tag: str | None = None) -> dict:
        """Send a text (with quick replies ``[{"title", "payload"}]``); Meta's ``{"recipient_id", "message_id"}``."""
        message: dict = {"text": text}
        if quick_replies:
            message["quick_replies"] = [
                {"content_type": "text", "title": str(reply["title"])[:20], "payload": str(reply["payload"])[:1000]}
                for reply in quick_replies[:MAX_QUICK_REPLIES]]
        payload: dict = {"recipient": {"id": recipient_id}, "messaging_type": messaging_type}
        if tag:
            payload["tag"] = tag
        payload["message"] = message
        return self._call("me/messages", payload, "send_message")

    def typing_on(self, recipient_id: str) -> None:
        """Show the typing indicator; best effort, one try, never raises."""
        try:
            self._call("me/messages", {"recipient": {"id": recipient_id}, "sender_action": "typing_on"},
                       "typing_on", tries=1)
        except GraphError as error:
            log.debug("Graph typing_on ignored: %s (code %s, subcode %s)", error.kind, error.code, error.subcode)

    def private_reply(self, comment_id: str, text: str) -> dict:
        """Answer a comment in private (once per comment); ``recipient_id`` is the commenter's page-scoped id."""
        return self._call("me/messages", {"recipient": {"comment_id": comment_id}, "message": {"text": text}},
                          "private_reply")

    def reply_to_comment(self, platform: str, comment_id: str, text: str) -> str:
        """Answer a comment publicly; the new comment's id."""
        if platform in ("facebook", "messenger"):
            edge = "comments"
        elif platform == "instagram":
            edge = "replies"
        else:
            raise ValueError(f"unknown platform {platform!r}")
        return str(self._call(f"{comment_id}/{edge}", {"message": text}, "reply_to_comment")["id"])

    # --- plumbing ---
    def _call(self, path: str, payload: dict, what: str, tries: int | None = None) -> dict:
        tries, attempt = tries or self.tries, 0
        while True:
            try:
                return self._post(path, payload)
            except GraphError as error:
                attempt += 1
                if not error.retryable or attempt >= tries:
                    log.log(logging.DEBUG if tries == 1 else logging.WARNING,
                            "Graph %s failed: %s (HTTP %s, code %s, subcode %s) after %d tries",
                            what, error.kind, error.status, error.code, error.subcode, attempt)
                    raise
                wait = error.retry_after if error.retry_after is not None else self.backoff * 2 ** (attempt - 1)
                wait = min(wait, self.max_wait)
                log.info("Graph %s: %s (code %s), retry %d/%d in %.1f s",
                         what, error.kind, error.code, attempt, tries - 1, wait)
                time.sleep(wait)

    def _post(self, path: str, payload: dict) -> dict:
        url = f"{self.base_url}/{self.version}/{path}"
        try:
            response = self.session.post(url, params={"access_token": self.page_token}, json=payload,
                                         timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            # requests' message holds the URL, hence the token: keep only the exception's type.
            raise GraphError("network", type(exc).__name__) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.ok and isinstance(body, dict) and "error" not in body:
            return body
        raise classify(response.status_code, body, response.headers)
