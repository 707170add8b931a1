"""Does a citizen message say *where* something is? Lexical detection of French place phrases."""
from __future__ import annotations

import re

from bot.textnorm import fold

_STREET_TYPES = (
    r"rue|avenue|av|bd|boulevard|bld|place|pl|chemin|che|allee|impasse|imp|route|rte|quai|cours|square|sq"
    r"|carrefour|rond[- ]point|giratoire|pont|sentier|passage|ruelle|voie|residence|res|lotissement"
    r"|lieu[- ]dit|hameau|cite|parvis|esplanade|promenade|mail|faubourg|fbg|quartier|zone|za|zi|zac"
)
_LANDMARKS = (
    r"ecole|college|lycee|creche|gymnase|stade|piscine|mediatheque|bibliotheque|mairie|eglise|gare"
    r"|poste|pharmacie|boulangerie|supermarche|parking|parc|jardin|cimetiere|salle|maison|centre"
    r"|terrain|city[- ]?stade|skate[- ]?park|aire|halle|marche|arret|abribus|pont|tabac|bureau"
    r"|lavoir|chateau|camping|port|plage|foyer|ehpad|hopital|clinique|usine|entree|sortie"
)
_DETERMINER = r"(?:le|la|les|l'|du|des|de la|de l'|d'|au|aux|mon|ma|mes|notre|nos|chez|un|une|ce|cet|cette)"

# "rue Gambetta", "12 rue des Tilleuls", "avenue des Marronniers", "place de la Gare"
_NOT_A_NAME = r"(?!(?:est|etait|sont|a|n'|ne|qui|que|et|ou|pas|en|y|se|me|est-elle|barree|bloquee|fermee|defoncee|principale|d'a cote|d'en face)\b)"
_STREET = re.compile(
    rf"(?:\b\d+\s*(?:bis|ter)?\s*,?\s*)?\b(?:{_STREET_TYPES})\.?\s+{_NOT_A_NAME}(?:du |de la |de l'|des |de |d'|l')?[a-z0-9]"
)
# "devant l'école", "derrière le gymnase", "à côté de la pharmacie", "au niveau du n°40"
_PREPOSITION = re.compile(
    r"\b(?:devant|derriere|a cote|pres|proche|en face|face|au niveau|au coin|a l'angle|au bout|le long"
    r"|au croisement|a l'intersection|au pied|en bas|en haut|a l'entree|a la sortie|aux abords|autour"
    r"|sur le parking|sur la place|dans la rue|dans le parc|dans le square|a hauteur)"
    rf"\b\s*(?:de |du |des |d')?\s*{_DETERMINER}?\s*[a-z0-9]"
)
# "au n°40", "n° 12", "numero 8", "au 14 ", "du 3 au 7"
_NUMBER = re.compile(r"(?:\bn\s?°\s?\d+|\bno\.?\s?\d+\b|\bnumero\s+\d+|\bau \d{1,4}(?:\s?(?:bis|ter))?\b(?! ?(?:h|heures?|ans|jours?|mois|semaines?|euros?|%|€)))")
# A landmark followed by a proper name in the original text: "square Lamartine", "école Jean Moulin"
_NAMED_LANDMARK = re.compile(
    r"\b(?:[EÉeé]cole|[Cc]oll[eè]ge|[Ll]yc[eé]e|[Cc]r[eè]che|[Gg]ymnase|[Ss]tade|[Pp]iscine|[Pp]arc|[Jj]ardin"
    r"|[Ss]quare|[Cc]imeti[eè]re|[Ss]alle|[Rr][eé]sidence|[Qq]uartier|[Cc]it[eé]|[Ee]glise|[ÉEée]glise"
    r"|[Mm][eé]diath[eè]que|[Cc]entre|[Mm]aison|[Tt]errain|[Pp]arking|[Hh]alle|[Aa]rr[eê]t|[Ll]otissement)"
    r"\s+(?:des |du |de la |de l'|de |d')?[A-ZÉÈÀÂÊÎÔÛÇ][\w'-]+"
)


# Places that only the citizen can find: "devant chez moi", "ici", "dans ma rue" are not an address.
_VAGUE_PLACE = re.compile(
    r"\b(?:(?:juste |en |tout )?(?:devant|derriere|pres|a cote|en bas|en face|au coin|pas loin|autour|en sortant)"
    r"\s*(?:de |d')?\s*)?(?:chez (?:moi|nous|mes parents|ma mere|mon pere)|ma maison|mon immeuble|mon domicile"
    r"|ma residence|mon batiment|mon jardin|mon garage|ma porte|ma fenetre|mon portail)\b"
    r"|\b(?:dans|de|sur|au bout de|au coin de) (?:ma|notre|cette) (?:rue|route|avenue|allee|impasse|place)\b(?!\s+[a-z])"
    r"|\b(?:dans|de) (?:mon|notre|ce) (?:quartier|lotissement|coin|village)\b(?!\s+(?:de|du|des)\b)"
    r"|\b(?:ici|la[- ]bas|par ici|juste la|a cote|pas loin)\b(?!\s+(?:de|du|des|d')\b)"
    r"|\b(?:dans la rue|sur la route|sur le trottoir|dans le quartier)\b(?!\s+[a-z0-9])"
)


def is_vague_place(text: str) -> bool:
    """True when the text gives a place only the writer can find, and nothing more precise."""
    folded = fold(text or "")
    return bool(_VAGUE_PLACE.search(folded)) and not mentions_location(text)


def mentions_location(text: str) -> bool:
    """True when the message says where (street, landmark, position relative to a place)."""
    if not text:
        return False
    if _NAMED_LANDMARK.search(text):
        return True
    folded = _VAGUE_PLACE.sub(" ", fold(text))
    return bool(_STREET.search(folded) or _PREPOSITION.search(folded) or _NUMBER.search(folded))


# Where a place phrase stops: punctuation, or the words that start the rest of the sentence.
_PLACE_END = re.compile(
    r"[,.;:!?()\n]|\s(?:ne|n'|est|sont|etait|a (?:un|une|des|plus|pas|ete|encore)|y a|il y a|qui|que|depuis|et|mais|car|parce|alors|avec|pour|c'est"
    r"|ca|cela|il|elle|ils|elles|on|nous|vous|je|j'|merci|svp|stp|s'il|des que|quand|encore|toujours|toute|tout"
    r"|vraiment|completement|totalement)\b"
)


def _folded_with_positions(text: str) -> tuple[str, list[int]]:
    """``fold`` character by character, with the index in ``text`` of each folded character."""
    folded, positions = [], []
    for index, char in enumerate(text):
        for piece in fold(char) if not char.isspace() else " ":
            folded.append(piece)
            positions.append(index)
    return "".join(folded), positions


def extract_location(text: str) -> str | None:
    """The place phrase of a message for the ticket's "Lieu" ("devant le 12 rue des Tilleuls"),
    in the citizen's own words; None when the message does not say where."""
    if not mentions_location(text):
        return None
    text = " ".join(text.split())
    folded, positions = _folded_with_positions(text)
    starts = []
    named = _NAMED_LANDMARK.search(text)
    if named:
        starts.append((named.start(), named.end()))
    masked = _VAGUE_PLACE.sub(lambda m: " " * len(m.group()), folded)
    for pattern in (_PREPOSITION, _STREET, _NUMBER):
        match = pattern.search(masked)
        if match:
            starts.append((positions[match.start()], positions[min(match.end(), len(positions)) - 1] + 1))
    start, first_end = min(starts)
    folded_from = positions.index(start) if start in positions else 0
    stop = _PLACE_END.search(folded, max(folded_from, positions.index(first_end - 1) if first_end - 1 in positions else 0) + 1)
    end = positions[stop.start()] if stop else len(text)
    phrase = text[start:max(end, first_end)].strip(" ,.;:!?-")
    return phrase[:200] or " ".join(text.split())[:300]
