"""The signal heads' decisions (bot/integrations/signal_classifier.py), without a trained model:
how a danger probability, the intent and the lexical backstop settle the intent the dialogue sees,
and which label each head learns from a training example."""
from __future__ import annotations

import pytest
from rasa.shared.nlu.training_data.message import Message

from bot.integrations.signal_classifier import SignalClassifier, training_label


def component() -> SignalClassifier:
    signals = SignalClassifier({}, model_storage=None, resource=None)
    signals.heads = {"danger": object()}  # a trained danger head is present (its output is given below)
    return signals


def message(text: str, intent: str, *others: str) -> Message:
    msg = Message(data={"text": text})
    ranking = [{"name": name, "confidence": 0.5 / (i + 1)} for i, name in enumerate((intent, *others))]
    msg.set("intent", dict(ranking[0]), add_to_output=True)
    msg.set("intent_ranking", ranking, add_to_output=True)
    return msg


def danger(p_violence=0.0, p_danger=0.0, p_suicide=0.0) -> dict:
    return {"none": 1 - p_violence - p_danger - p_suicide, "violence": p_violence, "danger": p_danger,
            "suicide": p_suicide}


def test_a_danger_the_head_is_sure_of_becomes_the_urgent_intent():
    msg = message("le petit est assis sur le rebord de la fenêtre du 4e", "ticket_education", "faq_cantine_periscolaire")
    settled = component()._settle_danger(msg, danger(p_danger=0.9, p_violence=0.05))
    assert settled["level"] == "urgent" and settled["reason"] == "danger"
    assert msg.get("intent")["name"] == "urgence_danger"
    assert msg.get("intent_before_signals")["name"] == "ticket_education"


def test_a_sure_sentence_of_a_long_message_is_enough():
    msg = message("Merci pour le calendrier. Au fait, des flammes sortent du local poubelles de l'école.",
                  "thank", "faq_collecte_dechets")
    settled = component()._settle_danger(msg, danger(p_danger=0.2), sentence=danger(p_danger=0.75))
    assert settled["level"] == "urgent" and msg.get("intent")["name"] == "urgence_danger"
    unsure = message("Merci. Ça va finir par un accident un jour.", "thank")
    assert component()._settle_danger(unsure, danger(p_danger=0.1), sentence=danger(p_danger=0.5))["level"] == "possible"


def test_an_urgent_intent_the_head_rejects_is_a_false_alarm():
    msg = message("le feu piéton reste au rouge", "urgence_danger", "ticket_voirie")
    settled = component()._settle_danger(msg, danger(p_danger=0.03))
    assert settled["level"] == "none" and msg.get("intent")["name"] == "ticket_voirie"


def test_an_urgent_intent_with_some_danger_stays_urgent():
    msg = message("mon voisin ne répond plus", "urgence_danger", "ticket_social")
    settled = component()._settle_danger(msg, danger(p_danger=0.4))
    assert settled["level"] == "urgent" and settled["reason"] == "danger"
    assert msg.get("intent")["name"] == "urgence_danger"


def test_an_unsure_danger_keeps_the_intent_and_is_marked_possible():
    msg = message("je suis à bout", "ticket_social", "faq_aides_sociales")
    settled = component()._settle_danger(msg, danger(p_suicide=0.5))
    assert settled["level"] == "possible" and msg.get("intent")["name"] == "ticket_social"


def test_no_danger_changes_nothing():
    msg = message("la piscine ouvre à quelle heure ?", "faq_piscine")
    settled = component()._settle_danger(msg, danger(p_danger=0.01))
    assert settled == {"level": "none", "reason": None, "probability": 0.01, "whole": 0.01, "sentence": 0.0,
                       "lexical": False}
    assert msg.get("intent")["name"] == "faq_piscine" and msg.get("intent_before_signals") is None


def test_the_lexical_net_is_a_backstop():
    msg = message("ça sent le gaz dans la cage d'escalier", "ticket_voirie")
    settled = component()._settle_danger(msg, danger())
    assert settled["level"] == "urgent" and settled["lexical"] and msg.get("intent")["name"] == "urgence_danger"


def test_without_a_danger_head_the_classifier_decides():
    signals = SignalClassifier({}, model_storage=None, resource=None)
    msg = message("au secours il me frappe", "urgence_violence")
    assert signals._settle_danger(msg, {})["level"] == "urgent"
    assert msg.get("intent")["name"] == "urgence_violence"


def example(intent: str, intent_metadata: dict | None = None, example_metadata: dict | None = None) -> Message:
    return Message.build("un texte", intent, None, intent_metadata, example_metadata)


@pytest.mark.parametrize("msg, head, label", [
    (example("urgence_detresse"), "danger", "suicide"),
    (example("ticket_voirie", {"kind": "complaint"}), "danger", "none"),
    (example("ticket_voirie", {"kind": "complaint"}), "kind", "complaint"),
    (example("ticket_voirie", {"kind": "report"}, {"kind": "request"}), "kind", "request"),  # the example wins
    (example("complaint_general"), "kind", "complaint"),
    (example("faq_piscine"), "kind", None),  # not a ticket: the kind head does not learn from it
    (example("faq_piscine", {"language": "en"}), "language", "en"),
    (example("faq_piscine"), "language", "fr"),
])
def test_each_head_learns_its_label_from_the_training_data(msg, head, label):
    assert training_label(head, msg) == label


def test_a_question_about_another_town_is_not_answered_with_our_facts():
    signals = component()
    msg = message("la piscine de Trélazé ouvre quand ?", "faq_piscine", "other_town")
    assert signals._settle_elsewhere(msg, 0.8) == 0.8 and msg.get("intent")["name"] == "other_town"
    calm = message("la piscine ouvre quand ?", "faq_piscine")
    signals._settle_elsewhere(calm, 0.1)
    assert calm.get("intent")["name"] == "faq_piscine"
    handoff = message("passez-moi quelqu'un de la mairie de Trélazé", "handoff_human")
    signals._settle_elsewhere(handoff, 0.9)  # a request for a person stays one
    assert handoff.get("intent")["name"] == "handoff_human"


def test_sentences_of_a_long_message():
    from bot.integrations.need_focused_classifier import sentence_spans

    text = "Bonjour. On a déménagé l'an dernier avec les enfants!! Bref, la piscine ouvre dimanche ?"
    assert [text[a:b].strip() for a, b in sentence_spans(text)] == [
        "Bonjour.", "On a déménagé l'an dernier avec les enfants!!", "Bref, la piscine ouvre dimanche ?"]
    assert sentence_spans("pas de ponctuation du tout") == [(0, 26)]
