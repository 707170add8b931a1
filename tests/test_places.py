"""bot.places: loading the commune's addresses and named places, and understanding written places."""
from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import pytest
import yaml

from bot import places
from bot.models import Address, NamedPlace

CASES = Path(__file__).resolve().parent / "data" / "places.yml"  # not a conversation set: kept out of tests/cases
HEADER = ("id;id_fantoir;numero;rep;nom_voie;code_postal;code_insee;nom_commune;code_insee_ancienne_commune;"
          "nom_ancienne_commune;x;y;lon;lat;type_position;alias;nom_ld;libelle_acheminement;nom_afnor;"
          "source_position;source_nom_voie;certification_commune;cad_parcelles")


@pytest.fixture
def valbourg(store, profile):
    """The store, with Valbourg's real files loaded (the profile's `geography:` section)."""
    report = places.load(store, profile.addresses_file, profile.places_file)
    return store, report


def _rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _address_line(ban_id: str, numero: str, rep: str, street: str, lon: str, lat: str) -> str:
    return (f"{ban_id};x;{numero};{rep};{street};49100;49999;Valbourg;;;0;0;{lon};{lat};entrée;;;VALBOURG;X;"
            "commune;commune;1;")


# --- the table of ways of writing places ---------------------------------------------------------
def _cases() -> list[dict]:
    return yaml.safe_load(CASES.read_text(encoding="utf-8"))


def test_the_table_is_large_varied_and_its_labels_exist_in_the_files(profile):
    cases = _cases()
    assert len(cases) >= 150
    assert sum(1 for case in cases if case["expect"] is None) >= 30
    assert len({case["text"] for case in cases}) == len(cases), "a way of writing is in the table twice"
    addresses = _rows(profile.addresses_file)
    streets = {row["nom_voie"] for row in addresses}
    numbers = {(row["nom_voie"], row["numero"], row["rep"]) for row in addresses}
    named = {row["nom"]: row for row in _rows(profile.places_file)}
    kinds = set()
    for case in cases:
        label = case["expect"]
        if label is None:
            continue
        if label.startswith("angle "):
            first, second = label[len("angle "):].split(" / ")
            assert first in streets and second in streets, label
            kinds.add("corner")
        elif label.endswith(")") and " (" in label:
            name, _, where = label[:-1].rpartition(" (")
            assert name in named, label
            assert where == f"{named[name]['numero']} {named[name]['nom_voie']}", label
            kinds.add("place")
        elif re.match(r"(près du )?\d", label):
            found = re.fullmatch(r"(?:près du )?(\d+)(?: (bis|ter))? (.+)", label)
            assert found, label
            number, suffix, street = found.groups()
            assert (street, number, suffix or "") in numbers, label
            kinds.add("address")
        else:
            assert label in streets, label
            kinds.add("street")
    assert kinds == {"address", "street", "place", "corner"}


def test_every_way_of_writing_in_the_table(valbourg, capsys):
    store, _report = valbourg
    cases = _cases()
    failures, false_places = [], []
    started = time.perf_counter()
    for case in cases:
        found = places.match(store, case["text"])
        got = found.label if found else None
        ok = got == case["expect"] and (not case.get("kind") or (found is not None and found.kind == case["kind"]))
        if not ok:
            failures.append(f"{case['text']!r}: attendu {case['expect']!r}, obtenu {got!r}")
            if case["expect"] is None:
                false_places.append(failures[-1])
        if found is not None:
            assert 0 < found.confidence <= 1
            assert found.words and found.words in case["text"]
            assert 47.3 < found.lat < 47.4 and -0.42 < found.lon < -0.34
    elapsed = time.perf_counter() - started
    score = (len(cases) - len(failures)) / len(cases)
    with capsys.disabled():
        print(f"\nplaces: {len(cases) - len(failures)}/{len(cases)} = {score:.1%} "
              f"({elapsed * 1000 / len(cases):.1f} ms per text)")
        for failure in failures:
            print("  ", failure)
    assert not false_places, "texts without a place were given one:\n" + "\n".join(false_places)
    assert score >= 0.95, "\n".join(failures)


def test_match_kinds_ids_and_confidences(valbourg):
    store, _report = valbourg
    address = places.match(store, "le lampadaire est mort devant le 12 rue des tilleuls depuis hier")
    assert (address.kind, address.label, address.words) == ("address", "12 Rue des Tilleuls", "12 rue des tilleuls")
    assert address.address_id is not None and address.place_id is None
    with store.session() as session:
        row = session.get(Address, address.address_id)
        assert (row.number, row.street, row.lat, row.lon) == ("12", "Rue des Tilleuls", address.lat, address.lon)
    street = places.match(store, "rue des Tilleuls")
    assert street.kind == "street" and street.confidence < address.confidence
    nearby = places.match(store, "45 rue Pasteur")
    assert nearby.label == "près du 29 Rue Pasteur" and nearby.confidence < address.confidence
    school = places.match(store, "près de l'école Paul-Bert")
    assert school.kind == "place" and school.place_id is not None
    with store.session() as session:
        assert session.get(NamedPlace, school.place_id).name == "École Paul-Bert"
    corner = places.match(store, "au coin de la rue des Acacias et de la rue des Jardins")
    assert corner.kind == "corner" and corner.label == "angle Rue des Acacias / Rue des Jardins"
    acacias = places.match(store, "rue des Acacias")
    jardins = places.match(store, "rue des Jardins")
    # between the two streets' closest addresses: nearer to each street than their middles are
    assert places.distance_m(corner.lat, corner.lon, acacias.lat, acacias.lon) < 400
    assert places.distance_m(corner.lat, corner.lon, jardins.lat, jardins.lon) < 400


def test_nothing_to_match(store, valbourg):
    store, _report = valbourg
    assert places.match(store, "") is None
    assert places.match(store, "   ") is None
    assert places.match(store, "😀" * 50) is None
    assert places.match(store, "rue " * 3000) is None  # long junk stays fast and harmless


def test_match_without_loaded_files_is_none(store):
    assert not places.loaded(store)
    assert places.match(store, "12 rue des Tilleuls") is None


# --- normalisation -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("L'École Paul-Bert", "l ecole paul bert"),
    ("12 r. des Tilleuls", "12 rue des tilleuls"),
    ("5 av. Foch", "5 avenue foch"),
    ("5 ave Foch", "5 avenue foch"),
    ("18 bd Carnot", "18 boulevard carnot"),
    ("18 bld Carnot", "18 boulevard carnot"),
    ("2 pl. de la République", "2 place de la republique"),
    ("ch. de la Fontaine", "chemin de la fontaine"),
    ("chem. des Vignes", "chemin des vignes"),
    ("4 imp. des Merisiers", "4 impasse des merisiers"),
    ("all. des Peupliers", "allee des peupliers"),
    ("rte des Quatre-Routes", "route des quatre routes"),
    ("pl. St-Michel", "place saint michel"),
    ("r. Ste-Anne", "rue sainte anne"),
    ("fbg St-Jean", "faubourg saint jean"),
    ("sq. Lamartine", "square lamartine"),
    ("qu. de la Loire", "quai de la loire"),
    ("pte de Paris", "porte de paris"),
    ("rdpt de l'Europe", "rond-point de l europe"),
    ("rond point de l’Europe", "rond-point de l europe"),
    ("12bis rue Pasteur", "12 bis rue pasteur"),
    ("Cœur de ville", "coeur de ville"),
    ("qu'il y a", "qu il y a"),  # an elided "qu'" is not "quai"
    ("all the lights", "all the lights"),
    ("r", "r"),
])
def test_normalise(text, expected):
    assert places.normalise(text) == expected


def test_street_keys_drop_the_type_and_articles():
    assert places.street_key("Rue des Tilleuls") == "tilleuls"
    assert places.street_key("r. des tilleuls") == "tilleuls"
    assert places.street_key("tilleuls") == "tilleuls"
    assert places.street_key("Rue du Château d'Eau") == "chateau eau"
    assert places.street_key("Rue du 8-Mai-1945") == "8 mai 1945"
    assert places.street_key("Les Quatre Routes") == "quatre routes"
    assert places.street_key("Rond-Point de l'Europe") == "europe"


def test_two_streets_sharing_a_name_are_told_apart_by_their_type(valbourg):
    store, _report = valbourg
    assert places.match(store, "3 rue des Lilas").label == "3 Rue des Lilas"
    assert places.match(store, "3 impasse des Lilas").label == "3 Impasse des Lilas"
    assert places.match(store, "20 rue Jean-Jaurès").label == "20 Rue Jean-Jaurès"
    assert places.match(store, "20 avenue Jean-Jaurès").label == "20 Avenue Jean-Jaurès"
    assert places.match(store, "rue de la gare").label == "Rue de la Gare"
    assert places.match(store, "place de la gare").label == "Place de la Gare"
    # without a type, the street whose numbers include the one written
    assert places.match(store, "au 70 jean jaures").label == "70 Avenue Jean-Jaurès"


# --- loading -------------------------------------------------------------------------------------
def test_load_counts_and_french_summary(valbourg):
    store, report = valbourg
    assert (report.addresses, report.streets, report.places, report.skipped) == (2838, 74, 31, 0)
    assert places.loaded(store)
    with store.session() as session:
        assert session.query(Address).count() == 2838
        assert session.query(NamedPlace).count() == 31
        tilleuls = session.query(Address).filter_by(street="Rue des Tilleuls", number="12", suffix=None).one()
        assert tilleuls.street_key == "tilleuls" and tilleuls.postcode == "49100"
        assert tilleuls.ban_id.startswith("49999_")
        bis = session.query(Address).filter_by(street="Rue Pasteur", number="12", suffix="bis").one()
        assert bis.lon == pytest.approx(-0.387276)
        school = session.query(NamedPlace).filter_by(name="École Paul-Bert").one()
        assert (school.kind, school.number, school.street, school.name_key) == ("ecole", "2", "Rue Paul-Bert",
                                                                                "ecole paul bert")
    text = "\n".join(report.lines())
    assert "2\u202f838 adresses chargées (74 voies) depuis valbourg-adresses.csv." in text
    assert "31 lieux nommés chargés depuis valbourg-lieux.csv." in text
    assert "ignorée" not in text


def test_reload_replaces_and_is_idempotent(valbourg, profile, tmp_path):
    store, first = valbourg
    again = places.load(store, profile.addresses_file, profile.places_file)
    assert (again.addresses, again.places) == (first.addresses, first.places)
    with store.session() as session:
        assert session.query(Address).count() == 2838 and session.query(NamedPlace).count() == 31
    assert places.match(store, "12 rue des Tilleuls").label == "12 Rue des Tilleuls"
    # a smaller file replaces everything; the matcher sees the new content at once
    small = _write(tmp_path / "small.csv", [HEADER, _address_line("a1", "1", "", "Rue Neuve", "-0.39", "47.38"),
                                            _address_line("a2", "2", "", "Rue Neuve", "-0.3901", "47.3801")])
    report = places.load(store, small, None)
    assert (report.addresses, report.places) == (2, 0)
    assert "Aucun fichier de lieux nommés" in "\n".join(report.lines())
    assert places.match(store, "12 rue des Tilleuls") is None
    assert places.match(store, "2 rue Neuve").label == "2 Rue Neuve"
    assert places.match(store, "devant la médiathèque") is None


def test_bad_rows_are_skipped_and_counted(store, tmp_path):
    addresses = _write(tmp_path / "adresses.csv", [
        HEADER,
        _address_line("b1", "1", "", "Rue Haute", "-0.39", "47.38"),
        _address_line("b2", "2", "", "Rue Haute", "", "47.38"),  # no longitude
        _address_line("b3", "3", "", "Rue Haute", "-0.39", "quarante-sept"),  # unreadable latitude
        _address_line("b4", "douze", "", "Rue Haute", "-0.39", "47.38"),  # unreadable number
        _address_line("b5", "5", "", "", "-0.39", "47.38"),  # no street
        _address_line("b1", "6", "", "Rue Haute", "-0.39", "47.38"),  # same id twice
        _address_line("b7", "7", "", "Rue Haute", "-0,3905", "47,3805"),  # decimal commas are fine
        _address_line("b8", "8a", "", "Rue Haute", "-0.3906", "47.3806"),  # "8a": number 8, suffix a
        _address_line("b9", "", "", "Le Haut Bourg", "-0.3907", "47.3807"),  # a lieu-dit without a number
        "b10;short",  # a cut line
        "",
    ])
    lieux = _write(tmp_path / "lieux.csv", [
        "nom;type;numero;nom_voie;lon;lat",
        "Halle;halle;1;Rue Haute;-0.39;47.38",
        "Lavoir;lavoir;7;Rue Haute;;",  # no position: the address's
        "Kiosque;kiosque;;;;",  # no position and no address: skipped
        ";parc;;;-0.39;47.38",  # no name: skipped
    ])
    report = places.load(store, addresses, lieux)
    assert report.addresses == 4 and report.streets == 2
    assert sum(report.skipped_addresses.values()) == 6
    assert report.skipped_addresses["sans coordonnées lisibles"] == 2
    assert report.skipped_addresses["numéro illisible"] == 1
    assert report.skipped_addresses["sans nom de voie"] == 1
    assert report.skipped_addresses["ligne incomplète"] == 1
    assert report.skipped_addresses["identifiant en double"] == 1
    assert report.places == 2 and sum(report.skipped_places.values()) == 2
    text = "\n".join(report.lines())
    assert "6 lignes ignorées (adresses) : 2 sans coordonnées lisibles" in text
    assert "2 lignes ignorées (lieux) :" in text
    with store.session() as session:
        eight = session.query(Address).filter_by(number="8").one()
        assert eight.suffix == "a"
        assert session.query(Address).filter_by(street="Le Haut Bourg").one().number == ""
        lavoir = session.query(NamedPlace).filter_by(name="Lavoir").one()
        assert (lavoir.lat, lavoir.lon) == pytest.approx((47.3805, -0.3905))


def test_missing_file_and_wrong_layout_raise_french_errors(store, tmp_path, profile):
    missing = tmp_path / "absent.csv"
    with pytest.raises(places.PlacesError, match="Fichier des adresses introuvable : .*absent.csv"):
        places.load(store, missing, None)
    with pytest.raises(places.PlacesError, match="Fichier des lieux introuvable : .*absent.csv"):
        places.load(store, profile.addresses_file, missing)
    commas = _write(tmp_path / "virgules.csv", [HEADER.replace(";", ","), "1,2,3"])
    with pytest.raises(places.PlacesError) as error:
        places.load(store, commas, None)
    message = str(error.value)
    assert "virgules.csv" in message and "« nom_voie », « lon », « lat » manquantes" in message
    assert "Séparateur « ; » attendu" in message
    no_lat = _write(tmp_path / "sans-lat.csv", ["id;numero;nom_voie;lon", "a;1;Rue Haute;-0.39"])
    with pytest.raises(places.PlacesError, match="colonne « lat » manquante"):
        places.load(store, no_lat, None)
    bad_places = _write(tmp_path / "lieux.csv", ["name;kind;lon;lat", "Halle;halle;-0.39;47.38"])
    with pytest.raises(places.PlacesError, match="lieux.csv.*« nom » manquante"):
        places.load(store, profile.addresses_file, bad_places)
    empty = _write(tmp_path / "vide.csv", [])
    with pytest.raises(places.PlacesError, match="vide"):
        places.load(store, empty, None)
    all_bad = _write(tmp_path / "illisible.csv", [HEADER, _address_line("a", "1", "", "Rue Haute", "", "")])
    with pytest.raises(places.PlacesError, match="aucune adresse lisible .1 ligne ignorée. : rien n'a été changé"):
        places.load(store, all_bad, None)
    with pytest.raises(places.PlacesError, match="Aucun fichier des adresses n'est configuré"):
        places.load(store, None, None)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes((HEADER + "\n" + _address_line("z", "1", "", "Rue Épée", "-0.39", "47.38") + "\n")
                       .encode("latin-1"))
    with pytest.raises(places.PlacesError, match="n'est pas en UTF-8"):
        places.load(store, latin1, None)
    assert not places.loaded(store)  # nothing was written


def test_a_failed_load_leaves_the_previous_content(valbourg, tmp_path):
    store, _report = valbourg
    with pytest.raises(places.PlacesError):
        places.load(store, tmp_path / "absent.csv", None)
    assert places.match(store, "12 rue des Tilleuls").label == "12 Rue des Tilleuls"


def _synthetic(profile, tmp_path: Path, copies: int = 11) -> Path:
    """About 31,000 addresses: Valbourg's, copied with the numbers shifted by 1000 each time."""
    rows = _rows(profile.addresses_file)
    path = tmp_path / "synthetique.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=";")
        writer.writeheader()
        for copy in range(copies):
            for row in rows:
                writer.writerow({**row, "id": f"{row['id']}_{copy}", "numero": str(int(row["numero"]) + 1000 * copy)})
    return path


def test_thirty_thousand_addresses_load_in_seconds(store, profile, tmp_path, capsys):
    path = _synthetic(profile, tmp_path)
    started = time.perf_counter()
    report = places.load(store, path, profile.places_file)
    elapsed = time.perf_counter() - started
    assert report.addresses == 2838 * 11 and report.skipped == 0
    started = time.perf_counter()
    found = places.match(store, "devant le 5012 rue des tileuls")
    first_match = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(20):
        places.match(store, "le lampadaire est mort devant le 3012 avenue Foch depuis hier")
    per_match = (time.perf_counter() - started) / 20
    with capsys.disabled():
        print(f"\nplaces: {report.addresses} addresses loaded in {elapsed:.2f} s (SQLite); first match "
              f"{first_match * 1000:.0f} ms, then {per_match * 1000:.1f} ms per match")
    assert found.label == "5012 Rue des Tilleuls"
    assert elapsed < 10
    assert per_match < 0.5


@pytest.mark.postgres
def test_thirty_thousand_addresses_load_on_postgresql(pg_store, profile, tmp_path, capsys):
    path = _synthetic(profile, tmp_path)
    started = time.perf_counter()
    report = places.load(pg_store, path, profile.places_file)
    elapsed = time.perf_counter() - started
    again = places.load(pg_store, path, profile.places_file)  # replaces, in one transaction
    with capsys.disabled():
        print(f"\nplaces: {report.addresses} addresses loaded in {elapsed:.2f} s (PostgreSQL)")
    assert report.addresses == again.addresses == 2838 * 11
    with pg_store.session() as session:
        assert session.query(Address).count() == 2838 * 11
    assert places.match(pg_store, "12 rue des Tilleuls").label == "12 Rue des Tilleuls"
    assert places.nearest(pg_store, 47.379937, -0.386988).label == "près du 14 Rue Pasteur"
    assert elapsed < 10


# --- the nearest address to a position -----------------------------------------------------------
def test_nearest_address_to_a_pin(valbourg):
    store, _report = valbourg
    # 14 Rue Pasteur is at 47.379937, -0.386988: a pin 3 m north of it
    found = places.nearest(store, 47.379964, -0.386988)
    assert (found.kind, found.label) == ("pin", "près du 14 Rue Pasteur")
    assert found.distance_m == pytest.approx(3.0, abs=0.5)
    assert found.address_id is not None and found.confidence > 0.9
    assert (found.lat, found.lon) == (47.379937, -0.386988)
    bis = places.nearest(store, 47.379915, -0.387276)
    assert bis.label == "près du 12 bis Rue Pasteur" and bis.distance_m == 0


def test_nearest_far_away_is_none_and_within_500_m_is_found(valbourg):
    store, _report = valbourg
    assert places.nearest(store, 48.8566, 2.3522) is None  # Paris
    assert places.nearest(store, 47.30, -0.39) is None  # 8 km south of the town
    # about 300 m south of the southernmost address: still the town
    with store.session() as session:
        south = session.query(Address).order_by(Address.lat).first()
    found = places.nearest(store, south.lat - 0.0027, south.lon)
    assert found is not None and 250 < found.distance_m < 350
    assert places.nearest(store, south.lat - 0.0054, south.lon) is None  # 600 m: outside
    assert places.nearest(store, 91.0, 0.0) is None


def test_nearest_without_addresses_is_none(store):
    assert places.nearest(store, 47.38, -0.39) is None


def test_distance_m():
    assert places.distance_m(47.38, -0.39, 47.38, -0.39) == 0
    assert places.distance_m(47.0, -0.39, 48.0, -0.39) == pytest.approx(111_195, rel=1e-3)
    paris_lyon = places.distance_m(48.8566, 2.3522, 45.7640, 4.8357)
    assert paris_lyon == pytest.approx(392_000, rel=0.01)
