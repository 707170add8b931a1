"""Speed-ups of Rasa 3.6 internals for the Rasa server, each measured by `guichet bench` (README, "Speed").

Rasa imports this module through the event broker entry of the endpoints (``bot.stack.write_endpoints``
names :class:`TranscriptBroker` below, which is the transcript broker of
``bot.integrations.rasa_broker`` plus :func:`install`).

- Cached validation of the action server's answers. For every custom action, Rasa calls
  ``jsonschema.validate(result, schema)``, which first checks the (constant) schema against the
  draft 2020-12 meta-schema: ~60 ms of CPU on these machines, on the Rasa server's event loop, two
  or three times per citizen message. We build the validator once and validate the answer with it
  (~9 ms): same schema, same errors, same message.
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
    from jsonschema import exceptions, validators
    from rasa.core.actions.action import RemoteAction
    from rasa.shared.constants import DOCS_BASE_URL

    validator: Optional[Any] = None

    def _validate_action_result(self: RemoteAction, result: Dict[Text, Any]) -> bool:
        nonlocal validator
        if validator is None:
            schema = RemoteAction.action_response_format_spec()
            cls = validators.validator_for(schema)
            cls.check_schema(schema)  # once, as jsonschema.validate would on every call
            validator = cls(schema)
        error = exceptions.best_match(validator.iter_errors(result))  # what jsonschema.validate raises
        if error is None:
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
    _installed = True


class TranscriptBroker(rasa_broker.TranscriptBroker):
    """The transcript broker, with the Rasa speed-ups installed in the server that loads it."""

    def __init__(self, url: Optional[str] = None) -> None:
        install()
        super().__init__(url)
