"""What the assistant did with a conversation, read from its side effects (the reference README's
outcome taxonomy): a hand-off ticket, else one service ticket (its own, or the one it follows —
« déjà signalé » keeps ``ticket:<service>``), else the tags of the replies. Used by the evaluation and
by the Meta gateway (what to post under a public comment)."""
from __future__ import annotations

from bot.followers import Followers
from bot.tickets import TicketStore

OUTCOME_PRIORITY = ("decline", "status", "faq", "out_of_scope", "smalltalk")


def tickets_of(store: TicketStore, conversation_id: str) -> list:
    """The conversation's tickets and those it follows, newest first."""
    own = store.for_conversation(conversation_id)
    return own + [t for t in Followers(store).followed_by(conversation_id) if t.id not in {o.id for o in own}]


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
