"""Statistics: exact figures on a known week (Paris time, staff hours across a weekend)."""
import csv
import datetime as dt
import io

import pytest
import pytz

from bot import stats
from bot.hours import StaffHours
from bot.models import Ticket, to_naive_utc
from bot.tickets import NewTicket

PARIS = pytz.timezone("Europe/Paris")
# Tuesday 1 December 2026, 10:00 in Valbourg (09:00 UTC). With days=7 the period is
# Wednesday 25 November .. Tuesday 1 December; Saturday 28 and Sunday 29 are the weekend.
NOW = PARIS.localize(dt.datetime(2026, 12, 1, 10, 0))


def at(text: str) -> dt.datetime:
    return PARIS.localize(dt.datetime.fromisoformat(text))


@pytest.fixture
def hours(profile):
    return StaffHours.from_town(profile.town)


class Town:
    """Writes the test week into the store."""

    def __init__(self, store):
        self.store = store
        self.count = 0

    def says(self, conversation: str, when: str, text: str = "bonjour") -> None:
        self.store.add_message(conversation, "rest", "citizen", text, now=at(when))
        self.store.add_message(conversation, "rest", "bot", "réponse", now=at(when) + dt.timedelta(seconds=5))

    def ticket(self, conversation: str, when: str, queue: str, *, reason: str | None = None,
               first_response: str | None = None, reply: bool = True, resolved: str | None = None,
               status: str | None = None) -> int:
        self.count += 1
        kind = "handoff" if reason else "report"
        ticket, _created = self.store.create(NewTicket(
            kind=kind, queue=queue, conversation_id=conversation, channel="rest", summary="...",
            handoff_reason=reason, source_message_id=f"m{self.count}"), now=at(when))
        if first_response:
            if reply:  # a staff reply, as the desk records it
                self.store.add_message(conversation, "rest", "staff", "Bonjour, ...", ticket_id=ticket.id,
                                       now=at(first_response))
            with self.store.session() as session:
                session.get(Ticket, ticket.id).first_response_at = to_naive_utc(at(first_response))
                session.commit()
        if status:
            self.store.set_status(ticket.id, status, "agent", now=at(first_response or when))
        if resolved:
            self.store.set_status(ticket.id, "resolved", "agent", now=at(resolved))
        return ticket.id


@pytest.fixture
def week(store):
    town = Town(store)
    # Before the period: neither counted as messages nor as conversations.
    town.says("old", "2026-11-24T23:30")                       # 22:30 UTC on the 24th
    town.ticket("old", "2026-11-20T10:00", "voirie", first_response="2026-11-20T11:00",
                status="in_progress")                           # answered: neither in delays nor overdue
    town.ticket("old-urba", "2026-11-16T09:00", "urbanisme")    # never answered: overdue now
    town.ticket("O", "2026-11-20T14:00", "cm", reason="threat")  # a hand-off still open
    town.ticket("Q", "2026-11-20T15:00", "cm", reason="insult", status="closed")  # closed the same day

    # Wednesday 25 (the first message at 00:10 Paris is still 24 November in UTC).
    town.says("A", "2026-11-25T00:10")
    town.says("A", "2026-11-25T08:55")
    town.ticket("A", "2026-11-25T09:00", "proprete", first_response="2026-11-25T10:00",
                resolved="2026-11-25T17:00")                    # 1 h ; 3 h 15 + 3 h 30 = 6,75 h
    # Thursday 26.
    town.says("B", "2026-11-26T00:30")                          # FAQ only: bot alone
    town.says("C", "2026-11-26T08:58")
    town.ticket("C", "2026-11-26T09:00", "voirie")              # nobody answered yet: bot alone, overdue
    town.says("O", "2026-11-26T11:00")                          # hand-off still open: not bot alone
    town.says("C2", "2026-11-26T17:58")
    town.ticket("C2", "2026-11-26T18:00", "voirie", first_response="2026-11-27T11:30",
                resolved="2026-11-30T09:30")                    # 1 + 3 = 4 h ; 1 + 7,25 + 1 = 9,25 h
    # Friday 27.
    town.says("N", "2026-11-27T09:58")
    town.ticket("N", "2026-11-27T10:00", "espaces_verts")       # 15 staff hours < 24: not overdue
    town.says("Q", "2026-11-27T12:00")                          # its hand-off closed before: bot alone
    town.says("J", "2026-11-27T15:58")
    town.ticket("J", "2026-11-27T16:00", "voirie", first_response="2026-11-30T09:30",
                resolved="2026-11-30T16:30")                    # 1 + 1 = 2 h ; 1 + 3,75 + 3 = 7,75 h
    town.says("L", "2026-11-27T16:28")
    town.ticket("L", "2026-11-27T16:30", "social")              # 0,5 + 7,75 + 1,5 = 9,75 h > 8: overdue
    town.says("M", "2026-11-27T17:28")
    town.ticket("M", "2026-11-27T17:30", "tranquillite")        # 7,75 + 1,5 = 9,25 h > 8: overdue
    # Saturday 28 (no staff).
    town.says("E", "2026-11-28T09:58", "bande de nuls")
    town.ticket("E", "2026-11-28T10:00", "cm", reason="insult")  # 9,25 h > 4: overdue
    town.says("D", "2026-11-28T10:55")
    town.says("D", "2026-11-28T11:00", "je veux parler à quelqu'un")
    town.ticket("D", "2026-11-28T11:00", "cm", reason="human_request", first_response="2026-11-30T10:00",
                status="in_progress")                           # 47 h on the clock, 1,5 staff hours
    town.says("F", "2026-11-28T14:00")
    town.says("F", "2026-11-28T14:05")
    # Sunday 29: nobody writes.
    # Monday 30.
    town.says("K", "2026-11-30T07:58")
    town.ticket("K", "2026-11-30T08:00", "social", first_response="2026-11-30T08:45",
                status="in_progress")                           # 0,25 h
    town.says("P", "2026-11-30T10:00")
    pid = town.ticket("P", "2026-11-30T10:02", "urbanisme")
    store.add_message("P", "rest", "staff", "à voir avec le service", ticket_id=pid, private=True,
                      now=at("2026-11-30T11:00"))               # a private note: a person worked on it
    town.says("G", "2026-11-30T15:58")
    town.ticket("G", "2026-11-30T16:00", "cm", reason="human_request")  # 1,5 + 1,5 = 3 h < 4: not overdue
    # Tuesday 1 December.
    town.says("I", "2026-12-01T09:30")
    return town


def test_figures_of_a_known_week(store, profile, hours, week):
    figures = stats.compute(store, profile, hours, now=NOW, days=7)

    assert (figures.since, figures.until) == (dt.date(2026, 11, 25), dt.date(2026, 12, 1))
    assert figures.messages_per_day == [
        (dt.date(2026, 11, 25), 2), (dt.date(2026, 11, 26), 4), (dt.date(2026, 11, 27), 5),
        (dt.date(2026, 11, 28), 5), (dt.date(2026, 11, 29), 0), (dt.date(2026, 11, 30), 3),
        (dt.date(2026, 12, 1), 1),
    ]
    # 17 conversations; bot alone: B, C, N, Q, L, M, F, I. Not: A, C2, J, K (staff replies),
    # P (private note), O (open hand-off from before), E, D, G (hand-offs).
    assert figures.conversations == 17
    assert figures.conversations_bot_only == 8
    assert figures.bot_only_share == pytest.approx(8 / 17)

    assert figures.handoffs_by_reason == {"human_request": 2, "insult": 1}
    assert list(figures.handoffs_by_reason) == ["human_request", "insult"]  # most frequent first

    assert figures.tickets_by_service_status == {
        "voirie": {"new": 1, "resolved": 2},
        "proprete": {"resolved": 1},
        "espaces_verts": {"new": 1},
        "urbanisme": {"new": 1},
        "social": {"new": 1, "in_progress": 1},
        "tranquillite": {"new": 1},
        "cm": {"new": 2, "in_progress": 1},
    }
    assert list(figures.tickets_by_service_status) == [
        "voirie", "proprete", "espaces_verts", "urbanisme", "social", "tranquillite", "cm"]  # profile order

    # First responses in staff hours: 1 (A), 4 (C2), 2 (J), 1,5 (D, across the weekend), 0,25 (K).
    # On the clock D alone waited 47 h; the ticket of 20 November is outside the period.
    assert figures.first_response["count"] == 5
    assert figures.first_response["median_hours"] == pytest.approx(1.5)
    assert figures.first_response["p90_hours"] == pytest.approx(3.2)  # 2 + 0,6 x (4 - 2)
    # Resolutions: 6,75 (A), 9,25 (C2, Thursday evening to Monday), 7,75 (J, Friday to Monday).
    assert figures.resolution["count"] == 3
    assert figures.resolution["median_hours"] == pytest.approx(7.75)
    assert figures.resolution["p90_hours"] == pytest.approx(8.95)  # 7,75 + 0,8 x 1,5

    assert figures.overdue == {
        "etat_civil": 0, "voirie": 1, "proprete": 0, "espaces_verts": 0, "urbanisme": 1,
        "education": 0, "social": 1, "tranquillite": 1, "sport_culture": 0, "cm": 2,
    }


def test_cm_target_comes_from_the_profile(profile):
    assert profile.cm_target_hours == 4
    assert profile.services["social"].target_hours == 8


def test_overdue_counts_staff_hours_not_the_clock(store, profile, hours):
    town = Town(store)
    town.ticket("x", "2026-11-27T16:30", "cm", reason="human_request")  # Friday: 0,5 h on Friday
    # Monday 11:45: 0,5 + 3,25 = 3,75 h < 4 although 67 hours went by.
    monday = stats.compute(store, profile, hours, now=at("2026-11-30T11:45"), days=1)
    assert monday.overdue["cm"] == 0
    assert stats.compute(store, profile, hours, now=at("2026-11-30T12:05"), days=1).overdue["cm"] == 1
    assert monday.messages_per_day == [(dt.date(2026, 11, 30), 0)]
    assert monday.conversations == 0 and monday.bot_only_share == 0.0
    assert monday.first_response == {"median_hours": None, "p90_hours": None, "count": 0}


def test_a_routed_hand_off_still_counts_as_a_hand_off(store, profile, hours):
    town = Town(store)
    town.says("r", "2026-11-30T09:00")
    ticket_id = town.ticket("r", "2026-11-30T09:01", "cm", reason="misunderstood")
    with store.session() as session:  # what StaffDesk.route does
        row = session.get(Ticket, ticket_id)
        row.queue, row.kind = "voirie", "report"
        session.commit()
    figures = stats.compute(store, profile, hours, now=at("2026-11-30T12:00"), days=1)
    assert figures.handoffs_by_reason == {"misunderstood": 1}
    assert figures.tickets_by_service_status == {"voirie": {"new": 1}}
    assert (figures.conversations, figures.conversations_bot_only) == (1, 0)


def test_csv_is_one_long_table(store, profile, hours, week):
    figures = stats.compute(store, profile, hours, now=NOW, days=7)
    text = stats.to_csv(figures)
    lines = text.splitlines()
    assert lines[0] == "metric,key,subkey,value"
    assert lines[1:3] == ["period,since,,2026-11-25", "period,until,,2026-12-01"]
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert all(len(row) == 4 for row in rows)
    assert ["messages_per_day", "2026-11-29", "", "0"] in rows
    assert len([row for row in rows if row[0] == "messages_per_day"]) == 7
    assert ["conversations", "total", "", "17"] in rows
    assert ["conversations", "bot_only", "", "8"] in rows
    assert ["conversations", "bot_only_share", "", "0.4706"] in rows
    assert ["handoffs_by_reason", "human_request", "", "2"] in rows
    assert ["tickets_by_service_status", "cm", "in_progress", "1"] in rows
    assert ["tickets_by_service_status", "voirie", "resolved", "2"] in rows
    assert ["first_response", "median_hours", "", "1.5"] in rows
    assert ["first_response", "p90_hours", "", "3.2"] in rows
    assert ["first_response", "count", "", "5"] in rows
    assert ["resolution", "p90_hours", "", "8.95"] in rows
    assert ["overdue", "cm", "", "2"] in rows
    assert ["overdue", "education", "", "0"] in rows
    assert next(row for row in rows if row[0] == "tickets_by_service_status") == [
        "tickets_by_service_status", "voirie", "new", "1"]


def test_csv_leaves_missing_delays_empty(store, profile, hours):
    rows = list(csv.reader(io.StringIO(stats.to_csv(stats.compute(store, profile, hours, now=NOW, days=2)))))
    assert ["first_response", "median_hours", "", ""] in rows
    assert ["resolution", "count", "", "0"] in rows


def test_text_summary_in_french(store, profile, hours, week):
    lines = stats.format_text(stats.compute(store, profile, hours, now=NOW, days=7))
    text = "\n".join(lines)
    assert lines[0] == "Statistiques du 25/11/2026 au 01/12/2026 (7 jours)"
    assert "Messages des habitants : 20 (2,9 par jour en moyenne" in text
    assert "Conversations : 17, dont 8 traitées par l'assistant seul (47,1 %)" in text
    assert "  - Demande à parler à une personne : 2" in lines
    assert "  - Voirie et éclairage public : 3 (nouveau 1, résolu 2)" in lines
    assert "  - première réponse : médiane 1 h 30, 9 sur 10 en moins de 3 h 12 (5 tickets)" in lines
    assert "  - Police municipale et tranquillité publique (cible 8 h) : 1" in lines
    assert "  - Community manager (cible 4 h) : 2" in lines


@pytest.mark.parametrize("name", stats.CHARTS)
def test_charts_are_png(store, profile, hours, week, name):
    png = stats.chart_png(stats.compute(store, profile, hours, now=NOW, days=7), name)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (800, 450)


@pytest.mark.parametrize("name", stats.CHARTS)
def test_charts_without_data_are_still_drawn(store, profile, hours, name):
    png = stats.chart_png(stats.compute(store, profile, hours, now=NOW, days=7), name)
    assert png.startswith(b"\x89PNG")


def test_unknown_chart_is_refused(store, profile, hours):
    figures = stats.compute(store, profile, hours, now=NOW, days=7)
    with pytest.raises(ValueError, match="camembert"):
        stats.chart_png(figures, "camembert")


def test_shares_never_round_a_difference_away():
    assert stats.share_text(840 / 843) == "99,6 %"  # not "100 %" with 3 hand-offs
    assert stats.share_text(1 / 3000) == "0,03 %"
    assert stats.share_text(0.5) == "50 %" and stats.share_text(1) == "100 %" and stats.share_text(0) == "0 %"
    assert stats.share_text(8 / 17) == "47,1 %" and stats.share_text(None) == "—"


def test_reason_labels_are_the_same_everywhere():
    assert stats.reason_label("human_request") == "Demande à parler à une personne"
    assert stats.reason_label("distress_danger") == "URGENCE : danger"
    assert stats.reason_label("unknown") == "Motif non précisé"
    assert stats.reason_label("nouveau_motif") == "Nouveau_motif"


def test_a_status_message_from_a_service_is_the_first_response(store, profile, hours):
    from bot.replies import Replies
    from bot.settings import PROJECT_ROOT
    from bot.accounts import Staff
    from bot.staff import StaffDesk

    replies = Replies.load(PROJECT_ROOT / "bot" / "replies.fr.yml", profile)
    desk = StaffDesk(store, profile, hours, replies, resume_conversation=lambda conversation: None)
    ticket, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="c-status", channel="rest",
                                       summary="lampadaire éteint", source_message_id="m-status"),
                             now=at("2026-11-30T09:00"))
    head = Staff("victor", "Victor", "head", "voirie")
    desk.set_status(head, ticket.reference, "in_progress")
    assert store.get(ticket.id).first_response_at is not None
    # Two days later the ticket is not overdue: the citizen heard back when it was taken on.
    later = stats.compute(store, profile, hours, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2), days=7)
    assert later.overdue["voirie"] == 0 and later.first_response["count"] == 1
