"""What the bot does in public with a comment under the town's posts, from what the assistant made of it.

The comment went through the assistant like a first message (its own conversation): the answers
carry their outcome tags, and a ticket may exist. From that:

- a question (``faq:*``), thanks or a greeting, a political question, another town's matter: a
  short public answer (the assistant's own, which teases and links), personal data removed;
- a report, request or complaint (a ticket), or one that needs a detail first: a public
  acknowledgement naming the service ("on fait remonter") and the assistant's answer as the one
  **private reply** Meta allows, where the reference and the questions are;
- a person in danger: a public line pointing to private help and the emergency numbers, the
  assistant's emergency answer privately, the CM told (urgent hand-off);
- insults and threats: nothing at all from the bot (the CM, told by the hand-off, decides);
  other hand-offs (a person asked, the press, a legal matter...): a private reply only;
- a ticket status: privately; anything else (chatter, a misunderstanding): nothing public, the
  comment waits for the staff.

Limits: one bot reply per comment, none in a thread where someone of the town already answered,
and at most ``per_post`` public replies an hour under one post (a burst of comments must not make
the page look like a spam machine: beyond it the private replies still go, the public answers wait
for the staff). Nothing is ever hidden or deleted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


SILENT_HANDOFFS = frozenset({"insult", "threat"})
URGENT_REASONS = frozenset({"distress_violence", "distress_danger", "distress_suicide"})
PUBLIC_FAMILIES = ("faq", "smalltalk", "decline", "other_town")

_REFERENCE = re.compile(r"\bT-\d{4}-\d{3,}\b", re.I)
_PHONE = re.compile(r"(?<!\d)(?:\+33\s?|0)[1-9](?:[\s.-]?\d{2}){4}(?!\d)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


@dataclass
class Decision:
    treatment: str  # a key of bot.comments.TREATMENTS
    public_text: str | None = None
    private_texts: list[str] = field(default_factory=list)


def scrub(text: str, names: tuple[str, ...] = ()) -> str:
    """A text fit for a public reply: no ticket reference, e-mail address or phone number of a
    person, no name of the commenter. The town's own switchboard number stays (it is public)."""
    text = _REFERENCE.sub("", text)
    text = _EMAIL.sub("", text)
    for name in names:
        for part in (name or "").split():
            if len(part) > 2:
                text = re.sub(rf"\b{re.escape(part)}\b", "", text, flags=re.I)
    return re.sub(r"\s+([,.;:!?)])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()


def has_personal_data(text: str, town_phone: str = "") -> bool:
    phones = [m.group(0) for m in _PHONE.finditer(text)]
    town = re.sub(r"\D", "", town_phone or "")
    return bool(_REFERENCE.search(text) or _EMAIL.search(text)
                or any(re.sub(r"\D", "", p) != town for p in phones))


def decide(outcome: str, answers: list[dict], tickets: list, *, say, limited: bool, staff_thread: bool,
           names: tuple[str, ...] = ()) -> Decision:
    """``say(key, **context)`` renders ``public_comment.<key>``; ``tickets`` are the comment
    conversation's tickets (newest first); ``limited``: the post's hourly public limit is reached."""
    texts = [a.get("text") for a in answers if a.get("text")]
    tags = [a.get("outcome") or "" for a in answers if a.get("text")]
    handoff = next((t for t in tickets if t.kind == "handoff"), None)
    danger_note = any(a.get("danger_note") for a in answers)
    family = outcome.split(":")[0]

    if (handoff is not None and (handoff.urgent or handoff.handoff_reason in URGENT_REASONS)) or danger_note:
        return Decision("distress", say("distress"), texts)
    if handoff is not None:
        if handoff.handoff_reason in SILENT_HANDOFFS:
            return Decision("to_cm")
        return Decision("private_only", None if staff_thread or limited else say("private"), texts)
    if tickets:
        ticket = tickets[0]
        public = None if staff_thread or limited else say(ticket.kind if ticket.kind in ("report", "request", "complaint")
                                                          else "report", ticket=ticket)
        return Decision("acknowledged", public, texts)
    if any(tag.startswith(("ask_location", "ask_detail")) for tag in tags):
        return Decision("acknowledged", None if staff_thread or limited else say("details"), texts)
    if family == "status":
        return Decision("private_only", None if staff_thread or limited else say("private"), texts)
    if family in PUBLIC_FAMILIES and texts:
        if staff_thread:
            return Decision("staff_thread")
        if limited:
            return Decision("limited")
        public = scrub(" ".join(t for t, tag in zip(texts, tags) if not tag.startswith("ticket")) or texts[-1], names)
        treatment = {"faq": "answered", "smalltalk": "thanked", "decline": "declined"}.get(family, "answered")
        return Decision(treatment, public or None)
    return Decision("staff_thread" if staff_thread else "not_answered")
