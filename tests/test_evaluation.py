"""`guichet eval` on real models and cases."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.evaluation import (Case, category, check, compute_metrics, confusion, derive_outcome, evaluate,
                            format_confusion, format_metrics, format_report, load_cases)
from conftest import REFERENCE, ROOT

GUICHET = str(Path(sys.executable).parent / "guichet")


@pytest.mark.slow
def test_cli_prints_failures_and_accuracy_and_writes_json(model_path, tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([GUICHET, "eval", str(ROOT / "tests" / "cases" / "cli_smoke.yml"),
                             "--model", str(model_path), "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "accuracy: 0.67 (2/3)"
    assert any(line.startswith("FAIL smoke-wrong-on-purpose: outcome smalltalk != out_of_scope") for line in lines)
    # Failures, then the metrics block, then the family confusion table, then the accuracy line.
    fail = next(i for i, line in enumerate(lines) if line.startswith("FAIL "))
    assert lines.index("outcome accuracy: 0.67 (2/3)") > fail
    assert next(i for i, line in enumerate(lines) if line.startswith("expected \\ got")) < len(lines) - 1
    data = json.loads(out.read_text())
    metrics = data["metrics"]
    assert metrics["accuracy"] == {"rate": 2 / 3, "hits": 2, "total": 3}
    assert metrics["confusion_pairs"] == [{"expected": "out_of_scope", "obtained": "smalltalk", "count": 1}]
    by_id = {r["id"]: r for r in data["results"]}
    night = by_id["smoke-ticket-night"]
    assert night["passed"] and night["outcome"] == "ticket:voirie", night
    assert any("Où exactement" in r for r in night["replies"]), night["replies"]
    # Christmas night (a Friday): read after the holiday and the weekend.
    assert any("lundi 28 décembre" in r for r in night["replies"]), night["replies"]


@pytest.mark.slow
def test_dev_set_accuracy(model_path, tmp_path):
    results, accuracy = evaluate(REFERENCE / "dev_cases.yml", model_path, tmp_path / "dev.json")
    failed = [(r.id, r.problems) for r in results if not r.passed]
    assert accuracy >= 0.90, failed


@pytest.mark.slow
def test_holdout_set_accuracy(model_path, tmp_path):
    results, accuracy = evaluate(ROOT / "tests" / "cases" / "holdout.yml", model_path, tmp_path / "h.json")
    failed = [(r.id, r.problems) for r in results if not r.passed]
    assert accuracy >= 0.85, failed


def test_outcome_comes_from_what_the_assistant_did():
    class T:
        def __init__(self, kind, queue, urgent=False):
            self.kind, self.queue, self.urgent = kind, queue, urgent

    assert derive_outcome([T("handoff", "cm", True)], ["faq:piscine"]) == ("handoff", "handoff", True)
    assert derive_outcome([T("report", "voirie")], [None]) == ("ticket:voirie", "report", False)
    assert derive_outcome([], ["smalltalk", "faq:piscine"]) == ("faq:piscine", None, False)
    assert derive_outcome([], [None]) == ("none", None, False)


@pytest.mark.slow
def test_bad_case_files_are_refused(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 1\ncases:\n  - id: x\n    turns: []\n    expect: smalltalk\n")
    with pytest.raises(ValueError):
        load_cases(bad)
    result = subprocess.run([GUICHET, "eval", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalide" in result.stderr


# --- Metrics, from hand-made results -----------------------------------------------------------

def _result(case_id, expect, outcome, kind=None, urgent=False, expected_kind=None, expected_urgent=None):
    case = Case(id=case_id, turns=["..."], expect=expect, kind=expected_kind, urgent=expected_urgent)
    return check(case, outcome, kind, urgent, [])


SAMPLE = [
    _result("a-faq-01", "faq:piscine", "faq:piscine"),
    _result("a-faq-02", "faq:piscine", "faq:horaires_mairie"),
    _result("a-urgent-01", "handoff", "handoff", "handoff", True, expected_urgent=True),
    _result("a-urgent-02", "handoff", "handoff", "handoff", False, expected_urgent=True),  # not marked urgent
    _result("a-urgent-03", "handoff", "ticket:voirie", "report", expected_urgent=True),
    _result("a-comment-01", "ticket:voirie", "ticket:voirie", "complaint", expected_kind="complaint"),
    _result("a-comment-02", "ticket:voirie", "ticket:voirie", "report", expected_kind="complaint"),
    _result("a-comment-03", "ticket:voirie", "ticket:proprete", "complaint", expected_kind="complaint"),
    _result("b-smalltalk-01", "smalltalk", "handoff", "handoff", True),  # a false urgent hand-off
    _result("status", "status", "none"),  # one field: no category
    _result("b-x", "decline", "decline", expected_urgent=False),  # two fields: no category
    _result("c-handoff-01", "handoff", "handoff", "handoff", False, expected_urgent=False),
    _result("d-status-02", "status", "none"),
]


def test_accuracy_and_outcome_only_accuracy():
    metrics = compute_metrics(SAMPLE)
    assert metrics["accuracy"] == {"rate": 5 / 13, "hits": 5, "total": 13}
    # a-urgent-02 and a-comment-02 have the right outcome but fail the urgent / kind check.
    assert metrics["outcome_accuracy"] == {"rate": 7 / 13, "hits": 7, "total": 13}


def test_precision_and_recall_per_exact_outcome():
    outcomes = compute_metrics(SAMPLE)["outcomes"]

    def pr(precision, recall, support, predicted, correct):
        return {"precision": precision, "recall": recall, "support": support, "predicted": predicted,
                "correct": correct}

    assert outcomes == {
        "decline": pr(1.0, 1.0, 1, 1, 1),
        "faq:horaires_mairie": pr(0.0, None, 0, 1, 0),  # never expected: no recall
        "faq:piscine": pr(1.0, 0.5, 2, 1, 1),
        "handoff": pr(0.75, 0.75, 4, 4, 3),
        "none": pr(0.0, None, 0, 2, 0),
        "smalltalk": pr(None, 0.0, 1, 0, 0),  # never obtained: no precision
        "status": pr(None, 0.0, 2, 0, 0),
        "ticket:proprete": pr(0.0, None, 0, 1, 0),
        "ticket:voirie": pr(2 / 3, 2 / 3, 3, 3, 2),
    }


def test_precision_and_recall_per_family():
    families = compute_metrics(SAMPLE)["families"]
    assert {label: (f["precision"], f["recall"], f["support"]) for label, f in families.items()} == {
        "decline": (1.0, 1.0, 1),
        "faq": (1.0, 1.0, 2),  # faq:piscine -> faq:horaires_mairie is right at the family level
        "handoff": (0.75, 0.75, 4),
        "none": (0.0, None, 0),
        "smalltalk": (None, 0.0, 1),
        "status": (None, 0.0, 2),
        "ticket": (0.75, 1.0, 3),
    }


def test_urgent_recall_and_false_urgent_alarms():
    metrics = compute_metrics(SAMPLE)
    # a-urgent-02 was handed off but not marked urgent; a-urgent-03 got a ticket.
    assert metrics["urgent_recall"] == {"rate": 1 / 3, "hits": 1, "total": 3,
                                        "misses": ["a-urgent-02", "a-urgent-03"]}
    # Over the 10 cases not marked urgent: true (urgent: false or absent).
    assert metrics["false_urgent"] == {"rate": 0.1, "count": 1, "total": 10, "ids": ["b-smalltalk-01"]}


def test_handoff_recall_and_false_handoffs():
    metrics = compute_metrics(SAMPLE)
    assert metrics["handoff_recall"] == {"rate": 0.75, "hits": 3, "total": 4, "misses": ["a-urgent-03"]}
    assert metrics["false_handoff"] == {"rate": 1 / 9, "count": 1, "total": 9, "ids": ["b-smalltalk-01"]}


def test_complaint_recall_needs_the_outcome_and_the_complaint_kind():
    assert compute_metrics(SAMPLE)["complaint_recall"] == {
        "rate": 1 / 3, "hits": 1, "total": 3, "misses": ["a-comment-02", "a-comment-03"]}


def test_accuracy_per_category():
    assert category("a-comment-03") == "comment"
    assert category("faq-horaires-mairie-1") == "horaires"
    assert category("b-x") is None and category("status") is None and category("a--1") is None
    assert compute_metrics(SAMPLE)["categories"] == {
        "comment": {"rate": 1 / 3, "hits": 1, "total": 3},
        "faq": {"rate": 0.5, "hits": 1, "total": 2},
        "handoff": {"rate": 1.0, "hits": 1, "total": 1},
        "smalltalk": {"rate": 0.0, "hits": 0, "total": 1},
        "status": {"rate": 0.0, "hits": 0, "total": 1},
        "urgent": {"rate": 1 / 3, "hits": 1, "total": 3},
    }


def test_confusion_pairs_of_the_failures_most_frequent_first():
    assert compute_metrics(SAMPLE)["confusion_pairs"] == [
        {"expected": "status", "obtained": "none", "count": 2},
        {"expected": "faq:piscine", "obtained": "faq:horaires_mairie", "count": 1},
        {"expected": "handoff", "obtained": "ticket:voirie", "count": 1},
        {"expected": "smalltalk", "obtained": "handoff", "count": 1},
        {"expected": "ticket:voirie", "obtained": "ticket:proprete", "count": 1},
    ]


def test_zero_divisions_give_no_rate():
    metrics = compute_metrics([_result("faq", "faq:piscine", "faq:piscine")])
    assert metrics["urgent_recall"] == {"rate": None, "hits": 0, "total": 0, "misses": []}
    assert metrics["false_urgent"] == {"rate": 0.0, "count": 0, "total": 1, "ids": []}
    assert metrics["handoff_recall"] == {"rate": None, "hits": 0, "total": 0, "misses": []}
    assert metrics["false_handoff"] == {"rate": 0.0, "count": 0, "total": 1, "ids": []}
    assert metrics["complaint_recall"] == {"rate": None, "hits": 0, "total": 0, "misses": []}
    assert metrics["categories"] == {} and metrics["confusion_pairs"] == []
    # Every case urgent and expecting a hand-off: nothing to raise a false alarm on.
    metrics = compute_metrics([_result("u", "handoff", "handoff", "handoff", True, expected_urgent=True)])
    assert metrics["false_urgent"] == {"rate": None, "count": 0, "total": 0, "ids": []}
    assert metrics["false_handoff"] == {"rate": None, "count": 0, "total": 0, "ids": []}
    empty = compute_metrics([])
    assert empty["accuracy"] == empty["outcome_accuracy"] == {"rate": None, "hits": 0, "total": 0}
    assert empty["outcomes"] == empty["families"] == {}
    assert format_report([], 0.0) == ["accuracy: 0.00 (0/0)"]


def test_metrics_block_one_line_a_figure():
    assert format_metrics(compute_metrics(SAMPLE)) == [
        "outcome accuracy: 0.54 (7/13)",
        "families P/R (n): faq 1.00/1.00 (2); ticket 0.75/1.00 (3); handoff 0.75/0.75 (4); "
        "decline 1.00/1.00 (1); status -/0.00 (2); smalltalk -/0.00 (1); none 0.00/- (0)",
        "outcomes P/R (n) below 1.00: faq:horaires_mairie 0.00/- (0); faq:piscine 1.00/0.50 (2); "
        "handoff 0.75/0.75 (4); none 0.00/- (0); smalltalk -/0.00 (1); status -/0.00 (2); "
        "ticket:proprete 0.00/- (0); ticket:voirie 0.67/0.67 (3)",
        "urgent recall: 0.33 (1/3), missed: a-urgent-02, a-urgent-03",
        "false urgent alarms: 0.10 (1/10): b-smalltalk-01",
        "hand-off recall: 0.75 (3/4), missed: a-urgent-03",
        "false hand-offs: 0.11 (1/9): b-smalltalk-01",
        "complaint recall: 0.33 (1/3), missed: a-comment-02, a-comment-03",
        "by category: comment 1/3; faq 1/2; handoff 1/1; smalltalk 0/1; status 0/1; urgent 1/3",
    ]
    quiet = format_metrics(compute_metrics([_result("faq", "faq:piscine", "faq:piscine")]))
    assert "outcomes P/R (n) below 1.00: none (1 outcomes)" in quiet
    assert "urgent recall: n/a (0/0), missed: -" in quiet
    assert "false hand-offs: 0.00 (0/1): -" in quiet
    assert not any(line.startswith("by category") for line in quiet)


def test_family_confusion_as_a_text_table():
    table = confusion(SAMPLE)
    assert table["handoff"] == {"handoff": 3, "ticket": 1} and table["status"] == {"none": 2}
    assert format_confusion(table) == [
        "expected \\ got  faq ticket handoff decline status smalltalk none",
        "faq               2      .       .       .      .         .    .",
        "ticket            .      3       .       .      .         .    .",
        "handoff           .      1       3       .      .         .    .",
        "decline           .      .       .       1      .         .    .",
        "status            .      .       .       .      .         .    2",
        "smalltalk         .      .       1       .      .         .    .",
    ]
    assert format_confusion({}) == []


def test_report_order_failures_metrics_table_accuracy():
    lines = format_report(SAMPLE, 5 / 13)
    assert lines[:8] == ["FAIL a-faq-02: outcome faq:horaires_mairie != faq:piscine",
                         "FAIL a-urgent-02: urgent False != True",
                         "FAIL a-urgent-03: outcome ticket:voirie != handoff; urgent False != True",
                         "FAIL a-comment-02: kind report != complaint",
                         "FAIL a-comment-03: outcome ticket:proprete != ticket:voirie",
                         "FAIL b-smalltalk-01: outcome handoff != smalltalk",
                         "FAIL status: outcome none != status",
                         "FAIL d-status-02: outcome none != status"]
    metrics = format_metrics(compute_metrics(SAMPLE))
    assert lines[8:8 + len(metrics)] == metrics
    assert lines[8 + len(metrics):-1] == format_confusion(confusion(SAMPLE))
    assert lines[-1] == "accuracy: 0.38 (5/13)"
