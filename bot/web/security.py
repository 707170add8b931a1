"""Secret key, CSRF tokens and response headers of the staff web interface."""
from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import threading
import time
from collections import deque
from pathlib import Path

from markupsafe import Markup, escape

logger = logging.getLogger(__name__)
CSRF_FIELD = "csrf_token"
CSRF_SESSION_KEY = "csrf_token"
CSRF_MESSAGE = ("Requête refusée : le jeton de sécurité du formulaire est absent ou invalide. "
                "Rechargez la page puis recommencez.")
SECRET_KEY_FILE = "secret_key"


def load_secret_key(var_dir: Path | str | None = None) -> str:
    """``GUICHET_SECRET_KEY``, or a random key kept in ``<var_dir>/secret_key`` (mode 0600).

    The file is created once (atomically: two processes starting together agree on one key), so
    sessions survive a restart of the web server.
    """
    from_env = os.environ.get("GUICHET_SECRET_KEY")
    if from_env:
        if len(from_env) < 16:
            logger.warning("GUICHET_SECRET_KEY is short (%d characters): use at least 32 random characters",
                           len(from_env))
        return from_env
    if var_dir is None:
        from bot.settings import get_settings

        var_dir = get_settings().var_dir
    path = Path(var_dir) / SECRET_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_existing_key(path)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key + "\n")
    return key


def _read_existing_key(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s was readable by others (mode %o): restricting it to 0600", path, mode)
        os.chmod(path, 0o600)
    for _ in range(50):  # another process may be writing it right now
        key = path.read_text(encoding="ascii").strip()
        if key:
            return key
        time.sleep(0.02)
    raise RuntimeError(f"{path} is empty: delete it (a new key will be generated) or set GUICHET_SECRET_KEY")


def csrf_token(session) -> str:
    """This session's CSRF token (created on first use)."""
    token = session.get(CSRF_SESSION_KEY)
    if not token:
        token = session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


def csrf_field(session) -> Markup:
    return Markup('<input type="hidden" name="%s" value="%s">') % (CSRF_FIELD, escape(csrf_token(session)))


def csrf_valid(session, form) -> bool:
    expected = session.get(CSRF_SESSION_KEY)
    sent = form.get(CSRF_FIELD, "")
    if not expected or not sent:
        return False
    return hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def safe_next(target: str | None) -> str | None:
    """A redirect target after login: only a path on this site (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(c in target for c in "\r\n\\"):
        return None
    return target


def security_headers(response, nonce: str):
    """Scripts only from our own files (queue.js), never inline; the inline stylesheet by nonce; no
    framing; nothing cached."""
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'nonce-{nonce}'; img-src 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


class LoginThrottle:
    """Failed logins per client address: past ``limit`` failures in ``window`` seconds, every login
    from that address is refused until the oldest failure leaves the window (whatever the account:
    one address cannot try many accounts). The per-account lock (``bot.accounts``) is kept as well.

    In this process's memory, or in Redis when ``GUICHET_REDIS_URL`` is set (``bot.shared_state``):
    then every staff web process counts the same failures, so running several of them behind the
    proxy gives an attacker no more tries. Behind a reverse proxy every client has the proxy's
    address: the proxy passes the client's (``X-Forwarded-For``, trusted with
    ``GUICHET_WEB_TRUSTED_PROXIES``) or set a higher limit.
    """

    def __init__(self, limit: int = 20, window: float = 15 * 60, shared: "object | None | bool" = True):
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()
        if shared is True:
            from bot import shared_state

            shared = shared_state.shared()
        self._shared = shared or None

    def _recent(self, address: str, now: float) -> deque:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def blocked(self, address: str, now: float) -> bool:
        if self._shared is not None:
            return self._shared.failures(f"login:{address}", self.window) >= self.limit
        with self._lock:
            return len(self._recent(address, now)) >= self.limit

    def failed(self, address: str, now: float) -> None:
        if self._shared is not None:
            self._shared.failures(f"login:{address}", self.window, record=True)
            return
        with self._lock:
            self._recent(address, now)
            self._failures.setdefault(address, deque()).append(now)
            if len(self._failures) > 10_000:  # bounded memory under a distributed attack
                oldest = min(self._failures, key=lambda a: self._failures[a][-1])
                del self._failures[oldest]
