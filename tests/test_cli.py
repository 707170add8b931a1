"""The staff actions from the command line (`guichet tickets ...`, `guichet staff add-user`)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.tickets import NewTicket, TicketStore
from conftest import ROOT

GUICHET = str(Path(sys.executable).parent / "guichet")


@pytest.fixture
def cli(database_url, tmp_path):
    env = dict(os.environ, GUICHET_DATABASE_URL=database_url, GUICHET_VAR_DIR=str(tmp_path),
               GUICHET_RASA_URL="http://127.0.0.1:9")  # nothing listens: resuming must explain itself

    def run(*args, ok=True):
        result = subprocess.run([GUICHET, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return result
    return run


def test_staff_workflow_from_the_command_line(cli, database_url):
    store = TicketStore(database_url)
    cli("staff", "add-user", "camille", "--role", "cm", "--password", "motdepasse-cm-1")
    cli("staff", "add-user", "victor", "--role", "head", "--service", "voirie", "--password", "motdepasse-voirie")
    handoff, _ = store.create(NewTicket(kind="handoff", queue="cm", conversation_id="citizen-1", channel="guichet",
                                        summary="je veux parler à quelqu'un", handoff_reason="human_request",
                                        source_message_id="m1"))
    urgent, _ = store.create(NewTicket(kind="handoff", queue="cm", conversation_id="citizen-2", channel="guichet",
                                       summary="ça sent le gaz", handoff_reason="distress_danger", urgent=True,
                                       source_message_id="m2"))

    queue = cli("tickets", "list", "--as", "camille").stdout.splitlines()
    assert queue[0].startswith(urgent.reference) and "URGENT" in queue[0]
    assert queue[1].startswith(handoff.reference)

    assert "pris en charge par camille" in cli("tickets", "take", handoff.reference, "--as", "camille").stdout
    cli("tickets", "reply", handoff.reference, "Bonjour, je m'en occupe.", "--as", "camille")
    cli("tickets", "reply", handoff.reference, "--canned", "transmis_service", "--as", "camille")
    cli("tickets", "note", handoff.reference, "Citoyen déjà venu au guichet", "--as", "camille")
    shown = cli("tickets", "show", handoff.reference, "--as", "camille").stdout
    assert "note privée: Citoyen déjà venu au guichet" in shown and "Bonjour, je m'en occupe." in shown

    routed = cli("tickets", "route", handoff.reference, "voirie", "--kind", "report", "--as", "camille", ok=False)
    assert "n'a pas pu être rendue au bot" in routed.stderr  # Rasa is not running in this test: said clearly
    assert store.by_reference(handoff.reference).queue == "voirie"

    head_queue = cli("tickets", "list", "--as", "victor").stdout
    assert handoff.reference in head_queue and urgent.reference not in head_queue
    refused = cli("tickets", "show", urgent.reference, "--as", "victor", ok=False)
    assert refused.returncode == 2 and "introuvable" in refused.stderr
    cli("tickets", "status", handoff.reference, "scheduled", "--date", "2026-12-03", "--as", "victor")
    cli("tickets", "status", handoff.reference, "resolved", "--as", "victor")
    assert store.by_reference(handoff.reference).status == "resolved"
    from bot import relay
    sent = relay.collect(store, "citizen-1")
    assert sent[0].startswith("Bonjour, je m'en occupe.") and "L'équipe Communication" in sent[0]
    assert any("03/12/2026" in text for text in sent) and any("résolu" in text for text in sent)


def test_wrong_arguments_explain_themselves(cli):
    cli("staff", "add-user", "camille", "--role", "cm", "--password", "motdepasse-cm-1")
    assert "Indiquez qui agit" in cli("tickets", "list", ok=False).stderr
    assert "Compte inconnu" in cli("tickets", "list", "--as", "nobody", ok=False).stderr
    assert "introuvable" in cli("tickets", "take", "T-2026-999999", "--as", "camille", ok=False).stderr
    assert "introuvable" in cli("tickets", "take", "n'importe quoi", "--as", "camille", ok=False).stderr
    short = cli("staff", "add-user", "x", "--role", "cm", "--password", "court", ok=False)
    assert "trop court" in short.stderr
    head = cli("staff", "add-user", "y", "--role", "head", "--service", "nope", "--password", "assez-long-123", ok=False)
    assert "service" in head.stderr


def test_help_and_usage_errors_are_french_to_the_last_line(cli):
    for args in (["--help"], ["tickets", "--help"], ["tickets", "route", "--help"], ["db", "remove-tool-data", "--help"]):
        text = cli(*args).stdout
        assert "Afficher cette aide et quitter." in text and "Utilisation :" in text, args
        assert "Show this message" not in text and "Usage:" not in text and "Commands" not in text, args
    for args, french in ((["tickets", "route"], "Argument manquant"), (["stats", "--days", "abc"], "nombre entier"),
                         (["stats", "--dayz", "3"], "Option inconnue"), (["nope"], "Commande inconnue")):
        result = cli(*args, ok=False)
        assert result.returncode == 2 and french in result.stderr, (args, result.stderr)
        assert "Error" not in result.stderr and "Try '" not in result.stderr, result.stderr


def test_notices_from_the_command_line(cli, database_url):
    import datetime as dt

    cli("staff", "add-user", "camille", "--role", "cm", "--password", "motdepasse-cm-1")
    cli("staff", "add-user", "victor", "--role", "head", "--service", "voirie", "--password", "motdepasse-voirie")
    today = dt.date.today()
    added = cli("notices", "add", "Collecte des bacs jaunes décalée au samedi.", "--from", today.isoformat(),
                "--to", (today + dt.timedelta(days=2)).isoformat(), "--service", "proprete", "--as", "camille")
    assert "Avis #1 enregistré" in added.stdout
    listing = cli("notices", "list").stdout
    assert "En cours : 1" in listing and "service Propreté" in listing and "bacs jaunes" in listing
    refused = cli("notices", "add", "x", "--from", "demain", "--to", today.isoformat(), "--as", "camille", ok=False)
    assert refused.returncode == 2 and "AAAA-MM-JJ" in refused.stderr
    head = cli("notices", "add", "x", "--from", today.isoformat(), "--to", today.isoformat(), "--as", "victor", ok=False)
    assert head.returncode == 2 and "community manager" in head.stderr
    assert "Avis #1 terminé" in cli("notices", "end", "1", "--as", "camille").stdout
    assert "En cours : 0" in cli("notices", "list").stdout
    again = cli("notices", "end", "1", "--as", "camille", ok=False)
    assert again.returncode == 2 and "déjà terminé" in again.stderr


def test_answers_from_the_command_line(cli):
    cli("staff", "add-user", "camille", "--role", "cm", "--password", "motdepasse-cm-1")
    assert "piscine : réponse d'origine" in cli("answers", "list").stdout
    set_ = cli("answers", "set", "piscine", "--text", "Le centre aquatique ouvre à 10h tous les jours.", "--as", "camille")
    assert "Version #1 en ligne" in set_.stdout
    shown_ = cli("answers", "show", "piscine").stdout
    assert shown_.startswith("Le centre aquatique ouvre à 10h tous les jours. 👉 https://") and "#1 approved" in shown_
    assert "Version #2 en ligne (réponse d'origine" in cli("answers", "restore", "piscine", "origine", "--as", "camille").stdout
    bad = cli("answers", "restore", "piscine", "deux", "--as", "camille", ok=False)
    assert bad.returncode == 2 and "numéro de version" in bad.stderr
    unknown = cli("answers", "show", "cinema", ok=False)
    assert unknown.returncode == 2 and "Sujet inconnu" in unknown.stderr


def test_a_head_proposes_from_the_command_line_and_the_cm_reviews(cli):
    cli("staff", "add-user", "camille", "--role", "cm", "--password", "motdepasse-cm-1")
    cli("staff", "add-user", "sophie", "--role", "head", "--service", "sport_culture", "--password", "motdepasse-sport")
    proposed = cli("answers", "set", "piscine", "--text", "La piscine rouvre le 3 janvier.", "--as", "sophie")
    assert "proposée au community manager" in proposed.stdout
    assert "Propositions à valider : #1 (piscine)" in cli("answers", "list").stdout
    refused = cli("answers", "review", "1", "--approve", "--as", "sophie", ok=False)
    assert refused.returncode == 2 and "Seul le community manager" in refused.stderr
    assert "validée : en ligne" in cli("answers", "review", "1", "--approve", "--as", "camille").stdout
    assert cli("answers", "show", "piscine").stdout.startswith("La piscine rouvre le 3 janvier.")
    other = cli("answers", "set", "horaires_mairie", "--text", "Ouvert.", "--as", "sophie", ok=False)
    assert other.returncode == 2 and "sujets de votre service" in other.stderr
