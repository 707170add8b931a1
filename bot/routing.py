"""Routing: which service a ticket goes to, and whether we must ask where it is."""
from __future__ import annotations

import re

from bot.location import mentions_location
from bot.kinds import COMPLAINT, REPORT, REQUEST
from bot.profile import Profile
from bot.textnorm import fold

TICKET_INTENT_PREFIX = "ticket_"
CM_QUEUE = "cm"
_VEHICLE = re.compile(r"voiture|vehicule|camion|camionnette|moto|scooter|caravane|camping[- ]car|garee?s?|stationn|ventouse|epave")
_WORD = re.compile(r"[a-z]{4,}")
_STOP = {"avec", "dans", "pour", "plus", "sont", "tous", "toutes", "leur", "leurs", "publique", "public",
         "municipale", "municipal", "municipales", "entretien", "aides", "sociales"}


def service_for_intent(intent: str | None, profile: Profile) -> str | None:
    """`ticket_voirie` -> `voirie` when the profile has that service."""
    if intent and intent.startswith(TICKET_INTENT_PREFIX):
        slug = intent[len(TICKET_INTENT_PREFIX):]
        if slug in profile.services:
            return slug
    return None


def service_from_keywords(text: str, profile: Profile) -> str | None:
    """Fallback routing from the words of each service's ``handles`` in the profile."""
    words = set(_WORD.findall(fold(text)))
    best, best_score = None, 0
    for slug, service in profile.services.items():
        vocabulary = {w for w in _WORD.findall(fold(service.handles)) if w not in _STOP}
        stems = {w[:5] for w in vocabulary}
        score = sum(1 for w in words if w in vocabulary or w[:5] in stems)
        if score > best_score:
            best, best_score = slug, score
    return best


def needs_location(service: str | None, kind: str, text: str, profile: Profile) -> bool:
    """Ask "où exactement ?" only for reports/requests about a place that did not say where."""
    if service is None or kind == COMPLAINT or kind not in (REPORT, REQUEST):
        return False
    rule = profile.service(service).needs_location
    if rule == "vehicles":
        rule = bool(_VEHICLE.search(fold(text)))
    return bool(rule) and not mentions_location(text)
