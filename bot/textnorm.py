"""Text normalisation shared by the lexical helpers (location, kind, references)."""
from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


def fold(text: str) -> str:
    """Lowercase, strip accents, unify apostrophes and spaces: "L’Hôtel  de Ville" -> "l'hotel de ville"."""
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _SPACES.sub(" ", text).strip().lower()


def clean_citizen_text(text: str | None, limit: int = 4000) -> str:
    """Make a citizen message safe to store and show: no NUL/control characters, bounded length."""
    if not text:
        return ""
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C" or ch == "\u200d")
    text = text.strip()
    if not text.replace("\u200d", "").strip():  # nothing visible (a lone emoji joiner is not a message)
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def command_as_words(text: str, allowed: frozenset[str] = frozenset()) -> str:
    """A citizen's "/restart" is the text "restart": Rasa would read it as its intent (and could end a
    hand-off). Only the payloads of buttons the bot offers (``allowed``) stay commands; a ``@bot``
    suffix on the command word (Telegram's "/aide@mairie_bot") is dropped."""
    stripped = text.lstrip()
    if not stripped.startswith("/") or text in allowed:
        return text
    first, _, rest = stripped.lstrip("/").partition(" ")
    return f"{first.split('@', 1)[0]} {rest}".strip()
