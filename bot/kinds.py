"""Kind of a ticket: report (broken/dirty), request (asks for something), complaint (dissatisfied).

The kind is learned: the NLU pipeline's signal heads (``bot/integrations/signal_classifier.py``)
read it from the message, trained on the ``kind`` labels of ``data/nlu/tickets/``. This module
keeps the vocabulary and how two readings combine.
"""
from __future__ import annotations

REPORT, REQUEST, COMPLAINT, HANDOFF = "report", "request", "complaint", "handoff"
KINDS = (REPORT, REQUEST, COMPLAINT)
# Services that handle files rather than things: without a learned kind, a ticket is a request.
_FILE_SERVICES = {"etat_civil", "education", "social"}


def default_kind(service: str | None) -> str:
    """The kind when the model gave none (a model trained without the signal heads)."""
    return REQUEST if service in _FILE_SERVICES else REPORT


def settle_kind(learned: str | None, service: str | None, earlier: str | None = None) -> str:
    """The ticket's kind from the learned reading; a complaint said in any turn stays a complaint."""
    kind = learned if learned in KINDS else (earlier if earlier in KINDS else default_kind(service))
    return COMPLAINT if COMPLAINT in (learned, earlier) else kind
