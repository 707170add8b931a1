import pytest
import yaml

from bot.profile import ProfileError, parse_profile

from conftest import REFERENCE, ROOT


def test_profile_has_every_reference_service_and_faq_topic(profile):
    reference = yaml.safe_load((REFERENCE / "valbourg.yml").read_text(encoding="utf-8"))
    assert set(profile.services) == set(reference["services"])
    assert set(profile.faq) == set(reference["faq"])
    for slug, topic in reference["faq"].items():
        assert profile.faq[slug].link == topic["link"]
        assert profile.faq[slug].redirect == topic.get("redirect")


def test_faq_answers_are_rendered_with_town_facts(profile):
    answer = profile.faq["horaires_mairie"].answer
    assert "1 place de la République" in answer and "{{" not in answer
    assert "02 41 00 20 00" in profile.faq["eau_assainissement"].answer  # the Agglomération's phone


def _profile_data():
    return yaml.safe_load((ROOT / "collectivite.yml").read_text(encoding="utf-8"))


def test_profile_errors_are_explained():
    data = _profile_data()
    del data["collectivite"]["phone"]
    with pytest.raises(ProfileError, match="phone"):
        parse_profile(data, ROOT / "collectivite.yml")


def test_unknown_redirect_is_refused():
    data = _profile_data()
    data["faq"]["piscine"]["redirect"] = "nowhere"
    with pytest.raises(ProfileError, match="nowhere"):
        parse_profile(data, ROOT / "collectivite.yml")
