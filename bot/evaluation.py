"""`guichet eval`: run conversation cases through the real assistant and score the outcomes.

Each case runs in a fresh conversation: the trained model (Rasa's message processor, in this
process), the real action server (a subprocess) and a real, throw-away ticket database. The
outcome is read from what the assistant did — tickets in the table and the outcome tag each
reply carries — never from the NLU intent.
"""
from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_AT = "2026-11-24T10:00:00"  # a Tuesday morning, inside staff hours (Europe/Paris)
OUTCOME_PRIORITY = ("decline", "status", "faq", "out_of_scope", "smalltalk")


@dataclass
class Case:
    id: str
    turns: list[str]
    expect: str
    kind: str | None = None
    urgent: bool | None = None
    at: str | None = None


@dataclass
class CaseResult:
    id: str
    expect: str
    outcome: str
    passed: bool
    kind: str | None = None
    expected_kind: str | None = None
    urgent: bool | None = None
    expected_urgent: bool | None = None
    replies: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def load_cases(path: Path) -> list[Case]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise ValueError(f"{path}: expected a mapping with a 'cases' list")
    cases = []
    for raw in data["cases"]:
        turns = raw.get("turns")
        if not raw.get("id") or not raw.get("expect") or not isinstance(turns, list) or not turns:
            raise ValueError(f"{path}: case {raw!r} needs id, turns (a non-empty list) and expect")
        cases.append(Case(id=str(raw["id"]), turns=[str(t) for t in turns], expect=str(raw["expect"]),
                          kind=raw.get("kind"), urgent=raw.get("urgent"),
                          at=str(raw["at"]) if raw.get("at") else None))
    return cases


def derive_outcome(tickets: list, reply_outcomes: list[str | None]) -> tuple[str, str | None, bool]:
    """Outcome from side effects: a hand-off ticket, else one service ticket, else the replies' tags."""
    handoffs = [t for t in tickets if t.kind == "handoff"]
    if handoffs:
        return "handoff", "handoff", any(t.urgent for t in handoffs)
    if tickets:
        queues = sorted({t.queue for t in tickets})
        if len(tickets) > 1:
            return f"tickets:{'+'.join(queues)}", tickets[0].kind, False
        queue = tickets[0].queue
        return ("ticket:unrouted" if queue == "cm" else f"ticket:{queue}"), tickets[0].kind, False
    tags = [tag for tag in reply_outcomes if tag and not tag.startswith(("ticket", "handoff"))]
    for family in OUTCOME_PRIORITY:
        matching = [tag for tag in tags if tag.split(":")[0] == family]
        if matching:
            return matching[-1], None, False
    return "none", None, False


def check(case: Case, outcome: str, kind: str | None, urgent: bool, replies: list[str]) -> CaseResult:
    problems = []
    if outcome != case.expect:
        problems.append(f"outcome {outcome} != {case.expect}")
    if case.kind and kind != case.kind:
        problems.append(f"kind {kind} != {case.kind}")
    if case.urgent is not None and bool(urgent) != bool(case.urgent):
        problems.append(f"urgent {urgent} != {case.urgent}")
    return CaseResult(id=case.id, expect=case.expect, outcome=outcome, passed=not problems, kind=kind,
                      expected_kind=case.kind, urgent=urgent, expected_urgent=case.urgent,
                      replies=replies, problems=problems)


class Evaluator:
    """Holds the loaded Rasa agent and the throw-away database for one evaluation run."""

    def __init__(self, agent: Any, store: Any, concurrency: int = 8):
        self.agent = agent
        self.store = store
        self.semaphore = asyncio.Semaphore(concurrency)

    async def run_case(self, case: Case) -> CaseResult:
        from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

        sender = f"eval-{case.id}-{uuid.uuid4().hex[:8]}"
        at = case.at or DEFAULT_AT
        async with self.semaphore:
            for turn in case.turns:
                message = UserMessage(turn, CollectingOutputChannel(), sender, input_channel="eval",
                                      metadata={"now": at})
                await self.agent.handle_message(message)
            tracker = await self.agent.tracker_store.retrieve(sender)
        bot_events = [e for e in tracker.events if e.type_name == "bot"]
        replies = [e.text or "" for e in bot_events]
        tags = [(e.metadata or {}).get("outcome") for e in bot_events]
        tickets = await asyncio.to_thread(self.store.for_conversation, sender)
        outcome, kind, urgent = derive_outcome(tickets, tags)
        return check(case, outcome, kind, urgent, replies)


async def _evaluate(cases: list[Case], model: Path, action_url: str, database_url: str,
                    concurrency: int) -> list[CaseResult]:
    from rasa.core.agent import load_agent
    from rasa.core.utils import AvailableEndpoints
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.endpoints import EndpointConfig
    from rasa.utils.log_utils import configure_structlog

    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)

    from bot.tickets import TicketStore

    endpoints = AvailableEndpoints(
        action=EndpointConfig(url=action_url),
        event_broker=EndpointConfig(type="bot.integrations.rasa_broker.TranscriptBroker", url=database_url),
    )
    agent = await load_agent(model_path=str(model), endpoints=endpoints)
    evaluator = Evaluator(agent, TicketStore(database_url), concurrency)
    return await asyncio.gather(*(evaluator.run_case(case) for case in cases))


def evaluate(cases_path: Path, model: Path, json_path: Path | None = None, concurrency: int = 8,
             work_dir: Path | None = None) -> tuple[list[CaseResult], float]:
    from bot.stack import base_env, free_port, start_action_server, stop

    cases = load_cases(cases_path)
    with tempfile.TemporaryDirectory(prefix="guichet-eval-", dir=work_dir) as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'eval.db'}"
        from bot import db

        db.upgrade(database_url)
        port = free_port()
        env = base_env(database_url, GUICHET_TRUST_CLIENT_CLOCK="1")
        action = start_action_server(port, env, Path(tmp) / "actions.log")
        try:
            results = asyncio.run(_evaluate(cases, model, f"http://127.0.0.1:{port}/webhook",
                                            database_url, concurrency))
        finally:
            stop(action)
    passed = sum(r.passed for r in results)
    accuracy = passed / len(results) if results else 0.0
    if json_path:
        json_path.write_text(json.dumps({
            "cases": str(cases_path), "model": str(model), "accuracy": accuracy,
            "passed": passed, "total": len(results),
            "confusion": confusion(results),
            "results": [asdict(r) for r in results],
        }, ensure_ascii=False, indent=2), encoding="utf-8")
    return results, accuracy


def family(outcome: str) -> str:
    return outcome.split(":")[0] if outcome.startswith(("faq", "ticket")) else outcome


def confusion(results: list[CaseResult]) -> dict[str, dict[str, int]]:
    """Expected outcome family -> obtained outcome family -> count."""
    table: dict[str, Counter] = {}
    for result in results:
        table.setdefault(family(result.expect), Counter())[family(result.outcome)] += 1
    return {expected: dict(counter) for expected, counter in sorted(table.items())}


def format_report(results: list[CaseResult], accuracy: float) -> list[str]:
    lines = []
    for result in results:
        if not result.passed:
            lines.append(f"FAIL {result.id}: {'; '.join(result.problems)}")
    passed = sum(r.passed for r in results)
    lines.append(f"accuracy: {accuracy:.2f} ({passed}/{len(results)})")
    return lines
