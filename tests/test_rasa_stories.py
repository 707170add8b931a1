"""`rasa test` on tests/test_stories.yml: every outcome's conversation, intents and actions."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_conversation_stories_pass(model_path, tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "rasa"), "test", "core", "--model", str(model_path),
         "--stories", str(ROOT / "tests" / "test_stories.yml"), "--out", str(tmp_path),
         "--fail-on-prediction-errors"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    report = json.loads((tmp_path / "story_report.json").read_text())
    stories = report["conversation_accuracy"]
    assert stories["total"] >= 13 and stories["correct"] == stories["total"], stories
    assert report["accuracy"] == 1.0, report
    failed = (tmp_path / "failed_test_stories.yml").read_text()
    assert "story:" not in failed, failed


def test_training_data_is_consistent():
    result = subprocess.run([str(Path(sys.executable).parent / "rasa"), "data", "validate", "--fail-on-warnings"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
