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


def test_profile_errors_are_explained():
    data = yaml.safe_load((ROOT / "collectivite.yml").read_text(encoding="utf-8"))
    del data["collectivite"]["phone"]
    try:
        parse_profile(data, ROOT / "collectivite.yml")
    except ProfileError as exc:
        assert "phone" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a profile without phone must be refused")


def test_unknown_redirect_is_refused():
    data = yaml.safe_load((ROOT / "collectivite.yml").read_text(encoding="utf-8"))
    data["faq"]["piscine"]["redirect"] = "nowhere"
    try:
        parse_profile(data, ROOT / "collectivite.yml")
    except ProfileError as exc:
        assert "nowhere" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("an unknown redirect must be refused")
