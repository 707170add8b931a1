import pytest

from bot.kinds import default_kind, settle_kind
from bot.location import is_vague_place, mentions_location
from bot.routing import needs_location, service_for_intent, service_from_keywords


@pytest.mark.parametrize("text", [
    "le réverbère au 8 avenue Foch clignote",
    "c'est juste devant la boulangerie",
    "au croisement de la rue Pasteur et du bd Carnot",
    "dans le parc Beaulieu près des jeux",
    "sur le parking de la salle des fêtes",
    "au n° 17",
    "en face du collège",
    "Cité des Fleurs, bâtiment B",
])
def test_places_are_recognised(text):
    assert mentions_location(text)


@pytest.mark.parametrize("text", [
    "le lampadaire ne marche plus",
    "la rue est complètement défoncée",
    "il y a une fuite qui coule depuis hier",
    "rdv au 12 heures ?",
    "",
])
def test_no_place_means_no_location(text):
    assert not mentions_location(text)


@pytest.mark.parametrize("text", ["devant chez moi", "ici", "dans ma rue", "en bas de chez nous", "dans mon quartier",
                                  "juste devant ma maison", "c'est là-bas", "sur le trottoir"])
def test_a_place_only_the_citizen_can_find_is_not_a_location(text):
    assert not mentions_location(text) and is_vague_place(text)


@pytest.mark.parametrize("text", ["devant chez moi, au 12 rue des Lilas", "dans ma rue, rue Pasteur", "dans la rue Victor Hugo",
                                  "ici, place de la Gare", "en face de l'école Paul-Bert"])
def test_a_vague_place_with_an_address_is_a_location(text):
    assert mentions_location(text) and not is_vague_place(text)


def test_kind_comes_from_the_learned_reading_and_a_complaint_stays_one():
    assert settle_kind("request", "voirie") == "request"
    assert settle_kind(None, "voirie") == "report" and settle_kind(None, "etat_civil") == "request"
    assert default_kind("social") == "request" and default_kind(None) == "report"
    assert settle_kind("report", "voirie", earlier="complaint") == "complaint"  # said in the first turn
    assert settle_kind("complaint", "voirie", earlier="report") == "complaint"
    assert settle_kind("nonsense", "education", earlier=None) == "request"


def test_service_comes_from_the_ticket_intent(profile):
    assert service_for_intent("ticket_voirie", profile) == "voirie"
    assert service_for_intent("ticket_unknown", profile) is None
    assert service_for_intent("faq_piscine", profile) is None


def test_keyword_routing_uses_the_profile(profile):
    assert service_from_keywords("des tags et des graffitis partout", profile) == "proprete"
    assert service_from_keywords("problème d'élagage des arbres", profile) == "espaces_verts"
    assert service_from_keywords("bonjour", profile) is None


def test_location_is_asked_only_when_it_matters(profile):
    assert needs_location("voirie", "report", "le lampadaire ne s'allume plus", profile)
    assert not needs_location("voirie", "report", "le lampadaire du 4 rue Victor Hugo est éteint", profile)
    assert not needs_location("voirie", "complaint", "la rue est barrée depuis 3 mois", profile)
    assert not needs_location("education", "request", "une place en crèche", profile)
    assert needs_location("tranquillite", "report", "une voiture ventouse abandonnée", profile)
    assert not needs_location("tranquillite", "complaint", "les voisins font du bruit", profile)
