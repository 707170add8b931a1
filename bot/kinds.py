"""Kind of a ticket: report (broken/dirty), request (asks for something), complaint (dissatisfied).

Lexical cues on the folded text; complaint wins over request, request over report. A service
that handles files rather than things (civil status, schools, social aid) defaults to request.
"""
from __future__ import annotations

import re

from bot.textnorm import fold

REPORT, REQUEST, COMPLAINT, HANDOFF = "report", "request", "complaint", "handoff"

# Dissatisfaction with the town or a service: one of these is enough...
_COMPLAINT = re.compile(
    r"inadmissible|inacceptable|scandal|honte|honteu|marre|ras[ -]le[ -]bol|en peu[tx] plus|j'en ai assez"
    r"|toujours pas|toujours rien|toujours aucun|jamais de reponse|aucune reponse|aucun retour|sans reponse"
    r"|personne ne (?:bouge|fait|vient|repond|bosse|travaille|s'en occupe)|rien n'est fait|rien ne bouge"
    r"|bravo|merci la mairie|merci pour rien|lamentable|deplorable|pitoyable|inexcusable|intolerable"
    r"|mecontent|decu|degoute|je me plains|reclamation|on se moque|se fout de|foutez|c'est du vol"
    r"|on s'attend a mieux|pas serieux|n'importe quoi|une fois de plus|encore une fois|comme d'habitude"
    r"|c'est quoi ce|vous attendez quoi|qu'est-ce que vous attendez|j'ai relance|deja relance|jamais personne|personne n'est venu|personne est venu"
    r"|a quoi (?:vous )?serv|(?:appele|ecrit|relance|telephone) (?:\d+|deux|trois|quatre|plusieurs) fois|👏"
)
# ...these only count when there are two: a long wait, anger, repetition.
_COMPLAINT_HINTS = (
    re.compile(r"depuis (?:des|\d+|deux|trois|quatre|cinq|six|plusieurs) (?:jours|semaines|mois|ans|annees)"
               r"|(?:ca|cela) fait (?:\d+|deux|trois|quatre|cinq|six|plusieurs|des) (?:jours|semaines|mois|ans)"
               r"|(?:\d+|deux|trois|quatre|cinq|six|plusieurs) (?:jours|semaines|mois|ans) que"),
    re.compile(r"!!|😡|🤬|😤|😠"),
    re.compile(r"pas normal|nul(?:le)?s?\b|insupportable|catastroph|n'importe comment"),
)
_REQUEST = re.compile(
    r"serait[- ]il possible|est[- ]il possible|est[- ]ce possible|est[- ]ce qu'il (?:serait|est) possible"
    r"|\bpossible de|pourriez[- ]vous|pouvez[- ]vous|vous pouvez|pourrait[- ]on|pourrais[- ]je|puis[- ]je"
    r"|j'aimerais|nous aimerions|on aimerait|je voudrais|nous voudrions|on voudrait|souhait|merci de (?:nous|m')"
    r"|(?:je|on) (?:peux|peut|pourrais|pourrait) (?:en )?avoir|c'?est possible|c possible|je souhaite|je souhaiterais|je demande|demande de|faire (?:la|une) demande"
    r"|qui peut m'aider|besoin d'aide|aidez[- ]moi|j'ai besoin|il faudrait|faudrait|merci de bien vouloir"
    r"|comment faire|comment (?:je|on) (?:fais|fait|peux|peut)|reste[- ]t[- ]il|s'il reste|une place"
    r"|mon compte|mon dossier|ma demande|corriger|rectifier|installer|ajouter|mettre en place|tailler|elaguer"
)
_BROKEN = re.compile(
    r"casse|en panne|marche plus|marche pas|fonctionne pas|ne fonctionne|fonctionne plus|chauffage|hors service|fuite|trou|nid"
    r"|tag|graffiti|degrade|abime|ne s'allume|eteint|bloque|descelle|sale|depot|dechet|ordure|detritus"
    r"|tombe|menace|dangereu|bouche|impossible|erreur|bug|plus d'eau|pas d'eau|froid|inonde|arrache|renverse|gravats|crotte|dejection"
    r"|encombre|obstrue|deborde|garee?s?|stationne|ventouse|bruit|tapage"
)
_FILE_SERVICES = {"etat_civil", "education", "social"}


def classify_kind(text: str, service: str | None = None) -> str:
    folded = fold(text or "")
    hints = sum(1 for pattern in _COMPLAINT_HINTS if pattern.search(folded))
    if _COMPLAINT.search(folded) or hints >= 2:
        return COMPLAINT
    if _REQUEST.search(folded):
        return REQUEST
    if _BROKEN.search(folded):
        return REPORT
    return REQUEST if service in _FILE_SERVICES else REPORT
