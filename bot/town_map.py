"""A plan of the town drawn from its own address file, with the open tickets on it (an SVG).

No tile server and nothing from the internet: the streets are the commune's addresses (table
``address``, loaded by ``bot.places``) joined street by street, projected on a flat plane (the
town is small: longitude scaled by cos(latitude)). Open tickets with a known position are points,
coloured by status and each a link to its ticket; the selected one is ringed and labelled. The
drawing of the streets is cached (it changes only when the address file is reloaded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from html import escape

from sqlalchemy import func, select

from bot.models import Address, NamedPlace, Ticket
from bot.tickets import TicketStore

WIDTH = 800
MARGIN = 24
STATUS_COLOURS = {  # colour-blind safe (Okabe-Ito), with the legend in words beside the map
    "new": ("#D55E00", "Nouveau"),
    "acknowledged": ("#E69F00", "Pris en compte"),
    "in_progress": ("#0072B2", "En cours"),
    "scheduled": ("#CC79A7", "Programmé"),
    "not_ours": ("#6B6B6B", "Renvoyé au CM"),
}
URGENT = ("#B00020", "Urgent")


@dataclass(frozen=True)
class Projection:
    min_lon: float
    min_lat: float
    scale: float  # pixels per degree of latitude
    cos_lat: float
    height: int

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        x = MARGIN + (lon - self.min_lon) * self.cos_lat * self.scale
        y = self.height - MARGIN - (lat - self.min_lat) * self.scale
        return round(x, 1), round(y, 1)


def _order(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A street's addresses in order along it: by their position on the street's main axis."""
    if len(points) < 3:
        return points
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    syy = sum((p[1] - my) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    angle = 0.5 * math.atan2(2 * sxy, sxx - syy)
    ux, uy = math.cos(angle), math.sin(angle)
    return sorted(points, key=lambda p: (p[0] - mx) * ux + (p[1] - my) * uy)


@lru_cache(maxsize=8)
def _base(database_url: str, addresses: int) -> tuple[Projection, str] | None:
    """The projection and the streets' SVG for a database holding ``addresses`` addresses."""
    store = TicketStore(database_url)
    with store.session() as session:
        rows = session.execute(select(Address.street, Address.lat, Address.lon)).all()
        places = session.execute(select(NamedPlace.name, NamedPlace.lat, NamedPlace.lon)).all()
    if not rows:
        return None
    lats, lons = [r.lat for r in rows], [r.lon for r in rows]
    min_lat, max_lat, min_lon, max_lon = min(lats), max(lats), min(lons), max(lons)
    cos_lat = math.cos(math.radians((min_lat + max_lat) / 2))
    span_x = max((max_lon - min_lon) * cos_lat, 1e-6)
    scale = (WIDTH - 2 * MARGIN) / span_x
    height = int((max_lat - min_lat) * scale + 2 * MARGIN)
    projection = Projection(min_lon, min_lat, scale, cos_lat, max(height, 200))
    streets: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        streets.setdefault(row.street, []).append(projection.xy(row.lat, row.lon))
    parts = []
    labelled = sorted(streets, key=lambda name: -len(streets[name]))[:12]
    for name, points in streets.items():
        ordered = _order(sorted(set(points)))
        if len(ordered) > 1:
            path = " ".join(f"{x},{y}" for x, y in ordered)
            parts.append(f'<polyline points="{path}" fill="none" stroke="#b9c0c8" stroke-width="2.5" '
                         f'stroke-linecap="round" stroke-linejoin="round"><title>{escape(name)}</title></polyline>')
    for name in labelled:
        ordered = _order(sorted(set(streets[name])))
        x, y = ordered[len(ordered) // 2]
        parts.append(f'<text x="{x}" y="{y - 4}" font-size="11" font-family="sans-serif" fill="#4a525a">'
                     f'{escape(name)}</text>')
    for place in places:
        x, y = projection.xy(place.lat, place.lon)
        parts.append(f'<rect x="{x - 3}" y="{y - 3}" width="6" height="6" fill="#7a8590">'
                     f'<title>{escape(place.name)}</title></rect>')
    return projection, "\n".join(parts)


def render(store: TicketStore, tickets: list[Ticket], selected: Ticket | None = None,
           link=lambda reference: f"/tickets/{reference}") -> str | None:
    """The plan as an SVG string, or None when no address file is loaded."""
    with store.session() as session:
        count = session.execute(select(func.count()).select_from(Address)).scalar_one()
    base = _base(store.url, count) if count else None
    if base is None:
        return None
    projection, streets = base
    shown = [t for t in tickets if t.lat is not None and t.lon is not None]
    if selected is not None and selected.lat is not None and all(t.id != selected.id for t in shown):
        shown.append(selected)
    dots = []
    for ticket in sorted(shown, key=lambda t: selected is not None and t.id == selected.id):
        x, y = projection.xy(ticket.lat, ticket.lon)
        colour, label = URGENT if ticket.urgent else STATUS_COLOURS.get(ticket.status, ("#444444", ticket.status))
        chosen = selected is not None and ticket.id == selected.id
        title = f"{ticket.reference} — {label} — {ticket.place_label or ticket.location or ''}"
        ring = f'<circle cx="{x}" cy="{y}" r="13" fill="none" stroke="#111" stroke-width="3"/>' if chosen else ""
        name = (f'<text x="{x + 16}" y="{y + 5}" font-size="13" font-weight="bold" font-family="sans-serif" '
                f'fill="#111" stroke="#fff" stroke-width="3" paint-order="stroke">{escape(ticket.reference)}</text>'
                if chosen else "")
        dots.append(f'<a href="{escape(link(ticket.reference))}" aria-label="{escape(title)}">{ring}<circle cx="{x}" cy="{y}" '
                    f'r="{8 if chosen else 6}" fill="{colour}" stroke="#fff" stroke-width="2">'
                    f'<title>{escape(title)}</title></circle>{name}</a>')
    described = (f"{len(shown)} ticket(s) ouvert(s) placés sur le plan"
                 + (f", dont {selected.reference} (entouré)" if selected is not None and selected.lat is not None else ""))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="town-map" viewBox="0 0 {WIDTH} {projection.height}" '
            f'role="group" aria-labelledby="map-title" aria-describedby="map-desc">'
            f'<title id="map-title">Plan de la commune et tickets ouverts</title><desc id="map-desc">{escape(described)}</desc>'
            f'<rect width="100%" height="100%" fill="#f4f6f8"/>{streets}{"".join(dots)}</svg>')


def legend() -> list[tuple[str, str]]:
    """(colour, label) for the legend beside the plan: colours are never the only cue."""
    return [URGENT] + list(STATUS_COLOURS.values())
