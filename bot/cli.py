"""`guichet`: run, train, evaluate and look after the assistant from the command line."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import List, Optional

import typer

from bot import cli_french
from bot.settings import PROJECT_ROOT, get_settings

cli_french.install()

app = typer.Typer(help="Assistant d'accueil de la collectivité (Rasa) : lancer, entraîner, évaluer.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Base de données des tickets.", no_args_is_help=True)
tickets_app = typer.Typer(help="Tickets : file d'attente, prise en charge, réponse, statut.", no_args_is_help=True)
staff_app = typer.Typer(help="Espace agents : comptes et interface web.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tickets_app, name="tickets")
app.add_typer(staff_app, name="staff")
citizen_app = typer.Typer(help="Données d'un habitant (RGPD) : export et effacement.", no_args_is_help=True)
app.add_typer(citizen_app, name="citizen")
answers_app = typer.Typer(help="Réponses de l'assistant (FAQ) : voir, modifier, restaurer une version.",
                          no_args_is_help=True)
app.add_typer(answers_app, name="answers")
comments_app = typer.Typer(help="Commentaires publics (Facebook, Instagram) : les voir, y répondre en public ou en privé.",
                           no_args_is_help=True)
app.add_typer(comments_app, name="comments")
notices_app = typer.Typer(help="Avis à la population : ajoutés aux réponses de l'assistant pendant leurs dates.",
                          no_args_is_help=True)
app.add_typer(notices_app, name="notices")
places_app = typer.Typer(help="Adresses et lieux de la commune (Base Adresse Nationale) : charger, essayer.",
                         no_args_is_help=True)
app.add_typer(places_app, name="places")
open311_app = typer.Typer(help="API Open311 GeoReport v2 : clés des applications qui déposent des signalements.",
                          no_args_is_help=True)
app.add_typer(open311_app, name="open311")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _model_path(model: Optional[Path]) -> Path:
    from bot.stack import latest_model

    if model is not None:
        if not model.exists():
            _fail(f"Modèle introuvable : {model}")
        return model
    try:
        return latest_model(get_settings().model_dir)
    except FileNotFoundError as exc:
        _fail(str(exc))
        raise  # unreachable


@app.command()
def train(force: bool = typer.Option(False, help="Réentraîner même si rien n'a changé.")) -> None:
    """Entraîne le modèle Rasa (NLU + dialogue) dans models/ ; ne refait rien si rien n'a changé."""
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    log = settings.var_dir / "train.log"
    command = [str(Path(sys.executable).parent / "rasa"), "train", "--fixed-model-name", "guichet",
               "--out", str(settings.model_dir)]
    if force:
        command.append("--force")
    typer.echo(f"Entraînement du modèle (journal : {log})...")
    with log.open("wb") as handle:
        code = subprocess.call(command, cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log.read_text(errors="replace")[-2000:]
        _fail(f"L'entraînement a échoué (code {code}) :\n{tail}", code)
    typer.echo(f"Modèle prêt : {settings.model_dir / 'guichet.tar.gz'}")


@app.command(name="eval")
def evaluate_command(
    cases: Path = typer.Argument(..., help="Fichier de cas (format de shared/reference/README.md)."),
    model: Optional[Path] = typer.Option(None, help="Modèle à évaluer (défaut : le dernier de models/)."),
    json_path: Optional[Path] = typer.Option(None, "--json",
                                             help="Écrit les résultats détaillés et les métriques en JSON."),
    concurrency: int = typer.Option(8, min=1, max=64, help="Conversations évaluées en parallèle."),
) -> None:
    """Joue chaque cas dans une conversation neuve avec le vrai assistant et affiche l'exactitude.

    Affiche aussi précision/rappel par issue, urgences, transferts, réclamations et la matrice de confusion.
    """
    from bot.evaluation import evaluate, format_report

    if not cases.exists():
        _fail(f"Fichier de cas introuvable : {cases}")
    try:
        results, accuracy = evaluate(cases, _model_path(model), json_path, concurrency)
    except ValueError as exc:
        _fail(f"Fichier de cas invalide : {exc}")
        return
    for line in format_report(results, accuracy):
        typer.echo(line)


@app.command()
def run(
    chat: bool = typer.Option(True, help="Ouvre la discussion locale dans ce terminal."),
    model: Optional[Path] = typer.Option(None, help="Modèle à servir (défaut : le dernier de models/)."),
) -> None:
    """Démarre l'assistant (serveur d'actions + serveur Rasa, base SQLite par défaut) et la discussion locale."""
    from bot.stack import StopRequested, running_stack, stop, stop_on_signals

    settings = get_settings()
    model_path = _model_path(model)
    typer.echo(f"Démarrage de l'assistant (base : {settings.database_url})...")
    gateways: dict[str, object] = {}
    try:
        with stop_on_signals(), running_stack(model_path, settings.database_url, settings.var_dir,
                                              settings.action_port, settings.rasa_port, settings.rasa_token) as stack:
            typer.echo(f"Serveur Rasa : {stack.rasa_url} (canal REST : {stack.chat_url})")
            load_places_if_missing(settings.database_url)
            try:
                # Each process is registered as soon as it runs: a later one failing to start (bad
                # settings) still stops the earlier ones in the ``finally`` below.
                for name, start in (("Site", _start_webchat), ("Telegram", _start_telegram), ("Meta", _start_meta),
                                    ("Open311", _start_open311)):
                    process = start(stack.rasa_url, settings.var_dir)
                    if process is not None:
                        gateways[name] = process
                if chat and not set(gateways) - {"Site", "Open311"}:
                    local_chat(stack.chat_url)
                else:
                    typer.echo("Prêt. Ctrl-C (ou SIGTERM) pour arrêter.")
                    _wait_for_exit(stack.rasa, gateways)
            finally:
                # The gateways first (no new messages), then Rasa, then the action server (running_stack).
                for process in gateways.values():
                    stop(process)
    except StopRequested as signal_name:
        typer.echo(f"Arrêt demandé ({signal_name}) : assistant arrêté proprement.")
    except KeyboardInterrupt:
        typer.echo("Assistant arrêté.")


@app.command()
def stack(
    rasa: int = typer.Option(2, min=1, max=16, help="Nombre de serveurs Rasa."),
    actions: int = typer.Option(2, min=1, max=16, help="Nombre de serveurs d'actions."),
    staff: int = typer.Option(2, min=0, max=16, help="Nombre de processus de l'interface de l'équipe."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port public du proxy nginx (boucle locale)."),
    throwaway_postgres: bool = typer.Option(False, "--throwaway-postgres",
                                            help="Démarre une base PostgreSQL jetable (essai) au lieu de "
                                                 "GUICHET_DATABASE_URL."),
    model: Optional[Path] = typer.Option(None, help="Modèle à servir (défaut : le dernier de models/)."),
) -> None:
    """Plusieurs serveurs : N serveurs Rasa et M serveurs d'actions derrière nginx, sur une base
    PostgreSQL et un Redis partagés (README, « Plusieurs serveurs »)."""
    import contextlib
    import time

    from bot.cluster import describe, running_cluster, throwaway_postgres as own_postgres
    from bot.local_services import MissingProgram
    from bot.stack import StopRequested, stop_on_signals

    settings = get_settings()
    model_path = _model_path(model)
    if not throwaway_postgres and not settings.database_url.startswith("postgresql"):
        _fail("Plusieurs serveurs partagent une base PostgreSQL : définissez GUICHET_DATABASE_URL="
              "postgresql+psycopg2://... (ou --throwaway-postgres pour un essai sur une base jetable).")
    typer.echo(f"Démarrage de {rasa} serveur(s) Rasa et {actions} serveur(s) d'actions derrière nginx...")
    try:
        with stop_on_signals(), contextlib.ExitStack() as exits:
            url = exits.enter_context(own_postgres()) if throwaway_postgres else settings.database_url
            cluster = exits.enter_context(running_cluster(
                model_path, url, settings.var_dir / "stack", redis_url=os.environ.get("GUICHET_REDIS_URL") or None,
                rasa_count=rasa, action_count=actions, staff_count=staff, proxy_port=port))
            for line in describe(cluster):
                typer.echo(line)
            typer.echo("Prêt. Ctrl-C (ou SIGTERM) pour arrêter.")
            while True:
                for part in cluster.rasa + cluster.actions + cluster.staff + cluster.webchat + cluster.open311:
                    if part.process is not None and part.process.poll() is not None:
                        typer.echo(f"{part.name} s'est arrêté (code {part.process.returncode}) : redémarrage.")
                        part.restart()
                time.sleep(2)
    except MissingProgram as error:
        _fail(str(error))
    except StopRequested as signal_name:
        typer.echo(f"Arrêt demandé ({signal_name}) : serveurs arrêtés proprement.")
    except KeyboardInterrupt:
        typer.echo("Serveurs arrêtés.")


GATEWAY_LOGS = {"Telegram": "telegram.log", "Meta": "meta.log", "Site": "webchat.log", "Open311": "open311.log"}


def _wait_for_exit(rasa, gateways: dict) -> None:
    """Serve until Ctrl-C; stop with an error if the Rasa server or a gateway dies."""
    import time

    while True:
        if rasa.poll() is not None:
            _fail(f"Le serveur Rasa s'est arrêté (code {rasa.returncode}) : voir var/logs/rasa.log.", 1)
        for name, process in gateways.items():
            if process.poll() is not None:
                _fail(f"La passerelle {name} s'est arrêtée (code {process.returncode}) : voir "
                      f"var/logs/{GATEWAY_LOGS[name]} (jeton refusé ? réseau ? réglages ?).", 1)
        time.sleep(1)


def _start_telegram(rasa_url: str, var_dir: Path):
    """The Telegram gateway process, when ``GUICHET_TELEGRAM_TOKEN`` is set (else None)."""
    from bot.channels.telegram import TelegramSettings, start_process

    settings = TelegramSettings.from_env()
    if not settings.token:
        return None
    log_path = var_dir / "logs" / "telegram.log"
    mode = f"webhook {settings.webhook_url}" if settings.webhook_url else "long polling"
    typer.echo(f"Passerelle Telegram démarrée ({mode}) ; journal : {log_path}. Ctrl-C pour arrêter.")
    return start_process(rasa_url, log_path)


def _start_webchat(rasa_url: str, var_dir: Path):
    """The website chat's server (always, unless ``GUICHET_WEBCHAT_DISABLED=1``): prints the demo's address."""
    import os

    from bot.channels.webchat.__main__ import start_process
    from bot.channels.webchat.server import WebchatSettings

    if os.environ.get("GUICHET_WEBCHAT_DISABLED", "") in ("1", "true", "yes"):
        return None
    settings = WebchatSettings.from_env()
    log_path = var_dir / "logs" / "webchat.log"
    host = "127.0.0.1" if settings.listen in ("0.0.0.0", "::") else settings.listen
    typer.echo(f"Discussion du site : page de démonstration http://{host}:{settings.port}/chat/demo "
               f"(script : http://{host}:{settings.port}/chat/guichet-chat.js) ; journal : {log_path}.")
    return start_process(rasa_url, log_path)


def _start_open311(rasa_url: str, var_dir: Path):
    """The Open311 GeoReport v2 API (always, unless ``GUICHET_OPEN311_DISABLED=1``)."""
    import os

    from bot.channels.gateway import start_process

    if os.environ.get("GUICHET_OPEN311_DISABLED", "") in ("1", "true", "yes"):
        return None
    port = os.environ.get("GUICHET_OPEN311_PORT") or "8091"
    log_path = var_dir / "logs" / "open311.log"
    typer.echo(f"API Open311 (GeoReport v2) : http://127.0.0.1:{port}/open311/v2/services.xml ; journal : {log_path}.")
    return start_process("bot.open311", rasa_url, log_path)


def _start_meta(rasa_url: str, var_dir: Path):
    """The Facebook/Instagram gateway process, when its settings are present (else None)."""
    from bot.channels.meta.__main__ import start_process
    from bot.channels.meta.gateway import MetaSettings

    settings = MetaSettings.from_env()
    if not settings.configured:
        if any((settings.app_secret, settings.verify_token, settings.page_token)):
            _fail("Passerelle Facebook/Instagram : réglages incomplets, il manque " + ", ".join(settings.missing())
                  + " (README, « Facebook et Instagram »).", 2)
        return None
    log_path = var_dir / "logs" / "meta.log"
    typer.echo(f"Passerelle Facebook/Instagram démarrée (webhook sur {settings.listen}:{settings.port}"
               f"{settings.path}) ; journal : {log_path}.")
    return start_process(rasa_url, log_path)


def _poll_staff_messages(outbox_url: str, sender: str, stop) -> None:
    """Print what staff send to this conversation (replies, status news) as it arrives."""
    import requests

    while not stop.wait(2):
        try:
            for item in requests.get(outbox_url, params={"sender": sender}, timeout=10).json():
                typer.echo(f"\nmairie (agent)> {item.get('text', '')}")
        except Exception:  # noqa: BLE001 - the server may be restarting; try again
            continue


def local_chat(rest_url: str, sender: Optional[str] = None, database_url: Optional[str] = None) -> None:
    """Chat in this terminal. If the Rasa server is down, the message is recorded directly in the
    database (same URL as the assistant, ``database_url`` or the settings) and the citizen is told."""
    import threading

    import requests

    sender = sender or f"local-{uuid.uuid4().hex[:8]}"
    typer.echo(f"Discussion locale (conversation {sender}). Écrivez votre message ; /quit pour sortir.")
    stop = threading.Event()
    if rest_url.endswith("/webhooks/guichet/webhook"):
        outbox_url = rest_url.rsplit("/", 1)[0] + "/outbox"
        threading.Thread(target=_poll_staff_messages, args=(outbox_url, sender, stop), daemon=True).start()
    try:
        _chat_loop(rest_url, sender, requests, database_url or get_settings().database_url)
    finally:
        stop.set()


CHAT_ATTEMPTS = 3  # a Rasa server restarting answers again within a few seconds
CHAT_TIMEOUT = 120


def _post_message(rest_url: str, sender: str, text: str, client_id: str, requests, pause: float = 2.0):
    """POST one message, retried (same message id: never handled twice); None if the server cannot be reached."""
    import time

    for attempt in range(1, CHAT_ATTEMPTS + 1):
        try:
            response = requests.post(rest_url, json={"sender": sender, "message": text, "message_id": client_id},
                                     timeout=CHAT_TIMEOUT)
            if response.status_code < 500:
                return response.json()
        except (requests.ConnectionError, requests.Timeout, ValueError):
            pass
        if attempt < CHAT_ATTEMPTS:
            time.sleep(pause * attempt)
    return None


def _chat_loop(rest_url: str, sender: str, requests, database_url: Optional[str] = None, pause: float = 2.0) -> None:
    from bot.integrations import reliability

    database_url = database_url or get_settings().database_url
    while True:
        try:
            text = input("vous> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("")
            return
        if text.strip() in ("/quit", "/exit"):
            return
        client_id = uuid.uuid4().hex
        replies = _post_message(rest_url, sender, text, client_id, requests, pause)
        if replies is None:  # the assistant is down: keep the message ourselves and say so
            if text.strip():
                reliability.record_or_spool(database_url, sender, "guichet", text,
                                            reliability.message_id_for(sender, client_id))
            typer.echo(f"mairie> {reliability.technical_problem_text()}")
            continue
        if not replies:
            typer.secho("(pas de réponse automatique : la conversation est avec l'équipe)", dim=True)
        for reply in replies if isinstance(replies, list) else []:
            typer.echo(f"mairie> {reply.get('text', '')}")


@app.command()
def chat(url: Optional[str] = typer.Option(None, help="URL du serveur Rasa (défaut : réglages)."),
         sender: Optional[str] = typer.Option(None, help="Identifiant de conversation.")) -> None:
    """Discute avec un assistant déjà démarré (canal REST)."""
    base = (url or get_settings().rasa_url).rstrip("/")
    local_chat(f"{base}/webhooks/guichet/webhook", sender)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Crée ou met à jour les tables (migrations Alembic)."""
    from bot import db

    url = get_settings().database_url
    db.upgrade(url)
    typer.echo(f"Base à jour : {url}")


@db_app.command("remove-tool-data")
def db_remove_tool_data(dry_run: bool = typer.Option(False, "--dry-run", help="Compter seulement, sans rien modifier."),
                        yes: bool = typer.Option(False, "--yes", help="Confirmer la suppression (irréversible).")) -> None:
    """Supprimer les conversations qu'une ancienne version de guichet eval / bench / soak a écrites par erreur
    dans la base de la collectivité (canal « eval », expéditeurs « eval-… », « bench-… », « soak-… »)."""
    from bot.tool_data import remove_tool_data

    if not yes and not dry_run:
        _fail("La suppression est irréversible : ajoutez --yes pour confirmer (ou --dry-run pour compter).")
    typer.echo(f"Base : {get_settings().database_url}")
    for line in remove_tool_data(_store(), dry_run=dry_run).lines():
        typer.echo(line)


def _store():
    from bot.tickets import TicketStore

    return TicketStore(get_settings().database_url)


def _desk():
    from bot.staff import get_desk

    return get_desk()


def _staff(username: Optional[str]):
    """The staff account acting (``--as`` or GUICHET_STAFF_USER)."""
    from bot.accounts import Accounts
    from bot.profile import load_profile

    username = username or os.environ.get("GUICHET_STAFF_USER")
    if not username:
        _fail("Indiquez qui agit : --as IDENTIFIANT (ou GUICHET_STAFF_USER).")
    staff = Accounts(_store(), load_profile()).get(username)
    if staff is None:
        shown = "".join(ch if ch.isprintable() else "?" for ch in username)[:64]
        _fail(f"Compte inconnu ou désactivé : « {shown} » (voir `guichet staff add-user`).")
    return staff


def _run_desk(action):
    """Run a desk action: refusals and bad input end with a French message, never a traceback."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.staff import DeskError

    try:
        return action()
    except DeskError as exc:
        _fail(str(exc))
    except (UnicodeError, ValueError) as exc:
        _fail(f"Entrée refusée : texte ou valeur invalide (caractère nul, codage incorrect...) — {type(exc).__name__}.")
    except SQLAlchemyError as exc:
        _fail(f"La base de données a refusé l'opération ({type(exc).__name__}). Réessayez ; si cela persiste, "
              "prévenez l'administrateur.", 1)


AS_OPTION = typer.Option(None, "--as", help="Compte agent qui agit (ou GUICHET_STAFF_USER).")


@tickets_app.command("list")
def tickets_list(as_: Optional[str] = AS_OPTION,
                 all_: bool = typer.Option(False, "--all", help="Inclure les tickets clôturés.")) -> None:
    """File d'attente : transferts et tickets à orienter (CM) ou tickets du service (responsable)."""
    staff = _staff(as_)
    items = _run_desk(lambda: _desk().queue(staff, include_closed=all_))
    if not items:
        typer.echo("Aucun ticket en attente.")
    for item in items:
        t = item.ticket
        flag = "URGENT " if t.urgent else ""
        holder = f" [{t.assigned_to}]" if t.assigned_to else ""
        typer.echo(f"{t.reference}  {flag}{t.status:<12} attente {item.waiting_label:<8} {item.reason}{holder} — "
                   f"{(t.summary or '')[:60]}")


@tickets_app.command("show")
def tickets_show(reference: str, as_: Optional[str] = AS_OPTION) -> None:
    """Affiche un ticket, sa conversation, ses notes et son historique."""
    staff = _staff(as_)
    desk = _desk()
    ticket = _run_desk(lambda: desk.ticket(staff, reference))
    typer.echo(f"{ticket.reference} — {ticket.kind} — file : {ticket.queue} — statut : {ticket.status}"
               f"{' — URGENT' if ticket.urgent else ''}{' — pris par ' + ticket.assigned_to if ticket.assigned_to else ''}")
    typer.echo(f"Motif : {desk.reason(ticket)}")
    typer.echo(f"Conversation : {ticket.conversation_id} ({ticket.channel})  Lieu : {ticket.location or '-'}")
    typer.echo(f"Résumé : {ticket.summary}")
    for message in desk.transcript(staff, reference):
        who = "note privée" if message.private else message.author
        typer.echo(f"  [{message.created_at:%d/%m %H:%M}] {who}: {message.text}")
    for change in desk.audit(staff, reference):
        typer.echo(f"  ({change.created_at:%d/%m %H:%M} {change.actor}: {change.old_status or '-'} -> {change.new_status})")
    for item in desk.undelivered(staff, reference):
        why = (f"le citoyen ne peut plus être joint sur ce canal : {item.last_error}" if item.failed_at
               else f"pas encore remis : {item.last_error}")
        typer.secho(f"  NON REMIS [{item.created_at:%d/%m %H:%M}] {item.text[:60]} — {why}", fg=typer.colors.RED)


@tickets_app.command("take")
def tickets_take(reference: str, as_: Optional[str] = AS_OPTION) -> None:
    """Prendre le ticket (un seul agent gagne si deux le prennent en même temps)."""
    staff = _staff(as_)
    ticket = _run_desk(lambda: _desk().take(staff, reference))
    typer.echo(f"{ticket.reference} est pris en charge par {ticket.assigned_to}.")


@tickets_app.command("reply")
def tickets_reply(reference: str, text: Optional[str] = typer.Argument(None, help="Le message (ou --canned)."),
                  canned: Optional[str] = typer.Option(None, help="Clé d'une réponse type."),
                  as_: Optional[str] = AS_OPTION) -> None:
    """Répondre au citoyen (le message lui parvient sur son canal et reste sur le ticket)."""
    from bot.staff import load_canned_answers

    staff = _staff(as_)
    if canned:
        answers = {a["key"]: a["text"] for a in load_canned_answers()}
        if canned not in answers:
            _fail(f"Réponse type inconnue {canned!r} : {', '.join(answers)}.")
        text = answers[canned]
    if not text:
        _fail("Donnez le texte du message ou --canned CLÉ.")
    _run_desk(lambda: _desk().reply(staff, reference, text))
    typer.echo("Réponse envoyée.")


@tickets_app.command("note")
def tickets_note(reference: str, text: str, as_: Optional[str] = AS_OPTION) -> None:
    """Ajouter une note privée (jamais envoyée au citoyen)."""
    staff = _staff(as_)
    _run_desk(lambda: _desk().note(staff, reference, text))
    typer.echo("Note ajoutée.")


@tickets_app.command("route")
def tickets_route(reference: str, service: str, kind: str = typer.Option("request", help="report, request ou complaint."),
                  as_: Optional[str] = AS_OPTION) -> None:
    """Orienter le ticket vers un service (CM)."""
    staff = _staff(as_)
    ticket = _run_desk(lambda: _desk().route(staff, reference, service, kind))
    typer.echo(f"{ticket.reference} orienté vers {ticket.queue}.")


@tickets_app.command("status")
def tickets_status(reference: str, status: str,
                   date: Optional[str] = typer.Option(None, help="Date prévue (AAAA-MM-JJ) pour « scheduled »."),
                   duplicate_of: Optional[str] = typer.Option(None, help="Référence d'origine pour « duplicate »."),
                   note: Optional[str] = typer.Option(None, help="Commentaire pour l'historique."),
                   as_: Optional[str] = AS_OPTION) -> None:
    """Changer le statut : acknowledged, in_progress, scheduled, resolved, not_ours, duplicate, closed."""
    import datetime as dt

    staff = _staff(as_)
    when = None
    if date:
        try:
            when = dt.datetime.fromisoformat(date)
        except ValueError:
            _fail(f"Date invalide {date!r} : format AAAA-MM-JJ.")
    ticket = _run_desk(lambda: _desk().set_status(staff, reference, status, scheduled_for=when,
                                                  duplicate_of=duplicate_of, note=note))
    typer.echo(f"{ticket.reference} : {ticket.status}.")


@tickets_app.command("close")
def tickets_close(reference: str, as_: Optional[str] = AS_OPTION) -> None:
    """Clôturer ; pour un transfert, la conversation revient au bot."""
    staff = _staff(as_)
    ticket = _run_desk(lambda: _desk().close(staff, reference))
    typer.echo(f"{ticket.reference} clôturé.")


@comments_app.command("list")
def comments_list(all_: bool = typer.Option(False, "--all", help="Tous les commentaires, pas seulement ceux à voir."),
                  limit: int = typer.Option(50, min=1, max=1000, help="Nombre de commentaires affichés au plus."),
                  as_: Optional[str] = AS_OPTION) -> None:
    """Les commentaires à voir (laissés à l'équipe, sans réponse), les plus récents d'abord ; --all : tous."""
    staff = _staff(as_)
    desk = _desk()
    views = _run_desk(lambda: desk.comment_views(desk.comments(staff, needs_staff=not all_, limit=limit)))
    if not views:
        typer.echo("Aucun commentaire." if all_ else "Aucun commentaire à voir.")
    for view in views:
        c = view.comment
        when = desk.hours.local(c.created_at).strftime("%d/%m %H:%M")
        flag = "À VOIR " if view.to_see else ""
        ticket = f" [{view.ticket.reference}]" if view.ticket else ""
        text = " ".join(c.text.split())
        typer.echo(f"#{c.id:<5} {view.platform_label:<9} {when}  {flag}{view.treatment_label}{ticket} — "
                   f"{c.author_name or 'auteur inconnu'} : {text[:70]}{'…' if len(text) > 70 else ''}")


@comments_app.command("reply")
def comments_reply(comment_id: str = typer.Argument(..., help="Le numéro du commentaire (guichet comments list)."),
                   text: str = typer.Argument(..., help="Le message (signé comme les réponses aux tickets)."),
                   public: Optional[bool] = typer.Option(None, "--public/--private",
                                                         help="Sous le commentaire, visible de tous (--public), ou "
                                                              "dans la messagerie de la personne (--private)."),
                   as_: Optional[str] = AS_OPTION) -> None:
    """Répondre à un commentaire : en public (sans aucune donnée personnelle) ou en privé."""
    if public is None:
        _fail("Choisissez où répondre : --public (sous le commentaire, lu par tout le monde) ou --private "
              "(dans la messagerie de la personne).")
    staff = _staff(as_)
    _run_desk(lambda: _desk().reply_to_comment(staff, comment_id, text, public))
    typer.echo("Réponse publique envoyée : elle sera publiée sous le commentaire." if public
               else "Message privé envoyé à la personne.")


@comments_app.command("seen")
def comments_seen(comment_id: str = typer.Argument(..., help="Le numéro du commentaire (guichet comments list)."),
                  note: Optional[str] = typer.Option(None, help="Pourquoi rien n'est répondu (note privée)."),
                  as_: Optional[str] = AS_OPTION) -> None:
    """Marquer un commentaire comme vu, sans réponse (note privée : rien n'est publié ni supprimé)."""
    staff = _staff(as_)
    _run_desk(lambda: _desk().mark_comment_seen(staff, comment_id, note))
    typer.echo("Commentaire marqué comme vu : il quitte la liste à voir.")


@staff_app.command("add-user")
def staff_add_user(username: str, role: str = typer.Option(..., help="cm ou head."),
                   service: Optional[str] = typer.Option(None, help="Service du responsable (head)."),
                   name: Optional[str] = typer.Option(None, help="Nom affiché."),
                   password: Optional[str] = typer.Option(None, help="Mot de passe (sinon demandé, ou GUICHET_NEW_PASSWORD).")) -> None:
    """Créer un compte agent (mot de passe haché avec argon2id)."""
    from bot.accounts import AccountError, Accounts
    from bot.profile import load_profile

    password = password or os.environ.get("GUICHET_NEW_PASSWORD") or typer.prompt(
        "Mot de passe", hide_input=True, confirmation_prompt=True)
    try:
        staff = Accounts(_store(), load_profile()).create(username, password, role, service, name)
    except AccountError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Compte créé : {staff.username} ({staff.role}{' ' + staff.service if staff.service else ''}).")


@staff_app.command("set-password")
def staff_set_password(username: str,
                       password: Optional[str] = typer.Option(None, help="Nouveau mot de passe (sinon demandé, ou "
                                                                          "GUICHET_NEW_PASSWORD).")) -> None:
    """Changer le mot de passe d'un compte agent (ses sessions web ouvertes sont fermées)."""
    from bot.accounts import AccountError, Accounts
    from bot.profile import load_profile

    password = password or os.environ.get("GUICHET_NEW_PASSWORD") or typer.prompt(
        "Nouveau mot de passe", hide_input=True, confirmation_prompt=True)
    try:
        Accounts(_store(), load_profile()).set_password(username, password)
    except AccountError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Mot de passe changé pour {username} ; ses sessions ouvertes sont fermées.")


@staff_app.command("list-users")
def staff_list_users() -> None:
    """Lister les comptes agents."""
    from bot.accounts import Accounts
    from bot.profile import load_profile

    for staff in Accounts(_store(), load_profile()).list():
        typer.echo(f"{staff.username:<20} {staff.role:<5} {staff.service or '':<14} {staff.display_name}")


@staff_app.command("serve")
def staff_serve(host: str = typer.Option("127.0.0.1", help="Adresse d'écoute (boucle locale par défaut)."),
                port: int = typer.Option(8080, help="Port.")) -> None:
    """Lancer l'interface web des agents (file d'attente, tickets, statistiques)."""
    from bot.web import serve

    typer.echo(f"Espace agents : http://{host}:{port}/ (Ctrl-C pour arrêter)")
    serve(host=host, port=port)


def _privacy():
    from bot.privacy import Privacy

    return Privacy(_store())


def _conversation(conversation_id: Optional[str], reference: Optional[str]) -> str:
    """The conversation asked for: its id, or the one a ticket reference belongs to."""
    from bot.privacy import PrivacyError

    if bool(conversation_id) == bool(reference):
        _fail("Indiquez soit un identifiant de conversation, soit --reference T-2026-000123 (pas les deux).")
    if reference:
        try:
            return _privacy().conversation_for_reference(reference)
        except PrivacyError as exc:
            _fail(str(exc))
    return conversation_id or ""


@app.command()
def purge(dry_run: bool = typer.Option(False, "--dry-run", help="Compter seulement, sans rien modifier."),
          days: Optional[int] = typer.Option(None, help="Durée de conservation en jours "
                                                               "(défaut : privacy.retention_days du profil).")) -> None:
    """RGPD : anonymise les tickets clos depuis plus longtemps que la durée de conservation (les chiffres restent)."""
    from bot.privacy import PrivacyError
    from bot.profile import load_profile

    retention = days if days is not None else load_profile().town.retention_days
    try:
        report = _privacy().purge(retention, dry_run=dry_run)
    except PrivacyError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Durée de conservation : {retention} jours.")
    for line in report.lines():
        typer.echo(line)


@citizen_app.command("export")
def citizen_export(conversation_id: Optional[str] = typer.Argument(None, help="Identifiant de la conversation."),
                   reference: Optional[str] = typer.Option(None, "--reference", help="Référence d'un de ses tickets."),
                   out: Optional[Path] = typer.Option(None, "--out", help="Fichier JSON (sinon, la sortie standard).")) -> None:
    """Exporter tout ce que nous détenons sur une conversation (tickets, échanges, historique, événements)."""
    import json

    from bot.privacy import PrivacyError

    conversation = _conversation(conversation_id, reference)
    try:
        data = _privacy().export(conversation)
    except PrivacyError as exc:
        _fail(str(exc))
        return
    text = json.dumps(data, ensure_ascii=False, indent=2)
    if out is None:
        typer.echo(text)
        return
    try:
        out.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        _fail(f"Impossible d'écrire {out} : {exc.strerror or exc}.")
    typer.echo(f"Export de la conversation : {out} ({len(data['tickets'])} ticket(s), "
               f"{len(data['transcript'])} message(s), {len(data['tracker_events'])} événement(s) Rasa).")


@citizen_app.command("erase")
def citizen_erase(conversation_id: Optional[str] = typer.Argument(None, help="Identifiant de la conversation."),
                  reference: Optional[str] = typer.Option(None, "--reference", help="Référence d'un de ses tickets."),
                  yes: bool = typer.Option(False, "--yes", help="Confirmer l'effacement (irréversible)."),
                  dry_run: bool = typer.Option(False, "--dry-run", help="Compter seulement.")) -> None:
    """Effacer les données d'un habitant (anonymisation, quel que soit l'âge des tickets ; les chiffres restent)."""
    from bot.privacy import PrivacyError

    conversation = _conversation(conversation_id, reference)
    if not yes and not dry_run:
        _fail("L'effacement est irréversible : ajoutez --yes pour confirmer (ou --dry-run pour compter).")
    try:
        report = _privacy().erase(conversation, dry_run=dry_run)
    except PrivacyError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Conversation {conversation} :" if not dry_run else f"Conversation {conversation} (simulation) :")
    for line in report.lines():
        typer.echo(line)


def _cm(username: Optional[str]):
    staff = _staff(username)
    if not staff.is_cm:
        _fail("Les avis à la population sont gérés par le community manager.")
    return staff


def _notices():
    from bot.notices import Notices
    from bot.profile import load_profile

    return Notices(_store(), load_profile())


def _date(text: str, what: str):
    import datetime as dt

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        _fail(f"Date {what} illisible « {text[:40]} » : écrivez-la AAAA-MM-JJ (par exemple 2026-12-15).")


@notices_app.command("list")
def notices_list() -> None:
    """Les avis en cours, à venir et terminés récemment."""
    from bot.notices import describe_scope

    store = _notices()
    listing = store.listing()
    for title, key in (("En cours", "current"), ("À venir", "coming"), ("Terminés récemment", "past")):
        typer.echo(f"{title} : {len(listing[key])}")
        for notice in listing[key]:
            closed = " · mairie fermée" if notice.closes_town_hall else ""
            typer.echo(f"  #{notice.id} {notice.starts_on:%d/%m/%Y} → {notice.ends_on:%d/%m/%Y} "
                       f"({describe_scope(notice, store.profile)}{closed}) : {notice.text}")


@notices_app.command("add")
def notices_add(text: str = typer.Argument(..., help="Le texte de l'avis (500 caractères au plus)."),
                start: str = typer.Option(..., "--from", help="Premier jour, AAAA-MM-JJ."),
                end: str = typer.Option(..., "--to", help="Dernier jour (inclus), AAAA-MM-JJ."),
                topic: Optional[str] = typer.Option(None, help="Sujet de la FAQ (ex. piscine)."),
                service: Optional[str] = typer.Option(None, help="Service (ex. proprete)."),
                closed: bool = typer.Option(False, "--closed", help="La mairie est fermée ces jours-là."),
                as_: Optional[str] = AS_OPTION) -> None:
    """Ajouter un avis (un sujet, un service, ou toute la commune sans --topic ni --service)."""
    from bot.notices import NoticeError

    author = _cm(as_).username
    try:
        notice = _notices().add(text, _date(start, "de début"), _date(end, "de fin"), author, topic=topic,
                                service=service, closes_town_hall=closed)
    except NoticeError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Avis #{notice.id} enregistré, du {notice.starts_on:%d/%m/%Y} au {notice.ends_on:%d/%m/%Y} inclus.")


@notices_app.command("end")
def notices_end(notice_id: int = typer.Argument(..., help="Le numéro de l'avis (guichet notices list)."),
                as_: Optional[str] = AS_OPTION) -> None:
    """Terminer un avis maintenant."""
    from bot.notices import NoticeError

    author = _cm(as_).username
    try:
        _notices().end(notice_id, author)
    except NoticeError as exc:
        _fail(str(exc))
    typer.echo(f"Avis #{notice_id} terminé : l'assistant ne le dit plus.")


def _answers():
    from bot.answers import Answers
    from bot.profile import load_profile

    return Answers(_store(), load_profile(), cache_seconds=0)


@answers_app.command("list")
def answers_list() -> None:
    """Les sujets et la version que l'assistant donne."""
    store = _answers()
    for topic in store.profile.faq:
        current = store.current(topic)
        typer.echo(f"{topic} : " + (f"version {current.version}" if current.version else "réponse d'origine"))
    pending = store.proposals()
    if pending:
        typer.echo(f"Propositions à valider : {', '.join(f'#{p.id} ({p.topic})' for p in pending)}")


@answers_app.command("show")
def answers_show(topic: str = typer.Argument(..., help="Le sujet (guichet answers list).")) -> None:
    """La réponse actuelle d'un sujet et ses versions."""
    store = _answers()
    if topic not in store.profile.faq:
        _fail(f"Sujet inconnu « {topic[:60]} » : {', '.join(store.profile.faq)}.")
    current = store.current(topic)
    typer.echo(f"{current.text} 👉 {current.link}")
    for version in store.history(topic):
        typer.echo(f"  #{version.id} {version.status} par {version.author} le {version.created_at:%d/%m/%Y %H:%M}"
                   f"{' · ' + version.note if version.note else ''}")


@answers_app.command("set")
def answers_set(topic: str = typer.Argument(..., help="Le sujet."),
                text: str = typer.Option(..., "--text", help="La nouvelle réponse (1 200 caractères au plus)."),
                link: Optional[str] = typer.Option(None, "--link", help="Le lien (défaut : celui d'aujourd'hui)."),
                as_: Optional[str] = AS_OPTION) -> None:
    """Modifier la réponse d'un sujet (CM : en ligne tout de suite ; responsable : proposition)."""
    from bot.answers import AnswerError

    staff = _staff(as_)
    store = _answers()
    try:
        current = store.current(topic) if topic in store.profile.faq else None
        version = store.edit(topic, text, link or (current.link if current else ""), staff)
    except AnswerError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Version #{version.id} {'en ligne' if version.status == 'approved' else 'proposée au community manager'}.")


@answers_app.command("review")
def answers_review(version: int = typer.Argument(..., help="Le numéro de la proposition (guichet answers list)."),
                   approve: bool = typer.Option(..., "--approve/--reject", help="Valider ou refuser."),
                   as_: Optional[str] = AS_OPTION) -> None:
    """CM : valider ou refuser la proposition d'un responsable de service."""
    from bot.answers import AnswerError

    try:
        reviewed = _answers().review(version, approve, _staff(as_))
    except AnswerError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Proposition #{reviewed.id} ({reviewed.topic}) {'validée : en ligne' if approve else 'refusée'}.")


@answers_app.command("restore")
def answers_restore(topic: str = typer.Argument(..., help="Le sujet."),
                    version: str = typer.Argument(..., help="Le numéro de version, ou « origine »."),
                    as_: Optional[str] = AS_OPTION) -> None:
    """Remettre en ligne une version précédente (ou la réponse d'origine du profil)."""
    from bot.answers import AnswerError

    staff = _staff(as_)
    try:
        number = None if version == "origine" else int(version)
    except ValueError:
        _fail("Indiquez un numéro de version (guichet answers show SUJET) ou « origine ».")
        return
    try:
        restored = _answers().restore(topic, number, staff)
    except AnswerError as exc:
        _fail(str(exc))
        return
    typer.echo(f"Version #{restored.id} en ligne ({restored.note}).")


@app.command()
def stats(days: int = typer.Option(30, min=1, max=3650, help="Période, en jours."),
          csv: Optional[Path] = typer.Option(None, help="Écrit aussi les chiffres en CSV."),
          charts: Optional[Path] = typer.Option(None, help="Dossier où écrire les graphiques PNG.")) -> None:
    """Chiffres pour le CM et la direction : messages, transferts, tickets, délais en heures ouvrées."""
    from bot import stats as figures_module
    from bot.assistant import get_assistant

    assistant = get_assistant()
    figures = figures_module.compute(assistant.store, assistant.profile, assistant.hours, days=days)
    for line in figures_module.format_text(figures):
        typer.echo(line)
    if csv:
        csv.write_text(figures_module.to_csv(figures), encoding="utf-8")
        typer.echo(f"CSV : {csv}")
    if charts:
        charts.mkdir(parents=True, exist_ok=True)
        for name in figures_module.CHARTS:
            (charts / f"{name}.png").write_bytes(figures_module.chart_png(figures, name))
        typer.echo(f"Graphiques : {charts}")


@app.command()
def bench(
    levels: str = typer.Option("1,8,32", help="Conversations simultanées, ex. 1,8,32."),
    messages: int = typer.Option(0, help="Messages par niveau (défaut : 20 × niveau, de 60 à 320)."),
    stock: bool = typer.Option(True, help="Comparer avec Rasa d'origine (configuration par défaut)."),
    stock_epochs: int = typer.Option(3, help="Plafond d'époques du modèle d'origine (0 : les 100 de Rasa)."),
) -> None:
    """Mesure la vitesse de l'assistant complet, à côté de Rasa d'origine (figures dans var/bench/)."""
    from bot import bench as bench_module

    args = ["--levels", levels, "--messages", str(messages), "--stock-epochs", str(stock_epochs)]
    raise typer.Exit(bench_module.main(args + ([] if stock else ["--no-stock"])))


def main(argv: Optional[List[str]] = None) -> None:
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    app(args=argv)


if __name__ == "__main__":
    main()


# --- places (bot.places) --------------------------------------------------------------------------------
@places_app.command("load")
def places_load(
    addresses: Optional[Path] = typer.Option(None, help="Fichier d'adresses BAN (défaut : celui du profil)."),
    named: Optional[Path] = typer.Option(None, "--places", help="Fichier des lieux nommés (défaut : celui du profil)."),
) -> None:
    """Charge (ou recharge) les adresses et les lieux de la commune dans la base."""
    import time

    from bot import places
    from bot.profile import load_profile

    profile = load_profile()
    addresses = addresses or profile.addresses_file
    named = named or profile.places_file
    if addresses is None:
        _fail("Aucun fichier d'adresses : indiquez --addresses FICHIER.csv ou la section « geography » du profil.")
    started = time.monotonic()
    try:
        report = places.load(_store(), addresses, named)
    except places.PlacesError as exc:
        _fail(str(exc))
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"Chargé en {time.monotonic() - started:.1f} s.")


@places_app.command("match")
def places_match(text: str = typer.Argument(..., help="Un lieu écrit comme un habitant l'écrirait.")) -> None:
    """Montre ce que l'assistant comprend d'un lieu (« en face du 8 av Foch »)."""
    from bot import places

    store = _store()
    if not places.loaded(store):
        _fail("Les adresses ne sont pas chargées : lancez d'abord `guichet places load`.")
    found = places.match(store, text)
    if found is None:
        typer.echo("Pas un lieu reconnu : le texte de l'habitant est gardé tel quel.")
        return
    typer.echo(f"{found.label} ({found.kind}, confiance {found.confidence:.0%}) — {found.lat:.6f}, {found.lon:.6f}")


def load_places_if_missing(database_url: str) -> None:
    """At start: the commune's addresses are loaded once, when the profile names a file and the table is empty."""
    from bot import places
    from bot.profile import load_profile
    from bot.tickets import TicketStore

    profile = load_profile()
    store = TicketStore(database_url)
    if profile.addresses_file is None or places.loaded(store):
        return
    try:
        report = places.load(store, profile.addresses_file, profile.places_file)
    except places.PlacesError as exc:
        typer.secho(f"Adresses non chargées : {exc}", fg=typer.colors.YELLOW, err=True)
        return
    typer.echo("Adresses de la commune chargées : " + report.lines()[0])


# --- Open311 keys (bot.open311) ---------------------------------------------------------------------------
@open311_app.command("key-create")
def open311_key_create(name: str = typer.Argument(..., help="Qui l'utilise : « FixMyStreet », « appli mobile »…")) -> None:
    """Crée une clé d'API pour déposer des signalements (affichée une seule fois)."""
    from bot import open311

    name = name.strip()
    if not name or len(name) > 100:
        _fail("Donnez un nom à la clé (100 caractères au plus).")
    key = open311.create_key(_store(), name)
    typer.echo(f"Clé créée pour « {name} » (notez-la, elle ne sera plus affichée) :\n{key}")


@open311_app.command("key-list")
def open311_key_list() -> None:
    """Les clés d'API, actives et révoquées."""
    from bot import open311

    keys = open311.list_keys(_store())
    if not keys:
        typer.echo("Aucune clé. Créez-en une : guichet open311 key-create \"FixMyStreet\"")
    for key in keys:
        state = f"révoquée le {key.revoked_at:%d/%m/%Y}" if key.revoked_at else "active"
        typer.echo(f"{key.id}\t{key.name}\tcréée le {key.created_at:%d/%m/%Y}\t{state}")


@open311_app.command("key-revoke")
def open311_key_revoke(key_id: int = typer.Argument(..., help="Le numéro de la clé (guichet open311 key-list).")) -> None:
    """Révoque une clé : ses prochains dépôts sont refusés (403)."""
    from bot import open311

    store = _store()
    if key_id not in {key.id for key in open311.list_keys(store)}:
        _fail(f"Aucune clé n° {key_id} : voyez `guichet open311 key-list`.")
    open311.revoke_key(store, key_id)
    typer.echo(f"Clé n° {key_id} révoquée.")
