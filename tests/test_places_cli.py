"""`guichet places` (load, match) and `guichet open311` (API keys) from the command line."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot import open311, places

REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "reference"


@pytest.fixture
def guichet(store, database_url, tmp_path):
    from conftest import cli_runner

    return cli_runner({"GUICHET_DATABASE_URL": database_url, "GUICHET_VAR_DIR": str(tmp_path),
                       "GUICHET_RASA_URL": "http://127.0.0.1:9"})


def test_places_load_and_match(guichet, store, tmp_path):
    assert "pas chargées" in guichet("places", "match", "12 rue des tilleuls", code=2).output
    output = guichet("places", "load").output  # the profile's files
    assert "2838" in output.replace("\u202f", "").replace(" ", "") and "Chargé en" in output
    assert places.loaded(store)
    assert "12 Rue des Tilleuls" in guichet("places", "match", "devant le 12 r des tilleuls").output
    assert "Pas un lieu reconnu" in guichet("places", "match", "devant chez moi").output
    missing = guichet("places", "load", "--addresses", tmp_path / "absent.csv", code=2).output
    assert "absent.csv" in missing
    wrong = tmp_path / "mauvais.csv"
    wrong.write_text("a;b;c\n1;2;3\n", encoding="utf-8")
    assert "mauvais.csv" in guichet("places", "load", "--addresses", wrong, code=2).output
    assert places.loaded(store)  # a bad file leaves the loaded addresses as they were


def test_open311_keys(guichet, store):
    assert "Aucune clé" in guichet("open311", "key-list").output
    created = guichet("open311", "key-create", "FixMyStreet").output
    key = created.strip().splitlines()[-1]
    assert open311.find_key(store, key) is not None and "ne sera plus affichée" in created
    listing = guichet("open311", "key-list").output
    assert "FixMyStreet" in listing and "active" in listing and key not in listing  # shown once only
    key_id = open311.list_keys(store)[0].id
    assert "révoquée" in guichet("open311", "key-revoke", key_id).output
    assert open311.find_key(store, key) is None
    assert "Aucune clé n° 999" in guichet("open311", "key-revoke", 999, code=2).output
    assert "Donnez un nom" in guichet("open311", "key-create", "  ", code=2).output
