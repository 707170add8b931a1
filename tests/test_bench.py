"""The benchmark harness's own logic (bot/bench.py). No timing is asserted: `make bench` measures."""
from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

from bot import bench


def test_percentile_interpolates_like_numpy():
    values = [10, 20, 30, 40]
    assert bench.percentile(values, 0) == 10
    assert bench.percentile(values, 100) == 40
    assert bench.percentile(values, 50) == 25
    assert bench.percentile([5, 1, 3], 50) == 3  # unsorted input
    assert bench.percentile([7], 95) == 7
    assert bench.percentile([], 50) == 0.0
    assert bench.percentile(list(range(1, 101)), 95) == pytest.approx(95.05)


def test_summarize_and_ratios():
    figures = bench.summarize([0.1, 0.2, 0.3, 0.4], wall_s=2.0, errors=1)
    assert figures["messages"] == 4 and figures["errors"] == 1
    assert figures["msg_per_s"] == 2.0
    assert figures["p50_ms"] == 250.0
    assert figures["mean_ms"] == 250.0
    ours = {"levels": {"8": {"msg_per_s": 40.0, "p50_ms": 20.0, "p95_ms": 50.0}}}
    stock = {"levels": {"8": {"msg_per_s": 10.0, "p50_ms": 100.0, "p95_ms": 500.0}}}
    assert bench.compare(ours, stock) == {"8": {"throughput_x": 4.0, "p50_x": 0.2, "p95_x": 0.1}}
    assert bench.ratio(1.0, 0.0) is None


def test_the_corpus_loads_and_mixes_the_kinds():
    corpus = bench.load_corpus()
    kinds = {c.kind for c in corpus}
    assert {"faq", "report", "complaint", "smalltalk", "handoff"} <= kinds
    assert any(len(c.turns) >= 2 and c.kind == "report" for c in corpus)
    plan = bench.mix(corpus, 100, seed=1)
    assert sum(len(c.turns) for c in plan) >= 100
    assert plan == bench.mix(corpus, 100, seed=1)  # reproducible
    assert len(bench.unique_messages(plan)) == len(set(bench.unique_messages(plan)))


def test_corpus_errors_are_reported(tmp_path):
    path = tmp_path / "corpus.yml"
    path.write_text(yaml.safe_dump({"conversations": [{"id": "x", "turns": []}]}))
    with pytest.raises(ValueError):
        bench.load_corpus(path)
    path.write_text(yaml.safe_dump({"conversations": [{"id": "x", "turns": ["a"], "weight": 2}]}))
    (conversation,) = bench.load_corpus(path)
    assert bench.mix([conversation], 3) == [conversation] * 3


def test_capped_config_sets_every_epochs():
    text = bench.STOCK_CONFIG.read_text(encoding="utf-8")
    capped = yaml.safe_load(bench.capped_config(text, 3))
    epochs = [c["epochs"] for section in ("pipeline", "policies") for c in capped[section] if "epochs" in c]
    assert epochs and set(epochs) == {3}
    assert bench.capped_config(text, None) == text
    names = [c["name"] for c in capped["policies"]]
    assert "TEDPolicy" in names and "UnexpecTEDIntentPolicy" in names  # the stock anchor stays stock


def test_markdown_table():
    level = {"messages": 10, "errors": 0, "msg_per_s": 42.0, "p50_ms": 12.3, "p95_ms": 150.0, "p99_ms": 300.0,
             "cpu_ms_per_msg": {"rasa": 14.9, "action_server": 5.3, "load_generator": None}}
    run = {"levels": {"1": level, "8": level}, "parse": {"p50_ms": 8.0, "p95_ms": 12.0}, "training_s": 60.0,
           "training_cached": True, "stack_start_s": 30.0, "model_load_s": 5.0,
           "rss_peak_mb": {"rasa": 900.0, "action_server": 120.0},
           "profile": {"ms_per_message": {"dialogue policies": 1.5}, "total_ms_per_message": 20.0}}
    report = {"started": "2026-11-22T07:00:00", "machine": "2 CPUs", "load_start": "1.0", "load_end": "2.0",
              "runs": {"ours": run, "stock": run}, "ratios": bench.compare(run, run), "total_s": 600.0}
    text = bench.render_markdown(report)
    assert "| ours | 8 | 42.0 | 12.3 | 150 | 300 | 0 |" in text
    assert "| 8 | 1.0× | 1.0× | 1.0× |" in text
    assert "60.0 (cached)" in text
    assert "| dialogue policies | 1.5 | 1.5 |" in text
    assert "Whole run: 600 s." in text
    assert "| ours | 8 | 14.9 | 5.3 | — |" in text


def test_vm_hwm_of_this_process():
    import os

    peak = bench.vm_hwm_mb(os.getpid())
    assert peak is not None and peak > 1


def test_cpu_per_message_counts_this_process():
    import os

    before = {"me": bench.cpu_seconds(os.getpid()), "gone": None}
    sum(i * i for i in range(2_000_000))  # some CPU
    after = {"me": bench.cpu_seconds(os.getpid()), "gone": None}
    figures = bench.cpu_per_message(before, after, 10)
    assert figures["me"] > 0 and figures["gone"] is None
    assert bench.cpu_per_message(before, after, 0)["me"] is None
    assert bench.cpu_seconds(2 ** 22 + 12345) is None  # no such process


class _FakeRasa(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        payload = [{"recipient_id": body.get("sender"), "text": "ok"}] if "message" in body else {"intent": {}}
        data = json.dumps(payload).encode()
        self.send_response(500 if body.get("message") == "boom" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_driver_counts_messages_and_errors_against_a_fake_server():
    server = HTTPServer(("127.0.0.1", 0), _FakeRasa)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        plan = [bench.Conversation("a", "faq", ("bonjour", "merci")), bench.Conversation("b", "faq", ("boom",))]
        figures = asyncio.run(bench.drive(f"{url}/webhooks/rest/webhook", plan, 2, "test"))
        assert figures["messages"] == 3 and figures["errors"] == 1
        parse = asyncio.run(bench.parse_floor(url, ["bonjour"], 4))
        assert parse["messages"] == 4 and parse["errors"] == 0
    finally:
        server.shutdown()
        server.server_close()


def test_cached_action_result_validation_accepts_and_rejects_like_rasa():
    from jsonschema import ValidationError
    from rasa.core.actions.action import RemoteAction

    from bot.integrations import rasa_speedups

    rasa_speedups.install()
    rasa_speedups.install()  # idempotent
    action = RemoteAction("action_answer_faq", None)
    good = {"events": [{"event": "slot", "name": "ticket_service", "value": None}],
            "responses": [{"text": "Bonjour", "outcome": "smalltalk:greet"}]}
    assert action._validate_action_result(good) is True
    with pytest.raises(ValidationError, match="Failed to validate Action server response"):
        action._validate_action_result({"events": [{"event": "slot", "name": 3}], "responses": "nope"})


def test_sqlite_tracker_store_gets_a_pool_and_others_are_untouched():
    from sqlalchemy.pool import QueuePool

    from bot.integrations.rasa_speedups import sqlite_pool_kwargs

    assert sqlite_pool_kwargs("sqlite:////tmp/guichet.db")["poolclass"] is QueuePool
    assert sqlite_pool_kwargs("sqlite://") == {}
    assert sqlite_pool_kwargs("postgresql+psycopg2://u:p@localhost/db") == {}


def test_shape_memo_never_accepts_what_the_validator_rejects():
    from jsonschema import ValidationError
    from rasa.core.actions.action import RemoteAction

    from bot.integrations import rasa_speedups

    assert rasa_speedups.shape_decides(RemoteAction.action_response_format_spec())
    assert not rasa_speedups.shape_decides({"type": "string", "maxLength": 3})
    assert not rasa_speedups.shape_decides({"properties": {"x": {"const": 1}}})
    rasa_speedups.install()
    action = RemoteAction("action_create_ticket", None)
    slot = {"event": "slot", "name": "ticket_service", "value": "voirie", "timestamp": 1.5}
    assert action._validate_action_result({"events": [slot], "responses": [{"text": "a"}]})
    assert action._validate_action_result({"events": [dict(slot, value=None)], "responses": [{"text": "b"}]})
    assert action._validate_action_result({"events": [slot], "responses": [{"text": "c"}]})  # memo hit
    for bad in ({"events": [dict(slot, name=7)], "responses": [{"text": "a"}]},
                {"events": [dict(slot, timestamp="now")], "responses": [{"text": "a"}]},
                {"events": [{"event": "slot", "name": "x", "timestamp": 1.5}], "responses": [{"text": "a"}]},
                {"events": [dict(slot, event="no_such_event")], "responses": [{"text": "a"}]}):
        with pytest.raises(ValidationError):
            action._validate_action_result(bad)
    assert rasa_speedups.shape(1.0) == rasa_speedups.shape(1) != rasa_speedups.shape(True)
