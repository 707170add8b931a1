"""Staff time between two moments, for many moments at once (queues, statistics).

``StaffHours.staff_time_between`` walks every staff period between the two moments with
``businesstimedelta``: about 40 ms for a ticket that has waited a few months, so a queue with old
tickets or the statistics of a year took seconds (``python -m bot.data_bench``). ``WorkingTime``
gives the same result from a table of the staff seconds before each local day (built once for the
days asked): two lookups and the part of the two days concerned.

Same rules as ``businesstimedelta`` (what ``StaffHours`` is built on): the staff periods of each
week day in the profile's time zone, public holidays (and extra closed days) closed all day,
durations in real seconds, fractions of a second dropped. Schedules it cannot mirror exactly
(periods overlapping on one day, a period across midnight) fall back to ``staff_time_between``.
"""
from __future__ import annotations

import bisect
import datetime as dt
from zoneinfo import ZoneInfo

from bot.hours import StaffHours

CHUNK_DAYS = 31  # the table grows by a month at a time, on the side of the moment asked for


class WorkingTime:
    def __init__(self, hours: StaffHours):
        self.hours = hours
        self.tz = hours.tz
        # zoneinfo converts local times ten times faster than pytz's localize; the same offsets for
        # the times used here (midnight and staff hours, never inside a clock change in France).
        self.zone = ZoneInfo(hours.tz.zone)
        self.periods = _periods(hours)  # weekday -> [(start, end)] local times, or None: fall back
        # Covered days first..last: ``starts`` their 00:00 (UTC seconds) and the day after's, ``before``
        # the staff seconds from the first day's 00:00 to each of those, ``intervals`` each day's periods.
        self.first: dt.date | None = None
        self.starts: list[float] = []
        self.before: list[float] = []
        self.intervals: list[list[tuple[float, float]]] = []

    def between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """The staff time from ``start`` to ``end`` (naive means UTC), as ``staff_time_between``."""
        begin, finish = _timestamp(start), _timestamp(end)
        if finish <= begin:
            return dt.timedelta(0)
        if self.periods is None:
            return self.hours.staff_time_between(_aware(start), _aware(end))
        if not (self.starts and self.starts[0] <= begin and finish < self.starts[-1]):
            self._cover(begin)
            self._cover(finish)  # both first: growing the table to the past shifts every count
        seconds = self._since_first(finish) - self._since_first(begin)
        return dt.timedelta(seconds=int(round(seconds, 6)))  # businesstimedelta drops the microseconds

    # --- the table --------------------------------------------------------------------------------
    def _cover(self, moment: float) -> None:
        if self.first is None:
            local_day = dt.datetime.fromtimestamp(moment, dt.timezone.utc).astimezone(self.tz).date()
            self.first = local_day
            self.starts, self.before = [self._midnight(local_day)], [0.0]
            self._append(CHUNK_DAYS)
        while moment < self.starts[0]:
            self._prepend(CHUNK_DAYS)
        while moment >= self.starts[-1]:
            self._append(CHUNK_DAYS)

    def _since_first(self, moment: float) -> float:
        index = bisect.bisect_right(self.starts, moment) - 1
        return self.before[index] + sum(max(0.0, min(moment, e) - s) for s, e in self.intervals[index])

    def _midnight(self, day: dt.date) -> float:
        return dt.datetime.combine(day, dt.time(), tzinfo=self.zone).timestamp()

    def _day(self, day: dt.date) -> list[tuple[float, float]]:
        if day in self.hours.holiday_calendar:
            return []
        return [(dt.datetime.combine(day, start, tzinfo=self.zone).timestamp(),
                 dt.datetime.combine(day, end, tzinfo=self.zone).timestamp())
                for start, end in self.periods.get(day.weekday(), ())]

    def _append(self, count: int) -> None:
        day = self.first + dt.timedelta(days=len(self.intervals))
        for _ in range(count):
            periods = self._day(day)
            self.intervals.append(periods)
            self.before.append(self.before[-1] + sum(e - s for s, e in periods))
            day += dt.timedelta(days=1)
            self.starts.append(self._midnight(day))

    def _prepend(self, count: int) -> None:
        days = [self.first - dt.timedelta(days=count - i) for i in range(count)]
        periods = [self._day(day) for day in days]
        totals = [sum(e - s for s, e in p) for p in periods]
        shift = sum(totals)
        before, running = [], 0.0
        for total in totals:
            before.append(running)
            running += total
        self.before = before + [value + shift for value in self.before]
        self.starts = [self._midnight(day) for day in days] + self.starts
        self.intervals = periods + self.intervals
        self.first = days[0]


def _timestamp(moment: dt.datetime) -> float:
    return (moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment).timestamp()


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment


def _periods(hours: StaffHours) -> dict[int, list[tuple[dt.time, dt.time]]] | None:
    """The staff periods of each week day, or None when they cannot be mirrored exactly."""
    by_day: dict[int, list[tuple[dt.time, dt.time]]] = {}
    for rule in hours.rules.available_rules:
        start, end = getattr(rule, "start_time", None), getattr(rule, "end_time", None)
        if start is None or end is None or end <= start or getattr(rule, "tz", hours.tz) is not hours.tz:
            return None
        for weekday in rule.working_days:
            by_day.setdefault(weekday, []).append((start, end))
    for rule in hours.rules.unavailable_rules:
        if not hasattr(rule, "holidays") or rule.holidays is not hours.holiday_calendar:
            return None  # a time-off rule other than the holiday calendar
    for periods in by_day.values():
        periods.sort()
        if any(later[0] < earlier[1] for earlier, later in zip(periods, periods[1:])):
            return None
    return by_day
