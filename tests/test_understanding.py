"""What the assistant understands, through the real stack (trained model with its signal heads,
action server, SQLite): danger without the usual words, look-alikes, complaints, public-comment
style, other towns, English, and follow-ups that use the conversation."""
from __future__ import annotations

import pytest
import requests

from test_integration import say, sender, tickets  # noqa: F401 - the same client and fixtures

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("text, reason", [
    ("mon petit de deux ans est grimpé sur la rambarde du balcon au 4e étage et je n'arrive pas à le rattraper",
     "distress_danger"),
    ("ma voisine de 88 ans, on ne l'a pas vue depuis cinq jours, son courrier déborde et elle ne répond pas",
     "distress_danger"),
    ("je ne vois plus l'intérêt de continuer, tout le monde serait mieux sans moi", "distress_suicide"),
    ("depuis hier soir on a tous mal au crâne et mon fils vomit, on chauffe la pièce avec un vieux poêle à pétrole",
     "distress_danger"),
    ("I just don't see the point of going on anymore, nobody would even notice if I was gone", "distress_suicide"),
])
def test_danger_told_without_the_usual_words_gets_the_emergency_numbers(stack, sender, tickets, text, reason):
    replies = say(stack, sender, text)
    [ticket] = tickets.for_conversation(sender)
    assert ticket.kind == "handoff" and ticket.urgent and ticket.handoff_reason == reason
    assert any("112" in r for r in replies)


@pytest.mark.parametrize("text, queue", [
    ("le feu piéton du carrefour de la Poste ne passe plus au vert", "voirie"),
    ("mdr trop bien la fête de la musique hier soir, c'était mortel 😂", None),
    ("j'ai failli me tuer ce matin sur le trottoir gelé de la rue des Écoles, personne n'a salé", "voirie"),
    ("nickel, j'ai eu ma réponse, à plus !", None),
])
def test_look_alikes_are_not_an_emergency(stack, sender, tickets, text, queue):
    replies = say(stack, sender, text)
    found = tickets.for_conversation(sender)
    assert not any(t.urgent or t.kind == "handoff" for t in found)
    assert not any("🚨" in r for r in replies)
    if queue:
        assert [t.queue for t in found] == [queue] or any("Où exactement" in r for r in replies)
    else:
        assert found == []


def test_a_complaint_is_acknowledged_never_a_cheerful_receipt(stack, sender, tickets):
    replies = say(stack, sender, "trois semaines que j'ai signalé les poubelles qui débordent rue Hoche et toujours "
                                 "rien, franchement c'est lamentable")
    [ticket] = tickets.for_conversation(sender)
    assert ticket.queue == "proprete" and ticket.kind == "complaint"
    assert any("on fait remonter" in r for r in replies) and not any("✅" in r for r in replies)


def test_general_discontent_goes_to_a_person_with_empathy(stack, sender, tickets):
    replies = say(stack, sender, "de toute façon à la mairie personne ne répond jamais, on se sent abandonnés")
    [ticket] = tickets.for_conversation(sender)
    assert ticket.kind == "handoff" and ticket.handoff_reason == "complaint" and not ticket.urgent
    assert any("désolés" in r for r in replies)


def test_thanks_to_the_staff_get_a_warm_reply_and_no_ticket(stack, sender, tickets):
    replies = say(stack, sender, "un grand bravo aux agents pour le déneigement ce matin, super boulot 👏")
    assert tickets.for_conversation(sender) == []
    assert any("Merci" in r for r in replies)


def test_advertising_gets_no_ticket_and_no_status(stack, sender, tickets):
    replies = say(stack, sender, "Gagnez 300€ par jour depuis chez vous 💸💸 infos en DM, lien dans ma bio")
    assert tickets.for_conversation(sender) == []
    assert any("publicité" in r for r in replies)


def test_another_town_is_not_answered_with_our_facts(stack, sender, tickets):
    replies = say(stack, sender, "bonjour, la mairie de Saint-Aubin-sur-Loire est ouverte le samedi matin ?")
    assert tickets.for_conversation(sender) == []
    assert any("que pour la Ville de Valbourg" in r for r in replies)
    assert not any("valbourg.example/mairie" in r for r in replies)


def test_english_writers_get_the_french_answer_and_one_english_sentence(stack, sender):
    replies = say(stack, sender, "hello, what time does the town hall open on saturday please?")
    assert any("valbourg.example/mairie" in r for r in replies)
    assert any("In English" in r for r in replies)


def test_a_follow_up_question_answers_the_same_topic(stack, sender):
    say(stack, sender, "la piscine est ouverte le mardi ?")
    replies = say(stack, sender, "et le samedi ?")
    assert any("valbourg.example/piscine" in r for r in replies)


def test_a_vague_place_is_not_an_address(stack, sender, tickets):
    assert any("Où exactement" in r for r in say(stack, sender, "un lampadaire est en panne depuis hier"))
    again = say(stack, sender, "devant chez moi")
    assert tickets.for_conversation(sender) == [] and any("adresse" in r for r in again)
    say(stack, sender, "au 4 rue des Acacias")
    [ticket] = tickets.for_conversation(sender)
    assert ticket.queue == "voirie" and "Acacias" in (ticket.location or "")


def test_a_detail_just_after_a_ticket_is_added_to_it(stack, sender, tickets):
    say(stack, sender, "il y a un gros nid-de-poule devant le 15 avenue Foch")
    [ticket] = tickets.for_conversation(sender)
    replies = say(stack, sender, "il est vraiment profond, les vélos font des écarts")
    assert [t.id for t in tickets.for_conversation(sender)] == [ticket.id]
    assert any(ticket.reference in r for r in replies)
    assert "profond" in tickets.get(ticket.id).summary
    assert any("Bonne journée" in r or "plaisir" in r for r in say(stack, sender, "merci beaucoup"))


def parse(stack, text: str) -> dict:
    response = requests.post(f"{stack.rasa_url}/model/parse", json={"text": text}, timeout=60)
    response.raise_for_status()
    return response.json()


def test_a_plain_question_is_read_without_the_sentence_vector_and_a_doubtful_one_with_it(stack):
    plain = parse(stack, "la mairie est ouverte le samedi matin ?")
    assert plain["intent"]["name"] == "faq_horaires_mairie"
    assert plain["signals"]["sentence_vector"] is False and plain["signals"]["danger"]["level"] == "none"
    # Danger told without the usual words: the count-only heads see a trace of it, so the message
    # is read again with its vector, and it is an emergency.
    doubtful = parse(stack, "ça fait quatre jours que ma voisine âgée n'ouvre plus ses volets et ne répond pas")
    assert doubtful["signals"]["sentence_vector"] is True
    assert doubtful["signals"]["danger"]["level"] == "urgent"
    # A long story is always read with its vectors (its sentences are read one by one).
    story = parse(stack, "Bonjour, hier soir en rentrant du travail avec mes deux enfants on est passés par le "
                         "parc, il faisait déjà nuit et on a vu plein de choses. Bref, la piscine est-elle "
                         "ouverte dimanche matin ?")
    assert story["signals"]["sentence_vector"] is True and story["intent"]["name"] == "faq_piscine"
