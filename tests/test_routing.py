import pytest

from bot.kinds import classify_kind
from bot.location import mentions_location
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


@pytest.mark.parametrize("text, service, kind", [
    ("un arbre est tombé sur le chemin", "espaces_verts", "report"),
    ("pourriez-vous installer un banc square Verlaine", "voirie", "request"),
    ("3 semaines que personne ne vient vider la corbeille, lamentable", "proprete", "complaint"),
    ("je voudrais une place au centre de loisirs", "education", "request"),
    ("mon dossier de mariage est bloqué", "etat_civil", "request"),
    ("Encore une fois le gymnase est fermé sans prévenir !!", "sport_culture", "complaint"),
    ("voiture ventouse depuis des mois", "tranquillite", "report"),
    ("voiture ventouse depuis des mois, toujours rien de fait", "tranquillite", "complaint"),
])
def test_kind(text, service, kind):
    assert classify_kind(text, service) == kind


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
