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

from bot.outcomes import derive_outcome, tickets_of  # noqa: F401 - derive_outcome is part of this module's API

DEFAULT_AT = "2026-11-24T10:00:00"  # a Tuesday morning, inside staff hours (Europe/Paris)


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

    def _tickets_of(self, sender: str) -> list:
        return tickets_of(self.store, sender)

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
        tickets = await asyncio.to_thread(self._tickets_of, sender)
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
    from bot.stack import base_env, free_port, own_database, start_action_server, stop

    cases = load_cases(cases_path)
    with tempfile.TemporaryDirectory(prefix="guichet-eval-", dir=work_dir) as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'eval.db'}"
        from bot import db

        db.upgrade(database_url)
        port = free_port()
        env = base_env(database_url, GUICHET_TRUST_CLIENT_CLOCK="1")
        action = start_action_server(port, env, Path(tmp) / "actions.log")
        try:
            with own_database(database_url, Path(tmp)):
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
            "metrics": compute_metrics(results),
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


FAMILY_ORDER = ("faq", "ticket", "tickets", "handoff", "decline", "status", "smalltalk", "out_of_scope", "none")


def _ordered(labels) -> list[str]:
    """Families in the README's order, anything else (alphabetically) after."""
    labels = set(labels)
    known = [label for label in FAMILY_ORDER if label in labels]
    return known + sorted(labels - set(FAMILY_ORDER))


def rate(hits: int, total: int) -> float | None:
    """hits / total, None when there is nothing to divide by (no case of that sort in the set)."""
    return hits / total if total else None


def _recall(results: list[CaseResult], hit) -> dict[str, Any]:
    """Share of `results` for which `hit(result)` holds, with the ids of the others."""
    misses = [r.id for r in results if not hit(r)]
    hits = len(results) - len(misses)
    return {"rate": rate(hits, len(results)), "hits": hits, "total": len(results), "misses": misses}


def _alarms(results: list[CaseResult], raised) -> dict[str, Any]:
    """Share of `results` for which `raised(result)` holds (a false alarm), with their ids."""
    ids = [r.id for r in results if raised(r)]
    return {"rate": rate(len(ids), len(results)), "count": len(ids), "total": len(results), "ids": ids}


def precision_recall(pairs: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """(expected, obtained) pairs -> label -> precision, recall, support (expected), predicted, correct."""
    support = Counter(expected for expected, _ in pairs)
    predicted = Counter(obtained for _, obtained in pairs)
    correct = Counter(expected for expected, obtained in pairs if expected == obtained)
    return {label: {"precision": rate(correct[label], predicted[label]),
                    "recall": rate(correct[label], support[label]),
                    "support": support[label], "predicted": predicted[label], "correct": correct[label]}
            for label in sorted(set(support) | set(predicted))}


def category(case_id: str) -> str | None:
    """"a-comment-03" -> "comment": the second dash-separated field of an id that has at least three."""
    fields = case_id.split("-")
    return fields[1] if len(fields) >= 3 and fields[1] else None


def urgent_handoff(result: CaseResult) -> bool:
    return result.outcome == "handoff" and bool(result.urgent)


def compute_metrics(results: list[CaseResult]) -> dict[str, Any]:
    """Every figure of the report, from the case results alone (rates are None when undefined)."""
    passed = sum(r.passed for r in results)
    outcome_right = sum(r.outcome == r.expect for r in results)
    urgent = [r for r in results if r.expected_urgent is True]
    not_urgent = [r for r in results if r.expected_urgent is not True]
    handoff = [r for r in results if r.expect == "handoff"]
    not_handoff = [r for r in results if r.expect != "handoff"]
    complaints = [r for r in results if r.expected_kind == "complaint"]
    by_category: dict[str, list[CaseResult]] = {}
    for result in results:
        if category(result.id):
            by_category.setdefault(category(result.id), []).append(result)
    pairs = Counter((r.expect, r.outcome) for r in results if r.outcome != r.expect)
    return {
        "accuracy": {"rate": rate(passed, len(results)), "hits": passed, "total": len(results)},
        "outcome_accuracy": {"rate": rate(outcome_right, len(results)), "hits": outcome_right,
                             "total": len(results)},
        "outcomes": precision_recall([(r.expect, r.outcome) for r in results]),
        "families": precision_recall([(family(r.expect), family(r.outcome)) for r in results]),
        "urgent_recall": _recall(urgent, urgent_handoff),
        "false_urgent": _alarms(not_urgent, urgent_handoff),
        "handoff_recall": _recall(handoff, lambda r: r.outcome == "handoff"),
        "false_handoff": _alarms(not_handoff, lambda r: r.outcome == "handoff"),
        "complaint_recall": _recall(complaints, lambda r: r.outcome == r.expect and r.kind == "complaint"),
        "categories": {name: {"rate": rate(sum(r.passed for r in group), len(group)),
                              "hits": sum(r.passed for r in group), "total": len(group)}
                       for name, group in sorted(by_category.items())},
        "confusion_pairs": [{"expected": expected, "obtained": obtained, "count": count}
                            for (expected, obtained), count in sorted(pairs.items(),
                                                                      key=lambda item: (-item[1], item[0]))],
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _fraction(figure: dict[str, Any], hit_key: str = "hits") -> str:
    return f"{_pct(figure['rate'])} ({figure[hit_key]}/{figure['total']})"


def _ids(ids: list[str]) -> str:
    return ", ".join(ids) if ids else "-"


def _pr(label: str, figure: dict[str, Any]) -> str:
    """"faq 1.00/0.95 (20)": precision/recall (support); "-" when never obtained / never expected."""
    precision, recall = (_pct(figure[key]).replace("n/a", "-") for key in ("precision", "recall"))
    return f"{label} {precision}/{recall} ({figure['support']})"


def format_metrics(metrics: dict[str, Any]) -> list[str]:
    """The short metrics block: one line a figure."""
    families = metrics["families"]
    weak = {label: figure for label, figure in metrics["outcomes"].items()
            if figure["precision"] != 1 or figure["recall"] != 1}
    lines = [
        f"outcome accuracy: {_fraction(metrics['outcome_accuracy'])}",
        "families P/R (n): " + "; ".join(_pr(label, families[label]) for label in _ordered(families)),
        "outcomes P/R (n) below 1.00: " + ("; ".join(_pr(label, figure) for label, figure in weak.items())
                                          if weak else f"none ({len(metrics['outcomes'])} outcomes)"),
        f"urgent recall: {_fraction(metrics['urgent_recall'])}, missed: {_ids(metrics['urgent_recall']['misses'])}",
        f"false urgent alarms: {_fraction(metrics['false_urgent'], 'count')}: {_ids(metrics['false_urgent']['ids'])}",
        f"hand-off recall: {_fraction(metrics['handoff_recall'])}, missed: {_ids(metrics['handoff_recall']['misses'])}",
        f"false hand-offs: {_fraction(metrics['false_handoff'], 'count')}: {_ids(metrics['false_handoff']['ids'])}",
        f"complaint recall: {_fraction(metrics['complaint_recall'])}, "
        f"missed: {_ids(metrics['complaint_recall']['misses'])}",
    ]
    if metrics["categories"]:
        lines.append("by category: " + "; ".join(f"{name} {figure['hits']}/{figure['total']}"
                                                 for name, figure in metrics["categories"].items()))
    return lines


def format_confusion(table: dict[str, dict[str, int]]) -> list[str]:
    """The family confusion table as text: expected families in rows, obtained ones in columns."""
    if not table:
        return []
    rows = _ordered(table)
    columns = _ordered(set(table) | {obtained for counts in table.values() for obtained in counts})
    corner = "expected \\ got"
    first = max(len(corner), *(len(row) for row in rows))
    widths = [max(len(column), *(len(str(table[row].get(column, 0))) for row in rows)) for column in columns]
    lines = [f"{corner:<{first}}  " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths))]
    for row in rows:
        cells = (str(table[row].get(column, ".")) for column in columns)
        lines.append(f"{row:<{first}}  " + " ".join(f"{cell:>{w}}" for cell, w in zip(cells, widths)))
    return [line.rstrip() for line in lines]


def format_report(results: list[CaseResult], accuracy: float) -> list[str]:
    """Failures, the metrics block, the family confusion table, then the `accuracy:` line."""
    lines = []
    for result in results:
        if not result.passed:
            lines.append(f"FAIL {result.id}: {'; '.join(result.problems)}")
    if results:
        lines.extend(format_metrics(compute_metrics(results)))
        lines.extend(format_confusion(confusion(results)))
    passed = sum(r.passed for r in results)
    lines.append(f"accuracy: {accuracy:.2f} ({passed}/{len(results)})")
    return lines
