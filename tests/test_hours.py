import datetime as dt

import pytest
import pytz

from bot.hours import StaffHours

PARIS = pytz.timezone("Europe/Paris")


def at(text: str) -> dt.datetime:
    return PARIS.localize(dt.datetime.fromisoformat(text))


@pytest.fixture
def hours(profile):
    return StaffHours.from_town(profile.town)


@pytest.mark.parametrize("moment, is_open", [
    ("2026-11-24T10:00", True),    # Tuesday morning
    ("2026-11-24T12:45", False),   # lunch break
    ("2026-11-26T18:30", True),    # Thursday late opening until 19h
    ("2026-11-27T17:15", False),   # Friday closes at 17h
    ("2026-11-28T10:00", False),   # Saturday: only the civil-status counter, no staff
    ("2026-11-29T10:00", False),   # Sunday
    ("2026-12-25T10:00", False),   # Christmas (Friday)
    ("2026-07-14T10:00", False),   # Bastille Day (Tuesday)
    ("2026-05-01T10:00", False),   # Labour Day (Friday)
    ("2026-05-14T10:00", False),   # Ascension 2026 (Thursday)
    ("2026-05-25T10:00", False),   # Whit Monday 2026
])
def test_staff_hours_follow_the_profile_and_french_holidays(hours, moment, is_open):
    assert hours.is_open(at(moment)) is is_open


@pytest.mark.parametrize("moment, phrase", [
    ("2026-11-27T18:30", "lundi matin"),                    # Friday evening
    ("2026-11-28T15:00", "lundi matin"),                    # Saturday
    ("2026-11-24T20:00", "demain matin"),                   # Tuesday evening
    ("2026-11-24T12:30", "aujourd'hui dès 13h30"),          # lunch break
    ("2026-12-24T21:15", "lundi 28 décembre au matin"),     # Christmas Eve, Friday 25 is a holiday
    ("2026-07-13T19:00", "mercredi 15 juillet au matin"),   # 14 July
    ("2026-11-24T10:00", "dans les meilleurs délais"),      # open now
])
def test_when_a_person_will_read(hours, moment, phrase):
    assert hours.when_read(at(moment)) == phrase


def test_holiday_names_are_french(hours):
    assert hours.holiday_name(at("2026-12-25T10:00")) == "Noël"


def test_staff_time_counts_only_opening_hours(hours):
    # Friday 16:00 -> Monday 09:30: one hour on Friday (closes 17h) and one on Monday from 8h30.
    assert hours.staff_time_between(at("2026-11-27T16:00"), at("2026-11-30T09:30")) == dt.timedelta(hours=2)
    assert hours.staff_time_between(at("2026-11-30T09:30"), at("2026-11-27T16:00")) == dt.timedelta(0)


def test_holidays_are_right_from_many_threads_at_once(profile):
    """The action server answers from worker threads; a lazily filled holiday calendar raced."""
    import threading

    for _ in range(20):
        hours = StaffHours.from_town(profile.town)
        phrases = []
        threads = [threading.Thread(target=lambda: phrases.append(hours.when_read(at("2026-12-25T23:30"))))
                   for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert phrases == ["lundi 28 décembre au matin"] * 6
