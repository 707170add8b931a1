"""The real stack on loopback: Rasa server (trained model, REST channel, SQL tracker store),
action server and SQLite ticket table, driven with `requests` like any client."""
from __future__ import annotations

import uuid

import pytest
import requests

from bot.accounts import Staff
from bot.integrations.rasa_api import resume_conversation
from bot.staff import StaffDesk
from bot.tickets import TicketStore

pytestmark = pytest.mark.slow


def say(stack, sender: str, text: str) -> list[str]:
    response = requests.post(stack.rest_url, json={"sender": sender, "message": text}, timeout=60)
    response.raise_for_status()
    return [m.get("text", "") for m in response.json()]


@pytest.fixture
def sender() -> str:
    return f"it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def tickets(stack) -> TicketStore:
    return TicketStore(stack.database_url)


@pytest.fixture
def desk(stack, tickets, assistant):
    return StaffDesk(tickets, assistant.profile, assistant.hours, assistant.replies,
                     resume_conversation=lambda conversation: resume_conversation(conversation, rasa_url=stack.rasa_url))


CM = Staff("camille", "Camille", "cm")


def test_faq_question_gets_the_topic_answer_and_link(stack, sender, tickets):
    replies = say(stack, sender, "bonjour, la piscine est ouverte le dimanche ?")
    assert any("valbourg.example/piscine" in r for r in replies)
    assert tickets.for_conversation(sender) == []


def test_report_asks_where_then_creates_a_routed_ticket(stack, sender, tickets):
    first = say(stack, sender, "le lampadaire ne s'allume plus depuis hier soir")
    assert any("Où exactement" in r for r in first)
    assert tickets.for_conversation(sender) == []
    second = say(stack, sender, "devant le 3 rue des Acacias")
    [ticket] = tickets.for_conversation(sender)
    assert ticket.queue == "voirie" and ticket.kind == "report" and "Acacias" in ticket.location
    assert any(ticket.reference in r for r in second)
    lines = [(m.author, m.text) for m in tickets.transcript(ticket.id)]
    assert ("citizen", "le lampadaire ne s'allume plus depuis hier soir") in lines
    assert ("citizen", "devant le 3 rue des Acacias") in lines
    assert any(author == "bot" and ticket.reference in text for author, text in lines)

    status = say(stack, sender, f"où en est mon signalement {ticket.reference} ?")
    assert any(ticket.reference in r and "attente de traitement" in r for r in status)
    stranger = say(stack, f"{sender}-other", f"où en est le signalement {ticket.reference} ?")
    assert all("Voirie" not in r for r in stranger) and any("Je ne trouve pas" in r for r in stranger)


def test_handoff_silences_the_bot_until_the_ticket_is_closed(stack, sender, tickets, desk):
    replies = say(stack, sender, "je veux parler à une vraie personne svp")
    [ticket] = tickets.for_conversation(sender)
    assert ticket.kind == "handoff" and ticket.queue == "cm" and any(ticket.reference in r for r in replies)

    assert say(stack, sender, "allô ? vous êtes là ?") == []
    assert say(stack, sender, "/restart") == []  # words on this channel too: the hand-off holds
    assert say(stack, sender, "la piscine est ouverte le dimanche ?") == []
    recorded = [m.text for m in tickets.transcript(ticket.id) if m.author == "citizen"]
    assert recorded[-3:] == ["allô ? vous êtes là ?", "restart", "la piscine est ouverte le dimanche ?"]

    desk.take(CM, ticket.reference)
    desk.reply(CM, ticket.reference, "Bonjour, je suis Camille, je regarde votre demande.")
    received = requests.get(f"{stack.rasa_url}/webhooks/guichet/outbox", params={"sender": sender}, timeout=10).json()
    assert [m["text"] for m in received] == ["Bonjour, je suis Camille, je regarde votre demande.\n— L'équipe Communication"]
    assert requests.get(f"{stack.rasa_url}/webhooks/guichet/outbox", params={"sender": sender}, timeout=10).json() == []
    desk.close(CM, ticket.reference)
    assert tickets.open_handoff(sender) is None
    again = say(stack, sender, "la piscine est ouverte le dimanche ?")
    assert any("valbourg.example/piscine" in r for r in again)


def test_two_misunderstood_messages_hand_off(stack, sender, tickets):
    first = say(stack, sender, "xkcdqwv zzkq")
    assert first and tickets.for_conversation(sender) == []
    say(stack, sender, "pfffrrt wxq")
    [ticket] = tickets.for_conversation(sender)
    assert ticket.kind == "handoff" and ticket.handoff_reason == "misunderstood"


def test_danger_gives_emergency_numbers_and_an_urgent_ticket(stack, sender, tickets):
    replies = say(stack, sender, "ça sent très fort le gaz dans mon immeuble")
    assert any("18" in r and "112" in r for r in replies)
    [ticket] = tickets.for_conversation(sender)
    assert ticket.urgent and ticket.kind == "handoff"


def test_a_restart_loses_no_conversation(stack, sender, tickets):
    """Mid-report and mid-hand-off, the Rasa server restarts: both conversations carry on."""
    assert any("Où exactement" in r for r in say(stack, sender, "un lampadaire est cassé"))
    silent = f"{sender}-handoff"
    say(stack, silent, "passez-moi un conseiller humain")
    stack.restart_rasa()
    replies = say(stack, sender, "au 8 avenue Foch")
    [ticket] = tickets.for_conversation(sender)
    assert ticket.queue == "voirie" and "Foch" in ticket.location and any(ticket.reference in r for r in replies)
    assert say(stack, silent, "toujours personne ?") == []


def test_after_resolving_the_citizen_is_asked_once_and_the_answer_is_kept(stack, sender, tickets, desk):
    say(stack, sender, "le lampadaire devant le 8 rue Pasteur ne s'allume plus")
    [ticket] = tickets.for_conversation(sender)
    desk.set_status(Staff("victor", "Victor", "head", "voirie"), ticket.reference, "resolved")
    received = requests.get(f"{stack.rasa_url}/webhooks/guichet/outbox", params={"sender": sender}, timeout=10).json()
    [question] = [m for m in received if "Êtes-vous satisfait(e)" in m["text"]]
    assert [b["title"] for b in question["buttons"]] == ["👍 Oui", "👎 Non"]
    thanks = say(stack, sender, question["buttons"][0]["payload"])  # the "👍 Oui" button
    assert any("Merci pour votre retour" in r for r in thanks), thanks
    assert tickets.get(ticket.id).satisfaction == "yes"
    later = say(stack, sender, "oui")  # no question pending any more: plain small talk
    assert not any("Merci pour votre retour" in r for r in later)
    desk.close(Staff("victor", "Victor", "head", "voirie"), ticket.reference)
    again = requests.get(f"{stack.rasa_url}/webhooks/guichet/outbox", params={"sender": sender}, timeout=10).json()
    assert not any("Êtes-vous satisfait(e)" in m["text"] for m in again)  # never asked twice


def test_danger_during_a_handoff_still_gets_the_emergency_numbers_at_once(stack, sender, tickets):
    def say(stack, sender, text):  # our channel (the one Telegram and the website use)
        response = requests.post(stack.chat_url, json={"sender": sender, "message": text}, timeout=60)
        response.raise_for_status()
        return [m.get("text", "") for m in response.json()]

    say(stack, sender, "je veux parler à une vraie personne svp")
    [ticket] = tickets.for_conversation(sender)
    assert not ticket.urgent
    assert say(stack, sender, "vous êtes là ? c'est pour mon dossier") == []  # silent: the CM has it
    replies = say(stack, sender, "de toute façon je ne serai plus là demain, j'ai écrit mes lettres d'adieu")
    assert any("3114" in r for r in replies), replies  # at once, although a person has the conversation
    assert tickets.get(ticket.id).urgent  # and the hand-off is now urgent for the CM
    recorded = [m.text for m in tickets.transcript(ticket.id)]
    assert any("lettres d'adieu" in text for text in recorded) and any("3114" in text for text in recorded)
