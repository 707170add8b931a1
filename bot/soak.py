"""Soak test on loopback: many concurrent conversations through our REST channel.

    python -m bot.soak --messages 5000 --conversations 300      (or: make soak)

Starts its own stack (action server + Rasa server, throw-away SQLite database unless
``--database-url``), plays realistic French conversations (the messages of tests/cases/*.yml:
questions, reports with their follow-ups, status questions, hand-offs followed by messages to the
CM), each conversation in its own thread, then checks from the database:

- citizen messages stored == messages sent (nothing lost, nothing stored twice);
- no duplicate ticket (one ticket per citizen message at most, no citizen message twice);
- no unanswered message: every message outside a hand-off got at least one answer, every
  message during a hand-off is recorded on the hand-off ticket;
- memory: RSS (``/proc/<pid>/status``) of the Rasa server and the action server after warm-up
  and at the end.

Prints the counts; exit code 1 if a check fails. No timed assertion: the duration is reported.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from bot.settings import PROJECT_ROOT

CASES_DIR = PROJECT_ROOT / "tests" / "cases"
FOLLOW_UPS = ["vous êtes là ?", "merci de me rappeler vite svp", "c'est toujours d'actualité ?",
              "je reste joignable toute la journée", "bon j'attends votre réponse alors", "allô ??"]
SOAK_ENV = {  # soak conversations type faster than people: the flood guard is not what is measured here
    "GUICHET_FLOOD_PER_MINUTE": "600", "GUICHET_FLOOD_BURST": "100",
}


# --- corpus ------------------------------------------------------------------------------------------
def load_corpus(directory: Path = CASES_DIR) -> tuple[list[list[str]], list[list[str]]]:
    """(scripts, hand-off scripts): each script is the turns of one case."""
    scripts, handoffs = [], []
    for path in sorted(directory.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for case in data.get("cases") or []:
            turns = [str(t) for t in case.get("turns") or [] if str(t).strip()]
            if not turns:
                continue
            (handoffs if case.get("expect") == "handoff" else scripts).append(turns)
    if not scripts:
        raise ValueError(f"no conversation in {directory}")
    return scripts, handoffs


def plan_conversation(rng: random.Random, quota: int, scripts: list[list[str]], handoffs: list[list[str]],
                      handoff_share: float = 0.2) -> list[str]:
    """``quota`` messages: a few cases one after the other; some conversations end with a hand-off."""
    messages: list[str] = []
    ends_with_handoff = bool(handoffs) and rng.random() < handoff_share
    handoff_at = max(0, quota - rng.randint(2, 4)) if ends_with_handoff else None
    while len(messages) < quota:
        if handoff_at is not None and len(messages) >= handoff_at:
            messages.extend(rng.choice(handoffs))
            while len(messages) < quota:
                messages.append(rng.choice(FOLLOW_UPS))
            break
        messages.extend(rng.choice(scripts))
    return messages[:quota]


# --- memory ------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- the run -----------------------------------------------------------------------------------------
@dataclass
class Sent:
    sender: str
    client_id: str
    text: str
    answers: int
    status: int
    attempts: int


@dataclass
class SoakReport:
    messages_sent: int = 0
    conversations: int = 0
    citizen_messages_stored: int = 0
    duplicate_messages: int = 0
    tickets: int = 0
    handoff_tickets: int = 0
    duplicate_tickets: int = 0
    answered: int = 0
    silent_in_handoff: int = 0
    unanswered: int = 0
    slow_down_notices: int = 0
    technical_problem_answers: int = 0
    http_errors: int = 0
    retries: int = 0
    tracker_user_events: int = 0
    tracker_events_doubled: int = 0
    tracker_events_missing: int = 0
    kills: list = field(default_factory=list)  # what was killed and restarted, when
    rss_mb: dict = field(default_factory=dict)  # {"rasa": {"warm": .., "end": .., "peak": ..}, "actions": ...}
    duration_s: float = 0.0
    throughput_per_s: float = 0.0

    @property
    def memory_growth_mb(self) -> dict:
        return {name: round(v["end"] - v["warm"], 1) for name, v in self.rss_mb.items() if v.get("warm") and v.get("end")}

    def problems(self, memory_slack_mb: float = 150.0, memory_slack_ratio: float = 0.5) -> list[str]:
        found = []
        if self.citizen_messages_stored != self.messages_sent:
            found.append(f"stored {self.citizen_messages_stored} citizen messages for {self.messages_sent} sent")
        if self.duplicate_messages:
            found.append(f"{self.duplicate_messages} citizen messages stored twice")
        if self.duplicate_tickets:
            found.append(f"{self.duplicate_tickets} duplicate tickets")
        if self.unanswered:
            found.append(f"{self.unanswered} messages without answer outside a hand-off")
        if self.http_errors:
            found.append(f"{self.http_errors} HTTP errors")
        if self.tracker_events_doubled:
            found.append(f"{self.tracker_events_doubled} citizen messages twice in Rasa's stored conversations")
        if self.tracker_events_missing:
            found.append(f"{self.tracker_events_missing} citizen messages missing from Rasa's stored conversations")
        if self.technical_problem_answers > max(1, self.messages_sent // 100):
            found.append(f"{self.technical_problem_answers} technical-problem answers (a part failed under load: "
                         "see the logs)")
        restarted = {kill.split(" ")[0] for kill in self.kills}
        for name, values in self.rss_mb.items():
            warm, end = values.get("warm"), values.get("end")
            if name in restarted:  # warm and end are two processes: its peak is reported, not compared
                continue
            if warm and end and end > warm * (1 + memory_slack_ratio) + memory_slack_mb:
                found.append(f"memory of {name} grew from {warm:.0f} MB to {end:.0f} MB")
        return found

    def lines(self) -> list[str]:
        lines = [
            f"messages sent:            {self.messages_sent} in {self.conversations} conversations",
            f"citizen messages stored:  {self.citizen_messages_stored} (stored twice: {self.duplicate_messages})",
            f"tickets:                  {self.tickets} (hand-offs {self.handoff_tickets}, duplicates {self.duplicate_tickets})",
            f"answered:                 {self.answered}; silent during a hand-off (recorded on the ticket): "
            f"{self.silent_in_handoff}; unanswered: {self.unanswered}",
            f"technical-problem answers: {self.technical_problem_answers}; slow-down notices: {self.slow_down_notices}; "
            f"HTTP errors: {self.http_errors}; retries: {self.retries}",
            f"Rasa user events:         {self.tracker_user_events} (doubled {self.tracker_events_doubled}, "
            f"missing {self.tracker_events_missing})",
        ]
        for kill in self.kills:
            lines.append(f"killed:                   {kill}")
        for name, values in self.rss_mb.items():
            lines.append(f"RSS {name:<8} warm {values.get('warm') or 0:7.1f} MB  end {values.get('end') or 0:7.1f} MB  "
                         f"peak {values.get('peak') or 0:7.1f} MB")
        lines.append(f"duration:                 {self.duration_s:.0f} s ({self.throughput_per_s:.1f} messages/s)")
        return lines


class _Sampler(threading.Thread):
    def __init__(self, pids: dict[str, "int | callable"], every: float = 1.0):
        """``pids``: a pid, or a callable giving the current one (a part restarted mid-run)."""
        super().__init__(daemon=True)
        self.pids = pids
        self.every = every
        self.stop_event = threading.Event()
        self.values: dict[str, dict] = {name: {"warm": None, "end": None, "peak": 0.0} for name in pids}

    def sample(self) -> dict[str, float | None]:
        now = {name: rss_mb(pid() if callable(pid) else pid) for name, pid in self.pids.items()}
        for name, value in now.items():
            if value:
                self.values[name]["peak"] = max(self.values[name]["peak"], value)
        return now

    def mark(self, which: str) -> None:
        for name, value in self.sample().items():
            self.values[name][which] = round(value, 1) if value else None

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            self.sample()


def processes_of(stack) -> dict:
    """The processes whose memory is followed: one stack, or every part of a cluster (``bot.cluster``)."""
    if hasattr(stack, "rasa") and isinstance(stack.rasa, list):
        return {part.name: (lambda part=part: part.process.pid) for part in stack.rasa + stack.actions}
    return {"rasa": stack.rasa.pid, "actions": stack.action.pid}


def run_soak(stack, messages: int = 300, conversations: int = 30, seed: int = 6, warmup: float = 0.2,
             timeout: float = 300, progress=None, chaos=None) -> SoakReport:
    """Play the soak against a running stack (``bot.stack.Stack``) or cluster (``bot.cluster.Cluster``)
    and check the database. ``chaos(done_fraction)`` is called after every message (kills, restarts)."""
    import requests

    from bot.integrations.reliability import message_id_for, technical_problem_text
    from bot.tickets import TicketStore

    conversations = max(1, min(conversations, messages))
    rng = random.Random(seed)
    scripts, handoffs = load_corpus()
    run_id = uuid.uuid4().hex[:6]
    quotas = [messages // conversations + (1 if i < messages % conversations else 0) for i in range(conversations)]
    plans = {f"soak-{run_id}-{i:04d}": plan_conversation(rng, quota, scripts, handoffs)
             for i, quota in enumerate(quotas)}
    technical = technical_problem_text()[:30]
    sent: list[Sent] = []
    lock = threading.Lock()
    counter = {"done": 0, "warm": False}
    warm_at = max(1, int(messages * warmup))
    sampler = _Sampler(processes_of(stack))
    sampler.start()
    report = SoakReport(conversations=conversations)

    def converse(sender: str, texts: list[str]) -> None:
        session = requests.Session()
        for number, text in enumerate(texts):
            client_id = str(number)
            status, answers, attempts, body = 0, 0, 0, []
            while attempts < 8:  # a retry reuses the message id: never handled twice
                attempts += 1
                try:
                    response = session.post(stack.chat_url, json={"sender": sender, "message": text,
                                                                  "message_id": client_id}, timeout=timeout)
                    status = response.status_code
                    if status == 200:
                        body = response.json()
                        break
                except requests.RequestException:
                    status = -1
                time.sleep(min(10.0, 1.0 * attempts))
            answers = sum(1 for m in body if m.get("text"))
            with lock:
                sent.append(Sent(sender, client_id, text, answers, status, attempts))
                report.technical_problem_answers += sum(1 for m in body if (m.get("text") or "").startswith(technical))
                report.slow_down_notices += sum(1 for m in body if "très vite" in (m.get("text") or ""))
                counter["done"] += 1
                done = counter["done"]
                if not counter["warm"] and done >= warm_at:
                    counter["warm"] = True
                    sampler.mark("warm")
            if progress and done % 500 == 0:
                progress(f"{done}/{messages} messages")
            if chaos is not None:
                chaos(done / messages)
        session.close()

    started = time.monotonic()
    threads = [threading.Thread(target=converse, args=item, daemon=True) for item in plans.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.duration_s = round(time.monotonic() - started, 1)
    sampler.mark("end")
    sampler.stop_event.set()
    report.rss_mb = sampler.values
    report.messages_sent = len(sent)
    report.throughput_per_s = round(len(sent) / report.duration_s, 2) if report.duration_s else 0.0
    report.http_errors = sum(1 for s in sent if s.status != 200)
    report.retries = sum(s.attempts - 1 for s in sent)
    _check_database(report, TicketStore(stack.database_url), sent, set(plans), message_id_for)
    _check_trackers(report, stack.database_url, sent, set(plans), message_id_for)
    return report


def _check_trackers(report: SoakReport, database_url: str, sent: list[Sent], senders: set[str],
                    message_id_for) -> None:
    """Rasa's stored conversations: each citizen message is one ``user`` event, never lost nor doubled."""
    import json
    from collections import Counter

    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url)
    try:
        if "events" not in inspect(engine).get_table_names():
            return  # no SQL tracker store
        prefix = next(iter(senders)).rsplit("-", 1)[0] + "-"
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT sender_id, data FROM events WHERE type_name = 'user' "
                                           "AND sender_id LIKE :prefix"), {"prefix": prefix + "%"}).all()
    finally:
        engine.dispose()
    stored = Counter((sender, json.loads(data).get("message_id")) for sender, data in rows)
    expected = {(item.sender, message_id_for(item.sender, item.client_id)) for item in sent}
    report.tracker_user_events = sum(stored.values())
    report.tracker_events_doubled = sum(count - 1 for key, count in stored.items() if count > 1)
    report.tracker_events_missing = sum(1 for key in expected if key not in stored)


def _check_database(report: SoakReport, store, sent: list[Sent], senders: set[str], message_id_for) -> None:
    from collections import Counter

    from sqlalchemy import func, select

    from bot.models import Message, Ticket

    prefix = next(iter(senders)).rsplit("-", 1)[0] + "-"
    with store.session() as session:
        rows = session.execute(
            select(Message.conversation_id, Message.external_id, Message.ticket_id)
            .where(Message.author == "citizen", Message.conversation_id.like(prefix + "%"))
        ).all()
        tickets = session.execute(
            select(Ticket.id, Ticket.kind, Ticket.source_message_id, Ticket.conversation_id)
            .where(Ticket.conversation_id.like(prefix + "%"))
        ).all()
        per_message = session.execute(
            select(Ticket.source_message_id, func.count()).where(Ticket.conversation_id.like(prefix + "%"))
            .group_by(Ticket.source_message_id).having(func.count() > 1)
        ).all()
    report.citizen_messages_stored = len(rows)
    keys = Counter((conversation, external) for conversation, external, _ticket in rows)
    report.duplicate_messages = sum(count - 1 for count in keys.values() if count > 1)
    report.tickets = len(tickets)
    handoff_ids = {ticket_id for ticket_id, kind, _source, _conversation in tickets if kind == "handoff"}
    report.handoff_tickets = len(handoff_ids)
    report.duplicate_tickets = sum(count - 1 for _source, count in per_message if _source is not None)
    linked = {(conversation, external): ticket for conversation, external, ticket in rows}
    for item in sent:
        if item.answers:
            report.answered += 1
        elif linked.get((item.sender, message_id_for(item.sender, item.client_id))) in handoff_ids:
            report.silent_in_handoff += 1
        else:
            report.unanswered += 1


class KillAndRestart:
    """Chaos for a cluster soak: at ``at`` of the run, SIGKILL one Rasa server and one action server
    (a crash: no clean shutdown, messages in flight), then start them again while the run goes on."""

    def __init__(self, cluster, report_kills: list, at: float = 0.3, parts: tuple[str, ...] = ("rasa", "actions")):
        self.cluster = cluster
        self.kills = report_kills
        self.at = at
        self.parts = parts
        self._fired = threading.Event()
        self.thread: threading.Thread | None = None

    def __call__(self, done_fraction: float) -> None:
        if done_fraction < self.at or self._fired.is_set():
            return
        self._fired.set()
        self.thread = threading.Thread(target=self._run, args=(done_fraction,), daemon=True)
        self.thread.start()

    def _run(self, done_fraction: float) -> None:
        victims = [getattr(self.cluster, kind)[0] for kind in self.parts]
        for part in victims:
            part.kill()
        started = time.monotonic()
        for part in victims:
            part.restart()
        self.kills.extend(f"{part.name} (SIGKILL at {done_fraction:.0%} of the messages, back after "
                          f"{time.monotonic() - started:.0f} s)" for part in victims)

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()


# --- command line ------------------------------------------------------------------------------------
def soak_cluster(model: Path, var_dir: Path, messages: int, conversations: int, seed: int, servers: int,
                 action_servers: int, kill: bool, database_url: str | None = None, progress=None,
                 timeout: float = 300) -> SoakReport:
    """The soak across several servers (``bot.cluster``) on PostgreSQL and Redis, with the kills."""
    import contextlib
    import os

    from bot.cluster import running_cluster, throwaway_postgres

    for key, value in SOAK_ENV.items():
        os.environ.setdefault(key, value)
    with contextlib.ExitStack() as stack:
        url = database_url or stack.enter_context(throwaway_postgres())
        cluster = stack.enter_context(running_cluster(model, url, var_dir, rasa_count=servers,
                                                      action_count=action_servers, staff_count=0, webchat_count=0,
                                                      open311_count=0, extra_env=dict(SOAK_ENV)))
        kills: list = []
        chaos = KillAndRestart(cluster, kills) if kill else None
        report = run_soak(cluster, messages, conversations, seed, progress=progress, chaos=chaos, timeout=timeout)
        if chaos is not None:
            chaos.wait()
        report.kills = kills
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--database-url", default=None, help="default: a throw-away SQLite database")
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    parser.add_argument("--servers", type=int, default=0,
                        help="N Rasa servers behind nginx (bot.cluster; PostgreSQL and Redis of its own); 0: one stack")
    parser.add_argument("--action-servers", type=int, default=2)
    parser.add_argument("--kill", action="store_true",
                        help="with --servers: kill one Rasa server and one action server mid-run, then restart them")
    args = parser.parse_args(argv)

    import json
    import os

    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from bot.settings import get_settings
    from bot.stack import latest_model, running_stack

    model = args.model or latest_model(get_settings().model_dir)
    var_dir = Path(tempfile.mkdtemp(prefix="soak-", dir=get_settings().var_dir if get_settings().var_dir.exists() else None))
    url = args.database_url or f"sqlite:///{var_dir / 'soak.db'}"
    print(f"soak: {args.messages} messages, {args.conversations} conversations; "
          f"{f'{args.servers} Rasa + {args.action_servers} action servers behind nginx' if args.servers else 'database ' + url}"
          f"; logs {var_dir}/logs", flush=True)
    for key, value in SOAK_ENV.items():
        os.environ.setdefault(key, value)
    progress = lambda line: print(f"  {line}", flush=True)  # noqa: E731
    if args.servers:
        report = soak_cluster(model, var_dir, args.messages, args.conversations, args.seed, args.servers,
                              args.action_servers, args.kill, args.database_url, progress)
    else:
        with running_stack(model, url, var_dir) as stack:
            report = run_soak(stack, args.messages, args.conversations, args.seed, progress=progress)
    for line in report.lines():
        print(line)
    problems = report.problems()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("soak: OK" if not problems else "soak: FAILED")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
