"""Kind of a ticket: report (broken/dirty), request (asks for something), complaint (dissatisfied).

Lexical cues on the folded text; complaint wins over request, request over report. A service
that handles files rather than things (civil status, schools, social aid) defaults to request.
"""
from __future__ import annotations

import re

from bot.textnorm import fold

REPORT, REQUEST, COMPLAINT, HANDOFF = "report", "request", "complaint", "handoff"

_COMPLAINT = re.compile(
    r"inadmissible|inacceptable|scandal|honte|honteu|marre|ras[ -]le[ -]bol|en peu[tx] plus|j'en ai assez"
    r"|toujours pas|toujours rien|toujours aucun|jamais de reponse|aucune reponse|aucun retour|sans reponse"
    r"|depuis des (?:jours|semaines|mois|annees)|depuis (?:\d+|deux|trois|quatre|cinq|six|plusieurs) (?:jours|semaines|mois|ans)"
    r"|(?:ca|cela) fait (?:\d+|deux|trois|quatre|cinq|six|plusieurs|des) (?:jours|semaines|mois|ans)"
    r"|(?:\d+|deux|trois|quatre|cinq|six|plusieurs) (?:jours|semaines|mois|ans) que"
    r"|personne ne (?:bouge|fait|vient|repond|bosse|travaille|s'en occupe)|rien n'est fait|rien ne bouge"
    r"|bravo|merci la mairie|merci pour rien|lamentable|deplorable|pitoyable|inadmissible|pas normal"
    r"|c'est quoi ce|on se moque|se fout|foutez|mecontent|decu|degoute|n'importe quoi|je me plains"
    r"|plainte|reclamation|reclame|inexcusable|intolerable|insupportable|catastrophique|nul(?:le)?s?\b"
    r"|a chaque fois|encore une fois|une fois de plus|comme d'habitude|c'est pas possible|pas serieux"
    r"|👏|😡|🤬|😤|!!"
)
_REQUEST = re.compile(
    r"serait[- ]il possible|est[- ]il possible|est[- ]ce possible|est[- ]ce qu'il (?:serait|est) possible"
    r"|possible de|pourriez[- ]vous|pouvez[- ]vous|vous pouvez|pourrait[- ]on|pourrais[- ]je|puis[- ]je"
    r"|j'aimerais|je voudrais|je souhaite|je souhaiterais|je demande|demande de|faire (?:la|une) demande"
    r"|qui peut m'aider|besoin d'aide|aidez[- ]moi|j'ai besoin|il faudrait|faudrait|merci de bien vouloir"
    r"|comment faire|comment (?:je|on) (?:fais|fait|peux|peut)|reste[- ]t[- ]il|s'il reste|une place"
    r"|mon compte|mon dossier|ma demande|corriger|rectifier|installer|ajouter|mettre en place|tailler|elaguer"
)
_BROKEN = re.compile(
    r"casse|en panne|ne marche plus|marche pas|ne fonctionne|fonctionne plus|hors service|fuite|trou|nid"
    r"|tag|graffiti|degrade|abime|ne s'allume|eteint|bloque|descelle|sale|depot|dechet|ordure|detritus"
    r"|tombe|menace|dangereu|plus d'eau|pas d'eau|froid|inonde|arrache|renverse|gravats|crotte|dejection"
    r"|encombre|obstrue|deborde|garee?s?|stationne|ventouse|bruit|tapage"
)
_FILE_SERVICES = {"etat_civil", "education", "social"}


def classify_kind(text: str, service: str | None = None) -> str:
    folded = fold(text or "")
    raw = text or ""
    if _COMPLAINT.search(folded) or _COMPLAINT.search(raw):
        return COMPLAINT
    if _REQUEST.search(folded):
        return REQUEST
    if _BROKEN.search(folded):
        return REPORT
    return REQUEST if service in _FILE_SERVICES else REPORT
