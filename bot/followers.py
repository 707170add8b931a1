"""« Déjà signalé »: the same problem reported by several citizens, and who hears about it.

Before a report becomes a ticket, ``Followers.duplicate_of`` looks for an open ticket of the same
service within the service's radius (``duplicate_radius_m``, FixMyStreet's 250 m by default; 0
turns the check off) and period (``duplicate_days``). When there is one, the citizen becomes a
**follower** of it instead: their message is kept on that ticket, and every later status change
reaches every follower on their own channel (``bot.staff``). A citizen who says it is another
problem leaves the ticket (``left_at``) and gets a ticket of their own; that ticket is never
proposed to them again. Staff can merge a ticket into another (its citizen and followers move
with it) or split a follower out into a ticket of their own.
"""
from __future__ import annotations

import datetime as dt
import math

from sqlalchemy import func, select

from bot.models import CLOSED_STATUSES, Ticket, TicketFollower, to_naive_utc, utcnow
from bot.profile import Profile
from bot.tickets import HANDOFF, TicketStore

EARTH_RADIUS_M = 6_371_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


class Followers:
    def __init__(self, store: TicketStore, profile: Profile | None = None):
        """``profile`` (the services' radius and period) is needed by ``duplicate_of`` only."""
        self.store = store
        self.profile = profile

    def duplicate_of(self, queue: str, lat: float | None, lon: float | None, conversation_id: str,
                     now: dt.datetime | None = None) -> tuple[Ticket, float] | None:
        """The nearest open ticket of ``queue`` within the service's radius and period, and its
        distance; never one of this conversation or one it already left."""
        service = self.profile.services.get(queue) if self.profile else None
        if service is None or lat is None or lon is None or service.duplicate_radius_m <= 0:
            return None
        moment = to_naive_utc(now) or utcnow()
        radius = service.duplicate_radius_m
        dlat = radius / 111_320.0
        dlon = radius / (111_320.0 * max(0.01, math.cos(math.radians(lat))))
        with self.store.session() as session:
            left = select(TicketFollower.ticket_id).where(TicketFollower.conversation_id == conversation_id,
                                                          TicketFollower.left_at.is_not(None))
            candidates = session.execute(select(Ticket).where(
                Ticket.queue == queue, Ticket.kind != HANDOFF, Ticket.status.not_in(CLOSED_STATUSES),
                Ticket.duplicate_of_id.is_(None), Ticket.conversation_id != conversation_id,
                Ticket.created_at >= moment - dt.timedelta(days=service.duplicate_days),
                Ticket.lat.between(lat - dlat, lat + dlat), Ticket.lon.between(lon - dlon, lon + dlon),
                Ticket.id.not_in(left))).scalars().all()
        found = sorted(((t, distance_m(lat, lon, t.lat, t.lon)) for t in candidates), key=lambda pair: pair[1])
        return next(((t, d) for t, d in found if d <= radius), None)

    def follow(self, ticket_id: int, conversation_id: str, channel: str, citizen_name: str | None = None) -> bool:
        """Add a follower (once; a citizen who had left comes back). True if they were not following."""
        with self.store.session() as session:
            row = session.execute(select(TicketFollower).where(
                TicketFollower.ticket_id == ticket_id, TicketFollower.conversation_id == conversation_id)).scalar_one_or_none()
            if row is not None:
                was_following = row.left_at is None
                row.left_at = None
                session.commit()
                return not was_following
            session.add(TicketFollower(ticket_id=ticket_id, conversation_id=conversation_id, channel=channel,
                                       citizen_name=citizen_name))
            session.commit()
            return True

    def leave(self, follower_id: int) -> TicketFollower | None:
        with self.store.session() as session:
            row = session.get(TicketFollower, follower_id)
            if row is not None and row.left_at is None:
                row.left_at = utcnow()
                session.commit()
            return row

    def of_ticket(self, ticket_id: int) -> list[TicketFollower]:
        """The citizens following a ticket (those who left excluded), in order of arrival."""
        with self.store.session() as session:
            return list(session.execute(select(TicketFollower).where(
                TicketFollower.ticket_id == ticket_id, TicketFollower.left_at.is_(None))
                .order_by(TicketFollower.id)).scalars())

    def count(self, ticket_ids: list[int]) -> dict[int, int]:
        if not ticket_ids:
            return {}
        with self.store.session() as session:
            return dict(session.execute(select(TicketFollower.ticket_id, func.count()).where(
                TicketFollower.ticket_id.in_(ticket_ids), TicketFollower.left_at.is_(None))
                .group_by(TicketFollower.ticket_id)).all())

    def followed_by(self, conversation_id: str) -> list[Ticket]:
        """The tickets a conversation follows (newest first): its own too, for the status question."""
        with self.store.session() as session:
            return list(session.execute(select(Ticket).join(TicketFollower, TicketFollower.ticket_id == Ticket.id).where(
                TicketFollower.conversation_id == conversation_id, TicketFollower.left_at.is_(None))
                .order_by(Ticket.id.desc())).scalars())

    def latest_follow(self, conversation_id: str, within: dt.timedelta, now: dt.datetime | None = None
                      ) -> TicketFollower | None:
        """The follow this conversation made in the last ``within`` (what "c'est un autre problème" undoes)."""
        moment = to_naive_utc(now) or utcnow()
        with self.store.session() as session:
            return session.execute(select(TicketFollower).where(
                TicketFollower.conversation_id == conversation_id, TicketFollower.left_at.is_(None),
                TicketFollower.added_at >= moment - within).order_by(TicketFollower.id.desc()).limit(1)).scalar_one_or_none()

    def move(self, from_ticket: Ticket, to_ticket: Ticket) -> int:
        """Merge: the citizen of ``from_ticket`` and its followers now follow ``to_ticket``. How many moved."""
        moved = 0
        if from_ticket.conversation_id != to_ticket.conversation_id and self.follow(
                to_ticket.id, from_ticket.conversation_id, from_ticket.channel, from_ticket.citizen_name):
            moved += 1
        for follower in self.of_ticket(from_ticket.id):
            if follower.conversation_id != to_ticket.conversation_id and self.follow(
                    to_ticket.id, follower.conversation_id, follower.channel, follower.citizen_name):
                moved += 1
            self.leave(follower.id)
        return moved
