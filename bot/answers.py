"""FAQ answers edited by the CM on the web: the profile's text is the default, the latest approved
version wins, every version is kept and can be restored. No retraining: the model only picks the
topic, this module gives the words. A service head proposes a change for the topics of their
service; the CM approves or rejects it.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from sqlalchemy import select

from bot.models import AnswerVersion, utcnow
from bot.profile import Profile
from bot.textnorm import clean_citizen_text
from bot.tickets import TicketStore

MAX_TEXT = 1200


class AnswerError(ValueError):
    """An edit refused, with a French message for the person who tried it."""


@dataclass(frozen=True)
class FaqAnswer:
    text: str
    link: str
    version: int | None = None  # None: the profile's own text


class Answers:
    def __init__(self, store: TicketStore, profile: Profile, cache_seconds: float | None = None):
        self.store = store
        self.profile = profile
        self.cache_seconds = cache_seconds if cache_seconds is not None else \
            float(os.environ.get("GUICHET_NOTICES_CACHE_SECONDS", "30"))  # same freshness as the notices
        self._cache: tuple[float, dict[str, FaqAnswer]] | None = None
        self._lock = threading.Lock()

    # --- what the assistant says ------------------------------------------------------------------
    def current(self, topic: str) -> FaqAnswer:
        entry = self.profile.faq[topic]
        edited = self._approved().get(topic)
        return edited or FaqAnswer(entry.answer, entry.link)

    def _approved(self) -> dict[str, FaqAnswer]:
        cached = self._cache
        if cached and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        with self._lock:
            latest: dict[str, FaqAnswer] = {}
            with self.store.session() as session:
                # The last one approved wins (a proposal approved today beats an edit of yesterday).
                for version in session.execute(select(AnswerVersion).where(AnswerVersion.status == "approved")
                                               .order_by(AnswerVersion.reviewed_at, AnswerVersion.id)).scalars():
                    latest[version.topic] = FaqAnswer(version.text, version.link, version.id)
            self._cache = (time.monotonic(), latest)
        return latest

    # --- editing -------------------------------------------------------------------------------------
    def check(self, topic: str, text: str, link: str) -> tuple[str, str]:
        if topic not in self.profile.faq:
            raise AnswerError(f"Sujet inconnu « {topic[:60]} ».")
        text = " ".join(clean_citizen_text(text, limit=10_000).split())
        link = (link or "").strip()
        if not text:
            raise AnswerError("La réponse est vide.")
        if len(text) > MAX_TEXT:
            raise AnswerError(f"Réponse trop longue ({len(text)} caractères, {MAX_TEXT} au plus) : deux ou trois "
                              "phrases, et le lien vers la page complète.")
        parsed = urlparse(link)
        if parsed.scheme not in ("https", "http") or not parsed.netloc or len(link) > 500 or " " in link:
            raise AnswerError("Le lien doit être une adresse web complète (https://...).")
        return text, link

    def edit(self, topic: str, text: str, link: str, staff) -> AnswerVersion:
        """The CM's edit is live at once; a service head's is a proposal for their service's topics."""
        text, link = self.check(topic, text, link)
        if not staff.is_cm:
            service = self.profile.faq[topic].service
            if not service or service != staff.service:
                raise AnswerError("Vous pouvez proposer une réponse seulement pour les sujets de votre service.")
        current = self.current(topic)
        if (text, link) == (current.text, current.link):
            raise AnswerError("Rien n'a changé par rapport à la réponse actuelle.")
        status = "approved" if staff.is_cm else "proposed"
        return self._add(topic, text, link, status, staff.username,
                         reviewed_by=staff.username if staff.is_cm else None)

    def review(self, version_id: int, approve: bool, staff, note: str | None = None) -> AnswerVersion:
        if not staff.is_cm:
            raise AnswerError("Seul le community manager valide les propositions.")
        with self.store.session() as session:
            version = session.get(AnswerVersion, version_id)
            if version is None or version.status != "proposed":
                raise AnswerError("Cette proposition n'existe pas ou a déjà été traitée.")
            version.status = "approved" if approve else "rejected"
            version.reviewed_by, version.reviewed_at = staff.username, utcnow()
            version.note = clean_citizen_text(note or "", limit=500) or version.note
            session.commit()
            session.refresh(version)
        self._cache = None
        return version

    def restore(self, topic: str, version_id: int | None, staff) -> AnswerVersion:
        """A previous version again (``None``: the profile's own text), as a new version."""
        if not staff.is_cm:
            raise AnswerError("Seul le community manager restaure une réponse.")
        if topic not in self.profile.faq:
            raise AnswerError(f"Sujet inconnu « {topic[:60]} ».")
        if version_id is None:
            entry = self.profile.faq[topic]
            return self._add(topic, entry.answer, entry.link, "approved", staff.username,
                             reviewed_by=staff.username, note="réponse d'origine (fichier du profil) restaurée")
        with self.store.session() as session:
            old = session.get(AnswerVersion, version_id)
            if old is None or old.topic != topic or old.status == "proposed":
                raise AnswerError("Version introuvable pour ce sujet.")
            text, link = old.text, old.link
        return self._add(topic, text, link, "approved", staff.username, reviewed_by=staff.username,
                         note=f"version {version_id} restaurée")

    def history(self, topic: str) -> list[AnswerVersion]:
        with self.store.session() as session:
            return list(session.execute(select(AnswerVersion).where(AnswerVersion.topic == topic)
                                        .order_by(AnswerVersion.id.desc())).scalars())

    def proposals(self) -> list[AnswerVersion]:
        with self.store.session() as session:
            return list(session.execute(select(AnswerVersion).where(AnswerVersion.status == "proposed")
                                        .order_by(AnswerVersion.id)).scalars())

    def _add(self, topic: str, text: str, link: str, status: str, author: str, reviewed_by: str | None = None,
             note: str | None = None) -> AnswerVersion:
        with self.store.session() as session:
            version = AnswerVersion(topic=topic, text=text, link=link, status=status, author=author,
                                    reviewed_by=reviewed_by, reviewed_at=utcnow() if reviewed_by else None, note=note)
            session.add(version)
            session.commit()
            session.refresh(version)
        self._cache = None
        return version
