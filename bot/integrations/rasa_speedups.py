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
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Text

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
    _installed = True


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
