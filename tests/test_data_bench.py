"""The data bench (bot/data_bench.py) at 1 % of a large town's year, on the test PostgreSQL.

The whole code path of `make data-bench` runs: the fill, every operation through the real code
(staff web, `guichet` commands, a citizen message through Rasa), and the plans of their
statements. No timing is asserted (timings flake); the content of every answer is, and that the
queue, ticket and search statements can be served by indexes (planned with sequential scans off:
on so small a database PostgreSQL rightly prefers to read the tables whole).
"""
from __future__ import annotations

import datetime as dt
import random

import pytest

from bot import data_bench

SCALE = 0.01


@pytest.fixture(scope="module")
def small_year(postgres_url, model_path):
    result = data_bench.run_size(postgres_url, SCALE, repeat=1, citizen_messages=2, force_index=True,
                                 progress=print, model=model_path)
    return postgres_url, result


def test_the_fill_is_a_year_of_a_town_at_one_percent(small_year):
    _url, result = small_year
    filled = result.filled
    year = data_bench.SPAN_DAYS / 365
    assert filled.tickets == pytest.approx(60_000 * SCALE * year, rel=0.15)
    assert filled.lines == pytest.approx(1_000_000 * SCALE * year, rel=0.1)
    assert filled.conversations == pytest.approx(200_000 * SCALE * year, rel=0.01)
    assert filled.events > 10 * filled.conversations and filled.status_changes > filled.tickets
    assert filled.public_comments > 0 and filled.outbox > 0


def test_every_operation_ran_and_answered_the_right_content(small_year):
    _url, result = small_year
    assert set(result.timings) == set(data_bench.OPERATIONS)
    for name, timing in result.timings.items():
        assert timing.samples_ms, name
        assert timing.checked, f"{name}: {timing.detail}"
    # The real purge anonymised what was past the retention period, and only that.
    assert "lines left unredacted" in result.timings["purge_real"].detail


def test_queue_ticket_and_search_statements_can_use_indexes(small_year):
    _url, result = small_year
    for name in data_bench.INDEXED_OPERATIONS:
        assert result.timings[name].seq_scans == [], (name, result.timings[name].seq_scans)


def test_the_plans_name_the_new_indexes(small_year):
    url, _result = small_year
    queue = data_bench.explain(url, "SELECT * FROM ticket WHERE queue = 'cm' AND status NOT IN "
                                    "('resolved', 'duplicate', 'closed') ORDER BY urgent DESC, created_at, id",
                               force_index=True)
    assert "ix_ticket_open" in queue and "Seq Scan" not in queue
    day = data_bench.explain(url, "SELECT count(*) FROM message WHERE author = 'citizen' AND created_at >= "
                                  "now() - interval '1 day'", force_index=True)
    assert "ix_message_author_created" in day
    orphans = data_bench.explain(url, "SELECT * FROM message WHERE ticket_id IS NULL AND created_at < now() "
                                      "AND text != '[effacé]'", force_index=True)
    assert "ix_message_unlinked_created" in orphans
    closed = data_bench.explain(url, "SELECT * FROM ticket WHERE anonymised_at IS NULL AND closed_at < now()",
                                force_index=True)
    assert "ix_ticket_closed_not_anonymised" in closed
    events = data_bench.explain(url, "SELECT DISTINCT sender_id FROM events WHERE timestamp < 1", force_index=True)
    assert "ix_events_timestamp" in events  # made by the purge: Rasa created its table after our migrations


def test_the_table_shows_every_operation_and_the_verdicts(small_year):
    _url, result = small_year
    lines = data_bench.table([result])
    text = "\n".join(lines)
    for label in data_bench.OPERATIONS.values():
        assert label in text
    verdicts = data_bench.verdicts([result])
    assert verdicts["queue_cm"]["target"] == "< 200 ms" and verdicts["stats_365"]["target"] == "< 3000 ms"


def test_working_time_is_the_staff_time_of_staff_hours(profile):
    """bot.working_time gives exactly StaffHours.staff_time_between (weekends, holidays, clock changes)."""
    from bot.hours import StaffHours
    from bot.working_time import WorkingTime

    hours = StaffHours.from_town(profile.town)
    closed = hours.with_closed_days({dt.date(2026, 11, 24): "mairie fermée"})
    rng = random.Random(11)
    now = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.timezone.utc)
    for staff_hours in (hours, closed):
        clock = WorkingTime(staff_hours)
        for _ in range(600):
            start = now - dt.timedelta(seconds=rng.uniform(0, 420 * 86400))
            end = start + dt.timedelta(seconds=rng.choice([rng.uniform(0, 4 * 3600), rng.uniform(0, 6 * 86400),
                                                           rng.uniform(0, 300 * 86400)]))
            naive = start.replace(tzinfo=None) if rng.random() < 0.5 else start
            assert clock.between(naive, end) == staff_hours.staff_time_between(start, end), (start, end)
        assert clock.between(now, now - dt.timedelta(hours=1)) == dt.timedelta(0)
