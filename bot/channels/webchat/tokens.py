"""Visitor tokens of the website chat: the server, never the browser, chooses the conversation.

A token is ``v1.<visitor id>.<signature>``: 18 random bytes (unguessable), signed with HMAC-SHA256
and the chat's secret key, so a forged or altered token is refused and a visitor can only ever
read and write their own conversation (``web-<visitor id>``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

PREFIX = "web-"
SECRET_FILE = "webchat_secret"


def load_secret(var_dir: Path) -> bytes:
    """``GUICHET_WEBCHAT_SECRET``, or a random key kept in ``<var_dir>/webchat_secret`` (mode 0600)."""
    from_env = os.environ.get("GUICHET_WEBCHAT_SECRET")
    if from_env:
        return from_env.encode()
    path = Path(var_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


class VisitorTokens:
    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the web chat secret must be at least 16 bytes")
        self.secret = secret

    def _sign(self, visitor: str) -> str:
        digest = hmac.new(self.secret, f"v1.{visitor}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self) -> str:
        visitor = base64.urlsafe_b64encode(secrets.token_bytes(18)).decode()
        return f"v1.{visitor}.{self._sign(visitor)}"

    def conversation(self, token: str | None) -> str | None:
        """The conversation of a valid token, else None (forged, altered, malformed)."""
        if not token or len(token) > 200:
            return None
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "v1" or not parts[1]:
            return None
        if not hmac.compare_digest(parts[2], self._sign(parts[1])):
            return None
        return f"{PREFIX}{parts[1]}"
