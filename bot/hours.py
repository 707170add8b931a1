"""Staff hours: when a person can read a message, and how to say it in French.

Built on ``businesstimedelta`` (working-time arithmetic) and ``holidays`` (French public holidays).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import businesstimedelta
import holidays
import pytz

from bot.profile import WEEKDAYS, Town

FRENCH_DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
FRENCH_MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)


def _parse_range(text: str) -> tuple[dt.time, dt.time]:
    start, end = text.split("-")
    to_time = lambda s: dt.datetime.strptime(s.strip(), "%H:%M").time()  # noqa: E731
    return to_time(start), to_time(end)


@dataclass
class StaffHours:
    """Opening schedule of the team, with public holidays closed."""

    tz: pytz.BaseTzInfo
    rules: businesstimedelta.Rules
    holiday_calendar: holidays.HolidayBase

    @classmethod
    def from_town(cls, town: Town, which: str = "staff") -> "StaffHours":
        tz = pytz.timezone(town.timezone)
        schedule = town.staff_hours if which == "staff" else town.public_hours
        by_range: dict[tuple[dt.time, dt.time], list[int]] = {}
        for index, day in enumerate(WEEKDAYS):
            for text in schedule[day]:
                by_range.setdefault(_parse_range(text), []).append(index)
        if not by_range:
            raise ValueError(f"{which} hours: no opening time at all")
        # Years are filled in advance: the library fills them lazily otherwise, which is not
        # thread-safe (the action server answers from worker threads).
        this_year = dt.date.today().year
        calendar = holidays.country_holidays(
            town.holidays_country, subdiv=town.holidays_subdivision, language="fr",
            years=range(this_year - 5, this_year + 11),
        )
        rules = [
            businesstimedelta.WorkDayRule(start_time=start, end_time=end, working_days=days, tz=tz)
            for (start, end), days in sorted(by_range.items())
        ]
        rules.append(businesstimedelta.HolidayRule(calendar, tz=tz))
        return cls(tz=tz, rules=businesstimedelta.Rules(rules), holiday_calendar=calendar)

    def with_closed_days(self, days: dict[dt.date, str]) -> "StaffHours":
        """The same hours with extra closed days (a town notice closing the town hall)."""
        if not days:
            return self
        calendar = holidays.HolidayBase()
        calendar.update(self.holiday_calendar)
        for day, name in days.items():
            calendar.setdefault(day, name)
        rules = [*self.rules.available_rules,
                 *(rule for rule in self.rules.unavailable_rules if not isinstance(rule, businesstimedelta.HolidayRule))]
        rules.append(businesstimedelta.HolidayRule(calendar, tz=self.tz))
        return StaffHours(tz=self.tz, rules=businesstimedelta.Rules(rules), holiday_calendar=calendar)

    def local(self, moment: dt.datetime) -> dt.datetime:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        return moment.astimezone(self.tz)

    def next_opening(self, moment: dt.datetime) -> dt.datetime:
        """Start of the current or next staff period (``moment`` itself when open)."""
        start, _end = self.rules.next(self.local(moment))
        return start

    def is_open(self, moment: dt.datetime) -> bool:
        local = self.local(moment)
        start, end = self.rules.next(local)
        return start <= local < end

    def holiday_name(self, moment: dt.datetime) -> str | None:
        return self.holiday_calendar.get(self.local(moment).date())

    def staff_time_between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """Working time elapsed between two moments (for waiting and response times)."""
        if end <= start:
            return dt.timedelta(0)
        delta = self.rules.difference(self.local(start), self.local(end))
        return dt.timedelta(hours=delta.hours, seconds=delta.seconds)

    def when_read(self, moment: dt.datetime) -> str:
        """French phrase saying when a person will read a message sent at ``moment``.

        Examples: "dans les meilleurs délais", "aujourd'hui dès 13h30", "demain matin",
        "lundi matin", "lundi 28 décembre au matin".
        """
        local = self.local(moment)
        opening, closing = self.rules.next(local)  # the current or next staff period
        if opening <= local < closing:
            return "dans les meilleurs délais"
        part = "matin" if opening.hour < 12 else "après-midi"
        days_ahead = (opening.date() - local.date()).days
        if days_ahead == 0:
            return f"aujourd'hui dès {opening.hour}h{opening.minute:02d}".replace("h00", "h")
        if days_ahead == 1:
            return f"demain {part}"
        day = FRENCH_DAYS[opening.weekday()]
        if days_ahead < 7 and not self._holiday_between(local, opening):
            return f"{day} {part}"
        date = f"{day} {opening.day}{'er' if opening.day == 1 else ''} {FRENCH_MONTHS[opening.month - 1]}"
        return f"{date} {'au matin' if part == 'matin' else 'après-midi'}"

    def _holiday_between(self, start: dt.datetime, end: dt.datetime) -> bool:
        day = start.date()
        while day < end.date():
            if day in self.holiday_calendar:
                return True
            day += dt.timedelta(days=1)
        return False
