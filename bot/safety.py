"""Safety net: words that mean danger to people, whatever the classifier thought.

A citizen who writes "ça sent le gaz" in the middle of a report must get the emergency numbers
at once; this check runs before any ticket or generic answer.
"""
from __future__ import annotations

import re

from bot.textnorm import fold

_DANGER = re.compile(
    r"odeur de gaz|\bsent\b.{0,15}\bgaz\b|fuite de gaz|\bgaz\b.*\b(?:fort|partout|odeur)"
    r"|(?:il y a|ya|y a|y'a)\s+(?:le |un )?feu\b(?! (?:rouge|tricolore|vert|orange|d'artifice|de signalisation|de circulation|clignotant|au lac|de la saint|de camp|pieton))"
    r"|(?<!bouche d')(?<!bouche d )(?<!bouche a )(?<!borne a )(?<!borne )(?<!borne d')(?<!poteau )(?<!poteau d')(?<!exercice )(?<!alarme )(?<!exercice d')(?<!alarme d')\bincendie\b(?! (?:de poubelle|eteint))|\ben feu\b|prend feu|a pris feu|\bflammes\b|beaucoup de fumee|fumee (?:noire|epaisse)"
    r"|inconscient|ne respire plus|respire plus|fait un malaise|(?<!donne une )(?<!failli faire une )(?<!file une )crise cardiaque|saigne beaucoup|gravement blesse"
    r"|(?:cable|fil)s? electrique.{0,20}(?:a terre|par terre|tombe|arrache|etincel)|va s'effondrer|s'est effondre"
)
_VIOLENCE = re.compile(
    r"\b(?:me|nous|la|le|les) (?:frappe|frappent|bat|battent|tabasse|cogne)\b|(?:m'a|l'a|les a) (?:frappe|battu|tabasse)"
    r"|violences? conjugales?|va me tuer|menace de (?:me|nous) tuer|menace avec un couteau|avec un couteau"
    r"|(?:enfant|gamin|bebe|petit|petite|fille|fils)\b.{0,40}\b(?:battu|maltraite|en danger|enferme|abandonne seul)|se fait (?:agresser|frapper|tabasser)|agression en cours"
)
_SUICIDE = re.compile(
    r"suicid|(?<!failli )(?<!manque de )me tuer\b|en finir\b(?! avec (?:cette|ce|cet|ces|mon|ma|mes|votre|vos|le|la|les) (?!vie\b))|plus envie de vivre|envie de mourir|veux mourir|me foutre en l'air"
    r"|mettre fin a mes jours|plus la force de vivre|a quoi bon vivre"
)


def danger_reason(text: str | None) -> str | None:
    """The urgent hand-off reason the text calls for, or None."""
    folded = fold(text or "")
    if not folded:
        return None
    if _SUICIDE.search(folded):
        return "distress_suicide"
    if _VIOLENCE.search(folded):
        return "distress_violence"
    if _DANGER.search(folded):
        return "distress_danger"
    return None
