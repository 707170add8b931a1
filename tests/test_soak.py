"""A reduced soak (300 messages, 30 concurrent conversations) through the real stack's REST channel.

The full size is ``python -m bot.soak --messages 5000 --conversations 300`` (``make soak``).
"""
from __future__ import annotations

import pytest

from bot.soak import SOAK_ENV, load_corpus, plan_conversation, run_soak

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def soak_stack(model_path, tmp_path_factory):
    from bot.stack import running_stack

    var_dir = tmp_path_factory.mktemp("soak")
    with running_stack(model_path, f"sqlite:///{var_dir / 'soak.db'}", var_dir, **SOAK_ENV) as running:
        yield running


def test_corpus_and_plans():
    import random

    scripts, handoffs = load_corpus()
    assert len(scripts) > 300 and len(handoffs) > 30
    plan = plan_conversation(random.Random(1), 17, scripts, handoffs, handoff_share=1.0)
    assert len(plan) == 17


def test_reduced_soak(soak_stack):
    report = run_soak(soak_stack, messages=300, conversations=30)
    print("\n" + "\n".join(report.lines()))
    assert report.messages_sent == 300
    assert report.citizen_messages_stored == 300
    assert report.duplicate_messages == 0 and report.duplicate_tickets == 0
    assert report.unanswered == 0 and report.http_errors == 0
    assert report.answered + report.silent_in_handoff == 300
    assert report.tickets > 0 and report.handoff_tickets > 0
    assert report.problems() == []
