import datetime as dt

import pytest
import pytz

from bot.assistant import Conversation
from bot.safety import danger_reason

PARIS = pytz.timezone("Europe/Paris")
OPEN = PARIS.localize(dt.datetime(2026, 11, 24, 10, 0))      # Tuesday morning
CLOSED = PARIS.localize(dt.datetime(2026, 11, 27, 19, 30))   # Friday evening


def test_faq_answer_is_short_with_its_link(assistant):
    reply = assistant.faq("piscine", OPEN)
    assert reply.outcome == "faq:piscine"
    assert reply.texts[0].endswith("https://www.valbourg.example/piscine")
    assert len(reply.texts[0]) < 400


def test_faq_answers_do_not_change_outside_hours(assistant):
    assert assistant.faq("horaires_mairie", OPEN).texts == assistant.faq("horaires_mairie", CLOSED).texts


def test_redirect_topic_names_who_handles_it(assistant):
    text = assistant.faq("eau_assainissement", OPEN).texts[0]
    assert "Valbourg Agglomération" in text and "02 41 00 20 00" in text


def test_report_without_place_asks_where_then_creates_the_ticket(assistant):
    draft = assistant.draft_ticket("ticket_voirie", "le lampadaire ne s'allume plus")
    assert draft.service == "voirie" and draft.need_location and not draft.need_detail
    draft.location = "devant le 12 rue des Lilas"
    reply = assistant.create_ticket(draft, Conversation("c1", message_id="m1"), OPEN)
    assert reply.outcome == "ticket:voirie" and reply.ticket.location == "devant le 12 rue des Lilas"
    assert reply.ticket.reference in reply.texts[0] and "Voirie et éclairage public" in reply.texts[0]


def test_complaint_is_acknowledged_and_outside_hours_says_when(assistant):
    draft = assistant.draft_ticket("ticket_proprete", "3 semaines que les bacs ne sont pas vidés, c'est une honte",
                                   kind="complaint")  # the kind the NLU pipeline learned
    assert draft.kind == "complaint" and not draft.need_location
    text = assistant.create_ticket(draft, Conversation("c2", message_id="m2"), CLOSED).texts[0]
    assert "on fait remonter" in text and "lundi matin" in text


def test_vague_report_asks_for_the_detail_then_routes(assistant):
    draft = assistant.draft_ticket("ticket_generic", "je veux signaler un problème")
    assert draft.need_detail and draft.service is None
    done = assistant.complete_detail(draft, "ticket_espaces_verts", "un arbre est tombé square Verlaine")
    assert done.service == "espaces_verts" and done.location and not done.need_location


def test_urgent_handoff_gives_numbers_at_once_and_is_marked_urgent(assistant, store):
    reply = assistant.handoff("distress_violence", Conversation("c3", message_id="m3"), "il me frappe", CLOSED)
    assert reply.pause and reply.outcome == "handoff"
    assert "17" in reply.texts[0] and "3919" in reply.texts[0]
    assert reply.ticket.urgent and reply.ticket.queue == "cm" and reply.ticket.handoff_reason == "distress_violence"
    assert "lundi matin" in reply.texts[1]
    # A second hand-off in the same conversation reuses the open ticket.
    again = assistant.handoff("human_request", Conversation("c3", message_id="m4"), "allo", CLOSED)
    assert again.ticket.id == reply.ticket.id


def test_handoff_during_opening_hours_does_not_promise_a_day(assistant):
    reply = assistant.handoff("human_request", Conversation("c4", message_id="m5"), "un humain svp", OPEN)
    assert "meilleurs délais" in " ".join(reply.texts)


def test_status_without_tickets_still_answers(assistant):
    reply = assistant.status(Conversation("nobody"), "où en est mon signalement ?", OPEN)
    assert reply.outcome == "status" and "02 41 00 10 00" in reply.texts[0]


def test_location_sent_after_the_ticket_is_added_to_it(assistant):
    draft = assistant.draft_ticket("ticket_proprete", "dépôt sauvage de gravats")
    draft.need_location = False
    now = dt.datetime.now(dt.timezone.utc)
    ticket = assistant.create_ticket(draft, Conversation("c5", message_id="m6"), now).ticket
    reply = assistant.add_to_recent_ticket(Conversation("c5"), "derrière la salle des fêtes", now)
    assert reply is not None and reply.ticket.id == ticket.id
    assert "salle des fêtes" in assistant.store.get(ticket.id).location


def test_safety_net_catches_danger_but_not_traffic_lights():
    assert danger_reason("ça sent très fort le gaz dans l'immeuble") == "distress_danger"
    assert danger_reason("il y a le feu dans le local poubelles") == "distress_danger"
    assert danger_reason("je veux en finir") == "distress_suicide"
    assert danger_reason("mon conjoint me frappe") == "distress_violence"
    assert danger_reason("le feu tricolore reste au rouge") is None
    assert danger_reason("horaires du feu d'artifice") is None
    for hydrant in ("la borne à incendie au coin de la rue fuit", "la bouche d'incendie coule",
                    "le poteau d'incendie est plié"):  # street furniture, not a fire
        assert danger_reason(hydrant) is None, hydrant
    assert danger_reason("un incendie dans l'immeuble") == "distress_danger"
    # hyperboles and figures of speech the backstop no longer takes literally
    assert danger_reason("j'ai failli me tuer sur le trottoir verglacé") is None
    assert danger_reason("ma facture d'eau m'a donné une crise cardiaque 😱") is None
    assert danger_reason("je veux en finir avec cette histoire de clôture") is None
    assert danger_reason("il fait une crise cardiaque") == "distress_danger"
    assert danger_reason("je veux en finir avec la vie") == "distress_suicide"
    assert danger_reason("j'ai envie d'en finir avec tout ça") == "distress_suicide"


def test_a_follow_up_on_the_same_service_does_not_make_a_second_ticket(assistant):
    now = dt.datetime.now(dt.timezone.utc)
    draft = assistant.draft_ticket("ticket_espaces_verts", "un arbre est tombé dans le parc")
    ticket = assistant.create_ticket(draft, Conversation("c6", message_id="m7"), now).ticket
    more = assistant.add_to_recent_ticket(Conversation("c6"), "c'est le parc Beaulieu, côté entrée", now,
                                          service="espaces_verts")
    assert more is not None and more.ticket.id == ticket.id
    assert "Beaulieu" in assistant.store.get(ticket.id).location
    other = assistant.add_to_recent_ticket(Conversation("c6"), "et un lampadaire cassé", now, service="voirie")
    assert other is None


@pytest.mark.parametrize("text, place", [
    ("le lampadaire devant le 12 rue des Tilleuls ne s'allume plus", "devant le 12 rue des Tilleuls"),
    ("Bonjour, il y a un trou énorme rue Pasteur, mon vélo est tombé dedans", "rue Pasteur"),
    ("les poubelles ne sont pas ramassées avenue Jean Jaurès depuis 2 semaines", "avenue Jean Jaurès"),
    ("tags sur le mur de l'école Jacques-Prévert, c'est dégueulasse", "école Jacques-Prévert"),
    ("rue de la Gare à côté de la pharmacie", "rue de la Gare à côté de la pharmacie"),
])
def test_the_ticket_place_is_the_place_not_the_whole_message(text, place):
    from bot.location import extract_location

    assert extract_location(text) == place
