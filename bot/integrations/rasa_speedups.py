"""Speed-ups of Rasa 3.6 internals for the Rasa server, each measured by `guichet bench` (README, "Speed").

Rasa imports this module through the event broker entry of the endpoints (``bot.stack.write_endpoints``
names :class:`TranscriptBroker` below, which is the transcript broker of
``bot.integrations.rasa_broker`` plus :func:`install`).

- Cached validation of the action server's answers. For every custom action, Rasa calls
  ``jsonschema.validate(result, schema)``, which first checks the (constant) schema against the
  draft 2020-12 meta-schema: ~60 ms of CPU on these machines, on the Rasa server's event loop, two
  or three times per citizen message. We build the validator once and validate the answer with it
  (~9 ms): same schema, same errors, same message. On top of that, an answer whose *shape* (keys,
  JSON types, and the value of each "event" key: all this schema looks at) was already found
  valid is not walked again (microseconds); anything new or invalid goes through the validator.
- A connection pool for Rasa's SQL tracker store on SQLite. SQLAlchemy 1.4 gives SQLite files a
  NullPool: every load and save of a conversation opened a connection, ran the WAL pragma and
  closed it again (the close of the last connection also checkpoints the WAL). PostgreSQL
  already gets Rasa's pool (SQL_POOL_SIZE); nothing else changes (same file, same journal mode).
- Event classes found by name in a table (``Event.resolve_by_type`` walked every subclass of
  ``Event`` for each event read back), the intent classifier's weights stored column-major (SciPy
  copied the whole matrix at every prediction), the model graph run in a precomputed order instead
  of through dask, and rule matching remembered per conversation state. Each gives Rasa's own
  result (tests/test_speedups.py).

The tracker store's conversation cache and the one-transaction transcript are in
``bot/integrations/tracker_store.py`` and ``bot/integrations/rasa_broker.py``.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text, Tuple

from bot.integrations import rasa_broker

logger = logging.getLogger(__name__)
_installed = False


def install() -> None:
    """Patch Rasa once per process (idempotent)."""
    global _installed
    if _installed:
        return
    from bot.integrations import action_client

    action_client.install()  # retries + a concurrency cap on calls to the action server
    from jsonschema import exceptions, validators
    from rasa.core.actions.action import RemoteAction
    from rasa.shared.constants import DOCS_BASE_URL

    validator: Optional[Any] = None
    valid_shapes: set = set()
    memo = False

    def _validate_action_result(self: RemoteAction, result: Dict[Text, Any]) -> bool:
        nonlocal validator, memo
        if validator is None:
            schema = RemoteAction.action_response_format_spec()
            cls = validators.validator_for(schema)
            cls.check_schema(schema)  # once, as jsonschema.validate would on every call
            validator = cls(schema)
            memo = shape_decides(schema)
        key = shape(result) if memo else None
        if key is not None and key in valid_shapes:
            return True
        error = exceptions.best_match(validator.iter_errors(result))  # what jsonschema.validate raises
        if error is None:
            if key is not None:
                if len(valid_shapes) > 10_000:
                    valid_shapes.clear()
                valid_shapes.add(key)
            return True
        error.message += (
            ". Failed to validate Action server response from API, make sure your response from the "
            f"Action endpoint is valid. For more information about the format visit {DOCS_BASE_URL}/custom-actions"
        )
        raise error

    if not hasattr(RemoteAction, "_validate_action_result"):  # another Rasa version: leave it alone
        logger.warning("Rasa has no RemoteAction._validate_action_result: speed-up not installed")
        return
    RemoteAction._validate_action_result = _validate_action_result
    _pool_sqlite_tracker_store()
    _event_classes_by_name()
    _contiguous_intent_weights()
    _sequential_graph_runner()
    _memoized_rule_matching()
    _installed = True


def _sequential_graph_runner() -> None:
    """Rasa runs its model graph (NLU pipeline, policies) through ``dask.get`` for every message and
    every prediction: dask rebuilds the task graph, orders it and schedules it each time, ~2 ms of
    bookkeeping a message for a dozen small steps that run one after the other anyway. The same
    nodes now run in a topological order computed once per set of targets; each node gets the same
    arguments, in the same order, as under dask."""
    from rasa.engine.runner.dask import DaskGraphRunner

    def run(self: DaskGraphRunner, inputs: Optional[Dict[Text, Any]] = None,
            targets: Optional[List[Text]] = None) -> Dict[Text, Any]:
        run_targets = list(targets if targets else self._graph_schema.target_names)
        plans = self.__dict__.setdefault("_guichet_plans", {})
        plan = plans.get(tuple(run_targets))
        if plan is None:
            plan = plans[tuple(run_targets)] = execution_plan(self._graph_schema.minimal_graph_schema(run_targets))
        values: Dict[Text, Any] = dict.fromkeys(name for name, _ in plan)  # the nodes, for Rasa's clash check
        self._add_inputs_to_graph(inputs, values)  # Rasa's own: each input becomes (name, value), as under dask
        for name, needs in plan:
            values[name] = self._instantiated_nodes[name](*(values[need] for need in needs))
        return dict(values[target] for target in run_targets)

    DaskGraphRunner.run = run


def execution_plan(schema: Any) -> List[Tuple[Text, Tuple[Text, ...]]]:
    """Nodes of a graph schema in an order where each comes after those it needs (depth first)."""
    plan: List[Tuple[Text, Tuple[Text, ...]]] = []
    done: set = set()

    def visit(name: Text, path: Tuple[Text, ...] = ()) -> None:
        if name in done or name not in schema.nodes:  # an input, or already planned
            return
        if name in path:
            raise ValueError(f"cycle in the model graph at {name}")
        needs = tuple(schema.nodes[name].needs.values())
        for need in needs:
            visit(need, path + (name,))
        done.add(name)
        plan.append((name, needs))

    for name in schema.nodes:
        visit(name)
    return plan


def _memoized_rule_matching() -> None:
    """``RulePolicy._get_possible_keys`` tests every rule against the conversation's recent states,
    two or three times a message (~2 ms). Its answer depends only on the rule table (fixed once the
    model is loaded) and those states, so it is remembered per (table, states)."""
    import json

    from rasa.core.policies.rule_policy import RulePolicy

    original = RulePolicy._get_possible_keys

    def _get_possible_keys(self: RulePolicy, lookup: Dict[Text, Text], states: List[Any]) -> set:
        memo = self.__dict__.setdefault("_guichet_rule_memo", {})
        try:
            key = (id(lookup), json.dumps(states, sort_keys=True, default=repr))
        except (TypeError, ValueError):
            return original(self, lookup, states)
        found = memo.get(key)
        if found is None:
            if len(memo) > 20_000:
                memo.clear()
            found = memo[key] = frozenset(original(self, lookup, states))
        return set(found)

    _get_possible_keys.__wrapped__ = original
    RulePolicy._get_possible_keys = _get_possible_keys


def _event_classes_by_name() -> None:
    """``Event.resolve_by_type`` walks every subclass of ``Event`` (and asks ``inspect`` about each)
    for every event it reads back: ~75 class visits an event, a few hundred events a message. The
    classes do not change once Rasa is imported, so the name -> class table is built once (on the
    first call, after every module has registered its events); unknown names go the original way."""
    from rasa.shared.core.events import Event

    original = Event.resolve_by_type
    table: Dict[Text, Any] = {}

    def resolve_by_type(type_name: Text, default: Optional[Any] = None) -> Optional[Any]:
        if not table:
            from rasa.shared.utils.common import all_subclasses

            for cls in all_subclasses(Event):  # first match wins, as in the original loop
                table.setdefault(cls.type_name, cls)
        found = table.get(type_name)
        return found if found is not None else original(type_name, default)

    Event.resolve_by_type = staticmethod(resolve_by_type)


def _contiguous_intent_weights() -> None:
    """The intent classifier multiplies the message's sparse features by ``coef_.T``. scikit-learn
    stores ``coef_`` row-major, so its transpose is not contiguous and SciPy copies the whole
    weight matrix (features x intents) on every prediction: ~1.5 ms, twice a message (probabilities
    and best intent). Stored column-major once at load, the transpose is contiguous and nothing is
    copied. Same numbers, same order of additions: the same probabilities to the last bit."""
    import numpy as np
    from rasa.nlu.classifiers.logistic_regression_classifier import LogisticRegressionClassifier

    original = LogisticRegressionClassifier.load.__func__

    def load(cls, *args: Any, **kwargs: Any) -> Any:
        component = original(cls, *args, **kwargs)
        clf = getattr(component, "clf", None)
        if getattr(clf, "coef_", None) is not None:
            clf.coef_ = np.asfortranarray(clf.coef_)
        return component

    LogisticRegressionClassifier.load = classmethod(load)


SHAPE_KEYWORDS = {"type", "properties", "items", "required", "oneOf", "const", "patternProperties"}


def shape_decides(schema: Any, parent: Optional[str] = None) -> bool:
    """True when validity depends only on :func:`shape`: these keywords, ``const`` only on "event"."""
    if isinstance(schema, list):
        return all(shape_decides(item, parent) for item in schema)
    if not isinstance(schema, dict):
        return True
    for key, value in schema.items():
        if parent in ("properties", "patternProperties"):  # key is a property name
            if not shape_decides(value, key):
                return False
            continue
        if key not in SHAPE_KEYWORDS or (key == "const" and parent != "event"):
            return False
        if not shape_decides(value, key if key in ("properties", "patternProperties") else parent):
            return False
    return True


def shape(value: Any) -> Any:
    """Keys, JSON types (integers as the validator sees them) and the value of "event" keys."""
    if isinstance(value, dict):
        return ("o", tuple(sorted((str(k), v if k == "event" and isinstance(v, str) else shape(v))
                                  for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("a", tuple(shape(item) for item in value))
    if value is None or isinstance(value, bool):
        return repr(value) if value is None else "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "int" if value.is_integer() else "float"
    if isinstance(value, str):
        return "str"
    return ("other", type(value).__name__, repr(value))  # never equal to a JSON shape: validated each time


def sqlite_pool_kwargs(url: Any) -> Dict[Text, Any]:
    """Engine arguments that pool connections to an SQLite file ({} for anything else)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import QueuePool

    parsed = make_url(str(url)) if not hasattr(url, "get_backend_name") else url
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return {}
    return {"poolclass": QueuePool, "pool_size": 5, "max_overflow": 10,
            "connect_args": {"check_same_thread": False, "timeout": 30}}


def _pool_sqlite_tracker_store() -> None:
    from rasa.core import tracker_store

    original = tracker_store.create_engine_kwargs

    def create_engine_kwargs(url: Any) -> Dict[Text, Any]:
        return sqlite_pool_kwargs(url) or original(url)

    tracker_store.create_engine_kwargs = create_engine_kwargs


class TranscriptBroker(rasa_broker.TranscriptBroker):
    """The transcript broker, with the Rasa speed-ups installed in the server that loads it."""

    def __init__(self, url: Optional[str] = None) -> None:
        install()
        super().__init__(url)
