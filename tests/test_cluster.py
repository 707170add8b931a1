"""Several servers for real (bot/cluster.py): 2 Rasa servers and 2 action servers behind nginx, on
PostgreSQL and Redis, with the staff web twice; messages of one conversation sent to both servers."""
from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import create_engine, text

from bot.cluster import running_cluster
from bot.soak import SOAK_ENV, KillAndRestart, run_soak


@pytest.fixture(scope="module")
def cluster(model_path, postgres_url, tmp_path_factory):
    from tests.conftest import reset_postgres_schema

    reset_postgres_schema(postgres_url)
    with running_cluster(model_path, postgres_url, tmp_path_factory.mktemp("cluster"), rasa_count=2,
                         action_count=2, staff_count=2, webchat_count=0, open311_count=0,
                         extra_env=dict(SOAK_ENV)) as running:  # messages faster than people type
        yield running


def _post(url: str, sender: str, text_: str, message_id: str) -> list:
    response = requests.post(url, json={"sender": sender, "message": text_, "message_id": message_id}, timeout=120)
    assert response.status_code == 200
    return response.json()


def _user_events(database_url: str, sender: str) -> list[tuple[str, str]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT type_name, data FROM events WHERE sender_id = :s ORDER BY id"),
                                      {"s": sender}).all()
    finally:
        engine.dispose()
    return [(kind, json.loads(data).get("message_id") or json.loads(data).get("name") or "") for kind, data in rows]


def test_messages_of_one_conversation_at_two_servers_are_handled_one_after_the_other(cluster):
    servers = [f"http://127.0.0.1:{part.port}/webhooks/guichet/webhook" for part in cluster.rasa]
    sender = "two-servers"
    texts = ["bonjour", "quels sont les horaires de la mairie", "et la piscine ?", "merci", "la collecte des déchets",
             "un lampadaire est cassé", "rue des Lilas", "merci beaucoup"] * 6
    with ThreadPoolExecutor(16) as pool:  # all at once, alternately to each server
        answers = list(pool.map(lambda item: _post(servers[item[0] % 2], sender, item[1], f"m{item[0]}"),
                                enumerate(texts)))
    assert all(any(m.get("text") for m in answer) for answer in answers)
    events = _user_events(cluster.database_url, sender)
    users = [name for kind, name in events if kind == "user"]
    assert len(users) == len(texts) and len(set(users)) == len(texts)  # none lost, none doubled
    # One after the other: every message's turn ends (action_listen) before the next message begins.
    turn_open = False
    for kind, name in events:
        if kind == "user":
            assert not turn_open, "two messages of one conversation were handled at the same time"
            turn_open = True
        elif kind == "action" and name == "action_listen":
            turn_open = False


def test_a_retry_sent_to_the_other_server_gets_the_same_answer_and_no_second_ticket(cluster):
    first, second = [f"http://127.0.0.1:{part.port}/webhooks/guichet/webhook" for part in cluster.rasa]
    sender = "retry-elsewhere"
    message = "il y a un gros nid de poule devant le 12 rue de la Gare"
    with ThreadPoolExecutor(2) as pool:  # the retry arrives while the first attempt is running
        answers = list(pool.map(lambda url: _post(url, sender, message, "same-id"), [first, second]))
    again = _post(second, sender, message, "same-id")
    references = {tuple(re.findall(r"T-\d{4}-\d{6}", json.dumps(a, ensure_ascii=False))) for a in answers + [again]}
    assert len(references) == 1 and next(iter(references))
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            tickets = connection.execute(text("SELECT count(*) FROM ticket WHERE conversation_id = :s"),
                                         {"s": sender}).scalar()
    finally:
        engine.dispose()
    assert tickets == 1
    assert [kind for kind, _ in _user_events(cluster.database_url, sender)].count("user") == 1


def test_staff_web_processes_share_sessions_behind_the_proxy(cluster, postgres_url):
    from bot.accounts import Accounts
    from bot.profile import load_profile
    from bot.tickets import TicketStore

    Accounts(TicketStore(postgres_url), load_profile()).create("cm-cluster", "mot de passe du cluster", role="cm")
    session = requests.Session()
    page = session.get(f"{cluster.proxy_url}/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    session.post(f"{cluster.proxy_url}/login", data={"username": "cm-cluster", "password": "mot de passe du cluster",
                                                     "csrf_token": token}, timeout=30)
    for _ in range(4):  # round robin: both staff web processes accept the session
        queue = session.get(f"{cluster.proxy_url}/", timeout=30)
        assert queue.status_code == 200 and "cm-cluster" in queue.text


def test_soak_across_servers_with_a_rasa_and_an_action_server_killed(cluster):
    kills: list = []
    chaos = KillAndRestart(cluster, kills, at=0.3)
    report = run_soak(cluster, messages=240, conversations=40, seed=11, chaos=chaos, timeout=200)
    chaos.wait()
    report.kills = kills
    print("\n".join(report.lines()))
    assert len(kills) == 2
    assert report.problems() == []
    assert report.messages_sent == 240 and report.tracker_events_doubled == 0 and report.tracker_events_missing == 0


def test_guichet_stack_needs_postgresql(tmp_path):
    from tests.conftest import cli_runner

    run = cli_runner({"GUICHET_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "GUICHET_VAR_DIR": str(tmp_path)})
    result = run("stack", code=2)
    assert "PostgreSQL" in result.output and "--throwaway-postgres" in result.output
    assert "Nombre de serveurs" in run("stack", "--help").output
    assert "1<=x<=16" in run("stack", "--rasa", "0", code=2).output


def test_the_bench_with_one_and_two_rasa_servers_runs_reduced(model_path, tmp_path):
    """``make bench``'s last part at a tiny size: both clusters start, every message is answered,
    and the CPU a message is read for the Rasa and action servers."""
    from bot.bench import Options, bench_servers, load_corpus, render_markdown

    options = Options(out=tmp_path, servers=(1, 2), server_levels=(2,), messages=6, env=dict(SOAK_ENV))
    results = bench_servers(model_path, options, load_corpus(), log=lambda line: None)
    assert set(results) == {"1", "2"}
    for result in results.values():
        figures = result["levels"]["2"]
        assert figures["messages"] >= 6 and figures["errors"] == 0  # whole conversations: 6 or a few more
        assert figures["cpu_ms_per_msg"]["rasa"] > 0 and figures["cpu_ms_per_msg"]["action_servers"] > 0
    table = render_markdown({"runs": {}, "servers": results})
    assert "| 2 | 2 |" in table and "Several servers" in table
