"""`guichet eval` on real models and cases."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.evaluation import derive_outcome, evaluate, load_cases
from conftest import REFERENCE, ROOT

pytestmark = pytest.mark.slow
GUICHET = str(Path(sys.executable).parent / "guichet")


def test_cli_prints_failures_and_accuracy_and_writes_json(model_path, tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([GUICHET, "eval", str(ROOT / "tests" / "cases" / "cli_smoke.yml"),
                             "--model", str(model_path), "--json", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "accuracy: 0.67 (2/3)"
    assert any(line.startswith("FAIL smoke-wrong-on-purpose: outcome smalltalk != out_of_scope") for line in lines)
    data = json.loads(out.read_text())
    by_id = {r["id"]: r for r in data["results"]}
    night = by_id["smoke-ticket-night"]
    assert night["passed"] and night["outcome"] == "ticket:voirie", night
    assert any("Où exactement" in r for r in night["replies"]), night["replies"]
    # Christmas night (a Friday): read after the holiday and the weekend.
    assert any("lundi 28 décembre" in r for r in night["replies"]), night["replies"]


def test_dev_set_accuracy(model_path, tmp_path):
    results, accuracy = evaluate(REFERENCE / "dev_cases.yml", model_path, tmp_path / "dev.json")
    failed = [(r.id, r.problems) for r in results if not r.passed]
    assert accuracy >= 0.90, failed


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


def test_bad_case_files_are_refused(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 1\ncases:\n  - id: x\n    turns: []\n    expect: smalltalk\n")
    with pytest.raises(ValueError):
        load_cases(bad)
    result = subprocess.run([GUICHET, "eval", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalide" in result.stderr
