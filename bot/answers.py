"""FAQ answers edited by the CM on the web: the profile's text is the default, the latest approved
edit wins, every version is kept and can be restored (no retraining: the model only picks the
topic, this module gives the words)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FaqAnswer:
    text: str
    link: str
