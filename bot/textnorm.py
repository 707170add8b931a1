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
