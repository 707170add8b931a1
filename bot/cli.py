"""`guichet`: run, train, evaluate and look after the assistant from the command line."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import List, Optional

import typer

from bot.settings import PROJECT_ROOT, get_settings

app = typer.Typer(help="Assistant d'accueil de la collectivité (Rasa) : lancer, entraîner, évaluer.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Base de données des tickets.", no_args_is_help=True)
tickets_app = typer.Typer(help="Tickets : lister, afficher, clôturer.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tickets_app, name="tickets")


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
    json_path: Optional[Path] = typer.Option(None, "--json", help="Écrit les résultats détaillés en JSON."),
    concurrency: int = typer.Option(8, min=1, max=64, help="Conversations évaluées en parallèle."),
) -> None:
    """Joue chaque cas dans une conversation neuve avec le vrai assistant et affiche l'exactitude."""
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
    from bot.stack import running_stack

    settings = get_settings()
    model_path = _model_path(model)
    typer.echo(f"Démarrage de l'assistant (base : {settings.database_url})...")
    with running_stack(model_path, settings.database_url, settings.var_dir, settings.action_port,
                       settings.rasa_port, settings.rasa_token) as stack:
        typer.echo(f"Serveur Rasa : {stack.rasa_url} (canal REST : {stack.rest_url})")
        if chat:
            local_chat(stack.rest_url)
        else:
            typer.echo("Ctrl-C pour arrêter.")
            try:
                stack.rasa.wait()
            except KeyboardInterrupt:
                pass


def local_chat(rest_url: str, sender: Optional[str] = None) -> None:
    import requests

    sender = sender or f"local-{uuid.uuid4().hex[:8]}"
    typer.echo(f"Discussion locale (conversation {sender}). Écrivez votre message ; /quit pour sortir.")
    while True:
        try:
            text = input("vous> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("")
            return
        if text.strip() in ("/quit", "/exit"):
            return
        try:
            response = requests.post(rest_url, json={"sender": sender, "message": text}, timeout=60)
            response.raise_for_status()
            replies = response.json()
        except Exception as exc:  # noqa: BLE001 - keep the chat open
            typer.secho(f"(erreur : {exc})", fg=typer.colors.RED)
            continue
        if not replies:
            typer.secho("(pas de réponse automatique : la conversation est avec l'équipe)", dim=True)
        for reply in replies:
            typer.echo(f"mairie> {reply.get('text', '')}")


@app.command()
def chat(url: Optional[str] = typer.Option(None, help="URL du serveur Rasa (défaut : réglages)."),
         sender: Optional[str] = typer.Option(None, help="Identifiant de conversation.")) -> None:
    """Discute avec un assistant déjà démarré (canal REST)."""
    base = (url or get_settings().rasa_url).rstrip("/")
    local_chat(f"{base}/webhooks/rest/webhook", sender)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Crée ou met à jour les tables (migrations Alembic)."""
    from bot import db

    url = get_settings().database_url
    db.upgrade(url)
    typer.echo(f"Base à jour : {url}")


def _store():
    from bot.tickets import TicketStore

    return TicketStore(get_settings().database_url)


@tickets_app.command("list")
def tickets_list(queue: Optional[str] = typer.Option(None, help="Service ou 'cm'."),
                 all_: bool = typer.Option(False, "--all", help="Inclure les tickets clôturés.")) -> None:
    """Liste les tickets ouverts (les plus urgents puis les plus anciens d'abord)."""
    from sqlalchemy import select

    from bot.models import CLOSED_STATUSES, Ticket

    store = _store()
    with store.session() as session:
        query = select(Ticket).order_by(Ticket.urgent.desc(), Ticket.created_at)
        if queue:
            query = query.where(Ticket.queue == queue)
        if not all_:
            query = query.where(Ticket.status.notin_(CLOSED_STATUSES))
        rows = list(session.execute(query).scalars())
    if not rows:
        typer.echo("Aucun ticket.")
    for t in rows:
        flag = "URGENT " if t.urgent else ""
        typer.echo(f"{t.reference}  {flag}{t.kind:<9} {t.queue:<13} {t.status:<11} {t.created_at:%Y-%m-%d %H:%M}  "
                   f"{(t.summary or '')[:60]}")


def _ticket_or_fail(reference: str):
    ticket = _store().by_reference(reference)
    if ticket is None:
        _fail(f"Ticket introuvable : {reference!r} (format attendu : T-2026-000123)")
    return ticket


@tickets_app.command("show")
def tickets_show(reference: str) -> None:
    """Affiche un ticket et sa conversation."""
    ticket = _ticket_or_fail(reference)
    typer.echo(f"{ticket.reference} — {ticket.kind} — file : {ticket.queue} — statut : {ticket.status}"
               f"{' — URGENT' if ticket.urgent else ''}")
    if ticket.handoff_reason:
        typer.echo(f"Motif du transfert : {ticket.handoff_reason}")
    typer.echo(f"Conversation : {ticket.conversation_id} ({ticket.channel})  Lieu : {ticket.location or '-'}")
    typer.echo(f"Résumé : {ticket.summary}")
    for message in _store().transcript(ticket.id):
        typer.echo(f"  [{message.created_at:%d/%m %H:%M}] {message.author}: {message.text}")


@tickets_app.command("close")
def tickets_close(reference: str, actor: str = typer.Option("cm", help="Qui clôture."),
                  resume: bool = typer.Option(True, help="Rendre la conversation au bot (API Rasa).")) -> None:
    """Clôture un ticket ; pour un transfert, la conversation revient au bot."""
    from bot.handoff import close_ticket

    ticket = _ticket_or_fail(reference)
    try:
        resumed = close_ticket(_store(), ticket.id, actor, resume=resume)
    except Exception as exc:  # noqa: BLE001
        _fail(f"Clôture impossible : {exc}")
        return
    typer.echo(f"{ticket.reference} clôturé." + (" La conversation est rendue au bot." if resumed else ""))


def main(argv: Optional[List[str]] = None) -> None:
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    app(args=argv)


if __name__ == "__main__":
    main()
