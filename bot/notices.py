"""Town notices: what changes this week, written by the CM, added to the assistant's answers while
they run and gone by themselves at their end date.

A notice concerns a FAQ topic (the pool's answer gets "fermée pour vidange jusqu'au 15"), a
service (its ticket receipts), or the whole town (greetings). A notice that closes the town hall
also changes "when a person will read it": the staff are away on those days.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from bot.models import Notice
from bot.profile import Profile
from bot.textnorm import clean_citizen_text
from bot.tickets import TicketStore

MAX_TEXT = 500
MAX_DAYS = 366


class NoticeError(ValueError):
    """A notice refused, with a French message for the person who wrote it."""


@dataclass(frozen=True)
class Scope:
    topic: str | None = None
    service: str | None = None

    @property
    def town_wide(self) -> bool:
        return self.topic is None and self.service is None


class Notices:
    def __init__(self, store: TicketStore, profile: Profile, cache_seconds: float | None = None):
        self.store = store
        self.profile = profile
        # The action server re-reads the table at most this often (GUICHET_NOTICES_CACHE_SECONDS).
        self.cache_seconds = cache_seconds if cache_seconds is not None else \
            float(os.environ.get("GUICHET_NOTICES_CACHE_SECONDS", "30"))
        self._cache: tuple[float, dt.date, list[Notice]] | None = None
        self._lock = threading.Lock()

    # --- writing ----------------------------------------------------------------------------------
    def add(self, text: str, starts_on: dt.date, ends_on: dt.date, author: str, *, topic: str | None = None,
            service: str | None = None, closes_town_hall: bool = False, today: dt.date | None = None) -> Notice:
        text = clean_citizen_text(text, limit=10_000).replace("\n", " ")
        if not text:
            raise NoticeError("Le texte de l'avis est vide.")
        if len(text) > MAX_TEXT:
            raise NoticeError(f"Avis trop long ({len(text)} caractères, {MAX_TEXT} au plus) : l'assistant l'ajoute à ses "
                              "réponses, restez bref et mettez un lien vers la page complète.")
        topic, service = (topic or None), (service or None)
        if topic and topic not in self.profile.faq:
            raise NoticeError(f"Sujet inconnu « {topic[:60]} ». Sujets : {', '.join(self.profile.faq)}.")
        if service and service not in self.profile.services:
            raise NoticeError(f"Service inconnu « {service[:60]} ». Services : {', '.join(self.profile.services)}.")
        if topic and service:
            raise NoticeError("Choisissez un sujet, un service ou toute la commune, pas plusieurs.")
        today = today or dt.date.today()
        if ends_on < starts_on:
            raise NoticeError("La date de fin est avant la date de début.")
        if ends_on < today:
            raise NoticeError("La date de fin est déjà passée : l'avis ne serait jamais affiché.")
        if (ends_on - starts_on).days >= MAX_DAYS:
            raise NoticeError("Un avis dure au plus un an : pour un changement durable, modifiez la réponse du sujet.")
        with self.store.session() as session:
            notice = Notice(text=text, topic=topic, service=service, starts_on=starts_on, ends_on=ends_on,
                            closes_town_hall=bool(closes_town_hall), created_by=author)
            session.add(notice)
            session.commit()
            session.refresh(notice)
        self._cache = None
        return notice

    def end(self, notice_id: int, author: str, today: dt.date | None = None) -> Notice:
        """End a notice now: it is no longer shown from today on."""
        today = today or dt.date.today()
        with self.store.session() as session:
            notice = session.get(Notice, notice_id)
            if notice is None:
                raise NoticeError(f"Avis introuvable : {notice_id}.")
            if notice.ends_on < today:
                raise NoticeError("Cet avis est déjà terminé.")
            notice.ends_on = max(notice.starts_on - dt.timedelta(days=1), today - dt.timedelta(days=1))
            notice.ended_by = author
            session.commit()
            session.refresh(notice)
        self._cache = None
        return notice

    # --- reading ----------------------------------------------------------------------------------
    def listing(self, today: dt.date | None = None) -> dict[str, list[Notice]]:
        """Current, coming and past (the 20 most recent) notices, for the staff page."""
        today = today or dt.date.today()
        with self.store.session() as session:
            rows = list(session.execute(select(Notice).order_by(Notice.starts_on, Notice.id)).scalars())
        return {
            "current": [n for n in rows if n.starts_on <= today <= n.ends_on],
            "coming": [n for n in rows if n.starts_on > today],
            "past": sorted((n for n in rows if n.ends_on < today), key=lambda n: n.ends_on, reverse=True)[:20],
        }

    def active(self, today: dt.date) -> list[Notice]:
        cached = self._cache
        if cached and cached[1] == today and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[2]
        with self._lock:
            with self.store.session() as session:
                rows = list(session.execute(select(Notice).where(Notice.ends_on >= today - dt.timedelta(days=1))
                                            .order_by(Notice.starts_on, Notice.id)).scalars())
                session.expunge_all()
            self._cache = (time.monotonic(), today, rows)
        return rows

    def texts_for(self, today: dt.date, *, topic: str | None = None, service: str | None = None,
                  town_wide: bool = False) -> list[str]:
        """The running notices of a topic, of a service, or of the whole town."""
        found = []
        for notice in self.active(today):
            if not notice.starts_on <= today <= notice.ends_on:
                continue
            if (topic and notice.topic == topic) or (service and notice.service == service) or \
                    (town_wide and notice.topic is None and notice.service is None):
                found.append(notice.text)
        return found

    def closed_days(self, today: dt.date) -> dict[dt.date, str]:
        """Days the town hall is closed by a notice (from today on): staff hours skip them."""
        days: dict[dt.date, str] = {}
        for notice in self.active(today):
            if not notice.closes_town_hall:
                continue
            day = max(notice.starts_on, today)
            while day <= notice.ends_on:
                days[day] = "Fermeture exceptionnelle"
                day += dt.timedelta(days=1)
        return days


def describe_scope(notice: Notice, profile: Profile) -> str:
    if notice.topic:
        return f"sujet « {notice.topic.replace('_', ' ')} »"
    if notice.service:
        service = profile.services.get(notice.service)
        return f"service {service.name if service else notice.service}"
    return "toute la commune"
