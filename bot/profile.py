"""The collectivité profile: the town's facts, loaded from one YAML file a non-developer edits."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Service:
    slug: str
    name: str
    handles: str
    email: str
    needs_location: bool | str  # True, False, or "vehicles"
    target_hours: float
    # "Déjà signalé": an open ticket of this service within this radius (metres; 0: no check) and
    # created in the last ``duplicate_days`` days is the same problem (FixMyStreet's default: 250 m).
    duplicate_radius_m: float = 250.0
    duplicate_days: int = 30


@dataclass(frozen=True)
class ExternalBody:
    slug: str
    name: str
    phone: str | None
    website: str | None


@dataclass(frozen=True)
class FaqTopic:
    slug: str
    answer: str  # already rendered
    link: str
    redirect: str | None
    service: str | None = None  # the service whose head may propose a new answer

@dataclass(frozen=True)
class Town:
    name: str
    short_name: str
    website: str
    timezone: str
    holidays_country: str
    holidays_subdivision: str | None
    address: str
    phone: str
    moderation_charter: str
    public_hours: dict[str, list[str]]
    staff_hours: dict[str, list[str]]
    emergency_numbers: dict[str, str]
    retention_days: int


@dataclass(frozen=True)
class Profile:
    town: Town
    services: dict[str, Service]
    external_bodies: dict[str, ExternalBody]
    faq: dict[str, FaqTopic]
    cm_team: str
    cm_email: str
    source: Path = field(compare=False)
    cm_target_hours: float = 4.0  # the CM queue's first-response target, in staff hours
    addresses_file: Path | None = None  # the commune's addresses, Base Adresse Nationale CSV layout
    places_file: Path | None = None  # named places: nom;type;numero;nom_voie;lon;lat

    def service(self, slug: str) -> Service:
        if slug not in self.services:
            raise KeyError(f"unknown service {slug!r}; known: {', '.join(self.services)}")
        return self.services[slug]


class ProfileError(ValueError):
    """The profile file is missing something or has a malformed value."""


def _hours(raw: dict[str, Any] | None, what: str) -> dict[str, list[str]]:
    raw = raw or {}
    unknown = set(raw) - set(WEEKDAYS)
    if unknown:
        raise ProfileError(f"{what}: unknown day(s) {sorted(unknown)}; use {', '.join(WEEKDAYS)}")
    return {day: list(raw.get(day) or []) for day in WEEKDAYS}


def _retention_days(data: dict[str, Any], town: dict[str, Any]) -> int:
    """``privacy.retention_days`` (or the older ``collectivite.retention_days``): days a closed ticket's
    conversation is kept before ``guichet purge`` anonymises it."""
    privacy = data.get("privacy") or {}
    raw = privacy.get("retention_days", town.get("retention_days", 365))
    try:
        days = int(raw)
    except (TypeError, ValueError):
        raise ProfileError(f"privacy.retention_days: a number of days, not {raw!r}") from None
    if days < 1:
        raise ProfileError("privacy.retention_days: at least 1 day")
    return days


def parse_profile(data: dict[str, Any], source: Path) -> Profile:
    try:
        c = data["collectivite"]
        town = Town(
            name=c["name"],
            short_name=c.get("short_name", c["name"]),
            website=c["website"],
            timezone=c.get("timezone", "Europe/Paris"),
            holidays_country=c.get("holidays_country", "FR"),
            holidays_subdivision=c.get("holidays_subdivision"),
            address=c["address"],
            phone=str(c["phone"]),
            moderation_charter=c["moderation_charter"],
            public_hours=_hours(c.get("public_hours"), "public_hours"),
            staff_hours=_hours(c.get("staff_hours") or c.get("public_hours"), "staff_hours"),
            emergency_numbers={k: str(v) for k, v in c["emergency_numbers"].items()},
            retention_days=_retention_days(data, c),
        )
        services = {
            slug: Service(
                slug=slug,
                name=s["name"],
                handles=s.get("handles", ""),
                email=s.get("email", ""),
                needs_location=s.get("needs_location", False),
                target_hours=float(s.get("target_hours", 16)),
                duplicate_radius_m=float(s.get("duplicate_radius_m", 250)),
                duplicate_days=int(s.get("duplicate_days", 30)),
            )
            for slug, s in data["services"].items()
        }
        bodies = {
            slug: ExternalBody(slug=slug, name=b["name"], phone=b.get("phone"), website=b.get("website"))
            for slug, b in (data.get("external_bodies") or {}).items()
        }
        env = Environment(undefined=StrictUndefined, autoescape=False)
        context = {"town": town, "bodies": bodies, "services": services}
        faq = {}
        for slug, f in data["faq"].items():
            redirect = f.get("redirect")
            if redirect and redirect not in bodies:
                raise ProfileError(f"faq {slug}: redirect {redirect!r} is not an external body")
            answer = " ".join(env.from_string(f["answer"]).render(**context).split())
            service = f.get("service")
            if service and service not in services:
                raise ProfileError(f"faq {slug}: service {service!r} is not a service of the profile")
            faq[slug] = FaqTopic(slug=slug, answer=answer, link=f["link"], redirect=redirect, service=service)
        cm = data.get("community_manager") or {}
    except KeyError as exc:
        raise ProfileError(f"{source}: missing key {exc}") from exc
    return Profile(
        town=town,
        services=services,
        external_bodies=bodies,
        faq=faq,
        cm_team=cm.get("team", "Communication"),
        cm_email=cm.get("email", ""),
        source=source,
        cm_target_hours=float(cm.get("target_hours", 4)),
        addresses_file=_relative(source, (data.get("geography") or {}).get("addresses")),
        places_file=_relative(source, (data.get("geography") or {}).get("places")),
    )


def _relative(source: Path, value: str | None) -> Path | None:
    """A path of the profile, relative to the profile file's folder."""
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else (Path(source).parent / path).resolve()


@lru_cache(maxsize=8)
def load_profile(path: str | Path | None = None) -> Profile:
    if path is None:
        from bot.settings import get_settings

        path = get_settings().profile_path
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        return parse_profile(yaml.safe_load(handle), path)
