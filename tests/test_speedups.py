"""The speed-ups keep Rasa's behaviour: the conversation cache of our tracker store, the one-transaction
transcript, and the Rasa internals replaced in bot/integrations/rasa_speedups.py (same answers)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (ActionExecuted, ActiveLoop, BotUttered, ConversationPaused, SessionStarted,
                                     SlotSet, UserUttered)
from rasa.shared.core.trackers import EventVerbosity

from bot import events
from bot.integrations.tracker_store import GuichetSQLTrackerStore
from bot.stack import tracker_store_config
from bot.tickets import NewTicket, TicketStore
from bot.transcript import Line, record_lines

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = Domain.load(str(ROOT / "domain.yml"))


class Broker:
    """Counts what the tracker store streams."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def publish(self, event: dict) -> None:
        self.seen.append((event["sender_id"], event["event"], event.get("timestamp")))


def make_store(url: str, broker=None) -> GuichetSQLTrackerStore:
    config = dict(tracker_store_config(url))
    config.pop("type")
    if "url" in config:
        config["host"] = config.pop("url")
    return GuichetSQLTrackerStore(DOMAIN, event_broker=broker, **config)


def state(tracker) -> dict:
    return tracker.current_state(EventVerbosity.ALL)


def turn(tracker, text: str, intent: str, answer: str, *extra) -> None:
    tracker.update(UserUttered(text, {"name": intent, "confidence": 0.9}))
    for event in extra:
        tracker.update(event)
    tracker.update(ActionExecuted("action_smalltalk"))
    tracker.update(BotUttered(answer))
    tracker.update(ActionExecuted("action_listen"))


async def conversation_checks(url: str) -> None:
    broker = Broker()
    store = make_store(url, broker)
    tracker = await store.get_or_create_tracker("conv-1")
    for event in (ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")):
        tracker.update(event)
    turn(tracker, "nid de poule rue des lilas", "report_pothole", "Où exactement ?",
         ActiveLoop("ticket_form"), SlotSet("ticket_service", "voirie"))
    await store.save(tracker)

    for number in range(3):
        cached = await store.retrieve("conv-1")
        store._cache.clear()
        loaded = await store.retrieve("conv-1")
        assert state(cached) == state(loaded)  # the copy is what the database gives
        assert cached.slots["ticket_service"].value == "voirie" and cached.active_loop_name == "ticket_form"
        turn(cached, f"message {number}", "greet", f"réponse {number}")
        await store.save(cached)
    # A new session (expiry): the copy keeps the latest session only, like a load from the database.
    cached = await store.retrieve("conv-1")
    for event in (ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")):
        cached.update(event)
    turn(cached, "re bonjour", "greet", "Bonjour !", ConversationPaused())
    await store.save(cached)
    cached = await store.retrieve("conv-1")
    store._cache.clear()
    loaded = await store.retrieve("conv-1")
    assert state(cached) == state(loaded)
    assert cached.is_paused() and cached.slots["ticket_service"].value is None
    full = await store.retrieve_full_tracker("conv-1")
    stored_events = [e for e in full.events]
    # Every event stored once and streamed once, in order.
    assert len(broker.seen) == len(stored_events) == len(set(broker.seen))
    assert [kind for _, kind, _ in broker.seen] == [e.type_name for e in stored_events]

    # Changed behind the cache's back: a privacy erase, then another server writing.
    await store.save(await store.retrieve("conv-1"))  # cached again
    with store.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM events WHERE sender_id = 'conv-1'"))
    assert await store.retrieve("conv-1") is None
    tracker = await store.get_or_create_tracker("conv-2")
    turn(tracker, "bonjour", "greet", "Bonjour !")
    await store.save(tracker)
    other = make_store(url)
    elsewhere = await other.retrieve("conv-2")
    turn(elsewhere, "encore moi", "greet", "Re !")
    await other.save(elsewhere)
    mine = await store.retrieve("conv-2")
    assert state(mine) == state(elsewhere)
    turn(mine, "et encore", "greet", "Oui ?")
    await store.save(mine)
    assert len((await other.retrieve_full_tracker("conv-2")).events) == len(mine.events)


def test_conversation_cache_matches_the_database_on_sqlite(tmp_path):
    asyncio.run(conversation_checks(f"sqlite:///{tmp_path / 'tracker.db'}"))


@pytest.mark.postgres
def test_conversation_cache_matches_the_database_on_postgresql(postgres_url):
    from tests.conftest import reset_postgres_schema

    reset_postgres_schema(postgres_url)
    asyncio.run(conversation_checks(postgres_url))


def test_a_failed_save_is_neither_cached_nor_streamed_twice(tmp_path, monkeypatch):
    async def scenario() -> None:
        broker = Broker()
        store = make_store(f"sqlite:///{tmp_path / 'tracker.db'}", broker)
        tracker = await store.get_or_create_tracker("conv")
        turn(tracker, "bonjour", "greet", "Bonjour !")
        await store.save(tracker)
        tracker = await store.retrieve("conv")
        turn(tracker, "horaires mairie", "faq_town_hall_hours", "Du lundi au vendredi...")
        calls = {"n": 0}
        original = GuichetSQLTrackerStore._row

        def flaky_row(sender_id, event):
            calls["n"] += 1
            if calls["n"] == 1:  # a transient error in the middle of the transaction: retried
                raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
            return original(sender_id, event)

        monkeypatch.setattr(GuichetSQLTrackerStore, "_row", staticmethod(flaky_row))
        monkeypatch.setattr("bot.integrations.tracker_store.DELAY", 0.01)
        await store.save(tracker)
        full = await store.retrieve_full_tracker("conv")
        assert len(full.events) == len(tracker.events) == len(broker.seen) == len(set(broker.seen))

        def broken_row(sender_id, event):
            raise sa.exc.OperationalError("INSERT", {}, Exception("disk I/O error"))

        tracker = await store.retrieve("conv")
        before = state(tracker)
        turn(tracker, "merci", "thanks", "Avec plaisir")
        monkeypatch.setattr(GuichetSQLTrackerStore, "_row", staticmethod(broken_row))
        with pytest.raises(sa.exc.OperationalError):
            await store.save(tracker)
        monkeypatch.setattr(GuichetSQLTrackerStore, "_row", staticmethod(original))
        again = await store.retrieve("conv")  # the database decides: the unsaved turn is not there
        assert state(again) == before

    asyncio.run(scenario())


def test_a_turn_is_recorded_in_one_transaction(store: TicketStore):
    told = []

    def on_message(ticket, message):
        told.append((ticket.id, message.text))

    events.subscribe("handoff_message", on_message)
    try:
        ticket, _ = store.create(NewTicket(kind="report", queue="voirie", conversation_id="c1", channel="rest",
                                           summary="Nid de poule", source_message_id="m1"))
        lines = [Line("citizen", "rest", "nid de poule rue haute", "m1"), Line("bot", "rasa", "C'est noté", "m1"),
                 Line("bot", "rasa", "", "m1")]
        first = record_lines(store, "c1", lines, skip_recorded=True)
        assert [m.ticket_id if m else None for m in first] == [ticket.id, ticket.id, None]
        again = record_lines(store, "c1", lines[:1], skip_recorded=True)  # the same message retried
        assert again == [None]
        handoff, _ = store.create(NewTicket(kind="handoff", queue="cm", conversation_id="c1", channel="rest",
                                            summary="Demande un humain", source_message_id="m2"))
        during = record_lines(store, "c1", [Line("citizen", "rest", "allo ?", "m3"), Line("bot", "rasa", "...")])
        assert [m.ticket_id for m in during] == [handoff.id, handoff.id]
        assert told == [(handoff.id, "allo ?")]
        texts = [(m.author, m.text) for m in store.conversation_messages("c1")]
        assert texts == [("citizen", "nid de poule rue haute"), ("bot", "C'est noté"), ("citizen", "allo ?"),
                         ("bot", "...")]
    finally:
        events.unsubscribe("handoff_message", on_message)


# --- Rasa internals: same results as Rasa's own code ---------------------------------------------
def test_execution_plan_puts_each_node_after_what_it_needs():
    from types import SimpleNamespace

    from bot.integrations.rasa_speedups import execution_plan

    node = lambda **needs: SimpleNamespace(needs=needs)  # noqa: E731
    schema = SimpleNamespace(nodes={"c": node(a="b", m="__message__"), "b": node(x="a"), "a": node(), "d": node(y="c")})
    plan = execution_plan(schema)
    order = [name for name, _ in plan]
    assert sorted(order) == ["a", "b", "c", "d"]
    assert order.index("a") < order.index("b") < order.index("c") < order.index("d")
    assert dict(plan)["c"] == ("b", "__message__")
    with pytest.raises(ValueError):
        execution_plan(SimpleNamespace(nodes={"a": node(x="b"), "b": node(x="a")}))


def test_speedups_give_rasas_own_results(model_path):
    """Parse and predict with the real model through the replaced internals and through Rasa's own."""
    import dask
    from rasa.core.agent import Agent
    from rasa.core.channels.channel import UserMessage
    from rasa.core.policies.rule_policy import RulePolicy
    from rasa.engine.runner.dask import DaskGraphRunner
    from rasa.shared.core.events import Event
    from rasa.shared.utils.common import all_subclasses

    from bot.integrations import rasa_speedups

    rasa_speedups.install()
    agent = Agent.load(str(model_path))
    runner = agent.processor.graph_runner
    texts = ["bonjour", "un nid de poule rue des lilas", "c koi les horaires d la mairie", "je veux un humain",
             "vous etes nuls", "🙂", "rdv carte d'identité", "lampadaire cassé devant l'école"]
    for text in texts:
        inputs = {"__message__": [UserMessage(text)]}
        ours = runner.run(inputs=inputs, targets=["run_RegexMessageHandler"])
        graph = runner._build_dask_graph(runner._graph_schema.minimal_graph_schema(["run_RegexMessageHandler"]))
        runner._add_inputs_to_graph(inputs, graph)
        rasas = dict(dask.get(graph, ["run_RegexMessageHandler"]))
        (mine,), (theirs,) = ours["run_RegexMessageHandler"], rasas["run_RegexMessageHandler"]
        assert mine.get("intent") == theirs.get("intent"), text  # same intent, same confidence to the bit
        assert mine.get("intent_ranking") == theirs.get("intent_ranking"), text
    # Intent weights stored column-major: the same probabilities, bit for bit.
    import numpy as np
    import scipy.sparse
    from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier

    classifier = next(node._component for node in runner._instantiated_nodes.values()
                      if isinstance(getattr(node, "_component", None), LogisticRegressionClassifier)).clf
    assert classifier.coef_.flags.f_contiguous
    features = scipy.sparse.random(5, classifier.coef_.shape[1], density=0.01, format="csr", random_state=3)
    fast = classifier.predict_proba(features)
    classifier.coef_ = np.ascontiguousarray(classifier.coef_)
    assert np.array_equal(fast, classifier.predict_proba(features))
    # Rule matching: the memo answers what the rules answer.
    policy = next(node._component for node in runner._instantiated_nodes.values()
                  if isinstance(getattr(node, "_component", None), RulePolicy))
    lookup = policy.lookup["rules"]
    states = [{"user": {"intent": "greet"}, "prev": {"action_name": "action_listen"}}]
    original = RulePolicy._get_possible_keys.__wrapped__
    assert policy._get_possible_keys(lookup, states) == original(policy, lookup, states)
    assert policy._get_possible_keys(lookup, states) == original(policy, lookup, states)  # from the memo
    # Event classes by name: the class Rasa's own walk finds.
    for name in ("user", "bot", "action", "slot", "session_started", "pause", "active_loop"):
        walk = next(cls for cls in all_subclasses(Event) if cls.type_name == name)
        assert Event.resolve_by_type(name) is walk
    with pytest.raises(ValueError):
        Event.resolve_by_type("no_such_event")
    assert DaskGraphRunner.run.__name__ == "run"
