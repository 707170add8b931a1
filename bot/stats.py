"""Figures for the community manager and the management: messages, hand-offs, tickets, delays.

``compute`` reads the ticket database once and returns a ``Figures``; ``format_text`` (the
``guichet stats`` command), ``to_csv`` and ``chart_png`` (the staff web page) only present it.

Definitions (all in one place, so the page, the CSV and the terminal say the same thing):

- The period is ``days`` whole local days (the profile's time zone) ending with today:
  ``since`` 00:00 local up to ``now``. Database times are naive UTC.
- ``messages_per_day``: citizen messages (``author == "citizen"``, including the ones recorded
  while the bot stays silent during a hand-off) per local day, every day of the period, zeros too.
- ``conversations``: conversations with at least one citizen message in the period.
  A conversation is handled by the bot alone when, in the period, it had no hand-off ticket
  (kind ``handoff`` or a hand-off reason, so a hand-off the CM routed to a service still counts;
  a hand-off counts when it was open at some moment of the period) and no staff message (a reply
  or a private note: either way a person worked on it). ``bot_only_share`` is 0.0 when there
  is no conversation.
- ``handoffs_by_reason``: hand-off tickets created in the period, by reason (``"unknown"``
  when none was recorded), most frequent first.
- ``tickets_by_service_status``: tickets created in the period, by their current queue (service
  slug or ``"cm"``; profile order, then ``cm``) and current status (``STATUSES`` order); only
  non-zero cells are present.
- ``first_response`` / ``resolution``: over the tickets created in the period that have a
  ``first_response_at`` / ``resolved_at``, the staff time (``StaffHours.staff_time_between``:
  evenings, weekends and public holidays do not count) from ``created_at``, in hours: median,
  90th percentile (linear interpolation, numpy's default) and count; ``None`` without data.
- ``overdue``: right now (whatever their creation date), open tickets still without a first
  response whose staff-time wait since ``created_at`` is strictly longer than their queue's
  first-response target (``Service.target_hours``, ``Profile.cm_target_hours`` for ``cm``);
  every queue of the profile is present, zeros included.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import textwrap
from collections import Counter
from dataclasses import dataclass, field

import numpy
import pytz
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from sqlalchemy import and_, bindparam, case, func, or_, select

from bot.hours import FRENCH_MONTHS, StaffHours
from bot.models import CLOSED_STATUSES, STATUSES, Message, Ticket
from bot.profile import Profile
from bot.routing import CM_QUEUE
from bot.staff import HANDOFF_REASON_LABELS, STATUS_LABELS
from bot.tickets import HANDOFF, TicketStore
from bot.working_time import WorkingTime

CHARTS = ("messages_per_day", "tickets_per_service", "handoff_reasons", "satisfaction")
HANDOFF_GROUP = "handoff"  # satisfaction of the conversations handed to the CM
UNKNOWN_REASON = "unknown"
CSV_HEADER = ("metric", "key", "subkey", "value")


@dataclass
class Figures:
    since: dt.date
    until: dt.date
    messages_per_day: list[tuple[dt.date, int]]
    conversations: int
    conversations_bot_only: int
    bot_only_share: float
    handoffs_by_reason: dict[str, int]
    tickets_by_service_status: dict[str, dict[str, int]]
    first_response: dict[str, float | None]
    resolution: dict[str, float | None]
    overdue: dict[str, int]
    # Answers to "Êtes-vous satisfait(e) ?" given in the period: queue slug, or "handoff" for the
    # conversations handed to the CM (wherever they were routed) -> {"yes": n, "no": n}.
    satisfaction: dict[str, dict[str, int]] = field(default_factory=dict)
    # Presentation helpers filled by ``compute`` (optional: slugs are shown when missing).
    queue_names: dict[str, str] = field(default_factory=dict)  # queue slug -> French name
    target_hours: dict[str, float] = field(default_factory=dict)  # queue slug -> first-response target

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def messages(self) -> int:
        return sum(count for _day, count in self.messages_per_day)

    @property
    def handoffs(self) -> int:
        return sum(self.handoffs_by_reason.values())

    @property
    def tickets(self) -> int:
        return sum(sum(by_status.values()) for by_status in self.tickets_by_service_status.values())

    def queue_name(self, queue: str) -> str:
        if queue == HANDOFF_GROUP:
            return "Transferts au community manager"
        return self.queue_names.get(queue, queue)

    def satisfaction_rate(self, group: str) -> float | None:
        answers = self.satisfaction.get(group) or {}
        total = answers.get("yes", 0) + answers.get("no", 0)
        return answers.get("yes", 0) / total if total else None


# --- computing ---------------------------------------------------------------------------------

def _aware_utc(moment: dt.datetime) -> dt.datetime:
    """Database values and naive arguments are UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return _aware_utc(moment).replace(tzinfo=None)


def _delay_summary(hours: list[float]) -> dict[str, float | None]:
    if not hours:
        return {"median_hours": None, "p90_hours": None, "count": 0}
    median, p90 = numpy.percentile(numpy.array(hours, dtype=float), [50, 90])
    return {"median_hours": float(median), "p90_hours": float(p90), "count": len(hours)}


# Citizen messages of one local day (``low`` to ``high``, its midnights in UTC) up to ``end``.
DAY_COUNT = (select(func.count()).select_from(Message)
             .where(Message.author == "citizen", Message.created_at >= bindparam("low"),
                    Message.created_at < bindparam("high"), Message.created_at <= bindparam("end")))


def _is_handoff():
    return or_(Ticket.kind == HANDOFF, Ticket.handoff_reason.isnot(None))


def compute(store: TicketStore, profile: Profile, hours: StaffHours, now: dt.datetime | None = None,
            days: int = 30) -> Figures:
    """The figures of the ``days`` local days ending today (see the module docstring)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    now_utc = _aware_utc(now or dt.datetime.now(dt.timezone.utc))
    tz = pytz.timezone(profile.town.timezone)
    until = now_utc.astimezone(tz).date()
    since = until - dt.timedelta(days=days - 1)
    start = _naive_utc(tz.localize(dt.datetime.combine(since, dt.time())))
    end = _naive_utc(now_utc)

    # Counted by the database (a year holds about a million transcript lines): citizen messages of
    # each local day, then the conversations and those the bot handled alone.
    midnights = [_naive_utc(tz.localize(dt.datetime.combine(since + dt.timedelta(days=i), dt.time())))
                 for i in range(days + 1)]
    in_period = (Message.created_at >= start, Message.created_at <= end)
    talked = (select(Message.conversation_id).where(Message.author == "citizen", *in_period)
              .group_by(Message.conversation_id).subquery())
    with_staff = select(Message.conversation_id).where(Message.author == "staff", *in_period)
    with_handoff = select(Ticket.conversation_id).where(_is_handoff(), Ticket.created_at <= end,
                                                        or_(Ticket.closed_at.is_(None), Ticket.closed_at >= start))
    bot_alone = and_(talked.c.conversation_id.notin_(with_staff), talked.c.conversation_id.notin_(with_handoff))

    with store.session() as session:
        per_day = [session.execute(DAY_COUNT, {"low": low, "high": high, "end": end}).scalar_one()
                   for low, high in zip(midnights, midnights[1:])]
        conversations, bot_only = session.execute(
            select(func.count(), func.coalesce(func.sum(case((bot_alone, 1), else_=0)), 0)).select_from(talked)
        ).one()
        created = session.execute(
            select(Ticket.queue, Ticket.status, Ticket.kind, Ticket.handoff_reason, Ticket.created_at,
                   Ticket.first_response_at, Ticket.resolved_at)
            .where(Ticket.created_at >= start, Ticket.created_at <= end)
        ).all()
        answered = session.execute(
            select(Ticket.queue, Ticket.kind, Ticket.handoff_reason, Ticket.satisfaction)
            .where(Ticket.satisfaction.isnot(None), Ticket.satisfaction_at >= start, Ticket.satisfaction_at <= end)
        ).all()
        waiting = session.execute(
            select(Ticket.queue, Ticket.created_at)
            .where(Ticket.status.notin_(CLOSED_STATUSES), Ticket.first_response_at.is_(None),
                   Ticket.created_at <= end)
        ).all()

    messages_per_day = [(since + dt.timedelta(days=i), count) for i, count in enumerate(per_day)]

    # Hand-offs and the queue x status matrix.
    reasons = Counter((row.handoff_reason or UNKNOWN_REASON) for row in created
                      if row.kind == HANDOFF or row.handoff_reason)
    handoffs_by_reason = dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
    queue_order = [*profile.services, CM_QUEUE]
    matrix_counts = Counter((row.queue, row.status) for row in created)
    queues = sorted({row.queue for row in created},
                    key=lambda q: (queue_order.index(q) if q in queue_order else len(queue_order), q))
    status_order = {status: index for index, status in enumerate(STATUSES)}
    matrix: dict[str, dict[str, int]] = {}
    for queue in queues:
        cells = sorted(((status, count) for (q, status), count in matrix_counts.items() if q == queue),
                       key=lambda item: (status_order.get(item[0], len(STATUSES)), item[0]))
        matrix[queue] = dict(cells)

    # Delays, in staff hours.
    clock = WorkingTime(hours)  # StaffHours.staff_time_between, fast for thousands of tickets

    def staff_hours(begin: dt.datetime, finish: dt.datetime) -> float:
        return clock.between(begin, finish).total_seconds() / 3600  # naive values are UTC

    first_response = _delay_summary([staff_hours(row.created_at, row.first_response_at)
                                     for row in created if row.first_response_at is not None])
    resolution = _delay_summary([staff_hours(row.created_at, row.resolved_at)
                                 for row in created if row.resolved_at is not None])

    # Overdue now.
    targets = {slug: service.target_hours for slug, service in profile.services.items()}
    targets[CM_QUEUE] = profile.cm_target_hours
    overdue = {queue: 0 for queue in queue_order}
    for row in waiting:
        target = targets.get(row.queue)
        if target is not None and staff_hours(row.created_at, now_utc) > target:
            overdue[row.queue] += 1

    # Satisfaction, per service and for the hand-offs (profile order, then the CM's own tickets).
    satisfaction_counts: dict[str, dict[str, int]] = {}
    for row in answered:
        group = HANDOFF_GROUP if (row.kind == HANDOFF or row.handoff_reason) else row.queue
        bucket = satisfaction_counts.setdefault(group, {"yes": 0, "no": 0})
        bucket["yes" if row.satisfaction == "yes" else "no"] += 1
    group_order = [*profile.services, CM_QUEUE, HANDOFF_GROUP]
    satisfaction_counts = dict(sorted(satisfaction_counts.items(),
                                      key=lambda item: group_order.index(item[0]) if item[0] in group_order else 99))

    names = {slug: service.name for slug, service in profile.services.items()}
    names[CM_QUEUE] = "Community manager"
    return Figures(
        since=since, until=until, messages_per_day=messages_per_day,
        conversations=conversations, conversations_bot_only=int(bot_only),
        bot_only_share=int(bot_only) / conversations if conversations else 0.0,
        handoffs_by_reason=handoffs_by_reason, tickets_by_service_status=matrix,
        first_response=first_response, resolution=resolution, overdue=overdue, satisfaction=satisfaction_counts,
        queue_names=names, target_hours=targets,
    )


# --- CSV -----------------------------------------------------------------------------------------

def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 4))
    return str(value)


def to_csv(figures: Figures) -> str:
    """All the figures in one long-format CSV: header ``metric,key,subkey,value``.

    One row per number, comma-separated, ``\\n`` line ends, dot decimals (floats rounded to 4
    places), dates ISO ``YYYY-MM-DD``, an empty value for "no data"; ``subkey`` is empty except
    for the ticket matrix. Rows, in this order:

    - ``period,since,,2026-11-25`` and ``period,until,,2026-12-01``
    - ``messages_per_day,<date>,,<count>`` for every day (zeros too)
    - ``conversations,total,,<n>``, ``conversations,bot_only,,<n>``, ``conversations,bot_only_share,,<0..1>``
    - ``handoffs_by_reason,<reason>,,<n>``
    - ``tickets_by_service_status,<queue>,<status>,<n>`` (non-zero cells)
    - ``first_response,median_hours|p90_hours|count,,<value>`` and the same for ``resolution``
    - ``overdue,<queue>,,<n>`` for every queue
    - ``satisfaction,<queue or handoff>,yes|no|rate,<value>`` for every group that was answered
    """
    rows: list[tuple] = [
        ("period", "since", "", figures.since.isoformat()),
        ("period", "until", "", figures.until.isoformat()),
    ]
    rows += [("messages_per_day", day.isoformat(), "", count) for day, count in figures.messages_per_day]
    rows += [
        ("conversations", "total", "", figures.conversations),
        ("conversations", "bot_only", "", figures.conversations_bot_only),
        ("conversations", "bot_only_share", "", figures.bot_only_share),
    ]
    rows += [("handoffs_by_reason", reason, "", count) for reason, count in figures.handoffs_by_reason.items()]
    rows += [("tickets_by_service_status", queue, status, count)
             for queue, by_status in figures.tickets_by_service_status.items()
             for status, count in by_status.items()]
    for metric in ("first_response", "resolution"):
        values = getattr(figures, metric)
        rows += [(metric, key, "", values.get(key)) for key in ("median_hours", "p90_hours", "count")]
    rows += [("overdue", queue, "", count) for queue, count in figures.overdue.items()]
    for group, answers in figures.satisfaction.items():
        rows += [("satisfaction", group, "yes", answers.get("yes", 0)), ("satisfaction", group, "no", answers.get("no", 0)),
                 ("satisfaction", group, "rate", figures.satisfaction_rate(group))]

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows((metric, key, subkey, _csv_value(value)) for metric, key, subkey, value in rows)
    return buffer.getvalue()


# --- French presentation -------------------------------------------------------------------------

def _number(value: float, digits: int = 1) -> str:
    text = f"{value:.{digits}f}".replace(".", ",")
    return text[:-2] if text.endswith(",0") and digits == 1 else text


def _duration(hours: float | None) -> str:
    if hours is None:
        return "—"
    minutes = round(hours * 60)
    whole, rest = divmod(minutes, 60)
    if not whole:
        return f"{rest} min"
    return f"{whole} h {rest:02d}" if rest else f"{whole} h"


def _date(day: dt.date, year: bool = True) -> str:
    return day.strftime("%d/%m/%Y" if year else "%d/%m")


def _long_date(day: dt.date) -> str:
    return f"{day.day}{'er' if day.day == 1 else ''} {FRENCH_MONTHS[day.month - 1]} {day.year}"


def reason_label(reason: str) -> str:
    """A hand-off reason as the page, its chart, the CSV reader and the terminal all show it."""
    label = "motif non précisé" if reason == UNKNOWN_REASON else HANDOFF_REASON_LABELS.get(reason, reason)
    return label[:1].upper() + label[1:]


def share_text(share: float | None) -> str:
    """A share as a French percentage that never rounds a real difference away: 840 of 843 is
    "99,6 %", not "100 %"; 1 of 3,000 is "0,03 %", not "0 %"."""
    if share is None:
        return "—"
    percent = 100 * float(share)
    if percent <= 0 or percent >= 100:
        return f"{percent:.0f} %"
    for digits in (1, 2, 3):
        rounded = round(percent, digits)
        if 0 < rounded < 100:
            return _number(rounded, digits).removesuffix(",00").removesuffix(",0") + " %"
    return "< 0,001 %" if percent < 50 else "> 99,999 %"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count <= 1 else (plural or singular + 's')}"


def _delay_line(title: str, values: dict) -> str:
    count = int(values.get("count") or 0)
    if not count:
        return f"{title} : pas encore de données"
    return (f"{title} : médiane {_duration(values['median_hours'])}, 9 sur 10 en moins de "
            f"{_duration(values['p90_hours'])} ({_plural(count, 'ticket')})")


def format_text(figures: Figures) -> list[str]:
    """French lines for ``guichet stats`` (delays are in staff hours, as the targets)."""
    title = f"Statistiques du {_date(figures.since)} au {_date(figures.until)} ({_plural(figures.days, 'jour')})"
    lines = [title, ""]
    total = figures.messages
    line = f"Messages des habitants : {total}"
    if total:
        busiest_day, busiest = max(figures.messages_per_day, key=lambda item: (item[1], item[0]))
        line += (f" ({_number(total / figures.days)} par jour en moyenne ; "
                 f"le plus chargé : {_date(busiest_day, year=figures.since.year != figures.until.year)} "
                 f"avec {busiest})")
    lines.append(line)
    lines.append(f"Conversations : {figures.conversations}, dont {figures.conversations_bot_only} "
                 f"traitées par l'assistant seul ({share_text(figures.bot_only_share)})")
    lines.append(f"Transferts au community manager : {figures.handoffs}")
    lines += [f"  - {reason_label(reason)} : {count}" for reason, count in figures.handoffs_by_reason.items()]
    lines.append(f"Tickets créés : {figures.tickets}")
    for queue, by_status in figures.tickets_by_service_status.items():
        detail = ", ".join(f"{STATUS_LABELS.get(status, status).lower()} {count}"
                           for status, count in by_status.items())
        lines.append(f"  - {figures.queue_name(queue)} : {sum(by_status.values())} ({detail})")
    lines.append("Délais en heures ouvrées (soirs, week-ends et jours fériés non comptés) :")
    lines.append(_delay_line("  - première réponse", figures.first_response))
    lines.append(_delay_line("  - résolution", figures.resolution))
    late = sum(figures.overdue.values())
    lines.append(f"Tickets ouverts en attente de réponse au-delà du délai cible : {late}")
    for queue, count in figures.overdue.items():
        if count:
            target = figures.target_hours.get(queue)
            suffix = f" (cible {_number(target)} h)" if target is not None else ""
            lines.append(f"  - {figures.queue_name(queue)}{suffix} : {count}")
    answers = sum(a.get("yes", 0) + a.get("no", 0) for a in figures.satisfaction.values())
    lines.append(f"Satisfaction après clôture : {_plural(answers, 'réponse')}")
    for group, counts in figures.satisfaction.items():
        lines.append(f"  - {figures.queue_name(group)} : {share_text(figures.satisfaction_rate(group))} de oui "
                     f"({counts.get('yes', 0)} oui, {counts.get('no', 0)} non)")
    return lines


# --- charts --------------------------------------------------------------------------------------

CHART_SIZE = (8, 4.5)  # inches, at 100 dpi: 800 x 450 px
CHART_DPI = 100
LONG_PERIOD_DAYS = 62  # beyond this, messages per day are drawn as an area, not bars
_BLUE, _LIGHT_BLUE, _GREY, _ORANGE = "#1f5fa8", "#8fb3dc", "#9aa5b1", "#d9822b"


def _wrap(label: str, width: int = 26) -> str:
    return "\n".join(textwrap.wrap(label, width)) or label


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "Aucune donnée sur la période", ha="center", va="center", fontsize=15,
            color=_GREY, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _label_size(rows: int) -> int:
    return 13 if rows <= 5 else 12 if rows <= 8 else 11


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=13)


def _chart_messages(figures: Figures, ax) -> None:
    first = _long_date(figures.since)
    if figures.since.year == figures.until.year:
        first = first.rsplit(" ", 1)[0]
    ax.set_title(f"Messages des habitants par jour\ndu {first} au {_long_date(figures.until)}", fontsize=16)
    if not figures.messages:
        _no_data(ax)
        return
    days = [day for day, _count in figures.messages_per_day]
    counts = [count for _day, count in figures.messages_per_day]
    if len(days) > LONG_PERIOD_DAYS:  # daily bars would be hairlines: an area instead
        ax.fill_between(days, counts, step="mid", color=_LIGHT_BLUE, linewidth=0)
        ax.step(days, counts, where="mid", color=_BLUE, linewidth=1)
        ax.set_ylim(bottom=0)
    else:
        colors = [_LIGHT_BLUE if day.weekday() >= 5 else _BLUE for day in days]
        ax.bar(days, counts, width=0.8, color=colors)
    ax.set_ylabel("Messages", fontsize=13)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=8))
    ax.xaxis.set_major_formatter(DateFormatter("%d/%m" if figures.since.year == figures.until.year else "%m/%Y"))
    ax.grid(axis="y", alpha=0.3)
    if len(days) <= LONG_PERIOD_DAYS and any(day.weekday() >= 5 for day in days):
        ax.legend(handles=[Patch(color=_BLUE, label="semaine"), Patch(color=_LIGHT_BLUE, label="week-end")],
                  fontsize=12, frameon=False, loc="best")


def _chart_tickets(figures: Figures, ax) -> None:
    ax.set_title("Tickets créés par service", fontsize=16)
    if not figures.tickets:
        _no_data(ax)
        return
    rows = sorted(figures.tickets_by_service_status.items(), key=lambda item: sum(item[1].values()))
    labels = [_wrap(figures.queue_name(queue), 26 if len(rows) <= 6 else 36) for queue, _by_status in rows]
    closed = [sum(n for status, n in by_status.items() if status in CLOSED_STATUSES) for _q, by_status in rows]
    still_open = [sum(by_status.values()) - done for (_q, by_status), done in zip(rows, closed)]
    positions = range(len(rows))
    ax.barh(positions, closed, color=_BLUE, label="clos")
    bars = ax.barh(positions, still_open, left=closed, color=_ORANGE, label="ouverts")
    ax.bar_label(bars, labels=[str(a + b) for a, b in zip(closed, still_open)], padding=4, fontsize=12)
    ax.set_yticks(list(positions))
    ax.set_yticklabels(labels, fontsize=_label_size(len(rows)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Tickets", fontsize=13)
    ax.set_xlim(0, max(a + b for a, b in zip(closed, still_open)) * 1.15)
    ax.legend(fontsize=11, frameon=False, loc="lower right")


def _chart_reasons(figures: Figures, ax) -> None:
    ax.set_title("Transferts au community manager par motif", fontsize=16)
    if not figures.handoffs:
        _no_data(ax)
        return
    rows = sorted(figures.handoffs_by_reason.items(), key=lambda item: (item[1], item[0]))
    positions = range(len(rows))
    bars = ax.barh(positions, [count for _reason, count in rows], color=_BLUE)
    ax.bar_label(bars, padding=4, fontsize=12)
    ax.set_yticks(list(positions))
    ax.set_yticklabels([_wrap(reason_label(reason), 30 if len(rows) <= 6 else 36)
                        for reason, _count in rows],
                       fontsize=_label_size(len(rows)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Transferts", fontsize=13)
    ax.set_xlim(0, max(count for _reason, count in rows) * 1.15)


def _chart_satisfaction(figures: Figures, ax) -> None:
    ax.set_title("Satisfaction après clôture (part de « oui »)", fontsize=16)
    rows = [(group, counts) for group, counts in figures.satisfaction.items()
            if counts.get("yes", 0) + counts.get("no", 0)]
    if not rows:
        _no_data(ax)
        return
    rows.reverse()
    positions = range(len(rows))
    rates = [100 * (figures.satisfaction_rate(group) or 0) for group, _counts in rows]
    bars = ax.barh(positions, rates, color=_BLUE)
    ax.bar_label(bars, labels=[f"{share_text(rate / 100)} ({c['yes'] + c['no']})" for rate, (_g, c) in zip(rates, rows)],
                 padding=4, fontsize=12)
    ax.set_yticks(list(positions))
    ax.set_yticklabels([_wrap(figures.queue_name(group), 30) for group, _counts in rows], fontsize=_label_size(len(rows)))
    ax.set_xlim(0, 125)
    ax.set_xlabel("% de réponses « oui » (nombre de réponses)", fontsize=13)


_CHART_DRAWERS = {"messages_per_day": _chart_messages, "tickets_per_service": _chart_tickets,
                  "handoff_reasons": _chart_reasons, "satisfaction": _chart_satisfaction}


def chart_png(figures: Figures, name: str) -> bytes:
    """One chart as PNG bytes (about 800 x 450 px, French text); ``name`` is one of ``CHARTS``.

    Drawn on a standalone Agg figure (no pyplot global state: safe in a web server's threads).
    """
    if name not in CHARTS:
        raise ValueError(f"unknown chart {name!r}; known: {', '.join(CHARTS)}")
    fig = Figure(figsize=CHART_SIZE, dpi=CHART_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _style(ax)
    _CHART_DRAWERS[name](figures, ax)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=CHART_DPI)
    return buffer.getvalue()
