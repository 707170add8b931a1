"""The commune's addresses and named places: loading them, and understanding the places people write.

``load`` fills the ``address`` and ``named_place`` tables from the commune's Base Adresse Nationale
CSV file and its list of named places (schools, parks, the station...). ``match`` finds, in free
text ("le lampadaire est mort devant le 12 rue des tilleuls depuis hier"), the address, street,
named place or street corner meant, with a clean French label and a position; ``nearest`` names
the address nearest to a position (a Telegram pin).

Pure domain code: SQLAlchemy only. Matching runs on an in-memory copy of the tables (a
"gazetteer"), rebuilt when the tables change (a cheap fingerprint query tells).
"""
from __future__ import annotations

import csv
import math
import re
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, func, insert, select

from bot.models import Address, NamedPlace

try:  # optional: a C implementation of the edit distance
    from rapidfuzz.distance import OSA as _RAPIDFUZZ_OSA  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    _RAPIDFUZZ_OSA = None

EARTH_RADIUS_M = 6_371_000.0
NEAREST_MAX_M = 500.0
MIN_CONFIDENCE = 0.4  # below, a match is a guess: the caller keeps the citizen's words
_BATCH = 5000


class PlacesError(Exception):
    """A file that cannot be loaded (missing, unreadable, not the expected layout). French message."""


@dataclass(frozen=True)
class PlaceMatch:
    """A place understood in a text, or the address nearest to a position.

    ``kind``: address | street | place | corner (``match``), pin (``nearest``).
    ``words``: the part of the text that was understood (empty for ``nearest``).
    """

    kind: str
    label: str
    lat: float
    lon: float
    confidence: float
    address_id: int | None = None
    place_id: int | None = None
    words: str = ""
    distance_m: float | None = None  # nearest(): from the position to the address


@dataclass
class LoadReport:
    addresses_file: Path
    places_file: Path | None
    addresses: int = 0
    streets: int = 0
    places: int = 0
    skipped_addresses: Counter = field(default_factory=Counter)  # reason (French) -> rows
    skipped_places: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return sum(self.skipped_addresses.values()) + sum(self.skipped_places.values())

    def lines(self) -> list[str]:
        """A French summary, one line per fact."""
        lines = [f"{_n(self.addresses)} adresse{_s(self.addresses)} chargée{_s(self.addresses)} "
                 f"({_n(self.streets)} voie{_s(self.streets)}) depuis {self.addresses_file.name}."]
        lines += _skipped_lines(self.skipped_addresses, "adresse")
        if self.places_file is not None:
            lines.append(f"{_n(self.places)} lieu{'x' if self.places > 1 else ''} nommé{_s(self.places)} "
                         f"chargé{_s(self.places)} depuis {self.places_file.name}.")
            lines += _skipped_lines(self.skipped_places, "lieu")
        else:
            lines.append("Aucun fichier de lieux nommés : aucun lieu chargé.")
        lines.append(f"Durée : {self.seconds:.1f} s.".replace(".", ",", 1))
        return lines


def _n(number: int) -> str:
    return f"{number:,}".replace(",", "\u202f")


def _s(number: int) -> str:
    return "s" if number > 1 else ""


def _skipped_lines(skipped: Counter, what: str) -> list[str]:
    total = sum(skipped.values())
    if not total:
        return []
    plural = "x" if what == "lieu" else "s"
    details = ", ".join(f"{_n(count)} {reason}" for reason, count in skipped.most_common())
    return [f"{_n(total)} ligne{_s(total)} ignorée{_s(total)} ({what}{plural if total > 1 else ''}) : {details}."]


# --- text normalisation --------------------------------------------------------------------------
_APOSTROPHES = "'’‘`´ʼ"
_BREAK_CHARS = frozenset(",;:!?()[]{}\n\r/|\\\"«»")
_LIGATURES = {"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss"}
_ELIDED = frozenset({"l", "d", "j", "m", "n", "s", "t", "c", "qu", "jusqu", "lorsqu", "puisqu", "quoiqu"})
_ABBREVIATIONS = {
    "av": "avenue", "ave": "avenue", "avn": "avenue", "aven": "avenue",
    "bd": "boulevard", "bld": "boulevard", "blvd": "boulevard", "bvd": "boulevard", "boul": "boulevard",
    "bl": "boulevard",
    "pl": "place", "chem": "chemin", "chm": "chemin", "imp": "impasse", "rte": "route",
    "fbg": "faubourg", "faub": "faubourg", "sq": "square", "pte": "porte", "res": "residence",
    "resid": "residence", "rdpt": "rond-point", "rpt": "rond-point", "ld": "lieu-dit",
    "ste": "sainte", "gal": "general", "pdt": "president", "dr": "docteur",
    "prof": "professeur", "cdt": "commandant",
}
# Abbreviations that are also words: expanded only before an article ("ch. de la Fontaine").
_BEFORE_ARTICLE = {"ch": "chemin", "all": "allee", "qu": "quai", "pass": "passage"}
_ARTICLE_NEXT = frozenset({"de", "du", "des", "d", "la", "le", "les", "l"})
_ARTICLES = frozenset({"le", "la", "les", "l", "de", "du", "des", "d", "au", "aux", "the", "of"})
_MERGES = {("rond", "point"): "rond-point", ("rd", "pt"): "rond-point", ("lieu", "dit"): "lieu-dit",
           ("giratoire",): "rond-point"}
_SUFFIXES = {"bis": "bis", "ter": "ter", "quater": "quater", "quinquies": "quinquies"}
_NUMBER_MARKERS = frozenset({"n", "no", "num", "numero", "nr", "nro", "number"})


@dataclass
class _Tok:
    text: str  # normalised
    start: int  # span in the original text
    end: int
    brk: bool  # punctuation (a phrase break) between the previous token and this one
    attached: bool  # no separator before it ("12bis")
    cap: bool  # written with a capital initial
    elided: bool = False  # "l'", "qu'"


def _fold_with_offsets(text: str) -> tuple[str, list[int]]:
    chars: list[str] = []
    offsets: list[int] = []
    for index, char in enumerate(text):
        if char in _APOSTROPHES:
            pieces = "'"
        elif char in _LIGATURES:
            pieces = _LIGATURES[char]
        else:
            pieces = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)).lower()
        for piece in pieces:
            chars.append(piece)
            offsets.append(index)
    return "".join(chars), offsets


_WORD = re.compile(r"[a-z]+|[0-9]+")


def _tokens(text: str) -> list[_Tok]:
    """Normalised tokens with their place in the original text."""
    folded, offsets = _fold_with_offsets(text or "")
    raw: list[_Tok] = []
    previous_end = 0
    for found in _WORD.finditer(folded):
        separator = folded[previous_end:found.start()]
        word = found.group()
        brk = any(c in _BREAK_CHARS for c in separator)
        if "." in separator and raw:  # "r. des Tilleuls": a dot after an abbreviation is no break
            before = raw[-1].text
            if not (before in _ABBREVIATIONS or before in _BEFORE_ARTICLE or len(before) <= 2
                    or before in ("st", "ste", "r")):
                brk = True
        start, end = offsets[found.start()], offsets[found.end() - 1] + 1
        elided = folded[found.end():found.end() + 1] == "'" and word in _ELIDED
        raw.append(_Tok(word, start, end, brk, bool(raw) and separator == "", text[start:start + 1].isupper(), elided))
        previous_end = found.end()
    return _expand(raw)


def _expand(raw: list[_Tok]) -> list[_Tok]:
    out: list[_Tok] = []
    index = 0
    while index < len(raw):
        tok = raw[index]
        word = tok.text
        nxt = raw[index + 1] if index + 1 < len(raw) else None
        merged = False
        for parts, replacement in _MERGES.items():
            chunk = raw[index:index + len(parts)]
            if tuple(t.text for t in chunk) == parts and not any(t.brk for t in chunk[1:]):
                out.append(_Tok(replacement, tok.start, chunk[-1].end, tok.brk, tok.attached, tok.cap))
                index += len(parts)
                merged = True
                break
        if merged:
            continue
        if not tok.elided:
            if word in _ABBREVIATIONS and not tok.attached:
                word = _ABBREVIATIONS[word]
            elif word in ("r", "ru") and nxt is not None and nxt.text.isalpha() and not tok.attached:
                word = "rue"
            elif word in _BEFORE_ARTICLE and nxt is not None and nxt.text in _ARTICLE_NEXT:
                word = _BEFORE_ARTICLE[word]
            elif word == "st" and not tok.attached:
                word = "saint" if nxt is not None and nxt.text.isalpha() and not nxt.brk else "street"
        out.append(_Tok(word, tok.start, tok.end, tok.brk, tok.attached, tok.cap, tok.elided))
        index += 1
    return out


def normalise(text: str) -> str:
    """Lower case, no accents, punctuation and apostrophes to spaces, abbreviations expanded:
    "L'École, 12 r. des Tilleuls" -> "l ecole 12 rue des tilleuls"."""
    return " ".join(tok.text for tok in _tokens(text))


# Street types (first word of a street name), canonical form. The core ones are always read as a
# street type in a message; the others only when the commune has such a street.
_STREET_TYPES = {
    "rue": "rue", "ruelle": "ruelle", "avenue": "avenue", "boulevard": "boulevard", "place": "place",
    "chemin": "chemin", "impasse": "impasse", "allee": "allee", "route": "route", "quai": "quai",
    "square": "square", "cours": "cours", "cote": "cote", "residence": "residence", "rond-point": "rond-point",
    "faubourg": "faubourg", "passage": "passage", "sentier": "sentier", "voie": "voie",
    "lotissement": "lotissement", "hameau": "hameau", "lieu-dit": "lieu-dit", "cite": "cite",
    "parvis": "parvis", "esplanade": "esplanade", "promenade": "promenade", "mail": "mail", "porte": "porte",
    "venelle": "venelle", "clos": "clos", "montee": "montee", "traverse": "traverse", "domaine": "domaine",
    "carrefour": "carrefour", "levee": "levee", "digue": "digue", "zone": "zone",
}
_CORE_TYPES = frozenset({"rue", "avenue", "boulevard", "place", "chemin", "impasse", "allee", "route", "quai",
                         "square", "rond-point", "residence", "lieu-dit", "cours", "faubourg"})
_ENGLISH_TYPES = {"street": "rue", "road": "route", "lane": "allee", "avenue": "avenue", "boulevard": "boulevard",
                  "square": "square"}
# A typed street type: "avnue", "boulvard"... (never these real words)
_TYPE_TYPO_TARGETS = ("avenue", "boulevard", "chemin", "impasse", "allee", "place", "residence", "faubourg",
                      "rond-point", "route")
_NOT_TYPE_TYPOS = frozenset({"toute", "plage", "glace", "aller", "allez", "alles", "allai", "allait", "allees",
                             "routes", "chemins", "places", "avenues", "impasses", "roule", "boute", "soute",
                             "voute", "joute", "ponce", "plaie", "plate", "plane", "cheminee", "chemise", "palace"})


def _street_type(name_tokens: list[str]) -> tuple[str, int]:
    """The street type of a normalised street name and how many tokens it takes ("" for a lieu-dit)."""
    if name_tokens and name_tokens[0] in _STREET_TYPES:
        return _STREET_TYPES[name_tokens[0]], 1
    return "", 0


def street_key(street: str) -> str:
    """The matching key of a street name: normalised, without its type and articles.
    "Rue des Tilleuls" -> "tilleuls", "Rue du Château d'Eau" -> "chateau eau"."""
    words = normalise(street).split()
    _type, skip = _street_type(words)
    rest = [w for w in words[skip:] if w not in _ARTICLES]
    return " ".join(rest) or " ".join(words)


def place_key(name: str) -> str:
    """The matching key of a named place: normalised, without articles and parenthesised notes."""
    name = re.sub(r"\([^)]*\)", " ", name)
    return " ".join(w for w in normalise(name).split() if w not in _ARTICLES)


# --- edit distances -------------------------------------------------------------------------------
def _osa(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (Levenshtein + transpositions), or limit + 1 beyond limit."""
    if a == b:
        return 0
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    if _RAPIDFUZZ_OSA is not None:  # pragma: no cover - optional dependency
        return min(limit + 1, _RAPIDFUZZ_OSA.distance(a, b))
    previous2: list[int] | None = None
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        best = current[0]
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if previous2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                value = min(value, previous2[j - 2] + 1)
            current[j] = value
            best = min(best, value)
        if best > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)


def _allowed_edits(key: str) -> int:
    length = len(key.replace(" ", ""))
    return 0 if length < 4 else 1 if length < 8 else 2


def _singular(text: str) -> str:
    return " ".join(w[:-1] if len(w) > 3 and w[-1] in "sx" else w for w in text.split())


_PHONETIC_RULES = [(re.compile(p), r) for p, r in (
    (r"(.)\1+", r"\1"), (r"ph", "f"), (r"th", "t"), (r"qu", "k"), (r"ck", "k"), (r"c([aou])", r"k\1"),
    (r"c([eiy])", r"s\1"), (r"gu([ei])", r"g\1"), (r"eau|au", "o"), (r"ai|ei", "e"), (r"y", "i"),
    (r"(?<!c)h", ""), (r"(?<=[a-z])[estdx]+\b", ""), (r"(.)\1+", r"\1"),
)]


def _phonetic(text: str) -> str:
    """A rough French sound key: "médiatek" and "médiathèque" share "mediatek" -> "mediatek"."""
    for pattern, replacement in _PHONETIC_RULES:
        text = pattern.sub(replacement, text)
    return text


def _similar_word(word: str, key: str, anchored: bool = False) -> int | None:
    """Edits between two single words (None: too far): typos keep the first letter. ``anchored``:
    the word is one of a name of several words, so sound-alike short words are forgiven too."""
    if word == key:
        return 0
    sing_w, sing_k = _singular(word), _singular(key)
    if sing_w == sing_k:
        return 0
    limit = _allowed_edits(key)
    if limit and word[:1] == key[:1]:
        edits = _osa(sing_w, sing_k, limit)
        if edits <= limit:
            return edits
    if len(key) >= (4 if anchored else 6) and word[:1] == key[:1]:
        sound_w, sound_k = _phonetic(word), _phonetic(key)
        if len(sound_k) >= 3 and sound_w == sound_k:
            return 1
    return None


def _similar(window: str, key: str) -> int | None:
    """Edits between a written name and a key (None: too far). Plural and sound-alike forgiven.

    Names of several words are compared word by word (each must be close: "école on" is not
    "école des Pins"), or as a whole when the words were split or joined ("paulbert")."""
    if window == key:
        return 0
    if not window or not key:
        return None
    words, key_words = window.split(), key.split()
    if len(words) == len(key_words):
        total = 0
        for word, key_word in zip(words, key_words):
            edits = _similar_word(word, key_word, anchored=len(words) > 1)
            if edits is None:
                break
            total += edits
        else:
            return total if total <= max(1, _allowed_edits(key)) else None
        if len(words) > 1:
            return None
    if window.replace(" ", "") == key.replace(" ", ""):
        return 1
    if len(words) != len(key_words) and abs(len(words) - len(key_words)) == 1:
        limit = min(1, _allowed_edits(key))
        if limit and window[0] == key[0] and _osa(_singular(window), _singular(key), limit) <= limit:
            return limit
    if len(key.replace(" ", "")) >= 8 and window[0] == key[0]:
        if _phonetic(window) == _phonetic(key):
            return 1
    return None


@dataclass
class _Addr:
    id: int
    number: int | None
    suffix: str
    lat: float
    lon: float


@dataclass
class _Street:
    name: str
    type: str
    key: str
    addresses: list[_Addr]  # sorted by number, suffix
    by_number: dict[tuple[int, str], _Addr]

    def middle(self) -> _Addr:
        return self.addresses[len(self.addresses) // 2]

    def extent_m(self) -> float:
        first, last = self.addresses[0], self.addresses[-1]
        return distance_m(first.lat, first.lon, last.lat, last.lon)


@dataclass
class _Place:
    id: int
    name: str
    kind: str
    number: str
    street: str
    lat: float
    lon: float

    @property
    def label(self) -> str:
        where = " ".join(part for part in (self.number, self.street) if part)
        return f"{self.name} ({where})" if where else self.name


# Words that name a kind of place, and what citizens call it: used when the commune has only one
# place of that kind ("devant la médiathèque", "à la piscine").
_KIND_WORDS = {
    "mairie": ["mairie", "hôtel de ville", "town hall", "city hall"],
    "police_municipale": ["police municipale", "poste de police", "police", "commissariat"],
    "mediatheque": ["médiathèque", "bibliothèque", "library"],
    "bibliotheque": ["bibliothèque", "médiathèque", "library"],
    "piscine": ["piscine", "swimming pool", "pool", "centre aquatique"],
    "stade": ["stade", "stadium", "terrain de foot"],
    "gymnase": ["gymnase", "gym"],
    "creche": ["crèche", "halte-garderie", "multi-accueil"],
    "cimetiere": ["cimetière", "cemetery"],
    "gare": ["gare", "gare SNCF", "train station", "station"],
    "ccas": ["CCAS", "centre communal d'action sociale"],
    "services_techniques": ["services techniques", "centre technique", "CTM"],
    "pont": ["pont", "bridge"],
    "decheterie": ["déchèterie", "déchetterie", "décharge", "recycling centre"],
    "eglise": ["église", "church"],
    "poste": ["poste", "bureau de poste", "post office"],
    "salle": [],
    "ecole": [],
    "parc": [],
    "square": [],
}
# Words that can never begin a street name written without a type after a number ("depuis 2 jours").
_COMMON_WORDS = frozenset("""
jour jours nuit nuits an ans annee annees mois semaine semaines heure heures h min minute minutes seconde
secondes fois euro euros eur personne personnes enfant enfants voiture voitures lampadaire lampadaires
poubelle poubelles trou trous metre metres m km kilo kilos kg litre litres pourcent pour cent
janvier fevrier mars avril mai juin juillet aout septembre octobre novembre decembre semaine
lundi mardi mercredi jeudi vendredi samedi dimanche h30 heure et ou fois chien chiens chat chats arbre arbres
place places plus moins pieces piece sac sacs bac bacs
""".split())
_FUNCTION_WORDS = frozenset("""
le la les l de du des d un une et ou est sont a au aux en y il elle ils elles on je j nous vous ce c ca cela
qui que qu ne n pas depuis devant derriere pres face cote coin angle vers sur sous dans chez pour par avec
sans mais car donc alors merci svp stp bonjour bonsoir salut hier aujourd hui demain cette cet mon ma mes
ton ta tes son sa ses notre nos votre vos leur leurs tout toute tous toutes juste il ya hello
in at on the of near front and is since please thanks opposite corner next to
""".split())
_TITLES = frozenset({"general", "marechal", "president", "docteur", "professeur", "commandant", "capitaine",
                     "colonel", "lieutenant", "amiral", "abbe", "pere", "mgr", "monseigneur", "maitre"})
# Words between a number and a street written after it: "rue Gambetta, au niveau du numéro 5".
_NUMBER_AFTER_FILLERS = frozenset({"au", "a", "niveau", "hauteur", "du", "de", "la", "l", "devant", "devan", "le",
                                   "en", "face", "pres", "vers", "numero", "n", "no", "num", "nr", "nro", "near",
                                   "number", "opposite", "outside", "at"})
# How citizens shorten place words.
_PLACE_SYNONYMS = {"biblio": "bibliotheque", "bibli": "bibliotheque", "bibliothek": "bibliotheque",
                   "mediatek": "mediatheque", "mairi": "mairie", "dechetrie": "decheterie", "dechet": "decheterie",
                   "decheteri": "decheterie", "crech": "creche", "gym": "gymnase"}
# Words a place name may hold or not: "école (maternelle) Paul-Bert".
_PLACE_FILLERS = frozenset({"maternelle", "elementaire", "primaire", "publique", "groupe", "scolaire"})
# French words one letter away from a place word: never read as a typo of it.
_NOT_PLACE_TYPOS = frozenset({"maire", "maires", "marie", "maries", "mariee", "mariees", "garer", "garee", "garent",
                              "gares", "pons", "ponts", "stades", "parce", "salles", "stage"})
_CORNER_WORDS = frozenset({"coin", "angle", "croisement", "intersection", "carrefour", "corner", "jonction",
                           "croise", "embranchement"})
_CONNECTORS = frozenset({"et", "avec", "x", "and"})


def _fold_plain(text: str) -> str:
    return " ".join(normalise(text).split())


def _proper_name_alone(name: str, proper: list[str]) -> bool:
    """May a place be called by its proper name alone? "Les Ondines", "la Garenne", "Jacques-Brel"
    yes; "Gare de Valbourg" no (the town's name is no place)."""
    words = normalise(re.sub(r"\([^)]*\)", " ", name)).split()
    if proper and proper[0] in words:
        index = words.index(proper[0])
        if index > 0 and words[index - 1] in ("le", "la", "les", "l"):
            return True
    if len(proper) >= 2 and proper[0] not in ("saint", "sainte") and re.search(r"\w-\w", name):
        return True
    return False


class _Gazetteer:
    def __init__(self, streets: list[_Street], places: list[_Place]):
        self.streets = streets
        self.places = places
        self.by_key: dict[str, list[_Street]] = {}
        for street in streets:
            self.by_key.setdefault(street.key, []).append(street)
        self.keys = list(self.by_key)
        self.digit_keys = any(key[:1].isdigit() for key in self.keys)  # "Rue du 8-Mai-1945"
        self.partial: dict[str, set[str]] = {}  # a first or last part of a key -> the keys
        for key in self.keys:
            words = key.split()
            for k in range(1, len(words)):
                for part in (" ".join(words[:k]), " ".join(words[-k:])):
                    if len(part.replace(" ", "")) >= 4 and part not in _ARTICLES:
                        self.partial.setdefault(part, set()).add(key)
        present = {street.type for street in streets if street.type}
        self.types = {word: canonical for word, canonical in _STREET_TYPES.items()
                      if word in _CORE_TYPES or canonical in present}
        self.vocabulary = {w for street in streets for w in normalise(street.name).split()}
        self.vocabulary |= {w for place in places for w in normalise(place.name).split()}
        self.place_vocabulary = {w for place in places for w in normalise(place.name).split()}
        self.aliases: dict[str, list[tuple[_Place, float]]] = {}
        self.kind_aliases: set[str] = set()  # "mairie", "piscine": a kind of place, not its name
        self._build_aliases()
        # How the one-word aliases are spelt with accents: "garé" is not the "gare".
        self.accented: dict[str, set[str]] = {}
        for phrase in [p.name for p in places] + [w for words in _KIND_WORDS.values() for w in words]:
            for word in re.findall(r"[^\W\d_]+", phrase.lower()):
                self.accented.setdefault(_fold_plain(word), set()).add(word)
        self.alias_firsts: dict[str, list[str]] = {}
        for alias in self.aliases:
            self.alias_firsts.setdefault(alias.split()[0], []).append(alias)

    def _alias(self, alias: str, place: _Place, confidence: float) -> None:
        if not alias:
            return
        known = self.aliases.setdefault(alias, [])
        if all(other is not place for other, _c in known):
            known.append((place, confidence))

    def _build_aliases(self) -> None:
        kinds = Counter(place.kind for place in self.places)
        generic = {w for words in _KIND_WORDS.values() for phrase in words for w in _fold_plain(phrase).split()}
        generic |= {"ecole", "elementaire", "maternelle", "primaire", "groupe", "scolaire", "salle", "parc",
                    "square", "jardin", "polyvalente", "municipal", "municipale", "communal", "communale",
                    "centre", "stade", "gymnase", "piscine", "fetes", "hotel", "ville"}
        for place in self.places:
            key = " ".join(w for w in place_key(place.name).split() if w not in _PLACE_FILLERS)
            self._alias(key, place, 0.92)
            words = key.split()
            # "ecole elementaire victor hugo" -> also "ecole victor hugo"; the proper name alone
            head = [w for w in words if w in generic]
            proper = [w for w in words if w not in generic]
            if head and proper:
                self._alias(" ".join([head[0]] + proper), place, 0.9)
                alone = " ".join(proper)
                if (alone not in self.by_key and alone not in self.partial and alone not in _COMMON_WORDS
                        and _proper_name_alone(place.name, proper)):
                    self._alias(alone, place, 0.8)
            if kinds[place.kind] == 1:
                for phrase in _KIND_WORDS.get(place.kind, []):
                    self.kind_aliases.add(place_key(phrase))
                    self._alias(place_key(phrase), place, 0.85)
            if head and len(head) >= 2 and head[0] == "salle":  # "salle des fêtes", "salle polyvalente"
                phrase = " ".join(head)
                if sum(1 for p in self.places if place_key(p.name).startswith(phrase)) == 1:
                    self._alias(phrase, place, 0.85)


_CACHE_SIZE = 4
_cache: dict[str, tuple[tuple, _Gazetteer]] = {}  # database URL -> (tables' fingerprint, gazetteer)
_cache_lock = threading.Lock()


def _fingerprint(session) -> tuple:
    addresses = session.execute(select(func.count(Address.id), func.max(Address.id), func.sum(Address.lat),
                                       func.sum(Address.lon))).one()
    places = session.execute(select(func.count(NamedPlace.id), func.max(NamedPlace.id),
                                    func.sum(NamedPlace.lat))).one()
    return tuple(addresses) + tuple(places)


def _gazetteer(store) -> _Gazetteer:
    with store.session() as session:
        fingerprint = _fingerprint(session)
        cached = _cache.get(store.url)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        rows = session.execute(select(Address.id, Address.number, Address.suffix, Address.street,
                                      Address.street_key, Address.lat, Address.lon)).all()
        place_rows = session.execute(select(NamedPlace.id, NamedPlace.name, NamedPlace.kind, NamedPlace.number,
                                            NamedPlace.street, NamedPlace.lat, NamedPlace.lon)
                                     .order_by(NamedPlace.id)).all()
    grouped: dict[str, list[_Addr]] = {}
    keys: dict[str, str] = {}
    for row in rows:
        number = int(row.number) if row.number and row.number.isdigit() else None
        grouped.setdefault(row.street, []).append(_Addr(row.id, number, (row.suffix or "").lower(), row.lat, row.lon))
        keys.setdefault(row.street, row.street_key)
    streets = []
    for name, addresses in grouped.items():
        addresses.sort(key=lambda a: (a.number if a.number is not None else -1, a.suffix))
        by_number = {(a.number, a.suffix): a for a in addresses if a.number is not None}
        street_type, _skip = _street_type(normalise(name).split())
        streets.append(_Street(name, street_type, keys[name] or street_key(name), addresses, by_number))
    places = [_Place(r.id, r.name, r.kind or "", r.number or "", r.street or "", r.lat, r.lon) for r in place_rows]
    gazetteer = _Gazetteer(streets, places)
    with _cache_lock:
        _cache[store.url] = (fingerprint, gazetteer)
        while len(_cache) > _CACHE_SIZE:  # the oldest database first (tests make one per test)
            _cache.pop(next(iter(_cache)))
    return gazetteer


# --- loading -------------------------------------------------------------------------------------
def _read_csv(path: Path, what: str, required: tuple[str, ...]) -> tuple[list[str], "csv.reader"]:
    if not path.is_file():
        raise PlacesError(f"Fichier {what} introuvable : {path}")
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
        reader = csv.reader(handle, delimiter=";")
        header = next(reader, None)
    except UnicodeDecodeError as exc:
        raise PlacesError(f"Le fichier {what} {path} n'est pas en UTF-8 ({exc.reason}).") from exc
    except OSError as exc:
        raise PlacesError(f"Le fichier {what} {path} est illisible : {exc.strerror or exc}.") from exc
    if header is None:
        handle.close()
        raise PlacesError(f"Le fichier {what} {path} est vide.")
    header = [name.strip().lower() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        handle.close()
        columns = ", ".join(f"« {name} »" for name in missing)
        raise PlacesError(f"Le fichier {what} {path} n'a pas la forme attendue : colonne{_s(len(missing))} "
                          f"{columns} manquante{_s(len(missing))} (en-tête lu : {';'.join(header)[:200]}). "
                          "Séparateur « ; » attendu.")
    return header, _closing_rows(handle, reader, path, what)


def _closing_rows(handle, reader, path: Path, what: str):
    try:
        yield from reader
    except UnicodeDecodeError as exc:
        raise PlacesError(f"Le fichier {what} {path} n'est pas en UTF-8 ({exc.reason}).") from exc
    except csv.Error as exc:
        raise PlacesError(f"Le fichier {what} {path} est mal formé (ligne {reader.line_num}) : {exc}.") from exc
    finally:
        handle.close()


def _coordinate(value: str, bound: float) -> float | None:
    value = (value or "").strip().replace(",", ".")
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and -bound <= number <= bound else None


_NUMBER_WITH_SUFFIX = re.compile(r"(\d{1,5})\s*([a-z]{0,10})")


def _read_addresses(path: Path) -> tuple[list[dict], Counter, int]:
    header, rows = _read_csv(path, "des adresses", ("nom_voie", "lon", "lat"))
    column = {name: index for index, name in enumerate(header)}
    i_voie, i_lon, i_lat = column["nom_voie"], column["lon"], column["lat"]
    i_id, i_num, i_rep, i_cp = (column.get(name) for name in ("id", "numero", "rep", "code_postal"))
    width = max(column.values()) + 1
    needed = max(i_voie, i_lon, i_lat) + 1
    keys: dict[str, str] = {}
    seen: set[str] = set()
    skipped: Counter = Counter()
    out: list[dict] = []
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < needed:
            skipped["ligne incomplète"] += 1
            continue
        if len(row) < width:
            row = row + [""] * (width - len(row))
        street = " ".join(row[i_voie].split())
        if not street:
            skipped["sans nom de voie"] += 1
            continue
        lon, lat = _coordinate(row[i_lon], 180.0), _coordinate(row[i_lat], 90.0)
        if lon is None or lat is None:
            skipped["sans coordonnées lisibles"] += 1
            continue
        number, suffix = "", (row[i_rep].strip().lower() if i_rep is not None else "")
        raw = row[i_num].strip().lower() if i_num is not None else ""
        if raw and raw != "99999":  # 99999: the BAN's "no number" (a lieu-dit)
            parsed = _NUMBER_WITH_SUFFIX.fullmatch(raw)
            if not parsed or int(parsed.group(1)) == 0:
                skipped["numéro illisible"] += 1
                continue
            number = str(int(parsed.group(1)))
            suffix = suffix or parsed.group(2)
        ban_id = row[i_id].strip() if i_id is not None else ""
        if ban_id:
            if ban_id in seen:
                skipped["identifiant en double"] += 1
                continue
            seen.add(ban_id)
        key = keys.get(street)
        if key is None:
            key = keys[street] = street_key(street)[:200]
        out.append({"ban_id": ban_id[:64] or None, "number": number, "suffix": suffix[:16] or None,
                    "street": street[:200], "street_key": key,
                    "postcode": (row[i_cp].strip()[:10] or None) if i_cp is not None else None,
                    "lon": lon, "lat": lat})
    return out, skipped, len(keys)


def _read_places(path: Path, addresses: list[dict]) -> tuple[list[dict], Counter]:
    header, rows = _read_csv(path, "des lieux", ("nom", "lon", "lat"))
    column = {name: index for index, name in enumerate(header)}
    width = max(column.values()) + 1
    positions = {(a["street_key"], a["number"]): (a["lat"], a["lon"]) for a in addresses if not a["suffix"]}

    def cell(row: list[str], name: str) -> str:
        index = column.get(name)
        return " ".join(row[index].split()) if index is not None else ""

    skipped: Counter = Counter()
    out: list[dict] = []
    for row in rows:
        if not any(c.strip() for c in row):
            continue
        if len(row) < width:
            row = row + [""] * (width - len(row))
        name = cell(row, "nom")
        if not name:
            skipped["sans nom"] += 1
            continue
        number, street = cell(row, "numero"), cell(row, "nom_voie")
        lon, lat = _coordinate(cell(row, "lon"), 180.0), _coordinate(cell(row, "lat"), 90.0)
        if lon is None or lat is None:  # the position of its address, when the address is known
            position = positions.get((street_key(street), str(int(number)) if number.isdigit() else number))
            if position is None:
                skipped["sans coordonnées lisibles"] += 1
                continue
            lat, lon = position
        out.append({"name": name[:200], "name_key": place_key(name)[:200], "kind": cell(row, "type")[:64] or None,
                    "number": number[:16] or None, "street": street[:200] or None, "lon": lon, "lat": lat})
    return out, skipped


def load(store, addresses_csv: Path, places_csv: Path | None = None) -> LoadReport:
    """Replace the commune's addresses and named places by the files' content (one transaction).

    Bad rows are skipped and counted; a missing file or a wrong layout raises ``PlacesError``
    before the tables are touched."""
    started = time.perf_counter()
    if addresses_csv is None:
        raise PlacesError("Aucun fichier des adresses n'est configuré (collectivite.yml, section « geography: », "
                          "clé « addresses »).")
    addresses_csv = Path(addresses_csv)
    places_csv = Path(places_csv) if places_csv is not None else None
    addresses, skipped, streets = _read_addresses(addresses_csv)
    if not addresses:  # never replace the commune's addresses by nothing
        raise PlacesError(f"Le fichier des adresses {addresses_csv} ne contient aucune adresse lisible "
                          f"({_n(sum(skipped.values()))} ligne{_s(sum(skipped.values()))} ignorée"
                          f"{_s(sum(skipped.values()))}) : rien n'a été changé.")
    places, skipped_places = _read_places(places_csv, addresses) if places_csv is not None else ([], Counter())
    with store.session() as session, session.begin():
        session.execute(delete(NamedPlace))
        session.execute(delete(Address))
        for first in range(0, len(addresses), _BATCH):
            session.execute(insert(Address), addresses[first:first + _BATCH])
        if places:
            session.execute(insert(NamedPlace), places)
    with _cache_lock:
        _cache.pop(store.url, None)
    return LoadReport(addresses_csv, places_csv, len(addresses), streets, len(places), skipped, skipped_places,
                      time.perf_counter() - started)


def loaded(store) -> bool:
    """True once the commune's addresses are in the database."""
    with store.session() as session:
        return session.execute(select(Address.id).limit(1)).first() is not None


# --- distances and the nearest address -------------------------------------------------------------
def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _address_label(number: str | int | None, suffix: str | None, street: str) -> str:
    if number in (None, ""):
        return street
    return f"{number} {suffix} {street}" if suffix else f"{number} {street}"


def _near_label(number: str | int | None, suffix: str | None, street: str) -> str:
    if number in (None, ""):
        return f"près de {street}" if not street[:4].lower() in ("les ", "le l") else f"près du lieu-dit {street}"
    return f"près du {_address_label(number, suffix, street)}"


def nearest(store, lat: float, lon: float) -> PlaceMatch | None:
    """The address nearest to a position ("près du 14 Rue Pasteur"), or None beyond 500 m of any."""
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    columns = (Address.id, Address.number, Address.suffix, Address.street, Address.lat, Address.lon)
    with store.session() as session:
        for radius in (80.0, NEAREST_MAX_M):  # a small box first: a pin is usually on an address
            dlat = radius / 111_320.0
            dlon = radius / (111_320.0 * max(0.01, math.cos(math.radians(lat))))
            rows = session.execute(select(*columns).where(Address.lat.between(lat - dlat, lat + dlat),
                                                          Address.lon.between(lon - dlon, lon + dlon))).all()
            if rows:
                best = min(rows, key=lambda r: distance_m(lat, lon, r.lat, r.lon))
                distance = distance_m(lat, lon, best.lat, best.lon)
                if distance <= radius or radius == NEAREST_MAX_M:
                    break
        else:
            return None
    if distance > NEAREST_MAX_M:
        return None
    confidence = round(max(0.3, 0.95 - distance / 600.0), 2)
    return PlaceMatch("pin", _near_label(best.number, best.suffix, best.street), best.lat, best.lon, confidence,
                      address_id=best.id, distance_m=round(distance, 1))


# --- matching ------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    kind: str
    label: str
    lat: float
    lon: float
    confidence: float
    first: int  # token span of the whole match
    last: int
    address_id: int | None = None
    place_id: int | None = None
    name_span: tuple[int, int] | None = None  # a street's name tokens, when its type was written and fits
    street: _Street | None = None
    has_number: bool = False


@dataclass
class _StreetHit:
    streets: list[_Street]
    edits: int
    full: bool
    first: int  # name tokens
    last: int


class _Matcher:
    def __init__(self, gazetteer: _Gazetteer, text: str):
        self.g = gazetteer
        self.text = text
        self.toks = _tokens(text)
        self.words = [t.text for t in self.toks]
        # the words as place names use them: "groupe scolaire" is a school, "biblio" the library
        self.place_words = [_PLACE_SYNONYMS.get(w, w) for w in self.words]
        for index, word in enumerate(self.words[:-1]):
            if word == "groupe" and self.words[index + 1] == "scolaire":
                self.place_words[index] = "ecole"
        letters = [c for c in text if c.isalpha()]
        self.shouting = bool(letters) and sum(c.isupper() for c in letters) > 0.6 * len(letters)

    # -- helpers
    def _type_at(self, index: int) -> str | None:
        word = self.words[index]
        if self.toks[index].elided:
            return None
        if word == "cote" and index and self.words[index - 1] in ("a", "de", "du", "d", "sur", "mis"):
            return None  # "à côté de"
        if word in self.g.types:
            return self.g.types[word]
        return None

    def _typo_type_at(self, index: int) -> str | None:
        word = self.words[index]
        if len(word) < 5 or word in _NOT_TYPE_TYPOS or word in _FUNCTION_WORDS or word in self.g.vocabulary:
            return None
        for target in _TYPE_TYPO_TARGETS:
            if target in self.g.types and word[0] == target[0]:
                if _osa(word, target, 2 if len(target) >= 8 else 1) <= (2 if len(target) >= 8 else 1):
                    return self.g.types[target]
        return None

    def _name_tokens(self, first: int, limit: int = 6) -> list[int]:
        """Token indexes of a possible name starting at ``first`` (up to a break, a type or a number
        that is not part of a name)."""
        out: list[int] = []
        index = first
        while index < len(self.toks) and len(out) < limit:
            if index > first and self.toks[index].brk:
                break
            if index > first and self._type_at(index) is not None:
                break
            out.append(index)
            index += 1
        return out

    def _skip_articles(self, index: int) -> int:
        while index < len(self.toks) and self.words[index] in _ARTICLES and not self.toks[index].brk:
            index += 1
        return index

    def _continues(self, last: int) -> bool:
        """Does the written name go on after token ``last`` with an unknown proper name ("Moulin Rouge")?"""
        index = last + 1
        if self.shouting or index >= len(self.toks):
            return False
        tok = self.toks[index]
        return (not tok.brk and tok.cap and tok.text.isalpha() and tok.text not in _FUNCTION_WORDS
                and tok.text not in self.g.vocabulary and tok.text not in _STREET_TYPES
                and tok.text not in _ENGLISH_TYPES and tok.text not in _NUMBER_MARKERS and tok.text not in _SUFFIXES)

    def _unknown_after(self, last: int) -> bool:
        """Is token ``last`` followed, in the same phrase, by a word no street or place has ("rue jean zay")?"""
        index = last + 1
        if index >= len(self.toks) or self.toks[index].brk:
            return False
        word = self.words[index]
        return (word.isalpha() and word not in _FUNCTION_WORDS and word not in self.g.vocabulary
                and word not in _STREET_TYPES and word not in _ENGLISH_TYPES and word not in _NUMBER_MARKERS
                and word not in _SUFFIXES and len(word) > 2)

    def _street_hit(self, first: int, typed: bool, allow_partial: bool = True, strict: bool = False,
                    backwards_end: int | None = None) -> _StreetHit | None:
        """The best street whose key the tokens from ``first`` spell (or, with ``backwards_end``, the
        tokens ending there)."""
        if backwards_end is not None:
            spans = []
            for length in range(1, 5):
                start = backwards_end - length + 1
                if start < 0 or any(self.toks[i].brk for i in range(start + 1, backwards_end + 1)):
                    break
                spans.append((start, backwards_end))
        else:
            first = self._skip_articles(first)
            indexes = self._name_tokens(first)
            spans = [(first, indexes[k]) for k in range(len(indexes))] if indexes else []
        best: tuple | None = None
        for start, end in spans:
            if self.words[start] in _ARTICLES or self.words[end] in _ARTICLES:
                continue
            words = [self.words[i] for i in range(start, end + 1) if self.words[i] not in _ARTICLES]
            if not words:
                continue
            if words[0] in _NUMBER_MARKERS or self._type_at(start) is not None:
                continue
            window = " ".join(words)
            if not typed and (words[0] in _COMMON_WORDS or words[0] in _FUNCTION_WORDS):
                continue
            found = self._lookup(window, allow_partial and typed, strict)
            if found is None:
                continue
            keys, edits, full = found
            if self._continues(end) or (not full and self._unknown_after(end)):
                continue
            rank = (full, -edits, end - start)
            if best is None or rank > best[0]:
                best = (rank, keys, edits, full, start, end)
        if best is None:
            return None
        _rank, keys, edits, full, start, end = best
        streets = [s for key in keys for s in self.g.by_key[key]]
        return _StreetHit(streets, edits, full, start, end)

    def _lookup(self, window: str, allow_partial: bool, strict: bool) -> tuple[list[str], int, bool] | None:
        if window in self.g.by_key:
            return [window], 0, True
        if window[0].isdigit() and not self.g.digit_keys:
            return None
        best_edits, best_keys = 99, []
        for key in self.g.keys:
            if abs(len(key) - len(window)) > 2:
                continue
            edits = _similar(window, key)
            if edits is None or (strict and (edits > 1 or len(key) < 7)):
                continue
            if edits < best_edits:
                best_edits, best_keys = edits, [key]
            elif edits == best_edits:
                best_keys.append(key)
        if best_keys:
            return best_keys, best_edits, True
        words = window.split()
        if len(words) > 1 and words[0] in _TITLES:  # "rue du Général Leclerc" for "Rue du Maréchal-Leclerc"
            found = self._lookup(" ".join(words[1:]), True, strict)
            if found is not None:
                keys, edits, _full = found
                titled = [key for key in keys if key.split()[0] in _TITLES or len(key.split()) == 1]
                if titled:
                    return titled, edits, True
        if allow_partial and len(window.replace(" ", "")) >= 4:
            keys = self.g.partial.get(window)
            if keys:
                return (sorted(keys), 0, False) if len(keys) == 1 else None
            if len(window) >= 6:
                near = {key for part, keys in self.g.partial.items() if abs(len(part) - len(window)) <= 1
                        and part[0] == window[0] and _osa(_singular(window), _singular(part), 1) <= 1 for key in keys}
                if len(near) == 1:
                    return sorted(near), 1, False
        return None

    @staticmethod
    def _pick(streets: list[_Street], written_type: str | None) -> tuple[_Street, bool, bool]:
        """The street meant among those sharing a key: (street, type fits, ambiguous)."""
        if written_type is not None:
            fitting = [s for s in streets if s.type == written_type
                       or (written_type == "lieu-dit" and s.type == "")]
            if fitting:
                return fitting[0], True, len(fitting) > 1
        if len(streets) == 1:
            return streets[0], written_type is None, False
        untyped = [s for s in streets if s.type == ""]
        if written_type is None and untyped:
            return untyped[0], True, len(untyped) > 1
        return max(streets, key=lambda s: len(s.addresses)), False, True

    def _number_ok(self, index: int) -> bool:
        """Is the digit token at ``index`` a house number (not "2 jours", "8 h", "2024")?"""
        word = self.words[index]
        if not word.isdigit() or len(word) > 4 or int(word) == 0:
            return False
        after = index + 1
        if after < len(self.toks) and self.toks[after].attached and self.words[after] not in _SUFFIXES \
                and not (len(self.words[after]) == 1 and self.words[after] in "abcdefgh"):
            return False  # "8h", "3eme", "2km"
        if after < len(self.toks) and not self.toks[after].brk:
            nxt = self.words[after]
            if nxt in _COMMON_WORDS or nxt in ("h", "heure", "heures", "min", "eme", "e", "er", "ieme", "pour"):
                return False
        return True

    def _suffix_at(self, index: int) -> str | None:
        if index >= len(self.toks):
            return None
        word = self.words[index]
        if word in _SUFFIXES and not self.toks[index].brk:
            return _SUFFIXES[word]
        if self.toks[index].attached and len(word) == 1 and word in "abcdefgh":
            return word
        return None

    def _number_before(self, index: int) -> tuple[int, str, int] | None:
        """A house number written before token ``index`` ("12 rue", "12 bis, rue", "au 12 de la rue")."""
        j = index - 1
        skipped = 0
        while j >= 0 and self.words[j] in ("de", "du", "la", "l", "d", "des") and skipped < 2:
            j, skipped = j - 1, skipped + 1
        if j < 0:
            return None
        suffix = None
        if self.words[j] in _SUFFIXES or (self.toks[j].attached and len(self.words[j]) == 1 and j > 0
                                            and self.words[j - 1].isdigit()):
            suffix = _SUFFIXES.get(self.words[j], self.words[j])
            j -= 1
        if j >= 0 and self.words[j].isdigit() and len(self.words[j]) <= 4 and int(self.words[j]) > 0:
            return int(self.words[j]), suffix or "", j
        return None

    def _number_after(self, index: int) -> tuple[int, str, int] | None:
        """A house number written after the name ending at ``index`` ("rue des Tilleuls 12", ", au n°12")."""
        j = index + 1
        steps = 0
        while j < len(self.toks) and steps < 5 and self.words[j] in _NUMBER_AFTER_FILLERS:
            if j > index + 1 and self.toks[j].brk:
                return None
            j, steps = j + 1, steps + 1
        if steps and not any(self.words[k] in _NUMBER_MARKERS | {"au", "niveau", "hauteur", "devant", "devan", "face",
                                                                  "pres", "near", "opposite", "outside", "at"}
                             for k in range(index + 1, j)):
            return None  # "rue Pasteur, le 12": a date more often than a number
        if j >= len(self.toks) or not self.words[j].isdigit() or not self._number_ok(j):
            return None
        if self.toks[j].brk and not any(c == "," for c in self.text[self.toks[j - 1].end:self.toks[j].start]):
            return None
        suffix = self._suffix_at(j + 1)
        last = j + (1 if suffix else 0)
        nxt = last + 1
        if nxt < len(self.toks) and not self.toks[nxt].brk:
            following = self.words[nxt]
            if (following.endswith(("s", "x")) and following not in _FUNCTION_WORDS
                    and following not in ("depuis", "devant", "pres", "vers", "puis", "plus", "apres", "sous")):
                return None  # "rue Pasteur 3 lampadaires"
            if self._type_at(nxt) is not None:
                return None  # "rue Pasteur 12 rue..." : the number belongs to the next street
        return int(self.words[j]), suffix or "", last

    # -- candidates
    def street_candidates(self) -> list[_Candidate]:
        out: list[_Candidate] = []
        for index in range(len(self.toks)):
            written = self._type_at(index)
            typo = False
            if written is None:
                written = self._typo_type_at(index)
                typo = written is not None
            if written is not None:
                hit = self._street_hit(index + 1, typed=True)
                if hit is None:
                    continue
                street, fits, ambiguous = self._pick(hit.streets, written)
                if typo and not (fits and hit.full and hit.edits == 0):
                    continue
                if not fits and not self._other_type_ok(hit, street):
                    continue
                penalty = 0.05 * hit.edits + (0 if fits else 0.1) + (0 if hit.full else 0.08) \
                    + (0.1 if ambiguous else 0) + (0.05 if typo else 0)
                out.append(self._with_number(street, index, hit, penalty, fits))
            elif self.words[index] in _ENGLISH_TYPES and index > 0:
                hit = self._street_hit(0, typed=True, backwards_end=index - 1)
                if hit is None:
                    continue
                street, fits, ambiguous = self._pick(hit.streets, _ENGLISH_TYPES[self.words[index]])
                if not fits and not self._other_type_ok(hit, street):
                    continue
                penalty = 0.05 * hit.edits + (0 if fits else 0.1) + (0.1 if ambiguous else 0) + 0.03
                candidate = self._with_number(street, hit.first, hit, penalty, False, english_end=index)
                out.append(candidate)
            elif self.words[index].isdigit() and self._number_ok(index):
                out.extend(self._untyped_after_number(index))
        out.extend(self._lieux_dits())
        return out

    @staticmethod
    def _other_type_ok(hit: _StreetHit, street: _Street) -> bool:
        """ "rue Foch" for "Avenue Foch": only when the name itself is exactly the street's."""
        return hit.full and hit.edits == 0 and street.key not in _FUNCTION_WORDS

    def _with_number(self, street: _Street, type_index: int, hit: _StreetHit, penalty: float, fits: bool,
                     english_end: int | None = None) -> _Candidate:
        first, last = type_index, english_end if english_end is not None else hit.last
        number = self._number_before(type_index)
        if number is not None:
            first = number[2]
        else:
            number = self._number_after(last)
            if number is not None:
                last = number[2]
        name_span = (hit.first, hit.last) if fits else None
        if number is None:
            return self._street_only(street, first, last, penalty, name_span)
        return self._address(street, number[0], number[1], first, last, penalty, name_span)

    def _street_only(self, street: _Street, first: int, last: int, penalty: float,
                     name_span: tuple[int, int] | None) -> _Candidate:
        middle = street.middle()
        base = 0.75 if street.extent_m() <= 150 else 0.62
        return _Candidate("street", street.name, middle.lat, middle.lon, round(max(0.3, base - penalty), 2),
                          first, last, name_span=name_span, street=street)

    def _address(self, street: _Street, number: int, suffix: str, first: int, last: int, penalty: float,
                 name_span: tuple[int, int] | None) -> _Candidate:
        exact = street.by_number.get((number, suffix))
        if exact is None and suffix in ("b", "t", "q"):
            exact = street.by_number.get((number, {"b": "bis", "t": "ter", "q": "quater"}[suffix]))
        if exact is not None:
            label = _address_label(exact.number, exact.suffix, street.name)
            return _Candidate("address", label, exact.lat, exact.lon, round(max(0.3, 0.95 - penalty), 2), first, last,
                              address_id=exact.id, name_span=name_span, street=street, has_number=True)
        numbered = [a for a in street.addresses if a.number is not None]
        if not numbered:
            return self._street_only(street, first, last, penalty, name_span)
        # The nearest existing number, on the same side of the street if one is close.
        near = min(numbered, key=lambda a: (abs(a.number - number) + (0 if a.number % 2 == number % 2 else 4),
                                            a.suffix != ""))
        label = _near_label(near.number, near.suffix, street.name)
        gap = abs(near.number - number)
        confidence = 0.8 - min(0.3, gap * 0.02) - penalty
        return _Candidate("address", label, near.lat, near.lon, round(max(0.3, confidence), 2), first, last,
                          address_id=near.id, name_span=name_span, street=street, has_number=True)

    def _untyped_after_number(self, index: int) -> list[_Candidate]:
        """ "au 12 Gambetta", "devant le 8 Foch": a number, then a street name without its type."""
        suffix = self._suffix_at(index + 1)
        start = index + (2 if suffix else 1)
        if start < len(self.toks) and (self._type_at(self._skip_articles(start)) is not None
                                       if self._skip_articles(start) < len(self.toks) else True):
            return []
        if start < len(self.toks) and self.toks[start].brk:
            return []
        first_word = self._skip_articles(start)
        if first_word >= len(self.toks) or self.place_words[first_word] in self.g.alias_firsts:
            return []  # "1 de l'école", "1 salle": a place word, not a street
        hit = self._street_hit(start, typed=False, allow_partial=False, strict=True)
        if hit is None:
            return []
        street, fits, ambiguous = self._pick(hit.streets, None)
        if ambiguous:  # "12 Jean-Jaurès": the street whose numbers include 12
            having = [s for s in hit.streets if (int(self.words[index]), suffix or "") in s.by_number]
            if len(having) == 1:
                street, ambiguous = having[0], False
        penalty = 0.05 + 0.05 * hit.edits + (0.1 if ambiguous else 0)
        return [self._address(street, int(self.words[index]), suffix or "", index, hit.last, penalty, None)]

    def _lieux_dits(self) -> list[_Candidate]:
        """Streets without a type ("Les Quatre Routes"), named after "aux", "les", "lieu-dit"..."""
        out = []
        untyped_keys = {s.key for s in self.g.streets if s.type == "" and len(s.key.split()) >= 2}
        if not untyped_keys:
            return out
        for index in range(1, len(self.toks)):
            if self.words[index - 1] not in ("aux", "les", "a", "au", "vers", "des"):
                continue
            hit = self._street_hit(index, typed=False, allow_partial=False, strict=True)
            if hit is None or not any(s.key in untyped_keys for s in hit.streets):
                continue
            street = next(s for s in hit.streets if s.type == "")
            number = self._number_before(index - 1) if self.words[index - 1] == "les" else None
            if number is not None:
                out.append(self._address(street, number[0], number[1], number[2], hit.last, 0.05, None))
            else:
                out.append(self._street_only(street, index - 1, hit.last, 0.05 * hit.edits + 0.05, None))
        return out

    def place_candidates(self) -> list[_Candidate]:
        out: list[_Candidate] = []
        count = len(self.toks)
        firsts = self.g.alias_firsts
        for start in range(count):
            word = self.place_words[start]
            if word in _ARTICLES or word in _PLACE_FILLERS or word in _NOT_PLACE_TYPOS:
                continue
            # aliases whose first word is (nearly) this word
            heads = [first for first in firsts if first == word or (len(first) >= 5 and first[0] == word[:1]
                                                                  and _similar_word(word, first) is not None)]
            if not heads:
                continue
            indexes = [start]
            index = start + 1
            while index < count and len(indexes) < 8 and not self.toks[index].brk:
                indexes.append(index)
                index += 1
            for end in indexes:
                if self.place_words[end] in _ARTICLES:
                    continue
                words = [self.place_words[i] for i in range(start, end + 1)
                         if self.place_words[i] not in _ARTICLES and self.place_words[i] not in _PLACE_FILLERS]
                window = " ".join(words)
                for head in heads:
                    for alias in firsts[head]:
                        if abs(len(alias.split()) - len(words)) > 1:
                            continue
                        edits = _similar(window, alias)
                        if edits is None or (edits and len(alias) < 6):
                            continue
                        single = len(alias.split()) == 1
                        if single and (edits > 1 or self._accents_differ(start, alias)):
                            continue
                        if (single or alias in self.g.kind_aliases) and self._another_place_after(end):
                            continue  # "le cimetière de l'Ouest", "la mairie d'Angers": not ours
                        places = self.g.aliases[alias]
                        for place, confidence in places:
                            confidence -= 0.05 * edits + (0.1 if len(places) > 1 else 0)
                            out.append(_Candidate("place", place.label, place.lat, place.lon, round(confidence, 2),
                                                  start, end, place_id=place.id))
        return out

    def _accents_differ(self, index: int, alias: str) -> bool:
        """ "garé" is not "gare": a word written with accents the place's name does not have."""
        tok = self.toks[index]
        written = self.text[tok.start:tok.end].lower()
        if written.isascii():
            return False
        forms = self.g.accented.get(alias)
        return bool(forms) and written not in forms and _singular(written) not in {_singular(f) for f in forms}

    def _another_place_after(self, last: int) -> bool:
        """Does a name that is not this place's follow ("stade des Perrières", "mairie d'Angers")?"""
        index = last + 1
        if index >= len(self.toks) or self.toks[index].brk:
            return False
        tok = self.toks[index]
        if tok.cap and not self.shouting and tok.text.isalpha() and tok.text not in _FUNCTION_WORDS \
                and tok.text not in self.g.place_vocabulary and tok.text not in _STREET_TYPES:
            return True  # "gymnase Coubertin"
        if tok.text not in ("de", "du", "des", "d"):
            return False
        index = self._skip_articles(index)
        if index >= len(self.toks):
            return False
        following = self.toks[index].text
        return not (following.isdigit() or following in self.g.place_vocabulary or following in _FUNCTION_WORDS)

    def corner_candidates(self, streets: list[_Candidate]) -> list[_Candidate]:
        out = []
        plain = sorted((c for c in streets if c.kind == "street" and c.street is not None), key=lambda c: c.first)
        triggers = [i for i, w in enumerate(self.words) if w in _CORNER_WORDS]
        for a in plain:
            trigger = any(a.first - 6 <= t < a.first for t in triggers)
            # the second street: typed ("et de la rue Y") or bare ("et Gambetta")
            j = a.last + 1
            slash = j < len(self.toks) and "/" in self.text[self.toks[j - 1].end:self.toks[j].start]
            if trigger and j < len(self.toks) and not slash and self.words[j] not in _CONNECTORS:
                second = next((c for c in plain if c.first == j and c is not a), None)
                if second is not None and second.street is not a.street:  # "angle rue Pasteur rue Gambetta"
                    out.append(self._corner(a, second, min(t for t in triggers if a.first - 6 <= t < a.first)))
                continue
            if j < len(self.toks) and (self.words[j] in _CONNECTORS or slash):
                if self.words[j] in _CONNECTORS:
                    j += 1
                j = self._skip_articles(j)
                second: _Candidate | None = next((c for c in plain if c.first == j and c is not a), None)
                if second is None and j < len(self.toks):
                    hit = self._street_hit(j, typed=False, allow_partial=True, strict=False)
                    if hit is not None and hit.full or (hit is not None and len(hit.streets) == 1):
                        street, _fits, _amb = self._pick(hit.streets, None)
                        second = self._street_only(street, j, hit.last, 0.05 * hit.edits, None)
                if second is None or second.street is a.street:
                    continue
                if not (trigger or slash or self.words[a.last + 1] in ("x",)):
                    continue
                out.append(self._corner(a, second, min([t for t in triggers if a.first - 6 <= t < a.first],
                                                       default=a.first)))
        return out

    def _corner(self, a: _Candidate, b: _Candidate, first: int) -> _Candidate:
        best = None
        for x in a.street.addresses:
            for y in b.street.addresses:
                d = (x.lat - y.lat) ** 2 + ((x.lon - y.lon) * 0.68) ** 2
                if best is None or d < best[0]:
                    best = (d, x, y)
        _d, x, y = best
        gap = distance_m(x.lat, x.lon, y.lat, y.lon)
        confidence = 0.85 if gap <= 120 else 0.7 if gap <= 300 else 0.45
        confidence -= max(0.0, (0.75 - min(a.confidence, b.confidence))) / 3
        return _Candidate("corner", f"angle {a.street.name} / {b.street.name}", (x.lat + y.lat) / 2,
                          (x.lon + y.lon) / 2, round(max(0.3, confidence), 2), first, max(a.last, b.last),
                          name_span=None)

    def best(self) -> PlaceMatch | None:
        if not self.toks:
            return None
        streets = self.street_candidates()
        places = self.place_candidates()
        corners = self.corner_candidates(streets)
        spans = [c.name_span for c in streets if c.name_span is not None]
        places = [p for p in places if not any(s[0] <= p.first and p.last <= s[1] for s in spans)]
        # a street written with its number beats a street without, on the same words
        candidates = [c for c in corners + streets + places if c.confidence >= MIN_CONFIDENCE]
        if not candidates:
            return None
        chosen = max(candidates, key=lambda c: (c.confidence, c.last - c.first, -c.first))
        words = self.text[self.toks[chosen.first].start:self.toks[chosen.last].end]
        return PlaceMatch(chosen.kind, chosen.label, chosen.lat, chosen.lon, chosen.confidence,
                          address_id=chosen.address_id, place_id=chosen.place_id, words=words)


def match(store, text: str) -> PlaceMatch | None:
    """The place a text names (an address, a street, a named place, a street corner), or None.

    None for the places only the writer can find ("devant chez moi", "ici") and for unknown streets:
    the caller keeps the citizen's words."""
    if not text or not text.strip():
        return None
    gazetteer = _gazetteer(store)
    if not gazetteer.streets and not gazetteer.places:
        return None
    return _Matcher(gazetteer, text[:2000]).best()
